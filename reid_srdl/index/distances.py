"""Squared Euclidean distances in plain numpy: what the metrics need, without faiss.

``||q||^2 + ||b||^2 - 2 q.b`` in float32, one GEMM through numpy's BLAS (the same expansion
faiss and torchreid use).  On CPU this is also the fastest path we measured: faiss-cpu's
bundled BLAS was 4-8x slower than numpy's OpenBLAS for the dense query x gallery block on
the 2-core benchmark machine (docs/evaluation.md).  The GPU variant lives in
:mod:`reid_srdl.index.exact` (faiss), which falls back to this one on CPU.
"""

from typing import Iterator, Optional, Tuple

import numpy as np

from reid_srdl.core.arrays import EvaluationInputError

# Distance rows per block: ~256 MB of float32 whatever the gallery size.
BLOCK_ELEMENTS = 1 << 26


def as_float32_matrix(x) -> np.ndarray:
    """The C-contiguous float32 view/copy BLAS (and faiss) expect."""
    return np.ascontiguousarray(x, dtype=np.float32)


def squared_norms(x: np.ndarray) -> np.ndarray:
    """Row-wise ``||x_i||^2`` as float32, shape ``(N,)``."""
    return np.einsum("ij,ij->i", x, x, dtype=np.float32)


def gemm_rows(xq_scaled: np.ndarray, xb: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """``xq_scaled @ xb.T`` (float32) by one sgemm, written into ``out[:len(xq_scaled)]`` when
    given.  One query row is computed as two: numpy hands a single row to gemv, whose sums
    round differently from gemm's.  With OpenBLAS's AVX-512 kernels a row then has the same
    bits in any block; its AVX2 kernels round rows outside whole 12-row tiles (and a
    threaded split) differently, so there a query's distances can differ in the last bit
    with the block it is in: ranks differ only between items tied to float32 rounding."""
    rows = len(xq_scaled)
    single = rows == 1
    if single:
        xq_scaled = np.concatenate([xq_scaled, xq_scaled])
    if out is None:
        result = xq_scaled @ xb.T  # xb.T is a view, not a copy
    else:
        result = np.matmul(xq_scaled, xb.T, out=out[: len(xq_scaled)])
    return result[:1] if single else result


def finish_squared_l2(dist: np.ndarray, xq_sqnorms: np.ndarray, xb_sqnorms: np.ndarray) -> np.ndarray:
    """``-2 q.b`` rows -> squared L2 distances, in place: ``+ ||b||^2``, ``+ ||q||^2``, clamped at 0.
    Element by element, so finishing a block in parts gives the same bits as all at once."""
    dist += xb_sqnorms[None, :]
    dist += xq_sqnorms[:, None]
    # Rounding can make the distance of near-identical vectors slightly negative.
    np.maximum(dist, 0.0, out=dist)
    return dist


def pairwise_squared_l2(xq: np.ndarray, xb: np.ndarray, xb_sqnorms: Optional[np.ndarray] = None) -> np.ndarray:
    """Squared L2 distances ``(len(xq), len(xb))`` float32, clamped at 0.

    Pass ``xb_sqnorms`` (from :func:`squared_norms`) when calling repeatedly with the same
    gallery so that it is computed once.

    >>> pairwise_squared_l2(np.array([[0.0, 0.0]]), np.array([[3.0, 4.0], [1.0, 0.0]])).tolist()
    [[25.0, 1.0]]
    """
    xq, xb = as_float32_matrix(xq), as_float32_matrix(xb)
    if xb_sqnorms is None:
        xb_sqnorms = squared_norms(xb)
    dist = gemm_rows(xq * np.float32(-2.0), xb)
    return finish_squared_l2(dist, squared_norms(xq), xb_sqnorms)


def block_rows(num_gallery: int, chunk_size: Optional[int] = None) -> int:
    """Query rows per distance block: ``chunk_size`` if given, else ~256 MB of float32."""
    if chunk_size is not None:
        if int(chunk_size) < 1:
            raise EvaluationInputError(f"chunk_size must be >= 1; got {chunk_size}")
        return int(chunk_size)
    return max(1, BLOCK_ELEMENTS // max(1, num_gallery))


def distance_blocks(q: np.ndarray, g: np.ndarray, chunk_size: Optional[int] = None) -> Iterator[Tuple[int, np.ndarray]]:
    """Yield ``(first query row, squared distances of a block of queries to the gallery)``."""
    g_sq = squared_norms(g)
    step = block_rows(len(g), chunk_size)
    for start in range(0, len(q), step):
        yield start, pairwise_squared_l2(q[start : start + step], g, g_sq)
