"""The web app through FastAPI's TestClient: search by upload or gallery pick, decisions, adds
saved atomically, upload limits, and images served only from the gallery's own folders."""

import os
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the web app needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (test extra)")
from fastapi.testclient import TestClient  # noqa: E402

from reid_srdl.core.checkpoint import save_model_file  # noqa: E402
from reid_srdl.models import build_model  # noqa: E402
from reid_srdl.search import ReIDSearcher  # noqa: E402
from reid_srdl.search.labels import list_images, market_labels  # noqa: E402
from reid_srdl.serve.app import create_app  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def served(tiny_market_root, tmp_path):
    market = os.path.join(tiny_market_root, "market1501", "Market-1501-v15.09.15")
    gallery_dir = tmp_path / "gallery"
    shutil.copytree(os.path.join(market, "bounding_box_test"), gallery_dir)
    torch.manual_seed(0)
    net = build_model("small_reid", 4, feature_dim=8).eval()
    model = str(tmp_path / "final.pt")
    save_model_file(net, model, task="reid", height=32, width=16)
    paths = list_images(str(gallery_dir))
    pids, cams = market_labels(paths)
    s = ReIDSearcher.from_images(model, paths, pids, cams)
    queries = list_images(os.path.join(market, "query"))
    s.calibrate(queries, *market_labels(queries), far=0.2)
    gallery_file = str(tmp_path / "g.npz")
    s.save(gallery_file)
    loaded = ReIDSearcher.load(gallery_file, model=model)
    app = create_app(loaded, gallery_file, str(tmp_path / "uploads"), max_upload_bytes=200_000)
    return {
        "client": TestClient(app),
        "searcher": loaded,
        "paths": paths,
        "file": gallery_file,
        "tmp": tmp_path,
        "model": model,
        "queries": queries,
    }


def upload(path):
    return {"file": (os.path.basename(path), open(path, "rb").read(), "image/jpeg")}


def test_health_and_stats(served):
    c = served["client"]
    assert c.get("/health").json() == {"status": "ok", "images": 36}
    st = c.get("/stats").json()
    assert st["images"] == 36 and st["dim"] == 8 and st["can_add"] is True
    assert st["calibration"]["far"] == 0.2 and set(st["cameras"]) <= {f"c{i}" for i in range(1, 7)}


def test_search_an_upload_matches_the_library(served):
    c, s = served["client"], served["searcher"]
    query = served["queries"][0]
    r = c.post("/search", files=upload(query), data={"k": "5", "threshold": "calibrated"})
    assert r.status_code == 200, r.text
    out = r.json()
    expected = s.search(query, k=5, threshold="calibrated")[0]  # the same image through the Python API
    assert [h["index"] for h in out["hits"]] == expected.indices.tolist()
    np.testing.assert_allclose([h["distance"] for h in out["hits"]], expected.distances, atol=1e-4)
    assert out["decision"] == expected.decision and out["threshold"] == s.calibration.threshold
    assert out["hits"][0]["image_url"] == f"/image/{expected.indices[0]}"
    # A gallery image as the query finds itself first; picked by index it is left out.
    own = c.post("/search", files=upload(served["paths"][3]), data={"k": "3", "threshold": "0.5"}).json()
    assert own["hits"][0]["index"] == 3 and own["hits"][0]["distance"] < 1e-3 and own["decision"] == "match"
    picked = c.post("/search", data={"gallery_index": "3", "k": "3"}).json()
    assert 3 not in [h["index"] for h in picked["hits"]] and len(picked["hits"]) == 3 and picked["decision"] is None
    cam = out["hits"][0]["camera"]
    filtered = c.post("/search", files=upload(query), data={"k": "5", "exclude_camera": cam}).json()
    assert cam not in [h["camera"] for h in filtered["hits"]]


@pytest.mark.parametrize(
    "files, data, status, message",
    [
        ({"file": ("e.jpg", b"", "image/jpeg")}, {}, 400, "empty"),
        ({"file": ("t.jpg", b"hello, not an image", "image/jpeg")}, {}, 415, "not a readable image"),
        ({"file": ("big.jpg", b"\xff" * 300_000, "image/jpeg")}, {}, 413, "over the limit"),
        (None, {}, 400, "send an image"),
        (None, {"gallery_index": "999"}, 404, "outside 0..35"),
        (None, {"gallery_index": "1", "exclude_camera": "7"}, 422, "c1, c2"),
        (None, {"gallery_index": "1", "k": "0"}, 422, "k must be in 1..100"),
        (None, {"gallery_index": "1", "threshold": "high"}, 422, "threshold must be"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message(served, files, data, status, message):
    r = served["client"].post("/search", files=files, data=data)
    assert r.status_code == status and message in r.json()["error"]


def test_images_only_from_the_gallery_folders(served, tmp_path):
    c = served["client"]
    ok = c.get("/image/0")
    assert ok.status_code == 200 and ok.content == open(served["paths"][0], "rb").read()
    for url in (
        "/image/..%2F..%2Fetc%2Fpasswd",
        "/image/../../etc/passwd",
        "/image/-1",
        "/image/36",
        "/image/%2Fetc%2Fpasswd",
    ):
        r = c.get(url)
        assert r.status_code in (404, 422) and b"root:" not in r.content, url
    # A gallery entry that is a symlink pointing outside the gallery's folders is refused.
    secret = tmp_path / "outside" / "secret.jpg"
    secret.parent.mkdir()
    shutil.copy(served["paths"][1], secret)
    link = os.path.join(os.path.dirname(served["paths"][0]), "0001_c1s1_000001_00.jpg")
    os.symlink(secret, link)
    s = served["searcher"]
    s.add(s.features[:1], [1], [0], [link])
    r = c.get(f"/image/{len(s) - 1}")
    assert r.status_code == 403 and "outside the gallery's folders" in r.json()["error"]


def test_add_images_saves_the_gallery(served):
    c = served["client"]
    files = [("files", (os.path.basename(p), open(p, "rb").read(), "image/jpeg")) for p in served["queries"][:2]]
    r = c.post("/gallery", files=files, data={"pids": "901,902", "cameras": "c2,c3"})
    assert r.status_code == 200, r.text
    assert r.json() == {"added": 2, "images": 38, "saved": True}
    again = ReIDSearcher.load(served["file"])
    assert len(again) == 38 and again.pids[-2:].tolist() == [901, 902] and again.camids[-2:].tolist() == [1, 2]
    assert again.calibration is not None  # the calibration survives the rewrite
    found = c.post("/search", files=upload(served["queries"][1]), data={"k": "1"}).json()
    assert found["hits"][0]["index"] == 37 and found["hits"][0]["pid"] == 902
    assert c.get("/image/37").status_code == 200  # the upload folder is served too
    assert sorted(os.listdir(served["tmp"])) == sorted(["final.pt", "g.npz", "gallery", "uploads"])
    bad = c.post("/gallery", files=[("files", ("x.jpg", b"nope", "image/jpeg"))])
    assert bad.status_code == 415 and len(ReIDSearcher.load(served["file"])) == 38
    mismatch = c.post("/gallery", files=files[:1], data={"pids": "1,2"})
    assert mismatch.status_code == 422 and "2 values for 1 images" in mismatch.json()["error"]
