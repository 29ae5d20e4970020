"""Reading a video file frame by frame with OpenCV, and what can be known of it up front.

A container's own account of itself is not always true: the frame count in an AVI or MP4
header can be larger than what decodes (a truncated file, a recorder killed mid-write) and
the frame rate can be missing or wrong.  So :class:`VideoSource` decodes the first frame
when it opens (its size is the frame size every box is checked against), and
:meth:`VideoSource.has_frame` asks for a given frame by seeking a second reader to it, which
answers "does frame N decode?" without decoding the whole file.

Frame indices are 0-based: the first frame of the file is frame 0.
"""

import logging
import math
import os
from typing import Iterator, Optional, Tuple

import numpy as np

from reid_srdl.core.errors import ReidSrdlError

log = logging.getLogger(__name__)


class VideoError(ReidSrdlError, ValueError):
    """A video cannot be opened or decoded, or it says nothing usable of its frame rate."""


def _open_capture(path: str):
    import cv2

    if not os.path.isfile(path):
        raise VideoError(f"video {path} does not exist" if not os.path.exists(path) else f"video {path} is not a file")
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"cannot read video {path}: OpenCV could not open it as a video")
    return cap


class VideoSource:
    """One video file: its frame size, frame rate and (reported) frame count, and its frames.

    ``fps`` overrides the container's frame rate (for containers that state a wrong one).
    Raises :class:`VideoError` when the file does not open or its first frame does not decode.
    """

    def __init__(self, path, fps: Optional[float] = None):
        import cv2

        self.path = os.fspath(path)
        cap = _open_capture(self.path)
        try:
            ok, first = cap.read()
            if not ok or first is None:
                raise VideoError(f"cannot read video {self.path}: its first frame does not decode")
            self.height, self.width = int(first.shape[0]), int(first.shape[1])
            self.container_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        finally:
            cap.release()
        # Some streams report 0 or a negative count: "unknown", not "empty".
        self.reported_frames: Optional[int] = int(count) if count and count > 0 else None
        if fps is not None:
            if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
                raise VideoError(f"the frame rate must be a positive number of frames per second; got {fps!r}")
            self.fps: Optional[float] = float(fps)
        elif math.isfinite(self.container_fps) and self.container_fps > 0:
            self.fps = self.container_fps
        else:
            self.fps = None  # only needed for timestamps; the caller decides whether that is an error

    @property
    def size(self) -> Tuple[int, int]:
        """``(width, height)`` of the frames in pixels."""
        return self.width, self.height

    def has_frame(self, index: int) -> bool:
        """Whether frame ``index`` (0-based) decodes, found by seeking to it (not by trusting the
        container's frame count, and without decoding everything before it)."""
        import cv2

        if index < 0:
            return False
        cap = _open_capture(self.path)
        try:
            if index > 0 and not cap.set(cv2.CAP_PROP_POS_FRAMES, float(index)):
                return False
            ok, frame = cap.read()
            return bool(ok) and frame is not None
        finally:
            cap.release()

    def frames(self, wanted=None) -> Iterator[Tuple[int, Optional[np.ndarray]]]:
        """``(index, frame)`` for every frame in order, BGR uint8 ``(height, width, 3)``.

        ``wanted(index) -> bool`` says which frames are needed as pixels; the others are
        demuxed and decoded (``grab``) but not converted, and come back as None.  A frame
        whose size differs from the first one's is an error (a box checked against one size
        must fit the frame it is cut from).
        """
        cap = _open_capture(self.path)
        try:
            index = 0
            while cap.grab():
                if wanted is None or wanted(index):
                    ok, frame = cap.retrieve()
                    if not ok or frame is None:
                        raise VideoError(f"video {self.path}: frame {index} does not decode")
                    if frame.shape[:2] != (self.height, self.width):
                        raise VideoError(
                            f"video {self.path}: frame {index} is {frame.shape[1]}x{frame.shape[0]}, "
                            f"the first frame {self.width}x{self.height}"
                        )
                    yield index, frame
                else:
                    yield index, None
                index += 1
        finally:
            cap.release()


def read_frame(path, index: int) -> np.ndarray:
    """Frame ``index`` (0-based) of the video at ``path``, BGR uint8, found by seeking (for
    showing the frame a crop was cut from).  :class:`VideoError` if it does not decode."""
    import cv2

    path = os.fspath(path)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise VideoError(f"a frame index is a whole number >= 0; got {index!r}")
    cap = _open_capture(path)
    try:
        if index > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, float(index))
        ok, frame = cap.read()
    finally:
        cap.release()
    if not ok or frame is None:
        raise VideoError(f"video {path} has no frame {index}")
    return frame
