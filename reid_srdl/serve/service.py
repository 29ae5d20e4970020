"""What the web app does with a gallery: search it, add the owner's images to it, describe it,
and say which file a request may see -- over any gallery store (a folder, Milvus Lite or a
Milvus server, or an ``.npz`` file of the first releases) through :class:`ReIDSearcher`.

Every refusal is a :class:`~reid_srdl.serve.requests.RequestError` carrying its HTTP status
and one line.  A request's fields are checked before any image is embedded.  An add embeds
its images before it writes a file, stores them under names made from their pixels (the
same image added twice is the same item and is counted as a duplicate, not added again), and
removes what it wrote if anything after that fails.
"""

import hashlib
import io
import logging
import os
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from reid_srdl.search.decisions import keep_hits
from reid_srdl.search.results import result_of
from reid_srdl.search.stores.base import GalleryItem, StoreError
from reid_srdl.search.stores.npyfiles import write_durable
from reid_srdl.serve.housekeeping import ImageRoots
from reid_srdl.serve.requests import (
    RequestError,
    parse_k,
    parse_threshold,
    search_filter,
    shown_name,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 8 << 20
MAX_ADD_FILES = 64
# With a threshold, one search also fetches this many neighbours for the timeline: every
# sighting within the threshold among them (the page says when the list was cut there).
TIMELINE_K = 500
# /stats counts identities and cameras by scanning the gallery: at most this often, and only
# for galleries up to this size (beyond, the counts are left out rather than stall the page).
STATS_SECONDS = 60.0
STATS_MAX_ITEMS = 200_000
CALIBRATION_FIELDS = ("threshold", "far", "tar", "dir", "source")


def content_name(image) -> str:
    """``<hash>.png``: the name an upload is stored under, a function of its pixels alone."""
    digest = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode("ascii"))
    digest.update(image.tobytes())
    return digest.hexdigest()[:32] + ".png"


