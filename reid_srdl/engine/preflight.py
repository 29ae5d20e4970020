"""Checks on the evaluation data made before training, so a run does not fail at its end.

The end-of-run evaluation reads every query, gallery and gt_bbox image and needs at least
one valid query.  Both are checked before the first epoch: each image's header is decoded
(no pixels: a small fraction of an epoch) and the Market-1501 protocol is counted, so an
unreadable gallery image or a query set without a true match costs seconds, not a
training run.  (A classification test set is checked by its own loader, which reads the
whole set into memory when it is built.)
"""

import time
from typing import Dict, Iterable, Sequence

import numpy as np

from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.data.indexed import ImageReadError, check_image_header

JUNK_PID = -1


class PreflightError(ReidSrdlError, ValueError):
    """The evaluation data cannot give a result: found before training."""


def count_valid_queries(
    q_pids: Sequence[int], q_camids: Sequence[int], g_pids: Sequence[int], g_camids: Sequence[int]
) -> int:
    """Queries with a true match under the Market-1501 protocol: a gallery item of the same
    pid (not junk, -1) seen by another camera (same-camera items are not counted)."""
    cameras: Dict[int, set] = {}
    for pid, cam in zip(np.asarray(g_pids).tolist(), np.asarray(g_camids).tolist()):
        cameras.setdefault(pid, set()).add(cam)
    return sum(
        1
        for pid, cam in zip(np.asarray(q_pids).tolist(), np.asarray(q_camids).tolist())
        if pid != JUNK_PID and cameras.get(pid, set()) - {cam}
    )


def check_images(paths: Iterable[str], split: str, before: str = "training") -> int:
    """Decode every image header of a split; the first unreadable file (and how many more
    there are) is one :class:`ImageReadError`.  Returns the number of files checked."""
    bad, first, n = 0, None, 0
    for path in paths:
        n += 1
        try:
            check_image_header(path)
        except ImageReadError as e:
            bad += 1
            first = first or str(e)
    if bad:
        more = f" (and {bad - 1} more unreadable {split} images)" if bad > 1 else ""
        raise ImageReadError(f"{split} image check before {before}: {first}{more}")
    return n


def preflight_splits(query, gallery, multi_query=None, before: str = "training", name: str = "") -> int:
    """Check one evaluation set (its query, gallery and optional gt_bbox splits): every image
    header decodes and at least one query has a true match; returns the images checked."""
    where = f" of {name}" if name else ""
    checked = 0
    for split_name, split in (("query", query), ("gallery", gallery), ("gt_bbox", multi_query)):
        if split is not None:
            checked += check_images(split.paths, split_name + where, before)
    if count_valid_queries(query.pids, query.camids, gallery.pids, gallery.camids) == 0:
        raise PreflightError(
            f"no valid query{where}: none of the {len(query.pids)} query images has a true match in the gallery "
            f"(same pid, another camera; {len(gallery.pids)} gallery images), so no evaluation can give a result; "
            f"found before {before}: check the query/ and bounding_box_test/ folders"
        )
    return checked


def preflight_evaluation_data(data, before: str = "training") -> Dict[str, float]:
    """Check every evaluation set of a :class:`reid_srdl.data.build.DataBundle` (re-id only:
    each of ``data.targets``, or its query/gallery); ``before`` names the expensive step it
    protects, in messages.

    Returns ``{"images": checked, "seconds": time taken}``; raises a one-line
    :class:`ImageReadError` or :class:`PreflightError` on the first problem.
    """
    start = time.perf_counter()
    if data.task != "reid":
        return {"images": 0, "seconds": 0.0}
    targets = getattr(data, "targets", None) or [data]
    several = len(targets) > 1
    checked = sum(
        preflight_splits(t.query, t.gallery, t.multi_query, before, getattr(t, "name", "") if several else "")
        for t in targets
    )
    return {"images": checked, "seconds": time.perf_counter() - start}
