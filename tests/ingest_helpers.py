"""A small video the ingest tests draw themselves, with the boxes they drew and a det.txt.

Three textured rectangles ("people", taller than wide) move over a fixed textured background:
track 1 walks right and grows (as if nearing the camera), track 2 walks left at a constant
size and leaves the frame at the end (its boxes in det.txt reach outside the frame, as a
detector's do), track 3 walks down, seen only in frames 20-29.  Shapes appear from frame 12 on (the first
frames show the background alone, as the motion detector's warm-up wants), and never come
closer to each other than the detector's closing kernel, so it can tell them apart.  The video
is FFV1 (lossless), so a crop cut from a decoded frame equals the pixels the test drew.
"""

import datetime as dt
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

WIDTH, HEIGHT, FPS, FRAMES = 160, 96, 10.0, 40
APPEAR = 12  # first frame with a shape: after the motion detector's default 10-frame warm-up
START_ISO = "2024-05-01T14:02:11Z"
START = dt.datetime(2024, 5, 1, 14, 2, 11, tzinfo=dt.timezone.utc).timestamp()
COLOURS = {1: (0, 0, 230), 2: (230, 40, 0), 3: (0, 200, 60)}  # BGR


@dataclass(frozen=True)
class Drawn:
    """What a test drew: per frame, per track, the unclipped box (x, y, w, h) 0-based, and
    the visible (clipped) one; and each track's confidence in det.txt."""

    frames: List[np.ndarray]
    boxes: Dict[int, Dict[int, Tuple[int, int, int, int]]]
    visible: Dict[int, Dict[int, Tuple[int, int, int, int]]]
    conf: Dict[int, Dict[int, float]]


def track_box(track: int, f: int):
    """The unclipped box of ``track`` in frame ``f`` (0-based), or None when absent."""
    if track == 1 and f >= APPEAR:
        k = f - APPEAR
        return (4 + 3 * k, 56 - k // 2, 10 + k // 6, 24 + k // 2)
    if track == 2 and f >= APPEAR:
        return (120 - 5 * (f - APPEAR), 4, 12, 26)
    if track == 3 and 20 <= f <= 29:
        return (125, 36 + 2 * (f - 20), 9, 22)
    return None


def conf_of(track: int, f: int) -> float:
    # Distinct, not monotone in f: --best-by conf must really rank.
    return round(0.30 + ((7 * f + 3 * track) % 13) / 20, 2)


def clip(box):
    x, y, w, h = box
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, WIDTH), min(y + h, HEIGHT)
    return None if x1 <= x0 or y1 <= y0 else (x0, y0, x1 - x0, y1 - y0)


def background() -> np.ndarray:
    rng = np.random.default_rng(7)
    tile = rng.integers(90, 140, size=(HEIGHT // 4, WIDTH // 4, 3), dtype=np.uint8)
    return np.repeat(np.repeat(tile, 4, axis=0), 4, axis=1)  # a fixed, blocky texture


def write_video(path: str, frames: int = FRAMES, fourcc: str = "FFV1") -> Drawn:
    import cv2

    bg = background()
    out = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), FPS, (WIDTH, HEIGHT))
    assert out.isOpened(), f"OpenCV cannot write {fourcc} into {path}"
    drawn = Drawn([], {}, {}, {})
    rng = np.random.default_rng(11)
    textures = {t: rng.integers(-60, 61, size=(HEIGHT, WIDTH, 1), dtype=np.int16) for t in COLOURS}
    for f in range(frames):
        img = bg.copy()
        drawn.boxes[f], drawn.visible[f], drawn.conf[f] = {}, {}, {}
        for track, colour in COLOURS.items():
            box = track_box(track, f)
            if box is None or clip(box) is None:
                continue
            x, y, w, h = clip(box)
            # The pattern moves with the shape (as clothes do), so its pixels change as it
            # moves and the background model does not absorb a uniform block.
            pattern = textures[track][y - box[1] : y - box[1] + h, x - box[0] : x - box[0] + w]
            img[y : y + h, x : x + w] = np.clip(np.array(colour, np.int16) + pattern, 0, 255).astype(np.uint8)
            drawn.boxes[f][track], drawn.visible[f][track] = box, (x, y, w, h)
            drawn.conf[f][track] = conf_of(track, f)
        out.write(img)
        drawn.frames.append(img)
    out.release()
    return drawn


def det_rows(drawn: Drawn, tracks: bool = True) -> List[str]:
    """MOTChallenge rows (1-based frames and boxes) of every drawn box, in frame order."""
    rows = []
    for f, boxes in drawn.boxes.items():
        for track, (x, y, w, h) in boxes.items():
            tid = track if tracks else -1
            rows.append(f"{f + 1},{tid},{x + 1},{y + 1},{w},{h},{drawn.conf[f][track]},-1,-1,-1")
    return rows


def write_det(path: str, drawn: Drawn, tracks: bool = True) -> None:
    write_lines(path, det_rows(drawn, tracks))


def write_lines(path: str, rows: List[str]) -> None:
    with open(path, "w") as fh:
        fh.write("\n".join(rows) + "\n")


def iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)
