"""Problems the end-of-run evaluation would meet are found before the first epoch: an
unreadable, empty or folder-named evaluation image, or a query set without a true match."""

import os

import numpy as np
import pytest
from fixtures_data import write_market_tree
from tiny_runs import save_tiny_model
from trust_helpers import market_split_dir, one_line, reid_train_args, tiny_market_copy

from reid_srdl.cli import eval_reid as eval_cli
from reid_srdl.cli import train as train_cli
from reid_srdl.engine.preflight import count_valid_queries
from reid_srdl.evaluation.metrics import evaluate_reid

pytestmark = pytest.mark.usefixtures("single_thread")


def _damage(root, split, how) -> str:
    folder = market_split_dir(root, split)
    if how == "folder_named_like_an_image":
        path = os.path.join(folder, "0001_c1s1_000001_01.jpg")
        os.mkdir(path)
        return path
    path = os.path.join(folder, sorted(os.listdir(folder))[-1])
    open(path, "wb").write(b"" if how == "zero_bytes" else b"GIF89a garbage after a plausible start")
    return path


@pytest.mark.parametrize(
    "split, how, message",
    [
        ("bounding_box_test", "corrupt", "cannot identify image file"),
        ("bounding_box_test", "zero_bytes", "the file is empty (0 bytes)"),
        ("bounding_box_test", "folder_named_like_an_image", "it is a folder, not an image file"),
        ("query", "corrupt", "cannot identify image file"),
        ("gt_bbox", "zero_bytes", "the file is empty (0 bytes)"),
    ],
)
def test_an_unreadable_evaluation_image_stops_the_run_before_training(
    tiny_market_root, tmp_path, capsys, split, how, message
):
    root = tiny_market_copy(tiny_market_root, tmp_path / "data")
    bad = _damage(root, split, how)
    out = tmp_path / "runs"
    args = reid_train_args(root, out, "eval.multi_query=true")
    assert train_cli.main(args) == 2
    line = one_line(capsys.readouterr().err)
    split_name = {"bounding_box_test": "gallery"}.get(split, split)
    assert line.startswith(f"error: {split_name} image check before training: cannot read image '{bad}'")
    assert message in line
    assert not out.exists()  # no epoch ran: not even a run folder is left


def test_several_unreadable_images_are_counted(tiny_market_root, tmp_path, capsys):
    root = tiny_market_copy(tiny_market_root, tmp_path / "data")
    folder = market_split_dir(root, "bounding_box_test")
    for name in sorted(os.listdir(folder))[-3:]:  # (the first ones are junk, -1_..., never read)
        open(os.path.join(folder, name), "wb").close()
    assert train_cli.main(reid_train_args(root, tmp_path / "runs")) == 2
    assert "(and 2 more unreadable gallery images)" in one_line(capsys.readouterr().err)


NO_TRUE_MATCH = {
    "bounding_box_train": [
        "0001_c1s1_000101_01.jpg",
        "0001_c2s1_000201_01.jpg",
        "0002_c1s1_000301_01.jpg",
        "0002_c3s1_000401_01.jpg",
    ],
    # pid 20's only gallery image is from the query's own camera; pid 31 has no query.
    "query": ["0020_c1s1_001001_00.jpg"],
    "bounding_box_test": ["0020_c1s1_002001_01.jpg", "0031_c2s1_002201_01.jpg", "0000_c3s1_002301_01.jpg"],
}


def test_a_query_set_without_a_true_match_stops_the_run_before_training(tmp_path, capsys):
    write_market_tree(str(tmp_path / "data"), files=NO_TRUE_MATCH)
    out = tmp_path / "runs"
    assert train_cli.main(reid_train_args(tmp_path / "data", out)) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("error: no valid query: none of the 1 query images has a true match in the gallery")
    assert not out.exists()


def test_eval_checkpoint_mode_checks_images_before_extracting(tiny_market_root, tmp_path, capsys, monkeypatch):
    root = tiny_market_copy(tiny_market_root, tmp_path / "data")
    bad = _damage(root, "bounding_box_test", "corrupt")
    model = save_tiny_model(tmp_path / "final.pt")

    def no_extraction(*a, **k):
        raise AssertionError("features were extracted before the images were checked")

    monkeypatch.setattr("reid_srdl.inference.features.extract_features", no_extraction)
    assert eval_cli.main(["--checkpoint", model, "--data-root", root, "--json", str(tmp_path / "r.json")]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"cannot read image '{bad}'" in line and not (tmp_path / "r.json").exists()


def test_count_valid_queries_by_hand():
    # query (pid, cam): (1, 0) has (1, 1) in the gallery: valid.  (2, 0) only has (2, 0):
    # same camera, not valid.  (3, 1) is absent from the gallery.  (-1, 0) is junk.
    # (4, 2) has (4, 0) and (4, 2): valid.
    q_pids, q_cams = [1, 2, 3, -1, 4], [0, 0, 1, 0, 2]
    g_pids, g_cams = [1, 1, 2, 4, 4, -1, 0], [0, 1, 0, 0, 2, 1, 1]
    assert count_valid_queries(q_pids, q_cams, g_pids, g_cams) == 2


def test_count_valid_queries_agrees_with_the_evaluation():
    rng = np.random.default_rng(5)
    q_pids, q_cams = rng.integers(0, 12, 40), rng.integers(0, 3, 40)
    g_pids, g_cams = rng.integers(0, 12, 60), rng.integers(0, 3, 60)
    result = evaluate_reid(rng.normal(size=(40, 4)), rng.normal(size=(60, 4)), q_pids, g_pids, q_cams, g_cams)
    assert count_valid_queries(q_pids, q_cams, g_pids, g_cams) == result.num_valid_queries
