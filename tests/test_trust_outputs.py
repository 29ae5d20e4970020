"""No silent wrong results from outputs: unique run folders (two runs started in the same
second), eval_reid's outputs all-or-nothing, and files created with the umask's mode."""

import json
import os
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from tiny_runs import save_tiny_model
from trust_helpers import REPO, one_line, reid_train_args

from reid_srdl.cli import eval_reid as eval_cli
from reid_srdl.core import checkpoint as ckpt
from reid_srdl.evaluation.io import save_features

pytestmark = pytest.mark.usefixtures("single_thread")


# ----------------------------------------------------------------------------- run folders
def test_create_run_dir_is_unique_and_keeps_chosen_names(tmp_path):
    base = str(tmp_path / "runs" / "market1501_small_reid_srdl_20260101-000000")
    claims = [ckpt.create_run_dir(base) for _ in range(3)]
    assert [c.path for c in claims] == [base, base + "_2", base + "_3"]
    assert all(os.path.isdir(c.path) for c in claims)
    # A chosen name is reused once its claim has ended while it holds no training state,
    # refused once it does.
    chosen = str(tmp_path / "runs" / "mine")
    first = ckpt.create_run_dir(chosen, unique=False)
    assert first.path == chosen
    first.keep()
    second = ckpt.create_run_dir(chosen, unique=False)
    assert second.path == chosen
    second.keep()
    assert os.listdir(chosen) == []  # the lock file goes with the claim
    open(os.path.join(chosen, ckpt.LAST_FILE), "wb").close()
    with pytest.raises(ckpt.CheckpointError, match="already holds a run; continue it with --resume"):
        ckpt.create_run_dir(chosen, unique=False)
    # Released while empty: the folder and the parents created for it go.
    claim = ckpt.create_run_dir(str(tmp_path / "new" / "deep" / "run"))
    claim.release()
    assert not os.path.exists(tmp_path / "new")


