"""What a search returns per query: the hits, nearest first, with each hit's metadata, and
the decision when a threshold was given (:mod:`reid_srdl.search.decisions`)."""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from reid_srdl.search.decisions import decide
from reid_srdl.search.gallery import camid_of
from reid_srdl.search.stores.base import GalleryItem
from reid_srdl.search.stores.records import format_time


@dataclass(frozen=True)
class SearchResult:
    """The gallery items found for one query, nearest first (possibly none).

    ``distances`` are L2 distances; ``indices`` the items' ids (positions for a gallery built
    from arrays or read from an ``.npz``, :func:`~reid_srdl.search.stores.base.item_id` in a
    store); ``items`` each hit's metadata (camera, time, source, frame, box, track, pid);
    ``pids``/``camids`` (0-based, -1 for a camera not named ``c1``, ``c2``...) and ``paths``
    (the items' sources; None when the gallery has no paths) as in the first releases.
    With a threshold: ``decision`` is ``"match"`` when the nearest item is within it
    (distance <= threshold), else ``"no match"``; ``accepted`` flags the hits within it;
    ``threshold_source`` says where the threshold came from.  Without one, these are None.
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
    items: Tuple[GalleryItem, ...] = ()

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def ids(self) -> np.ndarray:
        return self.indices

    @property
    def nearest_distance(self) -> float:
        """Distance of the first hit (inf when there is none): what the decision compares."""
        return float(self.distances[0]) if len(self) else float("inf")

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready: decision, threshold and its source, and the hits with their metadata
        (``time`` as ISO 8601 UTC, ``camid`` 0-based)."""
        hits = []
        for r in range(len(self)):
            item = self.items[r] if self.items else None
            hit = {
                "rank": r + 1,
                "index": int(self.indices[r]),
                "id": int(self.indices[r]),
                "distance": float(self.distances[r]),
                "pid": int(self.pids[r]),
                "camid": int(self.camids[r]),
                "camera": (item.camera or None) if item else None,
                "path": None if self.paths is None else self.paths[r],
            }
            if item is not None:
                hit.update(
                    source=item.source,
                    timestamp=item.timestamp,
                    time=format_time(item.timestamp),
                    frame=item.frame,
                    box=None if item.box is None else list(item.box),
                    track=item.track,
                )
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


def result_of(
    distances: np.ndarray,
    ids: np.ndarray,
    items: List[GalleryItem],
    has_paths: bool,
    max_distance: Optional[float] = None,
    threshold: Optional[float] = None,
    source: Optional[str] = None,
) -> SearchResult:
    """One query's result from a store's row of hits (padding dropped, ``max_distance``
    applied, decision made)."""
    n = len(items)
    keep = np.ones(n, dtype=bool) if max_distance is None else distances[:n] <= max_distance
    dist = distances[:n][keep]
    kept = [it for it, k in zip(items, keep) if k]
    decision, accepted = decide(dist, threshold)
    return SearchResult(
        distances=dist,
        pids=np.asarray([it.pid for it in kept], dtype=np.int64),
        camids=np.asarray([camid_of(it.camera) for it in kept], dtype=np.int64),
        paths=[it.source for it in kept] if has_paths else None,
        indices=ids[:n][keep],
        decision=decision,
        threshold=threshold,
        threshold_source=source,
        accepted=accepted,
        items=tuple(kept),
    )
