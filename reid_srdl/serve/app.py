"""A small web app over a gallery store (FastAPI; the optional ``serve`` extra).

    GET  /              the page: drop a query image or pick a gallery item; the query beside
                        its ranked crops (camera, UTC time), the decision, the frame of a
                        crop with its box, a per-camera timeline of the sightings; an add
                        form for the owner (``/?token=...``, see :mod:`reid_srdl.serve.page`)
    POST /search        multipart ``file`` (an image) or form ``gallery_id``; form ``k``,
                        ``threshold`` ("calibrated", a distance, or empty) or ``far``,
                        ``exclude_camera`` / ``cameras`` (comma-separated names),
                        ``time_from`` / ``time_to`` (ISO 8601) -> decision, ranked hits with
                        their metadata, and with a threshold the ``sightings`` within it
    POST /gallery       the owner only (``--allow-add`` and ``Authorization: Bearer TOKEN``):
                        multipart ``files`` (images), optional ``pids`` / ``cameras``
                        (comma-separated) -> added, duplicates
    GET  /stats         size, identities, cameras, store, model, settings, calibration, counters
    GET  /health        liveness
    GET  /image/{id}    a gallery item's crop -- only image files inside the operator's roots
    GET  /frame/{id}    the frame the crop was cut from (JPEG; read from its video by index,
                        only inside the operator's roots; :mod:`reid_srdl.serve.frames`)

Who may call what is decided before a route runs (:mod:`reid_srdl.serve.guard`): Host and
Origin on every request, the token on every write, body sizes.  Refusals are JSON
``{"error": "one line"}`` with a 4xx status.
"""

import logging
from typing import List, Optional, Sequence

from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.serve.frames import FrameReader
from reid_srdl.serve.guard import AccessPolicy, GuardMiddleware
from reid_srdl.serve.housekeeping import default_image_roots
from reid_srdl.serve.requests import RequestError, parse_camera, parse_item_id, parse_labels, parse_pid
from reid_srdl.serve.service import DEFAULT_MAX_UPLOAD_BYTES, MAX_ADD_FILES, GalleryService

log = logging.getLogger(__name__)

FORM_OVERHEAD_BYTES = 1 << 16  # multipart boundaries, headers and the small form fields


def create_app(
    searcher,
    gallery_path: Optional[str] = None,
    upload_dir: Optional[str] = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    *,
    access: Optional[AccessPolicy] = None,
    image_roots: Optional[Sequence[str]] = None,
):
    """The FastAPI app over ``searcher`` (a :class:`~reid_srdl.search.ReIDSearcher`).

    ``gallery_path``: an ``.npz`` gallery file rewritten after each add (None for a store).
    ``upload_dir``: where added images are stored (None: no adds).  ``access``: the Host
    names, Origins and owner's token (default: loopback on port 8000, read-only); adds need
    both ``upload_dir`` and a policy with a token.  ``image_roots``: the folders ``/image``
    and ``/frame`` may read (default: the gallery's own folder, its crops and ``upload_dir``).
    """
    from fastapi import FastAPI, File, Form, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    from reid_srdl.serve.page import PAGE_CSS, PAGE_HTML, PAGE_JS

    access = access or AccessPolicy.for_server()
    if image_roots is None:  # earlier uploads are served by a read-only server too
        image_roots = default_image_roots(searcher.store, gallery_path, upload_dir)
    service = GalleryService(
        searcher,
        gallery_path,
        upload_dir if access.writes_enabled else None,
        image_roots=image_roots,
        max_upload_bytes=max_upload_bytes,
    )
    frames = FrameReader(service.roots)
    app = FastAPI(title="reid_srdl gallery search", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    body_limits = {
        "/search": max_upload_bytes + FORM_OVERHEAD_BYTES,
        "/gallery": MAX_ADD_FILES * (max_upload_bytes + FORM_OVERHEAD_BYTES),
    }
    app.add_middleware(GuardMiddleware, policy=access, body_limits=body_limits)

    @app.exception_handler(RequestError)
    async def _refused(request: Request, exc: RequestError):
        return JSONResponse(status_code=exc.status, content={"error": str(exc)})

    @app.exception_handler(ReidSrdlError)
    async def _bad_input(request: Request, exc: ReidSrdlError):
        return JSONResponse(status_code=400, content={"error": str(exc)})

    @app.exception_handler(RequestValidationError)
    async def _bad_form(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path"))
            parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
        return JSONResponse(status_code=400, content={"error": "; ".join(parts)})

    async def _read(upload: UploadFile) -> bytes:
        # At most one byte past the limit: a huge upload is refused without holding it all.
        return await upload.read(service.max_upload_bytes + 1)

    def _static(text: str, media_type: str) -> Response:
        return Response(text, media_type=media_type, headers={"cache-control": "no-store"})

    @app.get("/")
    def page():
        return _static(PAGE_HTML, "text/html; charset=utf-8")

    @app.get("/page.js")
    def page_js():
        return _static(PAGE_JS, "text/javascript; charset=utf-8")

    @app.get("/page.css")
    def page_css():
        return _static(PAGE_CSS, "text/css; charset=utf-8")

    @app.get("/favicon.ico")
    def favicon():  # none: say so without an error in the browser's console
        return Response(status_code=204)

    @app.get("/health")
    def health():
        return {"status": "ok", "images": len(service.searcher)}

    @app.get("/stats")
    def stats():
        return service.stats()

    @app.get("/image/{item_id}")
    def image(item_id: str):
        return FileResponse(service.image_path(_item_id(item_id)))

    @app.get("/frame/{item_id}")
    def frame(item_id: str):
        item = service.item(_item_id(item_id))
        data, _, _ = frames.frame_jpeg(item)
        return Response(data, media_type="image/jpeg")

    def _item_id(text: str) -> int:
        value = parse_item_id(text)
        if value is None:
            raise RequestError(400, "an item id is a whole number >= 0")
        return value

    @app.post("/search")
    async def search(
        file: Optional[UploadFile] = File(None),
        gallery_id: Optional[str] = Form(None),
        gallery_index: Optional[str] = Form(None),  # the name of the first releases: the same thing
        k: str = Form("10"),
        threshold: str = Form(""),
        far: str = Form(""),
        exclude_camera: str = Form(""),
        cameras: str = Form(""),
        time_from: str = Form(""),
        time_to: str = Form(""),
    ):
        picked = parse_item_id(gallery_id if gallery_id is not None else gallery_index)
        if (file is None) == (picked is None):
            raise RequestError(400, "send an image as 'file' or pick a gallery item with 'gallery_id', one of them")
        image = None
        if file is not None:  # decoding, embedding and searching run in worker threads: the loop stays free
            image = await run_in_threadpool(service.decode_upload, await _read(file), file.filename or "upload")
        return await run_in_threadpool(
            service.search, image, picked, k, threshold, far, exclude_camera, cameras, time_from, time_to
        )

    @app.post("/gallery")
    async def add(files: List[UploadFile] = File(...), pids: str = Form(""), cameras: str = Form("")):
        service.check_can_add()  # before the images are decoded
        if len(files) > MAX_ADD_FILES:
            raise RequestError(413, f"{len(files)} images in one add is over the limit of {MAX_ADD_FILES}")
        pid_list = parse_labels(pids, len(files), "pids", parse_pid)
        cam_list = parse_labels(cameras, len(files), "cameras", parse_camera)
        images = [await run_in_threadpool(service.decode_upload, await _read(f), f.filename or "upload") for f in files]
        return await run_in_threadpool(service.add, images, pid_list, cam_list)

    return app
