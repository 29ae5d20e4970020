"""A gallery index: feature vectors with their pids, camids, image paths and provenance.

Search is exact L2 (``ExactL2Index``: faiss ``IndexFlatL2``, GPU when present), distances
are L2 (not squared), results ordered by distance, ties by the smaller gallery index.

Camera ids are 0-based integers, as in torchreid and the evaluation: a Market-1501 file
named ``..._c1s1_...`` has camid 0.  pid/camid -1 (:data:`UNKNOWN`) marks an image whose
identity or camera is not known.

Two ways to leave gallery items out of a query's results:

* ``exclude_camid=c`` -- every item seen by camera ``c``, whoever it shows (e.g. "only look
  in the other cameras");
* ``exclude_pid_camid=(p, c)`` -- only the items of person ``p`` seen by camera ``c``: the
  evaluation protocol's rule (the same person in the same camera is too easy a match).

The file (``.npz``, loaded with ``allow_pickle=False``) is a feature file that
``tools/eval_reid.py`` also reads -- ``features``, ``pids``, ``camids``, ``paths`` -- plus
``meta``, a JSON string: the format tag, the fingerprint of the model that made the
features, the extraction settings, and the open-set calibration (threshold, FAR, how it was
obtained), whose impostor distances are stored as ``calibration_impostor``.  It is written
atomically (temporary file beside it, then a rename): a save killed midway leaves the old file.
"""

import json
import os
import threading
import zipfile
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from reid_srdl.core.files import atomic_path
from reid_srdl.evaluation.exact_index import ExactL2Index
from reid_srdl.evaluation.io import load_features
from reid_srdl.evaluation.metrics import INT64, EvaluationInputError, check_features, check_ids
from reid_srdl.search.labels import LabelError, parse_camera

UNKNOWN = -1
GALLERY_FORMAT = "reid_srdl.gallery/1"
PathLike = Union[str, os.PathLike]


class GalleryMismatchError(EvaluationInputError):
    """Query features would not be comparable with the gallery's (another model or settings)."""


def camera_name(camid: int) -> Optional[str]:
    """0-based camid -> the file-name camera ``c1``, ``c2``, ... (None when unknown)."""
    return None if camid < 0 else f"c{int(camid) + 1}"


