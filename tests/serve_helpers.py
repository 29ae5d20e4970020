"""Shared helpers of the tests/test_serve*.py files: a served gallery of the tiny Market-1501
set (its crops copied beside the gallery file), the client that reaches it as a browser on
127.0.0.1:8000 would, and upload bodies."""

import os
import shutil

import torch

from reid_srdl.core.checkpoint import save_model_file
from reid_srdl.models import build_model
from reid_srdl.search import ReIDSearcher
from reid_srdl.search.labels import list_images, market_labels

PORT = 8000
BASE_URL = f"http://127.0.0.1:{PORT}"
ORIGIN = BASE_URL
TOKEN = "owner-token-0123456789abcdef"


def build_gallery(tiny_market_root: str, tmp_path) -> dict:
    """A calibrated gallery file ``tmp/g.npz`` over crops copied to ``tmp/gallery/``, and its model."""
    market = os.path.join(tiny_market_root, "market1501", "Market-1501-v15.09.15")
    gallery_dir = tmp_path / "gallery"
    shutil.copytree(os.path.join(market, "bounding_box_test"), gallery_dir)
    torch.manual_seed(0)
    net = build_model("small_reid", 4, feature_dim=8).eval()
    model = str(tmp_path / "final.pt")
    save_model_file(net, model, task="reid", height=32, width=16)
    paths = list_images(str(gallery_dir))
    s = ReIDSearcher.from_images(model, paths, *market_labels(paths))
    queries = list_images(os.path.join(market, "query"))
    s.calibrate(queries, *market_labels(queries), far=0.2)
    gallery_file = str(tmp_path / "g.npz")
    s.save(gallery_file)
    return {"file": gallery_file, "model": model, "paths": paths, "queries": queries, "tmp": tmp_path}


def serve(gallery: dict, writes: bool = False, max_upload_bytes: int = 200_000, **options):
    """``(client, app)``: the app over a fresh load of the gallery; ``writes`` gives it the
    upload folder ``tmp/uploads`` and the owner's token :data:`TOKEN`."""
    from fastapi.testclient import TestClient

    from reid_srdl.serve.app import create_app
    from reid_srdl.serve.guard import AccessPolicy

    loaded = ReIDSearcher.load(gallery["file"], model=gallery["model"])
    access = options.pop("access", None) or AccessPolicy.for_server("127.0.0.1", PORT, TOKEN if writes else None)
    app = create_app(
        loaded,
        gallery["file"],
        str(gallery["tmp"] / "uploads"),
        max_upload_bytes=max_upload_bytes,
        access=access,
        **options,
    )
    return TestClient(app, base_url=BASE_URL), app


def owner() -> dict:
    """The headers of the owner's page: its own Origin and the token."""
    return {"Origin": ORIGIN, "Authorization": f"Bearer {TOKEN}"}


def upload(path: str) -> dict:
    with open(path, "rb") as f:
        return {"file": (os.path.basename(path), f.read(), "image/jpeg")}


def add_files(paths) -> list:
    out = []
    for p in paths:
        with open(p, "rb") as f:
            out.append(("files", (os.path.basename(p), f.read(), "image/jpeg")))
    return out


def files_in(folder) -> list:
    """Every file under ``folder`` (hidden ones too), relative, sorted; [] if it does not exist."""
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


# ----------------------------------------------------------------------------- footage in a store
FPS = 10.0
T0 = 1714572131.0  # 2024-05-01T14:02:11Z
FRAME_SIZE = (96, 72)  # width, height


def frame_pixels(i: int):
    """Frame ``i`` of the test video (BGR): a background whose brightness and a person-like
    block whose place depend on ``i``, so that every frame differs from its neighbours."""
    import numpy as np

    w, h = FRAME_SIZE
    img = np.full((h, w, 3), 20 + 6 * i, dtype=np.uint8)
    x = 4 + 4 * i
    img[10:60, x : x + 20] = (40 + 9 * i, 200 - 7 * i, 90)
    return img


def frame_box(i: int):
    return (4 + 4 * i, 10, 20, 50)


def write_video(path: str, frames: int = 16) -> str:
    import cv2

    out = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), FPS, FRAME_SIZE)
    assert out.isOpened(), "OpenCV cannot write MJPG"
    for i in range(frames):
        out.write(frame_pixels(i))
    out.release()
    return path


def build_store(gallery: dict, location: str, cameras=("c1", "c2"), frames=(2, 5, 9, 14), **store_options):
    """A gallery store at ``location`` (a folder, a *.db, or a server URI) holding crops cut
    from a test video (camera, UTC time, frame, box, stored crop) and the Market crops of
    ``gallery`` (still images), embedded by its model.  Returns the video, its items, every
    item and their vectors (in the order added)."""
    import cv2

    from reid_srdl.search import provenance
    from reid_srdl.search.embedder import Embedder
    from reid_srdl.search.stores import GalleryItem, open_store

    tmp = gallery["tmp"]
    os.makedirs(tmp / "footage", exist_ok=True)
    video = write_video(str(tmp / "footage" / "cam.avi"))
    embedder = Embedder(gallery["model"])
    store = open_store(location, dim=8, create=True, **store_options)
    try:
        crop_dir = store.crop_dir or str(tmp / "crops")
        os.makedirs(crop_dir, exist_ok=True)
        items, crops = [], []
        for n, i in enumerate(frames):
            x, y, w, h = frame_box(i)
            crop = os.path.join(crop_dir, f"f{i:03d}.png")
            cv2.imwrite(crop, frame_pixels(i)[y : y + h, x : x + w])
            crops.append(crop)
            items.append(
                GalleryItem(
                    source=video,
                    camera=cameras[n % len(cameras)],
                    timestamp=T0 + i / FPS,
                    frame=i,
                    box=frame_box(i),
                    track=1,
                    pid=7,
                    crop=crop,
                )
            )
        stills = gallery["paths"]
        pids = [int(os.path.basename(p).split("_")[0]) for p in stills]
        cams = [os.path.basename(p).split("_")[1][:2] for p in stills]
        items += [GalleryItem(source=p, camera=c, pid=pid) for p, c, pid in zip(stills, cams, pids)]
        vectors = embedder.embed_files(crops + list(stills))[0]
        assert store.add(vectors, items) == len(items)
        store.set_meta(provenance.record(store.get_meta(), embedder, store.location, False))
    finally:
        store.close()
    return {"video": video, "video_items": items[: len(frames)], "items": items, "vectors": vectors}
