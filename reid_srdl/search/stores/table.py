"""The in-memory side of the embedded stores: item columns, a faiss index, filters as masks.

:class:`ItemTable` holds what one process knows of a gallery: one row per item ever added
(deleted rows stay, marked dead, so row numbers never move), the metadata as numpy columns,
an id -> row map of the live rows, and the vectors in a faiss index -- exact
(:class:`~reid_srdl.index.exact.ExactL2Index`) or, once trained, IVF / IVF-PQ
(:class:`~reid_srdl.index.ivf.IVFIndex`).  Appends cost O(batch) (columns grow
by doubling).  The folder store (:mod:`.faiss_store`) and the ``.npz`` store
(:mod:`.npz_store`) keep their rows here.

Search: a filter becomes a boolean mask over the rows (dead rows out), faiss searches the
admitted rows only (an ID selector: exact, never a post-filter that could come up short),
and the candidates -- ``k`` plus a margin, or ``rescore * k`` for IVF -- are re-ranked with
float64 distances computed from the stored float32 vectors.  The distances returned are
therefore exact for every hit and equal across engines (the Milvus store does the same),
also where faiss' float32 expansion ``|q|^2 + |x|^2 - 2 q.x`` loses digits near 0.
Ties keep faiss' order (the smaller row first).
"""

import threading
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from reid_srdl.index.exact import ExactL2Index
from reid_srdl.search.stores.base import DeleteRequest, GalleryItem, SearchFilter, StoreError, StoreHits

# Extra exact candidates per query: re-ranking them in float64 settles float32 near-ties.
RERANK_MARGIN = 8
# Queries per re-ranking chunk are chosen to keep the gathered vectors under this many floats.
GATHER_FLOATS = 1 << 24

INDEX_KINDS = ("flat", "ivf_flat", "ivf_pq")


