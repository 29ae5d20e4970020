"""build_data: the DataBundle contract the trainer relies on, on tiny fixtures."""

import dataclasses
import os
import re
import shutil

import numpy as np
import pytest
import torch
from fixtures_data import write_cifar10, write_fashion_mnist
from tiny_runs import TINY_MARKET
from torch.utils.data import SequentialSampler

import reid_srdl.data.build as build_module
from reid_srdl.config import DataConfig
from reid_srdl.data import DataBundle, ImageReadError, ReIDSplit, build_data, default_root
from reid_srdl.data.indexed import SeededSampler

H, W = 32, 16
_NAME = re.compile(r"^(-1|\d{4})_c(\d)")


def _listing(root, folder):
    """(path, pid, camid) of a Market folder, parsed here independently of the library."""
    data_dir = os.path.join(root, "market1501", "Market-1501-v15.09.15", folder)
    out = []
    for name in sorted(os.listdir(data_dir)):
        pid, cam = map(int, _NAME.match(name).groups())
        out.append((os.path.join(data_dir, name), pid, cam - 1))
    return out


def _reid_cfg(root, **kw):
    base = dict(
        name="market1501", root=root, synthetic=False, height=H, width=W, batch_size=8, test_batch_size=16, workers=0
    )
    base.update(kw)
    return DataConfig(**base)


def _all_batches(loader):
    batches = list(loader)
    return [torch.cat([b[i] for b in batches]) for i in range(len(batches[0]))]


def test_reid_bundle_contract(tiny_market_root):
    bundle = build_data(_reid_cfg(tiny_market_root))
    assert isinstance(bundle, DataBundle)
    train = [s for s in _listing(tiny_market_root, "bounding_box_train") if s[1] > 0]
    label_of = {pid: i for i, pid in enumerate(sorted({s[1] for s in train}))}
    assert (bundle.task, bundle.name, bundle.in_channels) == ("reid", "market1501", 3)
    assert bundle.num_classes == TINY_MARKET["num_ids"] // 2 == len(label_of)
    assert bundle.num_train == len(train)
    assert bundle.test_loader is None

    images, labels, indices = next(iter(bundle.train_loader))
    assert images.shape == (8, 3, H, W) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and indices.dtype == torch.int64
    assert 0 <= labels.min() and labels.max() < bundle.num_classes
    assert isinstance(bundle.train_loader.sampler, SeededSampler)
    assert bundle.train_loader.drop_last == (bundle.num_train >= 16)

    images, labels, indices = _all_batches(bundle.train_eval_loader)
    assert isinstance(bundle.train_eval_loader.sampler, SequentialSampler)
    assert indices.tolist() == list(range(bundle.num_train))
    assert labels.tolist() == [label_of[pid] for _p, pid, _c in train]
    assert images.shape == (bundle.num_train, 3, H, W)


def test_reid_query_gallery_multi_query_splits(tiny_market_root):
    bundle = build_data(_reid_cfg(tiny_market_root))
    query = _listing(tiny_market_root, "query")
    gallery = [s for s in _listing(tiny_market_root, "bounding_box_test") if s[1] != -1]
    gt_bbox = _listing(tiny_market_root, "gt_bbox")  # all of a query identity and camera here
    for split, expected in ((bundle.query, query), (bundle.gallery, gallery), (bundle.multi_query, gt_bbox)):
        assert isinstance(split, ReIDSplit)
        assert split.paths == [s[0] for s in expected]
        assert split.pids.dtype == np.int64 and split.camids.dtype == np.int64
        assert split.pids.tolist() == [s[1] for s in expected]
        assert split.camids.tolist() == [s[2] for s in expected]
        images, pids, camids, indices = _all_batches(split.loader)
        assert images.shape == (len(expected), 3, H, W)
        assert pids.tolist() == split.pids.tolist() and camids.tolist() == split.camids.tolist()
        assert indices.tolist() == list(range(len(expected)))
    assert 0 in bundle.gallery.pids and -1 not in bundle.gallery.pids
    assert bundle.multi_query.paths and all(p.endswith("_00.jpg") for p in bundle.multi_query.paths)


