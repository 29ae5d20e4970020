"""reid_srdl.search: gallery file provenance (model fingerprint, settings), mismatch errors,
exclusion rules against the evaluation protocol, calibration and decisions, thread safety."""

import copy
import json
import os
import threading

import numpy as np
import pytest
import torch
from search_helpers import ColourNet, colour_images

from reid_srdl.api import ReIDSearcher
from reid_srdl.evaluation.io import load_features
from reid_srdl.evaluation.metrics import ranked_gallery
from reid_srdl.evaluation.open_set import evaluate_open_set
from reid_srdl.search.errors import SearchError
from reid_srdl.search.fingerprint import model_fingerprint, state_dict_sha256
from reid_srdl.search.gallery import GalleryMismatchError
from reid_srdl.search.stores import GalleryItem
from reid_srdl.search.stores.npz_store import NpzStore


@pytest.fixture
def images(tmp_path):
    return colour_images(str(tmp_path))


# ----------------------------------------------------------------------------- fingerprint
def test_fingerprint_follows_the_weights_not_the_object():
    net = ColourNet()
    twin = copy.deepcopy(net)
    assert model_fingerprint(net) == model_fingerprint(twin)
    with torch.no_grad():
        twin.proj.bias[0] += 1e-6  # one float changed
    assert model_fingerprint(net)["weights_sha256"] != model_fingerprint(twin)["weights_sha256"]
    # Key order is part of the hash: the same tensors under swapped names differ.
    a = {"x": torch.zeros(2), "y": torch.ones(2)}
    b = {"y": torch.zeros(2), "x": torch.ones(2)}
    assert state_dict_sha256(a) != state_dict_sha256(b)
    # bf16 tensors hash by their bytes too (no numpy bf16 dtype needed).
    assert state_dict_sha256({"w": torch.ones(3, dtype=torch.bfloat16)}) != state_dict_sha256({"w": torch.ones(3)})


# ----------------------------------------------------------------------------- the file
def test_gallery_file_records_model_and_settings_and_stays_a_feature_file(images, tmp_path):
    net = ColourNet()
    s = ReIDSearcher.from_images(
        net, images, pids=[1, 2, 3, 1, 2], camids=[0, 0, 1, 1, 2], height=16, width=8, normalize=True
    )
    path = str(tmp_path / "g.npz")
    s.save(path)
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
    assert meta["format"] == "reid_srdl.gallery/1"
    assert meta["model"] == model_fingerprint(net)
    assert meta["settings"] == {
        "normalize": True,
        "flip": False,
        "precision": "fp32",
        "height": 16,
        "width": 8,
        "transform": "reid_test_transform",
    }
    fs = load_features(path)  # what reid-eval reads
    np.testing.assert_array_equal(fs.features, s.features)
    np.testing.assert_allclose(np.linalg.norm(fs.features, axis=1), 1.0, rtol=1e-5)  # normalize=True was used
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(p) for p in images] + ["g.npz"])


def test_load_uses_the_recorded_settings_and_refuses_other_ones(images, tmp_path):
    net = ColourNet()
    s = ReIDSearcher.from_images(net, images, height=16, width=8, normalize=True)
    path = str(tmp_path / "g.npz")
    s.save(path)
    again = ReIDSearcher.load(path, model=net)  # no options: the gallery's own (normalize, 16 x 8)
    q = again.embed_images([images[1]])
    np.testing.assert_allclose(np.linalg.norm(q), 1.0, rtol=1e-5)
    assert again.search(images[1], k=1)[0].indices.tolist() == [1]
    with pytest.raises(GalleryMismatchError, match="normalize: gallery True, query False"):
        ReIDSearcher.load(path, model=net, normalize=False)
    with pytest.raises(GalleryMismatchError, match="height: gallery 16, query 32"):
        ReIDSearcher.load(path, model=net, height=32)
    loose = ReIDSearcher.load(path, model=net, normalize=False, allow_mismatch=True)  # asked explicitly
    assert loose.embedder.settings["normalize"] is False


def test_load_with_another_model_names_both_sides(images, tmp_path):
    s = ReIDSearcher.from_images(ColourNet(seed=0), images, height=16, width=8)
    path = str(tmp_path / "g.npz")
    s.save(path)
    other = ColourNet(seed=1)
    with pytest.raises(GalleryMismatchError) as err:
        ReIDSearcher.load(path, model=other)
    msg = str(err.value)
    sha_built = model_fingerprint(ColourNet(seed=0))["weights_sha256"]
    sha_query = model_fingerprint(other)["weights_sha256"]
    assert sha_built[:12] in msg and sha_query[:12] in msg and "allow_mismatch=True" in msg and "\n" not in msg
    assert len(ReIDSearcher.load(path, model=other, allow_mismatch=True)) == 5


def test_a_gallery_without_a_model_record_is_refused_with_a_model(tmp_path):
    path = str(tmp_path / "f.npz")
    ReIDSearcher(np.eye(3), [1, 2, 3], [0, 0, 0]).save(path)
    with pytest.raises(GalleryMismatchError, match="records no model"):
        ReIDSearcher.load(path, model=ColourNet())
    assert len(ReIDSearcher.load(path, model=ColourNet(), allow_mismatch=True)) == 3


def test_image_query_of_another_dimension_is_one_clear_error(images, tmp_path):
    s = ReIDSearcher.from_images(ColourNet(out_dim=3), images, height=16, width=8)
    path = str(tmp_path / "g.npz")
    s.save(path)
    wide = ReIDSearcher.load(path, model=ColourNet(out_dim=5), allow_mismatch=True)
    with pytest.raises(GalleryMismatchError, match="the model gives 5-dimensional features but the gallery holds 3"):
        wide.search(images[0])


