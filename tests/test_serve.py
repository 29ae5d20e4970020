"""The web app through FastAPI's TestClient: search by upload or gallery pick against the
Python API, decisions, bad parameters answered with 400 and one message, the owner's adds
saved atomically (duplicates counted, not added)."""

import math
import os

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web app needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (test extra)")

from serve_helpers import add_files, build_gallery, files_in, owner, serve, upload

from reid_srdl.search import ReIDSearcher

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def gallery(tiny_market_root, tmp_path):
    return build_gallery(tiny_market_root, tmp_path)


@pytest.fixture(scope="module")
def served(tiny_market_root, tmp_path_factory):
    """One read-only server for the tests that only search."""
    built = build_gallery(tiny_market_root, tmp_path_factory.mktemp("served"))
    client, app = serve(built)
    return {**built, "client": client, "searcher": app.state.service.searcher}


def test_health_and_stats(served):
    c = served["client"]
    assert c.get("/health").json() == {"status": "ok", "images": 36}
    st = c.get("/stats").json()
    assert st["images"] == 36 and st["dim"] == 8 and st["can_add"] is False  # read-only unless --allow-add
    market_cams = {os.path.basename(p).split("_")[1][:2] for p in served["paths"]}
    assert st["calibration"]["far"] == 0.2 and set(st["cameras"]) == market_cams
    pids = {int(os.path.basename(p).split("_")[0]) for p in served["paths"]}
    assert st["identities"] == len({p for p in pids if p >= 0})  # junk (-1) is not an identity


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
    assert out["hits"][0]["image_url"] == f"/image/{expected.indices[0]}" and out["query"] is None
    # A gallery image as the query finds itself first; picked by index it is left out.
    own = c.post("/search", files=upload(served["paths"][3]), data={"k": "3", "threshold": "0.5"}).json()
    assert own["hits"][0]["index"] == 3 and own["hits"][0]["distance"] < 1e-3 and own["decision"] == "match"
    picked = c.post("/search", data={"gallery_index": "3", "k": "3"}).json()
    feats = s.features
    brute = np.argsort(np.linalg.norm(feats - feats[3], axis=1), kind="stable")
    assert [h["index"] for h in picked["hits"]] == [i for i in brute if i != 3][:3] and picked["decision"] is None
    assert picked == c.post("/search", data={"gallery_id": "3", "k": "3"}).json() | {"seconds": picked["seconds"]}
    shown = picked["query"]
    assert {k: shown[k] for k in ("id", "pid", "camera", "source", "frame", "box", "image_url", "frame_url")} == {
        "id": 3,
        "pid": int(s.pids[3]),
        "camera": f"c{int(s.camids[3]) + 1}",
        "source": served["paths"][3],
        "frame": -1,  # a still image
        "box": None,
        "image_url": "/image/3",
        "frame_url": None,  # no frame beyond the crop itself
    }
    cam = out["hits"][0]["camera"]
    filtered = c.post("/search", files=upload(query), data={"k": "5", "exclude_camera": cam}).json()
    assert filtered["hits"] and cam not in [h["camera"] for h in filtered["hits"]]


def test_far_reads_the_threshold_off_the_calibration(served):
    c, s = served["client"], served["searcher"]
    out = c.post("/search", data={"gallery_index": "0", "k": "2", "far": "0.5"}).json()
    assert out["threshold"] == s.calibration.threshold_at(0.5) and out["threshold_source"].startswith("FAR 50%")


