"""Every field a gallery store reads or is given, type- and range-checked in one place.

A gallery folder, a Milvus collection or an ``.npz`` may come from a stranger: each value read
from it (a manifest key, a segment column, a Milvus row, the metadata JSON) passes through
here before it is used, and a bad one is a :class:`StoreError` naming the field and the file
(one line).  Sizes are checked against the limits below before anything is allocated.

Limits (documented in docs/search.md):

=================  ==========================================================================
``MAX_DIM``        32768 dimensions (Milvus' own limit)
``MAX_TEXT``       4096 characters in a source or crop path
``MAX_CAMERA``     256 characters in a camera name
``MAX_META_BYTES`` 64 MiB of metadata JSON (fingerprint, settings, calibration)
``MAX_JSON_DEPTH`` 64 levels of nesting in that JSON
``MAX_SEGMENT``    2**24 items in one segment file (an add larger than that is split)
heights/widths     a gallery's recorded settings: reid_srdl.core.limits.MAX_INPUT_SIDE
timestamps         years 1..9999 UTC (what ISO 8601 can print)
=================  ==========================================================================

Strings hold no control characters (a camera name such as ``c1\\n`` or one with a NUL is
refused); any other character is allowed, ``c²`` included.
"""

import datetime
import json
import math
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

from reid_srdl.core import limits
from reid_srdl.search.stores.base import (
    MAX_K,
    DeleteRequest,
    GalleryItem,
    SearchFilter,
    StoreError,
)

MAX_DIM = 32768
MAX_TEXT = 4096
MAX_CAMERA = 256
MAX_META_BYTES = 64 << 20
MAX_JSON_DEPTH = 64
MAX_SEGMENT = 1 << 24
MIN_TIME = -62135596800.0  # 0001-01-01T00:00:00Z
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z
MAX_INT = (1 << 62) - 1  # frames, pids, tracks: far below int64 overflow
MAX_ID = (1 << 63) - 1
META_KEYS = ("model", "settings", "calibration", "calibration_impostor")
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc, exactly


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v) -> bool:
    return _is_int(v) or (isinstance(v, (float, np.floating)) and not isinstance(v, bool))


def check_text(value, what: str, max_len: int = MAX_TEXT, allow_empty: bool = True) -> str:
    """A string of at most ``max_len`` characters without control characters."""
    if not isinstance(value, str):
        raise StoreError(f"{what}: expected a string, got {type(value).__name__}")
    if not value and not allow_empty:
        raise StoreError(f"{what}: is empty")
    if len(value) > max_len:
        raise StoreError(f"{what}: {len(value)} characters, more than the limit of {max_len}")
    bad = CONTROL.search(value)
    if bad is not None:
        raise StoreError(f"{what}: contains the control character {bad.group()!r}")
    return value


def check_int(value, what: str, low: int, high: int = MAX_INT) -> int:
    if not _is_int(value):
        raise StoreError(f"{what}: expected an integer, got {value!r}")
    if not low <= int(value) <= high:
        raise StoreError(f"{what}: {int(value)} is outside {low}..{high}")
    return int(value)


def check_time(value, what: str) -> Optional[float]:
    """UTC seconds since the epoch (finite, years 1..9999), or None."""
    if value is None:
        return None
    if not _is_number(value) or not math.isfinite(float(value)):
        raise StoreError(f"{what}: expected UTC seconds (a finite number) or None, got {value!r}")
    if not MIN_TIME <= float(value) <= MAX_TIME:
        raise StoreError(f"{what}: {value!r} is outside the years 1..9999")
    return float(value)


