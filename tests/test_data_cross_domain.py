"""Cross-domain training and evaluation as a user runs them (tools/train.py, tools/eval_reid.py: their
main() with the user's arguments, in this process) on
the synthetic layouts: per-target metrics.json, table and TensorBoard, the mean over targets,
--dataset on a finished run and the mean over the random splits, checked against torchreid's
own evaluate_rank on independently extracted features."""

import contextlib
import io
import json
import os
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from reid_srdl.cli import eval_reid as eval_cli
from reid_srdl.cli import train as train_cli

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    from torchreid.reid.data.datasets.image import DukeMTMCreID, VIPeR
    from torchreid.reid.metrics.rank import evaluate_rank

from tiny_runs import DUKE_COUNTS, VIPER_COUNTS

from reid_srdl.core.checkpoint import save_model_file
from reid_srdl.data.build import reid_split
from reid_srdl.data.transforms import reid_test_transform
from reid_srdl.inference.features import extract_features
from reid_srdl.models.model_file import load_model_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN, EVAL = os.path.join(REPO, "tools", "train.py"), os.path.join(REPO, "tools", "eval_reid.py")
TINY = [
    "data.synthetic=false",
    "data.height=64",
    "data.width=32",
    "data.batch_size=8",
    "data.workers=0",
    "model.feature_dim=32",
    "train.epochs=2",
    "train.max_batches=2",
    "train.progress=false",
    "train.precision=fp32",
]


