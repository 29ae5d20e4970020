"""Which machine and software a run used, recorded beside its results.

fp32 training is reproducible bit for bit on one CPU, not across CPUs: the same seed gave
a first-epoch loss of 1.7938861 on an Intel Xeon and 1.7945748 on an AMD EPYC (Fashion-MNIST,
resnet8, one thread, torch 2.14.1; oneDNN picks different kernels per instruction set).  A
table that mixes runs from several machines has to say which came from where, so every
run's metrics.json names its CPU and the commit of the code that trained it, and every
benchmark's result file names its CPU (:func:`cpu_slug`) and carries :func:`machine_metadata`.
"""

import importlib.metadata
import os
import platform
import re
import subprocess
import sys
import time
from typing import Optional


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


def cpu_flags() -> set:
    """The instruction-set flags ``/proc/cpuinfo`` lists (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_slug(cpu: Optional[str] = None, flags: Optional[set] = None) -> str:
    """A file-name part naming the CPU: ``amd-epyc``, ``intel-xeon``, ``intel-xeon-amx``,
    ``amd-epyc-avx2``.

    The model name lower-cased, without trademarks, clock, "processor"/"CPU" and core counts;
    ``-amx`` where the CPU has AMX tiles and ``-avx2`` where it has AVX2 but no AVX-512, since
    bf16 and its speed differ most there: the same "Intel(R) Xeon(R) Processor" name covers
    guests with and without AMX, and "AMD EPYC" guests with AVX-512 + BF16 and with AVX2 only.
    """
    cpu = cpu_model() if cpu is None else cpu
    flags = cpu_flags() if flags is None else flags
    name = re.sub(r"\((r|tm)\)|@.*$|\b(processor|cpu|\d+-core)\b", " ", cpu.lower())
    slug = "-".join(re.findall(r"[a-z0-9]+", name)) or "unknown-cpu"
    if "amx_tile" in flags:
        return slug + "-amx"
    return slug + ("-avx2" if "avx2" in flags and "avx512f" not in flags else "")


def cpu_label_suffix(slug: str) -> str:
    """What a label adds to the CPU's model name for the part of its slug that the name does
    not say: `` with AMX`` (``-amx``), `` (AVX2, no AVX-512)`` (``-avx2``), else nothing."""
    if slug.endswith("-amx"):
        return " with AMX"
    return " (AVX2, no AVX-512)" if slug.endswith("-avx2") else ""


def code_commit(path: Optional[str] = None) -> Optional[str]:
    """The short commit hash of the git checkout holding ``path`` (default: this package),
    with ``-dirty`` when tracked files differ from it; ``None`` outside a checkout or without git."""
    path = path or os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(
            ["git", "-C", path, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", path, "diff", "--quiet", "HEAD"], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.returncode == 1 else "")


def _version(package: str) -> Optional[str]:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_metadata() -> dict:
    """What a benchmark's result file records of where and when it was measured: the CPU (its
    name and slug), cores, the platform, the torch, numpy and faiss versions, the date and the
    commit.  Imports none of them: a benchmark of peak memory must not load torch for this."""
    return {
        "cpu": cpu_model(),
        "cpu_slug": cpu_slug(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        # torch's own string where it is loaded (it carries the build: "2.1.0+cpu")
        "torch": sys.modules["torch"].__version__ if "torch" in sys.modules else _version("torch"),
        "numpy": _version("numpy"),
        "faiss": _version("faiss-cpu") or _version("faiss"),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": code_commit(),
    }


def run_environment() -> dict:
    """What metrics.json records of the machine that finished the run (a resumed run may
    have started elsewhere): CPU and its slug (which says AMX or AVX2-only, where fp32 results
    differ too), cores, torch threads, torch version, the CUDA device if there is one, the
    date, and the commit of the code when it runs from a git checkout."""
    import torch

    env = {
        "cpu": cpu_model(),
        "cpu_slug": cpu_slug(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    commit = code_commit()
    if commit is not None:
        env["commit"] = commit
    if torch.cuda.is_available():
        env["cuda_device"] = torch.cuda.get_device_name(0)
    return env
