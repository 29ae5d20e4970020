"""What both indexes check before faiss sees a search: ``k`` and the queries' shape.

faiss itself only asserts (``assert k > 0``) or reads past a row of the wrong width; these
checks turn such input into one :class:`SearchIndexError` naming what was expected.
"""

import numpy as np

from reid_srdl.core.arrays import positive_int
from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.index.distances import as_float32_matrix


class SearchIndexError(ReidSrdlError, ValueError):
    """An index file or index option does not fit what the caller expects."""


def check_k(k) -> int:
    """``k`` (neighbours per query) as an int >= 1."""
    return positive_int(k, "k", error=SearchIndexError)


def check_queries(xq, dim: int) -> np.ndarray:
    """``xq`` as the float32 C-contiguous ``(N, dim)`` matrix faiss expects."""
    xq = as_float32_matrix(xq)
    if xq.ndim != 2 or xq.shape[1] != dim:
        raise SearchIndexError(f"queries must be (N, {dim}); got shape {xq.shape}")
    return xq
