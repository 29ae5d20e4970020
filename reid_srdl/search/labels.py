"""Where the images of a gallery and their pids/camids come from.

* :func:`list_images` -- the image files under a folder (or one file), sorted, recursively;
* :func:`market_labels` -- pids and 0-based camids parsed from Market-1501 names
  (``0002_c1s1_000451_03.jpg`` -> pid 2, camid 0) by
  :func:`reid_srdl.data.market1501.parse_market_name`;
* :func:`csv_labels` -- a CSV with a header ``path,pid,camera`` (camera as in file names:
  ``c1``, ``c2``...) or ``path,pid,camid`` (0-based integers); paths relative to the CSV's
  folder or absolute;
* :func:`resolve_labels` -- ``"auto"`` (Market names if every name parses, none if no name
  does, an error naming the first odd one otherwise), ``"market"``, ``"none"`` or a CSV path.

Unlabelled images get pid/camid -1.
"""

import csv
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from reid_srdl.core.errors import ReidSrdlError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
UNKNOWN = -1
INT64_MAX = 2**63 - 1  # pids are stored as int64


class LabelError(ReidSrdlError, ValueError):
    """Images or labels are missing, unreadable or inconsistent."""


#: Largest camera number (``c99999``): camids are small, and a longer digit string is a typo.
MAX_CAMERA = 99999


def ascii_int(text: str, lowest: int, highest: int) -> int:
    """``text`` as an integer in ``lowest..highest`` when it is written with ASCII digits only
    (an optional leading minus); ValueError otherwise.  ``int()`` alone also takes other
    scripts' digits (``"٣"`` is 3), underscores (``"1_000"``) and surrounding spaces, and
    ``str.isdigit()`` is True for ``"²"``, which ``int()`` then refuses with a traceback."""
    t = str(text)
    shown = repr(t) if len(t) <= 40 else repr(t[:37] + "...")
    digits = t[1:] if t.startswith("-") else t
    if not (digits and digits.isascii() and digits.isdigit()):
        raise ValueError(f"expected an integer written with the digits 0-9, got {shown}")
    # (Python refuses to read more than 4300 digits; no id in range has more than 19.)
    if len(digits) > 40 or not lowest <= int(t) <= highest:
        raise ValueError(f"{t if len(t) <= 40 else t[:37] + '...'} is outside {lowest}..{highest}")
    return int(t)


def parse_camera(text: str) -> int:
    """``"c1"`` -> 0: a camera as written in file names to the 0-based camid."""
    t = str(text).strip().lower()
    try:
        if t[:1] != "c":
            raise ValueError(t)
        return ascii_int(t[1:], 1, MAX_CAMERA) - 1
    except ValueError:
        shown = repr(text) if len(str(text)) <= 40 else repr(str(text)[:37] + "...")
        raise LabelError(
            f"a camera is written c1, c2, ... (digits 0-9, at most c{MAX_CAMERA}) as in Market-1501 file names; "
            f"got {shown}"
        ) from None


