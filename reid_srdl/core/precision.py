"""Which arithmetic a device runs fast: the one precision setting of training and inference.

``fp32`` (exact, reproducible bit for bit), ``bf16`` (autocast; on a CPU fast only where
oneDNN runs it natively: AVX512-BF16 or AMX), ``fp16`` (autocast with a GradScaler for
training; CUDA only) and ``auto``: bf16 where the hardware runs it natively (a CPU with
AVX512-BF16/AMX, a CUDA GPU with bf16), fp16 on a CUDA GPU without bf16, fp32 elsewhere
(emulated bf16 is slower than fp32).
"""
import contextlib

import torch

from reid_srdl.core.errors import ReidSrdlError

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
        return "bf16" if device.type == "cpu" and cpu_supports_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise PrecisionError(f"{what} 'fp16' needs a CUDA device (got {device}); use 'bf16' or 'fp32' on a CPU")
    return precision


def autocast_for(precision: str, device) -> contextlib.AbstractContextManager:
    """The autocast context of a resolved precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=AUTOCAST_DTYPES[precision])
