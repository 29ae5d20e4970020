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
