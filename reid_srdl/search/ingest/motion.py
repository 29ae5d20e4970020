"""Boxes of moving things in a fixed camera's video, without a person detector: crude on purpose.

Each frame goes through OpenCV's MOG2 background subtractor (Zivkovic 2004/2006: a mixture of
Gaussians per pixel, learned as the video plays); the foreground mask (shadows, which MOG2
marks grey, are dropped) is cleaned by a morphological opening (removes specks) and a closing
(joins the parts of one body), and the bounding box of each outer contour is kept when it is
large enough, not most of the frame, and taller than wide (a standing or walking person).

What this gets wrong, and will keep getting wrong -- use a real detector and tracker (write
their output as a MOTChallenge det.txt) whenever the footage matters:

* people who walk together, or cross, merge into one box; a group wider than tall is
  dropped by the aspect filter, a taller one is kept as one "person";
* anything that moves is found: bicycles, cars, swaying trees, a door; a moving shadow MOG2
  does not recognise as one becomes part of the box or a box of its own;
* a person who stops fades into the background and is lost;
* while the background model learns (the first frames, and after a light change), people
  present from the start leave "ghost" boxes where they stood: boxes of the first ``warmup``
  frames are not reported;
* boxes are tight around the moving pixels (no margin), often cutting feet or a head of the
  same colour as the background.
"""

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.search.stores.base import Box


class MotionOptionsError(ReidSrdlError, ValueError):
    """An option of the motion detector is out of its range."""


@dataclass(frozen=True)
class MotionOptions:
    """``history``/``var_threshold``: MOG2's (frames learned from; squared Mahalanobis distance
    above which a pixel is foreground).  ``min_area``/``max_area``: a box's area as a fraction
    of the frame's.  ``min_aspect``/``max_aspect``: height / width.  ``warmup``: frames learned
    from before any box is reported.  Kernel sizes scale with the frame height: ``open_size``
    and ``close_size`` as fractions of it (at least 3 pixels, odd)."""

    history: int = 500
    var_threshold: float = 16.0
    min_area: float = 0.002
    max_area: float = 0.5
    min_aspect: float = 1.0
    max_aspect: float = 6.0
    warmup: int = 10
    open_size: float = 1 / 200
    close_size: float = 1 / 40

    def check(self) -> None:
        if self.history < 1 or self.warmup < 0:
            raise MotionOptionsError(f"history must be >= 1 and warmup >= 0; got {self.history}, {self.warmup}")
        if not 0 <= self.min_area < self.max_area <= 1:
            raise MotionOptionsError(
                f"box areas are fractions of the frame with 0 <= min < max <= 1; got {self.min_area}, {self.max_area}"
            )
        if not 0 < self.min_aspect <= self.max_aspect:
            raise MotionOptionsError(
                f"aspect ratios (height / width) need 0 < min <= max; got {self.min_aspect}, {self.max_aspect}"
            )


def _odd_size(fraction: float, height: int) -> int:
    size = max(3, int(round(fraction * height)))
    return size | 1


# MOG2 writes 255 for foreground, 127 for a pixel it thinks is a shadow, 0 for background.
FOREGROUND = 200


class MotionDetector:
    """Feed it every frame in order (:meth:`detect`); it returns the boxes of that frame,
    ``(box, fill)`` with ``fill`` the fraction of the box the moving blob covers (a rough
    confidence).  ``width`` x ``height`` is the frame size."""

    def __init__(self, width: int, height: int, options: MotionOptions = MotionOptions()):
        import cv2

        options.check()
        self.options = options
        self.width, self.height = int(width), int(height)
        self._subtractor = cv2.createBackgroundSubtractorMOG2(
            history=options.history, varThreshold=options.var_threshold, detectShadows=True
        )
        self._open = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (_odd_size(options.open_size, height),) * 2)
        self._close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (_odd_size(options.close_size, height),) * 2)
        self._frames = 0

    def mask(self, frame: np.ndarray) -> np.ndarray:
        """Learn from ``frame`` and return its cleaned foreground mask (uint8, 0 or 255)."""
        import cv2

        # MOG2's own rate is 1 / min(2 * frames seen, history): fast at first, so the background
        # is learned in a few frames -- but a person who covers the same pixels for a few
        # frames is learned too and fades.  After the warm-up the rate is held at 1 / history.
        rate = -1.0 if self._frames < self.options.warmup else 1.0 / self.options.history
        raw = self._subtractor.apply(frame, learningRate=rate)
        self._frames += 1
        fg = np.where(raw > FOREGROUND, np.uint8(255), np.uint8(0))
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, self._open)
        return cv2.morphologyEx(fg, cv2.MORPH_CLOSE, self._close)

    def detect(self, frame: np.ndarray) -> List[Tuple[Box, float]]:
        import cv2

        fg = self.mask(frame)
        if self._frames <= self.options.warmup:
            return []
        o = self.options
        frame_area = float(self.width * self.height)
        contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        found = []
        for contour in contours:
            x, y, w, h = (int(v) for v in cv2.boundingRect(contour))
            area = w * h
            if not o.min_area <= area / frame_area <= o.max_area:
                continue
            if not o.min_aspect <= h / w <= o.max_aspect:
                continue
            fill = float(np.count_nonzero(fg[y : y + h, x : x + w])) / area
            found.append(((x, y, w, h), fill))
        found.sort(key=lambda b: (b[0][0], b[0][1]))  # left to right: a stable order
        return found
