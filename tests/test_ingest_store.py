"""`reid-search ingest` into the real faiss folder store: the items, vectors and crop files it
adds (against the boxes, times and pixels the test drew, and the embedder run on those pixels);
a re-run adds nothing; an ingest interrupted mid-way and run again adds exactly the rest; the
motion detector's saved boxes round-trip; a store of another model is refused."""

import os

import numpy as np
import pytest
import torch
from ingest_helpers import FRAMES, START, START_ISO, write_det, write_video
from PIL import Image

from reid_srdl.cli import search as cli
from reid_srdl.core.checkpoint import save_model_file
from reid_srdl.models import build_model
from reid_srdl.search.embedder import Embedder
from reid_srdl.search.ingest import DetectionFile
from reid_srdl.search.ingest import pipeline as ingest_pipeline
from reid_srdl.search.stores import DeleteRequest, open_store

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ingest_store")
    video = str(tmp / "cam1.avi")
    drawn = write_video(video)
    det = str(tmp / "det.txt")
    write_det(det, drawn)
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = str(tmp / f"model{seed}.pt")
        save_model_file(build_model("small_reid", 4, feature_dim=8).eval(), path, task="reid", height=32, width=16)
        models.append(path)
    return {"video": video, "det": det, "drawn": drawn, "model": models[0], "other_model": models[1]}


def run(capsys, footage, store, *extra, model=None):
    argv = ["ingest", "--store", store, "--model", model or footage["model"], "--video", footage["video"]]
    argv += ["--camera", "c1", "--start-time", START_ISO, "--batch-size", "16"]
    if "--detect" not in extra:
        argv += ["--detections", footage["det"]]
    code = cli.main([str(a) for a in argv + list(extra)])
    out = capsys.readouterr()
    return code, out.out, out.err


def stored(store_path):
    with open_store(str(store_path)) as s:
        vectors, items = [], []
        for v, it in s.scan():
            vectors.append(v)
            items.extend(it)
    order = sorted(range(len(items)), key=lambda i: (items[i].frame, items[i].track))
    return np.concatenate(vectors)[order], [items[i] for i in order]


def expected_boxes(drawn):
    return [(f, t, b) for f, boxes in drawn.visible.items() for t, b in sorted(boxes.items())]


def test_ingest_adds_what_was_drawn_and_a_rerun_adds_nothing(capsys, footage, tmp_path):
    store = tmp_path / "gallery"
    code, out, err = run(capsys, footage, store)
    assert code == 0, err
    n = len(expected_boxes(footage["drawn"]))
    assert n == 65
    assert (
        f"{FRAMES} frames, {n} detections (2 clipped to the frame); {n} crops, "
        "2024-05-01T14:02:12.200000+00:00 to 2024-05-01T14:02:14.900000+00:00: 65 new, 0 already in" in out
    )
    vectors, items = stored(store)
    assert [(it.frame, it.track, it.box) for it in items] == expected_boxes(footage["drawn"])
    video = os.path.abspath(footage["video"])
    for it in items:
        assert (it.camera, it.source, it.pid) == ("c1", video, -1)
        assert it.timestamp == START + it.frame / 10.0
    # The vectors are the network's features of the very pixels the test drew.
    embedder = Embedder(footage["model"])
    frames = footage["drawn"].frames
    pils = [
        Image.fromarray(frames[it.frame][it.box[1] : it.box[1] + it.box[3], it.box[0] : it.box[0] + it.box[2], ::-1])
        for it in items
    ]
    np.testing.assert_allclose(vectors, embedder.embed_pil(pils), rtol=0, atol=1e-5)
    # The crops: JPEG files in the store's crops folder, of the box's size, close to the drawn pixels.
    import cv2

    for it in items:
        assert it.crop == f"crops/{it.id:016x}.jpg"  # relative to the store folder: it can move
        crop = cv2.imread(str(store / it.crop))
        x, y, w, h = it.box
        assert crop.shape == (h, w, 3)
        assert np.abs(crop.astype(int) - frames[it.frame][y : y + h, x : x + w]).mean() < 8  # JPEG quality 95
    code, out, _ = run(capsys, footage, store)
    assert code == 0 and f"0 new, {n} already in" in out
    assert len(stored(store)[1]) == n
    # Deleting a track through the store removes its crop files too.
    with open_store(str(store)) as s:
        removed = s.delete(DeleteRequest(track=3))
    assert len(removed) == 10 and not any(os.path.exists(store / it.crop) for it in removed)
    assert len(os.listdir(store / "crops")) == n - 10


