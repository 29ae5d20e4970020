"""A crafted .pt file never runs code: every entry point that reads one refuses it in one
line naming the conversion tool, and the payload (it would create a marker file) never runs.
Also: the files the project writes load with PyTorch's safe loader (the conversion tool
is tested in test_convert_checkpoint.py)."""

import os
import shutil

import numpy as np
import pytest
import torch
from tiny_runs import save_tiny_model
from trust_helpers import (
    assert_refused,
    malicious_model_file,
    malicious_run_dir,
    one_line,
    reid_train_args,
    write_malicious,
)

from reid_srdl import load_config
from reid_srdl.api import ReIDSearcher
from reid_srdl.cli import eval_reid as eval_cli
from reid_srdl.cli import export as export_cli
from reid_srdl.cli import train as train_cli
from reid_srdl.core import checkpoint as ckpt
from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.core.torch_files import UnsafeFileError
from reid_srdl.engine.loop import TrainingLoop
from reid_srdl.engine.trainer import Trainer
from reid_srdl.evaluation.io import save_features

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "PAYLOAD_RAN"


class StopAtStage2(Exception):
    pass


@pytest.fixture(scope="module")
def srdl_in_stage2(tiny_market_root, tmp_path_factory):
    """A real SRDL run folder stopped right after stage 1 (epoch 1 of 2): config.yaml,
    last.pt (epoch 1), stage1.pt and stage1_logits.pt, all written by the trainer."""
    out = tmp_path_factory.mktemp("srdl_stage2")
    args = reid_train_args(tiny_market_root, out, "method.name=srdl", "train.run_name=run", "train.max_batches=1")
    cfg = load_config(None, args)
    trainer = Trainer(cfg, os.path.join(str(out), "run"))
    original = TrainingLoop.train_epoch

    def train_epoch(self, epoch):
        if epoch == 1:
            raise StopAtStage2
        return original(self, epoch)

    TrainingLoop.train_epoch = train_epoch
    try:
        with pytest.raises(StopAtStage2):
            trainer.fit()
    finally:
        TrainingLoop.train_epoch = original
    return os.path.join(str(out), "run")


def test_every_file_the_trainer_writes_loads_with_the_safe_loader(srdl_in_stage2):
    names = sorted(n for n in os.listdir(srdl_in_stage2) if n.endswith(".pt"))
    assert names == ["last.pt", "stage1.pt", "stage1_logits.pt"]
    for name in names:  # torch itself is the oracle: weights_only=True refuses any object
        obj = torch.load(os.path.join(srdl_in_stage2, name), weights_only=True)
        assert isinstance(obj, dict)
    state = torch.load(os.path.join(srdl_in_stage2, "last.pt"), weights_only=True)
    assert state["epoch"] == 1 and state["method"]["stage"] == 1
    assert set(state["method"]["bank_stats"]) == {"bank_train_acc", "bank_entropy", "bank_entropy_max"}


# ----------------------------------------------------------------------------- the 8 entry points
def test_eval_reid_checkpoint_run_dir(tiny_market_root, tmp_path, marker, capsys):
    run = malicious_run_dir(tmp_path / "run", marker)
    code = eval_cli.main(["--checkpoint", run, "--data-root", tiny_market_root, "--json", str(tmp_path / "r.json")])
    assert code == 2
    assert_refused(capsys.readouterr().err, marker)
    assert not os.path.exists(tmp_path / "r.json")


def test_eval_reid_checkpoint_model_file(tiny_market_root, tmp_path, marker, capsys):
    path = malicious_model_file(tmp_path / "final.pt", marker)
    assert eval_cli.main(["--checkpoint", path, "--data-root", tiny_market_root]) == 2
    assert_refused(capsys.readouterr().err, marker)


def test_export_run_dir(tmp_path, marker, capsys):
    run = malicious_run_dir(tmp_path / "run", marker)
    assert export_cli.main([run, "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert_refused(capsys.readouterr().err, marker)
    assert not os.path.exists(tmp_path / "m.onnx")


def _resume_copy(src, dest, replaced, marker):
    run = str(shutil.copytree(src, dest))
    write_malicious(os.path.join(run, replaced), marker, {"format": ckpt.TRAIN_STATE_FORMAT, "epoch": 1})
    return run


@pytest.mark.parametrize("replaced", ["last.pt", "stage1.pt", "stage1_logits.pt"])
def test_train_resume_of_an_srdl_run_in_stage_2(srdl_in_stage2, tmp_path, marker, capsys, replaced):
    run = _resume_copy(srdl_in_stage2, tmp_path / "run", replaced, marker)
    before = sorted(os.listdir(run))
    assert train_cli.main(["--resume", run]) == 2
    captured = capsys.readouterr()
    assert_refused(captured.err, marker)
    assert replaced in captured.err
    assert sorted(os.listdir(run)) == before  # nothing trained, nothing written


def test_kd_teacher_run_dir(tiny_market_root, tmp_path, marker, capsys):
    teacher = malicious_run_dir(tmp_path / "teacher", marker)
    out = tmp_path / "runs"
    args = reid_train_args(tiny_market_root, out, "method.name=kd", f"method.kd.teacher={teacher}")
    assert train_cli.main(args) == 2
    assert_refused(capsys.readouterr().err, marker)
    assert not os.path.exists(out)  # the run folder claimed for it was removed again


def test_searcher_from_images_run_dir(tiny_market_root, tmp_path, marker):
    run = malicious_run_dir(tmp_path / "run", marker)
    with pytest.raises(ReidSrdlError) as e:
        ReIDSearcher.from_images(run, [os.path.join(tiny_market_root, "nothing.jpg")])
    assert isinstance(e.value, UnsafeFileError)
    assert_refused(str(e.value), marker)


def test_searcher_load_with_model_run_dir(tmp_path, marker):
    gallery = tmp_path / "gallery.npz"
    save_features(str(gallery), np.eye(3, dtype=np.float32), [1, 2, 3], [0, 0, 1])
    run = malicious_run_dir(tmp_path / "run", marker)
    with pytest.raises(ReidSrdlError) as e:
        ReIDSearcher.load(str(gallery), model=run)
    assert_refused(str(e.value), marker)


def test_model_weights_file_is_refused_or_named(tmp_path, marker):
    from reid_srdl.models import build_model
    from reid_srdl.models.weights import WeightsMismatchError

    path = write_malicious(tmp_path / "resnet50.pth", marker, {"state_dict": {}})
    with pytest.raises(UnsafeFileError) as e:
        build_model("resnet50", 4, weights=path)
    assert_refused(str(e.value), marker)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00\x01 these bytes are no PyTorch file")
    with pytest.raises(WeightsMismatchError) as e:
        build_model("resnet50", 4, weights=str(garbage))
    line = one_line(str(e.value))
    assert "garbage.pth" in line and "weights_only" not in line


def test_model_weights_garbage_through_the_cli(tiny_market_root, tmp_path, capsys):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"definitely not torch")
    args = reid_train_args(tiny_market_root, tmp_path / "runs", "model.name=resnet50", f"model.weights={garbage}")
    assert train_cli.main(args) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("error: could not read ") and "garbage.pth" in line and "weights_only" not in line


def test_truncated_model_file_is_one_line(tmp_path, capsys):
    path = save_tiny_model(tmp_path / "final.pt")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    assert export_cli.main([path, "--onnx", str(tmp_path / "m.onnx")]) == 2
    line = one_line(capsys.readouterr().err)
    assert "cannot read model file" in line and "final.pt" in line and "weights_only" not in line
