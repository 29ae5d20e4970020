"""ReIDSearcher: a gallery store and an embedder together -- find who a query looks like, where
and when they were seen, and whether they are in the gallery at all.  A thin facade: the
gallery is a store (:mod:`reid_srdl.search.stores`), the request is built by
:mod:`.request`, results and decisions by :mod:`.results` / :mod:`.decisions`, the model
checks by :mod:`.provenance` and the threshold by :mod:`.calibration`.
"""

import os
from typing import List, Optional, Sequence

import numpy as np

from reid_srdl.evaluation.metrics import EvaluationInputError, check_ids
from reid_srdl.search import provenance, request
from reid_srdl.search.calibration import DEFAULT_FAR, Calibration, calibrate, resolve_threshold
from reid_srdl.search.embedder import Embedder
from reid_srdl.search.fingerprint import describe_model
from reid_srdl.search.gallery import GalleryMismatchError, camid_of
from reid_srdl.search.results import SearchResult, result_of
from reid_srdl.search.stores import MAX_K, DeleteRequest, GalleryItem, GalleryStore, open_store, store_kind
from reid_srdl.search.stores.base import StoreMissingError
from reid_srdl.search.stores.npz_store import NpzStore, items_from_arrays, save_gallery


def _open(store, create_dim=None, index=None) -> GalleryStore:
    if isinstance(store, GalleryStore):
        return store
    if store_kind(store) == "npz":
        return NpzStore.load(store)  # in memory, writable; save() writes it back
    return open_store(store, dim=create_dim, create=create_dim is not None, index=index)


