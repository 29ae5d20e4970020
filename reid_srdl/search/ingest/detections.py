"""Detections in the MOTChallenge det/gt text format, checked, converted and grouped by frame.

One detection per line, comma-separated numbers (https://motchallenge.net/instructions/)::

    <frame>, <id>, <bb_left>, <bb_top>, <bb_width>, <bb_height>, <conf>[, <x>, <y>, <z>]

The challenge defines frame numbers and boxes as **1-based**: the first frame of the video is
frame 1 and the top-left pixel of a frame is (1, 1).  We convert on reading:

* frame ``f`` of the file is our 0-based frame index ``f - 1`` (the ``f - 1``-th frame OpenCV
  decodes); a frame below 1 is an error;
* a box becomes the 0-based pixel rectangle ``x = bb_left - 1``, ``y = bb_top - 1`` with width
  ``bb_width`` and height ``bb_height``; fractional coordinates (most detectors write them) are
  rounded to the nearest pixel (halves up) at both edges, so a box covers the pixels its area
  mostly covers.  A tool that wrote 0-based boxes into the file is one pixel off, which is
  invisible to a re-id network.
* ``id`` is the track; -1 means no track (MOTChallenge's det.txt files).  Other negative ids
  are an error.
* ``conf`` is the detector's score (in gt.txt files it is the "consider this entry" flag, 0 or
  1); ``min_conf`` drops the rows below it.

Rows have 7 to 10 fields (gt.txt files of MOT17/MOT20 have 9, det.txt files 10); blank lines
are skipped.  Anything else -- a wrong number of fields, a field that is not a finite number,
a fractional frame or id, a box of zero or negative size -- is an error naming the line and
the column.

A box that reaches outside the frame is **clipped** to the frame and counted (detectors
routinely put boxes of people entering the picture partly outside it, e.g. MOT17's det.txt);
a box with no pixel inside the frame is an error: it means the file belongs to another video
or is in other coordinates.

Memory: :meth:`DetectionFile.check` streams the file once (validation, counts, last frame);
:meth:`DetectionFile.by_frame` streams it again when its rows are in frame order (det.txt
files are), so memory does not grow with the file.  A file not in frame order (MOT's gt.txt
is sorted by track) is read into compact arrays, about 50 bytes per detection, and sorted.
"""

import logging
import math
import os
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import numpy as np

from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.search.stores.base import Box

log = logging.getLogger(__name__)

COLUMNS = ("frame", "id", "bb_left", "bb_top", "bb_width", "bb_height", "conf", "x", "y", "z")
MIN_FIELDS, MAX_FIELDS = 7, len(COLUMNS)
MAX_LINE = 4096  # characters: a row of ten numbers is far shorter; longer is not this format
NO_TRACK = -1
MAX_INDEX = 2**31 - 1  # frames and track ids: far beyond any video, and fits the compact arrays


class DetectionFormatError(ReidSrdlError, ValueError):
    """A detections file is not in the MOTChallenge format, or does not fit its video."""


@dataclass(frozen=True)
class Detection:
    """One box to crop: ``frame`` 0-based, ``box`` ``(x, y, w, h)`` 0-based pixels inside the
    frame (clipped), ``track`` -1 when none, ``conf`` the detector's score, ``line`` the row's
    line in the file (1-based, 0 for a box that came from no file), ``clipped`` whether the
    box reached outside the frame."""

    frame: int
    track: int
    box: Box
    conf: float
    line: int = 0
    clipped: bool = False


def _round_half_up(v: float) -> int:
    return int(math.floor(v + 0.5))


def pixel_box(bb_left: float, bb_top: float, bb_width: float, bb_height: float) -> Tuple[int, int, int, int]:
    """A 1-based MOTChallenge box to 0-based pixel edges ``(x0, y0, x1, y1)`` (x1, y1 exclusive),
    not clipped.

    >>> pixel_box(1, 1, 10, 20)            # the top-left 10 x 20 pixels
    (0, 0, 10, 20)
    >>> pixel_box(794.27, 247.59, 71.245, 174.88)
    (793, 247, 865, 421)
    """
    x0 = _round_half_up(bb_left - 1)
    y0 = _round_half_up(bb_top - 1)
    x1 = _round_half_up(bb_left - 1 + bb_width)
    y1 = _round_half_up(bb_top - 1 + bb_height)
    return x0, y0, x1, y1