def check_item(item: GalleryItem, what: str) -> GalleryItem:
    """``item`` with every field checked (and numpy scalars made plain Python values)."""
    if not isinstance(item, GalleryItem):
        raise StoreError(f"{what}: expected a GalleryItem, got {type(item).__name__}")
    box = item.box
    if box is not None:
        if not isinstance(box, (tuple, list, np.ndarray)) or len(box) != 4:
            raise StoreError(f"{what} box: expected (x, y, w, h) integers or None, got {box!r}")
        x, y, w, h = (check_int(v, f"{what} box", -(1 << 31), (1 << 31) - 1) for v in box)
        if w < 0 or h < 0:
            raise StoreError(f"{what} box: width and height must be >= 0, got {tuple(box)!r}")
        box = (x, y, w, h)
    return GalleryItem(
        source=check_text(item.source, f"{what} source", allow_empty=False),
        camera=check_text(item.camera, f"{what} camera", MAX_CAMERA),
        timestamp=check_time(item.timestamp, f"{what} timestamp"),
        frame=check_int(item.frame, f"{what} frame", -1),
        box=box,
        track=check_int(item.track, f"{what} track", -1),
        pid=check_int(item.pid, f"{what} pid", -1),
        crop=None if item.crop is None else check_text(item.crop, f"{what} crop", allow_empty=False),
    )


def check_items(items: Sequence[GalleryItem], n: int, what: str) -> List[GalleryItem]:
    if len(items) != n:
        raise StoreError(f"{what}: {len(items)} items for {n} vectors")
    return [check_item(it, f"{what} item {i}") for i, it in enumerate(items)]


def item_from_dict(row: Dict[str, Any], what: str) -> GalleryItem:
    """A GalleryItem from a stored row (a Milvus entity, a JSON object); missing optional
    fields take their defaults, wrong types are refused."""
    if not isinstance(row, dict):
        raise StoreError(f"{what}: expected a row of fields, got {type(row).__name__}")
    box = row.get("box")
    if isinstance(box, (list, tuple)) and len(box) == 4 and all(_is_int(v) and v == -1 for v in box):
        box = None  # how engines without nullable arrays store "no box"
    crop = row.get("crop")
    ts = row.get("timestamp")
    if isinstance(ts, float) and math.isnan(ts):
        ts = None
    return check_item(
        GalleryItem(
            source=row.get("source"),
            camera=row.get("camera", ""),
            timestamp=ts,
            frame=row.get("frame", -1),
            box=tuple(box) if isinstance(box, (list, tuple)) else box,
            track=row.get("track", -1),
            pid=row.get("pid", -1),
            crop=crop or None,
        ),
        what,
    )


def check_vectors(vectors, dim: Optional[int], what: str) -> np.ndarray:
    """A finite float32 ``(n, dim)`` array (``dim`` None: any dimension up to MAX_DIM)."""
    if hasattr(vectors, "detach"):
        vectors = vectors.detach().cpu().numpy()
    arr = np.asarray(vectors)
    if arr.ndim != 2 or (arr.size and arr.dtype.kind not in "fiu"):
        raise StoreError(f"{what}: expected an (n, d) array of numbers, got shape {arr.shape} dtype {arr.dtype}")
    if dim is not None and arr.shape[1] != dim:
        raise StoreError(f"{what}: {arr.shape[1]}-dimensional, the gallery holds {dim}-dimensional vectors")
    if not 1 <= arr.shape[1] <= MAX_DIM:
        raise StoreError(f"{what}: {arr.shape[1]} dimensions is outside 1..{MAX_DIM}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise StoreError(f"{what}: contains NaN or inf")
    return arr


def check_dim(value, what: str) -> int:
    return check_int(value, what, 1, MAX_DIM)


def check_k(k) -> int:
    return check_int(k, "k", 1, MAX_K)


def check_ids(ids: Iterable, what: str) -> List[int]:
    out = []
    for v in ids:
        out.append(check_int(v, what, 0, MAX_ID))
    return out


def _text_tuple(value, what: str, max_len: int) -> Optional[tuple]:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, (tuple, list, set, frozenset)):
        raise StoreError(f"{what}: expected a list of strings or None, got {value!r}")
    return tuple(check_text(v, what, max_len) for v in value)


