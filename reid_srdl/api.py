"""Gallery search for deployment: index person crops once, then find who a query looks like.

>>> import numpy as np
>>> from reid_srdl.api import ReIDSearcher
>>> gallery = np.array([[0, 0], [3, 4], [1, 0]], dtype=np.float32)
>>> searcher = ReIDSearcher(gallery, pids=[7, 8, 7], camids=[1, 2, 2])
>>> hit = searcher.search(np.array([0.0, 0.0]), k=2)[0]
>>> hit.indices.tolist(), hit.pids.tolist(), hit.distances.tolist()
([0, 2], [7, 7], [0.0, 1.0])

Distances are Euclidean (L2, not squared).  Results are ordered by distance, ties by the
smaller gallery index.  Searches are exact (faiss ``IndexFlatL2``, on GPU when faiss sees one).
"""
import os
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Union

import numpy as np

from reid_srdl.evaluation.io import load_features, save_features
from reid_srdl.evaluation.metrics import EvaluationInputError, check_features, check_ids
from reid_srdl.evaluation.search import ExactL2Index

UNKNOWN = -1  # pid / camid of a gallery image whose identity or camera is not known

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class SearchResult:
    """The gallery items found for one query, nearest first (possibly none).

    ``distances`` are L2 distances; ``paths`` is None when the gallery has no paths.
    An empty result means "no match" (nothing within ``max_distance``).
    """

    distances: np.ndarray
    pids: np.ndarray
    camids: np.ndarray
    paths: Optional[List[str]]
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)


# How from_images embeds images (and image queries later); see extract_features.
_EMBEDDING_DEFAULTS = dict(
    transform=None, batch_size=64, device="cpu", height=256, width=128,
    flip=False, normalize=False, workers=0, progress=False, fast=False, precision=None,
)


def _resolve_model(model, options: dict):
    """A network, or the path of a trained one (a run directory or final.pt) or of an
    exported embedding (.onnx, or TorchScript from tools/export.py): then it is loaded, and
    the image size it was trained / exported at is used unless height/width were given."""
    if not isinstance(model, (str, os.PathLike)):
        return model, options
    from reid_srdl.engine.checkpoint import load_model_file
    from reid_srdl.export import exported_format, load_exported

    if exported_format(model) is not None:
        net = load_exported(model)
        meta = net.meta
    else:
        net, meta = load_model_file(os.fspath(model))
    for key in ("height", "width"):
        if options.get(key) is None and meta.get(key):
            options[key] = int(meta[key])
    return net, options


def _embedding_options(**options) -> dict:
    unknown = sorted(set(options) - set(_EMBEDDING_DEFAULTS))
    if unknown:
        raise EvaluationInputError(
            f"unknown embedding option(s) {', '.join(unknown)}; valid: {', '.join(_EMBEDDING_DEFAULTS)}"
        )
    return {**_EMBEDDING_DEFAULTS, **options}


def _ids_of_images(n: int, pids, camids):
    """pids and camids of ``n`` image paths (UNKNOWN where not given), checked before any
    image is embedded."""
    pids = np.full(n, UNKNOWN) if pids is None else check_ids(pids, n, f"pids (one per image path, {n} paths)")
    camids = np.full(n, UNKNOWN) if camids is None else check_ids(camids, n, f"camids (one per image path, {n} paths)")
    return pids, camids


def _is_path_list(queries) -> bool:
    return (
        isinstance(queries, (list, tuple))
        and len(queries) > 0
        and all(isinstance(q, (str, os.PathLike)) for q in queries)
    )


