"""The web app over a gallery store with footage metadata: hits carry camera, UTC time, frame
and box (against brute force over the stored vectors); the frame of a crop is the video's own
frame (against a sequential decode); a query picked from the gallery leaves that very item
out; the timeline's sightings are every item within the threshold; filters by camera and
time; the owner's adds become the store's own crops, deleted with their items."""

import io
import os

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web app needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (test extra)")

from serve_helpers import (
    BASE_URL,
    T0,
    TOKEN,
    add_files,
    build_gallery,
    build_store,
    files_in,
    frame_pixels,
    owner,
    upload,
)

from reid_srdl.search import ReIDSearcher
from reid_srdl.search.stores import DeleteRequest, SearchFilter, item_id
from reid_srdl.serve import service as service_module
from reid_srdl.serve.app import create_app
from reid_srdl.serve.guard import AccessPolicy

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def footage(tiny_market_root, tmp_path_factory):
    gallery = build_gallery(tiny_market_root, tmp_path_factory.mktemp("footage"))
    store = str(gallery["tmp"] / "store")
    built = build_store(gallery, store)
    return {**gallery, **built, "store": store}


def client_for(footage, writes=False, image_roots=None):
    from fastapi.testclient import TestClient

    searcher = ReIDSearcher.load(store=footage["store"], model=footage["model"])
    access = AccessPolicy.for_server("127.0.0.1", 8000, TOKEN if writes else None)
    upload_dir = os.path.join(searcher.store.crop_dir, "uploads")
    roots = image_roots
    if roots is None:
        roots = [footage["store"], os.path.dirname(footage["video"]), os.path.dirname(footage["paths"][0])]
    app = create_app(searcher, None, upload_dir, access=access, image_roots=roots)
    return TestClient(app, base_url=BASE_URL), app.state.service


def brute_force(footage, query_vector, flt=None):
    """(ids, distances) of every stored item admitted by ``flt``, nearest first (ties by id)."""
    from reid_srdl.search.stores import open_store

    with open_store(footage["store"]) as store:
        ids, items, vecs = [], [], []
        for v, its in store.scan():
            vecs.append(v)
            items.extend(its)
        vecs = np.concatenate(vecs)
    keep = [i for i, it in enumerate(items) if flt is None or flt.admits(it)]
    d = np.linalg.norm(vecs[keep] - query_vector, axis=1)
    order = np.lexsort(([items[keep[j]].id for j in range(len(keep))], d))
    ids = [items[keep[j]].id for j in order]
    return ids, d[order], [items[keep[j]] for j in order]


def embed(footage, path):
    searcher = ReIDSearcher.load(store=footage["store"], model=footage["model"])
    try:
        return searcher.embed_images([path])[0]
    finally:
        searcher.close()


def test_hits_carry_camera_time_frame_and_box(footage):
    c, _ = client_for(footage)
    crop = footage["video_items"][1].crop
    out = c.post("/search", files=upload(crop), data={"k": "6", "threshold": "0.5"}).json()
    ids, dist, items = brute_force(footage, embed(footage, crop))
    assert [h["id"] for h in out["hits"]] == ids[:6]
    np.testing.assert_allclose([h["distance"] for h in out["hits"]], dist[:6], atol=1e-4)
    top = out["hits"][0]
    item = footage["video_items"][1]
    assert top["id"] == item.id and top["distance"] < 1e-3 and out["decision"] == "match"
    assert (top["camera"], top["timestamp"], top["frame"], top["box"]) == (
        item.camera,
        item.timestamp,
        item.frame,
        list(item.box),
    )
    assert top["time"].startswith("2024-05-01T14:02:11.5") and top["timestamp"] == T0 + 0.5
    assert top["image_url"] == f"/image/{item.id}" and top["frame_url"] == f"/frame/{item.id}"
    still = next(h for h in out["hits"] if h["frame"] == -1)
    assert still["frame_url"] is None and still["timestamp"] is None  # a crop file with no frame or time
    assert c.get(top["image_url"]).content == open(item.crop, "rb").read()


