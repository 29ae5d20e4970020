"""The state behind the web app: the searcher, its gallery file, the served folders, counters.

Every refusal is a :class:`RequestError` carrying its HTTP status and one line of text.  A
request's parameters are checked before any image is embedded; an add embeds its images
before it writes a file, writes uploads under names made from their pixels (the same image
added twice is the same file and is counted as a duplicate, not added again), and removes
what it wrote if anything after that fails.
"""

import hashlib
import io
import logging
import math
import os
import threading
import time
from dataclasses import replace
from typing import List, Optional, Sequence

import numpy as np

from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.core.files import atomic_path
from reid_srdl.search.gallery import camera_name
from reid_srdl.search.labels import LabelError, parse_camera
from reid_srdl.serve.housekeeping import ImageRoots, default_image_roots

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 8 << 20
MAX_K = 100
MAX_ADD_FILES = 64
MAX_NAME_CHARS = 80


class RequestError(ReidSrdlError):
    """A request the server refuses, with its HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _shown_name(name: str) -> str:
    """A client's file name as it may appear in a message (bounded, one line)."""
    name = " ".join(str(name).split()) or "upload"
    return name if len(name) <= MAX_NAME_CHARS else name[: MAX_NAME_CHARS - 3] + "..."


def parse_k(text) -> int:
    try:
        k = int(str(text).strip())
    except ValueError:
        raise RequestError(400, f"k must be an integer in 1..{MAX_K}; got {str(text)[:40]!r}") from None
    if not 1 <= k <= MAX_K:
        raise RequestError(400, f"k must be in 1..{MAX_K}; got {k}")
    return k


def parse_item_id(text: Optional[str]) -> Optional[int]:
    """A gallery item's id from a form field (None when the field is absent or empty)."""
    if text is None or not str(text).strip():
        return None
    try:
        return int(str(text).strip())
    except ValueError:
        raise RequestError(400, f"gallery_id must be an item id (a whole number); got {str(text)[:40]!r}") from None


def parse_threshold(threshold: str, far: str) -> dict:
    """``search`` options from the form fields: at most one of threshold ("calibrated" or a
    finite distance >= 0) and far (a finite fraction); empty fields mean "not given"."""
    thr, far = (threshold or "").strip(), (far or "").strip()
    if thr and far:
        raise RequestError(400, f"give threshold or far, not both (got threshold={thr[:40]!r}, far={far[:40]!r})")
    if far:
        try:
            value = float(far)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not 0 < value < 1:
            raise RequestError(400, f"far must be a false accept rate between 0 and 1 (e.g. 0.05); got {far[:40]!r}")
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
            400, f"threshold must be 'calibrated', a finite distance >= 0, or empty for none; got {thr[:40]!r}"
        )
    return {"threshold": value}


def parse_labels(text: Optional[str], n: int, what: str, parse) -> Optional[List[int]]:
    """Comma-separated values, one per image (None when the field is empty)."""
    if not text:
        return None
    items = [t.strip() for t in text.split(",")]
    if len(items) != n:
        raise RequestError(400, f"{what}: {len(items)} values for {n} images")
    try:
        return [parse(t) for t in items]
    except (ValueError, LabelError) as e:
        raise RequestError(400, f"{what}: {e}") from None


def camera_id(text: str) -> int:
    """``"c1"`` -> 0, as :func:`~reid_srdl.search.labels.parse_camera`, with "c\u00b2" refused
    as a camera name rather than crashing ``int()`` (``str.isdigit`` accepts superscripts)."""
    digits = str(text).strip()[1:]
    if not (digits.isascii() and digits.isdigit()):
        raise LabelError(f"a camera is written c1, c2, ... as in Market-1501 file names; got {str(text)[:40]!r}")
    return parse_camera(text)


def parse_pid(text: str) -> int:
    pid = int(text)
    if pid < -1:
        raise ValueError(f"a pid is a number >= 0 (-1: unknown); got {pid}")
    return pid


def content_name(image) -> str:
    """``<hash>.png``: the name an upload is stored under, a function of its pixels alone."""
    digest = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode("ascii"))
    digest.update(image.tobytes())
    return digest.hexdigest()[:32] + ".png"


