"""Market-1501 listing: file-name parsing, junk/distractors, relabelling, layouts, errors,
and agreement with torchreid's own Market1501 / ImageDataManager on the synthetic set."""

import os
import shutil

import pytest
import torch
from fixtures_data import MARKET_EXPECTED, MARKET_FILES, write_market_tree

from reid_srdl.data.market1501 import (
    DATASET_NAME,
    Market1501SRDL,
    MarketLayoutError,
    MarketName,
    find_market_dir,
    parse_market_filename,
    parse_market_name,
    read_market1501,
    register_market1501_srdl,
)


# --------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    "name, expected",
    [
        ("0002_c1s1_000451_03.jpg", (2, 0)),
        ("1501_c6s4_002202_01.jpg", (1501, 5)),
        ("-1_c3s2_000101_01.jpg", (-1, 2)),
        ("0000_c5s3_064063_04.jpg", (0, 4)),
        ("/some/folder/0431_c2s1_106471_00.jpg", (431, 1)),
    ],
)
def test_parse_market_name(name, expected):
    assert parse_market_name(name) == expected


def test_parse_market_filename_all_fields_and_round_trip():
    parsed = parse_market_filename("0002_c1s1_000451_03.jpg")
    assert parsed == MarketName(pid=2, camid=0, sequence=1, frame=451, box=3)
    assert parsed.filename() == "0002_c1s1_000451_03.jpg"
    assert MarketName(-1, 5, 6, 7, 0).filename() == "-1_c6s6_000007_00.jpg"


@pytest.mark.parametrize(
    "name",
    [
        "foo.jpg",
        "0002_c7s1_000451_03.jpg",
        "0002_c0s1_000451_03.jpg",
        "02_c1s1_000451_03.jpg",
        "0002_c1s1_000451_03.png",
        "0002_c1_000451_03.jpg",
    ],
)
def test_parse_market_name_rejects_other_names(name):
    with pytest.raises(ValueError, match="0002_c1s1_000451_03.jpg|camera c"):
        parse_market_name(name)


# --------------------------------------------------------------------------- hand-made tree
def _names(samples):
    return [(os.path.basename(p), pid, cam) for p, pid, cam in samples]


@pytest.mark.parametrize("versioned", [True, False])
def test_read_market1501_hand_made_tree(tmp_path, versioned):
    data_dir = write_market_tree(str(tmp_path), versioned=versioned)
    lists = read_market1501(str(tmp_path))
    assert os.path.normpath(lists.data_dir) == data_dir
    assert _names(lists.train) == MARKET_EXPECTED["train"]
    assert _names(lists.query) == MARKET_EXPECTED["query"]
    assert _names(lists.gallery) == MARKET_EXPECTED["gallery"]
    assert _names(lists.gt_bbox) == MARKET_EXPECTED["gt_bbox"]
    assert lists.train_pid_map == {3: 0, 7: 1, 12: 2}
    assert lists.num_train_pids == 3
    assert all(os.path.isfile(p) for p, _, _ in lists.train + lists.query + lists.gallery)


def test_gt_bbox_absent_is_none(tmp_path):
    files = {k: v for k, v in MARKET_FILES.items() if k != "gt_bbox"}
    write_market_tree(str(tmp_path), files=files)
    assert read_market1501(str(tmp_path)).gt_bbox is None


def test_torchreid_dataset_class_exposes_gt_bbox(tmp_path):
    write_market_tree(str(tmp_path))
    ds = Market1501SRDL(root=str(tmp_path), verbose=False)
    assert (ds.num_train_pids, len(ds.train), ds.num_train_cams) == (3, 5, 4)
    assert [(os.path.basename(p), pid, cam, d) for p, pid, cam, d in ds.gt_bbox] == [
        (*e, 0) for e in MARKET_EXPECTED["gt_bbox"]
    ]
    assert all(os.path.basename(p).endswith("_00.jpg") for p, *_ in ds.gt_bbox)
    assert len(ds.query) == 3 and len(ds.gallery) == 5


def test_torchreid_dataset_class_names_an_unreadable_image(tmp_path):
    from reid_srdl.data.indexed import ImageReadError

    data_dir = write_market_tree(str(tmp_path))
    ds = Market1501SRDL(root=str(tmp_path), verbose=False)
    item = ds[0]
    assert (os.path.basename(item["impath"]), item["pid"], item["camid"]) == MARKET_EXPECTED["train"][0]
    assert item["img"].size == (8, 16)  # PIL (width, height); no transform given
    victim = os.path.join(data_dir, "bounding_box_train", MARKET_EXPECTED["train"][0][0])
    with open(victim, "wb") as f:
        f.write(b"garbage")
    with pytest.raises(ImageReadError, match=victim):
        ds[0]


def test_registration_is_idempotent():
    import torchreid.reid.data.datasets as tr

    assert register_market1501_srdl() == DATASET_NAME
    assert register_market1501_srdl() == DATASET_NAME
    assert vars(tr)["__image_datasets"][DATASET_NAME] is Market1501SRDL