class GalleryService:
    """The searcher and what the server does with it.

    ``gallery_path``: an ``.npz`` gallery file rewritten after each add (None for a store,
    whose adds are durable by themselves).  ``upload_dir``: where adds are stored (None: no
    adds).  ``image_roots``: the folders ``/image`` and ``/frame`` may read.
    """

    def __init__(
        self,
        searcher,
        gallery_path: Optional[str] = None,
        upload_dir: Optional[str] = None,
        image_roots: Sequence[str] = (),
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    ):
        self.searcher = searcher
        self.gallery_path = gallery_path
        self.max_upload_bytes = int(max_upload_bytes)
        self.upload_dir = upload_dir
        if upload_dir:
            os.makedirs(upload_dir, exist_ok=True)
        self.roots = ImageRoots(image_roots)
        self.write_lock = threading.Lock()  # this process's adds (and .npz saves), one at a time
        self.queries = 0
        self.adds = 0
        self.started = time.time()
        self._summary: Optional[Dict[str, Any]] = None
        self._summary_time = 0.0
        if searcher.embedder is not None:
            # Eval mode once, for good: concurrent extractions must not toggle it (BatchNorm).
            searcher.embedder.model.eval()

    @property
    def store(self):
        return self.searcher.store

    @property
    def can_add(self) -> bool:
        return bool(self.upload_dir) and self.searcher.embedder is not None and not self._read_only

    @property
    def _read_only(self) -> bool:
        return bool(getattr(self.store, "read_only", False))

    def check_can_add(self) -> None:
        if not self.upload_dir:
            raise RequestError(403, "this server was started without an upload folder; adding images is disabled")
        if self.searcher.embedder is None:
            raise RequestError(409, "this gallery has no model to embed new images with")
        if self._read_only:
            raise RequestError(409, f"{self.store.location} is read-only here: convert it to a store to add images")

    # ------------------------------------------------------------------ uploads
    def decode_upload(self, data: bytes, name: str):
        """An RGB PIL image from uploaded bytes, or a RequestError with the HTTP status (the
        project's one decoder: the pixel count is checked before any pixel is decoded)."""
        from reid_srdl.core.images import ImageRejected, decode_rgb

        name = shown_name(name)
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

    # ------------------------------------------------------------------ items
    def item(self, item_id: int) -> GalleryItem:
        found = self.store.get([item_id])[0]
        if found is None:
            raise RequestError(404, f"no gallery item {item_id}")
        return found

    def _crop_path(self, crop: str) -> str:
        """A stored crop path, relative ones taken from the store's own folder."""
        if os.path.isabs(crop):
            return crop
        base = os.path.dirname(self.store.crop_dir) if self.store.crop_dir else os.getcwd()
        return os.path.join(base, crop)

    def image_path(self, item_id: int) -> str:
        """The crop of a gallery item (its stored crop, or the still image itself), if it is an
        image file inside the image roots."""
        it = self.item(item_id)
        candidate = self._crop_path(it.crop) if it.crop else (it.source if it.frame < 0 else None)
        if candidate is None:
            raise RequestError(404, f"gallery item {item_id} has no stored crop to show")
        real = self.roots.servable(candidate)
        if real is None:
            raise RequestError(
                403, f"gallery item {item_id}: its image is not an image file inside the folders this server may serve"
            )
        return real

    @staticmethod
    def has_frame(hit: Dict[str, Any]) -> bool:
        """A hit cut from a video frame, or one with a box in a still image: a frame to show."""
        return hit.get("frame", -1) >= 0 or hit.get("box") is not None

    def _urls(self, hit: Dict[str, Any]) -> Dict[str, Any]:
        # Ids are 63-bit: a JavaScript number keeps 53 bits, so the page reads the string.
        hit["id_str"] = str(hit["id"])
        hit["image_url"] = f"/image/{hit['id']}"
        hit["frame_url"] = f"/frame/{hit['id']}" if self.has_frame(hit) else None
        return hit

    # ------------------------------------------------------------------ operations
    def search(
        self,
        image=None,
        gallery_id: Optional[int] = None,
        k="10",
        threshold: str = "",
        far: str = "",
        exclude_camera: str = "",
        cameras: str = "",
        time_from: str = "",
        time_to: str = "",
    ) -> dict:
        """Decision + ranked hits of one query (an uploaded image or a gallery item, which is
        left out of its own results), and with a threshold the sightings within it."""
        s = self.searcher
        k = parse_k(k)
        options = parse_threshold(threshold, far)
        flt = search_filter(exclude_camera, cameras, time_from, time_to, gallery_id)
        tau, source = s.decision_threshold(options.get("threshold"), options.get("far"))  # cheap checks first
        start = time.perf_counter()
        query = None
        if gallery_id is not None:
            picked = self.item(gallery_id)
            vectors = self.store.vectors([gallery_id])
            query = self._urls(dict(picked.to_dict(), id=gallery_id))  # the store's id (a position in an .npz)
        else:
            vectors = s.embed_pil([image])
        wanted = k if tau is None else max(k, TIMELINE_K)
        hits = self.store.search(vectors, wanted, [flt])
        has_paths = getattr(self.store, "has_paths", True)
        found = result_of(hits.distances[0], hits.ids[0], hits.items[0], has_paths, None, tau, source)
        shown = keep_hits(found, np.ones(len(found), dtype=bool), k)
        self.queries += 1
        out = shown.to_dict()
        for hit in out["hits"]:
            self._urls(hit)
        out["query"] = query
        if tau is None:
            out["sightings"] = None
        else:
            within = found.to_dict()["hits"]
            out["sightings"] = [self._urls(h) for h in within if h.get("within_threshold")]
            out["sightings_truncated"] = bool(len(found) == wanted and within and within[-1].get("within_threshold"))
        out["seconds"] = time.perf_counter() - start
        return out

    def add(self, images: List, pids: Optional[List[int]], cameras: Optional[List[str]]) -> dict:
        """Embed and store new images (an ``.npz`` gallery is rewritten atomically).  All or
        nothing: on any failure the files written are removed and the gallery is as before."""
        self.check_can_add()
        if not images:
            raise RequestError(400, "send at least one image as 'files'")
        if len(images) > MAX_ADD_FILES:
            raise RequestError(413, f"{len(images)} images in one add is over the limit of {MAX_ADD_FILES}")
        targets = [os.path.join(self.upload_dir, content_name(im)) for im in images]
        owned = self._owns(self.upload_dir)
        items = [
            GalleryItem(
                source=targets[i],
                camera="" if cameras is None else cameras[i],
                pid=-1 if pids is None else int(pids[i]),
                crop=targets[i] if owned else None,
            )
            for i in range(len(images))
        ]
        with self.write_lock:
            known = {it.id for it in self.store.get([it.id for it in items]) if it is not None}
            new = [i for i, it in enumerate(items) if it.id not in known and it.id not in {x.id for x in items[:i]}]
            duplicates = len(images) - len(new)
            if not new:
                return self._added(0, duplicates)
            # Embedded before any file is written: a model that fails leaves nothing behind.
            vectors = self.searcher.embed_pil([images[i] for i in new])
            written: List[str] = []
            try:
                for i in new:
                    if not os.path.exists(targets[i]):
                        write_durable(targets[i], lambda f, im=images[i]: im.save(f, format="PNG"))
                        written.append(targets[i])
                added = self._store_add(vectors, [items[i] for i in new])
            except BaseException:
                for path in written:
                    try:
                        os.remove(path)
                    except OSError as e:
                        log.warning("could not remove %s after a failed add: %s", path, e.strerror)
                raise
            self.adds += added
            self._summary = None
        return self._added(added, duplicates + len(new) - added)

    def _owns(self, folder: str) -> bool:
        """Whether files in ``folder`` are the store's own crops (deleted with their items)."""
        crop_dir = self.store.crop_dir
        if not crop_dir:
            return False
        root, real = os.path.realpath(crop_dir), os.path.realpath(folder)
        return os.path.commonpath([root, real]) == root

    def _store_add(self, vectors: np.ndarray, items: List[GalleryItem]) -> int:
        try:
            added = self.store.add(vectors, items)
        except StoreError as e:
            raise RequestError(400, str(e)) from None
        if self.gallery_path is None:
            return added
        try:
            self.searcher.save(self.gallery_path)
        except OSError as e:
            self._restore()
            reason = (e.strerror or str(e)).lower()
            raise RequestError(507, f"the gallery could not be saved ({reason}); nothing was added") from None
        except BaseException:
            self._restore()
            raise
        return added

    def _restore(self) -> None:
        """Back to the last saved ``.npz`` gallery (its save failed after the items were added
        in memory)."""
        from reid_srdl.search import ReIDSearcher

        self.searcher = ReIDSearcher(store=self.gallery_path, embedder=self.searcher.embedder)

    def _added(self, added: int, duplicates: int) -> dict:
        return {
            "added": added,
            "duplicates": duplicates,
            "images": len(self.searcher),
            "saved": added > 0,
        }

    def summary(self) -> Dict[str, Any]:
        """Identities and cameras of the gallery (a scan, cached for STATS_SECONDS; None for
        galleries over STATS_MAX_ITEMS)."""
        now = time.monotonic()
        if self._summary is not None and now - self._summary_time < STATS_SECONDS:
            return self._summary
        if len(self.store) > STATS_MAX_ITEMS:
            summary = {"identities": None, "cameras": None}
        else:
            pids, cams = set(), set()
            for _, items in self.store.scan():
                for it in items:
                    if it.pid >= 0:
                        pids.add(it.pid)
                    if it.camera:
                        cams.add(it.camera)
            summary = {"identities": len(pids), "cameras": sorted(cams)}
        self._summary, self._summary_time = summary, now
        return summary

    def stats(self) -> dict:
        from reid_srdl.search.fingerprint import describe_model

        s = self.searcher
        meta = s.meta
        cal = meta.get("calibration")
        return {
            "images": len(s),
            "dim": s.dim,
            **self.summary(),
            "store": getattr(self.store, "engine", type(self.store).__name__),
            "model": describe_model(meta.get("model")),
            "settings": meta.get("settings"),
            "calibration": None if cal is None else {k: cal.get(k) for k in CALIBRATION_FIELDS},
            "queries_served": self.queries,
            "images_added": self.adds,
            "uptime_seconds": time.time() - self.started,
            "can_add": self.can_add,
        }

    def images_outside_roots(self) -> Optional[int]:
        """How many gallery crops ``/image`` will refuse (told to the operator at start-up);
        None for galleries over STATS_MAX_ITEMS items (not counted)."""
        if len(self.store) > STATS_MAX_ITEMS:
            return None
        outside = 0
        for _, items in self.store.scan():
            for it in items:
                path = self._crop_path(it.crop) if it.crop else (it.source if it.frame < 0 else None)
                outside += path is not None and self.roots.servable(path) is None
        return outside
