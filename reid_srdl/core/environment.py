"""Which machine and software a run used, recorded beside its results.

fp32 training is reproducible bit for bit on one CPU, not across CPUs: the same seed gave
a first-epoch loss of 1.7938861 on an Intel Xeon and 1.7945748 on an AMD EPYC (Fashion-MNIST,
resnet8, one thread, torch 2.14.1; oneDNN picks different kernels per instruction set).  A
table that mixes runs from several machines has to say which came from where, so every
run's metrics.json names its CPU.
"""

import os
import platform
import time

import torch


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo``'s model name; the platform's otherwise)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def run_environment() -> dict:
    """What metrics.json records of the machine that finished the run (a resumed run may
    have started elsewhere): CPU, cores, torch threads, torch version, the CUDA device if
    there is one, and the date."""
    env = {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    if torch.cuda.is_available():
        env["cuda_device"] = torch.cuda.get_device_name(0)
    return env
