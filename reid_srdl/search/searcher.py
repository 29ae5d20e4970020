"""ReIDSearcher: a gallery index and an embedder together -- index crops once, then ask who a
query looks like, and whether that person is in the gallery at all.

The two parts do one job each: :class:`reid_srdl.search.gallery.GalleryIndex` (vectors,
pids, camids, paths, provenance, save/load, FAISS inside) and
:class:`reid_srdl.search.embedder.Embedder` (network, transform, extraction settings).
The searcher checks that the two fit (same model fingerprint, same settings, same
dimension) and turns distances into decisions with a calibrated threshold
(:mod:`reid_srdl.search.calibration`).
"""

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from reid_srdl.evaluation.metrics import EvaluationInputError, check_features, check_ids
from reid_srdl.search.calibration import DEFAULT_FAR, Calibration, calibrate, resolve_threshold
from reid_srdl.search.embedder import FEATURE_SETTINGS, Embedder, check_option_names
from reid_srdl.search.fingerprint import describe_model, same_model
from reid_srdl.search.gallery import UNKNOWN, GalleryIndex, GalleryMismatchError, camera_name

PathLike = Union[str, os.PathLike]
MATCH, NO_MATCH = "match", "no match"


@dataclass(frozen=True)
class SearchResult:
    """The gallery items found for one query, nearest first (possibly none).

    ``distances`` are L2 distances; ``paths`` is None when the gallery has no paths.
    With a threshold (``search(..., threshold=...)`` or ``far=...``): ``decision`` is
    ``"match"`` when the nearest item is within ``threshold`` (distance <= threshold), else
    ``"no match"``; ``accepted`` flags the hits within it; ``threshold_source`` says where the
    threshold came from.  Without one, these are None.
    """

    distances: np.ndarray
    pids: np.ndarray
    camids: np.ndarray
    paths: Optional[List[str]]
    indices: np.ndarray
    decision: Optional[str] = None
    threshold: Optional[float] = None
    threshold_source: Optional[str] = None
    accepted: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def nearest_distance(self) -> float:
        """Distance of the first hit (inf when there is none): what the decision compares."""
        return float(self.distances[0]) if len(self) else float("inf")

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready: decision, threshold and its source, and the hits (camids 0-based, and the
        file-name camera ``c1``...)."""
        hits = []
        for r in range(len(self)):
            hit = {
                "rank": r + 1,
                "index": int(self.indices[r]),
                "distance": float(self.distances[r]),
                "pid": int(self.pids[r]),
                "camid": int(self.camids[r]),
                "camera": camera_name(int(self.camids[r])),
                "path": None if self.paths is None else self.paths[r],
            }
            if self.accepted is not None:
                hit["within_threshold"] = bool(self.accepted[r])
            hits.append(hit)
        return {
            "decision": self.decision,
            "nearest_distance": None if not len(self) else self.nearest_distance,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "hits": hits,
        }


def _ids_of_images(n: int, pids, camids):
    """pids and camids of ``n`` image paths (UNKNOWN where not given), checked before any
    image is embedded."""
    pids = np.full(n, UNKNOWN) if pids is None else check_ids(pids, n, f"pids (one per image path, {n} paths)")
    camids = np.full(n, UNKNOWN) if camids is None else check_ids(camids, n, f"camids (one per image path, {n} paths)")
    return pids, camids


def _is_path_list(queries) -> bool:
    if not isinstance(queries, (list, tuple)) or len(queries) == 0:
        return False
    return all(isinstance(q, (str, os.PathLike)) for q in queries)


class ReIDSearcher:
    """An exact L2 index of gallery features with their pids, camids and image paths.

    Build it from features (``ReIDSearcher(features, pids, camids, paths)``, alias
    :meth:`from_features`) or from a model and images (:meth:`from_images`); grow it with
    :meth:`add` / :meth:`add_images`; query it with :meth:`search`; calibrate its "no match"
    threshold with :meth:`calibrate`; keep it with :meth:`save` / :meth:`load` (a feature file
    that ``tools/eval_reid.py`` also reads, plus the model fingerprint, the extraction
    settings and the calibration).  Camera ids are 0-based (file name ``c1`` is camid 0).
    """

    def __init__(self, features, pids, camids, paths: Optional[Sequence[PathLike]] = None):
        self._gallery = GalleryIndex.from_arrays(features, pids, camids, paths)
        self._embedder: Optional[Embedder] = None

    @classmethod
    def _wrap(cls, gallery: GalleryIndex, embedder: Optional[Embedder]) -> "ReIDSearcher":
        searcher = cls.__new__(cls)
        searcher._gallery, searcher._embedder = gallery, embedder
        return searcher

    # ------------------------------------------------------------------ building
    @classmethod
    def from_features(cls, features, pids, camids, paths: Optional[Sequence[PathLike]] = None) -> "ReIDSearcher":
        """Same as the constructor."""
        return cls(features, pids, camids, paths)

    @classmethod
    def from_images(
        cls,
        model,
        paths: Sequence[PathLike],
        pids=None,
        camids=None,
        transform: Optional[Callable] = None,
        batch_size: int = 64,
        device="cpu",
        height: Optional[int] = None,
        width: Optional[int] = None,
        flip: bool = False,
        normalize: bool = False,
        workers: int = 0,
        progress: bool = False,
        fast: bool = False,
        precision: Optional[str] = None,
        skip_unreadable: bool = False,
        trust_torchscript: bool = False,
    ) -> "ReIDSearcher":
        """Index images embedded by ``model`` (``model(x)`` returns ``(logits, features)``).

        ``model`` may also be the path of a trained network (a run directory or its
        ``final.pt``) or of an exported one (``model.onnx`` or TorchScript, written by
        ``tools/export.py``); then the image size it was trained at is the default
        ``height``/``width`` (otherwise 256 x 128).  ``transform`` defaults to
        ``reid_test_transform(height, width)``; ``flip`` and ``normalize`` are as in
        :func:`reid_srdl.evaluation.features.extract_features` and are applied the same way to
        image queries later; so are ``fast`` and ``precision`` (BN folding, channels-last, bf16
        autocast: see ``extract_features``).  Images are decoded in ``workers`` DataLoader
        processes.  Unknown pids/camids default to -1; camids are 0-based.

        An image that cannot be decoded is an error naming it, unless ``skip_unreadable``:
        then it is reported on stderr and left out of the gallery (with its pid and camid).

        A TorchScript file is a program that runs on every embedding: it is loaded only when
        its name ends in ``.ts`` or with ``trust_torchscript=True``; other model files are data.
        """
        embedder = Embedder(
            model,
            transform=transform,
            batch_size=batch_size,
            device=device,
            height=height,
            width=width,
            flip=flip,
            normalize=normalize,
            workers=workers,
            progress=progress,
            fast=fast,
            precision=precision,
            trust_torchscript=trust_torchscript,
        )
        paths = [os.fspath(p) for p in paths]
        pids, camids = _ids_of_images(len(paths), pids, camids)
        feats, kept = embedder.embed_files(paths, skip_unreadable)
        gallery = GalleryIndex.from_arrays(feats, pids[kept], camids[kept], [paths[i] for i in kept])
        gallery.model, gallery.settings = embedder.fingerprint, embedder.settings
        return cls._wrap(gallery, embedder)

    def embed_images(self, paths: Sequence[PathLike]) -> np.ndarray:
        """Features ``(N, D)`` of image files, with the searcher's model and settings (an
        unreadable file is an error naming it)."""
        return self._embed([os.fspath(p) for p in paths], skip_unreadable=False)[0]

    def _require_embedder(self) -> Embedder:
        if self._embedder is None:
            raise EvaluationInputError(
                "this searcher has no model (built from features); pass query features, or "
                "build it with ReIDSearcher.from_images(...) / ReIDSearcher.load(path, model=...)"
            )
        return self._embedder

    def _embed(self, paths: List[str], skip_unreadable: bool) -> Tuple[np.ndarray, np.ndarray]:
        feats, kept = self._require_embedder().embed_files(paths, skip_unreadable)
        self._check_dim(feats.shape[1], "the model gives")
        return feats, kept

    def embed_pil(self, images: List) -> np.ndarray:
        """Features of decoded RGB images (e.g. uploads), checked against the gallery dimension."""
        feats = self._require_embedder().embed_pil(images)
        self._check_dim(feats.shape[1], "the model gives")
        return feats

    def _check_dim(self, dim: int, what: str) -> None:
        if dim != self.dim:
            raise GalleryMismatchError(
                f"{what} {dim}-dimensional features but the gallery holds {self.dim}-dimensional ones "
                f"(made by {describe_model(self._gallery.model)}): use the model that built the gallery"
            )

    def add(self, features, pids, camids, paths: Optional[Sequence[PathLike]] = None) -> None:
        """Append gallery items (paths must be given iff the searcher already keeps paths)."""
        self._gallery.add(features, pids, camids, paths)

    def add_images(self, paths: Sequence[PathLike], pids=None, camids=None, skip_unreadable: bool = False) -> List[str]:
        """Embed images with the searcher's model and append them (``skip_unreadable``: as in
        :meth:`from_images`); returns the paths that were added."""
        paths = [os.fspath(p) for p in paths]
        pids, camids = _ids_of_images(len(paths), pids, camids)
        feats, kept = self._embed(paths, skip_unreadable)
        added = [paths[i] for i in kept]
        self.add(feats, pids[kept], camids[kept], added if self._gallery.paths is not None else None)
        return added

    # ------------------------------------------------------------------ accessors
    def __len__(self) -> int:
        return len(self._gallery)

    @property
    def gallery(self) -> GalleryIndex:
        return self._gallery

    @property
    def embedder(self) -> Optional[Embedder]:
        return self._embedder

    @property
    def _embedding(self) -> dict:
        """The embedding options (kept for callers of the former attribute)."""
        return {} if self._embedder is None else dict(self._embedder.options)

    @property
    def dim(self) -> int:
        return self._gallery.dim

    @property
    def features(self) -> np.ndarray:
        return self._gallery.features

    @property
    def pids(self) -> np.ndarray:
        return self._gallery.pids

    @property
    def camids(self) -> np.ndarray:
        return self._gallery.camids

    @property
    def paths(self) -> Optional[List[str]]:
        return self._gallery.paths

    @property
    def calibration(self) -> Optional[Calibration]:
        g = self._gallery
        if g.calibration is None:
            return None
        return Calibration.from_meta(g.calibration, g.calibration_impostor, "this gallery")

    # ------------------------------------------------------------------ searching
    def _query_features(self, queries) -> np.ndarray:
        if isinstance(queries, (str, os.PathLike)):
            queries = [queries]
        if _is_path_list(queries):
            return self.embed_images(queries)
        if hasattr(queries, "detach"):  # a torch tensor
            queries = queries.detach().cpu().numpy()
        q = np.asarray(queries)
        if q.ndim == 1:
            q = q[None, :]
        q = check_features(q, "query features")
        if q.shape[1] != self.dim:
            raise EvaluationInputError(f"query features have {q.shape[1]} dimensions but the gallery has {self.dim}")
        return q

    def decision_threshold(self, threshold=None, far: Optional[float] = None) -> Tuple[Optional[float], Optional[str]]:
        """``(threshold, where it came from)`` for ``search``'s ``threshold``/``far`` arguments
        (``(None, None)`` when neither is given); see :func:`resolve_threshold`."""
        return resolve_threshold(self.calibration, threshold, far)

    def search(
        self,
        queries,
        k: int = 10,
        exclude_camid=None,
        max_distance: Optional[float] = None,
        exclude_pid_camid=None,
        threshold=None,
        far: Optional[float] = None,
    ) -> List[SearchResult]:
        """The ``k`` nearest gallery items of each query, as one :class:`SearchResult` each.

        Args:
            queries: one feature ``(D,)``, features ``(N, D)`` (numpy or torch), or one or
                more image paths (needs a model: :meth:`from_images` or ``load(model=...)``).
            k: results per query (fewer when the gallery, after exclusion, is smaller).
            exclude_camid: leave out every gallery item of this camera (0-based camid): one
                camid for all queries or one per query; None keeps every camera.
            exclude_pid_camid: leave out the items of this person in this camera -- one
                ``(pid, camid)`` pair or one per query: the evaluation protocol's rule (it drops
                only the same person seen by the same camera, not the whole camera).
            max_distance: keep only items at L2 distance <= this; a query with none left
                gets an empty result.
            threshold: ``"calibrated"`` (the gallery's calibrated threshold), a distance, or
                None; gives each result a decision ("match" when the nearest item is within it).
            far: instead of ``threshold``, the threshold for this false accept rate, read off
                the gallery's calibration (e.g. 0.05).

        >>> import numpy as np
        >>> s = ReIDSearcher(np.array([[0.0], [1.0], [5.0]]), pids=[1, 2, 3], camids=[0, 1, 1])
        >>> [r.indices.tolist() for r in s.search(np.array([[0.2], [4.0]]), k=2)]
        [[0, 1], [2, 1]]
        >>> s.search(np.array([0.2]), k=2, exclude_camid=0)[0].pids.tolist()
        [2, 3]
        >>> s.search(np.array([0.2]), k=2, exclude_pid_camid=(1, 0))[0].pids.tolist()
        [2, 3]
        >>> len(s.search(np.array([20.0]), max_distance=3.0)[0])  # nothing that near
        0
        >>> [r.decision for r in s.search(np.array([[0.2], [20.0]]), k=1, threshold=0.5)]
        ['match', 'no match']
        """
        if max_distance is not None and (
            isinstance(max_distance, bool) or not np.isscalar(max_distance) or not float(max_distance) >= 0
        ):
            raise EvaluationInputError(f"max_distance must be a non-negative number or None; got {max_distance!r}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise EvaluationInputError(f"k must be a positive integer; got {k!r}")
        tau, source = self.decision_threshold(threshold, far)  # before any image is embedded
        q = self._query_features(queries)
        dist, ids = self._gallery.search(
            q, min(int(k), max(1, len(self))), exclude_camid=exclude_camid, exclude_pid_camid=exclude_pid_camid
        )
        return [self._result(dist[i], ids[i], max_distance, tau, source) for i in range(len(q))]

    def _result(self, dist: np.ndarray, ids: np.ndarray, max_distance, tau, source) -> SearchResult:
        found = ids >= 0
        ids, dist = ids[found], dist[found]
        if max_distance is not None:
            near = dist <= float(max_distance)
            ids, dist = ids[near], dist[near]
        pids, camids, paths = self._gallery.items(ids)
        decision = accepted = None
        if tau is not None:
            accepted = dist <= tau
            decision = MATCH if len(ids) and dist[0] <= tau else NO_MATCH
        return SearchResult(
            distances=dist,
            pids=pids,
            camids=camids,
            paths=paths,
            indices=ids,
            decision=decision,
            threshold=tau,
            threshold_source=source,
            accepted=accepted,
        )

    # ------------------------------------------------------------------ calibration
    def calibrate(self, queries, pids, camids, far: float = DEFAULT_FAR, source: str = "") -> Calibration:
        """Calibrate the "no match" threshold at ``far`` with labelled queries (features or
        image paths) against this gallery, whose pids/camids must be known; stored with the
        gallery (``search(..., threshold="calibrated")``, saved by :meth:`save`).

        Every query serves as a known person (its true matches in other cameras) and as an
        absent one (its nearest other identity): see :mod:`reid_srdl.evaluation.open_set`.
        """
        q = self._query_features(queries)
        pids = check_ids(pids, len(q), "calibration query pids")
        camids = check_ids(camids, len(q), "calibration query camids")
        g = self._gallery
        cal = calibrate(
            q,
            pids,
            camids,
            g.features,
            g.pids,
            g.camids,
            far=far,
            source=source or f"{len(q)} labelled queries against this gallery",
            model=g.model,
        )
        self.set_calibration(cal)
        return cal

    def set_calibration(self, calibration: Optional[Calibration]) -> None:
        """Use (and save with the gallery) this calibration; None removes it."""
        g = self._gallery
        g.calibration = None if calibration is None else calibration.to_meta()
        g.calibration_impostor = None if calibration is None else calibration.impostor

    # ------------------------------------------------------------------ persistence
    def save(self, path: PathLike) -> None:
        """Write the gallery file (features, pids, camids, paths, model fingerprint,
        extraction settings, calibration), atomically."""
        self._gallery.save(path)

    @classmethod
    def load(
        cls, path: PathLike, model=None, allow_mismatch: bool = False, trust_torchscript: bool = False, **embedding
    ) -> "ReIDSearcher":
        """Read a file written by :meth:`save` (or any feature file).

        With ``model`` (a network or the path of a trained one) image queries can be searched
        again.  The extraction settings recorded in the file are the defaults (so queries are
        embedded as the gallery was); an explicit option in ``embedding`` that differs from
        them, a model whose fingerprint differs from the recorded one, or a file that records
        no model, is a :class:`GalleryMismatchError` naming both sides -- unless
        ``allow_mismatch=True`` (you know the features are comparable).  ``trust_torchscript``:
        as in :meth:`from_images`.
        """
        check_option_names(embedding)
        if model is None and embedding:
            raise EvaluationInputError("embedding options need a model: ReIDSearcher.load(path, model=..., ...)")
        path = os.fspath(path)
        gallery = GalleryIndex.load(path)
        if model is None:
            return cls._wrap(gallery, None)
        stored = gallery.settings or {}
        options = dict(embedding)
        for key in ("normalize", "flip", "precision", "height", "width"):
            if key in stored and key not in options:
                options[key] = stored[key]
        embedder = Embedder(model, trust_torchscript=trust_torchscript, **options)
        if not allow_mismatch:
            _check_model(path, gallery.model, embedder)
            resolved = embedder.settings  # compared as resolved ("auto" precision -> what it runs at)
            asked = {k: resolved[k] for k in FEATURE_SETTINGS if k in embedding or k == "transform"}
            _check_settings(path, stored, asked)
        return cls._wrap(gallery, embedder)


def _check_model(path: str, recorded: Optional[Dict[str, Any]], embedder: Embedder) -> None:
    hint = "pass allow_mismatch=True (--allow-model-mismatch) only if you know the features are comparable"
    if recorded is None:
        raise GalleryMismatchError(
            f"{path} records no model (built from features or by an older version), so queries embedded by "
            f"{describe_model(embedder.fingerprint)} cannot be checked against it; {hint}"
        )
    if not same_model(recorded, embedder.fingerprint):
        raise GalleryMismatchError(
            f"{path} was built by {describe_model(recorded)} but the query model is "
            f"{describe_model(embedder.fingerprint)}; {hint}"
        )


def _check_settings(path: str, stored: Dict[str, Any], asked: Dict[str, Any]) -> None:
    """Settings asked for (as resolved) that differ from the ones the gallery recorded."""
    differ = [k for k in FEATURE_SETTINGS if k in stored and k in asked and asked[k] != stored[k]]
    if differ:
        both = "; ".join(f"{k}: gallery {stored[k]!r}, query {asked[k]!r}" for k in differ)
        raise GalleryMismatchError(
            f"{path} was embedded with other settings than asked ({both}); leave them out to use the gallery's, "
            f"or pass allow_mismatch=True (--allow-model-mismatch) if you know the features are comparable"
        )
