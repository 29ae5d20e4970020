"""ReIDSearcher: a gallery store and an embedder -- who does a query look like, where and when
were they seen, are they in the gallery at all.  A thin facade over :mod:`.stores` (the
gallery), :mod:`.request` (arguments -> features and filters), :mod:`.results` and
:mod:`.decisions` (hits, match / no match), :mod:`.provenance` (model checks) and
:mod:`.calibration` (the threshold)."""

import os
from typing import List, Optional, Sequence

from reid_srdl.core.arrays import check_ids
from reid_srdl.search import calibration as cal
from reid_srdl.search import provenance, request
from reid_srdl.search.build import embed_into, open_gallery
from reid_srdl.search.embedder import Embedder
from reid_srdl.search.errors import SearchError
from reid_srdl.search.results import SearchResult, result_of
from reid_srdl.search.stores import MAX_K, DeleteRequest, GalleryItem
from reid_srdl.search.stores.npz_store import NpzStore, arrays_of, items_from_arrays, save_gallery


class ReIDSearcher:
    """``ReIDSearcher(features, pids, camids, paths)`` (in memory; ids are positions),
    ``ReIDSearcher(store=PATH_OR_URI_OR_STORE)``, :meth:`from_images` or :meth:`load`."""

    def __init__(self, features=None, pids=None, camids=None, paths=None, *, store=None, embedder=None):
        if (store is None) == (features is None):
            raise SearchError("give the gallery as features, pids, camids (and paths), or as store=...")
        self._store = open_gallery(store) if store is not None else NpzStore.from_arrays(features, pids, camids, paths)
        self._embedder: Optional[Embedder] = embedder

    @classmethod
    def from_features(cls, features, pids, camids, paths=None) -> "ReIDSearcher":
        return cls(features, pids, camids, paths)

    @classmethod
    def from_images(cls, model, paths, pids=None, camids=None, *, store=None, index=None, allow_mismatch=False,
                    skip_unreadable=False, **embedding) -> "ReIDSearcher":  # fmt: skip
        """Embed images with ``model`` (a network, run directory, final.pt or .onnx) into a new
        in-memory gallery, or into ``store`` (see :func:`~reid_srdl.search.build.embed_into`).
        A TorchScript model loads only as ``*.ts`` or with ``trust_torchscript=True``."""
        target, embedder = embed_into(
            model, paths, pids, camids, store, index, allow_mismatch, skip_unreadable, **embedding
        )  # fmt: skip
        return cls(store=target, embedder=embedder)

    @classmethod
    def load(cls, path=None, model=None, allow_mismatch: bool = False, *, store=None, **embedding) -> "ReIDSearcher":
        """Open a gallery (an ``.npz``, a store folder, ``*.db``, ``http(s)://`` or a
        GalleryStore) with ``model`` for image queries: the recorded settings are the defaults,
        another model or setting is a GalleryMismatchError unless ``allow_mismatch``."""
        target = open_gallery(store if store is not None else path)
        embedder = provenance.embedder_for(target.get_meta(), target.location, model, allow_mismatch, **embedding)
        return cls(store=target, embedder=embedder)

    # ------------------------------------------------------------------ contents
    def add(self, features, pids, camids, paths: Optional[Sequence] = None) -> int:
        """Add items from arrays (paths iff the gallery keeps paths); returns how many were
        new -- an item already stored (same source) is skipped."""
        has_paths = getattr(self._store, "has_paths", True)
        if (paths is None) == has_paths:
            raise SearchError("paths must be given for every gallery item or for none: " + (
                "this gallery keeps paths, give them" if has_paths else "this gallery has no paths"))  # fmt: skip
        return self._store.add(features, items_from_arrays(features, pids, camids, paths, len(self), "items to add"))

    def add_items(self, vectors, items: Sequence[GalleryItem]) -> int:
        return self._store.add(vectors, items)

    def add_images(self, paths, pids=None, camids=None, skip_unreadable: bool = False) -> List[str]:
        """Embed images with the searcher's model and add them; returns the paths embedded."""
        paths = [os.fspath(p) for p in paths]
        pids, camids = request.ids_of_images(len(paths), pids, camids)
        feats, kept = request.embed_queries(self._embedder, paths, self.dim, self.meta, skip_unreadable)
        self.add(feats, pids[kept], camids[kept], [paths[i] for i in kept])
        return [paths[i] for i in kept]

    def delete(self, **criteria) -> List[GalleryItem]:
        """Remove the items matching every criterion (``ids``, ``pid``, ``track``, ``camera``,
        ``before`` UTC seconds) from every later search, with their stored crops."""
        return self._store.delete(DeleteRequest(**criteria))

    def __len__(self) -> int:
        return len(self._store)

    store = gallery = property(lambda self: self._store)
    embedder = property(lambda self: self._embedder)
    dim = property(lambda self: self._store.dim)
    meta = property(lambda self: self._store.get_meta())
    features = property(lambda self: arrays_of(self._store)[0])  # the whole gallery, in memory
    pids = property(lambda self: arrays_of(self._store)[1])
    camids = property(lambda self: arrays_of(self._store)[2])
    paths = property(lambda self: arrays_of(self._store)[3])
    _embedding = property(lambda self: {} if self._embedder is None else dict(vars(self._embedder.options)))

    def embed_images(self, paths):
        return request.embed_queries(self._embedder, [os.fspath(p) for p in paths], self.dim, self.meta)[0]

    def embed_pil(self, images: List):
        """Features of decoded RGB images (e.g. uploads), checked against the gallery dimension."""
        return request.embed_queries(self._embedder, images, self.dim, self.meta, decoded=True)[0]

    # ------------------------------------------------------------------ searching
    def search(self, queries, k: int = 10, exclude_camid=None, max_distance=None, exclude_pid_camid=None,
               threshold=None, far=None, cameras=None, time_from=None, time_to=None, exclude_ids=None,
               exclude_cameras=None) -> List[SearchResult]:  # fmt: skip
        """The ``k`` nearest items of each query (features or image paths) with their metadata;
        a decision when ``threshold`` ("calibrated" or a distance) or ``far`` is given; filters
        as in :mod:`reid_srdl.search.request`; ``max_distance`` drops farther hits."""
        k, max_distance = request.check_k(k), request.check_max_distance(max_distance)
        tau, source = self.decision_threshold(threshold, far)  # before any image is embedded
        q = request.query_features(queries, self.dim, self.embed_images)
        flt = request.filters(
            len(q), exclude_camid, exclude_pid_camid, cameras, time_from, time_to, exclude_ids, exclude_cameras
        )
        hits, has_paths = self._store.search(q, min(k, MAX_K), flt), getattr(self._store, "has_paths", True)
        return [result_of(hits.distances[i], hits.ids[i], hits.items[i], has_paths, max_distance, tau, source)
                for i in range(len(q))]  # fmt: skip

    def decision_threshold(self, threshold=None, far=None):
        """``(threshold, where it came from)``: see :func:`~.calibration.resolve_threshold`."""
        return cal.resolve_threshold(self.calibration, threshold, far)

    calibration = property(lambda self: cal.stored_calibration(self.meta, self._store.location))

    def calibrate(self, queries, pids, camids, far: float = cal.DEFAULT_FAR, source: str = "") -> cal.Calibration:
        """Calibrate the "no match" threshold at ``far`` with labelled queries against this
        gallery (:mod:`reid_srdl.evaluation.open_set`); stored with the gallery."""
        q = request.query_features(queries, self.dim, self.embed_images)
        pids, camids = (
            check_ids(pids, len(q), "calibration query pids"),
            check_ids(camids, len(q), "calibration query camids"),
        )
        result = cal.calibrate_store(self._store, q, pids, camids, far=far, source=source)
        self.set_calibration(result)
        return result

    def set_calibration(self, calibration: Optional[cal.Calibration]) -> None:
        """Store this calibration with the gallery (None removes it)."""
        self._store.set_meta(cal.with_calibration(self.meta, calibration))

    def save(self, path) -> None:
        """Write the gallery as an ``.npz`` gallery file (a feature file tools/eval_reid.py reads)."""
        save_gallery(path, self._store)

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> "ReIDSearcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
