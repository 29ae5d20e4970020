"""The frame a crop was cut from, for the page's "where was this person" view (``GET /frame/{id}``).

The frame is read from the item's source video by its index, when the video lies inside the
operator's folders (``--image-root``; the same rule as ``/image``), or, for a still image,
the image itself.  It is sent as a JPEG at full size; the page draws the item's box over it
(the box is in the hit's JSON, in the frame's pixels).

Why decode on demand rather than store a thumbnail of every frame: a crop's frame is asked
for one click at a time, a seek + decode costs tens of milliseconds, and a stored frame per
crop would cost far more disk than the crops themselves (a 768x576 JPEG is ~60 kB, against
~5 kB for a crop) for footage that is already on disk.  Decodes are bounded: at most
``max_concurrent`` at once (others wait up to ``wait_seconds``, then 503), frames over
:data:`reid_srdl.core.limits.MAX_IMAGE_PIXELS` are refused, and the last few frames are cached.
"""

import collections
import os
import threading
from typing import Optional, Tuple

from reid_srdl.core import limits
from reid_srdl.search.labels import IMAGE_EXTENSIONS
from reid_srdl.serve.housekeeping import ImageRoots
from reid_srdl.serve.requests import RequestError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
JPEG_QUALITY = 90


def read_video_frame(path: str, index: int):
    """Frame ``index`` (0-based) of a video, BGR uint8, or None if it does not decode."""
    import cv2

    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            return None
        if index > 0 and not cap.set(cv2.CAP_PROP_POS_FRAMES, float(index)):
            return None
        ok, frame = cap.read()
        return frame if ok else None
    finally:
        cap.release()


class FrameReader:
    """JPEG frames of gallery items, from videos and images inside ``roots``."""

    def __init__(self, roots: ImageRoots, max_concurrent: int = 2, wait_seconds: float = 10.0, cache_size: int = 16):
        self.roots = roots
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._wait = wait_seconds
        self._cache: "collections.OrderedDict[Tuple[str, int], Tuple[bytes, int, int]]" = collections.OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def frame_jpeg(self, item) -> Tuple[bytes, int, int]:
        """``(jpeg, width, height)`` of the frame ``item`` (a GalleryItem) was cut from."""
        if item.frame >= 0:
            path = self.roots.servable(item.source, VIDEO_EXTENSIONS)
            what = f"frame {item.frame} of the video"
        else:
            path = self.roots.servable(item.source, IMAGE_EXTENSIONS)
            what = "the image"
        if path is None:
            raise RequestError(
                403, "this item's source is not a video or image file inside the folders this server may serve"
            )
        key = (path, int(item.frame))
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        if not self._slots.acquire(timeout=self._wait):
            raise RequestError(503, "the server is busy decoding other frames; try again")
        try:
            encoded = self._decode(path, int(item.frame), what)
        finally:
            self._slots.release()
        with self._lock:
            self._cache[key] = encoded
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return encoded

    def _decode(self, path: str, index: int, what: str) -> Tuple[bytes, int, int]:
        import cv2

        frame: Optional[object]
        if index >= 0:
            frame = read_video_frame(path, index)
        else:
            frame = _read_still(path)
        if frame is None:
            raise RequestError(404, f"{what} {os.path.basename(path)} does not decode")
        height, width = frame.shape[:2]
        if width * height > limits.MAX_IMAGE_PIXELS:
            raise RequestError(
                413, f"the frame is {width} x {height} pixels, over the limit of {limits.MAX_IMAGE_PIXELS}"
            )
        ok, data = cv2.imencode(".jpg", frame, [int(cv2.IMWRITE_JPEG_QUALITY), JPEG_QUALITY])
        if not ok:
            raise RequestError(500, "the frame could not be encoded as JPEG")
        return data.tobytes(), int(width), int(height)


def _read_still(path: str):
    """An image file as BGR (None if it does not decode), its size checked from the header
    before it is decoded (the project's one decoder)."""
    import cv2
    import numpy as np

    from reid_srdl.core.images import ImageRejected, decode_rgb

    try:
        rgb = np.asarray(decode_rgb(path))
    except ImageRejected as e:
        if e.too_large:
            raise RequestError(413, f"the image {os.path.basename(path)}: {e.reason}") from None
        return None
    except OSError:
        return None
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