def test_multi_query_keeps_only_query_identity_cameras(tmp_path):
    from fixtures_data import write_market_tree

    write_market_tree(str(tmp_path))
    bundle = build_data(_reid_cfg(str(tmp_path), batch_size=2))
    # gt_bbox holds 6 boxes; 0044 has no query, so 5 remain (20/c1 x2, 20/c4, 31/c2 x2).
    assert [os.path.basename(p) for p in bundle.multi_query.paths] == [
        "0020_c1s1_001001_00.jpg",
        "0020_c1s1_001011_00.jpg",
        "0020_c4s1_001101_00.jpg",
        "0031_c2s1_001201_00.jpg",
        "0031_c2s1_001221_00.jpg",
    ]
    assert (bundle.num_train, bundle.num_classes) == (5, 3)
    assert bundle.train_loader.drop_last is True  # 5 >= 2 * 2
    assert len(bundle.train_loader) == 2


def test_tiny_set_still_gives_a_batch(tiny_market_root):
    bundle = build_data(_reid_cfg(tiny_market_root, batch_size=1000))
    assert bundle.train_loader.drop_last is False
    ((images, labels, indices),) = list(bundle.train_loader)
    assert len(images) == bundle.num_train
    assert sorted(indices.tolist()) == list(range(bundle.num_train))


def test_synthetic_is_written_when_absent(tmp_path):
    root = str(tmp_path / "data")
    bundle = build_data(_reid_cfg(root, synthetic=True, synthetic_ids=4, synthetic_seed=1))
    assert os.path.isfile(os.path.join(root, "market1501", "Market-1501-v15.09.15", "synthetic.json"))
    assert bundle.num_classes == 2


def test_reid_without_data_and_without_synthetic_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Market-1501 data under"):
        build_data(_reid_cfg(str(tmp_path)))


def test_train_subset_is_refused_for_reid(tiny_market_root):
    with pytest.raises(ValueError, match="data.train_subset is for classification only"):
        build_data(_reid_cfg(tiny_market_root, train_subset=5))


