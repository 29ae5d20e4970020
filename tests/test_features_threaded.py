"""The standard extraction path decodes image files in threads and normalises whole batches:
bit for bit the images and features of ``reid_test_transform`` through a DataLoader (the
oracle: the very transform, per image, then default_collate), unreadable files handled
alike; and ``precision=auto`` says what it chose and why."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from reid_srdl.core import precision as prec
from reid_srdl.data.transforms import reid_test_transform
from reid_srdl.inference.features import (
    UnreadableImageError,
    decoded_batches,
    embed_image_files,
    image_files_loader,
)
from reid_srdl.inference.options import ExtractionOptions
from reid_srdl.models import build_model
from reid_srdl.search.embedder import Embedder

pytestmark = pytest.mark.usefixtures("single_thread")


def write_images(folder, n, seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        h, w = int(rng.integers(20, 90)), int(rng.integers(10, 45))  # sizes vary: resize up and down
        path = folder / f"{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("height, width, batch", [(64, 32, 4), (37, 19, 7)])
def test_decoded_batches_equal_the_transform_through_a_dataloader(tmp_path, height, width, batch):
    paths = write_images(tmp_path, 11)
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    paths.insert(5, str(tmp_path / "bad.jpg"))
    ours = list(decoded_batches(paths, height, width, batch_size=batch, threads=3))
    theirs = list(image_files_loader(paths, reid_test_transform(height, width), batch_size=batch))
    assert len(ours) == len(theirs) == -(-len(paths) // batch)
    for (im_a, idx_a, err_a), (im_b, idx_b, err_b) in zip(ours, theirs):
        assert torch.equal(idx_a, idx_b) and err_a == err_b
        assert im_a.dtype == torch.float32 and im_a.shape == im_b.shape
        assert torch.equal(im_a, im_b)
        assert im_a.is_contiguous(memory_format=torch.channels_last)  # what the fast path runs on
    assert sum(len(e) for _, _, e in ours) == 1 and "bad.jpg" in ours[5 // batch][2][0]


@pytest.mark.parametrize("fast", [False, True])
def test_standard_path_features_equal_the_transform_path(tmp_path, fast):
    paths = write_images(tmp_path, 9, seed=1)
    torch.manual_seed(0)
    net = build_model("small_reid", num_classes=3, feature_dim=16).eval()
    kw = dict(batch_size=4, progress=False, fast=fast)
    a, kept_a = embed_image_files(net, paths, None, ExtractionOptions(height=64, width=32, **kw))
    b, kept_b = embed_image_files(net, paths, reid_test_transform(64, 32), ExtractionOptions(**kw))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(kept_a, kept_b)
    # The Embedder takes the threaded path with its default transform, and gives the same.
    e = Embedder(net, ExtractionOptions(height=64, width=32, batch_size=4, fast=fast))
    np.testing.assert_array_equal(e.embed_files(paths)[0], a)


def test_standard_path_unreadable_files(tmp_path):
    paths = write_images(tmp_path, 5)
    paths[2] = str(tmp_path / "missing.jpg")
    net = build_model("small_reid", num_classes=3, feature_dim=8).eval()
    with pytest.raises(UnreadableImageError, match="missing.jpg"):
        embed_image_files(net, paths, None, ExtractionOptions(height=32, width=16))
    feats, kept = embed_image_files(net, paths, None, ExtractionOptions(height=32, width=16), skip_unreadable=True)
    assert kept.tolist() == [0, 1, 3, 4] and feats.shape == (4, 8)
    with pytest.raises(UnreadableImageError, match="none of the 1 images could be read"):
        embed_image_files(net, [paths[2]], None, ExtractionOptions(height=32, width=16), skip_unreadable=True)


@pytest.mark.parametrize(
    "native, bf16_rate, fp32_rate, auto, why",
    [
        (False, None, None, "fp32", "no native bf16 on this CPU"),
        (True, 1.37e11, 2.59e11, "fp32", "bf16 GEMM 137 GFLOP/s against 259 in fp32: 0.53x, under the 1.5x margin"),
        (True, 3.0e11, 1.0e11, "bf16", "bf16 GEMM 300 GFLOP/s against 100 in fp32: 3.00x, at least the 1.5x margin"),
    ],
)
def test_auto_precision_says_what_it_chose_and_why(monkeypatch, caplog, native, bf16_rate, fp32_rate, auto, why):
    rates = {torch.bfloat16: bf16_rate, torch.float32: fp32_rate}
    monkeypatch.setattr(prec, "cpu_supports_bf16", lambda: native)
    monkeypatch.setattr(prec, "gemm_rate", lambda dtype: rates[dtype])
    prec.cpu_bf16_pays.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger="reid_srdl.core.precision"):
            decision = prec.bf16_decision()
        assert decision["auto"] == auto and why in decision["why"] and decision["native"] is native
        assert f"precision auto -> {auto}" in caplog.text and why in caplog.text
        assert prec.resolve_precision("auto", "cpu") == auto
    finally:
        prec.cpu_bf16_pays.cache_clear()


def test_embedder_folds_its_network_once(tmp_path, monkeypatch):
    import reid_srdl.inference.features as features

    paths = write_images(tmp_path, 6, seed=2)
    torch.manual_seed(0)
    net = build_model("small_reid", num_classes=3, feature_dim=16).eval()
    expected, _ = embed_image_files(net, paths, None, ExtractionOptions(height=64, width=32, batch_size=4, fast=True))
    copies = []
    real = features.inference_copy
    monkeypatch.setattr(features, "inference_copy", lambda *a, **k: copies.append(1) or real(*a, **k))
    e = Embedder(net, ExtractionOptions(height=64, width=32, batch_size=4, fast=True))
    for _ in range(3):  # e.g. three uploads to a search server
        np.testing.assert_array_equal(e.embed_files(paths)[0], expected)
    np.testing.assert_array_equal(e.embed_pil([Image.open(p).convert("RGB") for p in paths]), expected)
    assert len(copies) == 1
    assert net.training is False and any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # untouched
