"""Training images decoded once and augmented as tensors give bit for bit the batches of the
file path (decode + PIL transforms at every step): whole batches, several epochs, with and
without workers, with random erasing, with identity batches.  The oracle is the file path
itself, built by the same build function with the cache turned off (data.cache_mb=0)."""

import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from reid_srdl.data.build import build_reid_data
from reid_srdl.data.decoded import DecodedImageDataset, cache_bytes, decoded_images_if_they_fit
from reid_srdl.data.indexed import ImageFileDataset, ImageReadError

pytestmark = pytest.mark.usefixtures("single_thread")


def bundle(root, cache_mb, workers=0, erasing=0.0, sampler="random", height=40, width=20, seed=3):
    return build_reid_data(
        ["market1501"],
        ["market1501"],
        root,
        synthetic=False,
        synthetic_ids=8,
        synthetic_seed=0,
        height=height,
        width=width,
        batch_size=8,
        test_batch_size=16,
        workers=workers,
        seed=seed,
        sampler=sampler,
        num_instances=2,
        random_erasing=erasing,
        cache_mb=cache_mb,
    )


def epochs_of(loader, epochs):
    out = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        out.append([tuple(t.clone() for t in batch) for batch in loader])
    return out


def assert_same_batches(a, b):
    assert len(a) == len(b) and all(len(x) == len(y) for x, y in zip(a, b))
    for epoch_a, epoch_b in zip(a, b):
        for batch_a, batch_b in zip(epoch_a, epoch_b):
            for ta, tb in zip(batch_a, batch_b):
                assert ta.dtype == tb.dtype and ta.shape == tb.shape
                assert torch.equal(ta, tb)


@pytest.mark.parametrize(
    "erasing, sampler, height, width",
    [(0.0, "random", 40, 20), (0.5, "random", 37, 19), (1.0, "identity", 64, 32)],
)
def test_cached_batches_equal_the_file_path(tiny_market_root, erasing, sampler, height, width):
    files = bundle(tiny_market_root, 0, erasing=erasing, sampler=sampler, height=height, width=width)
    cached = bundle(tiny_market_root, 4096, erasing=erasing, sampler=sampler, height=height, width=width)
    assert isinstance(files.train_loader.dataset.dataset, ImageFileDataset)
    assert isinstance(cached.train_loader.dataset.dataset, DecodedImageDataset)
    a, b = epochs_of(files.train_loader, 3), epochs_of(cached.train_loader, 3)
    assert_same_batches(a, b)
    assert not torch.equal(a[0][0][0], a[1][0][0])  # the epochs differ: augmentation is on
    # The test-transform copy of the training set (SRDL's stage-1 logits) shares the cache.
    assert_same_batches([list(files.train_eval_loader)], [list(cached.train_eval_loader)])
    assert cached.train_eval_loader.dataset.dataset.images is cached.train_loader.dataset.dataset.images


@pytest.mark.slow
def test_cached_batches_equal_the_file_path_with_workers(tiny_market_root):
    files = bundle(tiny_market_root, 0, workers=2, erasing=0.5)
    cached = bundle(tiny_market_root, 4096, workers=2, erasing=0.5)
    no_workers = bundle(tiny_market_root, 4096, workers=0, erasing=0.5)
    images = cached.train_loader.dataset.dataset.images
    assert not images.complete
    b = epochs_of(cached.train_loader, 3)
    assert images.complete  # filled in the main process before the workers started
    assert_same_batches(epochs_of(files.train_loader, 3), b)
    assert_same_batches(epochs_of(no_workers.train_loader, 3), b)


def test_a_set_over_the_budget_decodes_every_step(tiny_market_root, caplog):
    needed = cache_bytes(1000, 256, 128)
    assert needed == 1000 * 98304  # 3 x 256 x 128 bytes per image
    assert cache_bytes(12936, 256, 128) / 2**20 == pytest.approx(1212.75)  # Market-1501's training set
    with caplog.at_level(logging.INFO, logger="reid_srdl.data.decoded"):
        assert decoded_images_if_they_fit(["x.jpg"] * 1000, 256, 128, budget_mb=93) is None
    assert "need 94 MB, over data.cache_mb=93; decoding each step" in caplog.text
    assert decoded_images_if_they_fit(["x.jpg"] * 1000, 256, 128, budget_mb=94) is not None
    small = bundle(tiny_market_root, 1, height=256, width=128)  # the tiny set needs more than 1 MB
    assert isinstance(small.train_loader.dataset.dataset, ImageFileDataset)


def test_a_set_over_half_the_available_memory_decodes_every_step(monkeypatch, caplog):
    import reid_srdl.data.decoded as decoded

    monkeypatch.setattr(decoded, "available_memory", lambda: 150 * 2**20)
    with caplog.at_level(logging.INFO, logger="reid_srdl.data.decoded"):
        assert decoded_images_if_they_fit(["x.jpg"] * 1000, 256, 128, budget_mb=4096) is None  # 94 MB > 75
    assert "over half the 150 MB of memory available; decoding each step" in caplog.text
    monkeypatch.setattr(decoded, "available_memory", lambda: 200 * 2**20)
    assert decoded_images_if_they_fit(["x.jpg"] * 1000, 256, 128, budget_mb=4096) is not None


def test_a_corrupt_training_image_is_named_before_the_first_step(tiny_market_root, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tiny_market_root, root)
    data = bundle(str(root), 4096)
    victim = data.train_loader.dataset.dataset.images.paths[5]
    with open(victim, "r+b") as f:
        f.truncate(40)  # a JPEG cut in its header
    with pytest.raises(ImageReadError, match=os.path.basename(victim)):
        iter(data.train_loader)  # the cache fills when the loader starts, before any batch


def test_cached_pixels_are_the_pil_resize(tiny_market_root):
    data = bundle(tiny_market_root, 4096, height=37, width=19)
    images = data.train_loader.dataset.dataset.images
    images.fill(threads=2)
    for i in (0, 7, len(images.paths) - 1):
        with Image.open(images.paths[i]) as im:
            expected = torch.from_numpy(np.array(im.convert("RGB").resize((19, 37), Image.BILINEAR)))
        assert torch.equal(images[i], expected.permute(2, 0, 1))


def test_cache_mb_is_checked():
    from reid_srdl import load_config
    from reid_srdl.config import ConfigError

    assert load_config(None, []).data.cache_mb == 4096
    assert load_config(None, ["data.cache_mb=0"]).data.cache_mb == 0
    with pytest.raises(ConfigError, match="data.cache_mb"):
        load_config(None, ["data.cache_mb=-1"])
