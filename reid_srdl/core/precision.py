"""Which arithmetic a device runs fast: the one precision setting of training and inference.

``fp32`` (exact, reproducible bit for bit), ``bf16`` (autocast; on a CPU fast only where
oneDNN runs it natively: AVX512-BF16 or AMX), ``fp16`` (autocast with a GradScaler for
training; CUDA only) and ``auto``: bf16 on a CUDA GPU with bf16, fp16 on one without, and on
a CPU bf16 only where it is native *and* measured faster than fp32, else fp32.

Why a measurement and not the CPU flags alone: "native" does not mean "fast".  On a 2-core
Intel Xeon guest with AVX512-BF16 but no AMX (2026-12-02) a bf16 GEMM ran at 137 GFLOP/s
against 259 for fp32 and a ResNet-50 training step was no faster in bf16 (4.84 vs 4.83
img/s), while an AMD EPYC with AVX512-BF16 and an Intel Xeon with AMX ran it 2-3x faster
(benchmarks/bench_train_step.py, docs/deployment.md).
"""

import contextlib
import functools
import logging
import statistics
import time

import torch

from reid_srdl.core.errors import ReidSrdlError

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class PrecisionError(ReidSrdlError, ValueError):
    """A precision this device cannot run."""


def cpu_supports_bf16() -> bool:
    """True when oneDNN runs bf16 natively on this CPU (AVX512_BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without the (private) probe
        return False


#: bf16 must beat fp32 by this factor on the probe GEMM to be chosen by ``auto`` (a margin:
#: the step also runs non-GEMM work that bf16 does not speed up, plus dtype conversions).
BF16_PROBE_MARGIN = 1.5


def gemm_rate(dtype: torch.dtype, n: int = 1024, repeats: int = 3) -> float:
    """Measured FLOP/s of an n x n x n matrix product in ``dtype`` (median of ``repeats``,
    after one warm-up)."""
    a, b = torch.ones(n, n, dtype=dtype), torch.ones(n, n, dtype=dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / max(statistics.median(times), 1e-9)


_BF16_DECISION: dict = {}


@functools.lru_cache(maxsize=None)
def cpu_bf16_pays() -> bool:
    """True when this CPU runs bf16 natively and a bf16 GEMM is at least
    ``BF16_PROBE_MARGIN`` times as fast as an fp32 one (measured once per process, ~0.1 s).
    The decision and its reason are logged and kept for :func:`bf16_decision`."""
    _BF16_DECISION.clear()
    if not cpu_supports_bf16():
        why = "no native bf16 on this CPU (neither AVX512_BF16 nor AMX): emulated bf16 is slower than fp32"
        _BF16_DECISION.update(native=False, auto="fp32", why=why)
        log.info("precision auto -> fp32: %s", why)
        return False
    fp32, bf16 = gemm_rate(torch.float32), gemm_rate(torch.bfloat16)
    pays = bf16 >= BF16_PROBE_MARGIN * fp32
    why = (
        f"bf16 GEMM {bf16 / 1e9:.0f} GFLOP/s against {fp32 / 1e9:.0f} in fp32: "
        f"{bf16 / fp32:.2f}x, {'at least' if pays else 'under'} the {BF16_PROBE_MARGIN}x margin"
    )
    _BF16_DECISION.update(
        native=True,
        bf16_gflops=bf16 / 1e9,
        fp32_gflops=fp32 / 1e9,
        margin=BF16_PROBE_MARGIN,
        auto="bf16" if pays else "fp32",
        why=why,
    )
    log.info("bf16 probe: precision auto -> %s (%s)", "bf16" if pays else "fp32", why)
    return pays


def bf16_decision() -> dict:
    """What ``precision=auto`` runs on this CPU and why, for results files: ``native``,
    ``auto`` ("bf16" or "fp32"), ``why``, and the probe's ``bf16_gflops`` / ``fp32_gflops``
    / ``margin`` when it ran (probes once per process)."""
    pays = cpu_bf16_pays()
    if not _BF16_DECISION:  # cpu_bf16_pays replaced (tests) or cached before this module reloaded
        return {"auto": "bf16" if pays else "fp32", "why": "decided elsewhere"}
    return dict(_BF16_DECISION)


def cuda_supports_bf16() -> bool:
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def resolve_precision(precision: str, device, what: str = "precision") -> str:
    """The precision actually used on ``device``: "fp32", "bf16" or "fp16"; ``what`` names
    the setting in errors (e.g. ``train.precision``)."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise PrecisionError(f"{what} must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if cuda_supports_bf16() else "fp16"
        return "bf16" if device.type == "cpu" and cpu_bf16_pays() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise PrecisionError(f"{what} 'fp16' needs a CUDA device (got {device}); use 'bf16' or 'fp32' on a CPU")
    return precision


def autocast_for(precision: str, device) -> contextlib.AbstractContextManager:
    """The autocast context of a resolved precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=AUTOCAST_DTYPES[precision])
