"""Open-set re-id: is the query's person in the gallery at all?  Thresholds at a false-accept rate.

We follow the open-set person re-identification protocol of Liao, Mo, Zhu, Hu and Li,
*Open-set Person Re-identification* (arXiv:1408.0872, 2014), which takes its measures from
the open-set ("watch list") identification of face recognition (Phillips, Grother and
Micheals, *Evaluation Methods in Face Recognition*, ch. 14 of the Handbook of Face
Recognition, Li and Jain eds., 2005).  With similarities ``s`` they accept ``s >= tau``; we
rank by L2 distance and accept ``d <= tau``:

* **FAR(tau)** -- false accept rate: the fraction of probes whose person is *not* in the
  gallery that are accepted, i.e. whose nearest gallery item is within ``tau``.
* **DIR(tau)** -- detection and identification rate at rank 1: the fraction of probes whose
  person *is* in the gallery whose nearest (valid) gallery item is a true match AND within
  ``tau``.  ``DIR(inf)`` is the closed-set Rank-1.
* **TAR(tau)** -- true accept rate of verification: the fraction of genuine pairs (a query
  and one of its true matches) within ``tau``.  Its FAR is the open-set FAR above (per absent
  person), not the per-pair rate of face-verification benchmarks: the threshold answers
  "is this person here?", which is what a gallery search decides.
* **threshold at a target FAR f** -- the largest observed impostor distance whose acceptance
  keeps ``FAR <= f`` on the calibration probes (equal distances are accepted or rejected
  together); when even the nearest impostor would exceed the budget, the float just below
  it (nothing accepted).  This is bob.measure's ``far_threshold`` rule, mirrored for distances.

From one labelled query/gallery split (the closed-set protocol's data) every query serves
twice, as in leave-one-identity-out testing:

* as a probe of a **known** person: the Market-1501 protocol's gallery (same person in the
  same camera and junk, pid -1, removed), giving its genuine distances (to its true matches
  in other cameras) and its rank-1 item; a query without a true match is not a known probe;
* as a probe of an **absent** person: the gallery without any image of its person, so its
  score is the distance to the nearest gallery item of another identity (distractors, pid 0,
  included; junk excluded).  This is exactly what the query would score if its person had
  never been enrolled.

Ties between a true match and another item at the same distance go to the smaller gallery
index, as everywhere in reid_srdl (bob.measure counts a tie against the true match).
Pure numpy; distances are computed in memory-bounded blocks.
"""

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from reid_srdl.core.arrays import EvaluationInputError
from reid_srdl.evaluation.metrics import JUNK_PID, check_query_gallery
from reid_srdl.index.distances import distance_blocks

REPORTED_FARS = (0.01, 0.05, 0.10)
REFERENCE = "Liao et al., Open-set Person Re-identification, arXiv:1408.0872 (2014)"


@dataclass(frozen=True)
class OpenSetScores:
    """The distances the open-set measures are computed from (all L2, float64).

    ``genuine``: every (known probe, true match in another camera) pair.
    ``impostor``: per absent-person probe, the distance to the nearest gallery item of
    another identity.  ``top1_distance`` / ``top1_is_match``: per known probe, the distance
    to its nearest valid gallery item and whether that item is a true match.
    """

    genuine: np.ndarray
    impostor: np.ndarray
    top1_distance: np.ndarray
    top1_is_match: np.ndarray
    num_queries: int

    @property
    def num_known(self) -> int:
        return len(self.top1_distance)


@dataclass(frozen=True)
class OperatingPoint:
    """One threshold: the target FAR, the threshold, and the rates it gives on the probes."""

    far: float
    threshold: float
    achieved_far: float
    tar: float
    dir: float