def test_interrupted_ingest_run_again_adds_exactly_the_rest(capsys, footage, tmp_path, monkeypatch):
    store = tmp_path / "gallery"
    calls = []
    real = ingest_pipeline.embed_crops

    def interrupted(embedder, crops):
        calls.append(len(crops))
        if len(calls) == 3:  # the third batch of 16: as if the process were killed there
            raise KeyboardInterrupt
        return real(embedder, crops)

    monkeypatch.setattr(ingest_pipeline, "embed_crops", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(capsys, footage, store)
    monkeypatch.setattr(ingest_pipeline, "embed_crops", real)
    assert len(stored(store)[1]) == 32
    assert len(os.listdir(store / "crops")) == 32  # no crop of the batch that never got in
    code, out, _ = run(capsys, footage, store)
    assert code == 0 and "33 new, 32 already in" in out
    assert [(it.frame, it.track, it.box) for it in stored(store)[1]] == expected_boxes(footage["drawn"])


def test_best_through_the_store(capsys, footage, tmp_path):
    store = tmp_path / "gallery"
    code, out, _ = run(capsys, footage, store, "--best", "2", "--best-by", "area")
    assert code == 0 and "6 crops" in out and "6 new, 0 already in" in out
    got = {(it.track, it.frame) for it in stored(store)[1]}
    # Track 1's largest boxes are its last (it grows); tracks 2 and 3 tie, the first frames win.
    assert got == {(1, 38), (1, 39), (2, 12), (2, 13), (3, 20), (3, 21)}


def test_motion_boxes_are_saved_as_mot_rows_and_ingested(capsys, footage, tmp_path):
    store = tmp_path / "gallery"
    saved = tmp_path / "motion_det.txt"
    code, out, err = run(capsys, footage, store, "--detect", "motion", "--save-detections", saved)
    assert code == 0, err
    _, items = stored(store)
    d = DetectionFile(str(saved), 160, 96)
    s = d.check()
    rows = [(f, det.box) for f, dets in d.by_frame() for det in dets]
    # Every box found is a row (1-based in the file, 0-based once read) and an item.
    assert s.untracked == s.rows == len(items) > 0
    assert sorted(rows) == sorted((it.frame, it.box) for it in items)
    assert f"{len(items)} new" in out


def test_a_store_of_another_model_is_refused(capsys, footage, tmp_path):
    store = tmp_path / "gallery"
    assert run(capsys, footage, store, "--every", "10")[0] == 0
    before = len(stored(store)[1])
    code, _, err = run(capsys, footage, store, model=footage["other_model"])
    assert code == 2 and err.count("\n") == 1 and "was built by" in err and "--allow-model-mismatch" in err
    code, _, err = run(capsys, footage, store, "--height", "64")
    assert code == 2 and err.count("\n") == 1 and "height: gallery 32, query 64" in err
    assert len(stored(store)[1]) == before


def test_a_video_that_ends_early_while_read(capsys, footage, tmp_path, monkeypatch):
    # A container that fools even the seek (a file rewritten between the check and the read):
    # the ingest stops with one line naming the frame; the batches before it stay stored.
    from reid_srdl.search.ingest import VideoSource

    truncated = tmp_path / "short.avi"
    with open(footage["video"], "rb") as f:
        data = f.read()
    truncated.write_bytes(data[: int(len(data) * 0.6)])
    decodable = sum(1 for _ in VideoSource(str(truncated)).frames())
    monkeypatch.setattr(VideoSource, "has_frame", lambda self, index: True)
    store = tmp_path / "gallery"
    argv = ["ingest", "--store", store, "--model", footage["model"], "--video", truncated, "--camera", "c1"]
    argv += ["--detections", footage["det"], "--batch-size", "4"]
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"ended after frame {decodable - 1} (0-based)" in err
    items = stored(store)[1]
    boxes = [(f, t, b) for f, t, b in expected_boxes(footage["drawn"]) if f < decodable]
    # Whole batches of 4, in frame order, all from the frames that exist.
    assert 0 < len(items) <= len(boxes) and len(items) % 4 == 0
    assert [(it.frame, it.track, it.box) for it in items] == boxes[: len(items)]
