"""reid-search on a tiny synthetic Market-1501 set: build, info, calibrate, query (JSON/HTML), add,
label sources, and one-line errors that leave nothing behind."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from reid_srdl.cli import search as cli
from reid_srdl.core.checkpoint import save_model_file
from reid_srdl.models import build_model
from reid_srdl.search import ReIDSearcher

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def setup(tiny_market_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search_cli")
    market = os.path.join(tiny_market_root, "market1501", "Market-1501-v15.09.15")
    torch.manual_seed(0)
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = build_model("small_reid", 4, feature_dim=8).eval()
        path = str(tmp / f"model{seed}.pt")
        save_model_file(net, path, task="reid", height=32, width=16)
        models.append(path)
    return {
        "gallery_dir": os.path.join(market, "bounding_box_test"),
        "query_dir": os.path.join(market, "query"),
        "model": models[0],
        "other_model": models[1],
        "tmp": tmp,
    }


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_build_info_calibrate_query(setup, capsys, tmp_path):
    gallery = tmp_path / "g.npz"
    code, out, _ = run(capsys, "build", "--model", setup["model"], "--images", setup["gallery_dir"], "--out", gallery)
    assert code == 0 and "parsed from Market-1501 file names" in out
    code, out, _ = run(capsys, "info", "--gallery", gallery, "--json")
    info = json.loads(out)
    assert info["images"] == 36 and info["dim"] == 8 and info["calibration"] is None
    assert info["settings"]["height"] == 32  # the model's training size, recorded
    assert set(info["cameras"]) <= {f"c{i}" for i in range(1, 7)}
    # Query before calibrating: refused in one line, before anything is embedded.
    code, _, err = run(
        capsys,
        "query",
        setup["query_dir"],
        "--gallery",
        gallery,
        "--model",
        setup["model"],
        "--threshold",
        "calibrated",
    )
    assert code == 2 and "no calibrated threshold" in err and err.count("\n") == 1
    code, out, _ = run(
        capsys,
        "calibrate",
        "--gallery",
        gallery,
        "--model",
        setup["model"],
        "--queries",
        setup["query_dir"],
        "--far",
        "0.2",
        "--plot",
        tmp_path / "dist.png",
    )
    assert code == 0 and "threshold" in out and (tmp_path / "dist.png").exists()
    code, out, _ = run(
        capsys,
        "query",
        setup["query_dir"],
        "--gallery",
        gallery,
        "--model",
        setup["model"],
        "--threshold",
        "calibrated",
        "--k",
        "5",
        "--exclude",
        "same-person-camera",
        "--json",
        tmp_path / "hits.json",
        "--html",
        tmp_path / "hits.html",
    )
    assert code == 0
    hits = json.loads((tmp_path / "hits.json").read_text())
    # The same through the library (an independent call on the saved gallery).
    s = ReIDSearcher.load(str(gallery), model=setup["model"])
    from reid_srdl.search.labels import list_images, market_labels

    queries = list_images(setup["query_dir"])
    pids, cams = market_labels(queries)
    expected = s.search(queries, k=5, threshold="calibrated", exclude_pid_camid=np.stack([pids, cams], axis=1))
    assert [h["query"] for h in hits] == queries
    assert [[x["index"] for x in h["hits"]] for h in hits] == [r.indices.tolist() for r in expected]
    assert [h["decision"] for h in hits] == [r.decision for r in expected]
    assert all(h["threshold"] == s.calibration.threshold for h in hits)
    for h, q_pid, q_cam in zip(hits, pids, cams):
        assert not any(x["pid"] == q_pid and x["camid"] == q_cam for x in h["hits"])
    page = (tmp_path / "hits.html").read_text()
    assert page.count("data:image/jpeg;base64,") == len(queries) * 6  # each query + its 5 crops
    assert "match" in page and "threshold" in page


def test_add_and_unlabelled_and_csv_labels(setup, capsys, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    names = sorted(os.listdir(setup["query_dir"]))[:3]
    for i, n in enumerate(names):
        shutil.copy(os.path.join(setup["query_dir"], n), plain / f"person_{i}.jpg")
    gallery = tmp_path / "g.npz"
    code, out, _ = run(capsys, "build", "--model", setup["model"], "--images", plain, "--out", gallery)
    assert code == 0 and "labels none" in out
    assert ReIDSearcher.load(str(gallery)).pids.tolist() == [-1, -1, -1]
    labels = tmp_path / "labels.csv"
    labels.write_text("path,pid,camera\n" + "".join(f"plain/person_{i}.jpg,{7 + i},c{i + 1}\n" for i in range(3)))
    # The same images again: an image's item id is its path, so they are duplicates, reported and skipped.
    code, out, _ = run(
        capsys, "add", "--gallery", gallery, "--model", setup["model"], "--images", plain, "--labels", labels
    )
    assert code == 0 and "3 + 0 images" in out and "3 already in the gallery" in out
    assert len(ReIDSearcher.load(str(gallery))) == 3
    labelled = tmp_path / "labelled.npz"
    code, out, _ = run(
        capsys, "build", "--model", setup["model"], "--images", plain, "--labels", labels, "--out", labelled
    )
    s = ReIDSearcher.load(str(labelled))
    assert s.pids.tolist() == [7, 8, 9] and s.camids.tolist() == [0, 1, 2]  # c1 -> camid 0


def test_errors_are_one_line_and_leave_no_output(setup, capsys, tmp_path):
    bad = tmp_path / "imgs"
    bad.mkdir()
    first = sorted(os.listdir(setup["query_dir"]))[0]
    shutil.copy(os.path.join(setup["query_dir"], first), bad / "0001_c1s1_000001_00.jpg")
    (bad / "0002_c2s1_000001_00.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "g.npz"
    code, _, err = run(capsys, "build", "--model", setup["model"], "--images", bad, "--out", out)
    assert code == 2 and "0002_c2s1_000001_00.jpg" in err and err.count("\n") == 1 and not out.exists()
    code, text, err = run(
        capsys, "build", "--model", setup["model"], "--images", bad, "--out", out, "--skip-unreadable"
    )
    assert code == 0 and "skipped: cannot read image" in err and "0002_c2s1" in err and "skipped 1 unreadable" in text
    # Another model than the one that built the gallery: both named, unless asked.
    code, _, err = run(capsys, "query", bad, "--gallery", out, "--model", setup["other_model"])
    assert code == 2 and "was built by" in err and "--allow-model-mismatch" in err and err.count("\n") == 1
    code, _, _ = run(
        capsys,
        "query",
        bad / "0001_c1s1_000001_00.jpg",
        "--gallery",
        out,
        "--model",
        setup["other_model"],
        "--allow-model-mismatch",
    )
    assert code == 0
    code, _, err = run(capsys, "build", "--model", setup["model"], "--images", tmp_path / "absent", "--out", out)
    assert code == 2 and "neither an image file nor a folder" in err
    # Cameras are names now (c1, lobby...): a bad filter is a bad time, one line before any embedding.
    code, _, err = run(capsys, "query", bad, "--gallery", out, "--model", setup["model"], "--from", "yesterday")
    assert code == 2 and "--from: 'yesterday' is not an ISO 8601 time" in err and err.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["g.npz", "imgs"]