def test_failed_save_leaves_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "g.npz")
    s = ReIDSearcher(np.eye(2), [1, 2], [0, 1], paths=["a.jpg", "b.jpg"])
    s.save(path)
    before = open(path, "rb").read()
    s.add(np.ones((1, 2)), [3], [1], ["c.jpg"])

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        s.save(path)
    assert open(path, "rb").read() == before and os.listdir(tmp_path) == ["g.npz"]


# ----------------------------------------------------------------------------- exclusion
@pytest.mark.parametrize(
    "bad, hint",
    [
        ("c1", "file name c1 is camid 0"),
        (1.5, "got 1.5"),
        (True, "got True"),
        (["c2", "c3"], "file name c2 is camid 1"),
        ([0.5, 1.0], "got 0.5"),
    ],
)
def test_exclude_camid_types_are_checked(bad, hint):
    s = ReIDSearcher(np.arange(4.0).reshape(-1, 1), [1, 2, 3, 4], [0, 1, 0, 1])
    with pytest.raises(SearchError, match=hint):
        s.search(np.zeros((2, 1)), exclude_camid=bad)
    assert s.search(np.zeros(1), k=2, exclude_camid=np.int64(0))[0].indices.tolist() == [1, 3]


def test_exclude_pid_camid_is_the_evaluation_protocol():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((60, 5)).astype(np.float32)
    g_pids, g_cams = rng.integers(1, 8, 60), rng.integers(0, 3, 60)
    q = rng.standard_normal((9, 5)).astype(np.float32)
    q_pids, q_cams = rng.integers(1, 8, 9), rng.integers(0, 3, 9)
    s = ReIDSearcher(g, g_pids, g_cams)
    results = s.search(q, k=10, exclude_pid_camid=np.stack([q_pids, q_cams], axis=1))
    expected, _ = ranked_gallery(q, g, q_pids, g_pids, q_cams, g_cams, k=10)  # the metrics' own ranking
    assert [r.indices.tolist() for r in results] == expected.tolist()
    whole_camera = s.search(q, k=10, exclude_camid=q_cams)
    assert all(not np.isin(r.camids, [c]).any() for r, c in zip(whole_camera, q_cams))


# ----------------------------------------------------------------------------- calibration
def test_calibrated_threshold_and_decisions_survive_save_load(tmp_path):
    # The 1-D toy of tests/test_open_set.py without its junk item: impostors 1, 1, 2, 3 by hand.
    g, g_pids, g_cams = [[0.0], [2.0], [6.0], [9.0], [-1.0]], [1, 2, 1, 3, 0], [1, 1, 0, 1, 2]
    q, q_pids, q_cams = [[1.0], [5.0], [7.0], [12.0]], [1, 2, 1, 4], [0, 0, 2, 0]
    s = ReIDSearcher(g, g_pids, g_cams)
    cal = s.calibrate(q, q_pids, q_cams, far=0.5)
    assert cal.threshold == 1.0 and cal.impostor.tolist() == [1.0, 1.0, 2.0, 3.0]
    oracle = evaluate_open_set(q, g, q_pids, g_pids, q_cams, g_cams, fars=[0.5]).point(0.5)
    assert (cal.tar, cal.dir, cal.achieved_far) == (oracle.tar, oracle.dir, oracle.achieved_far)
    path = str(tmp_path / "g.npz")
    s.save(path)
    loaded = ReIDSearcher.load(path)
    r = loaded.search(np.array([[0.5], [20.0]]), k=2, threshold="calibrated")
    assert [x.decision for x in r] == ["match", "no match"] and r[0].threshold == 1.0
    assert "FAR 50%" in r[0].threshold_source and "4 labelled queries" in r[0].threshold_source
    assert r[0].accepted.tolist() == [True, False]  # 0.5 and 1.5 from 0.5 (items at 0 and -1)
    assert loaded.search(np.array([[4.5]]), k=1, far=0.75)[0].threshold == 2.0  # by hand: 3 of 4 impostors
    d = r[0].to_dict()
    assert d["decision"] == "match" and d["hits"][0]["camera"] == "c2" and d["hits"][0]["camid"] == 1


def test_threshold_errors():
    s = ReIDSearcher(np.eye(2), [1, 2], [0, 1])
    with pytest.raises(SearchError, match="no calibrated threshold"):
        s.search(np.zeros(2), threshold="calibrated")
    with pytest.raises(SearchError, match="threshold or far, not both"):
        s.search(np.zeros(2), threshold=1.0, far=0.1)
    with pytest.raises(SearchError, match="non-negative distance"):
        s.search(np.zeros(2), threshold=-1.0)


# ----------------------------------------------------------------------------- threads
def test_adds_while_searching_are_safe():
    rng = np.random.default_rng(0)
    index = NpzStore.from_arrays(rng.standard_normal((200, 16)), np.arange(200), np.zeros(200, int))
    errors = []

    def searcher():
        try:
            for _ in range(50):
                hits = index.search(rng.standard_normal((4, 16)), k=5)
                assert (hits.ids >= 0).all() and np.isfinite(hits.distances).all()
        except Exception as e:  # collected and asserted below
            errors.append(e)

    def adder():
        for i in range(50):
            index.add(np.full((2, 16), float(i)), [GalleryItem(f"add{i}", pid=1000 + i), GalleryItem(f"add{i}b")])

    threads = [threading.Thread(target=searcher) for _ in range(3)] + [threading.Thread(target=adder)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(index) == 300 and len(list(index.scan())[0][1]) == 300