@dataclass(frozen=True)
class OpenSetResult:
    """Operating points at the requested FARs, and the probe counts behind them."""

    points: Tuple[OperatingPoint, ...]
    num_queries: int
    num_known_probes: int
    num_impostor_probes: int
    num_genuine_pairs: int

    def point(self, far: float) -> OperatingPoint:
        for p in self.points:
            if np.isclose(p.far, far, rtol=0, atol=1e-12):
                return p
        raise EvaluationInputError(f"no operating point at FAR {far}; computed: {[p.far for p in self.points]}")

    def to_dict(self) -> Dict[str, float]:
        """Flat JSON-ready values: ``threshold@FAR=1%``, ``TAR@FAR=1%``, ``DIR@FAR=1%``,
        ``achieved_FAR@FAR=1%`` per point (fractions; thresholds are L2 distances) and counts."""
        out: Dict[str, float] = {}
        for p in self.points:
            tag = f"FAR={100 * p.far:g}%"
            out[f"threshold@{tag}"] = float(p.threshold)
            out[f"TAR@{tag}"] = float(p.tar)
            out[f"DIR@{tag}"] = float(p.dir)
            out[f"achieved_FAR@{tag}"] = float(p.achieved_far)
        out.update(
            num_queries=int(self.num_queries),
            num_known_probes=int(self.num_known_probes),
            num_impostor_probes=int(self.num_impostor_probes),
            num_genuine_pairs=int(self.num_genuine_pairs),
        )
        return out


# ------------------------------------------------------------------------- distances
def open_set_scores(
    q_feats, g_feats, q_pids, g_pids, q_camids, g_camids, chunk_size: Optional[int] = None
) -> OpenSetScores:
    """Genuine, impostor and rank-1 distances of a labelled query/gallery split (see the
    module docstring for which query counts where).  Queries with pid -1 are ignored."""
    q, g, q_pids, g_pids, q_camids, g_camids = check_query_gallery(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids)
    order = np.argsort(g_pids, kind="stable")  # gallery columns of each pid, ascending
    pids, starts = np.unique(g_pids[order], return_index=True)
    bounds = np.append(starts, len(g_pids))
    junk = g_pids == JUNK_PID
    genuine, impostor, top1_distance, top1_is_match = [], [], [], []
    for start, block in distance_blocks(q, g, chunk_size):
        dist = np.sqrt(block.astype(np.float64))
        dist[:, junk] = np.inf
        for i, row in enumerate(dist):
            pid, cam = q_pids[start + i], q_camids[start + i]
            if pid == JUNK_PID:
                continue
            at = int(np.searchsorted(pids, pid))
            mates = order[bounds[at] : bounds[at + 1]] if at < len(pids) and pids[at] == pid else order[:0]
            mate_dist = row[mates]
            row[mates] = np.inf  # now: distances to the other identities only
            nearest_other = int(np.argmin(row))  # first minimum: the smaller index on ties
            if np.isfinite(row[nearest_other]):
                impostor.append(row[nearest_other])
            positives = g_camids[mates] != cam
            if not positives.any():
                continue  # not a known probe: no true match in another camera
            pos_dist = mate_dist[positives]
            genuine.append(pos_dist)
            best = int(np.argmin(pos_dist))
            best_col = mates[positives][best]
            best_dist = pos_dist[best]
            other = row[nearest_other]
            top1_is_match.append(best_dist < other or (best_dist == other and best_col < nearest_other))
            top1_distance.append(min(best_dist, other))
    return OpenSetScores(
        genuine=np.concatenate(genuine) if genuine else np.zeros(0),
        impostor=np.asarray(impostor, dtype=np.float64),
        top1_distance=np.asarray(top1_distance, dtype=np.float64),
        top1_is_match=np.asarray(top1_is_match, dtype=bool),
        num_queries=len(q),
    )


# ------------------------------------------------------------------------- rates and thresholds
def _check_far(far) -> float:
    if isinstance(far, bool) or not isinstance(far, (int, float, np.integer, np.floating)) or not 0 <= far <= 1:
        raise EvaluationInputError(f"a false accept rate must be a number in [0, 1] (0.01 = 1%); got {far!r}")
    return float(far)


def _sorted_distances(values, what: str) -> np.ndarray:
    arr = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    if arr.size == 0:
        raise EvaluationInputError(f"no {what} distance to calibrate from")
    return arr


