"""The synthetic DukeMTMC-reID, MSMT17, CUHK03 and VIPeR writers: torchreid's OWN classes read
each layout back with the counts worked out by hand from the parameters; names, the raw
CUHK03 .mat form, determinism, atomic writing, ensure_synthetic and the CLI."""

import glob
import hashlib
import json
import os
import re
import runpy
import warnings

import numpy as np
import pytest
from PIL import Image

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    from torchreid.reid.data.datasets.image import CUHK03, MSMT17, DukeMTMCreID, VIPeR

from tiny_runs import (
    CUHK03_COUNTS,
    DUKE,
    DUKE_COUNTS,
    MSMT_COUNTS,
    VIPER_COUNTS,
    counts,
)

from reid_srdl.data.reid_sets import DatasetLayoutError, read_reid_set
from reid_srdl.data.synthetic import reid_sets as synthetic_reid
from reid_srdl.data.synthetic.reid_sets import ensure_synthetic, make_synthetic_duke

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DUKE_NAME = re.compile(r"^\d{4}_c[1-8]_f\d{7}\.jpg$")
MSMT_NAME = re.compile(r"^(\d{4})_\d{3}_(\d{2})_\d{4}(morning|noon|afternoon)_\d{4}_\d\.jpg$")


def _quiet(cls, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(verbose=False, **kw)


def _check_counts(ds, expected):
    assert counts(ds.train) == expected["train"]
    assert counts(ds.query)[:2] == expected["query"]
    assert counts(ds.gallery)[:2] == expected["gallery"]


def test_duke_layout_read_by_torchreid(tiny_reid_root):
    ds = _quiet(DukeMTMCreID, root=tiny_reid_root)
    _check_counts(ds, DUKE_COUNTS)
    base = os.path.join(tiny_reid_root, "dukemtmc-reid", "DukeMTMC-reID")
    for split in ("bounding_box_train", "bounding_box_test", "query"):
        names = os.listdir(os.path.join(base, split))
        assert names and all(DUKE_NAME.match(n) for n in names), split
    # Test identities are disjoint from training ones; every query identity is in the gallery.
    train_files = {n[:4] for n in os.listdir(os.path.join(base, "bounding_box_train"))}
    query_pids = {p for _, p, _, _ in ds.query}
    assert not train_files & {f"{p:04d}" for p in query_pids}
    assert query_pids <= {p for _, p, _, _ in ds.gallery}
    # Our reader hands on exactly torchreid's lists (sorted by path).
    ours = read_reid_set("dukemtmcreid", tiny_reid_root)
    assert ours.train == sorted(s[:3] for s in ds.train) and ours.gallery == sorted(s[:3] for s in ds.gallery)


def test_msmt17_layout_and_lists_read_by_torchreid(tiny_reid_root):
    ds = _quiet(MSMT17, root=tiny_reid_root)
    _check_counts(ds, MSMT_COUNTS)
    base = os.path.join(tiny_reid_root, "msmt17", "MSMT17_V1")
    with open(os.path.join(base, "list_val.txt")) as f:
        val = f.read().splitlines()
    assert len(val) == MSMT_COUNTS["val"]
    for list_name, folder in (("train", "train"), ("val", "train"), ("query", "test"), ("gallery", "test")):
        with open(os.path.join(base, f"list_{list_name}.txt")) as f:
            for line in f.read().splitlines():
                rel, label = line.split(" ")
                pid_dir, name = rel.split("/")
                m = MSMT_NAME.match(name)
                assert m and m.group(1) == pid_dir == f"{int(label):04d}", line
                assert 1 <= int(m.group(2)) <= 15
                assert os.path.isfile(os.path.join(base, folder, rel)), rel
    # The validation images are training-folder images not in list_train (as in MSMT17).
    with open(os.path.join(base, "list_train.txt")) as f:
        assert not set(f.read().splitlines()) & set(val)
    # camid = third field of the name - 1, as torchreid reads it.
    path, _pid, camid, _ = ds.query[0]
    assert camid == int(os.path.basename(path).split("_")[2]) - 1


@pytest.mark.parametrize("labeled", [False, True])
@pytest.mark.parametrize("classic", [False, True])
def test_cuhk03_raw_mat_form_read_by_torchreid(tiny_reid_root, labeled, classic):
    ds = _quiet(CUHK03, root=tiny_reid_root, cuhk03_labeled=labeled, cuhk03_classic_split=classic)
    expected = CUHK03_COUNTS[classic]
    _check_counts(ds, expected)
    kind = "labeled" if labeled else "detected"
    assert all(f"images_{kind}" in p for p, *_ in ds.train + ds.query + ds.gallery)
    split_json = os.path.join(tiny_reid_root, "cuhk03", f"splits_{'classic' if classic else 'new'}_{kind}.json")
    with open(split_json) as f:
        assert len(json.load(f)) == expected["splits"]
    if classic:  # query and gallery are the same test images
        assert sorted(ds.query) == sorted(ds.gallery)
    else:  # one query per view of each test identity
        views = {}
        for _, pid, camid, _ in ds.query:
            views.setdefault(pid, []).append(camid)
        assert all(sorted(v) == [0, 1] for v in views.values()) and len(views) == expected["query"][1]


def test_cuhk03_extracted_image_is_the_mat_cell(tiny_reid_root):
    """The png torchreid extracts is the HDF5 cell, read independently with h5py."""
    import h5py

    _quiet(CUHK03, root=tiny_reid_root, cuhk03_labeled=True)
    with h5py.File(os.path.join(tiny_reid_root, "cuhk03", "cuhk03_release", "cuhk-03.mat"), "r") as mat:
        assert mat["labeled"].shape == (1, 5) and mat["testsets"].shape == (1, 20)
        pair0 = mat[mat["labeled"][0, 0]][:].T  # persons x 10 cells
        assert pair0.shape == (2, 10)
        cell = mat[pair0[1, 6]][:].T  # pair 1, person 2, view 2, image 7 (2 per view: cells 0,1 and 5,6)
        empty = mat[pair0[1, 2]][:]
        testset = mat[mat["testsets"][0, 0]][:].T
    assert cell.shape == (128, 64, 3) and empty.size == 2  # an empty MATLAB cell
    assert testset.shape == (3, 2) and set(testset[:, 0]) <= {1, 2, 3, 4, 5}
    png = np.asarray(Image.open(os.path.join(tiny_reid_root, "cuhk03", "images_labeled", "1_002_2_07.png")))
    np.testing.assert_array_equal(png, cell)


def test_viper_layout_read_by_torchreid(tiny_reid_root):
    ds = _quiet(VIPeR, root=tiny_reid_root, split_id=3)
    _check_counts(ds, VIPER_COUNTS)
    a = sorted(glob.glob(os.path.join(tiny_reid_root, "viper", "VIPeR", "cam_a", "*.bmp")))
    b = sorted(glob.glob(os.path.join(tiny_reid_root, "viper", "VIPeR", "cam_b", "*.bmp")))
    names = [f"{i:03d}" for i in range(10)]
    assert [os.path.basename(p)[:3] for p in a] == [os.path.basename(p)[:3] for p in b] == names
    with open(os.path.join(tiny_reid_root, "viper", "splits.json")) as f:
        assert len(json.load(f)) == VIPER_COUNTS["splits"]


def _digest(folder):
    h = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(folder, "**", "*"), recursive=True)):
        if os.path.isfile(path):
            h.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_people(tmp_path):
    small = dict(DUKE, num_ids=4, num_distractors=0)
    a = make_synthetic_duke(str(tmp_path / "a"), **small)
    b = make_synthetic_duke(str(tmp_path / "b"), **small)
    c = make_synthetic_duke(str(tmp_path / "c"), **dict(small, seed=1))
    assert _digest(a) == _digest(b) != _digest(c)


