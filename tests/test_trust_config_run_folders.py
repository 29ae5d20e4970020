"""Two trainings never share a run folder: a chosen ``train.run_name`` (and a ``--resume``)
is locked for as long as its training runs; the second one stops with one line, before
anything expensive, and leaves nothing behind."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from trust_helpers import REPO, one_line, reid_train_args

from reid_srdl import load_config
from reid_srdl.cli import train as train_cli
from reid_srdl.config import save_config
from reid_srdl.core import checkpoint as ckpt

pytestmark = pytest.mark.usefixtures("single_thread")

# One process claiming a run folder by name once the other is ready too (a barrier of files
# in a folder) and holding it for a while (as a training would), then saying what happened.
_CLAIM_AT = """
import os, sys, time
from reid_srdl.core import checkpoint as ckpt
folder, barrier, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])
open(os.path.join(barrier, str(os.getpid())), "w").close()
while len(os.listdir(barrier)) < 2:
    time.sleep(0.001)
try:
    claim = ckpt.create_run_dir(folder, unique=False)
except ckpt.CheckpointError as e:
    print("refused", e)
else:
    with open(folder + "/owner.txt", "a") as f:
        f.write(str(os.getpid()) + "\\n")
    time.sleep(hold)
    claim.keep()
    print("claimed")
"""


def _listing(root) -> list:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_two_processes_claiming_one_name_at_once_get_one_folder_and_one_error(tmp_path):
    folder = str(tmp_path / "runs" / "mine")
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIM_AT, folder, str(barrier), "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONPATH=REPO),
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outputs]
    results = sorted(o[0].strip() for o in outputs)
    assert results[0] == "claimed"
    # The loser names the folder and the process that holds it: the winner, whose pid is the
    # one line of owner.txt (written by the winner alone).
    with open(os.path.join(folder, "owner.txt")) as f:
        owners = f.read().split()
    assert len(owners) == 1
    assert results[1] == f"refused {folder} is in use by another training run (process {owners[0]}); " + (
        "pick another train.run_name"
    )
    assert os.listdir(folder) == ["owner.txt"]  # the lock file went with the winner's claim


def test_a_named_run_whose_folder_is_in_use_stops_before_anything_expensive(tmp_path, capsys):
    out = tmp_path / "runs"
    held = ckpt.create_run_dir(str(out / "mine"), unique=False)  # another training holds it
    try:
        # data.root does not exist: a run that got past the claim would fail on the data instead.
        args = reid_train_args(tmp_path / "no_data", out, "train.run_name=mine")
        assert train_cli.main(args) == 2
        captured = capsys.readouterr()
        line = one_line(captured.err)
        assert line == (
            f"error: {out / 'mine'} is in use by another training run (process {os.getpid()}); "
            "pick another train.run_name"
        )
        assert "run directory:" not in captured.out
        assert _listing(out) == [os.path.join("mine", ckpt.LOCK_FILE)]  # only the holder's lock
    finally:
        held.keep()
    assert _listing(out) == []


def test_resume_of_a_run_in_use_is_refused_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    save_config(load_config(None, ["method.name=vanilla"]), str(run / ckpt.CONFIG_FILE))
    before = _listing(run)
    held = ckpt.claim_existing_run_dir(str(run))
    try:
        assert train_cli.main(["--resume", str(run)]) == 2
        line = one_line(capsys.readouterr().err)
        assert line == (
            f"error: {run} is in use by another training run (process {os.getpid()}); "
            "wait for it to end, or stop it, before resuming"
        )
    finally:
        held.keep()
    assert _listing(run) == before


def test_a_lock_left_by_a_killed_run_does_not_block_the_next(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / ckpt.LOCK_FILE).write_text("999999\n")  # what kill -9 leaves: a file nobody locks
    claim = ckpt.create_run_dir(str(folder), unique=False)
    assert (folder / ckpt.LOCK_FILE).read_text() == f"{os.getpid()}\n"
    claim.release()
    assert os.listdir(folder) == []  # a folder it did not create stays, emptied of the lock


# reid-train held just before claiming its run folder until both processes are there
# (a barrier of files in a folder), so that two trainings given one train.run_name race for it.
_SYNCED_START = """
import os, sys, time
from reid_srdl.cli import train
from reid_srdl.engine import trainer

barrier, claim = sys.argv[1], trainer.claim_run_dir

def synced_claim(cfg):
    open(os.path.join(barrier, str(os.getpid())), "w").close()
    while len(os.listdir(barrier)) < 2:
        time.sleep(0.01)
    return claim(cfg)

trainer.claim_run_dir = synced_claim
sys.exit(train.main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_two_trainings_started_together_with_one_run_name(tiny_market_root, tmp_path):
    out = tmp_path / "runs"
    script = _SYNCED_START
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                script,
                str(barrier),
                *reid_train_args(tiny_market_root, out, f"train.seed={seed}", "train.run_name=mine"),
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
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 2], [r[1] for r in results]
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    line = one_line(results[loser][1])
    assert line.startswith(f"error: {out / 'mine'} is in use by another training run (process ")
    assert "run directory:" not in results[loser][0]
    with open(out / "mine" / "config.yaml") as f:
        assert yaml.safe_load(f)["train"]["seed"] == (11, 22)[winner]
    with open(out / "mine" / "metrics.jsonl") as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2]  # one run's epochs, once
    assert ckpt.LOCK_FILE not in os.listdir(out / "mine")