def threshold_at_far(impostor, far: float) -> float:
    """The largest threshold (an observed impostor distance) whose acceptance rule
    ``distance <= threshold`` accepts at most a fraction ``far`` of the impostor probes.

    >>> threshold_at_far([1.0, 2.0, 3.0, 4.0], 0.5)  # accepts 1 and 2: FAR 2/4
    2.0
    >>> threshold_at_far([1.0, 2.0, 2.0, 4.0], 0.5)  # 2 and 2 go together: only 1 fits
    1.0
    >>> threshold_at_far([1.0, 2.0, 3.0, 4.0], 0.1) < 1.0  # not even the nearest one fits
    True
    """
    far = _check_far(far)
    s = _sorted_distances(impostor, "impostor")
    # How many impostors may be accepted; the epsilon absorbs binary rounding (0.29 * 100).
    allowed = int(np.floor(far * len(s) + 1e-9))
    if allowed >= len(s):
        return float(s[-1])
    below = int(np.searchsorted(s, s[allowed], side="left"))  # impostors strictly nearer than s[allowed]
    if below == 0:
        return float(np.nextafter(s[0], -np.inf))
    return float(s[below - 1])


def false_accept_rate(impostor, threshold: float) -> float:
    """Fraction of absent-person probes accepted: nearest distance ``<= threshold``."""
    s = _sorted_distances(impostor, "impostor")
    return float(np.count_nonzero(s <= threshold) / len(s))


def true_accept_rate(genuine, threshold: float) -> float:
    """Fraction of genuine pairs within ``threshold``."""
    s = _sorted_distances(genuine, "genuine")
    return float(np.count_nonzero(s <= threshold) / len(s))


def detection_identification_rate(scores: OpenSetScores, threshold: float) -> float:
    """Fraction of known probes whose rank-1 item is a true match within ``threshold``."""
    if scores.num_known == 0:
        raise EvaluationInputError("no known probe (a query with a true match in another camera)")
    accepted = scores.top1_is_match & (scores.top1_distance <= threshold)
    return float(np.count_nonzero(accepted) / scores.num_known)


def operating_point(scores: OpenSetScores, far: float) -> OperatingPoint:
    """Threshold at ``far`` and the FAR, TAR and DIR it gives on the same probes."""
    tau = threshold_at_far(scores.impostor, far)
    return OperatingPoint(
        far=float(far),
        threshold=tau,
        achieved_far=false_accept_rate(scores.impostor, tau),
        tar=true_accept_rate(scores.genuine, tau),
        dir=detection_identification_rate(scores, tau),
    )


def evaluate_open_set(
    q_feats,
    g_feats,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    fars: Sequence[float] = REPORTED_FARS,
    chunk_size: Optional[int] = None,
    scores: Optional[OpenSetScores] = None,
) -> OpenSetResult:
    """Thresholds, TAR and DIR at each FAR in ``fars`` for a labelled query/gallery split.

    Raises EvaluationInputError when no query has a true match in another camera or no
    query has an impostor (a gallery item of another identity).
    """
    if scores is None:
        scores = open_set_scores(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids, chunk_size)
    fars = [_check_far(f) for f in fars]
    if not fars:
        raise EvaluationInputError("give at least one false accept rate")
    if scores.num_known == 0:
        raise EvaluationInputError(
            f"open-set evaluation: none of the {scores.num_queries} queries has a true match in another camera"
        )
    if scores.impostor.size == 0:
        raise EvaluationInputError("open-set evaluation: the gallery holds no identity other than the queries' own")
    return OpenSetResult(
        points=tuple(operating_point(scores, f) for f in fars),
        num_queries=scores.num_queries,
        num_known_probes=scores.num_known,
        num_impostor_probes=len(scores.impostor),
        num_genuine_pairs=len(scores.genuine),
    )


def format_open_set_table(result: OpenSetResult, title: str = "") -> str:
    """A fixed-width table: one row per FAR, rates in percent, thresholds as L2 distances."""
    lines = [title] if title else []
    header = ["FAR", "threshold", "achieved FAR", "TAR", "DIR"]
    lines.append("".join(h.rjust(14) for h in header))
    for p in result.points:
        cells = [
            f"{100 * p.far:g}%",
            f"{p.threshold:.4f}",
            f"{100 * p.achieved_far:.2f}",
            f"{100 * p.tar:.2f}",
            f"{100 * p.dir:.2f}",
        ]
        lines.append("".join(c.rjust(14) for c in cells))
    lines.append(
        f"({result.num_known_probes} known-person probes, {result.num_impostor_probes} absent-person probes, "
        f"{result.num_genuine_pairs} genuine pairs; accept when distance <= threshold)"
    )
    return "\n".join(lines)