def check_filter(f: Optional[SearchFilter], what: str = "filter") -> Optional[SearchFilter]:
    """A SearchFilter with every field checked (strings, finite times, integer ids)."""
    if f is None:
        return None
    if not isinstance(f, SearchFilter):
        raise StoreError(f"{what}: expected a SearchFilter or None, got {type(f).__name__}")
    pair = f.exclude_pid_camera
    if pair is not None:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise StoreError(f"{what} exclude_pid_camera: expected (pid, camera), got {pair!r}")
        pair = (
            check_int(pair[0], f"{what} exclude_pid_camera pid", -1),
            check_text(pair[1], f"{what} camera", MAX_CAMERA),
        )
    t0, t1 = check_time(f.time_from, f"{what} time_from"), check_time(f.time_to, f"{what} time_to")
    return SearchFilter(
        cameras=_text_tuple(f.cameras, f"{what} cameras", MAX_CAMERA),
        time_from=t0,
        time_to=t1,
        exclude_pid_camera=pair,
        exclude_ids=None if f.exclude_ids is None else tuple(check_ids(f.exclude_ids, f"{what} exclude_ids")),
        exclude_cameras=_text_tuple(f.exclude_cameras, f"{what} exclude_cameras", MAX_CAMERA),
    )


def check_filters(filters, n: int) -> List[Optional[SearchFilter]]:
    """One checked filter per query (None, one filter for all, or a sequence of n)."""
    if filters is None or isinstance(filters, SearchFilter):
        return [check_filter(filters)] * n
    filters = list(filters)
    if len(filters) != n:
        raise StoreError(f"filters: {len(filters)} filters for {n} queries; give one per query or one for all")
    return [check_filter(f, f"filter {i}") for i, f in enumerate(filters)]


def check_delete(request: DeleteRequest) -> DeleteRequest:
    if not isinstance(request, DeleteRequest):
        raise StoreError(f"delete: expected a DeleteRequest, got {type(request).__name__}")
    r = DeleteRequest(
        ids=None if request.ids is None else tuple(check_ids(request.ids, "delete ids")),
        pid=None if request.pid is None else check_int(request.pid, "delete pid", 0),
        track=None if request.track is None else check_int(request.track, "delete track", 0),
        camera=None if request.camera is None else check_text(request.camera, "delete camera", MAX_CAMERA),
        before=check_time(request.before, "delete before"),
    )
    if all(v is None for v in (r.ids, r.pid, r.track, r.camera, r.before)):
        raise StoreError("delete: give at least one criterion (ids, pid, track, camera or before)")
    return r


def delete_matches(request: DeleteRequest, item: GalleryItem) -> bool:
    """The delete request as a plain predicate (every criterion given must hold)."""
    return (
        (request.ids is None or item.id in request.ids)
        and (request.pid is None or item.pid == request.pid)
        and (request.track is None or item.track == request.track)
        and (request.camera is None or item.camera == request.camera)
        and (request.before is None or (item.timestamp is not None and item.timestamp < request.before))
    )


# ----------------------------------------------------------------------------- metadata JSON
def _depth(obj, limit: int, level: int = 0) -> None:
    if level > limit:
        raise StoreError(f"nested more than {limit} levels deep")
    if isinstance(obj, dict):
        for v in obj.values():
            _depth(v, limit, level + 1)
    elif isinstance(obj, list):
        for v in obj:
            _depth(v, limit, level + 1)