def list_images(target: str) -> List[str]:
    """Image files under ``target`` (a folder, searched recursively) or ``target`` itself."""
    if os.path.isfile(target):
        return [target]
    if not os.path.isdir(target):
        raise LabelError(f"{target} is neither an image file nor a folder")
    found = []
    for folder, dirs, files in os.walk(target):
        dirs.sort()
        found.extend(os.path.join(folder, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not found:
        raise LabelError(f"{target} holds no image file ({', '.join(IMAGE_EXTENSIONS)})")
    return found


def market_labels(paths: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """pids and 0-based camids from Market-1501 file names; the first odd name is an error."""
    from reid_srdl.data.market1501 import parse_market_name

    pids, camids = [], []
    for p in paths:
        try:
            pid, camid = parse_market_name(p)
        except ValueError as e:
            raise LabelError(f"{e}; use --labels FILE.csv or --labels none for other names") from None
        pids.append(pid)
        camids.append(camid)
    return np.asarray(pids, dtype=np.int64), np.asarray(camids, dtype=np.int64)


def csv_labels(csv_path: str, paths: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """pids and camids of ``paths`` from a CSV (see the module docstring); every path needs a row."""
    if not os.path.isfile(csv_path):
        raise LabelError(f"label file not found: {csv_path}")
    base = os.path.dirname(os.path.abspath(csv_path))
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            table = _csv_rows(csv_path, csv.DictReader(f), base)
    except UnicodeDecodeError as e:
        raise LabelError(f"{csv_path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    except csv.Error as e:  # a NUL byte, a field longer than csv.field_size_limit()
        raise LabelError(f"{csv_path} is not a readable CSV file: {e}") from None
    except OSError as e:
        raise LabelError(f"cannot read label file {csv_path}: {(e.strerror or str(e)).lower()}") from None
    pids, camids = [], []
    for p in paths:
        key = os.path.normpath(os.path.abspath(p))
        if key not in table:
            raise LabelError(f"{csv_path} has no row for {p}")
        pids.append(table[key][0])
        camids.append(table[key][1])
    return np.asarray(pids, dtype=np.int64), np.asarray(camids, dtype=np.int64)


def _csv_rows(csv_path: str, reader: csv.DictReader, base: str) -> Dict[str, Tuple[int, int, int]]:
    """``{absolute path: (pid, camid, line)}``; the first bad row is an error naming its line."""
    fields = set(reader.fieldnames or [])
    if "path" not in fields or "pid" not in fields or not ({"camera", "camid"} & fields):
        raise LabelError(
            f"{csv_path}: expected a header path,pid,camera (c1, c2...) or path,pid,camid (0-based); "
            f"got {', '.join(reader.fieldnames or []) or 'nothing'}"
        )
    table: Dict[str, Tuple[int, int, int]] = {}
    for row in reader:
        line = reader.line_num
        if None in row or None in row.values():  # more or fewer fields than the header
            raise LabelError(f"{csv_path} line {line}: expected {len(reader.fieldnames)} fields, as in the header")
        try:
            # pids are stored as int64; -1 = unknown, as for unlabelled images
            pid = ascii_int(row["pid"].strip(), UNKNOWN, INT64_MAX)
        except ValueError as e:
            raise LabelError(f"{csv_path} line {line}: pid: {e}") from None
        try:
            if "camera" in fields:
                camid = parse_camera(row["camera"])
            else:
                camid = ascii_int(row["camid"].strip(), UNKNOWN, MAX_CAMERA - 1)
        except (LabelError, ValueError) as e:
            raise LabelError(f"{csv_path} line {line}: {'camera' if 'camera' in fields else 'camid'}: {e}") from None
        key = os.path.normpath(os.path.join(base, row["path"]))
        if key in table and table[key][:2] != (pid, camid):
            raise LabelError(
                f"{csv_path} line {line}: {row['path']} is labelled again, differently (first on line {table[key][2]})"
            )
        table[key] = (pid, camid, line)
    return table


def resolve_labels(spec: str, paths: Sequence[str]) -> Tuple[Optional[np.ndarray], Optional[np.ndarray], str]:
    """``(pids, camids, description)``; pids/camids None for unlabelled images."""
    if spec == "none":
        return None, None, "none (pid/camid -1)"
    if spec == "market":
        return (*market_labels(paths), "parsed from Market-1501 file names")
    if spec == "auto":
        from reid_srdl.data.market1501 import parse_market_name

        parsed = []
        for p in paths:
            try:
                parse_market_name(p)
                parsed.append(True)
            except ValueError:
                parsed.append(False)
        if all(parsed):
            return (*market_labels(paths), "parsed from Market-1501 file names")
        if not any(parsed):
            return None, None, "none: the file names are not Market-1501 names (pid/camid -1)"
        odd = paths[parsed.index(False)]
        raise LabelError(
            f"some file names are Market-1501 names and some are not (e.g. {odd}); "
            f"pass --labels market, --labels none or --labels FILE.csv"
        )
    return (*csv_labels(spec, paths), f"from {spec}")
