"""Match decisions: is the query's person in the gallery, and which hits are within the
threshold.  One rule everywhere (the API, the CLI, the page, the HTML report): a match is
``distance <= threshold``; the decision looks at the nearest hit that is left.

:func:`keep_hits` drops hits from a result (e.g. the page's query picked from the gallery,
which must not find itself) and decides again on what is left, so callers never patch a
result by hand.
"""

from dataclasses import replace
from typing import Optional, Tuple

import numpy as np

MATCH, NO_MATCH = "match", "no match"


def decide(distances: np.ndarray, threshold: Optional[float]) -> Tuple[Optional[str], Optional[np.ndarray]]:
    """``(decision, accepted)`` for hits at ``distances`` (nearest first): ``(None, None)``
    without a threshold."""
    if threshold is None:
        return None, None
    accepted = np.asarray(distances) <= threshold
    return (MATCH if len(accepted) and bool(accepted[0]) else NO_MATCH), accepted


def keep_hits(result, keep: np.ndarray, k: Optional[int] = None):
    """``result`` with only the hits where ``keep`` is true (the first ``k`` of them), its
    decision made again on what is left."""
    idx = np.flatnonzero(np.asarray(keep, dtype=bool))
    if k is not None:
        idx = idx[:k]
    distances = result.distances[idx]
    decision, accepted = decide(distances, result.threshold)
    return replace(
        result,
        distances=distances,
        pids=result.pids[idx],
        camids=result.camids[idx],
        paths=None if result.paths is None else [result.paths[i] for i in idx],
        indices=result.indices[idx],
        items=tuple(result.items[i] for i in idx) if result.items else result.items,
        decision=decision,
        accepted=accepted,
    )