def parse_json(text, what: str) -> Any:
    """JSON text from a file or a row: size bounded, nesting bounded, one line on failure."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise StoreError(f"{what}: not UTF-8 text") from None
    if not isinstance(text, str):
        raise StoreError(f"{what}: expected JSON text, got {type(text).__name__}")
    if len(text) > MAX_META_BYTES:
        raise StoreError(f"{what}: {len(text)} bytes of JSON, more than the limit of {MAX_META_BYTES}")
    try:
        obj = json.loads(text)
    except RecursionError:
        raise StoreError(f"{what}: JSON nested too deeply") from None
    except ValueError as e:
        raise StoreError(f"{what}: not JSON ({e})") from None
    try:
        _depth(obj, MAX_JSON_DEPTH)
    except StoreError as e:
        raise StoreError(f"{what}: {e}") from None
    return obj


def _finite_in(value, what: str, low: float, high: float) -> float:
    if not _is_number(value) or not math.isfinite(float(value)) or not low <= float(value) <= high:
        raise StoreError(f"{what}: expected a finite number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def check_calibration(cal, impostor, what: str) -> None:
    """The stored calibration's numbers: finite, rates in [0, 1], a non-negative threshold,
    impostor distances finite and >= 0 (a NaN threshold would make every decision the same)."""
    if not isinstance(cal, dict):
        raise StoreError(f"{what} calibration: expected an object, got {type(cal).__name__}")
    for key in ("far", "achieved_far", "tar", "dir"):
        _finite_in(cal.get(key), f"{what} calibration {key}", 0.0, 1.0)
    _finite_in(cal.get("threshold"), f"{what} calibration threshold", 0.0, math.inf)
    for key in ("num_known_probes", "num_impostor_probes"):
        check_int(cal.get(key), f"{what} calibration {key}", 0)
    for key in ("source", "created"):
        check_text(cal.get(key), f"{what} calibration {key}")
    if impostor is not None:
        arr = np.asarray(impostor)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "fiu"):
            raise StoreError(f"{what} calibration_impostor: expected a list of distances")
        if arr.size and (not np.isfinite(arr.astype(np.float64)).all() or (arr < 0).any()):
            raise StoreError(f"{what} calibration_impostor: distances must be finite and >= 0")


def check_meta(meta, what: str) -> Dict[str, Any]:
    """The gallery's metadata: ``model`` and ``settings`` (objects or None), ``calibration``
    (checked by :func:`check_calibration`) and ``calibration_impostor`` (a list of floats)."""
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise StoreError(f"{what}: expected a JSON object, got {type(meta).__name__}")
    out = {}
    for key in ("model", "settings"):
        value = meta.get(key)
        if value is not None and not isinstance(value, dict):
            raise StoreError(f"{what} {key}: expected an object or null, got {type(value).__name__}")
        out[key] = value
    if isinstance(out["settings"], dict):
        for key in ("height", "width"):
            if key in out["settings"]:
                side = check_int(out["settings"][key], f"{what} settings {key}", 1)
                if side > limits.MAX_INPUT_SIDE:  # the embedder resizes every query to it
                    raise limits.LimitExceededError(
                        f"{what}: settings {key} {side} is over the limit of {limits.MAX_INPUT_SIDE} pixels "
                        "(reid_srdl.core.limits.MAX_INPUT_SIDE)"
                    )
    cal, impostor = meta.get("calibration"), meta.get("calibration_impostor")
    if cal is not None:
        check_calibration(cal, impostor, what)
    elif impostor is not None:
        raise StoreError(f"{what} calibration_impostor: given without a calibration")
    out["calibration"] = cal
    out["calibration_impostor"] = None if impostor is None else [float(v) for v in np.asarray(impostor).tolist()]
    return out


# ----------------------------------------------------------------------------- times
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_AGE_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, what: str = "time") -> float:
    """ISO 8601 (``2024-05-01T14:02:11``, ``...Z``, ``...+02:00``, or a date) -> UTC seconds;
    a time without an offset is UTC."""
    if not isinstance(text, str) or not text.strip():
        raise StoreError(f"{what}: expected an ISO 8601 time such as 2024-05-01T14:02:11Z, got {text!r}")
    raw = text.strip()
    iso = raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw
    try:
        t = datetime.datetime.fromisoformat(iso)
    except ValueError:
        raise StoreError(
            f"{what}: {text!r} is not an ISO 8601 time (e.g. 2024-05-01T14:02:11Z or 2024-05-01)"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return check_time(t.timestamp(), what)


def parse_age(text: str, what: str = "age") -> float:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s`` -> seconds."""
    m = _AGE.match(text) if isinstance(text, str) else None
    if not m or float(m.group(1)) <= 0:
        raise StoreError(f"{what}: expected a positive age such as 30d, 12h, 90m, 2w or 45s; got {text!r}")
    return float(m.group(1)) * _AGE_SECONDS[m.group(2)]


def format_time(seconds: Optional[float]) -> Optional[str]:
    """UTC seconds -> ``2024-05-01T14:02:11.250000+00:00`` (None stays None)."""
    if seconds is None:
        return None
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (epoch + datetime.timedelta(seconds=seconds)).isoformat()
