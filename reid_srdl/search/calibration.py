"""A calibrated "is this person in the gallery?" threshold, and where it came from.

:func:`calibrate` runs the open-set measures of :mod:`reid_srdl.evaluation.open_set` (Liao et
al. 2014) on a labelled query/gallery split and keeps the threshold at a target false
accept rate, the rates it gives on that split, the impostor distances (so that the
threshold for any other FAR can be read off later) and a one-line provenance.  A gallery
file stores all of it (see :mod:`reid_srdl.search.gallery`).

The impostor distance of a probe is its distance to the nearest gallery item of another
identity, so it shrinks as the gallery grows: calibrate on a gallery of the size and kind
you will search (the gallery itself when it is labelled).
"""

import datetime
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from reid_srdl.core import schema as sc
from reid_srdl.evaluation.open_set import REFERENCE, open_set_scores, operating_point, threshold_at_far
from reid_srdl.search.errors import SearchError

DEFAULT_FAR = 0.01


@dataclass(frozen=True)
class Calibration:
    """The threshold at ``far`` and how it was obtained; ``impostor``: sorted distances."""

    far: float
    threshold: float
    achieved_far: float
    tar: float
    dir: float
    num_known_probes: int
    num_impostor_probes: int
    source: str
    created: str
    impostor: np.ndarray
    model: Optional[Dict[str, Any]] = None

    def threshold_at(self, far: float) -> float:
        """The threshold for another FAR, from the same impostor distances."""
        return threshold_at_far(self.impostor, far)

    def describe(self) -> str:
        return (
            f"FAR {100 * self.far:g}% on {self.num_impostor_probes} absent-person probes "
            f"(TAR {100 * self.tar:.1f}%, DIR {100 * self.dir:.1f}%): {self.source}"
        )

    def to_meta(self) -> Dict[str, Any]:
        """JSON-ready fields (the impostor distances are stored as an array beside them)."""
        return {
            "far": self.far,
            "threshold": self.threshold,
            "achieved_far": self.achieved_far,
            "tar": self.tar,
            "dir": self.dir,
            "num_known_probes": self.num_known_probes,
            "num_impostor_probes": self.num_impostor_probes,
            "source": self.source,
            "created": self.created,
            "reference": REFERENCE,
            "model": self.model,
            "rule": "match when distance <= threshold",
        }

    @classmethod
    def from_meta(cls, meta: Dict[str, Any], impostor: Optional[np.ndarray], where: str) -> "Calibration":
        """The calibration a gallery stored (:meth:`to_meta` and its impostor distances), every
        field checked first: a NaN or infinite threshold would make every decision the same."""
        what = f"{where}: the stored calibration"
        try:
            sc.check(meta, CALIBRATION, f"{what}:")
        except sc.SchemaError as e:
            raise SearchError(str(e)) from None
        try:
            distances = np.asarray(impostor if impostor is not None else [], dtype=np.float64)
        except (TypeError, ValueError):
            raise SearchError(f"{what}: the impostor distances are not numbers") from None
        if distances.ndim != 1 or not np.isfinite(distances).all():
            raise SearchError(f"{what}: the impostor distances must be a list of finite numbers")
        if distances.size and distances.size != meta["num_impostor_probes"]:
            raise SearchError(
                f"{what}: {distances.size} impostor distances, but num_impostor_probes is {meta['num_impostor_probes']}"
            )
        return cls(
            far=float(meta["far"]),
            threshold=float(meta["threshold"]),
            achieved_far=float(meta["achieved_far"]),
            tar=float(meta["tar"]),
            dir=float(meta["dir"]),
            num_known_probes=int(meta["num_known_probes"]),
            num_impostor_probes=int(meta["num_impostor_probes"]),
            source=meta["source"],
            created=meta["created"],
            model=meta.get("model"),
            impostor=np.sort(distances),
        )


# What a stored calibration holds (Calibration.to_meta); other fields are ignored (plain data).
_RATE = sc.Float(0.0, 1.0)
CALIBRATION = sc.Dict(
    {
        "far": _RATE,
        "threshold": sc.Float(),  # a distance (just below 0 when even the nearest impostor is too near)
        "achieved_far": _RATE,
        "tar": _RATE,
        "dir": _RATE,
        "num_known_probes": sc.Int(0),
        "num_impostor_probes": sc.Int(0),
        "source": sc.Str(),
        "created": sc.Str(max_chars=100),
        "model": sc.Optional(sc.Dict(extra=sc.JSON())),
    },
    required=(
        "far",
        "threshold",
        "achieved_far",
        "tar",
        "dir",
        "num_known_probes",
        "num_impostor_probes",
        "source",
        "created",
    ),
    extra=sc.JSON(),
)