def _subset(result, keep: np.ndarray, k: int):
    """The first ``k`` hits of ``result`` where ``keep``, with the decision made again."""
    idx = np.flatnonzero(keep)[:k]
    return replace(
        result,
        distances=result.distances[idx],
        pids=result.pids[idx],
        camids=result.camids[idx],
        paths=None if result.paths is None else [result.paths[i] for i in idx],
        indices=result.indices[idx],
        accepted=None if result.accepted is None else result.accepted[idx],
        decision=None
        if result.decision is None
        else ("match" if len(idx) and result.distances[idx[0]] <= result.threshold else "no match"),
    )


class GalleryService:
    """The searcher and what the server does with it.

    ``upload_dir``: where adds are stored (None: no adds).  ``image_roots``: the folders
    ``/image`` may serve (default: the gallery file's folder and ``upload_dir``).
    """

    def __init__(
        self,
        searcher,
        gallery_path: Optional[str] = None,
        upload_dir: Optional[str] = None,
        image_roots: Optional[Sequence[str]] = None,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    ):
        self.searcher = searcher
        self.gallery_path = gallery_path
        self.max_upload_bytes = int(max_upload_bytes)
        self.upload_dir = upload_dir
        if upload_dir:
            os.makedirs(upload_dir, exist_ok=True)
        if image_roots is None:
            image_roots = default_image_roots(gallery_path, upload_dir)
        self.roots = ImageRoots(image_roots)
        self.write_lock = threading.Lock()  # adds and saves, one at a time
        self.queries = 0
        self.adds = 0
        self.started = time.time()
        if searcher.embedder is not None:
            # Eval mode once, for good: concurrent extractions must not toggle it (BatchNorm).
            searcher.embedder.model.eval()

    @property
    def can_add(self) -> bool:
        return bool(self.upload_dir) and self.searcher.embedder is not None

    def check_can_add(self) -> None:
        if not self.upload_dir:
            raise RequestError(403, "this server was started without an upload folder; adding images is disabled")
        if self.searcher.embedder is None:
            raise RequestError(409, "this gallery has no model to embed new images with")

    # ------------------------------------------------------------------ uploads
    def decode_upload(self, data: bytes, name: str):
        """An RGB PIL image from uploaded bytes, or a RequestError with the HTTP status (the
        project's one decoder: the pixel count is checked before any pixel is decoded)."""
        from reid_srdl.core.images import ImageRejected, decode_rgb

        name = _shown_name(name)
        if not data:
            raise RequestError(400, f"{name}: the upload is empty")
        if len(data) > self.max_upload_bytes:
            raise RequestError(413, f"{name}: the upload is over the limit of {self.max_upload_bytes} bytes")
        try:
            return decode_rgb(io.BytesIO(data))
        except ImageRejected as e:  # the reason names no BytesIO object: the upload is named here
            if e.too_large:
                raise RequestError(413, f"{name}: {e.reason}") from None
            raise RequestError(415, f"{name}: not a readable image ({e.reason})") from None

    # ------------------------------------------------------------------ operations
    def search(
        self,
        image=None,
        gallery_index: Optional[int] = None,
        k="10",
        threshold: str = "",
        far: str = "",
        exclude_camera: str = "",
    ) -> dict:
        s = self.searcher
        k = parse_k(k)
        options = parse_threshold(threshold, far)
        if exclude_camera:
            try:
                options["exclude_camid"] = camera_id(exclude_camera)
            except LabelError as e:
                raise RequestError(400, f"exclude_camera: {e}") from None
        s.decision_threshold(options.get("threshold"), options.get("far"))  # cheap checks first
        start = time.perf_counter()
        if gallery_index is not None:
            if not 0 <= gallery_index < len(s):
                raise RequestError(404, f"no gallery item {gallery_index} (ids are 0..{len(s) - 1})")
            feats = s.gallery.features[gallery_index : gallery_index + 1]
            # The picked image is left out of its own results (it would be its own match at 0).
            result = s.search(feats, k=min(k + 1, len(s)), **options)[0]
            result = _subset(result, result.indices != gallery_index, k)
        else:
            feats = s.embed_pil([image])
            result = s.search(feats, k=k, **options)[0]
        self.queries += 1
        out = result.to_dict()
        for hit in out["hits"]:
            hit["id"] = hit["index"]
            hit["image_url"] = f"/image/{hit['index']}"
        if gallery_index is not None:  # what the page needs to mark the hits of the same person
            pids, camids, _ = s.gallery.items(np.array([gallery_index]))
            pid, camid = int(pids[0]), int(camids[0])
            out["query"] = {
                "id": gallery_index,
                "index": gallery_index,
                "pid": pid,
                "camera": camera_name(camid),
                "image_url": f"/image/{gallery_index}",
            }
        else:
            out["query"] = None
        out["seconds"] = time.perf_counter() - start
        return out

    def add(self, images: List, pids: Optional[List[int]], camids: Optional[List[int]]) -> dict:
        """Embed and store new images; the gallery file is rewritten atomically.  All or
        nothing: on any failure the files written are removed and the gallery is as before."""
        self.check_can_add()
        s = self.searcher
        if not images:
            raise RequestError(400, "send at least one image as 'files'")
        if len(images) > MAX_ADD_FILES:
            raise RequestError(413, f"{len(images)} images in one add is over the limit of {MAX_ADD_FILES}")
        keeps_paths = s.paths is not None
        targets = [os.path.join(self.upload_dir, content_name(im)) for im in images]
        with self.write_lock:
            known = set(s.paths or ())
            new = [i for i, t in enumerate(targets) if t not in known and t not in targets[:i]]
            duplicates = len(images) - len(new)
            if not new:
                return self._added(0, duplicates)
            # Embedded before any file is written: a model that fails leaves nothing behind.
            feats = s.embed_pil([images[i] for i in new])
            pid_arr = np.full(len(new), -1) if pids is None else np.asarray([pids[i] for i in new])
            cam_arr = np.full(len(new), -1) if camids is None else np.asarray([camids[i] for i in new])
            written: List[str] = []
            grown = False
            try:
                if keeps_paths:
                    for i in new:
                        if not os.path.exists(targets[i]):
                            with atomic_path(targets[i], suffix=".png") as tmp:
                                images[i].save(tmp, format="PNG")
                            written.append(targets[i])
                s.add(feats, pid_arr, cam_arr, [targets[i] for i in new] if keeps_paths else None)
                grown = True
                if self.gallery_path:
                    try:
                        s.save(self.gallery_path)
                    except OSError as e:
                        reason = (e.strerror or str(e)).lower()
                        raise RequestError(
                            507, f"the gallery could not be saved ({reason}); nothing was added"
                        ) from None
            except BaseException:
                for path in written:
                    try:
                        os.remove(path)
                    except OSError as e:
                        log.warning("could not remove %s after a failed add: %s", path, e.strerror)
                if grown:
                    self._restore()
                raise
            self.adds += len(new)
        return self._added(len(new), duplicates)

    def _added(self, added: int, duplicates: int) -> dict:
        return {
            "added": added,
            "duplicates": duplicates,
            "images": len(self.searcher),
            "saved": bool(self.gallery_path) and added > 0,
        }

    def _restore(self) -> None:
        """Back to the last saved gallery (a save failed after the images were added in memory)."""
        from reid_srdl.search.gallery import GalleryIndex

        s = self.searcher
        if self.gallery_path and os.path.isfile(self.gallery_path):
            self.searcher = type(s)._wrap(GalleryIndex.load(self.gallery_path), s.embedder)
        else:
            log.error("the gallery could not be saved and has no earlier file to go back to")

    def stats(self) -> dict:
        from reid_srdl.search.fingerprint import describe_model

        s = self.searcher
        pids, camids = s.pids, s.camids
        cal = s.gallery.calibration
        return {
            "images": len(s),
            "dim": s.dim,
            "identities": int(len(np.unique(pids[pids >= 0]))),
            "cameras": [camera_name(int(c)) for c in np.unique(camids[camids >= 0])],
            "model": describe_model(s.gallery.model),
            "settings": s.gallery.settings,
            "calibration": None if cal is None else {k: cal[k] for k in ("threshold", "far", "tar", "dir", "source")},
            "queries_served": self.queries,
            "images_added": self.adds,
            "uptime_seconds": time.time() - self.started,
            "can_add": self.can_add,
        }

    def image_path(self, index: int) -> str:
        paths = self.searcher.paths
        if paths is None or not 0 <= index < len(paths):
            raise RequestError(404, f"no gallery image {index}")
        real = self.roots.servable(paths[index])
        if real is None:
            raise RequestError(
                403, f"gallery image {index} is not an image file inside the folders this server may serve"
            )
        return real

    def images_outside_roots(self) -> int:
        """How many gallery images ``/image`` will refuse (told to the operator at start-up)."""
        return self.roots.count_outside(self.searcher.paths or [])
