"""Approximate Euclidean k-NN for galleries too large for exact search (faiss IVF).

The deployment side, never the reported metrics: :class:`IVFIndex`, FAISS IVF-Flat or IVF-PQ
trained on the gallery itself, sharded across all GPUs when present, saved atomically with
:func:`save_index` and memory-mapped by :func:`load_index`, which refuses a file of another
dimension or metric.  Same conventions as :mod:`reid_srdl.index.exact`.
"""

import os
from typing import Dict, Optional, Tuple, Union

import faiss
import numpy as np

from reid_srdl.core.files import atomic_path
from reid_srdl.index.checks import SearchIndexError, check_k, check_queries
from reid_srdl.index.exact import ExactL2Index, _search_overfetch, as_float32_matrix, use_gpu

IVF_KINDS = ("ivf_flat", "ivf_pq")


class IVFIndex:
    """Approximate k-NN under L2: an inverted file of ``nlist`` k-means cells, searched in the
    ``nprobe`` cells nearest to each query.

    ``kind="ivf_flat"`` stores the vectors as they are (4 D bytes each): recall is limited by
    ``nprobe`` only.  ``kind="ivf_pq"`` stores ``pq_m`` bytes per vector (product quantizer,
    ``pq_nbits`` bits per sub-vector, 8 by default): 1M x 512 fits in 64 MB instead of 2 GB,
    at a recall cost.  ``rescore=R`` (ivf_pq only) keeps the float vectors beside the codes
    (faiss ``IndexRefineFlat``; memory-mapped when loaded): the PQ search proposes ``R * k``
    candidates and exact distances rank them, so recall is bounded by the probed cells, not
    by the quantizer, and the distances returned are exact.
    Train it on (a sample of) the gallery itself, then ``add`` the gallery.
    """

    def __init__(
        self,
        dim: int,
        kind: str = "ivf_flat",
        nlist: int = 1024,
        pq_m: int = 64,
        nprobe: int = 16,
        pq_nbits: int = 8,
        rescore: int = 0,
    ):
        if kind not in IVF_KINDS:
            raise SearchIndexError(f"index kind must be one of {', '.join(IVF_KINDS)}; got {kind!r}")
        if kind == "ivf_pq" and dim % pq_m:
            raise SearchIndexError(f"ivf_pq: pq_m={pq_m} must divide the dimension {dim}")
        if nlist < 1 or nprobe < 1:
            raise SearchIndexError(f"nlist and nprobe must be >= 1; got nlist={nlist}, nprobe={nprobe}")
        self.dim = int(dim)
        if not 1 <= pq_nbits <= 16:
            raise SearchIndexError(f"ivf_pq: pq_nbits must be in 1..16; got {pq_nbits}")
        if isinstance(rescore, bool) or not isinstance(rescore, int) or rescore < 0:
            raise SearchIndexError(f"rescore must be an integer >= 0 (0 = off); got {rescore!r}")
        if rescore and kind != "ivf_pq":
            raise SearchIndexError("rescore applies to ivf_pq only (ivf_flat distances are exact already)")
        factory = f"IVF{nlist},Flat" if kind == "ivf_flat" else f"IVF{nlist},PQ{pq_m}x{pq_nbits}"
        self._cpu = faiss.index_factory(self.dim, factory + (",RFlat" if rescore else ""), faiss.METRIC_L2)
        if rescore:
            self._cpu.k_factor = float(rescore)  # saved with the index
        self._gpu = None
        self.nprobe = int(nprobe)
        faiss.extract_index_ivf(self._cpu).nprobe = self.nprobe  # saved with the index

    @classmethod
    def _wrap(cls, index) -> "IVFIndex":
        obj = cls.__new__(cls)
        obj.dim, obj._cpu, obj._gpu = int(index.d), index, None
        obj.nprobe = int(faiss.extract_index_ivf(index).nprobe)
        return obj

    @property
    def rescore(self) -> int:
        """Candidates per result re-ranked with exact distances (0: no re-scoring)."""
        return int(self._cpu.k_factor) if isinstance(self._cpu, faiss.IndexRefine) else 0

    @property
    def ntotal(self) -> int:
        return int(self._cpu.ntotal)

    @property
    def is_trained(self) -> bool:
        return bool(self._cpu.is_trained)

    def train(self, x: np.ndarray) -> None:
        """k-means of the cells (and the PQ codebooks) on ``x``: at least ``nlist`` rows,
        ideally 30-100 per cell."""
        x = as_float32_matrix(x)
        nlist = faiss.extract_index_ivf(self._cpu).nlist
        if len(x) < nlist:
            raise SearchIndexError(f"training an IVF index of {nlist} cells needs >= {nlist} vectors; got {len(x)}")
        self._cpu.train(x)
        self._gpu = None

    def add(self, x: np.ndarray) -> None:
        if not self.is_trained:
            raise SearchIndexError("train the IVF index (on the gallery) before adding vectors")
        self._cpu.add(as_float32_matrix(x))
        self._gpu = None

    def _searcher(self):
        # faiss has no GPU IndexRefine: a re-scored index searches on the CPU.
        if not use_gpu() or self.rescore:
            return self._cpu
        if self._gpu is None:
            # shard=True: each GPU holds 1/G of the inverted lists, results are merged.
            options = faiss.GpuMultipleClonerOptions()
            options.shard = True
            self._gpu = faiss.index_cpu_to_all_gpus(self._cpu, co=options)
        return self._gpu

    def search(self, xq: np.ndarray, k: int, exclude: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """``(squared distances, ids)``, each ``(len(xq), k)``, approximate; -1 pads.

        ``exclude``: optional boolean mask over the stored vectors, never returned (an ID
        selector on the CPU; on GPUs, over-fetching as :class:`ExactL2Index` does).
        """
        xq, k = check_queries(xq, self.dim), check_k(k)
        index = self._searcher()
        faiss.extract_index_ivf(self._cpu).nprobe = self.nprobe
        if index is not self._cpu:
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", self.nprobe)
        if exclude is None or not exclude.any():
            return index.search(xq, k)
        if index is not self._cpu or self.rescore:
            return _search_overfetch(index, xq, k, exclude)
        keep_bits = np.packbits(~exclude, bitorder="little")  # faiss' bitmap bit order
        selector = faiss.IDSelectorBitmap(len(exclude), faiss.swig_ptr(keep_bits))
        params = faiss.SearchParametersIVF(sel=selector, nprobe=self.nprobe)
        return self._cpu.search(xq, k, params=params)

    def trained_state(self) -> Dict[str, np.ndarray]:
        """What training learnt, as plain arrays: the cell centroids (nlist, dim) and, for
        ivf_pq, the product quantizer's centroids.  Stored as data (never a faiss file, whose
        reader trusts its input) and read back by :meth:`load_trained_state`."""
        ivf = faiss.extract_index_ivf(self._cpu)
        state = {"centroids": ivf.quantizer.reconstruct_n(0, ivf.nlist)}
        if isinstance(faiss.downcast_index(ivf), faiss.IndexIVFPQ):
            state["pq_centroids"] = faiss.vector_to_array(faiss.downcast_index(ivf).pq.centroids).astype(np.float32)
        return state

    def load_trained_state(self, state: Dict[str, np.ndarray]) -> None:
        """Become the index :meth:`trained_state` described (shapes checked first)."""
        ivf = faiss.downcast_index(faiss.extract_index_ivf(self._cpu))
        if ivf.ntotal:
            raise SearchIndexError("load a trained state into an empty index")
        cent = np.asarray(state.get("centroids"))
        if cent.dtype != np.float32 or cent.shape != (ivf.nlist, self.dim) or not np.isfinite(cent).all():
            raise SearchIndexError(f"trained state: centroids must be finite float32 ({ivf.nlist}, {self.dim})")
        ivf.quantizer.reset()
        ivf.quantizer.add(np.ascontiguousarray(cent))
        if isinstance(ivf, faiss.IndexIVFPQ):
            pq = ivf.pq
            expected = pq.M * pq.ksub * pq.dsub
            pqc = np.asarray(state.get("pq_centroids"))
            if pqc.dtype != np.float32 or pqc.shape != (expected,) or not np.isfinite(pqc).all():
                raise SearchIndexError(f"trained state: pq_centroids must be {expected} finite float32 values")
            faiss.copy_array_to_vector(np.ascontiguousarray(pqc), pq.centroids)
            ivf.precompute_table()
        elif "pq_centroids" in state:
            raise SearchIndexError("trained state: pq_centroids given for an ivf_flat index")
        ivf.is_trained = True
        self._cpu.is_trained = True
        self._gpu = None


AnyIndex = Union[ExactL2Index, IVFIndex]


def save_index(index: AnyIndex, path: str) -> None:
    """Write the (CPU) index to ``path`` atomically: a temp file in the same folder, renamed."""
    with atomic_path(path) as tmp:
        faiss.write_index(index._cpu, tmp)


def load_index(path: str, dim: int, mmap: bool = True) -> AnyIndex:
    """Read an index written by :func:`save_index`, memory-mapped by default (the vectors or
    codes stay in the page cache, shared between processes, read on demand).

    Refused with :class:`SearchIndexError`: a missing or non-faiss file, another dimension
    than ``dim``, another metric than L2, or an index type this module does not write.
    """
    if not os.path.isfile(path):
        raise SearchIndexError(f"index file not found: {path}")
    flags = (getattr(faiss, "IO_FLAG_MMAP_IFC", faiss.IO_FLAG_MMAP) | faiss.IO_FLAG_READ_ONLY) if mmap else 0
    try:
        index = faiss.read_index(path, flags)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else "unreadable"
        raise SearchIndexError(f"{path} is not a faiss index file ({first})") from None
    if index.metric_type != faiss.METRIC_L2:
        metric = "inner product" if index.metric_type == faiss.METRIC_INNER_PRODUCT else index.metric_type
        raise SearchIndexError(f"{path}: index metric is {metric}, expected L2")
    if index.d != int(dim):
        raise SearchIndexError(f"{path}: index holds {index.d}-dimensional vectors, expected {dim}")
    if isinstance(index, faiss.IndexFlatL2) or type(index) is faiss.IndexFlat:
        flat = ExactL2Index.__new__(ExactL2Index)
        flat.dim, flat._cpu, flat._gpu = int(index.d), index, None
        return flat
    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:
        raise SearchIndexError(
            f"{path}: a {type(index).__name__} index, expected IndexFlatL2, IVF-Flat or IVF-PQ"
        ) from None
    return IVFIndex._wrap(index)
