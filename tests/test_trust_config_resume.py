"""--resume checks every field of last.pt against its schema first: a malformed field (wrong
type, out of range, missing, inconsistent with the run's stages or its optimizer) is one line
naming the field, exit code 2, and the run folder is left exactly as it was."""

import os
import shutil

import pytest
import torch
from tiny_runs import Interrupt, reid_overrides
from trust_helpers import one_line

from reid_srdl import load_config
from reid_srdl.cli import train as train_cli
from reid_srdl.core import checkpoint as ckpt
from reid_srdl.engine.loop import TrainingLoop
from reid_srdl.engine.trainer import Trainer

pytestmark = pytest.mark.usefixtures("single_thread")

EPOCHS = 4  # SRDL: stage 1 = epochs 1-2, stage 2 = epochs 3-4


@pytest.fixture(scope="module")
def stopped_run(tiny_market_root, tmp_path_factory):
    """An SRDL run of 4 epochs stopped after its first: last.pt holds epoch 1, stage 0 and the
    SGD momentum of the stage under way."""
    out = tmp_path_factory.mktemp("resume_schema")
    cfg = load_config(None, reid_overrides(tiny_market_root, out, "method.name=srdl", epochs=EPOCHS, max_batches=1))
    original = TrainingLoop.train_epoch

    def train_epoch(self, epoch):
        if epoch == 1:
            raise Interrupt
        return original(self, epoch)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TrainingLoop, "train_epoch", train_epoch)
        with pytest.raises(Interrupt):
            Trainer(cfg, os.path.join(str(out), "run")).fit()
    return os.path.join(str(out), "run")