def _run(tool, *argv, cwd):
    """The CLI's main() in this process (no second torch import): returncode, stdout, stderr."""
    main = {TRAIN: train_cli.main, EVAL: eval_cli.main}[tool]
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv))
    finally:
        os.chdir(here)
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.fixture(scope="module")
def duke_run(tiny_reid_root, tmp_path_factory):
    """`python tools/train.py data.sources=[dukemtmcreid] data.root=ROOT` (SRDL, both stages)."""
    out = tmp_path_factory.mktemp("duke_run")
    proc = _run(
        TRAIN,
        "data.sources=[dukemtmcreid]",
        f"data.root={tiny_reid_root}",
        *TINY,
        "train.tensorboard=false",
        f"train.output_dir={out}",
        "train.run_name=duke",
        cwd=out,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "duke", proc


@pytest.fixture(scope="module")
def cross_domain_run(tiny_reid_root, tmp_path_factory):
    """Market-1501 training, evaluated on Market-1501 and DukeMTMC-reID; TensorBoard on."""
    out = tmp_path_factory.mktemp("cross_run")
    proc = _run(
        TRAIN,
        "data.targets=[market1501,dukemtmcreid]",
        f"data.root={tiny_reid_root}",
        *TINY,
        "method.name=vanilla",
        "train.epochs=1",
        f"train.output_dir={out}",
        "train.run_name=cross",
        cwd=out,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "cross", proc


def _metrics(run):
    with open(run / "metrics.json") as f:
        return json.load(f)


def _oracle(model, query, gallery, height=64, width=32):
    """CMC and mAP by torchreid's evaluate_rank over features we extract ourselves."""
    feats = {}
    for name, samples in (("q", query), ("g", gallery)):
        split = reid_split([s[:3] for s in samples], reid_test_transform(height, width), 16, 0)
        feats[name] = extract_features(model, split.loader)
    dist = ((feats["q"][:, None, :] - feats["g"][None, :, :]) ** 2).sum(-1)
    ids = [np.array([s[k] for s in samples]) for k in (1, 2) for samples in (query, gallery)]
    q_pids, g_pids, q_cams, g_cams = ids
    cmc, m_ap = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=10, use_cython=False)[:2]
    return cmc, m_ap


def _duke_lists(root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = DukeMTMCreID(root=root, verbose=False)
    return ds.query, ds.gallery


def test_train_on_duke_as_a_user_would(duke_run, tiny_reid_root):
    run, proc = duke_run
    metrics = _metrics(run)
    assert metrics["data"] == "dukemtmcreid" and metrics["targets"] == ["dukemtmcreid"]
    assert metrics["num_classes"] == DUKE_COUNTS["train"][1] and metrics["num_train"] == DUKE_COUNTS["train"][0]
    deployed = metrics["results"]["deployed"]
    assert set(deployed) == {"single_query", "open_set"}  # no gt_bbox outside Market-1501
    assert deployed["single_query"]["num_queries"] == DUKE_COUNTS["query"][0]
    # The deployed network's numbers are torchreid's evaluate_rank on the same data.
    model, meta = load_model_file(str(run))
    assert meta["data"] == "dukemtmcreid"
    cmc, m_ap = _oracle(model, *_duke_lists(tiny_reid_root))
    assert deployed["single_query"]["rank1"] == pytest.approx(cmc[0], abs=1e-6)
    assert deployed["single_query"]["rank5"] == pytest.approx(cmc[4], abs=1e-6)
    assert deployed["single_query"]["mAP"] == pytest.approx(m_ap, abs=1e-6)
    assert f"{100 * deployed['single_query']['rank1']:.2f}" in proc.stdout


def test_targets_reported_apart_with_their_mean(cross_domain_run, tiny_reid_root):
    run, proc = cross_domain_run
    metrics = _metrics(run)
    assert metrics["data"] == "market1501" and metrics["targets"] == ["market1501", "dukemtmcreid"]
    res = metrics["results"]["deployed"]
    assert list(res) == [
        "market1501/single_query",
        "market1501/multi_query",
        "market1501/open_set",
        "dukemtmcreid/single_query",
        "dukemtmcreid/open_set",
        "mean/single_query",
    ]
    assert res["dukemtmcreid/single_query"]["num_queries"] == DUKE_COUNTS["query"][0]
    for key in ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP"):
        expected = (res["market1501/single_query"][key] + res["dukemtmcreid/single_query"][key]) / 2
        assert res["mean/single_query"][key] == pytest.approx(expected, abs=1e-12)
    assert res["mean/single_query"]["num_targets"] == 2
    model, _ = load_model_file(str(run))
    cmc, m_ap = _oracle(model, *_duke_lists(tiny_reid_root))
    assert res["dukemtmcreid/single_query"]["mAP"] == pytest.approx(m_ap, abs=1e-6)
    assert res["dukemtmcreid/single_query"]["rank1"] == pytest.approx(cmc[0], abs=1e-6)
    # The table: one row per target and protocol, and the mean.
    assert "vanilla | small_reid on market1501 -> market1501, dukemtmcreid" in proc.stdout
    for row in ("market1501/single query", "market1501/multi query", "dukemtmcreid/single query", "mean/single query"):
        assert row in proc.stdout
    assert {p.name for p in run.glob("cmc_*.png")} == {"cmc_deployed_market1501.png", "cmc_deployed_dukemtmcreid.png"}
    assert {p.name for p in run.glob("open_set_*.png")} == {
        "open_set_deployed_market1501.png",
        "open_set_deployed_dukemtmcreid.png",
    }
    # TensorBoard: the same values under eval/deployed/<target>/<protocol>/<metric>.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag, value in (
        ("eval/deployed/dukemtmcreid/single_query/mAP", res["dukemtmcreid/single_query"]["mAP"]),
        ("eval/deployed/mean/single_query/rank1", res["mean/single_query"]["rank1"]),
        ("eval/deployed/market1501/multi_query/mAP", res["market1501/multi_query"]["mAP"]),
    ):
        assert tag in tags
        assert events.Scalars(tag)[-1].value == pytest.approx(value, abs=1e-6)


def test_eval_reid_on_another_dataset(duke_run, tiny_reid_root, tmp_path):
    """A Duke-trained run evaluated on Market-1501 (cross-domain) and on its own Duke (default)."""
    run, _ = duke_run
    proc = _run(
        EVAL,
        "--checkpoint",
        str(run),
        "--data-root",
        tiny_reid_root,
        "--workers",
        "0",
        "--json",
        str(tmp_path / "own.json"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "own.json") as f:
        own = json.load(f)
    assert own == {k: v for k, v in _metrics(run)["results"]["deployed"]["single_query"].items() if k in own}
    proc = _run(
        EVAL,
        "--checkpoint",
        str(run),
        "--data-root",
        tiny_reid_root,
        "--dataset",
        "market1501",
        "--multi-query",
        "--workers",
        "0",
        "--json",
        str(tmp_path / "market.json"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "market.json") as f:
        assert json.load(f)["num_queries"] > 0
    proc = _run(
        EVAL,
        "--checkpoint",
        str(run),
        "--data-root",
        tiny_reid_root,
        "--dataset",
        "msmt17",
        "--multi-query",
        "--workers",
        "0",
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "msmt17" in proc.stderr and "gt_bbox" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_eval_reid_mean_over_the_random_splits(duke_run, tiny_reid_root, tmp_path):
    """--all-splits on VIPeR: each split scored as torchreid's evaluate_rank scores it, and the mean."""
    run, _ = duke_run
    out = tmp_path / "viper.json"
    proc = _run(
        EVAL,
        "--checkpoint",
        str(run),
        "--data-root",
        tiny_reid_root,
        "--dataset",
        "viper",
        "--all-splits",
        "--workers",
        "0",
        "--max-rank",
        "20",
        "--json",
        str(out),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    with open(out) as f:
        report = json.load(f)
    assert report["mean"]["num_splits"] == len(report["splits"]) == VIPER_COUNTS["splits"]
    model, _ = load_model_file(str(run))
    rank1, maps = [], []
    for k in (0, 7, 19):  # a few splits against the oracle, the mean over all of them
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = VIPeR(root=tiny_reid_root, split_id=k, verbose=False)
        cmc, m_ap = _oracle(model, ds.query, ds.gallery)
        assert report["splits"][k]["split_id"] == k
        assert report["splits"][k]["rank1"] == pytest.approx(cmc[0], abs=1e-6)
        assert report["splits"][k]["mAP"] == pytest.approx(m_ap, abs=1e-6)
    for s in report["splits"]:
        rank1.append(s["rank1"])
        maps.append(s["mAP"])
    assert report["mean"]["rank1"] == pytest.approx(np.mean(rank1), abs=1e-12)
    assert report["mean"]["mAP"] == pytest.approx(np.mean(maps), abs=1e-12)
    assert "mean over 20 splits" in proc.stdout


def test_all_splits_refuses_a_run_trained_on_that_set(tmp_path, tiny_reid_root):
    from reid_srdl.models import build_model

    torch.manual_seed(0)
    path = str(tmp_path / "viper_model.pt")
    save_model_file(build_model("small_reid", 5, feature_dim=32), path, task="reid", data="viper", height=64, width=32)
    proc = _run(
        EVAL, "--checkpoint", path, "--data-root", tiny_reid_root, "--dataset", "viper", "--all-splits", cwd=tmp_path
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --all-splits: {path} was trained on viper, so the other splits' test identities are its training "
        "identities; train one run per split (data.split_id) and evaluate each with --split-id"
    ]
    proc = _run(
        EVAL,
        "--checkpoint",
        path,
        "--data-root",
        tiny_reid_root,
        "--dataset",
        "dukemtmcreid",
        "--all-splits",
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "dukemtmcreid has one fixed split" in proc.stderr


def test_train_cli_bad_data_choice_is_one_line(tmp_path, tiny_reid_root):
    proc = _run(
        TRAIN,
        "data.sources=[dukemtmcreid,sensereid]",
        f"data.root={tiny_reid_root}",
        *TINY,
        f"train.output_dir={tmp_path}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and not list(tmp_path.iterdir())
    assert proc.stderr.strip().splitlines() == [
        "error: data.sources: 'sensereid' is a test-only data set (its training split is its own test images); "
        "give it in data.targets"
    ]
    proc = _run(
        TRAIN, "data.targets=[grid]", f"data.root={tiny_reid_root}", *TINY, f"train.output_dir={tmp_path}", cwd=tmp_path
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "no GRID data under" in proc.stderr and "underground_reid/probe/ is missing" in proc.stderr