def _integer_like(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _camid_hint(value) -> str:
    try:
        return f" (file name {value} is camid {parse_camera(value)})" if isinstance(value, str) else ""
    except LabelError:
        return ""


def per_query_ids(value, n: int, what: str) -> np.ndarray:
    """One integer id for all ``n`` queries or one per query, as an int64 vector; strings,
    floats and booleans are refused (camids are 0-based integers)."""
    scalar_not_int = np.ndim(value) == 0 and not _integer_like(value)
    if isinstance(value, (str, float, bool, np.floating, np.bool_)) or scalar_not_int:
        raise EvaluationInputError(
            f"{what} must be an integer id (0-based: file name c1 is camid 0) or one per query; "
            f"got {value!r}{_camid_hint(value)}"
        )
    if np.ndim(value) == 0:
        if not INT64.min <= int(value) <= INT64.max:  # kept as int64: never wrapped around
            raise EvaluationInputError(f"{what}: id {int(value)} is outside the range ids are stored in (int64)")
        return np.full(n, int(value), dtype=np.int64)
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        bad = next((v for v in arr.reshape(-1) if not _integer_like(v)), arr.dtype)
        bad = bad.item() if isinstance(bad, np.generic) else bad  # 0.5, not np.float64(0.5)
        raise EvaluationInputError(
            f"{what} must hold integer ids (0-based: file name c1 is camid 0); got {bad!r}{_camid_hint(bad)}"
        )
    return check_ids(arr, n, what)


def per_query_pairs(value, n: int, what: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(pids, camids)`` from one ``(pid, camid)`` pair for all queries or ``n`` pairs."""
    arr = np.asarray(value, dtype=object)
    if arr.ndim == 1 and arr.shape == (2,):
        arr = np.array([list(value)] * n, dtype=object)
    if arr.ndim != 2 or arr.shape != (n, 2):
        raise EvaluationInputError(f"{what} must be one (pid, camid) pair or one pair per query ({n}); got {value!r}")
    pids = per_query_ids(list(arr[:, 0]), n, f"{what} pids")
    camids = per_query_ids(list(arr[:, 1]), n, f"{what} camids")
    return pids, camids


class GalleryIndex:
    """Vectors + pids + camids (+ paths) + provenance, searched exactly; thread-safe.

    ``model`` (a fingerprint from :mod:`reid_srdl.search.fingerprint`), ``settings`` (the
    embedder's feature settings) and ``calibration`` (a dict, see
    :class:`reid_srdl.search.calibration.Calibration`) are None when unknown.

    >>> g = GalleryIndex.from_arrays(np.array([[0.0], [1.0], [5.0]]), pids=[1, 2, 3], camids=[0, 1, 1])
    >>> d, ids = g.search(np.array([[0.2]]), k=2)
    >>> ids.tolist(), np.round(d, 6).tolist()
    ([[0, 1]], [[0.2, 0.8]])
    >>> g.search(np.array([[0.2]]), k=2, exclude_camid=[0])[1].tolist()  # camera 0 left out
    [[1, 2]]
    >>> g.search(np.array([[0.2]]), k=2, exclude_pid_camid=(2, 1))[1].tolist()  # person 2 in camera 1
    [[0, 2]]
    """

    def __init__(self, dim: int, keep_paths: bool = True):
        self._index = ExactL2Index(int(dim))
        self._pids = np.zeros(0, dtype=np.int64)
        self._camids = np.zeros(0, dtype=np.int64)
        self._paths: Optional[List[str]] = [] if keep_paths else None
        self.model: Optional[Dict[str, Any]] = None
        self.settings: Optional[Dict[str, Any]] = None
        self.calibration: Optional[Dict[str, Any]] = None
        self.calibration_impostor: Optional[np.ndarray] = None
        # faiss' flat index may not be searched while it grows: one lock for reads and writes.
        self._lock = threading.RLock()

    @classmethod
    def from_arrays(cls, features, pids, camids, paths: Optional[Sequence[PathLike]] = None) -> "GalleryIndex":
        feats = check_features(features, "gallery features")
        index = cls(feats.shape[1], keep_paths=paths is not None)
        index.add(feats, pids, camids, paths)
        return index

    # ------------------------------------------------------------------ contents
    def add(self, features, pids, camids, paths: Optional[Sequence[PathLike]] = None) -> None:
        """Append items (paths must be given iff the gallery keeps paths); all checked first."""
        feats = check_features(features, "features to add")
        if feats.shape[1] != self.dim:
            raise EvaluationInputError(
                f"features to add have {feats.shape[1]} dimensions but the gallery has {self.dim}"
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
        with self._lock:
            self._index.add(feats)
            self._pids = np.concatenate([self._pids, pids])
            self._camids = np.concatenate([self._camids, camids])
            if paths is not None:
                self._paths.extend(paths)

    def __len__(self) -> int:
        return self._index.ntotal

    @property
    def dim(self) -> int:
        return self._index.dim

    @property
    def features(self) -> np.ndarray:
        with self._lock:
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

    def items(self, ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray, Optional[List[str]]]:
        """pids, camids and paths of the gallery items ``ids``."""
        with self._lock:
            return self._pids[ids], self._camids[ids], None if self._paths is None else [self._paths[i] for i in ids]

    # ------------------------------------------------------------------ search
    def search(
        self, queries: np.ndarray, k: int, exclude_camid=None, exclude_pid_camid=None
    ) -> Tuple[np.ndarray, np.ndarray]:
        """``(distances, ids)``, each ``(len(queries), k)``: L2 distances (float64) and gallery
        indices, nearest first, padded with inf / -1 when fewer items remain.

        ``exclude_camid``: one camid for all queries or one per query -- that camera's items are
        left out.  ``exclude_pid_camid``: one (pid, camid) pair or one per query -- the items of
        that person in that camera are left out (the evaluation protocol's rule).
        """
        q = check_features(queries, "query features")
        if q.shape[1] != self.dim:
            raise EvaluationInputError(f"query features have {q.shape[1]} dimensions but the gallery has {self.dim}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise EvaluationInputError(f"k must be a positive integer; got {k!r}")
        n = len(q)
        cams = None if exclude_camid is None else per_query_ids(exclude_camid, n, "exclude_camid")
        pairs = None if exclude_pid_camid is None else per_query_pairs(exclude_pid_camid, n, "exclude_pid_camid")
        with self._lock:
            k_eff = min(int(k), len(self))
            sq = np.full((n, k_eff), np.inf, dtype=np.float32)
            ids = np.full((n, k_eff), -1, dtype=np.int64)
            if k_eff == 0:
                pass
            elif cams is None and pairs is None:
                sq, ids = self._index.search(q, k_eff)
            else:
                # One search per distinct exclusion: queries that share it share one mask.
                groups: Dict[tuple, List[int]] = {}
                for row in range(n):
                    key = (
                        None if cams is None else int(cams[row]),
                        None if pairs is None else (int(pairs[0][row]), int(pairs[1][row])),
                    )
                    groups.setdefault(key, []).append(row)
                for (cam, pair), rows in groups.items():
                    mask = np.zeros(len(self), dtype=bool)
                    if cam is not None:
                        mask |= self._camids == cam
                    if pair is not None:
                        mask |= (self._pids == pair[0]) & (self._camids == pair[1])
                    sq[rows], ids[rows] = self._index.search(q[rows], k_eff, exclude=mask)
        dist = np.sqrt(np.maximum(sq.astype(np.float64), 0.0))
        dist[ids < 0] = np.inf
        if k_eff < k:  # pad to k columns so callers can rely on the shape
            dist = np.pad(dist, ((0, 0), (0, k - k_eff)), constant_values=np.inf)
            ids = np.pad(ids, ((0, 0), (0, k - k_eff)), constant_values=-1)
        return dist, ids

    # ------------------------------------------------------------------ persistence
    def meta(self) -> Dict[str, Any]:
        from reid_srdl import __version__

        return {
            "format": GALLERY_FORMAT,
            "written_by": f"reid_srdl {__version__}",
            "model": self.model,
            "settings": self.settings,
            "calibration": self.calibration,
        }

    def save(self, path: PathLike) -> None:
        """Write the gallery file (see the module docstring), atomically."""
        path = os.fspath(path)
        with self._lock:  # a consistent snapshot; the slow write happens outside the lock
            feats, pids, camids = self._index.vectors(), self._pids.copy(), self._camids.copy()
            paths = None if self._paths is None else list(self._paths)
            meta = json.dumps(self.meta())
            impostor = self.calibration_impostor
        arrays = {"features": feats, "pids": pids, "camids": camids, "meta": np.array(meta)}
        if paths is not None:
            arrays["paths"] = np.asarray(paths, dtype=str) if paths else np.zeros(0, dtype="<U1")
        if impostor is not None:
            arrays["calibration_impostor"] = np.asarray(impostor, dtype=np.float64)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())

    @classmethod
    def load(cls, path: PathLike) -> "GalleryIndex":
        """Read a gallery file (or any feature file: then model, settings and calibration are
        None).  Problems are an EvaluationInputError naming the file."""
        path = os.fspath(path)
        stored = load_features(path)
        index = cls.from_arrays(
            stored.features, stored.pids, stored.camids, None if stored.paths is None else list(stored.paths)
        )
        try:
            with np.load(path, allow_pickle=False) as npz:
                meta_text = str(npz["meta"]) if "meta" in npz.files else None
                impostor = npz["calibration_impostor"] if "calibration_impostor" in npz.files else None
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise EvaluationInputError(f"{path}: not a readable gallery file ({e})") from None
        if meta_text is not None:
            try:
                meta = json.loads(meta_text)
            except json.JSONDecodeError as e:
                raise EvaluationInputError(f"{path} key 'meta': not JSON ({e})") from None
            if not isinstance(meta, dict) or meta.get("format") != GALLERY_FORMAT:
                raise EvaluationInputError(f"{path} key 'meta': not a {GALLERY_FORMAT} description")
            index.model, index.settings = meta.get("model"), meta.get("settings")
            index.calibration = meta.get("calibration")
        if impostor is not None:
            index.calibration_impostor = np.sort(np.asarray(impostor, dtype=np.float64))
        return index