# --------------------------------------------------------------------------- errors
def test_missing_root_names_the_folder(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(MarketLayoutError, match="nowhere.*does not exist.*bounding_box_train"):
        read_market1501(missing)


def test_root_without_market_folder(tmp_path):
    with pytest.raises(MarketLayoutError) as e:
        read_market1501(str(tmp_path))
    msg = str(e.value)
    assert os.path.join(str(tmp_path), "market1501", "Market-1501-v15.09.15") in msg
    assert "bounding_box_test" in msg and "query" in msg


@pytest.mark.parametrize("depth", ["market1501", "market1501/Market-1501-v15.09.15"])
def test_mislaid_root_pointing_at_the_data_folder(tmp_path, depth):
    write_market_tree(str(tmp_path))
    wrong_root = str(tmp_path / depth)
    with pytest.raises(MarketLayoutError) as e:
        find_market_dir(wrong_root)
    msg = str(e.value)
    assert "looks like the data folder itself" in msg
    assert "give the folder that contains market1501/" in msg
    assert os.path.join(wrong_root, "market1501", "Market-1501-v15.09.15") in msg


def test_missing_split_folder_is_named(tmp_path):
    data_dir = write_market_tree(str(tmp_path))
    shutil.rmtree(os.path.join(data_dir, "query"))
    with pytest.raises(MarketLayoutError, match=r"lacks query/"):
        read_market1501(str(tmp_path))


def test_empty_split_is_an_error(tmp_path):
    data_dir = write_market_tree(str(tmp_path))
    for name in os.listdir(os.path.join(data_dir, "bounding_box_test")):
        os.remove(os.path.join(data_dir, "bounding_box_test", name))
    with pytest.raises(MarketLayoutError, match=r"bounding_box_test' holds no usable image \(0 .jpg"):
        read_market1501(str(tmp_path))


def test_split_of_only_junk_is_empty(tmp_path):
    files = dict(MARKET_FILES, query=["-1_c1s1_000001_00.jpg", "0000_c2s1_000002_00.jpg"])
    write_market_tree(str(tmp_path), files=files)
    with pytest.raises(MarketLayoutError, match=r"query' holds no usable image \(2 .jpg"):
        read_market1501(str(tmp_path))


def test_foreign_file_name_in_a_split_is_named(tmp_path):
    data_dir = write_market_tree(str(tmp_path))
    open(os.path.join(data_dir, "query", "holiday.jpg"), "wb").close()
    with pytest.raises(ValueError, match="holiday.jpg' is not a Market-1501 image name"):
        read_market1501(str(tmp_path))


def test_500k_distractors_refused_clearly(tmp_path):
    write_market_tree(str(tmp_path))
    with pytest.raises(ValueError, match="market1501_500k"):
        Market1501SRDL(root=str(tmp_path), market1501_500k=True)


# --------------------------------------------------------------------------- torchreid oracle
def _stats(samples):
    return len({s[1] for s in samples}), len(samples), len({s[2] for s in samples})


def test_torchreid_market1501_agrees_on_the_synthetic_set(tiny_market_root):
    from torchreid.reid.data.datasets.image import Market1501

    theirs = Market1501(root=tiny_market_root, verbose=False)
    ours = read_market1501(tiny_market_root)
    assert _stats(theirs.train) == _stats(ours.train)
    assert _stats(theirs.query) == _stats(ours.query)
    assert _stats(theirs.gallery) == _stats(ours.gallery)
    # Query and gallery keep the original pids: identical (path, pid, camid) sets.
    assert {s[:3] for s in theirs.query} == set(ours.query)
    assert {s[:3] for s in theirs.gallery} == set(ours.gallery)
    # Train labels may be numbered differently; they must split the images the same way.
    theirs_label = {p: pid for p, pid, _c, _d in theirs.train}
    pairs = {(theirs_label[p], label) for p, label, _c in ours.train}
    assert len(pairs) == ours.num_train_pids == len({a for a, _ in pairs})
    assert {(p, c) for p, _l, c, _d in theirs.train} == {(p, c) for p, _l, c in ours.train}


@pytest.mark.parametrize("source", ["market1501", "market1501_srdl"])
def test_torchreid_image_data_manager_reads_our_root(tiny_market_root, source):
    from torchreid.reid.data import ImageDataManager

    ours = read_market1501(tiny_market_root)
    dm = ImageDataManager(
        root=tiny_market_root,
        sources=source,
        height=32,
        width=16,
        batch_size_train=4,
        batch_size_test=8,
        workers=0,
        use_gpu=False,
    )
    assert dm.num_train_pids == ours.num_train_pids
    assert dm.num_train_cams == len({c for _p, _l, c in ours.train}) == 6
    assert len(dm.train_loader.dataset.train) == len(ours.train)
    query_loader, gallery_loader = dm.test_loader[source]["query"], dm.test_loader[source]["gallery"]
    assert len(query_loader.dataset) == len(ours.query)
    assert len(gallery_loader.dataset) == len(ours.gallery)
    batch = next(iter(dm.train_loader))
    assert batch["img"].shape == (4, 3, 32, 16) and batch["pid"].dtype == torch.int64
    if source == "market1501_srdl":
        assert len(dm.train_loader.dataset.gt_bbox) == len(ours.gt_bbox)