def _snapshot(folder):
    found = {}
    for d, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(d, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = f.read()
    return found


def _resume_error(stopped_run, tmp_path, capsys, edit) -> str:
    """Resume a copy of the stopped run whose last.pt was changed by ``edit(state)``; assert
    exit code 2 and an untouched folder; return the one stderr line."""
    run = str(tmp_path / "run")
    shutil.copytree(stopped_run, run)
    last = os.path.join(run, ckpt.LAST_FILE)
    state = torch.load(last, weights_only=True)
    edit(state)
    torch.save(state, last)
    before = _snapshot(run)
    assert train_cli.main(["--resume", run]) == 2
    line = one_line(capsys.readouterr().err)
    assert _snapshot(run) == before  # nothing written, no lock file left
    return line.replace(last, "LAST")


def _set(key, value):
    def edit(state):
        state[key] = value

    return edit


def _set_in(key, inner, value):
    def edit(state):
        state[key][inner] = value

    return edit


def _drop(key):
    return lambda state: state.pop(key)


PREFIX = "error: cannot resume LAST: "
AFTER_1 = " (the state after 1 of 4 epochs)"


@pytest.mark.parametrize(
    "edit, message",
    [
        # The case of issue 27: a negative epoch trained 7 epochs of a 4-epoch run and reported 4.
        (_set("epoch", -3), "epoch: expected an integer in 0..4, got -3"),
        (_set("epoch", 5), "epoch: expected an integer in 0..4, got 5"),
        (_set("epoch", "1"), "epoch: expected an integer in 0..4, got '1'"),
        (_set("epoch", True), "epoch: expected an integer in 0..4, got True"),
        (_set("epoch", 1.0), "epoch: expected an integer in 0..4, got 1.0"),
        (_set("trainable", [1, 2]), "trainable: expected a mapping, got a list of 2 item(s)"),
        (_set("method", None), "method: expected a mapping, got None"),
        (_set("config", "x"), "config: expected a mapping, got 'x'"),
        (
            _set("history", {"train_seconds": float("nan")}),
            "history.train_seconds: expected a finite number >= 0, got nan",
        ),
        (
            _set("history", {"train_seconds": -1.0}),
            "history.train_seconds: expected a finite number >= 0, got -1.0",
        ),
        (_set("history", {}), "history: missing train_seconds"),
        (_set("stage_flops", [-1]), "stage_flops[0]: expected an integer >= 0, got -1"),
        (_set("stage_flops", "many"), "stage_flops: expected a list of an integer >= 0, got 'many'"),
        (_set("optimizer", {"state": {}}), "optimizer: missing param_groups"),
        (_set("optimizer", 3), "optimizer: expected a mapping with keys state, param_groups or nothing (null), got 3"),
    ],
)
def test_a_malformed_field_is_named_before_anything_runs(stopped_run, tmp_path, capsys, edit, message):
    assert _resume_error(stopped_run, tmp_path, capsys, edit) == PREFIX + message


def test_a_tensor_that_is_not_one_is_named(stopped_run, tmp_path, capsys):
    def edit(state):
        key = sorted(state["trainable"])[0]
        state["trainable"][key] = [0.0]
        edit.key = key

    line = _resume_error(stopped_run, tmp_path, capsys, edit)
    assert line == PREFIX + f"trainable[{edit.key!r}]: expected a dense tensor, got a builtins.list"


@pytest.mark.parametrize(
    "edit, message",
    [
        # Epoch 1 of 4 is in SRDL's first stage (0-based stage 0).
        (_set_in("method", "stage", 1), "method.stage: expected an integer in 0..0, got 1" + AFTER_1),
        (_set_in("method", "stage", 7), "method.stage: expected an integer in 0..0, got 7" + AFTER_1),
        (
            _set_in("method", "stage", "0"),
            "method.stage: expected an integer in 0..0, got '0'" + AFTER_1,
        ),
        (
            _set_in("method", "bank_stats", {"acc": float("inf")}),
            # (refused by last.pt's own schema already: plain data holds finite numbers)
            "method.bank_stats.acc: expected a string, a number, true/false or null or a tensor, dtype, device or "
            "size, got inf",
        ),
        (
            _set_in("method", "teacher", 1),
            "method: unexpected key 'teacher' (known: stage, bank_stats)" + AFTER_1,
        ),
        (
            _set("stage_flops", [1, 2, 3]),
            "stage_flops: 3 entries, but epoch 1 is in stage 1 (one entry per stage begun)",
        ),
        (
            _set("optimizer", None),
            "optimizer: missing, but epoch 1 is inside stage 1, whose optimizer state (momentum, moments) "
            "an exact resume needs",
        ),
    ],
)
def test_a_field_that_does_not_fit_the_run_s_stages_is_named(stopped_run, tmp_path, capsys, edit, message):
    assert _resume_error(stopped_run, tmp_path, capsys, edit) == PREFIX + message


def test_the_stage_must_match_the_epoch_at_a_stage_boundary(stopped_run, tmp_path, capsys):
    def edit(state):  # epoch 2 ends SRDL's first stage: the method is in stage 1 from then on
        state["epoch"], state["optimizer"] = 2, None

    line = _resume_error(stopped_run, tmp_path, capsys, edit)
    assert line == PREFIX + "method.stage: expected an integer in 1..1, got 0 (the state after 2 of 4 epochs)"


def _optimizer_edit(change):
    def edit(state):
        change(state["optimizer"])

    return edit


def _first_buffer(optimizer):
    key = sorted(optimizer["state"])[0]
    return key, optimizer["state"][key]


@pytest.mark.parametrize("what", ["shape", "momentum", "groups", "params", "unknown_entry"])
def test_an_optimizer_state_that_does_not_fit_is_named(stopped_run, tmp_path, capsys, what):
    expected = {}

    def change(opt):
        group = opt["param_groups"][0]
        if what == "shape":
            key, buffers = _first_buffer(opt)
            shape = tuple(buffers["momentum_buffer"].shape)
            buffers["momentum_buffer"] = torch.zeros(3, 3)
            expected["m"] = (
                f"optimizer.state.{key}.momentum_buffer: does not fit: a (3, 3) torch.float32 tensor, "
                f"the parameter is {shape}"
            )
        elif what == "momentum":
            group["momentum"] = 5.0
            expected["m"] = "optimizer.param_groups[0].momentum: 5.0, but the config gives 0.9"
        elif what == "groups":
            opt["param_groups"].append(dict(group))
            expected["m"] = "optimizer.param_groups: 2 groups, the optimizer has 1"
        elif what == "params":
            count = len(group["params"])
            group["params"] = group["params"][:-1]
            expected["m"] = (
                f"optimizer.param_groups[0].params: expected the {count} parameter numbers of the network, got ["
            )
        else:
            opt["state"][10**6] = {"momentum_buffer": torch.zeros(1)}
            expected["m"] = "optimizer.state: an entry 1000000 for no parameter of the optimizer"

    line = _resume_error(stopped_run, tmp_path, capsys, _optimizer_edit(change))
    assert line.startswith(PREFIX + expected["m"]), line


def test_metrics_lines_that_are_not_records_are_dropped_on_resume(tmp_path):
    from reid_srdl.engine.logger import METRICS_LINES, RunLogger

    path = tmp_path / METRICS_LINES
    path.write_bytes(
        b'{"epoch": 1, "loss": 2.0}\n'
        b"\xff\xfe not text\n"  # bytes that are not UTF-8 (a traceback before)
        b"[1, 2]\n"  # JSON, but not a record (a TypeError traceback before)
        b'{"epoch": "2"}\n'  # an epoch that is not a number
        b'{"epoch": 2, "loss": 1.5}\n'
        b'{"epoch": 3, "loss": 1.0}\n'  # trained again after the resume
        b'{"epoch": 3, "lo'  # cut by a kill mid-write
    )
    RunLogger(str(tmp_path), tensorboard=False, start_epoch=2).close()
    assert path.read_text() == '{"epoch": 1, "loss": 2.0}\n{"epoch": 2, "loss": 1.5}\n'