class ReIDSearcher:
    """Search a gallery: ``ReIDSearcher(features, pids, camids, paths)`` (in memory, ids are
    positions), ``ReIDSearcher(store=PATH_OR_URI)``, :meth:`from_images` or :meth:`load`."""

    def __init__(self, features=None, pids=None, camids=None, paths=None, *, store=None, embedder=None):
        if (store is None) == (features is None):
            raise EvaluationInputError("give the gallery as features, pids, camids (and paths), or as store=...")
        self._store = _open(store) if store is not None else NpzStore.from_arrays(features, pids, camids, paths)
        self._embedder: Optional[Embedder] = embedder

    @classmethod
    def from_features(cls, features, pids, camids, paths=None) -> "ReIDSearcher":
        return cls(features, pids, camids, paths)

    @classmethod
    def from_images(cls, model, paths, pids=None, camids=None, *, store=None, index=None, allow_mismatch=False,
                    skip_unreadable=False, **embedding) -> "ReIDSearcher":  # fmt: skip
        """Embed images with ``model`` (a network, or a run directory / final.pt / .onnx) into a
        new in-memory gallery or into ``store`` (created if missing, with ``index``)."""
        embedder = Embedder(model, **embedding)
        paths = [os.fspath(p) for p in paths]
        pids, camids = request.ids_of_images(len(paths), pids, camids)
        target = None
        if store is not None:  # an existing store's model is checked before anything is embedded
            try:
                target = _open(store)
                provenance.record(target.get_meta(), embedder, target.location, allow_mismatch)
            except StoreMissingError:
                pass
        feats, kept = embedder.embed_files(paths, skip_unreadable)
        kept_paths = [paths[i] for i in kept]
        if store is None:
            s = cls(feats, pids[kept], camids[kept], kept_paths, embedder=embedder)
        else:
            s = cls(store=target or _open(store, feats.shape[1], index), embedder=embedder)
            s.add(feats, pids[kept], camids[kept], kept_paths)
        s._store.set_meta(provenance.record(s.meta, embedder, s._store.location, allow_mismatch))
        return s

    @classmethod
    def load(cls, path=None, model=None, allow_mismatch: bool = False, *, store=None, **embedding) -> "ReIDSearcher":
        """Open a gallery -- an ``.npz`` file (read into memory), a store folder, a Milvus
        ``*.db`` or ``http(s)://`` URI, or a GalleryStore -- with ``model`` for image queries
        (the gallery's recorded settings are the defaults; another model or setting is a
        GalleryMismatchError unless ``allow_mismatch``)."""
        target = _open(store if store is not None else path)
        embedder = provenance.embedder_for(target.get_meta(), target.location, model, allow_mismatch, **embedding)
        return cls(store=target, embedder=embedder)

    # ------------------------------------------------------------------ contents
    def add(self, features, pids, camids, paths: Optional[Sequence] = None) -> int:
        """Append items from arrays (paths iff the gallery keeps paths); returns how many
        were new (an item already stored is skipped and counted in the log)."""
        has_paths = getattr(self._store, "has_paths", True)
        if (paths is None) == has_paths:
            raise EvaluationInputError("paths must be given for every gallery item or for none: " + (
                "this gallery keeps paths, give them" if has_paths else "this gallery has no paths"))  # fmt: skip
        feats = np.asarray(features)
        items = items_from_arrays(feats, pids, camids, paths, len(self), "items to add")
        return self._store.add(feats, items)

    def add_items(self, vectors, items: Sequence[GalleryItem]) -> int:
        return self._store.add(vectors, items)

    def add_images(self, paths, pids=None, camids=None, skip_unreadable: bool = False) -> List[str]:
        """Embed images with the searcher's model and add them; returns the paths embedded."""
        paths = [os.fspath(p) for p in paths]
        pids, camids = request.ids_of_images(len(paths), pids, camids)
        feats, kept = self._embed(paths, skip_unreadable)
        self.add(feats, pids[kept], camids[kept], [paths[i] for i in kept])
        return [paths[i] for i in kept]

    def delete(self, **criteria) -> List[GalleryItem]:
        """Remove the items matching every criterion (``ids``, ``pid``, ``track``, ``camera``,
        ``before`` UTC seconds) from every later search, with their stored crops."""
        return self._store.delete(DeleteRequest(**criteria))

    def _items(self):
        vecs, items = [np.zeros((0, self.dim), np.float32)], []
        for v, it in self._store.scan():
            vecs.append(v)
            items.extend(it)
        return np.concatenate(vecs), items

    def __len__(self) -> int:
        return len(self._store)

    store = gallery = property(lambda self: self._store)
    embedder = property(lambda self: self._embedder)
    dim = property(lambda self: self._store.dim)
    meta = property(lambda self: self._store.get_meta())
    features = property(lambda self: self._items()[0])
    pids = property(lambda self: np.asarray([it.pid for it in self._items()[1]], dtype=np.int64))
    camids = property(lambda self: np.asarray([camid_of(it.camera) for it in self._items()[1]], dtype=np.int64))
    paths = property(lambda self: [it.source for it in self._items()[1]] if getattr(
        self._store, "has_paths", True) else None)  # fmt: skip
    _embedding = property(lambda self: {} if self._embedder is None else dict(self._embedder.options))

    # ------------------------------------------------------------------ embedding
    def _model(self) -> Embedder:
        if self._embedder is None:
            raise EvaluationInputError(
                "this searcher has no model (built from features); pass query features, or "
                "build it with ReIDSearcher.from_images(...) / ReIDSearcher.load(path, model=...)"
            )
        return self._embedder

    def _embed(self, paths: List[str], skip_unreadable: bool):
        feats, kept = self._model().embed_files(paths, skip_unreadable)
        self._check_dim(feats.shape[1])
        return feats, kept

    def embed_images(self, paths) -> np.ndarray:
        return self._embed([os.fspath(p) for p in paths], skip_unreadable=False)[0]

    def embed_pil(self, images: List) -> np.ndarray:
        """Features of decoded RGB images (e.g. uploads), checked against the gallery dimension."""
        feats = self._model().embed_pil(images)
        self._check_dim(feats.shape[1])
        return feats

    def _check_dim(self, dim: int) -> None:
        if dim != self.dim:
            raise GalleryMismatchError(
                f"the model gives {dim}-dimensional features but the gallery holds {self.dim}-dimensional ones "
                f"(made by {describe_model(self.meta.get('model'))}): use the model that built the gallery"
            )

    # ------------------------------------------------------------------ searching
    def search(self, queries, k: int = 10, exclude_camid=None, max_distance=None, exclude_pid_camid=None,
               threshold=None, far=None, cameras=None, time_from=None, time_to=None,
               exclude_ids=None) -> List[SearchResult]:  # fmt: skip
        """The ``k`` nearest gallery items of each query (features or image paths), each hit
        with its metadata, and a decision when ``threshold`` or ``far`` is given; filters as in
        :mod:`reid_srdl.search.request`; ``max_distance`` drops farther hits."""
        k, max_distance = request.check_k(k), request.check_max_distance(max_distance)
        tau, source = self.decision_threshold(threshold, far)  # before any image is embedded
        q = request.query_features(queries, self.dim, self.embed_images)
        flt = request.filters(len(q), exclude_camid, exclude_pid_camid, cameras, time_from, time_to, exclude_ids)
        hits = self._store.search(q, min(k, MAX_K), flt)
        has_paths = getattr(self._store, "has_paths", True)
        return [result_of(hits.distances[i], hits.ids[i], hits.items[i], has_paths, max_distance, tau, source)
                for i in range(len(q))]  # fmt: skip

    def decision_threshold(self, threshold=None, far=None):
        """``(threshold, where it came from)``: see :func:`~.calibration.resolve_threshold`."""
        return resolve_threshold(self.calibration, threshold, far)

    # ------------------------------------------------------------------ calibration
    @property
    def calibration(self) -> Optional[Calibration]:
        meta = self.meta
        if meta.get("calibration") is None:
            return None
        return Calibration.from_meta(meta["calibration"], meta.get("calibration_impostor"), self._store.location)

    def calibrate(self, queries, pids, camids, far: float = DEFAULT_FAR, source: str = "") -> Calibration:
        """Calibrate the "no match" threshold at ``far`` with labelled queries against this
        gallery (see :mod:`reid_srdl.evaluation.open_set`); stored with the gallery."""
        q = request.query_features(queries, self.dim, self.embed_images)
        pids = check_ids(pids, len(q), "calibration query pids")
        camids = check_ids(camids, len(q), "calibration query camids")
        feats, items = self._items()
        g_pids = np.asarray([it.pid for it in items], dtype=np.int64)
        g_cams = np.asarray([camid_of(it.camera) for it in items], dtype=np.int64)
        source = source or f"{len(q)} labelled queries against this gallery"
        cal = calibrate(q, pids, camids, feats, g_pids, g_cams, far=far, source=source, model=self.meta.get("model"))
        self.set_calibration(cal)
        return cal

    def set_calibration(self, calibration: Optional[Calibration]) -> None:
        """Store this calibration with the gallery (None removes it)."""
        meta = dict(self.meta, calibration=None if calibration is None else calibration.to_meta())
        meta["calibration_impostor"] = None if calibration is None else calibration.impostor.tolist()
        self._store.set_meta(meta)

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write the gallery as an ``.npz`` gallery file (what tools/eval_reid.py reads)."""
        save_gallery(path, self._store)

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> "ReIDSearcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
