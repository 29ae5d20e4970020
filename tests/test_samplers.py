"""The identity sampler: P x K structure, replacement for small identities, and the project's
guarantees (same batches for any number of workers, after a resume, across DDP ranks)."""

import collections
import os

import pytest
import torch

from reid_srdl import load_config
from reid_srdl.config import ConfigError, DataConfig
from reid_srdl.data import build_data
from reid_srdl.data.build import distributed_train_loader
from reid_srdl.data.samplers import IdentitySampler

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# id 10: 5 images (one sits each epoch out), id 20: 4, id 30: 2 (< K: drawn with
# replacement), id 40: 8 (two groups).  Groups of K=4: 1 + 1 + 1 + 2 = 5.
LABELS = [10] * 5 + [20] * 4 + [30] * 2 + [40] * 8
K, P = 4, 2


def _batches(sampler, epoch, batch_size):
    sampler.set_epoch(epoch)
    keys = list(sampler)
    return [keys[i : i + batch_size] for i in range(0, len(keys), batch_size)]


def test_batches_are_p_identities_times_k_images():
    sampler = IdentitySampler(LABELS, batch_size=P * K, num_instances=K, seed=0)
    for epoch in range(20):
        batches = _batches(sampler, epoch, P * K)
        # 5 groups, P = 2: whichever pair goes first, two batches can be made and one group
        # is left with a single identity (worked out by hand in the comment above LABELS).
        assert len(batches) == 2 and len(sampler) == 16
        used = collections.defaultdict(list)
        for batch in batches:
            counts = collections.Counter(LABELS[i] for i, _seed in batch)
            assert len(counts) == P and set(counts.values()) == {K}
            for i, _seed in batch:
                used[LABELS[i]].append(i)
        for pid, indices in used.items():
            own = [i for i, label in enumerate(LABELS) if label == pid]
            assert set(indices) <= set(own)
            if pid == 30:  # two images fill a group of four: drawn with replacement
                assert len(indices) == K and len(set(indices)) <= 2
            else:  # enough images: none twice in an epoch
                assert len(set(indices)) == len(indices) and len(indices) % K == 0


def test_identity_with_enough_images_gives_as_many_groups_as_torchreid():
    """Per epoch, torchreid's RandomIdentitySampler uses floor(n / K) groups of an identity
    with n >= K images (when the epoch does not end first); one group per identity here."""
    from torchreid.reid.data.sampler import RandomIdentitySampler

    labels = [pid for pid in range(6) for _ in range(5)]  # 6 identities x 5 images
    data = [(f"{i}.jpg", pid, 0) for i, pid in enumerate(labels)]
    theirs = list(RandomIdentitySampler(data, batch_size=8, num_instances=4))
    ours = [i for i, _ in IdentitySampler(labels, 8, 4, seed=1)]
    assert len(ours) == len(theirs) == 24  # 6 groups -> 3 batches of 2 identities
    for sequence in (ours, theirs):
        assert sorted(collections.Counter(labels[i] for i in sequence).values()) == [4] * 6


def test_repeated_draws_of_one_image_get_different_augmentation_seeds():
    sampler = IdentitySampler([0, 1, 1, 1, 1], batch_size=8, num_instances=4, seed=3)
    keys = list(sampler)
    lone = [seed for index, seed in keys if index == 0]
    assert len(lone) == 4 and len(set(lone)) == 4
    # An image drawn once has the seed of a first draw: the same one for every image.
    assert len({seed for index, seed in keys if index != 0}) == 1 and keys[-1][1] in lone


def test_order_comes_from_seed_and_epoch_only():
    a = IdentitySampler(LABELS, P * K, K, seed=5)
    epochs = [_batches(a, e, P * K) for e in range(4)]
    fresh = IdentitySampler(LABELS, P * K, K, seed=5)  # a resumed run starts at epoch 3
    assert _batches(fresh, 3, P * K) == epochs[3]
    assert len({str(e) for e in epochs}) == 4  # every epoch its own batches
    assert _batches(IdentitySampler(LABELS, P * K, K, seed=6), 0, P * K) != epochs[0]
    # Without set_epoch, each pass is the next epoch.
    again = IdentitySampler(LABELS, P * K, K, seed=5)
    assert [list(again) for _ in range(2)] == [sum(epochs[0], []), sum(epochs[1], [])]
    # No global RNG used.
    state = torch.get_rng_state()
    list(IdentitySampler(LABELS, P * K, K, seed=5))
    assert torch.equal(state, torch.get_rng_state())


