"""Re-id data set names come from torchreid's registry and resolve to torchreid's classes; a
missing, mis-laid or empty folder is one line naming the layout, found before the class is
constructed (so nothing is ever downloaded); roles, options and split ids are checked."""

import functools
import json
import os
import random
import warnings

import numpy as np
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    import torchreid.reid.data.datasets as torchreid_datasets
    from torchreid.reid.data.datasets import dataset as torchreid_dataset_module
    from torchreid.reid.data.datasets.image import (
        CUHK01,
        CUHK02,
        CUHK03,
        CUHKSYSU,
        GRID,
        MSMT17,
        PRID,
        DukeMTMCreID,
        Market1501,
        SenseReID,
        University1652,
        VIPeR,
        iLIDS,
    )

from reid_srdl.config import ConfigError, DataConfig
from reid_srdl.data import build_data
from reid_srdl.data.market1501 import MarketLayoutError
from reid_srdl.data.reid_sets import (
    DatasetLayoutError,
    DatasetReadError,
    dataset_class,
    read_reid_set,
    reid_dataset_names,
    unsupported_registry_names,
)

# torchreid 0.2.5's image registry (torchreid/reid/data/datasets/__init__.py), by hand.
TORCHREID_CLASSES = {
    "market1501": Market1501,
    "cuhk03": CUHK03,
    "dukemtmcreid": DukeMTMCreID,
    "msmt17": MSMT17,
    "viper": VIPeR,
    "grid": GRID,
    "cuhk01": CUHK01,
    "ilids": iLIDS,
    "sensereid": SenseReID,
    "prid": PRID,
    "cuhk02": CUHK02,
    "university1652": University1652,
    "cuhksysu": CUHKSYSU,
}
# The folder each class looks in under ROOT and the first thing it needs there (from their __init__).
FIRST_NEED = {
    "dukemtmcreid": "dukemtmc-reid/DukeMTMC-reID/bounding_box_train",
    "msmt17": "msmt17/MSMT17_V1",
    "cuhk03": "cuhk03/cuhk03_release/cuhk-03.mat",
    "viper": "viper/VIPeR/cam_a",
    "grid": "grid/underground_reid/probe",
    "cuhk01": "cuhk01/campus",
    "ilids": "ilids/i-LIDS_Pedestrian/Persons",
    "prid": "prid2011/prid_2011/single_shot/cam_a",
    "sensereid": "sensereid/SenseReID/test_probe",
    "cuhk02": "cuhk02/Dataset/P1/cam1",
    "cuhksysu": "cuhksysu/cropped_images",
    "university1652": "university1652/University-Release/train",
}


def test_names_are_torchreids_registry():
    assert reid_dataset_names() == sorted(TORCHREID_CLASSES)
    # Every name in torchreid's table (besides our own market1501_srdl alias) is supported.
    registry = set(vars(torchreid_datasets)["__image_datasets"]) - {"market1501_srdl"}
    assert registry == set(TORCHREID_CLASSES) and unsupported_registry_names() == []


@pytest.mark.parametrize("name", sorted(TORCHREID_CLASSES))
def test_each_name_resolves_to_its_torchreid_class(name):
    assert dataset_class(name) is TORCHREID_CLASSES[name]


@pytest.fixture
def no_torchreid_construction(monkeypatch):
    """Any torchreid class constructed, or any download attempted, fails the test."""
    table = vars(torchreid_datasets)["__image_datasets"]

    def exploding(cls):
        @functools.wraps(cls.__init__)  # same signature: the options a class takes stay visible
        def boom(self, *a, **k):
            raise AssertionError(f"{type(self).__name__} was constructed")

        return type(cls.__name__, (cls,), {"__init__": boom})

    for name, cls in list(table.items()):
        monkeypatch.setitem(table, name, exploding(cls))
    monkeypatch.setattr(
        torchreid_dataset_module.Dataset, "download_dataset", lambda *a: pytest.fail("a download was attempted")
    )


@pytest.mark.parametrize("name", sorted(FIRST_NEED))
def test_missing_folder_is_one_line_naming_the_layout(tmp_path, name, no_torchreid_construction):
    with pytest.raises(DatasetLayoutError) as info:
        read_reid_set(name, str(tmp_path))
    message = str(info.value)
    assert "\n" not in message
    assert os.path.join(str(tmp_path), FIRST_NEED[name]) in message and "is missing" in message
    assert "expected" in message and "datasets/README.md" in message


def test_missing_market_is_one_line(tmp_path):
    with pytest.raises(MarketLayoutError) as info:
        read_reid_set("market1501", str(tmp_path))
    assert "\n" not in str(info.value) and "bounding_box_train" in str(info.value)


def test_missing_root_and_unknown_name(tmp_path):
    with pytest.raises(DatasetLayoutError, match="data root '.*nowhere' does not exist"):
        read_reid_set("viper", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetLayoutError, match="'mars' is not a re-id data set; valid names: cuhk01, cuhk02,"):
        read_reid_set("mars", str(tmp_path))  # a video set: not read here


def test_mislaid_archive_and_root_one_level_too_deep(tmp_path, no_torchreid_construction):
    for split in ("bounding_box_train", "bounding_box_test", "query"):
        (tmp_path / "DukeMTMC-reID" / split).mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match=r"'.*/DukeMTMC-reID' exists: move it into .*/dukemtmc-reid/"):
        read_reid_set("dukemtmcreid", str(tmp_path))
    (tmp_path / "viper" / "VIPeR" / "cam_a").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="looks like the data set's own folder"):
        read_reid_set("viper", str(tmp_path / "viper"))


