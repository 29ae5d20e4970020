"""Exact Euclidean k-NN with faiss (``IndexFlatL2``), and the GPU distance block.

* :func:`pairwise_squared_l2` -- the full query x gallery block of squared L2 distances.  On a
  GPU machine it runs on faiss' GPU kernels; on CPU it is the numpy GEMM of
  :mod:`reid_srdl.index.distances` (faster there than faiss-cpu's bundled BLAS).
* :class:`ExactL2Index` -- k-nearest-neighbour search (``faiss.IndexFlatL2``, moved onto all
  GPUs when ``faiss.get_num_gpus() > 0``), with per-query exclusion of gallery items.

Conventions: inputs are float32 C-contiguous ``(N, D)`` arrays; faiss returns squared L2
distances and ``(D, I)`` pairs with ``I == -1`` where fewer than ``k`` items were found.
Ties are broken by the smaller gallery index (faiss' heaps compare ids on equal distances).
The approximate (IVF) indexes are in :mod:`reid_srdl.index.ivf`.
"""

from typing import Optional, Tuple

import faiss
import numpy as np

from reid_srdl.index import distances
from reid_srdl.index.checks import check_k, check_queries
from reid_srdl.index.distances import as_float32_matrix, squared_norms

__all__ = ["use_gpu", "as_float32_matrix", "squared_norms", "pairwise_squared_l2", "ExactL2Index"]


def use_gpu() -> bool:
    """True when the installed faiss was built with GPU support and sees at least one GPU."""
    return faiss.get_num_gpus() > 0


_GPU_RESOURCES = None


def _gpu_resources():
    # One StandardGpuResources per process: it owns scratch memory and CUDA streams.
    global _GPU_RESOURCES
    if _GPU_RESOURCES is None:
        _GPU_RESOURCES = faiss.StandardGpuResources()
    return _GPU_RESOURCES


def pairwise_squared_l2(xq: np.ndarray, xb: np.ndarray, xb_sqnorms: Optional[np.ndarray] = None) -> np.ndarray:
    """Squared L2 distances ``(len(xq), len(xb))`` float32, clamped at 0: faiss' GPU kernels
    when a GPU is visible, else :func:`reid_srdl.index.distances.pairwise_squared_l2`."""
    if not use_gpu():
        return distances.pairwise_squared_l2(xq, xb, xb_sqnorms)
    xq, xb = as_float32_matrix(xq), as_float32_matrix(xb)
    dist = faiss.pairwise_distance_gpu(_gpu_resources(), xq, xb, metric=faiss.METRIC_L2)
    # Rounding can make the distance of near-identical vectors slightly negative.
    np.maximum(dist, 0.0, out=dist)
    return dist


class ExactL2Index:
    """Exact k-NN over a growing set of vectors (``faiss.IndexFlatL2``; GPU when present).

    >>> index = ExactL2Index(2)
    >>> index.add(np.array([[0, 0], [3, 4], [1, 0]], dtype=np.float32))
    >>> sq, ids = index.search(np.array([[0, 0]], dtype=np.float32), k=2)
    >>> ids.tolist(), sq.tolist()
    ([[0, 2]], [[0.0, 1.0]])
    """

    def __init__(self, dim: int):
        self.dim = int(dim)
        self._cpu = faiss.IndexFlatL2(self.dim)
        self._gpu = None  # a GPU copy, rebuilt lazily after every add()

    @property
    def ntotal(self) -> int:
        return int(self._cpu.ntotal)

    def add(self, x: np.ndarray) -> None:
        self._cpu.add(as_float32_matrix(x))
        self._gpu = None

    def vectors(self) -> np.ndarray:
        """All stored vectors, ``(ntotal, dim)`` float32 (a copy)."""
        if self.ntotal == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._cpu.reconstruct_n(0, self.ntotal)

    def _searcher(self):
        if not use_gpu():
            return self._cpu
        if self._gpu is None:
            self._gpu = faiss.index_cpu_to_all_gpus(self._cpu)
        return self._gpu

    def search(self, xq: np.ndarray, k: int, exclude: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """``(squared distances, ids)``, each ``(len(xq), k)``; ids -1 pad missing results.

        ``exclude``: optional boolean mask over the stored vectors; those are never returned.
        One mask for all queries in ``xq`` (group queries that share a mask).
        """
        xq, k = check_queries(xq, self.dim), check_k(k)
        if exclude is None or not exclude.any():
            return self._searcher().search(xq, k)
        if use_gpu():
            return _search_overfetch(self._searcher(), xq, k, exclude)
        keep_bits = np.packbits(~exclude, bitorder="little")  # faiss' bitmap bit order
        params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(len(exclude), faiss.swig_ptr(keep_bits)))
        return self._cpu.search(xq, k, params=params)


def _search_overfetch(index, xq: np.ndarray, k: int, exclude: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Exclusion without ID selectors (GPU indexes): fetch k + #excluded, then drop them.

    Exact: at most #excluded of the returned neighbours can be excluded ones.
    """
    fetch = min(int(index.ntotal), k + int(exclude.sum()))
    sq, ids = index.search(xq, fetch)
    out_sq = np.full((len(xq), k), np.inf, dtype=np.float32)
    out_ids = np.full((len(xq), k), -1, dtype=np.int64)
    for row in range(len(xq)):
        found = ids[row] >= 0
        keep = found.copy()
        keep[found] = ~exclude[ids[row][found]]
        sel = np.flatnonzero(keep)[:k]
        out_sq[row, : len(sel)] = sq[row, sel]
        out_ids[row, : len(sel)] = ids[row, sel]
    return out_sq, out_ids
