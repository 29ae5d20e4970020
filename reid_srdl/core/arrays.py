"""Checks of the arrays handed to the metrics and the indexes, and the error they raise.

The bottom of the numpy side: :mod:`reid_srdl.index` and :mod:`reid_srdl.evaluation` (and the
search layer above them) check features, ids and counts with these functions, so a bad array
is refused with the same one-line message wherever it enters.
"""

import numpy as np

from reid_srdl.core.errors import ReidSrdlError

INT64 = np.iinfo(np.int64)


class EvaluationInputError(ReidSrdlError, ValueError):
    """Features, identities or options handed to the evaluation are not what it expects."""


def positive_int(value, what: str, error=EvaluationInputError) -> int:
    """``value`` as an ``int`` >= 1 (a bool is refused); ``error`` names ``what`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise error(f"{what} must be a positive integer; got {value!r}")
    return int(value)


def check_features(x, what: str) -> np.ndarray:
    """``x`` as a non-empty, finite float32 ``(N, D)`` array; ``what`` names it in errors."""
    try:
        arr = np.asarray(x)
    except Exception as e:  # ragged lists and the like
        raise EvaluationInputError(f"{what}: cannot be read as an N x D array ({e})") from None
    if arr.ndim != 2:
        raise EvaluationInputError(f"{what}: expected a 2-D array (N x D), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise EvaluationInputError(f"{what}: is empty (0 rows); expected at least one feature")
    if arr.shape[1] == 0:
        raise EvaluationInputError(f"{what}: features have 0 dimensions")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise EvaluationInputError(f"{what}: expected numbers, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise EvaluationInputError(f"{what}: contains NaN or inf ({int((~finite).sum())} values; first in row {row})")
    return arr


def check_ids(x, n: int, what: str) -> np.ndarray:
    """``x`` as an int64 vector of length ``n`` (person ids or camera ids)."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise EvaluationInputError(f"{what}: expected a 1-D array of {n} integers, got shape {arr.shape}")
    if len(arr) != n:
        raise EvaluationInputError(f"{what}: has {len(arr)} entries but there are {n} features")
    if np.issubdtype(arr.dtype, np.integer) or (
        np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))
    ):
        # Ids are kept as int64: a larger one (uint64, a float such as 1e19) would wrap around
        # and could even turn into -1, the junk id.  Floats past 2**53 are not exact integers.
        low, high = (-(2**53), 2**53) if np.issubdtype(arr.dtype, np.floating) else (INT64.min, INT64.max)
        outside = (arr < low) | (arr > high) if arr.size else np.zeros(0, dtype=bool)
        if outside.any():
            row = int(np.flatnonzero(outside)[0])
            raise EvaluationInputError(
                f"{what}: id {arr[row].item()!r} (entry {row}) is outside the range ids are stored in ({low}..{high})"
            )
        return arr.astype(np.int64)
    raise EvaluationInputError(f"{what}: expected integers, got dtype {arr.dtype}")