def index_spec(kind: str = "flat", **options) -> Dict[str, object]:
    """A checked index description: ``flat`` (exact), or ``ivf_flat`` / ``ivf_pq`` with
    ``nlist`` (cells), ``nprobe`` (cells searched), ``pq_m`` / ``pq_nbits`` (ivf_pq code
    size), ``rescore`` (candidates per hit re-ranked exactly, >= 1) and ``train_size`` (items
    the index is trained on: until the gallery holds that many, searches are exact)."""
    if kind not in INDEX_KINDS:
        raise StoreError(f"index kind must be one of {', '.join(INDEX_KINDS)}; got {kind!r}")
    if kind == "flat":
        if options:
            raise StoreError(f"the flat index takes no options; got {', '.join(sorted(options))}")
        return {"kind": "flat"}
    defaults = {"nlist": 1024, "nprobe": 16, "pq_m": 64, "pq_nbits": 8, "rescore": 4, "train_size": None}
    unknown = set(options) - set(defaults)
    if unknown:
        raise StoreError(f"unknown {kind} option(s) {', '.join(sorted(unknown))}; known: {', '.join(defaults)}")
    spec = {"kind": kind, **defaults, **options}
    if spec["train_size"] is None:
        spec["train_size"] = 39 * int(spec["nlist"])  # faiss' own minimum for k-means
    for key, low, high in (("nlist", 1, 1 << 20), ("nprobe", 1, 1 << 20), ("pq_m", 1, 4096), ("pq_nbits", 1, 16),
                           ("rescore", 1, 1024), ("train_size", 1, 1 << 30)):  # fmt: skip
        value = spec[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise StoreError(f"{kind} option {key}: expected an integer in {low}..{high}, got {value!r}")
    if spec["train_size"] < spec["nlist"]:
        raise StoreError(f"{kind}: train_size {spec['train_size']} is less than nlist {spec['nlist']}")
    if kind == "ivf_flat":
        for key in ("pq_m", "pq_nbits"):
            spec.pop(key)
    return spec


def check_index(spec: Dict[str, object], dim: int, where: str) -> None:
    """What only the dimension can tell: PQ sub-vectors must split it evenly."""
    if spec["kind"] == "ivf_pq" and dim % int(spec["pq_m"]):
        raise StoreError(f"{where}: ivf_pq option pq_m={spec['pq_m']} must divide the dimension {dim}")


class _Column:
    """A numpy array that grows by doubling: O(1) amortised appends, ``view()`` the used part."""

    def __init__(self, dtype, width: int = 0):
        self._shape = () if width == 0 else (width,)
        self._data = np.empty((16,) + self._shape, dtype=dtype)
        self.n = 0

    def append(self, values: np.ndarray) -> None:
        need = self.n + len(values)
        if need > len(self._data):
            grown = np.empty((max(need, 2 * len(self._data)),) + self._shape, dtype=self._data.dtype)
            grown[: self.n] = self._data[: self.n]
            self._data = grown
        self._data[self.n : need] = values
        self.n = need

    def view(self) -> np.ndarray:
        return self._data[: self.n]


class ItemTable:
    """Rows of items with their vectors; thread-safe (one lock for reads and writes, since
    faiss' indexes may not be searched while they grow)."""

    def __init__(self, dim: int, spec: Optional[Dict[str, object]] = None):
        self.dim = int(dim)
        self.spec = dict(spec or {"kind": "flat"})
        self.lock = threading.RLock()
        self._index = ExactL2Index(self.dim)
        self._trained = None  # the IVF index once trained
        self._blocks: List[np.ndarray] = []  # vectors by append, kept for IVF (gather + re-adding)
        self._starts: List[int] = []
        self.ids = _Column(np.int64)
        self.cams = _Column(np.int32)
        self.times = _Column(np.float64)
        self.frames = _Column(np.int64)
        self.tracks = _Column(np.int64)
        self.pids = _Column(np.int64)
        self.boxes = _Column(np.int64, 4)
        self.has_box = _Column(np.bool_)
        self.alive = _Column(np.bool_)
        self.sources: List[str] = []
        self.crops: List[str] = []
        self.camera_names: List[str] = []
        self._camera_code: Dict[str, int] = {}
        self.row_of: Dict[int, int] = {}

    # ------------------------------------------------------------------ contents
    @property
    def rows(self) -> int:
        return self.ids.n

    def __len__(self) -> int:
        return len(self.row_of)

    def _code(self, camera: str) -> int:
        code = self._camera_code.get(camera)
        if code is None:
            code = self._camera_code[camera] = len(self.camera_names)
            self.camera_names.append(camera)
        return code

    def append(self, vectors: np.ndarray, items: Sequence[GalleryItem], ids: Sequence[int]) -> None:
        """Append checked rows (the caller removed ids already live)."""
        with self.lock:
            self.append_columns(vectors, columns_of(items, ids))

    def append_columns(self, vectors: np.ndarray, cols: Dict[str, object]) -> None:
        """Append rows given as columns (what segment files hold); ids must not be live."""
        with self.lock:
            n = len(vectors)
            start = self.rows
            self.ids.append(cols["ids"])
            self.cams.append(np.asarray([self._code(c) for c in cols["cameras"]], dtype=np.int32))
            self.times.append(cols["timestamps"])
            self.frames.append(cols["frames"])
            self.tracks.append(cols["tracks"])
            self.pids.append(cols["pids"])
            self.boxes.append(cols["boxes"])
            self.has_box.append(cols["has_box"])
            self.alive.append(np.ones(n, dtype=bool))
            self.sources.extend(cols["sources"])
            self.crops.extend(cols["crops"])
            for offset, i in enumerate(cols["ids"].tolist()):
                self.row_of[i] = start + offset
            if self.spec["kind"] != "flat":
                self._blocks.append(vectors)
                self._starts.append(start)
            (self._trained if self._trained is not None else self._index).add(vectors)

    def kill(self, ids: Sequence[int]) -> List[int]:
        """Mark the live rows of these ids dead; returns the rows."""
        with self.lock:
            rows = [self.row_of.pop(int(i)) for i in ids if int(i) in self.row_of]
            if rows:
                self.alive.view()[rows] = False
            return rows

    def item(self, row: int) -> GalleryItem:
        ts = float(self.times.view()[row])
        return GalleryItem(
            source=self.sources[row],
            camera=self.camera_names[int(self.cams.view()[row])],
            timestamp=None if np.isnan(ts) else ts,
            frame=int(self.frames.view()[row]),
            box=tuple(int(v) for v in self.boxes.view()[row]) if self.has_box.view()[row] else None,
            track=int(self.tracks.view()[row]),
            pid=int(self.pids.view()[row]),
            crop=self.crops[row] or None,
        )

    def get(self, ids: Sequence[int]) -> List[Optional[GalleryItem]]:
        with self.lock:
            return [None if int(i) not in self.row_of else self.item(self.row_of[int(i)]) for i in ids]

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors of ``rows`` (float32, a copy)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.spec["kind"] == "flat":
            return self._index._cpu.reconstruct_batch(rows)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        which = np.searchsorted(np.asarray(self._starts), rows, side="right") - 1
        for b in np.unique(which):
            sel = which == b
            out[sel] = self._blocks[b][rows[sel] - self._starts[b]]
        return out

    def vectors(self, ids: Sequence[int], where: str) -> np.ndarray:
        with self.lock:
            missing = [int(i) for i in ids if int(i) not in self.row_of]
            if missing:
                raise StoreError(f"{where}: no item with id {missing[0]}")
            return self.gather(np.asarray([self.row_of[int(i)] for i in ids], dtype=np.int64))

    def live_rows(self) -> np.ndarray:
        with self.lock:
            return np.flatnonzero(self.alive.view())

    # ------------------------------------------------------------------ IVF training
    def needs_training(self) -> bool:
        return self.spec["kind"] != "flat" and self._trained is None and len(self) >= int(self.spec["train_size"])

    def train(self) -> Dict[str, np.ndarray]:
        """Train the IVF index on the first ``train_size`` live items; returns its trained
        state (to persist) and switches the table to it."""
        with self.lock:
            rows = self.live_rows()[: int(self.spec["train_size"])]
            ivf = self._new_ivf()
            ivf.train(self.gather(rows))
            state = ivf.trained_state()
            self._switch(ivf)
            return state

    def _new_ivf(self):
        from reid_srdl.index.ivf import IVFIndex

        s = self.spec
        kw = {"pq_m": s["pq_m"], "pq_nbits": s["pq_nbits"]} if s["kind"] == "ivf_pq" else {}
        return IVFIndex(self.dim, kind=s["kind"], nlist=s["nlist"], nprobe=s["nprobe"], **kw)

    def load_trained(self, state: Dict[str, np.ndarray]) -> None:
        """Switch to an IVF index rebuilt from a persisted trained state (checked there)."""
        with self.lock:
            ivf = self._new_ivf()
            ivf.load_trained_state(state)
            self._switch(ivf)

    def _switch(self, ivf) -> None:
        for block in self._blocks:
            ivf.add(block)
        self._trained = ivf
        self._index = ExactL2Index(self.dim)  # the exact copy is no longer needed

    @property
    def trained(self) -> bool:
        return self._trained is not None

    # ------------------------------------------------------------------ filters
    def admit_mask(self, f: Optional[SearchFilter]) -> np.ndarray:
        """Live rows that ``f`` admits (equal to ``f.admits`` row by row)."""
        mask = self.alive.view().copy()
        if f is None:
            return mask
        cams = self.cams.view()
        if f.cameras is not None:
            mask &= np.isin(cams, [self._camera_code[c] for c in f.cameras if c in self._camera_code])
        if f.exclude_cameras is not None:
            mask &= ~np.isin(cams, [self._camera_code[c] for c in f.exclude_cameras if c in self._camera_code])
        if f.time_from is not None or f.time_to is not None:
            t = self.times.view()
            with np.errstate(invalid="ignore"):
                keep = ~np.isnan(t)
                if f.time_from is not None:
                    keep &= t >= f.time_from
                if f.time_to is not None:
                    keep &= t <= f.time_to
            mask &= keep
        if f.exclude_pid_camera is not None:
            pid, camera = f.exclude_pid_camera
            if pid >= 0 and camera in self._camera_code:
                mask &= ~((self.pids.view() == pid) & (cams == self._camera_code[camera]))
        if f.exclude_ids:
            rows = [self.row_of[i] for i in f.exclude_ids if i in self.row_of]
            mask[rows] = False
        return mask

    def delete_rows(self, request: DeleteRequest) -> np.ndarray:
        """Live rows matching every criterion of ``request``."""
        with self.lock:
            mask = self.alive.view().copy()
            if request.ids is not None:
                mask &= np.isin(self.ids.view(), np.asarray(request.ids, dtype=np.int64))
            if request.pid is not None:
                mask &= self.pids.view() == request.pid
            if request.track is not None:
                mask &= self.tracks.view() == request.track
            if request.camera is not None:
                code = self._camera_code.get(request.camera, -1)
                mask &= self.cams.view() == code
            if request.before is not None:
                with np.errstate(invalid="ignore"):
                    mask &= self.times.view() < request.before  # NaN (no time) compares False
            return np.flatnonzero(mask)

    # ------------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int, filters: List[Optional[SearchFilter]]) -> StoreHits:
        m = len(queries)
        dist = np.full((m, k), np.inf, dtype=np.float64)
        ids = np.full((m, k), -1, dtype=np.int64)
        items: List[List[GalleryItem]] = [[] for _ in range(m)]
        groups: Dict[Optional[SearchFilter], List[int]] = {}
        for q, f in enumerate(filters):
            groups.setdefault(f, []).append(q)
        with self.lock:
            for f, qrows in groups.items():
                admit = self.admit_mask(f)
                n_admit = int(admit.sum())
                if n_admit == 0:
                    continue
                if self._trained is not None:
                    fetch = min(n_admit, int(self.spec["rescore"]) * k)
                else:
                    fetch = min(n_admit, k + RERANK_MARGIN)
                exclude = None if n_admit == self.rows else ~admit
                index = self._trained if self._trained is not None else self._index
                _, rows = index.search(queries[qrows], fetch, exclude=exclude)
                d, r = self._rerank(queries[qrows], rows, k)
                dist[qrows], ids[qrows] = d, np.where(r >= 0, self.ids.view()[np.maximum(r, 0)], -1)
                for q, row_list in zip(qrows, r):
                    items[q] = [self.item(int(row)) for row in row_list if row >= 0]
        return StoreHits(distances=dist, ids=ids, items=items)

    def _rerank(self, queries: np.ndarray, rows: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """Exact float64 distances of the candidate ``rows``; the ``k`` nearest, stable order."""
        m, fetch = rows.shape
        out_d = np.full((m, k), np.inf, dtype=np.float64)
        out_r = np.full((m, k), -1, dtype=np.int64)
        chunk = max(1, GATHER_FLOATS // max(1, fetch * self.dim))
        for s in range(0, m, chunk):
            r = rows[s : s + chunk]
            valid = r >= 0
            vecs = self.gather(np.where(valid, r, 0).reshape(-1)).reshape(len(r), fetch, self.dim)
            diff = vecs.astype(np.float64) - queries[s : s + chunk, None, :].astype(np.float64)
            d = np.sqrt(np.einsum("qkd,qkd->qk", diff, diff))
            d[~valid] = np.inf
            order = np.argsort(d, axis=1, kind="stable")[:, :k]
            take = np.take_along_axis(d, order, axis=1)
            out_d[s : s + chunk, : take.shape[1]] = take
            out_r[s : s + chunk, : take.shape[1]] = np.where(np.isinf(take), -1, np.take_along_axis(r, order, axis=1))
        return out_d, out_r


def columns_of(items: Sequence[GalleryItem], ids: Sequence[int]) -> Dict[str, object]:
    """Checked items as the columns a segment file and the table hold."""
    n = len(items)
    boxes = np.full((n, 4), -1, dtype=np.int64)
    has_box = np.zeros(n, dtype=bool)
    for i, it in enumerate(items):
        if it.box is not None:
            boxes[i] = it.box
            has_box[i] = True
    return {
        "ids": np.asarray(ids, dtype=np.int64).reshape(n),
        "cameras": [it.camera for it in items],
        "timestamps": np.asarray([np.nan if it.timestamp is None else it.timestamp for it in items], dtype=np.float64),
        "frames": np.asarray([it.frame for it in items], dtype=np.int64),
        "tracks": np.asarray([it.track for it in items], dtype=np.int64),
        "pids": np.asarray([it.pid for it in items], dtype=np.int64),
        "boxes": boxes,
        "has_box": has_box,
        "sources": [it.source for it in items],
        "crops": [it.crop or "" for it in items],
    }