class ReIDSearcher:
    """An exact L2 index of gallery features with their pids, camids and image paths.

    Build it from features (``ReIDSearcher(features, pids, camids, paths)``, alias
    :meth:`from_features`) or from a model and images (:meth:`from_images`); grow it with
    :meth:`add` / :meth:`add_images`; query it with :meth:`search`; keep it with
    :meth:`save` / :meth:`load` (a feature file that ``tools/eval_reid.py`` also reads).
    """

    def __init__(self, features, pids, camids, paths: Optional[Sequence[PathLike]] = None):
        feats = check_features(features, "gallery features")
        self._start_empty(feats.shape[1], keep_paths=paths is not None)
        self._model = None
        self._embedding: dict = {}
        self.add(feats, pids, camids, paths)

    def _start_empty(self, dim: int, keep_paths: bool) -> None:
        self._index = ExactL2Index(dim)
        self._pids = np.zeros(0, dtype=np.int64)
        self._camids = np.zeros(0, dtype=np.int64)
        self._paths: Optional[List[str]] = [] if keep_paths else None

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
    ) -> "ReIDSearcher":
        """Index images embedded by ``model`` (``model(x)`` returns ``(logits, features)``).

        ``model`` may also be the path of a trained network (a run directory or its
        ``final.pt``) or of an exported one (``model.onnx`` or TorchScript, written by
        ``tools/export.py``); then the image size it was trained at is the default
        ``height``/``width`` (otherwise 256 x 128).  ``transform`` defaults to
        ``reid_test_transform(height, width)``; ``flip`` and
        ``normalize`` are as in :func:`reid_srdl.evaluation.features.extract_features` and are
        applied the same way to image queries later; so are ``fast`` and ``precision``
        (BN folding, channels-last, bf16 autocast: see ``extract_features``).  Images are
        decoded in ``workers`` DataLoader processes.  Unknown pids/camids default to -1.

        An image that cannot be decoded is an error naming it, unless ``skip_unreadable``:
        then it is reported on stderr and left out of the gallery (with its pid and camid).
        """
        model, sizes = _resolve_model(model, {"height": height, "width": width})
        searcher = cls.__new__(cls)
        searcher._model = model
        searcher._embedding = _embedding_options(
            transform=transform, batch_size=batch_size, device=device, flip=flip, normalize=normalize,
            workers=workers, progress=progress, fast=fast, precision=precision,
            **{k: v for k, v in sizes.items() if v is not None},
        )
        paths = [os.fspath(p) for p in paths]
        pids, camids = _ids_of_images(len(paths), pids, camids)
        feats, kept = searcher._embed(paths, skip_unreadable)
        searcher._start_empty(feats.shape[1], keep_paths=True)
        searcher.add(feats, pids[kept], camids[kept], [paths[i] for i in kept])
        return searcher

    def embed_images(self, paths: Sequence[PathLike]) -> np.ndarray:
        """Features ``(N, D)`` of image files, with the searcher's model and settings (an
        unreadable file is an error naming it)."""
        return self._embed([os.fspath(p) for p in paths], skip_unreadable=False)[0]

    def _embed(self, paths: List[str], skip_unreadable: bool):
        """``(features, kept)``: features of the readable files and their positions in ``paths``."""
        if self._model is None:
            raise EvaluationInputError(
                "this searcher has no model (built from features); pass query features, or "
                "build it with ReIDSearcher.from_images(...) / ReIDSearcher.load(path, model=...)"
            )
        from reid_srdl.data.transforms import reid_test_transform
        from reid_srdl.evaluation.features import embed_image_files

        opts = self._embedding
        transform = opts["transform"] or reid_test_transform(opts["height"], opts["width"])
        return embed_image_files(
            self._model, paths, transform, batch_size=opts["batch_size"], workers=opts["workers"],
            skip_unreadable=skip_unreadable, device=opts["device"], flip=opts["flip"],
            normalize=opts["normalize"], progress=opts["progress"], fast=opts["fast"], precision=opts["precision"],
        )

    def add(self, features, pids, camids, paths: Optional[Sequence[PathLike]] = None) -> None:
        """Append gallery items (paths must be given iff the searcher already keeps paths)."""
        feats = check_features(features, "features to add")
        if feats.shape[1] != self._index.dim:
            raise EvaluationInputError(
                f"features to add have {feats.shape[1]} dimensions but the gallery has {self._index.dim}"
            )
        pids = check_ids(pids, len(feats), "pids to add")
        camids = check_ids(camids, len(feats), "camids to add")
        if (paths is None) != (self._paths is None):
            raise EvaluationInputError(
                "paths must be given for every gallery item or for none: "
                + ("this gallery keeps paths, give them" if self._paths is not None else "this gallery has no paths")
            )
        if paths is not None:
            paths = [os.fspath(p) for p in paths]
            if len(paths) != len(feats):
                raise EvaluationInputError(f"paths to add: {len(paths)} paths for {len(feats)} features")
        self._index.add(feats)
        self._pids = np.concatenate([self._pids, pids])
        self._camids = np.concatenate([self._camids, camids])
        if paths is not None:
            self._paths.extend(paths)

    def add_images(self, paths: Sequence[PathLike], pids=None, camids=None, skip_unreadable: bool = False) -> None:
        """Embed images with the searcher's model and append them (``skip_unreadable``: as
        in :meth:`from_images`)."""
        paths = [os.fspath(p) for p in paths]
        pids, camids = _ids_of_images(len(paths), pids, camids)
        feats, kept = self._embed(paths, skip_unreadable)
        self.add(feats, pids[kept], camids[kept], [paths[i] for i in kept] if self._paths is not None else None)

    # ------------------------------------------------------------------ accessors
    def __len__(self) -> int:
        return self._index.ntotal

    @property
    def dim(self) -> int:
        return self._index.dim

    @property
    def features(self) -> np.ndarray:
        return self._index.vectors()

    @property
    def pids(self) -> np.ndarray:
        return self._pids.copy()

    @property
    def camids(self) -> np.ndarray:
        return self._camids.copy()

    @property
    def paths(self) -> Optional[List[str]]:
        return None if self._paths is None else list(self._paths)

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

    def search(
        self,
        queries,
        k: int = 10,
        exclude_camid=None,
        max_distance: Optional[float] = None,
    ) -> List[SearchResult]:
        """The ``k`` nearest gallery items of each query, as one :class:`SearchResult` each.

        Args:
            queries: one feature ``(D,)``, features ``(N, D)`` (numpy or torch), or one or
                more image paths (needs a model: :meth:`from_images` or ``load(model=...)``).
            k: results per query (fewer when the gallery, after exclusion, is smaller).
            exclude_camid: leave out gallery items of this camera: one camid for all queries
                or one per query (e.g. the queries' own cameras); None keeps every camera.
            max_distance: keep only items at L2 distance <= this; a query with none left
                gets an empty result, meaning "no match".

        >>> import numpy as np
        >>> s = ReIDSearcher(np.array([[0.0], [1.0], [5.0]]), pids=[1, 2, 3], camids=[0, 1, 1])
        >>> [r.indices.tolist() for r in s.search(np.array([[0.2], [4.0]]), k=2)]
        [[0, 1], [2, 1]]
        >>> s.search(np.array([0.2]), k=2, exclude_camid=0)[0].pids.tolist()
        [2, 3]
        >>> len(s.search(np.array([20.0]), max_distance=3.0)[0])  # nothing near: no match
        0
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise EvaluationInputError(f"k must be a positive integer; got {k!r}")
        if max_distance is not None and not (np.isscalar(max_distance) and float(max_distance) >= 0):
            raise EvaluationInputError(f"max_distance must be a non-negative number or None; got {max_distance!r}")
        q = self._query_features(queries)
        k = min(int(k), len(self))
        sq = np.full((len(q), k), np.inf, dtype=np.float32)
        ids = np.full((len(q), k), -1, dtype=np.int64)
        if exclude_camid is None:
            sq, ids = self._index.search(q, k)
        else:
            cams = np.asarray(exclude_camid)
            cams = np.full(len(q), cams) if cams.ndim == 0 else check_ids(cams, len(q), "exclude_camid")
            for cam in np.unique(cams):  # one search per camera to leave out
                rows = np.flatnonzero(cams == cam)
                sq[rows], ids[rows] = self._index.search(q[rows], k, exclude=self._camids == cam)
        return [self._result(sq[i], ids[i], max_distance) for i in range(len(q))]

    def _result(self, sq: np.ndarray, ids: np.ndarray, max_distance: Optional[float]) -> SearchResult:
        found = ids >= 0
        ids = ids[found]
        dist = np.sqrt(np.maximum(sq[found].astype(np.float64), 0.0))
        if max_distance is not None:
            near = dist <= float(max_distance)
            ids, dist = ids[near], dist[near]
        return SearchResult(
            distances=dist,
            pids=self._pids[ids],
            camids=self._camids[ids],
            paths=None if self._paths is None else [self._paths[i] for i in ids],
            indices=ids,
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: PathLike) -> None:
        """Write the index (features, pids, camids, paths) as a feature file, atomically."""
        save_features(os.fspath(path), self.features, self._pids, self._camids, self._paths)

    @classmethod
    def load(cls, path: PathLike, model=None, **embedding) -> "ReIDSearcher":
        """Read a file written by :meth:`save` (or any feature file).

        With ``model`` (a network or the path of a trained one, and the :meth:`from_images`
        settings in ``embedding``), image queries can be searched again.
        """
        stored = load_features(os.fspath(path))
        paths = None if stored.paths is None else list(stored.paths)
        searcher = cls(stored.features, stored.pids, stored.camids, paths)
        if model is not None:
            searcher._model, embedding = _resolve_model(model, dict(embedding))
            searcher._embedding = _embedding_options(**embedding)
        elif embedding:
            raise EvaluationInputError("embedding options need a model: ReIDSearcher.load(path, model=..., ...)")
        return searcher
