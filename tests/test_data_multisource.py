"""Several training sources: label and camera offsets (against torchreid's own ``Dataset.__add__``
and a hand-made example), and the bundles build_data makes for sources and targets."""

import os
import warnings

import numpy as np
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    from torchreid.reid.data.datasets.image import MSMT17, DukeMTMCreID

from tiny_runs import DUKE_COUNTS, MARKET_TRAIN_IDS, MSMT_COUNTS

from reid_srdl.config import DataConfig
from reid_srdl.data import build_data
from reid_srdl.data.market1501 import Market1501SRDL, read_market1501
from reid_srdl.data.reid_sets import DatasetReadError, read_reid_set
from reid_srdl.data.sources import combine_train_sets


def _cfg(root, **kw):
    return DataConfig(
        root=root, synthetic=False, height=32, width=16, batch_size=4, test_batch_size=16, workers=0, **kw
    )


def test_offsets_match_torchreids_own_sum_of_datasets(tiny_reid_root):
    """torchreid's data manager adds sources with Dataset.__add__: labels offset by the previous
    identities, cameras by the previous cameras, dsetid = source index."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = sum(
            [
                Market1501SRDL(root=tiny_reid_root, verbose=False),
                DukeMTMCreID(root=tiny_reid_root, verbose=False),
                MSMT17(root=tiny_reid_root, verbose=False),
            ]
        )
    names = ("market1501", "dukemtmcreid", "msmt17")
    ours = combine_train_sets([(n, read_reid_set(n, tiny_reid_root).train) for n in names])
    assert sorted(ours.samples) == sorted(tuple(s) for s in theirs.train)
    expected_pids = MARKET_TRAIN_IDS + DUKE_COUNTS["train"][1] + MSMT_COUNTS["train"][1]
    assert ours.num_pids == theirs.num_train_pids == expected_pids
    assert [(r.first_label, r.first_camid) for r in ours.sources] == [(0, 0), (4, 6), (8, 14)]


def test_offsets_by_hand_keep_cameras_apart_when_one_is_missing():
    a = [("a0", 0, 0), ("a1", 1, 2)]  # camera 1 absent from A's training split
    b = [("b0", 0, 0), ("b1", 0, 1), ("b2", 1, 1)]
    combined = combine_train_sets([("A", a), ("B", b)])
    # A's labels 0-1 and cameras 0..2 (3 ids reserved); B's labels 2-3, cameras 3-4.
    assert combined.samples == [("a0", 0, 0, 0), ("a1", 1, 2, 0), ("b0", 2, 3, 1), ("b1", 2, 4, 1), ("b2", 3, 4, 1)]
    assert (combined.num_pids, combined.num_camids) == (4, 5)


def test_labels_that_are_not_0_to_n_minus_1_are_an_error():
    message = r"training labels of 'X' are not 0..1 \(2 identities, labels \[0, 2\]\)"
    with pytest.raises(DatasetReadError, match=message):
        combine_train_sets([("X", [("p", 0, 0), ("q", 2, 0)])])


def test_two_sources_one_training_set_each_evaluated_apart(tiny_reid_root):
    bundle = build_data(_cfg(tiny_reid_root, sources=("market1501", "dukemtmcreid")), seed=0)
    market = read_market1501(tiny_reid_root)
    n_market, n_duke = len(market.train), DUKE_COUNTS["train"][0]
    assert bundle.name == "market1501+dukemtmcreid" and bundle.sources == ("market1501", "dukemtmcreid")
    assert bundle.num_classes == MARKET_TRAIN_IDS + DUKE_COUNTS["train"][1]
    assert bundle.num_train == n_market + n_duke
    samples = bundle.train_loader.dataset.dataset.samples
    labels = np.array([label for _path, label in samples])
    # Market first, exactly its own listing; Duke's labels 4..7 and cameras 6..13 after it.
    assert samples[:n_market] == [(p, label) for p, label, _c in market.train]
    assert set(labels[n_market:]) == set(range(MARKET_TRAIN_IDS, bundle.num_classes))
    assert all("dukemtmc-reid" in p for p, _ in samples[n_market:])
    assert bundle.train_dsetids.tolist() == [0] * n_market + [1] * n_duke
    assert set(bundle.train_camids[:n_market]) == set(range(6))
    assert set(bundle.train_camids[n_market:]) == set(range(6, 14))
    # The training-order sampler covers the combined set.
    assert len(bundle.train_loader.sampler) == n_market + n_duke
    # Targets default to the sources, each with its own (unshifted) pids and cameras.
    assert [t.name for t in bundle.targets] == ["market1501", "dukemtmcreid"]
    duke = bundle.targets[1]
    assert (len(duke.query.pids), len(duke.gallery.pids)) == (DUKE_COUNTS["query"][0], DUKE_COUNTS["gallery"][0])
    assert duke.multi_query is None and bundle.targets[0].multi_query is not None
    assert bundle.query is bundle.targets[0].query


def test_one_source_other_targets(tiny_reid_root):
    bundle = build_data(_cfg(tiny_reid_root, sources=("dukemtmcreid",), targets=("market1501", "msmt17")))
    assert bundle.num_classes == DUKE_COUNTS["train"][1] and bundle.num_train == DUKE_COUNTS["train"][0]
    assert [t.name for t in bundle.targets] == ["market1501", "msmt17"]
    msmt = bundle.targets[1]
    assert (len(msmt.query.pids), len(msmt.gallery.pids)) == (MSMT_COUNTS["query"][0], MSMT_COUNTS["gallery"][0])
    assert all(os.path.isfile(p) for p in msmt.gallery.paths)
    # data.name is ignored (its default) when data.sources is given.
    assert bundle.name == "dukemtmcreid"


def test_single_market_bundle_is_todays(tiny_reid_root):
    bundle = build_data(_cfg(tiny_reid_root))
    market = read_market1501(tiny_reid_root)
    assert bundle.train_loader.dataset.dataset.samples == [(p, label) for p, label, _c in market.train]
    assert bundle.train_camids.tolist() == [c for _p, _l, c in market.train] and not bundle.train_dsetids.any()
    assert bundle.name == "market1501" and [t.name for t in bundle.targets] == ["market1501"]


def test_synthetic_true_writes_the_missing_sets(tmp_path):
    root = str(tmp_path)
    bundle = build_data(
        DataConfig(
            root=root,
            synthetic=True,
            synthetic_ids=4,
            sources=("dukemtmcreid",),
            targets=("dukemtmcreid", "viper"),
            height=32,
            width=16,
            workers=0,
        )
    )
    assert sorted(os.listdir(root)) == ["dukemtmc-reid", "viper"]
    # 4 ids: 2 train, 2 test, 1 distractor, 3 cameras x 3 images -> query 2*3, gallery 2*3*2 + 1*3.
    assert bundle.num_train == 2 * 3 * 3 and len(bundle.targets[0].gallery.pids) == 2 * 3 * 2 + 3
    assert len(bundle.targets[1].query.pids) == 4 - 4 // 2
