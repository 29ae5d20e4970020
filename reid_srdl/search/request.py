"""A search request as the API takes it, turned into what a store answers: query features
and one :class:`~reid_srdl.search.stores.base.SearchFilter` per query.

* ``exclude_camid`` -- one 0-based camid for all queries or one per query: that camera's
  items are left out (``SearchFilter.exclude_cameras``, camera ``c{camid+1}``);
* ``exclude_pid_camid`` -- one ``(pid, camid)`` or one per query: the evaluation protocol's
  rule, only that person in that camera (``exclude_pid_camera``);
* ``cameras`` -- only these camera names; ``exclude_cameras`` -- none of these;
  ``time_from`` / ``time_to`` -- UTC seconds or ISO 8601 text (no offset: UTC), inclusive;
  ``exclude_ids`` -- item ids (one list for all queries, or one list per query).
"""

import os
from typing import Callable, List, Optional, Sequence

import numpy as np

from reid_srdl.core.arrays import check_features, check_ids, positive_int
from reid_srdl.search.errors import SearchError
from reid_srdl.search.gallery import UNKNOWN, camera_name, per_query_ids, per_query_pairs
from reid_srdl.search.stores import records
from reid_srdl.search.stores.base import SearchFilter


def is_path_list(queries) -> bool:
    if not isinstance(queries, (list, tuple)) or len(queries) == 0:
        return False
    return all(isinstance(q, (str, os.PathLike)) for q in queries)


def query_features(queries, dim: int, embed_paths: Callable[[List[str]], np.ndarray]) -> np.ndarray:
    """``(N, dim)`` float32 query features from one feature, an ``(N, D)`` array (numpy or
    torch) or image paths (embedded by ``embed_paths``)."""
    if isinstance(queries, (str, os.PathLike)):
        queries = [queries]
    if is_path_list(queries):
        return embed_paths([os.fspath(q) for q in queries])
    if hasattr(queries, "detach"):  # a torch tensor
        queries = queries.detach().cpu().numpy()
    q = np.asarray(queries)
    if q.ndim == 1:
        q = q[None, :]
    q = check_features(q, "query features")
    if q.shape[1] != dim:
        raise SearchError(f"query features have {q.shape[1]} dimensions but the gallery has {dim}")
    return q


def embed_queries(embedder, paths: List, dim: int, meta: dict, skip_unreadable: bool = False, decoded: bool = False):
    """``(features, kept)`` of image files (or ``decoded`` PIL images) by the searcher's
    embedder, whose features must have the gallery's dimension (a GalleryMismatchError
    naming the gallery's model)."""
    if embedder is None:
        raise SearchError(
            "this searcher has no model (built from features); pass query features, or "
            "build it with ReIDSearcher.from_images(...) / ReIDSearcher.load(path, model=...)"
        )
    if decoded:
        feats, kept = embedder.embed_pil(paths), np.arange(len(paths))
    else:
        feats, kept = embedder.embed_files(paths, skip_unreadable)
    check_dim(feats.shape[1], dim, meta)
    return feats, kept


def check_dim(got: int, dim: int, meta: dict) -> None:
    from reid_srdl.search.fingerprint import describe_model
    from reid_srdl.search.gallery import GalleryMismatchError

    if got != dim:
        raise GalleryMismatchError(
            f"the model gives {got}-dimensional features but the gallery holds {dim}-dimensional ones "
            f"(made by {describe_model(meta.get('model'))}): use the model that built the gallery"
        )


def check_k(k) -> int:
    return positive_int(k, "k", error=SearchError)


def check_max_distance(max_distance) -> Optional[float]:
    if max_distance is None:
        return None
    if isinstance(max_distance, bool) or not np.isscalar(max_distance) or not float(max_distance) >= 0:
        raise SearchError(f"max_distance must be a non-negative number or None; got {max_distance!r}")
    return float(max_distance)


def _time(value, what: str) -> Optional[float]:
    return records.parse_time(value, what) if isinstance(value, str) else records.check_time(value, what)


def _per_query_ids(value, n: int) -> List[Optional[tuple]]:
    if value is None:
        return [None] * n
    value = list(value)
    if value and all(isinstance(v, (list, tuple, np.ndarray)) for v in value):
        if len(value) != n:
            raise SearchError(f"exclude_ids: {len(value)} lists for {n} queries")
        return [tuple(records.check_ids(v, "exclude_ids")) for v in value]
    return [tuple(records.check_ids(value, "exclude_ids"))] * n


def filters(
    n: int,
    exclude_camid=None,
    exclude_pid_camid=None,
    cameras: Optional[Sequence[str]] = None,
    time_from=None,
    time_to=None,
    exclude_ids=None,
    exclude_cameras: Optional[Sequence[str]] = None,
) -> List[Optional[SearchFilter]]:
    """One SearchFilter per query (None where nothing is filtered); errors name the argument."""
    cams = None if exclude_camid is None else per_query_ids(exclude_camid, n, "exclude_camid")
    pairs = None if exclude_pid_camid is None else per_query_pairs(exclude_pid_camid, n, "exclude_pid_camid")
    t0, t1 = _time(time_from, "time_from"), _time(time_to, "time_to")
    cameras, named_out = _names(cameras, "cameras"), _names(exclude_cameras, "exclude_cameras") or ()
    skip = _per_query_ids(exclude_ids, n)
    out = []
    for i in range(n):
        excluded = named_out + (() if cams is None else (camera_name(int(cams[i])) or "",))  # -1: unknown, ""
        pair = None if pairs is None else (int(pairs[0][i]), camera_name(int(pairs[1][i])) or "")
        f = SearchFilter(cameras, t0, t1, pair, skip[i], excluded or None)
        out.append(None if f == SearchFilter() else f)
    return out


def _names(names, what: str) -> Optional[tuple]:
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    return tuple(records.check_text(c, what, records.MAX_CAMERA) for c in names)


def ids_of_images(n: int, pids, camids):
    """pids and camids of ``n`` image paths (UNKNOWN where not given), checked before any
    image is embedded."""
    pids = np.full(n, UNKNOWN) if pids is None else check_ids(pids, n, f"pids (one per image path, {n} paths)")
    camids = np.full(n, UNKNOWN) if camids is None else check_ids(camids, n, f"camids (one per image path, {n} paths)")
    return pids, camids