def test_a_picked_item_leaves_itself_out(footage):
    c, _ = client_for(footage)
    item = footage["video_items"][2]
    out = c.post("/search", data={"gallery_id": str(item.id), "k": "5"}).json()
    ids, _, _ = brute_force(footage, footage["vectors"][2], SearchFilter(exclude_ids=(item.id,)))
    assert [h["id"] for h in out["hits"]] == ids[:5] and item.id not in [h["id"] for h in out["hits"]]
    assert out["query"]["id"] == item.id and out["query"]["camera"] == item.camera
    assert out["query"]["image_url"] == f"/image/{item.id}"
    missing = c.post("/search", data={"gallery_id": "12345", "k": "5"})
    assert missing.status_code == 404 and missing.json() == {"error": "no gallery item 12345"}


def test_the_frame_is_the_videos_own(footage):
    """/frame/{id} decodes, by index, the very frame the crop was cut from: of all frames of
    the video (decoded in order, the oracle) it is nearest to that one."""
    import cv2

    c, _ = client_for(footage)
    for item in footage["video_items"]:
        r = c.get(f"/frame/{item.id}")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        got = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR).astype(float)
        cap = cv2.VideoCapture(footage["video"])
        decoded = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            decoded.append(frame.astype(float))
        cap.release()
        errors = [np.abs(got - f).mean() for f in decoded]
        assert int(np.argmin(errors)) == item.frame and errors[item.frame] < 3, (item.frame, errors)
        assert np.abs(decoded[item.frame] - frame_pixels(item.frame)).mean() < 3  # the video is what we wrote


def test_frames_only_from_the_operators_folders(footage):
    roots = [footage["store"]]  # the crops, but not the footage folder
    c, _ = client_for(footage, image_roots=roots)
    item = footage["video_items"][0]
    r = c.get(f"/frame/{item.id}")
    assert r.status_code == 403 and "not a video or image file inside the folders" in r.json()["error"]
    assert c.get(f"/image/{item.id}").status_code == 200  # its crop is inside the store
    still = footage["items"][len(footage["video_items"])]
    assert c.get(f"/image/{still.id}").status_code == 403  # the Market folder is not a root here
    assert c.get("/frame/99").status_code == 404 and c.get("/frame/x").status_code == 400


def test_sightings_are_every_item_within_the_threshold(footage, monkeypatch):
    c, _ = client_for(footage)
    crop = footage["video_items"][0].crop
    q = embed(footage, crop)
    ids, dist, items = brute_force(footage, q)
    tau = float(np.sort(dist)[5]) + 1e-6  # six items within it
    out = c.post("/search", files=upload(crop), data={"k": "2", "threshold": repr(tau)}).json()
    assert len(out["hits"]) == 2 and [s["id"] for s in out["sightings"]] == [i for i, d in zip(ids, dist) if d <= tau]
    assert out["sightings_truncated"] is False
    assert all(s["within_threshold"] and s["distance"] <= tau for s in out["sightings"])
    monkeypatch.setattr(service_module, "TIMELINE_K", 4)
    cut = c.post("/search", files=upload(crop), data={"k": "2", "threshold": repr(tau)}).json()
    assert len(cut["sightings"]) == 4 and cut["sightings_truncated"] is True
    none = c.post("/search", files=upload(crop), data={"k": "2"}).json()
    assert none["sightings"] is None  # no threshold: no "seen" to speak of


@pytest.mark.parametrize(
    "fields, flt",
    [
        ({"cameras": "c2"}, SearchFilter(cameras=("c2",))),
        ({"exclude_camera": "c1,c5"}, SearchFilter(exclude_cameras=("c1", "c5"))),
        ({"time_from": "2024-05-01T14:02:11.6Z"}, SearchFilter(time_from=T0 + 0.6)),
        (
            {"time_from": "2024-05-01T14:02:11", "time_to": "2024-05-01T14:02:12"},
            SearchFilter(time_from=T0, time_to=T0 + 1.0),
        ),
    ],
)
def test_filters_by_camera_and_time(footage, fields, flt):
    c, _ = client_for(footage)
    crop = footage["video_items"][3].crop
    out = c.post("/search", files=upload(crop), data={"k": "10", **fields}).json()
    ids, _, _ = brute_force(footage, embed(footage, crop), flt)
    assert [h["id"] for h in out["hits"]] == ids[:10] and out["hits"]


