"""The synthetic Market-1501 generator: layout, names, protocol properties, determinism,
atomic writing, ensure_synthetic_market and the CLI."""

import hashlib
import os
import re
import warnings
from collections import defaultdict

import cv2
import numpy as np
import pytest
from fixtures_data import write_market_tree
from PIL import Image
from tiny_runs import TINY_MARKET

import reid_srdl.data.synthetic.market as synthetic
from reid_srdl.cli import make_synthetic_market as market_cli
from reid_srdl.data.market1501 import MarketLayoutError, parse_market_filename, read_market1501
from reid_srdl.data.synthetic.market import (
    ensure_synthetic_market,
    make_synthetic_market,
    read_marker,
    synthetic_market_dir,
)

SPLITS = ("bounding_box_train", "bounding_box_test", "query", "gt_bbox")
NAME_RE = re.compile(r"^(-1|\d{4})_c[1-6]s[1-6]_\d{6}_\d{2}\.jpg$")


def _files(data_dir):
    """{folder: [(name, MarketName)]} for the four split folders."""
    return {f: [(n, parse_market_filename(n)) for n in sorted(os.listdir(os.path.join(data_dir, f)))] for f in SPLITS}


def _digest(root) -> str:
    """One hash over every file's relative path and bytes."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            h.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


# --------------------------------------------------------------------------- layout
def test_layout_names_and_image_format(tiny_market_root):
    data_dir = synthetic_market_dir(tiny_market_root)
    assert data_dir == os.path.join(tiny_market_root, "market1501", "Market-1501-v15.09.15")
    assert sorted(os.listdir(data_dir)) == sorted(SPLITS + ("synthetic.json",))
    for folder in SPLITS:
        names = os.listdir(os.path.join(data_dir, folder))
        assert names, folder
        for name in names:
            assert NAME_RE.match(name), name
            with Image.open(os.path.join(data_dir, folder, name)) as img:
                assert (img.format, img.size, img.mode) == ("JPEG", (64, 128), "RGB")
    # Nothing besides the data folder is left next to it (no temporary folder).
    assert os.listdir(os.path.join(tiny_market_root, "market1501")) == ["Market-1501-v15.09.15"]


def test_identity_split_cameras_junk_and_distractors(tiny_market_root):
    files = _files(synthetic_market_dir(tiny_market_root))
    pids = {f: {m.pid for _n, m in files[f]} for f in SPLITS}
    train_ids, gallery_ids = pids["bounding_box_train"], pids["bounding_box_test"] - {-1, 0}
    n = TINY_MARKET["num_ids"]
    assert len(train_ids) == n // 2 and len(gallery_ids) == n - n // 2  # half train, half test
    assert not train_ids & gallery_ids  # disjoint, as in Market-1501
    assert pids["query"] == gallery_ids
    assert {-1, 0} <= pids["bounding_box_test"]  # junk and distractors in the gallery ...
    assert not {-1, 0} & (pids["bounding_box_train"] | pids["query"] | pids["gt_bbox"])  # ... only
    for folder in ("bounding_box_train", "bounding_box_test"):
        assert {m.camid for _n, m in files[folder]} == set(range(6)), folder
    # Detector boxes have box index >= 1, hand-drawn ones 00.
    assert all(m.box >= 1 for f in ("bounding_box_train", "bounding_box_test") for _n, m in files[f])
    assert all(m.box == 0 for f in ("query", "gt_bbox") for _n, m in files[f])


def test_every_query_has_a_cross_camera_match_and_gt_bbox_to_pool(tiny_market_root):
    data_dir = synthetic_market_dir(tiny_market_root)
    files = _files(data_dir)
    gallery = {(m.pid, m.camid) for _n, m in files["bounding_box_test"]}
    gt = defaultdict(int)
    for _n, m in files["gt_bbox"]:
        gt[(m.pid, m.camid)] += 1
    gt_names = {n for n, _m in files["gt_bbox"]}
    for name, q in files["query"]:
        assert any(pid == q.pid and cam != q.camid for pid, cam in gallery), name
        assert gt[(q.pid, q.camid)] == TINY_MARKET["gt_bbox_per_id_camera"], name
        # The query is one of the hand-drawn boxes, byte for byte (as in Market-1501).
        assert name in gt_names
        with (
            open(os.path.join(data_dir, "query", name), "rb") as a,
            open(os.path.join(data_dir, "gt_bbox", name), "rb") as b,
        ):
            assert a.read() == b.read()


def test_counts_follow_the_parameters(tiny_market_root):
    data_dir = synthetic_market_dir(tiny_market_root)
    files = _files(data_dir)
    marker = read_marker(data_dir)
    per = TINY_MARKET["images_per_id_camera"]
    tracks_train = {(m.pid, m.camid) for _n, m in files["bounding_box_train"]}
    tracks_test = {(m.pid, m.camid) for _n, m in files["bounding_box_test"] if m.pid > 0}
    assert len(files["bounding_box_train"]) == per * len(tracks_train)
    assert len(files["query"]) == len(tracks_test)
    assert len(files["gt_bbox"]) == TINY_MARKET["gt_bbox_per_id_camera"] * len(tracks_test)
    detections = per * len(tracks_test)
    extra = max(2, detections // 10)  # junk and distractors: a tenth of the gallery each
    assert len(files["bounding_box_test"]) == detections + 2 * extra
    assert marker["counts"] == {f: len(files[f]) for f in marker["counts"]}
    assert (marker["num_ids"], marker["seed"]) == (TINY_MARKET["num_ids"], TINY_MARKET["seed"])


def _strip_histograms(paths, columns):
    feats = []
    for p in paths:
        hsv = cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2HSV)[10:120, columns]
        h = cv2.calcHist([hsv], [0, 1, 2], None, [8, 4, 4], [0, 180, 0, 256, 0, 256]).ravel()
        feats.append(np.sqrt(h / h.sum()))
    return np.stack(feats)


def test_identity_shows_in_the_person_and_the_camera_in_the_background(tiny_market_root):
    lists = read_market1501(tiny_market_root)
    samples = [s for s in lists.gallery if s[1] > 0] + lists.query
    pid = np.array([s[1] for s in samples])
    cam = np.array([s[2] for s in samples])
    same_id_other_cam = (pid[:, None] == pid[None]) & (cam[:, None] != cam[None])
    other_id_other_cam = (pid[:, None] != pid[None]) & (cam[:, None] != cam[None])
    other_id_same_cam = (pid[:, None] != pid[None]) & (cam[:, None] == cam[None])

    def distances(columns):
        f = _strip_histograms([s[0] for s in samples], columns)
        return ((f[:, None] - f[None]) ** 2).sum(-1)

    person = distances(slice(22, 42))  # the central strip, mostly the person
    assert person[same_id_other_cam].mean() < 0.95 * person[other_id_other_cam].mean()
    background = distances(np.r_[0:8, 56:64])  # the side strips, mostly background
    assert background[other_id_other_cam].mean() > 3 * background[other_id_same_cam].mean()


# --------------------------------------------------------------------------- determinism
SMALL = dict(num_ids=4, images_per_id_camera=1, gt_bbox_per_id_camera=1)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = make_synthetic_market(str(tmp_path / "a"), seed=5, **SMALL)
    b = make_synthetic_market(str(tmp_path / "b"), seed=5, **SMALL)
    c = make_synthetic_market(str(tmp_path / "c"), seed=6, **SMALL)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    names_a = {n for f in SPLITS for n in os.listdir(os.path.join(a, f))}
    names_c = {n for f in SPLITS for n in os.listdir(os.path.join(c, f))}
    assert names_a != names_c


# --------------------------------------------------------------------------- atomic writing
def test_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    real_write = synthetic._write_jpeg
    calls = []

    def failing_write(path, image, quality):
        calls.append(path)
        if len(calls) == 5:
            raise OSError("disk full (simulated)")
        real_write(path, image, quality)

    monkeypatch.setattr(synthetic, "_write_jpeg", failing_write)
    with pytest.raises(OSError, match="simulated"):
        make_synthetic_market(str(tmp_path), **SMALL)
    assert len(calls) == 5
    assert os.listdir(tmp_path / "market1501") == []  # no data folder, no temporary folder


def test_existing_folder_needs_overwrite(tmp_path):
    root = str(tmp_path)
    data_dir = make_synthetic_market(root, seed=1, **SMALL)
    with pytest.raises(FileExistsError, match="already exists.*overwrite"):
        make_synthetic_market(root, seed=2, **SMALL)
    assert read_marker(data_dir)["seed"] == 1
    assert make_synthetic_market(root, seed=2, overwrite=True, **SMALL) == data_dir
    assert read_marker(data_dir)["seed"] == 2
    assert os.listdir(tmp_path / "market1501") == ["Market-1501-v15.09.15"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_ids=3), "num_ids must be in 4..1501"),
        (dict(num_ids=1502), "num_ids must be in 4..1501"),
        (dict(images_per_id_camera=0), "images_per_id_camera must be >= 1"),
        (dict(gt_bbox_per_id_camera=0), "gt_bbox_per_id_camera must be >= 1"),
        (dict(seed=-1), "seed must be >= 0"),
    ],
)
def test_bad_parameters(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_synthetic_market(str(tmp_path), **kwargs)
    assert not os.path.exists(tmp_path / "market1501")


# --------------------------------------------------------------------------- ensure
def test_ensure_builds_once_then_reuses(tmp_path):
    root = str(tmp_path)
    data_dir = ensure_synthetic_market(root, num_ids=4, seed=3)
    digest = _digest(data_dir)
    assert read_marker(data_dir)["seed"] == 3
    with pytest.warns(UserWarning, match="num_ids=4, seed=3.*not the one asked for"):
        assert ensure_synthetic_market(root, num_ids=4, seed=4) == data_dir
    assert _digest(data_dir) == digest  # untouched
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the matching request is silent
        assert ensure_synthetic_market(root, num_ids=4, seed=3) == data_dir


def test_ensure_uses_a_real_data_set_as_it_is(tmp_path):
    data_dir = write_market_tree(str(tmp_path), versioned=False)
    assert os.path.normpath(ensure_synthetic_market(str(tmp_path))) == data_dir
    assert read_marker(data_dir) is None
    assert not os.path.exists(synthetic_market_dir(str(tmp_path)))


def test_ensure_refuses_an_incomplete_folder(tmp_path):
    data_dir = synthetic_market_dir(str(tmp_path))
    os.makedirs(os.path.join(data_dir, "bounding_box_train"))
    with pytest.raises(MarketLayoutError, match="refusing to write .* lacks query/, bounding_box_test/"):
        ensure_synthetic_market(str(tmp_path), num_ids=4)
    assert os.listdir(data_dir) == ["bounding_box_train"]


# --------------------------------------------------------------------------- CLI
def test_cli_writes_and_refuses_to_overwrite(tmp_path, capsys):
    main = market_cli.main
    out = str(tmp_path / "out")
    assert main(["--out", out, "--ids", "4", "--seed", "2", "--images-per-id-camera", "1"]) == 0
    printed = capsys.readouterr().out
    data_dir = synthetic_market_dir(out)
    train = len(os.listdir(os.path.join(data_dir, "bounding_box_train")))
    assert f"wrote {data_dir}" in printed
    assert re.search(rf"bounding_box_train\s+{train} images", printed)
    assert read_marker(data_dir)["seed"] == 2
    assert main(["--out", out]) == 2
    assert "already exists" in capsys.readouterr().err