def calibrate(
    q_feats,
    q_pids,
    q_camids,
    g_feats,
    g_pids,
    g_camids,
    far: float = DEFAULT_FAR,
    source: str = "",
    model: Optional[Dict[str, Any]] = None,
) -> Calibration:
    """The open-set threshold at ``far`` for a labelled query/gallery split.

    ``source`` says where the split came from (kept with the threshold); ``model`` is the
    fingerprint of the network that made the features.
    """
    scores = open_set_scores(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids)
    if scores.num_known == 0:
        raise SearchError(
            f"calibration: none of the {scores.num_queries} labelled queries has a true match in another camera "
            f"of the gallery; label the queries with the gallery's pids and camids"
        )
    if scores.impostor.size == 0:
        raise SearchError("calibration: the gallery holds no identity other than the queries' own")
    point = operating_point(scores, far)
    when = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    where = source or "a labelled query/gallery split"
    return Calibration(
        far=point.far,
        threshold=point.threshold,
        achieved_far=point.achieved_far,
        tar=point.tar,
        dir=point.dir,
        num_known_probes=scores.num_known,
        num_impostor_probes=len(scores.impostor),
        source=f"{where}; {scores.num_known} known-person probes, {len(np.asarray(g_feats))} gallery items",
        created=when,
        impostor=np.sort(scores.impostor),
        model=model,
    )


def calibrate_store(store, q_feats, q_pids, q_camids, far: float = DEFAULT_FAR, source: str = "") -> Calibration:
    """:func:`calibrate` labelled query features against every item of a gallery store (its
    pids and 0-based camids), with the store's recorded model; the store is not changed."""
    from reid_srdl.search.stores.npz_store import arrays_of

    feats, g_pids, g_camids, _ = arrays_of(store)
    where = source or f"{len(q_feats)} labelled queries against this gallery"
    model = store.get_meta().get("model")
    return calibrate(q_feats, q_pids, q_camids, feats, g_pids, g_camids, far=far, source=where, model=model)


def stored_calibration(meta: Dict[str, Any], where: str) -> Optional[Calibration]:
    """The calibration a gallery's metadata records (None when it records none)."""
    if meta.get("calibration") is None:
        return None
    return Calibration.from_meta(meta["calibration"], meta.get("calibration_impostor"), where)


def with_calibration(meta: Dict[str, Any], calibration: Optional[Calibration]) -> Dict[str, Any]:
    """``meta`` recording ``calibration`` (None: recording none), impostor distances included."""
    return dict(
        meta,
        calibration=None if calibration is None else calibration.to_meta(),
        calibration_impostor=None if calibration is None else calibration.impostor.tolist(),
    )


def resolve_threshold(
    calibration: Optional[Calibration], threshold=None, far: Optional[float] = None
) -> Tuple[Optional[float], Optional[str]]:
    """``(threshold, where it came from)``: ``threshold="calibrated"`` (the calibration's own),
    ``far=f`` (read off the calibration's impostor distances), a distance, or neither
    (``(None, None)``: no decision)."""
    if threshold is not None and far is not None:
        raise SearchError("give threshold or far, not both")
    if threshold is None and far is None:
        return None, None
    if isinstance(threshold, str) and threshold != "calibrated":
        raise SearchError(f"threshold must be a distance, 'calibrated' or None; got {threshold!r}")
    if threshold == "calibrated" or far is not None:
        if calibration is None:
            raise SearchError(
                "this gallery has no calibrated threshold: run searcher.calibrate(queries, pids, camids) on labelled "
                "queries (or tools/search.py calibrate), or pass threshold=<distance>"
            )
        if far is None:
            return calibration.threshold, f"calibrated at FAR {100 * calibration.far:g}%: {calibration.source}"
        return calibration.threshold_at(far), f"FAR {100 * float(far):g}% from the calibration: {calibration.source}"
    if isinstance(threshold, bool) or not np.isscalar(threshold) or not float(threshold) >= 0:
        raise SearchError(f"threshold must be a non-negative distance, 'calibrated' or None; got {threshold!r}")
    return float(threshold), "given by the caller"