def test_empty_folder_is_named(tmp_path, no_torchreid_construction):
    base = tmp_path / "dukemtmc-reid" / "DukeMTMC-reID"
    for split in ("bounding_box_train", "bounding_box_test", "query"):
        (base / split).mkdir(parents=True)
        if split != "query":
            (base / split / "0001_c1_f0000001.jpg").write_bytes(b"")
    with pytest.raises(DatasetLayoutError, match=r"DukeMTMC-reID/query/ is empty"):
        read_reid_set("dukemtmcreid", str(tmp_path))


def test_msmt17_v2_is_accepted_and_its_missing_list_named(tmp_path, no_torchreid_construction):
    base = tmp_path / "msmt17" / "MSMT17_V2"
    for folder in ("mask_train_v2", "mask_test_v2"):
        (base / folder / "0000").mkdir(parents=True)
    for name in ("train", "val", "query"):
        (base / f"list_{name}.txt").write_text("")
    with pytest.raises(DatasetLayoutError, match=r"MSMT17_V2/list_gallery.txt is missing"):
        read_reid_set("msmt17", str(tmp_path))


def test_a_broken_file_from_torchreid_is_one_line(tiny_reid_root, tmp_path):
    import shutil

    shutil.copytree(os.path.join(tiny_reid_root, "msmt17"), tmp_path / "msmt17")
    (tmp_path / "msmt17" / "MSMT17_V1" / "list_query.txt").write_text("no-label-here\n")
    with pytest.raises(DatasetReadError) as info:
        read_reid_set("msmt17", str(tmp_path))
    assert "\n" not in str(info.value) and "torchreid's MSMT17 could not read" in str(info.value)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(sources=("sensereid",)), "data.sources: 'sensereid' is a test-only data set"),
        (dict(targets=("cuhksysu",)), "data.targets: 'cuhksysu' is a training-only data set"),
        (dict(sources=("market1501", "nope")), "data.sources: 'nope' is not a re-id data set; valid names: cuhk01"),
        (dict(targets=("dukemtmcreid", "dukemtmcreid")), "data.targets lists a data set twice"),
        # Which classes take which option: read from torchreid's signatures (split_id: 6 classes).
        (dict(split_id=2), "data.split_id applies to cuhk01, cuhk03, grid, ilids, prid, viper only"),
        (dict(cuhk03_labeled=True, sources=("viper",)), "data.cuhk03_labeled applies to cuhk03 only"),
        (dict(name="cifar10", sources=("viper",)), r"data.name='cifar10' and data.sources=\['viper'\] disagree"),
    ],
)
def test_bad_choices_stop_before_any_reading(tmp_path, kw, message, no_torchreid_construction):
    with pytest.raises(ConfigError, match=message):
        build_data(DataConfig(root=str(tmp_path / "absent"), synthetic=False, workers=0, **kw))
    assert not (tmp_path / "absent").exists()


def test_split_id_out_of_range_is_one_line(tiny_reid_root):
    message = r"^split_id=20 is out of range: VIPeR under '.*' has 20 splits \(0..19\)$"
    with pytest.raises(DatasetReadError, match=message):
        read_reid_set("viper", tiny_reid_root, split_id=20)
    with pytest.raises(DatasetReadError, match=r"CUHK03 under '.*' has 1 split \(0..0\)"):
        read_reid_set("cuhk03", tiny_reid_root, split_id=1)


def test_random_splits_are_drawn_from_a_fixed_seed_and_leave_the_global_rng_alone(tiny_reid_root, tmp_path):
    import shutil

    copies = []
    for name in ("a", "b"):
        shutil.copytree(os.path.join(tiny_reid_root, "viper", "VIPeR"), tmp_path / name / "viper" / "VIPeR")
        copies.append(tmp_path / name)
    random.seed(123)
    np.random.seed(123)
    before = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    first = read_reid_set("viper", str(copies[0]), split_id=4)
    assert (random.random(), np.random.rand()) == before  # the caller's RNG streams are untouched
    np.random.seed(999)  # another global state: the same splits anyway
    second = read_reid_set("viper", str(copies[1]), split_id=4)
    rel = lambda lists: [(os.path.basename(p), pid, c) for p, pid, c in lists]
    assert rel(first.train) == rel(second.train) and rel(first.query) == rel(second.query)
    with open(copies[0] / "viper" / "splits.json") as f, open(copies[1] / "viper" / "splits.json") as g:
        strip = lambda splits: [[os.path.basename(s[0]) for s in sp["train"]] for sp in splits]
        assert strip(json.load(f)) == strip(json.load(g))


def test_torchreid_prints_go_to_the_log(tiny_reid_root, tmp_path, capsys, caplog):
    import logging
    import shutil

    shutil.copytree(os.path.join(tiny_reid_root, "viper", "VIPeR"), tmp_path / "viper" / "VIPeR")
    with caplog.at_level(logging.INFO, logger="reid_srdl.data.reid_sets"):
        read_reid_set("viper", str(tmp_path))
    assert capsys.readouterr().out == ""
    assert any("Creating 10 random splits" in r.getMessage() for r in caplog.records)
