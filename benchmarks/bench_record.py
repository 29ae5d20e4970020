"""What every benchmark records beside its figures, and where its result file goes.

A result file is named by benchmark and CPU -- ``benchmarks/results/<bench>[-<variant>]-<cpu>.json``,
e.g. ``bench_train-intel-xeon-amx.json`` -- so that measurements from different machines sit
side by side instead of overwriting each other, and it carries :func:`metadata` (CPU, cores,
platform, torch and numpy versions, date, commit) so that a figure quoted in the docs can be
traced to where and when it was measured.  The CPU part is
:func:`reid_srdl.core.environment.cpu_slug` (``-amx`` where the CPU has AMX tiles, ``-avx2``
where it has no AVX-512: the Xeons with and without AMX, and the EPYCs with and without
AVX-512, report the same model name and differ most in bf16).
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")
from reid_srdl.core.environment import cpu_slug, machine_metadata


def result_path(bench, variant="", ext=".json"):
    """``benchmarks/results/<bench>[-<variant>]-<cpu slug><ext>`` for this machine."""
    name = "-".join(part for part in (bench, variant, cpu_slug()) if part)
    return os.path.join(RESULTS, name + ext)


def metadata(**extra):
    """Where and when the benchmark ran (:func:`machine_metadata`), torch's thread count when
    the benchmark uses torch (it is not imported for this), plus the benchmark's own settings."""
    meta = machine_metadata()
    if "torch" in sys.modules:
        meta["torch_threads"] = sys.modules["torch"].get_num_threads()
    return {**meta, **extra}


def describe(meta):
    """One line for the printed table: ``AMD EPYC (2 CPUs), torch 2.1, 2026-12-03 12:00, commit abc1234``."""
    return (
        f"{meta['cpu']} ({meta['cpus']} CPUs), torch {meta['torch']}, {meta['date']}, "
        f"commit {meta['commit'] or 'unknown'}"
    )


def write_json(path, result):
    """Write ``result`` to ``path`` atomically (a crash never leaves half a result file)."""
    import json

    from reid_srdl.core.files import atomic_path

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
