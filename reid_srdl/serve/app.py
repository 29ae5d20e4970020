"""A small web app over a saved gallery (FastAPI; the optional ``serve`` extra).

    GET  /              the page: drop a query image or pick a gallery image; ranked crops,
                        the match decision, filters (camera, k, threshold)
    POST /search        multipart ``file`` (an image) or form ``gallery_index``; form ``k``,
                        ``threshold`` ("calibrated", a distance, or empty), ``far``,
                        ``exclude_camera`` (c1, c2...) -> decision + ranked hits (JSON)
    POST /gallery       multipart ``files`` (images), optional ``pids`` / ``cameras``
                        (comma-separated) -> added, gallery file saved atomically
    GET  /stats         size, identities, cameras, model, settings, calibration, counters
    GET  /health        liveness
    GET  /image/{i}     gallery image i -- only files inside the gallery's own folders

Safety: images are served by gallery index, never by a path from the request, and only
when the file (symlinks resolved) lies in a folder the gallery's images were in at start-up
or in the upload folder; uploads that are empty, larger than ``max_upload_bytes`` or not a
decodable image get a 4xx with a message; adds and saves are serialised by a lock while
searches go on (the gallery index has its own lock), and the file is replaced atomically.
"""

import io
import logging
import os
import threading
import time
import uuid
from typing import List, Optional

import numpy as np

from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.core.files import atomic_path
from reid_srdl.search.gallery import camera_name
from reid_srdl.search.labels import LabelError, parse_camera

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 8 << 20
MAX_K = 100


def _within(path: str, roots: List[str]) -> bool:
    real = os.path.realpath(path)
    return any(os.path.commonpath([real, root]) == root for root in roots)


class GalleryService:
    """The state behind the app: the searcher, its file, the served folders, counters."""

    def __init__(
        self,
        searcher,
        gallery_path: Optional[str],
        upload_dir: Optional[str] = None,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    ):
        self.searcher = searcher
        self.gallery_path = gallery_path
        self.max_upload_bytes = int(max_upload_bytes)
        paths = searcher.paths or []
        # The folders as listed (resolved), not where symlinked files point: a link out is refused.
        self.roots = sorted({os.path.realpath(os.path.dirname(os.path.abspath(p))) for p in paths})
        self.upload_dir = upload_dir
        if upload_dir:
            os.makedirs(upload_dir, exist_ok=True)
            self.roots.append(os.path.realpath(upload_dir))
        self.write_lock = threading.Lock()  # adds and saves, one at a time
        self.queries = 0
        self.adds = 0
        self.started = time.time()
        if searcher.embedder is not None:
            # Eval mode once, for good: concurrent extractions must not toggle it (BatchNorm).
            searcher.embedder.model.eval()

    # ------------------------------------------------------------------ uploads
    def decode_upload(self, data: bytes, name: str):
        """An RGB PIL image from uploaded bytes, or an UploadError with the HTTP status."""
        from reid_srdl.core.images import ImageRejected, decode_rgb

        if not data:
            raise UploadError(400, f"{name}: the upload is empty")
        if len(data) > self.max_upload_bytes:
            raise UploadError(413, f"{name}: {len(data)} bytes is over the limit of {self.max_upload_bytes} bytes")
        try:  # the pixel count is checked before decoding (a decompression bomb is refused)
            return decode_rgb(io.BytesIO(data))
        except ImageRejected as e:  # the reason names no BytesIO object: the upload is named here
            if e.too_large:
                raise UploadError(413, f"{name}: {e.reason}") from None
            raise UploadError(415, f"{name}: not a readable image ({e.reason})") from None

    # ------------------------------------------------------------------ operations
    def search(
        self,
        image=None,
        gallery_index: Optional[int] = None,
        k: int = 10,
        threshold: str = "",
        far: Optional[float] = None,
        exclude_camera: str = "",
    ) -> dict:
        s = self.searcher
        if isinstance(k, bool) or not 1 <= int(k) <= MAX_K:
            raise UploadError(422, f"k must be in 1..{MAX_K}; got {k}")
        options = {}
        if exclude_camera:
            options["exclude_camid"] = parse_camera(exclude_camera)
        thr = (threshold or "").strip()
        if far is not None:
            options["far"] = far
        elif thr == "calibrated":
            options["threshold"] = "calibrated"
        elif thr:
            try:
                options["threshold"] = float(thr)
            except ValueError:
                raise UploadError(422, f"threshold must be 'calibrated', a distance or empty; got {thr!r}") from None
        s.decision_threshold(options.get("threshold"), options.get("far"))  # cheap checks first
        start = time.perf_counter()
        if gallery_index is not None:
            if not 0 <= gallery_index < len(s):
                raise UploadError(404, f"gallery index {gallery_index} is outside 0..{len(s) - 1}")
            feats = s.store.vectors([gallery_index])
            # The picked image is left out of its own results (it would be its own match at 0).
            result = s.search(feats, k=int(k), exclude_ids=[gallery_index], **options)[0]
        else:
            feats = s.embed_pil([image])
            result = s.search(feats, k=int(k), **options)[0]
        self.queries += 1
        out = result.to_dict()
        for hit in out["hits"]:
            hit["image_url"] = f"/image/{hit['index']}"
        out["seconds"] = time.perf_counter() - start
        return out

    def add(self, images: List, pids: Optional[List[int]], camids: Optional[List[int]]) -> dict:
        if not self.upload_dir:
            raise UploadError(403, "this server was started without an upload folder; adding images is disabled")
        if self.searcher.embedder is None:
            raise UploadError(409, "this gallery has no model to embed new images with")
        with self.write_lock:
            paths = []
            for im in images:
                # Our own names (never the client's): nothing from the request reaches a path.
                target = os.path.join(self.upload_dir, f"{uuid.uuid4().hex}.png")
                with atomic_path(target, suffix=".png") as tmp:
                    im.save(tmp, format="PNG")
                paths.append(target)
            added = self.searcher.add_images(paths, pids, camids)
            if self.gallery_path:
                self.searcher.save(self.gallery_path)
            self.adds += len(added)
        return {"added": len(added), "images": len(self.searcher), "saved": bool(self.gallery_path)}

    def stats(self) -> dict:
        s = self.searcher
        pids, camids = s.pids, s.camids
        meta = s.meta
        cal = meta.get("calibration")
        from reid_srdl.search.fingerprint import describe_model

        return {
            "images": len(s),
            "dim": s.dim,
            "identities": int(len(np.unique(pids[pids >= 0]))),
            "cameras": [camera_name(int(c)) for c in np.unique(camids[camids >= 0])],
            "model": describe_model(meta.get("model")),
            "settings": meta.get("settings"),
            "calibration": None if cal is None else {k: cal[k] for k in ("threshold", "far", "tar", "dir", "source")},
            "queries_served": self.queries,
            "images_added": self.adds,
            "uptime_seconds": time.time() - self.started,
            "can_add": bool(self.upload_dir) and s.embedder is not None,
        }

    def image_path(self, index: int) -> str:
        paths = self.searcher.paths
        if paths is None or not 0 <= index < len(paths):
            raise UploadError(404, f"no gallery image {index}")
        path = paths[index]
        if not _within(path, self.roots) or not os.path.isfile(path):
            raise UploadError(403, f"gallery image {index} is outside the gallery's folders")
        return os.path.realpath(path)