def test_two_ranks_together_see_the_one_process_batches():
    labels = [pid for pid in range(10) for _ in range(6)]
    one = IdentitySampler(labels, batch_size=16, num_instances=4, seed=2)
    ranks = [one.shard(r, 2) for r in range(2)]
    for epoch in (0, 1):
        whole = _batches(one, epoch, 16)
        shares = [_batches(r, epoch, 8) for r in ranks]
        assert len(shares[0]) == len(shares[1]) == len(whole) == len(ranks[0]) // 8
        for batch, first, second in zip(whole, *shares):
            assert first + second == batch
            # Each rank holds whole identities: its own triplet mining has K positives.
            assert set(collections.Counter(labels[i] for i, _ in first).values()) == {4}


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(batch_size=8, num_instances=3), "must divide data.batch_size=8"),
        (dict(batch_size=40, num_instances=4), "needs P = data.batch_size / data.num_instances = 10 identities"),
    ],
)
def test_impossible_settings_are_one_line(kw, message):
    with pytest.raises(ConfigError, match=message):
        IdentitySampler(LABELS, seed=0, **kw)


def test_each_process_must_hold_whole_identities():
    with pytest.raises(ConfigError, match="must hold whole identities"):
        IdentitySampler(LABELS, batch_size=8, num_instances=4, seed=0, rank=0, world_size=4)


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.num_instances=16", "data.num_instances \\(K=16\\) must be between 1 and data.batch_size \\(8\\)"),
        ("data.num_instances=3", "and divide it"),
    ],
)
def test_config_refuses_k_larger_than_or_not_dividing_the_batch(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["data.batch_size=8", "data.sampler=identity", override])


# ---------------------------------------------------------------- through the real loaders
def _cfg(root, **kw):
    base = dict(
        name="market1501",
        root=root,
        synthetic=False,
        height=32,
        width=16,
        batch_size=8,
        test_batch_size=16,
        workers=0,
        sampler="identity",
        num_instances=4,
        random_erasing=0.5,
    )
    base.update(kw)
    return DataConfig(**base)


def _epoch(loader, epoch):
    loader.sampler.set_epoch(epoch)
    return list(loader)


def _same(a, b):
    assert len(a) == len(b) > 0
    for (xa, ya, ia), (xb, yb, ib) in zip(a, b):
        assert torch.equal(ia, ib) and torch.equal(ya, yb) and torch.equal(xa, xb)


def test_loader_batches_do_not_depend_on_workers_or_resume(tiny_market_root):
    in_main = build_data(_cfg(tiny_market_root), seed=4).train_loader
    epochs = [_epoch(in_main, e) for e in (0, 1)]
    for _images, labels, _indices in epochs[0]:
        assert sorted(collections.Counter(labels.tolist()).values()) == [4, 4]
    in_workers = build_data(_cfg(tiny_market_root, workers=2), seed=4).train_loader
    assert in_workers.persistent_workers
    for e in (0, 1):
        _same(epochs[e], _epoch(in_workers, e))
    _same(epochs[1], _epoch(build_data(_cfg(tiny_market_root), seed=4).train_loader, 1))  # resumed


def test_distributed_loaders_split_each_global_batch(tiny_market_root):
    single = build_data(_cfg(tiny_market_root), seed=1).train_loader
    ranks = [distributed_train_loader(single, r, 2, seed=1) for r in (0, 1)]
    whole = _epoch(single, 0)
    shares = [_epoch(r, 0) for r in ranks]
    assert len(shares[0]) == len(shares[1]) == len(whole)
    for batch, first, second in zip(whole, *shares):
        assert torch.equal(torch.cat([first[2], second[2]]), batch[2])
        assert torch.equal(torch.cat([first[0], second[0]]), batch[0])  # same augmentation too


def test_random_erasing_erases_with_the_imagenet_mean(tiny_market_root):
    from reid_srdl.data.transforms import IMAGENET_MEAN

    erased = build_data(_cfg(tiny_market_root, random_erasing=1.0), seed=0).train_loader.dataset
    plain = build_data(_cfg(tiny_market_root, random_erasing=0.0), seed=0).train_loader.dataset
    a, b = erased[(0, 7)][0], plain[(0, 7)][0]
    changed = (a != b).any(dim=0)
    assert 0.02 * a[0].numel() <= int(changed.sum()) <= 0.4 * a[0].numel() + 1
    for c, mean in enumerate(IMAGENET_MEAN):
        assert torch.allclose(a[c][changed], torch.tensor(mean))


def test_too_few_identities_is_one_line_from_the_cli(tiny_market_root, tmp_path, capsys):
    from reid_srdl.cli import train as train_cli

    args = [
        f"data.root={tiny_market_root}",
        "data.synthetic=false",
        "data.height=32",
        "data.width=16",
        "data.batch_size=16",
        "data.sampler=identity",
        "data.num_instances=2",
        "data.workers=0",
        "train.progress=false",
        "train.precision=fp32",
        f"train.output_dir={tmp_path}",
        "train.run_name=few",
    ]
    assert train_cli.main(args) == 2
    err = capsys.readouterr().err
    assert "data.num_instances = 8 identities per batch, but the training set has only 4" in err
    assert "Traceback" not in err and not os.path.exists(tmp_path / "few")