def clip_box(edges: Tuple[int, int, int, int], width: int, height: int) -> Optional[Tuple[Box, bool]]:
    """``((x, y, w, h), clipped)`` of pixel edges clipped to a ``width`` x ``height`` frame, or
    None when no pixel is left (the box lies outside the frame or rounds to nothing)."""
    x0, y0, x1, y1 = edges
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if cx1 <= cx0 or cy1 <= cy0:
        return None
    return (cx0, cy0, cx1 - cx0, cy1 - cy0), (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1)


@dataclass
class DetectionSummary:
    """What :meth:`DetectionFile.check` found: ``rows`` read, ``kept`` (at or above
    ``min_conf``), ``below_conf`` dropped, ``clipped`` boxes (of the kept), ``untracked`` kept
    rows with id -1, ``last_frame`` the largest 0-based frame among the kept rows (-1 if none)
    and ``last_frame_line`` its line, ``in_order`` whether frames never decrease."""

    rows: int = 0
    kept: int = 0
    below_conf: int = 0
    clipped: int = 0
    untracked: int = 0
    first_untracked_line: int = 0
    last_frame: int = -1
    last_frame_line: int = 0
    in_order: bool = True


class DetectionFile:
    """A MOTChallenge det/gt file for a video of ``width`` x ``height`` pixels (see the module
    docstring for the format and what is checked)."""

    def __init__(self, path, width: int, height: int, min_conf: Optional[float] = None):
        self.path = os.fspath(path)
        self.width, self.height = int(width), int(height)
        if min_conf is not None and not math.isfinite(min_conf):
            raise DetectionFormatError(f"the minimum confidence must be a finite number; got {min_conf!r}")
        self.min_conf = min_conf
        self.summary: Optional[DetectionSummary] = None

    def _fail(self, line: int, message: str) -> DetectionFormatError:
        return DetectionFormatError(f"{self.path} line {line}: {message}")

    def _lines(self) -> Iterator[Tuple[int, str]]:
        """``(line number, text)`` of the non-blank lines, each read with a bounded length."""
        if not os.path.isfile(self.path):
            what = "does not exist" if not os.path.exists(self.path) else "is not a file"
            raise DetectionFormatError(f"detections file {self.path} {what}")
        with open(self.path, "rb") as f:
            number = 0
            while True:
                raw = f.readline(MAX_LINE + 1)
                if not raw:
                    return
                number += 1
                if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
                    raise self._fail(number, f"longer than {MAX_LINE} characters; not a MOTChallenge row")
                try:
                    text = raw.decode("utf-8").strip()
                except UnicodeDecodeError:
                    raise self._fail(number, "not text (expected comma-separated numbers)") from None
                if text:
                    yield number, text

    def _parse(self, number: int, text: str) -> Optional[Detection]:
        """The row as a :class:`Detection`, None if below ``min_conf``; errors name the column."""
        fields = text.split(",")
        if not MIN_FIELDS <= len(fields) <= MAX_FIELDS:
            raise self._fail(
                number,
                f"expected {MIN_FIELDS} to {MAX_FIELDS} comma-separated numbers "
                f"(frame,id,bb_left,bb_top,bb_width,bb_height,conf[,x,y,z]); got {len(fields)}",
            )
        values = []
        for column, field in enumerate(fields[:MIN_FIELDS]):
            name = f"column {column + 1} ({COLUMNS[column]})"
            try:
                v = float(field)
            except ValueError:
                raise self._fail(number, f"{name}: expected a number; got {field.strip()!r}") from None
            if not math.isfinite(v):
                raise self._fail(number, f"{name}: expected a finite number; got {field.strip()!r}")
            values.append(v)
        for column in range(MIN_FIELDS, len(fields)):  # x, y, z: numbers, unused
            try:
                float(fields[column])
            except ValueError:
                raise self._fail(
                    number,
                    f"column {column + 1} ({COLUMNS[column]}): expected a number; got {fields[column].strip()!r}",
                ) from None
        frame, track, left, top, w, h, conf = values
        if frame != int(frame) or not 1 <= frame <= MAX_INDEX:
            raise self._fail(
                number,
                f"column 1 (frame): expected a whole number from 1 (MOTChallenge frames start at 1) to {MAX_INDEX}; "
                f"got {frame:g}",
            )
        if track != int(track) or not NO_TRACK <= track <= MAX_INDEX:
            raise self._fail(
                number, f"column 2 (id): expected a whole number from -1 (no track) to {MAX_INDEX}; got {track:g}"
            )
        for column, v in ((5, w), (6, h)):
            if v <= 0:
                raise self._fail(number, f"column {column} ({COLUMNS[column - 1]}): expected a size > 0; got {v:g}")
        if self.min_conf is not None and conf < self.min_conf:
            return None
        clipped = clip_box(pixel_box(left, top, w, h), self.width, self.height)
        if clipped is None:
            raise self._fail(
                number,
                f"the box bb_left={left:g}, bb_top={top:g}, bb_width={w:g}, bb_height={h:g} (1-based) has no pixel "
                f"inside the {self.width}x{self.height} frame",
            )
        box, was_clipped = clipped
        return Detection(int(frame) - 1, int(track), box, float(conf), number, was_clipped)

    def check(self) -> DetectionSummary:
        """Read the whole file once, checking every row; raises :class:`DetectionFormatError` on
        the first bad one.  The summary is also kept as :attr:`summary`."""
        s = DetectionSummary()
        previous = -1
        for number, text in self._lines():
            s.rows += 1
            det = self._parse(number, text)
            if det is None:
                s.below_conf += 1
                continue
            s.kept += 1
            s.clipped += det.clipped
            if det.track == NO_TRACK:
                s.untracked += 1
                s.first_untracked_line = s.first_untracked_line or number
            if det.frame > s.last_frame:
                s.last_frame, s.last_frame_line = det.frame, number
            if det.frame < previous:
                s.in_order = False
            previous = det.frame
        self.summary = s
        return s

    def by_frame(self) -> Iterator[Tuple[int, List[Detection]]]:
        """``(frame, detections)`` for each frame that has any, frames increasing, rows of a
        frame in file order.  Streams the file when it is in frame order (see the module
        docstring); :meth:`check` must have run first."""
        if self.summary is None:
            raise RuntimeError("DetectionFile.check() must run before by_frame()")
        if self.summary.in_order:
            yield from self._stream_in_order()
        else:
            log.info("%s is not in frame order: its %d detections are sorted in memory", self.path, self.summary.kept)
            yield from self._sorted_in_memory()

    def _kept(self) -> Iterator[Detection]:
        for number, text in self._lines():
            det = self._parse(number, text)
            if det is not None:
                yield det

    def _stream_in_order(self) -> Iterator[Tuple[int, List[Detection]]]:
        current, group = -1, []
        for det in self._kept():
            if det.frame != current:
                if det.frame < current:  # the file changed since check()
                    raise self._fail(det.line, "frames are no longer in order; was the file rewritten meanwhile?")
                if group:
                    yield current, group
                current, group = det.frame, []
            group.append(det)
        if group:
            yield current, group

    def _sorted_in_memory(self) -> Iterator[Tuple[int, List[Detection]]]:
        n = self.summary.kept
        ints = np.empty((n, 8), np.int32)  # frame, track, x, y, w, h, line, clipped
        conf = np.empty(n, np.float64)
        count = 0
        for det in self._kept():
            if count == n:
                raise self._fail(det.line, "more rows than when it was checked; was the file rewritten meanwhile?")
            ints[count] = (det.frame, det.track, *det.box, det.line, det.clipped)
            conf[count] = det.conf
            count += 1
        ints, conf = ints[:count], conf[:count]
        order = np.argsort(ints[:, 0], kind="stable")  # stable: rows of a frame stay in file order
        start = 0
        while start < len(order):
            frame = int(ints[order[start], 0])
            stop = start
            while stop < len(order) and ints[order[stop], 0] == frame:
                stop += 1
            group = []
            for i in order[start:stop]:
                f, t, x, y, w, h, line, clipped = (int(v) for v in ints[i])
                group.append(Detection(f, t, (x, y, w, h), float(conf[i]), line, bool(clipped)))
            yield frame, group
            start = stop