# reid-train in which the clock reads one fixed second (as for two runs started in the
# same second) and both processes are held just before naming their run folder until the
# same instant, so that they race for it.
STAMP = "20260101-120000"
_SYNCED_START = """
import sys, time
from reid_srdl.cli import train
from reid_srdl.engine import assembly, trainer

class SameSecond:
    def __getattr__(self, name):
        return getattr(time, name)

    def strftime(self, fmt, *args):
        return {stamp!r}

start_at, claim = float(sys.argv[1]), trainer.claim_run_dir

def synced_claim(cfg):
    time.sleep(max(0.0, start_at - time.time()))
    return claim(cfg)

assembly.time, trainer.claim_run_dir = SameSecond(), synced_claim
sys.exit(train.main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_two_runs_started_in_the_same_second_get_their_own_folders(tiny_market_root, tmp_path):
    out = tmp_path / "runs"
    script = _SYNCED_START.format(stamp=STAMP)
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    start_at = time.time() + 10  # time to import torch; a late start still collides (fixed clock)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                script,
                str(start_at),
                *reid_train_args(tiny_market_root, out, f"train.seed={seed}", "train.max_batches=1"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(tmp_path),
            env=env,
        )
        for seed in (11, 22)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1] for r in results]
    base = f"market1501_small_reid_vanilla_{STAMP}"
    folders = sorted(os.listdir(out))
    assert folders == [base, base + "_2"]
    seeds = []
    for folder in folders:
        with open(out / folder / "config.yaml") as f:
            seeds.append(yaml.safe_load(f)["train"]["seed"])
        with open(out / folder / "metrics.jsonl") as f:
            assert [json.loads(line)["epoch"] for line in f] == [1, 2]  # each epoch once
    assert sorted(seeds) == [11, 22]  # each folder holds its own run's config
    # Each process printed its own folder.
    printed = sorted(
        line.split(": ", 1)[1] for r in results for line in r[0].splitlines() if line.startswith("run directory: ")
    )
    assert printed == [str(out / f) for f in folders]


# ----------------------------------------------------------------------------- eval_reid outputs
@pytest.fixture
def feature_files(tmp_path):
    """Query/gallery feature files with paths, where query i matches gallery i (camera 1 vs 0)."""
    rng = np.random.default_rng(0)
    g = rng.normal(size=(6, 4)).astype(np.float32)
    q = g[:3] + 0.01
    save_features(str(tmp_path / "q.npz"), q, [1, 2, 3], [1, 1, 1], [f"q{i}.jpg" for i in range(3)])
    save_features(str(tmp_path / "g.npz"), g, [1, 2, 3, 4, 5, 6], [0] * 6, [f"g{i}.jpg" for i in range(6)])
    return str(tmp_path / "q.npz"), str(tmp_path / "g.npz")


def _listing(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs + [""])


@pytest.mark.parametrize(
    "bad", ["plot_is_a_folder", "json_under_a_file", "out_is_a_file", "json_in_proc", "same_file_twice"]
)
def test_eval_outputs_are_checked_before_computing_and_nothing_is_left(feature_files, tmp_path, capsys, bad):
    q, g = feature_files
    work = tmp_path / "work"
    (work / "cmc_folder").mkdir(parents=True)
    (work / "a_file").write_text("x")
    args = {
        "plot_is_a_folder": ["--json", str(work / "ok.json"), "--plot", str(work / "cmc_folder")],
        "json_under_a_file": ["--plot", str(work / "ok.png"), "--json", str(work / "a_file" / "r.json")],
        "out_is_a_file": ["--json", str(work / "ok.json"), "--visualize", "1", "--out", str(work / "a_file")],
        "json_in_proc": ["--plot", str(work / "ok.png"), "--json", "/proc/reid_srdl_test/r.json"],
        "same_file_twice": ["--json", str(work / "same"), "--plot", str(work / "same")],
    }[bad]
    before = _listing(work)
    assert eval_cli.main(["--query", q, "--gallery", g, *args]) == 2
    captured = capsys.readouterr()
    line = one_line(captured.err)
    assert line.startswith("error: ") and ("cannot write" in line or "same file" in line), line
    assert "Rank-1" not in captured.out  # stopped before computing
    assert _listing(work) == before  # no ok.json, no .tmp file, no folder


def test_an_error_after_the_outputs_are_staged_leaves_none_of_them(tmp_path, tiny_market_root, capsys, monkeypatch):
    """Checkpoint mode: features are extracted and staged, then the evaluation fails: neither
    the feature files nor the JSON appear, and no temporary file stays behind."""
    model = save_tiny_model(tmp_path / "final.pt")
    out = tmp_path / "out"

    def failing_evaluate(*a, **k):
        raise eval_cli.EvaluationInputError("simulated failure after extraction")

    monkeypatch.setattr(eval_cli, "evaluate", failing_evaluate)
    code = eval_cli.main(
        [
            "--checkpoint",
            model,
            "--data-root",
            tiny_market_root,
            "--workers",
            "0",
            "--save-features",
            str(out / "features"),
            "--json",
            str(out / "r.json"),
        ]
    )
    assert code == 2 and "simulated failure" in one_line(capsys.readouterr().err)
    assert not out.exists()


def test_eval_writes_all_outputs_together_with_the_umask_mode(feature_files, tmp_path, capsys):
    q, g = feature_files
    out = tmp_path / "out"
    previous = os.umask(0o022)
    try:
        assert (
            eval_cli.main(["--query", q, "--gallery", g, "--json", str(out / "r.json"), "--plot", str(out / "cmc.png")])
            == 0
        )
    finally:
        os.umask(previous)
    assert sorted(os.listdir(out)) == ["cmc.png", "r.json"]
    assert json.loads((out / "r.json").read_text())["rank1"] == 1.0  # query i's nearest is gallery i
    for name in ("cmc.png", "r.json"):
        assert stat.S_IMODE(os.stat(out / name).st_mode) == 0o644, name


# ----------------------------------------------------------------------------- file modes
def test_every_writer_uses_the_umask_mode(tiny_market_root, tmp_path):
    """Under umask 027 (so 0640, neither mkstemp's 0600 nor a hard-coded 0644): a training
    run's folder (config.yaml, last.pt, final.pt, metrics, CMC plot), feature files and a
    saved gallery."""
    from reid_srdl.api import ReIDSearcher
    from reid_srdl.cli import train as train_cli

    previous = os.umask(0o027)
    try:
        args = reid_train_args(
            tiny_market_root,
            tmp_path / "runs",
            "train.run_name=run",
            "train.epochs=1",
            "train.max_batches=1",
            "eval.plot=true",
        )
        assert train_cli.main(args) == 0
        save_features(str(tmp_path / "f.npz"), np.eye(2, dtype=np.float32), [1, 2], [0, 1])
        ReIDSearcher(np.eye(2, dtype=np.float32), [1, 2], [0, 1]).save(str(tmp_path / "gallery.npz"))
    finally:
        os.umask(previous)
    run = tmp_path / "runs" / "run"
    names = sorted(os.listdir(run))
    assert names == [
        "cmc_deployed.png",
        "config.yaml",
        "final.pt",
        "last.pt",
        "metrics.json",
        "metrics.jsonl",
        "open_set_deployed.png",
    ]
    for path in [run / n for n in names] + [tmp_path / "f.npz", tmp_path / "gallery.npz"]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640, path
