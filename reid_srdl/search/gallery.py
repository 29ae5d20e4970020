"""Names of the first releases' gallery API, kept where callers import them.

Camera ids are 0-based integers, as in torchreid and the evaluation: a Market-1501 file
named ``..._c1s1_...`` has camid 0, and a gallery item's camera name ``c1``.  pid/camid -1
(:data:`UNKNOWN`) marks an image whose identity or camera is not known.

Two ways to leave gallery items out of a query's results (see :mod:`reid_srdl.search.request`):

* ``exclude_camid=c`` -- every item seen by camera ``c``, whoever it shows (e.g. "only look
  in the other cameras");
* ``exclude_pid_camid=(p, c)`` -- only the items of person ``p`` seen by camera ``c``: the
  evaluation protocol's rule (the same person in the same camera is too easy a match).

The gallery itself is a store (:mod:`reid_srdl.search.stores`); an ``.npz`` gallery file is
read and written by :mod:`reid_srdl.search.stores.npz_store`.
"""

from typing import Tuple

import numpy as np

from reid_srdl.core.arrays import INT64, check_ids
from reid_srdl.search.errors import SearchError
from reid_srdl.search.labels import LabelError, parse_camera
from reid_srdl.search.stores.npz_store import GALLERY_FORMAT, camera_name, camid_of  # noqa: F401

UNKNOWN = -1


class GalleryMismatchError(SearchError):
    """Query features would not be comparable with the gallery's (another model or settings)."""


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
        raise SearchError(
            f"{what} must be an integer id (0-based: file name c1 is camid 0) or one per query; "
            f"got {value!r}{_camid_hint(value)}"
        )
    if np.ndim(value) == 0:
        if not INT64.min <= int(value) <= INT64.max:  # kept as int64: never wrapped around
            raise SearchError(f"{what}: id {int(value)} is outside the range ids are stored in (int64)")
        return np.full(n, int(value), dtype=np.int64)
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        bad = next((v for v in arr.reshape(-1) if not _integer_like(v)), arr.dtype)
        bad = bad.item() if isinstance(bad, np.generic) else bad  # 0.5, not np.float64(0.5)
        raise SearchError(
            f"{what} must hold integer ids (0-based: file name c1 is camid 0); got {bad!r}{_camid_hint(bad)}"
        )
    return check_ids(arr, n, what)


def per_query_pairs(value, n: int, what: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(pids, camids)`` from one ``(pid, camid)`` pair for all queries or ``n`` pairs."""
    arr = np.asarray(value, dtype=object)
    if arr.ndim == 1 and arr.shape == (2,):
        arr = np.array([list(value)] * n, dtype=object)
    if arr.ndim != 2 or arr.shape != (n, 2):
        raise SearchError(f"{what} must be one (pid, camid) pair or one pair per query ({n}); got {value!r}")
    pids = per_query_ids(list(arr[:, 0]), n, f"{what} pids")
    camids = per_query_ids(list(arr[:, 1]), n, f"{what} camids")
    return pids, camids