@pytest.mark.parametrize(
    "files, data, status, message",
    [
        ({"file": ("e.jpg", b"", "image/jpeg")}, {}, 400, "e.jpg: the upload is empty"),
        ({"file": ("t.jpg", b"hello, not an image", "image/jpeg")}, {}, 415, "t.jpg: not a readable image"),
        ({"file": ("big.jpg", b"\xff" * 200_001, "image/jpeg")}, {}, 413, "over the limit of 200000 bytes"),
        (None, {}, 400, "send an image"),
        (None, {"gallery_index": "999"}, 404, "no gallery item 999"),
        (None, {"gallery_id": "999"}, 404, "no gallery item 999"),
        (None, {"gallery_id": "x"}, 400, "gallery_id must be an item id"),
        (None, {"gallery_index": "1", "exclude_camera": "c1,\x01"}, 400, "exclude_camera: contains the control"),
        (None, {"gallery_index": "1", "cameras": "c" * 300}, 400, "cameras: 300 characters, more than the limit"),
        (None, {"gallery_index": "1", "time_from": "yesterday"}, 400, "time_from: 'yesterday' is not an ISO 8601"),
        (None, {"gallery_index": "1", "time_from": "2024-05-02", "time_to": "2024-05-01"}, 400, "is after time_to"),
        (None, {"gallery_index": "1", "k": "0"}, 400, "k must be in 1..100"),
        (None, {"gallery_index": "1", "k": "ten"}, 400, "k must be an integer"),
        (None, {"gallery_index": "1", "threshold": "high"}, 400, "threshold must be"),
        (None, {"gallery_index": "1", "threshold": "inf"}, 400, "finite distance"),
        (None, {"gallery_index": "1", "threshold": "-inf"}, 400, "finite distance"),
        (None, {"gallery_index": "1", "threshold": "nan"}, 400, "finite distance"),
        (None, {"gallery_index": "1", "threshold": "-0.5"}, 400, "finite distance"),
        (None, {"gallery_index": "1", "far": "inf"}, 400, "far must be"),
        (None, {"gallery_index": "1", "far": "nan"}, 400, "far must be"),
        (None, {"gallery_index": "1", "far": "1.5"}, 400, "far must be"),
        (None, {"gallery_index": "1", "threshold": "0.5", "far": "0.1"}, 400, "give threshold or far, not both"),
        (None, {"gallery_index": "1", "threshold": "calibrated", "far": "0.1"}, 400, "not both"),
    ],
)
def test_bad_requests_get_a_4xx_with_one_message(served, files, data, status, message):
    r = served["client"].post("/search", files=files, data=data)
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["error"] and message in body["error"] and "\n" not in body["error"]
    assert "BytesIO" not in body["error"] and "0x" not in body["error"]


def test_the_threshold_the_cli_would_use_is_the_servers(served):
    """threshold alone decides as the library does; 0 and a huge finite one are legal edges."""
    c, s = served["client"], served["searcher"]
    q = served["queries"][2]
    for thr in ("0", "1e300"):
        out = c.post("/search", files=upload(q), data={"k": "3", "threshold": thr}).json()
        expected = s.search(q, k=3, threshold=float(thr))[0]
        assert out["decision"] == expected.decision and math.isclose(out["threshold"], float(thr))
        assert [h["within_threshold"] for h in out["hits"]] == expected.accepted.tolist()


def test_owner_adds_are_saved_and_duplicates_counted(gallery):
    c, app = serve(gallery, writes=True)
    assert c.get("/stats").json()["can_add"] is True
    queries = gallery["queries"]
    r = c.post("/gallery", files=add_files(queries[:2]), data={"pids": "901,902", "cameras": "c2,c3"}, headers=owner())
    assert r.status_code == 200, r.text
    assert r.json() == {"added": 2, "duplicates": 0, "images": 38, "saved": True}
    again = ReIDSearcher.load(gallery["file"])
    assert len(again) == 38 and again.pids[-2:].tolist() == [901, 902] and again.camids[-2:].tolist() == [1, 2]
    assert again.calibration is not None  # the calibration survives the rewrite
    found = c.post("/search", files=upload(queries[1]), data={"k": "1"}).json()
    assert found["hits"][0]["index"] == 37 and found["hits"][0]["pid"] == 902
    assert c.get("/image/37").status_code == 200  # the upload folder is served too
    stored = files_in(gallery["tmp"] / "uploads")
    assert len(stored) == 2 and all(name.endswith(".png") and len(name) == 36 for name in stored)
    # The same images again (and one of them twice in one request): nothing new, said so.
    dup = c.post("/gallery", files=add_files([queries[0], queries[1], queries[1]]), headers=owner())
    assert dup.json() == {"added": 0, "duplicates": 3, "images": 38, "saved": False}
    assert len(ReIDSearcher.load(gallery["file"])) == 38 and files_in(gallery["tmp"] / "uploads") == stored
    mismatch = c.post("/gallery", files=add_files(queries[2:3]), data={"pids": "1,2"}, headers=owner())
    assert mismatch.status_code == 400 and "2 values for 1 images" in mismatch.json()["error"]
    bad_pid = c.post("/gallery", files=add_files(queries[2:3]), data={"pids": "-7"}, headers=owner())
    assert bad_pid.status_code == 400 and "pids" in bad_pid.json()["error"]


def test_a_decompression_bomb_is_refused_before_it_is_decoded(served):
    """A 48-Mpixel PNG of zeros is a few tens of kB: refused from its header (413), not decoded."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8000, 6000)).save(buf, format="PNG")
    assert len(buf.getvalue()) < 200_000  # under the upload limit: only the pixel count stops it
    r = served["client"].post("/search", files={"file": ("bomb.png", buf.getvalue(), "image/png")})
    error = r.json()["error"]
    assert r.status_code == 413 and error.startswith("bomb.png: 8000 x 6000 = 48,000,000 pixels is over the limit of")