def test_corrupt_image_is_named_when_loading(tiny_market_root, tmp_path):
    root = str(tmp_path)
    shutil.copytree(os.path.join(tiny_market_root, "market1501"), os.path.join(root, "market1501"))
    victim = _listing(root, "bounding_box_train")[2][0]
    with open(victim, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    bundle = build_data(_reid_cfg(root))
    with pytest.raises(ImageReadError, match=re.escape(victim)):
        list(bundle.train_eval_loader)


# --------------------------------------------------------------------------- classification
CIFAR_LABELS = [[3, 1], [4], [1, 5, 9], [0], [2, 2]]
FLAT = [3, 1, 4, 1, 5, 9, 0, 2, 2]


def _cifar_cfg(root, **kw):
    base = dict(name="cifar10", root=root, batch_size=4, test_batch_size=5, workers=0)
    base.update(kw)
    return DataConfig(**base)


def test_cifar10_bundle(tmp_path):
    write_cifar10(str(tmp_path), CIFAR_LABELS, [7, 8, 6])
    bundle = build_data(_cifar_cfg(str(tmp_path)))
    assert (bundle.task, bundle.name, bundle.num_classes, bundle.in_channels, bundle.num_train) == (
        "classification",
        "cifar10",
        10,
        3,
        9,
    )
    assert bundle.query is None and bundle.gallery is None and bundle.multi_query is None
    images, labels, indices = next(iter(bundle.train_loader))
    assert images.shape == (4, 3, 32, 32) and labels.dtype == torch.int64 and indices.dtype == torch.int64
    assert bundle.train_loader.drop_last is True  # 9 >= 2 * 4
    images, labels, indices = _all_batches(bundle.train_eval_loader)
    assert indices.tolist() == list(range(9)) and labels.tolist() == FLAT
    # The eval copy uses the test transform (no crop, no flip): pixel (0, 0) of sample 4 is
    # (5, 101, 200) normalised with the CIFAR-10 statistics.
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    expected = [(v / 255 - m) / s for v, m, s in zip((5, 101, 200), mean, std)]
    assert torch.allclose(images[4, :, 0, 0], torch.tensor(expected), atol=1e-5)
    images, labels, indices = _all_batches(bundle.test_loader)
    assert images.shape == (3, 3, 32, 32) and labels.tolist() == [7, 8, 6] and indices.tolist() == [0, 1, 2]


def test_train_subset_is_a_fixed_seed_random_subset(tmp_path):
    write_cifar10(str(tmp_path), CIFAR_LABELS, [7])

    def subset_labels(seed):
        bundle = build_data(_cifar_cfg(str(tmp_path), train_subset=4), seed=seed)
        assert bundle.num_train == 4
        _images, labels, indices = _all_batches(bundle.train_eval_loader)
        assert indices.tolist() == [0, 1, 2, 3]
        # Same samples in the shuffled loader as in the eval loader.
        train_labels = sorted(torch.cat([b[1] for b in bundle.train_loader]).tolist())
        assert train_labels == sorted(labels.tolist())
        return labels.tolist()

    from reid_srdl.core.seeding import TRAIN_SUBSET, derive_seed

    for seed in (0, 1):
        # The subset has its own random stream, derived from (seed, "data.subset").
        keep = np.sort(np.random.default_rng(derive_seed(seed, TRAIN_SUBSET)).choice(9, size=4, replace=False))
        assert subset_labels(seed) == [FLAT[i] for i in keep]
    assert subset_labels(0) == subset_labels(0)
    with pytest.raises(ValueError, match="train_subset=10 is larger than the 9 training samples"):
        build_data(_cifar_cfg(str(tmp_path), train_subset=10))


def test_fashion_mnist_bundle_with_a_worker(tmp_path):
    train = np.zeros((5, 28, 28), np.uint8)
    write_fashion_mnist(str(tmp_path), train, [1, 2, 3, 4, 5], np.zeros((2, 28, 28), np.uint8), [6, 7], gz=False)
    bundle = build_data(
        DataConfig(name="fashion_mnist", root=str(tmp_path), batch_size=2, test_batch_size=4, workers=1)
    )
    assert (bundle.in_channels, bundle.num_classes, bundle.num_train) == (1, 10, 5)
    images, labels, indices = next(iter(bundle.test_loader))
    assert images.shape == (2, 1, 28, 28) and labels.tolist() == [6, 7] and indices.tolist() == [0, 1]
    assert len(list(bundle.train_loader)) == 2  # 5 >= 2 * 2: the last, short batch is dropped


def test_fashion_mnist_upscaled_for_an_imagenet_network(tmp_path):
    # A 28x28 image with one bright 2x2 block: resized to 56x56 (factor 2) it is a 4x4 block.
    test = np.zeros((2, 28, 28), np.uint8)
    test[:, 10:12, 20:22] = 255
    write_fashion_mnist(str(tmp_path), test, [1, 2], test, [6, 7], gz=False)
    cfg = DataConfig(name="fashion_mnist", root=str(tmp_path), batch_size=2, test_batch_size=2, workers=0)
    bundle = build_data(dataclasses.replace(cfg, image_size=56))
    images, labels, _ = next(iter(bundle.test_loader))
    assert images.shape == (2, 1, 56, 56) and labels.tolist() == [6, 7]
    # Bilinear by 2: output row y reads source row (y + 0.5) / 2 - 0.5, so rows 19 (9.25) to 24
    # (11.75) touch source rows 10-11, rows 18 (8.75) and 25 (12.25) do not; columns likewise.
    bright = (images[0, 0] > images[0, 0].min() + 1e-3).nonzero()
    assert bright.min(0).values.tolist() == [19, 39] and bright.max(0).values.tolist() == [24, 44]
    assert next(iter(bundle.train_loader))[0].shape == (2, 1, 56, 56)  # the augmented batch too
    from reid_srdl.data.transforms import classification_transforms

    train_tf, _ = classification_transforms("fashion_mnist", 56)
    crop = next(t for t in train_tf.transforms if type(t).__name__ == "RandomCrop")
    assert crop.size == (56, 56) and crop.padding == 4  # the 2-pixel padding of 28, scaled by 2
    with pytest.raises(ValueError, match="data.image_size must be >= 0"):
        build_data(dataclasses.replace(cfg, image_size=-1))


def test_image_size_is_for_classification_only(tiny_market_root):
    with pytest.raises(ValueError, match="data.image_size is for classification sets; re-id images are resized"):
        build_data(DataConfig(name="market1501", root=tiny_market_root, synthetic=False, image_size=64))


def test_default_roots():
    assert default_root("fashion_mnist") == "/usr/share/datasets/fashion-mnist"
    assert default_root("imagenet") == os.path.join("datasets", "imagenet")
    assert default_root("cifar10") == default_root("market1501") == "datasets"


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"), reason="no system Fashion-MNIST")
def test_empty_root_means_the_default_root():
    bundle = build_data(DataConfig(name="fashion_mnist", root="", train_subset=10, workers=0), seed=3)
    assert (bundle.num_train, len(bundle.test_loader.dataset)) == (10, 10000)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(name="mnist"), "data.name='mnist' is not one of"),
        (dict(workers=-2), r"data.workers must be >= 0 \(or -1 = auto\), got -2"),
        (dict(train_subset=-1), "data.train_subset must be >= 0"),
        (dict(batch_size=0), "data.batch_size"),
    ],
)
def test_bad_config_values(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        build_data(_cifar_cfg(str(tmp_path), **kw))


@pytest.mark.parametrize(
    "setting, device, cores, expected",
    [
        (-1, "cpu", 2, 0),  # a 2-core CPU run: the step already uses every core
        (-1, "cpu", 1, 0),
        (-1, "cpu", 8, 2),
        (-1, "cuda", 2, 2),  # decoding beside a GPU step costs the step nothing
        (3, "cpu", 2, 3),  # a number is taken as given
        (0, "cuda", 8, 0),
    ],
)
def test_auto_loader_workers(monkeypatch, setting, device, cores, expected):
    monkeypatch.setattr(build_module, "usable_cores", lambda: cores)
    assert build_module.loader_workers(setting, device) == expected


def test_auto_workers_reach_the_loaders(monkeypatch, tiny_market_root):
    monkeypatch.setattr(build_module, "usable_cores", lambda: 2)
    cfg = _reid_cfg(tiny_market_root, workers=-1)
    on_cpu = build_data(cfg, seed=0)
    assert on_cpu.train_loader.num_workers == 0 and cfg.workers == -1  # the config is not changed
    monkeypatch.setattr(build_module, "usable_cores", lambda: 4)
    assert build_data(cfg, seed=0).train_loader.num_workers == 2


def _epoch(loader, epoch):
    loader.sampler.set_epoch(epoch)
    return _all_batches(loader)


def test_training_order_and_augmentation_do_not_depend_on_the_workers(tiny_market_root):
    """Per-sample seeds from (run seed, epoch, index): 0 workers, 2 persistent workers and
    a fresh loader (a resumed run) give the same batches, bit for bit."""
    in_main = build_data(_reid_cfg(tiny_market_root, workers=0), seed=4).train_loader
    in_workers = build_data(_reid_cfg(tiny_market_root, workers=2), seed=4).train_loader
    assert in_workers.persistent_workers and not in_main.persistent_workers
    rng_before = torch.get_rng_state()
    epochs = [_epoch(in_main, e) for e in (0, 1)]
    # Order and augmentation used no global randomness: the only draws are the DataLoader's
    # own worker base seed, one per iterator.
    after = torch.get_rng_state()
    torch.set_rng_state(rng_before)
    for _ in range(2):
        torch.empty((), dtype=torch.int64).random_()
    assert torch.equal(after, torch.get_rng_state())
    for e in (0, 1):
        for ours, theirs in zip(epochs[e], _epoch(in_workers, e)):  # workers kept alive across epochs
            assert torch.equal(ours, theirs)
    resumed = build_data(_reid_cfg(tiny_market_root, workers=2), seed=4).train_loader
    for ours, theirs in zip(epochs[1], _epoch(resumed, 1)):
        assert torch.equal(ours, theirs)
    # Epochs differ in order and, for the same sample, in augmentation; another seed differs.
    (img0, _, idx0), (img1, _, idx1) = epochs
    assert not torch.equal(idx0, idx1)
    order0, order1 = torch.argsort(idx0), torch.argsort(idx1)
    assert not torch.equal(img0[order0], img1[order1])
    other = _epoch(build_data(_reid_cfg(tiny_market_root, workers=0), seed=5).train_loader, 0)
    assert not torch.equal(other[2], idx0)


def test_a_seeded_key_fixes_one_sample_augmentation(tiny_market_root):
    dataset = build_data(_reid_cfg(tiny_market_root), seed=0).train_loader.dataset
    a, b, c = dataset[(3, 11)], dataset[(3, 11)], dataset[(3, 12)]
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:] == (a[1], 3)
    assert not torch.equal(a[0], c[0])  # flip / crop drawn from another seed
    assert dataset[3][2] == 3  # plain integer keys still work (no seeding)
