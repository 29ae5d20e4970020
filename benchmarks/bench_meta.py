"""What every speed benchmark records beside its figures: the machine, the software, the
commit and the date; and where its JSON goes (one file per benchmark and CPU, so that runs on
different machines sit side by side instead of overwriting each other)."""

import os
import re
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown"


def _commit() -> str:
    try:
        out = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True).strip()
        dirty = subprocess.check_output(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, text=True)
        return out + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def benchmark_machine() -> dict:
    """CPU, cores (all and usable), numpy/torch versions and threads, commit, date, load."""
    import numpy as np

    info = {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "numpy": np.__version__,
        "commit": _commit(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    try:
        info["load_average_1min"] = os.getloadavg()[0]  # a busy machine skews every ratio
    except OSError:
        pass
    try:
        import torch

        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    except ImportError:
        pass
    return info


def result_path(benchmark: str, machine: dict) -> str:
    """``benchmarks/results/<benchmark>-<cpu>.json``, the CPU's name made file-safe."""
    slug = re.sub(r"[^a-z0-9]+", "-", machine["cpu"].lower()).strip("-") or "unknown-cpu"
    return os.path.join(ROOT, "benchmarks", "results", f"{benchmark}-{slug}.json")
