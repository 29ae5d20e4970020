"""ReIDSearcher: docstring examples, search semantics, persistence, images through a model."""

import doctest
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import reid_srdl
import reid_srdl.api
from reid_srdl.api import ReIDSearcher
from reid_srdl.core.arrays import EvaluationInputError
from reid_srdl.core.precision import PrecisionError
from reid_srdl.search.errors import SearchError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


def test_docstring_examples_run():
    result = doctest.testmod(reid_srdl.api, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 8 and result.failed == 0


def test_lazy_top_level_export():
    assert reid_srdl.ReIDSearcher is ReIDSearcher


@pytest.fixture
def searcher():
    # 1-D gallery: positions 0..5, two cameras, with image paths
    feats = np.arange(6, dtype=np.float32).reshape(-1, 1)
    return ReIDSearcher(
        feats, pids=[10, 11, 10, 12, 11, 13], camids=[0, 1, 1, 0, 1, 0], paths=[f"g{i}.jpg" for i in range(6)]
    )


def test_search_returns_l2_distances_pids_camids_paths(searcher):
    (r,) = searcher.search(np.array([2.4]), k=3)
    assert r.indices.tolist() == [2, 3, 1]
    np.testing.assert_allclose(r.distances, [0.4, 0.6, 1.4], rtol=1e-6)  # L2, not squared
    assert r.pids.tolist() == [10, 12, 11] and r.camids.tolist() == [1, 0, 1]
    assert r.paths == ["g2.jpg", "g3.jpg", "g1.jpg"]


def test_search_many_queries_and_k_larger_than_gallery(searcher):
    results = searcher.search(torch.tensor([[0.0], [5.0]]), k=10)
    assert [len(r) for r in results] == [6, 6]
    assert results[0].indices.tolist() == [0, 1, 2, 3, 4, 5]
    assert results[1].indices.tolist() == [5, 4, 3, 2, 1, 0]


def test_exclude_same_camera_per_query(searcher):
    q = np.array([[2.4], [2.4]])
    r_cam0, r_cam1 = searcher.search(q, k=2, exclude_camid=[0, 1])
    assert r_cam0.indices.tolist() == [2, 1] and set(r_cam0.camids) == {1}
    assert r_cam1.indices.tolist() == [3, 0] and set(r_cam1.camids) == {0}
    (one,) = searcher.search(np.array([2.4]), k=2, exclude_camid=1)
    assert one.indices.tolist() == [3, 0]


def test_max_distance_means_no_match(searcher):
    near, far = searcher.search(np.array([[2.4], [40.0]]), k=4, max_distance=1.0)
    assert near.indices.tolist() == [2, 3]
    assert len(far) == 0 and far.paths == [] and far.distances.shape == (0,)


def test_ties_in_search_go_to_the_smaller_gallery_index():
    s = ReIDSearcher(np.array([[1.0], [-1.0], [1.0]]), pids=[1, 2, 3], camids=[0, 0, 0])
    assert s.search(np.array([0.0]), k=3)[0].indices.tolist() == [0, 1, 2]


def test_add_then_save_load_round_trip(searcher, tmp_path):
    searcher.add(np.array([[2.5]]), [99], [7], paths=["new.jpg"])
    assert len(searcher) == 7
    path = tmp_path / "index.npz"
    searcher.save(path)
    loaded = ReIDSearcher.load(path)
    assert len(loaded) == 7 and loaded.paths == searcher.paths
    np.testing.assert_array_equal(loaded.features, searcher.features)
    np.testing.assert_array_equal(loaded.pids, searcher.pids)
    q = np.array([[2.45], [0.2]])
    for a, b in zip(loaded.search(q, k=3, exclude_camid=0), searcher.search(q, k=3, exclude_camid=0)):
        assert a.indices.tolist() == b.indices.tolist() and a.paths == b.paths
    assert loaded.search(np.array([2.45]), k=1)[0].pids.tolist() == [99]
    assert os.listdir(tmp_path) == ["index.npz"]


def test_bad_input_errors(searcher):
    with pytest.raises(SearchError, match="query features have 2 dimensions but the gallery has 1"):
        searcher.search(np.zeros((1, 2)))
    with pytest.raises(EvaluationInputError, match="contains NaN"):
        searcher.search(np.array([np.nan]))
    with pytest.raises(SearchError, match="k must be a positive integer"):
        searcher.search(np.array([1.0]), k=0)
    with pytest.raises(SearchError, match="this gallery keeps paths"):
        searcher.add(np.array([[1.0]]), [1], [1])
    with pytest.raises(EvaluationInputError, match="exclude_camid: has 1 entries but there are 2"):
        searcher.search(np.zeros((2, 1)), exclude_camid=[0])
    with pytest.raises(SearchError, match="has no model"):
        searcher.search("person.jpg")


# ----------------------------------------------------------------------------- images
class MeanColourNet(nn.Module):
    """Features = per-channel mean of the (transformed) image; logits unused."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        feats = x.mean(dim=(2, 3))
        return self.head(feats), feats


def solid(tmp_path, name, rgb, size=(20, 10)):
    path = str(tmp_path / name)
    Image.new("RGB", (size[1], size[0]), rgb).save(path)
    return path


def test_from_images_default_transform_and_image_queries(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (250, 5, 0)]
    paths = [solid(tmp_path, f"{i}.png", c) for i, c in enumerate(colours)]
    net = MeanColourNet()
    s = ReIDSearcher.from_images(net, paths, pids=[1, 2, 3, 1], camids=[0, 0, 1, 1], height=16, width=8, batch_size=3)
    # default transform: reid_test_transform -> ImageNet normalisation of a solid colour
    expected = (np.array(colours) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(s.features, expected, rtol=1e-5, atol=1e-5)
    assert s.paths == paths and net.training  # modes restored after extraction

    query = solid(tmp_path, "q.png", (255, 0, 0))
    (r,) = s.search(query, k=2)
    assert r.indices.tolist() == [0, 3] and r.distances[0] == pytest.approx(0.0, abs=1e-5)
    (r,) = s.search([query], k=1, exclude_camid=0)
    assert r.paths == [paths[3]]

    s.add_images([solid(tmp_path, "new.png", (0, 250, 5))], pids=[2], camids=[2])
    assert len(s) == 5 and s.search(query, k=5)[0].indices.tolist()[-1] in (1, 4)

    path = tmp_path / "idx.npz"
    s.save(path)
    reloaded = ReIDSearcher.load(path, model=net, height=16, width=8)
    assert reloaded.search(query, k=1)[0].indices.tolist() == [0]


def test_unreadable_gallery_image_is_named(tmp_path):
    good = solid(tmp_path, "ok.png", (1, 2, 3))
    missing = str(tmp_path / "gone.png")
    with pytest.raises(EvaluationInputError, match="cannot read image .*gone.png"):
        ReIDSearcher.from_images(MeanColourNet(), [good, missing], height=16, width=8)


def test_unreadable_gallery_images_skipped_only_when_asked(tmp_path, caplog):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    paths = [solid(tmp_path, f"{i}.png", c) for i, c in enumerate(colours)]
    broken = str(tmp_path / "broken.jpg")
    with open(broken, "wb") as f:
        f.write(b"not a jpeg")
    gallery = [paths[0], broken, paths[1]]
    with pytest.raises(EvaluationInputError, match="broken.jpg.*skip_unreadable"):
        ReIDSearcher.from_images(MeanColourNet(), gallery, height=16, width=8)
    # workers=2: decoded in DataLoader processes, the error still reaches us by name.
    s = ReIDSearcher.from_images(
        MeanColourNet(), gallery, pids=[1, 2, 3], camids=[0, 1, 2], height=16, width=8, workers=2, skip_unreadable=True
    )
    assert "skipped: cannot read image" in caplog.text  # a warning of the library's logger
    # The rest stays aligned: item i keeps its own pid, camid, path and colour.
    assert s.pids.tolist() == [1, 3] and s.camids.tolist() == [0, 2] and s.paths == [paths[0], paths[1]]
    expected = (np.array(colours[:2]) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(s.features, expected, rtol=1e-5, atol=1e-5)
    s.add_images([broken, paths[2]], pids=[7, 8], camids=[5, 6], skip_unreadable=True)
    assert s.pids.tolist() == [1, 3, 8] and s.paths[-1] == paths[2]
    with pytest.raises(EvaluationInputError, match="broken.jpg"):
        s.search(broken)  # a query is never skipped silently


def test_fast_embedding_options_reach_the_extractor(tiny_market_root):
    import glob

    from reid_srdl.models import build_model

    torch.manual_seed(0)
    net = build_model("small_reid", 4, feature_dim=8).eval()
    paths = sorted(glob.glob(os.path.join(tiny_market_root, "market1501", "*", "bounding_box_test", "0*.jpg")))[:6]
    exact = ReIDSearcher.from_images(net, paths, height=64, width=32)
    # fast + fp32: BN folded into the convs and channels-last: the same numbers to 1e-4.
    fast = ReIDSearcher.from_images(net, paths, height=64, width=32, fast=True, precision="fp32")
    np.testing.assert_allclose(fast.features, exact.features, atol=1e-4)
    assert fast._embedding["fast"] is True and net.training is False
    with pytest.raises(PrecisionError, match="precision must be one of fp32, bf16, fp16, auto; got 'fp8'"):
        ReIDSearcher.from_images(net, paths, height=64, width=32, precision="fp8")


def test_load_checks_its_options(searcher, tmp_path):
    path = tmp_path / "idx.npz"
    searcher.save(path)
    with pytest.raises(SearchError, match="unknown embedding option.*hieght"):
        ReIDSearcher.load(path, model=MeanColourNet(), hieght=16)
    with pytest.raises(SearchError, match="embedding options need a model"):
        ReIDSearcher.load(path, height=16)
    with pytest.raises(EvaluationInputError, match="feature file not found"):
        ReIDSearcher.load(tmp_path / "absent.npz")


def test_from_a_checkpoint_path_uses_its_training_image_size(tiny_market_root, tmp_path):
    import glob

    from reid_srdl.core.checkpoint import save_model_file
    from reid_srdl.data.transforms import reid_test_transform
    from reid_srdl.models import build_model

    torch.manual_seed(0)
    net = build_model("small_reid", 4, feature_dim=8).eval()
    ckpt = str(tmp_path / "final.pt")
    save_model_file(net, ckpt, task="reid", height=64, width=32)
    paths = sorted(glob.glob(os.path.join(tiny_market_root, "market1501", "*", "bounding_box_test", "0*.jpg")))[:5]
    s = ReIDSearcher.from_images(ckpt, paths)
    # Independent: the same network on the same images resized to the trained 64 x 32.
    tf = reid_test_transform(64, 32)
    with torch.no_grad():
        expected = net(torch.stack([tf(Image.open(p).convert("RGB")) for p in paths]))[1].numpy()
    np.testing.assert_allclose(s.features, expected, atol=1e-5)
    (hit,) = s.search(paths[2], k=1)
    assert hit.indices.tolist() == [2] and hit.distances[0] == pytest.approx(0.0, abs=1e-3)
    # The same from a saved index: the checkpoint path stands for the model there too.
    s.save(tmp_path / "gallery.npz")
    again = ReIDSearcher.load(tmp_path / "gallery.npz", model=ckpt)
    assert again.search(paths[4], k=1)[0].indices.tolist() == [4]