def test_stats_of_a_store(footage):
    c, _ = client_for(footage)
    st = c.get("/stats").json()
    stills = footage["paths"]
    assert st["images"] == len(footage["items"]) and st["store"] == "faiss"
    assert st["cameras"] == sorted({it.camera for it in footage["items"] if it.camera})
    assert st["identities"] == len({it.pid for it in footage["items"] if it.pid >= 0})
    assert len(stills) + 4 == st["images"] and st["can_add"] is False


def test_owner_adds_become_the_stores_own_crops(footage):
    from PIL import Image

    c, service = client_for(footage, writes=True)
    before = len(service.store)
    labels = {"cameras": "lobby,c2", "pids": "501,-1"}
    r = c.post("/gallery", files=add_files(footage["queries"][:2]), data=labels, headers=owner())
    assert r.status_code == 200 and r.json() == {"added": 2, "duplicates": 0, "images": before + 2, "saved": True}
    uploads = os.path.join(service.store.crop_dir, "uploads")
    stored = files_in(uploads)
    assert len(stored) == 2
    found = c.post("/search", files=upload(footage["queries"][0]), data={"k": "1"}).json()["hits"][0]
    assert found["distance"] < 1e-3 and found["camera"] == "lobby" and found["pid"] == 501
    assert found["source"].startswith(uploads) and found["frame_url"] is None
    shown = Image.open(io.BytesIO(c.get(found["image_url"]).content))
    assert shown.size == Image.open(footage["queries"][0]).size
    again = c.post("/gallery", files=add_files(footage["queries"][:1]), headers=owner()).json()
    assert again["added"] == 0 and again["duplicates"] == 1
    # The store owns the uploaded crops: deleting the person removes the file as well.
    removed = service.store.delete(DeleteRequest(pid=501))
    assert [it.camera for it in removed] == ["lobby"] and len(files_in(uploads)) == 1
    other = next(os.path.join(uploads, f) for f in stored if os.path.join(uploads, f) != found["source"])
    rest = service.store.delete(DeleteRequest(ids=(item_id(other, -1, None),)))  # the module's store as it was
    assert [(it.source, it.camera) for it in rest] == [(other, "c2")]
    assert files_in(uploads) == [] and len(service.store) == before


def test_frames_that_do_not_decode_and_stills_with_a_box(footage):
    """A frame index past the video's end is a 404 with one line; a still image with a box is
    its own frame (the box drawn by the page over the whole image)."""
    from reid_srdl.search.stores import GalleryItem, open_store

    still = footage["paths"][0]
    past_end = GalleryItem(source=footage["video"], camera="c1", timestamp=T0, frame=999, box=(1, 2, 3, 4))
    boxed = GalleryItem(source=still, camera="c1", frame=-1, box=(2, 4, 10, 20))
    with open_store(footage["store"]) as store:
        store.add(footage["vectors"][:2] + 100.0, [past_end, boxed])  # far from every query of the other tests
    try:
        c, _ = client_for(footage)
        r = c.get(f"/frame/{past_end.id}")
        assert r.status_code == 404 and r.json() == {"error": "frame 999 of the video cam.avi does not decode"}
        r = c.get(f"/frame/{boxed.id}")
        import cv2

        got = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR).astype(float)
        assert r.status_code == 200 and np.abs(got - cv2.imread(still).astype(float)).mean() < 3
        hit = c.post("/search", data={"gallery_id": str(past_end.id), "k": "1"}).json()["hits"][0]
        assert hit["id"] == boxed.id and hit["frame_url"] == f"/frame/{boxed.id}"  # a box: a frame to show
    finally:
        with open_store(footage["store"]) as store:
            store.delete(DeleteRequest(ids=(past_end.id, boxed.id)))


def test_stats_of_a_large_gallery_leave_the_counts_out(footage, monkeypatch):
    """Counting identities and cameras scans the gallery: beyond a size it is not done (None)."""
    monkeypatch.setattr(service_module, "STATS_MAX_ITEMS", 3)
    c, service = client_for(footage)
    st = c.get("/stats").json()
    assert st["images"] == len(service.store) and st["identities"] is None and st["cameras"] is None
    assert service.images_outside_roots() is None
