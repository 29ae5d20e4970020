"""The form fields of a request, checked: every bad value is a :class:`RequestError` with
HTTP status 400 and one line naming the field, before any image is embedded."""

import math
from typing import List, Optional

from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.search.stores import records
from reid_srdl.search.stores.base import SearchFilter

MAX_K = 100
MAX_NAME_CHARS = 80
MAX_FIELD_CHARS = 40  # how much of a bad value a message repeats


class RequestError(ReidSrdlError):
    """A request the server refuses, with its HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def shown(value) -> str:
    """A client's value as a message may repeat it: bounded, quoted."""
    text = str(value)
    return repr(text if len(text) <= MAX_FIELD_CHARS else text[:MAX_FIELD_CHARS] + "...")


def shown_name(name: str) -> str:
    """A client's file name as it may start a message (bounded, one line)."""
    name = " ".join(str(name).split()) or "upload"
    return name if len(name) <= MAX_NAME_CHARS else name[: MAX_NAME_CHARS - 3] + "..."


def parse_k(text) -> int:
    try:
        k = int(str(text).strip())
    except ValueError:
        raise RequestError(400, f"k must be an integer in 1..{MAX_K}; got {shown(text)}") from None
    if not 1 <= k <= MAX_K:
        raise RequestError(400, f"k must be in 1..{MAX_K}; got {k}")
    return k


def parse_item_id(text: Optional[str]) -> Optional[int]:
    """A gallery item's id from a form field (None when the field is absent or empty)."""
    if text is None or not str(text).strip():
        return None
    try:
        value = int(str(text).strip())
    except ValueError:
        value = -1
    if not 0 <= value <= records.MAX_ID:
        raise RequestError(400, f"gallery_id must be an item id (a whole number >= 0); got {shown(text)}")
    return value


def parse_threshold(threshold: str, far: str) -> dict:
    """``search`` options from the form fields: at most one of threshold ("calibrated" or a
    finite distance >= 0) and far (a finite fraction); empty fields mean "not given"."""
    thr, far = (threshold or "").strip(), (far or "").strip()
    if thr and far:
        raise RequestError(400, f"give threshold or far, not both (got threshold={shown(thr)}, far={shown(far)})")
    if far:
        try:
            value = float(far)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not 0 < value < 1:
            raise RequestError(400, f"far must be a false accept rate between 0 and 1 (e.g. 0.05); got {shown(far)}")
        return {"far": value}
    if not thr:
        return {}
    if thr == "calibrated":
        return {"threshold": "calibrated"}
    try:
        value = float(thr)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise RequestError(
            400, f"threshold must be 'calibrated', a finite distance >= 0, or empty for none; got {shown(thr)}"
        )
    return {"threshold": value}


def camera_names(text: Optional[str], what: str) -> Optional[List[str]]:
    """Comma-separated camera names (None when the field is empty)."""
    if not text or not text.strip():
        return None
    names = [t.strip() for t in text.split(",")]
    try:
        return [records.check_text(n, what, records.MAX_CAMERA, allow_empty=False) for n in names]
    except ReidSrdlError as e:
        raise RequestError(400, str(e)) from None


def parse_time(text: Optional[str], what: str) -> Optional[float]:
    if not text or not text.strip():
        return None
    try:
        return records.parse_time(text.strip(), what)
    except ReidSrdlError as e:
        raise RequestError(400, str(e)) from None


def search_filter(
    exclude_camera: str = "",
    cameras: str = "",
    time_from: str = "",
    time_to: str = "",
    exclude_id: Optional[int] = None,
) -> Optional[SearchFilter]:
    """The filter of one query from the form fields (None: nothing filtered)."""
    only = camera_names(cameras, "cameras")
    left_out = camera_names(exclude_camera, "exclude_camera")
    t0, t1 = parse_time(time_from, "time_from"), parse_time(time_to, "time_to")
    if t0 is not None and t1 is not None and t0 > t1:
        raise RequestError(400, f"time_from {shown(time_from)} is after time_to {shown(time_to)}")
    flt = SearchFilter(
        cameras=None if only is None else tuple(only),
        time_from=t0,
        time_to=t1,
        exclude_ids=None if exclude_id is None else (exclude_id,),
        exclude_cameras=None if left_out is None else tuple(left_out),
    )
    return None if flt == SearchFilter() else flt


def parse_labels(text: Optional[str], n: int, what: str, parse) -> Optional[list]:
    """Comma-separated values, one per image (None when the field is empty)."""
    if not text or not text.strip():
        return None
    items = [t.strip() for t in text.split(",")]
    if len(items) != n:
        raise RequestError(400, f"{what}: {len(items)} values for {n} images")
    try:
        return [parse(t) for t in items]
    except (ValueError, ReidSrdlError) as e:
        raise RequestError(400, f"{what}: {e}") from None


def parse_pid(text: str) -> int:
    try:
        pid = int(text)
    except ValueError:
        raise ValueError(f"a pid is a whole number >= 0 (-1: unknown); got {shown(text)}") from None
    if not -1 <= pid <= records.MAX_INT:
        raise ValueError(f"a pid is a whole number >= 0 (-1: unknown); got {pid}")
    return pid


def parse_camera(text: str) -> str:
    return records.check_text(text, "camera", records.MAX_CAMERA, allow_empty=False)