class UploadError(ReidSrdlError):
    """A request the server refuses, with its HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _ids(text: Optional[str], n: int, what: str, parse) -> Optional[List[int]]:
    if not text:
        return None
    items = [t.strip() for t in text.split(",")]
    if len(items) != n:
        raise UploadError(422, f"{what}: {len(items)} values for {n} images")
    try:
        return [parse(t) for t in items]
    except (ValueError, LabelError) as e:
        raise UploadError(422, f"{what}: {e}") from None


def create_app(
    searcher,
    gallery_path: Optional[str] = None,
    upload_dir: Optional[str] = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
):
    """The FastAPI app over ``searcher`` (saved to ``gallery_path`` after adds; uploads stored
    in ``upload_dir``, None disables POST /gallery)."""
    from fastapi import FastAPI, File, Form, Request, UploadFile
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

    from reid_srdl.serve.page import PAGE

    service = GalleryService(searcher, gallery_path, upload_dir, max_upload_bytes)
    app = FastAPI(title="reid_srdl gallery search")
    app.state.service = service

    @app.exception_handler(UploadError)
    async def _refused(request: Request, exc: UploadError):
        return JSONResponse(status_code=exc.status, content={"error": str(exc)})

    @app.exception_handler(ReidSrdlError)
    async def _bad_input(request: Request, exc: ReidSrdlError):
        return JSONResponse(status_code=422, content={"error": str(exc)})

    async def _read(upload: UploadFile) -> bytes:
        # Read at most one byte past the limit: a huge upload is refused without holding it all.
        data = await upload.read(service.max_upload_bytes + 1)
        return data

    @app.get("/", response_class=HTMLResponse)
    def page():
        return PAGE

    @app.get("/health")
    def health():
        return {"status": "ok", "images": len(service.searcher)}

    @app.get("/stats")
    def stats():
        return service.stats()

    @app.get("/image/{index}")
    def image(index: int):
        return FileResponse(service.image_path(index))

    @app.post("/search")
    async def search(
        file: Optional[UploadFile] = File(None),
        gallery_index: Optional[int] = Form(None),
        k: int = Form(10),
        threshold: str = Form(""),
        far: Optional[float] = Form(None),
        exclude_camera: str = Form(""),
    ):
        from starlette.concurrency import run_in_threadpool

        if (file is None) == (gallery_index is None):
            raise UploadError(400, "send an image as 'file' or pick a gallery image with 'gallery_index' (one of them)")
        image = None
        if file is not None:
            image = service.decode_upload(await _read(file), file.filename or "upload")
        # The embedding and the search run in a worker thread: the event loop stays free.
        return await run_in_threadpool(service.search, image, gallery_index, k, threshold, far, exclude_camera)

    @app.post("/gallery")
    async def add(files: List[UploadFile] = File(...), pids: str = Form(""), cameras: str = Form("")):
        from starlette.concurrency import run_in_threadpool

        images = [service.decode_upload(await _read(f), f.filename or "upload") for f in files]
        pid_list = _ids(pids, len(images), "pids", int)
        cam_list = _ids(cameras, len(images), "cameras", parse_camera)
        return await run_in_threadpool(service.add, images, pid_list, cam_list)

    return app