def test_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = synthetic_reid._write_jpeg

    def failing(path, image, quality):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full")
        original(path, image, quality)

    monkeypatch.setattr(synthetic_reid, "_write_jpeg", failing)
    with pytest.raises(OSError, match="disk full"):
        make_synthetic_duke(str(tmp_path), **DUKE)
    assert os.listdir(tmp_path) == []


def test_existing_folder_needs_overwrite(tmp_path):
    small = dict(DUKE, num_ids=4, num_distractors=0)
    make_synthetic_duke(str(tmp_path), **small)
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_synthetic_duke(str(tmp_path), **small)
    make_synthetic_duke(str(tmp_path), **dict(small, seed=2), overwrite=True)
    with open(tmp_path / "dukemtmc-reid" / "synthetic.json") as f:
        assert json.load(f)["seed"] == 2
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


@pytest.mark.parametrize(
    "writer, kwargs, message",
    [
        ("make_synthetic_duke", dict(num_ids=3), "num_ids must be in 4..3000"),
        ("make_synthetic_duke", dict(images_per_id_camera=1), "images_per_id_camera must be >= 2"),
        ("make_synthetic_msmt17", dict(cameras_per_id=16), "cameras_per_id must be <= 15"),
        ("make_synthetic_cuhk03", dict(num_ids=9), "num_ids must be in 10..1467"),
        ("make_synthetic_cuhk03", dict(images_per_view=6), "images_per_view must be <= 5"),
        ("make_synthetic_viper", dict(seed=-1), "seed must be >= 0"),
    ],
)
def test_bad_parameters(tmp_path, writer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        getattr(synthetic_reid, writer)(str(tmp_path), **kwargs)
    assert os.listdir(tmp_path) == []


def test_ensure_writes_once_and_never_beside_a_mislaid_real_set(tmp_path):
    root = str(tmp_path)
    folder, written = ensure_synthetic("dukemtmcreid", root, num_ids=4)
    assert written and folder == os.path.join(root, "dukemtmc-reid")
    assert ensure_synthetic("dukemtmcreid", root, num_ids=4) == (folder, False)
    other = tmp_path / "other"
    (other / "MSMT17_V1" / "train").mkdir(parents=True)  # the archive extracted one level too high
    with pytest.raises(DatasetLayoutError, match=r"refusing to write a synthetic MSMT17 .*move it into .*msmt17"):
        ensure_synthetic("msmt17", str(other), num_ids=4)
    assert not (other / "msmt17").exists()


def test_cli_writes_checks_everything_first_and_refuses_to_overwrite(tmp_path, capsys):
    tool = os.path.join(REPO, "tools", "make_synthetic_reid.py")

    def run(*argv):
        import sys

        saved = sys.argv
        sys.argv = [tool, *argv]
        try:
            with pytest.raises(SystemExit) as exit_info:
                runpy.run_path(tool, run_name="__main__")
        finally:
            sys.argv = saved
        return exit_info.value.code

    out = str(tmp_path / "out")
    # 8 identities are too few for CUHK03: nothing at all is written, not even VIPeR.
    assert run("--out", out, "--format", "viper", "cuhk03", "--ids", "8") == 2
    assert "cuhk03: num_ids must be in 10..1467" in capsys.readouterr().err and not os.path.exists(out)
    assert run("--out", out, "--format", "viper", "dukemtmcreid", "--ids", "10") == 0
    printed = capsys.readouterr().out
    assert "wrote viper" in printed and "cam_a 10, cam_b 10" in printed and "wrote dukemtmcreid" in printed
    assert run("--out", out, "--format", "viper") == 2
    assert "already exists" in capsys.readouterr().err
