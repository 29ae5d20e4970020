"""Bad input gets one line and exit code 2, never a traceback: file names, cameras, output
folders, option ranges, devices, opsets, a corrupt image read by DataLoader workers; floats
as Python reads them; the NaN stop and a changed config on resume say what happened."""

import os
import pickle

import pytest
import torch
import yaml
from tiny_runs import save_tiny_model
from trust_helpers import market_split_dir, one_line, reid_train_args, tiny_market_copy

from reid_srdl import load_config
from reid_srdl.cli import eval_reid as eval_cli
from reid_srdl.cli import export as export_cli
from reid_srdl.cli import train as train_cli
from reid_srdl.config import ConfigError
from reid_srdl.data.indexed import ImageReadError

pytestmark = pytest.mark.usefixtures("single_thread")


def train_error(capsys, args) -> str:
    """reid-train's one stderr line for ``args`` (asserting exit code 2)."""
    assert train_cli.main(args) == 2
    return one_line(capsys.readouterr().err)


def argparse_error(capsys, main, args) -> str:
    """An argument refused by argparse: exit code 2 and the message on the last line (after
    argparse's usage line)."""
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


# ----------------------------------------------------------------------------- data folders
@pytest.mark.parametrize(
    "name, message",
    [
        ("person_001.jpg", "is not a Market-1501 image name; expected PPPP_cCsS_FFFFFF_BB.jpg"),
        ("0001_c9s1_000001_01.jpg", "camera c9 is outside c1..c6"),
    ],
)
def test_a_file_name_that_does_not_parse_is_one_line(tiny_market_root, tmp_path, capsys, name, message):
    root = tiny_market_copy(tiny_market_root, tmp_path / "data")
    bad = os.path.join(market_split_dir(root, "bounding_box_test"), name)
    open(bad, "wb").write(b"")
    line = train_error(capsys, reid_train_args(root, tmp_path / "runs"))
    assert message in line and bad in line
    assert not os.path.exists(tmp_path / "runs")


@pytest.mark.parametrize("where", ["proc", "under_a_file"])
def test_a_run_folder_that_cannot_be_created_is_one_line(tiny_market_root, tmp_path, capsys, where):
    (tmp_path / "a_file").write_text("x")
    out = "/proc/reid_srdl_test/runs" if where == "proc" else str(tmp_path / "a_file" / "runs")
    line = train_error(capsys, reid_train_args(tiny_market_root, out))
    assert line.startswith("error: cannot create the run folder ") and "train.output_dir" in line


@pytest.mark.parametrize("where", ["proc", "under_a_file", "a_folder"])
def test_export_to_a_path_that_cannot_be_written_is_one_line(tmp_path, capsys, where):
    model = save_tiny_model(tmp_path / "final.pt")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_folder").mkdir()
    target = {
        "proc": "/proc/reid_srdl_test.onnx",
        "under_a_file": str(tmp_path / "a_file" / "m.onnx"),
        "a_folder": str(tmp_path / "a_folder"),
    }[where]
    before = sorted(os.listdir(tmp_path))
    assert export_cli.main([model, "--onnx", target]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("error: cannot write --onnx file ") and target in line
    assert sorted(os.listdir(tmp_path)) == before and os.listdir(tmp_path / "a_folder") == []


# ----------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr=-0.1", "optim.lr must be > 0, got -0.1"),
        ("data.synthetic_ids=2", "data.synthetic_ids must be in 4..1501, got 2"),
        ("train.max_batches=-3", "train.max_batches must be >= 0, got -3"),
        ("optim.weight_decay=-1e-4", "optim.weight_decay must be >= 0, got -0.0001"),
        ("optim.momentum=1.5", "optim.momentum must be in 0..1, got 1.5"),
        ("optim.gamma=0", "optim.gamma must be > 0, got 0.0"),
        ("optim.lr=nan", "optim.lr must be a finite number, got nan"),
        ("model.feature_dim=-1", "model.feature_dim must be in 0..65536, got -1 (0 = no feature layer)"),
        ("train.seed=-1", "train.seed must be >= 0, got -1"),
        ("data.synthetic_seed=-2", "data.synthetic_seed must be >= 0, got -2"),
        ("eval.max_rank=0", "eval.max_rank must be in 1..100000, got 0"),
        ("method.srdl.temperature=0", "method.srdl.temperature must be > 0, got 0.0"),
        ("method.kd.kd_weight=-1", "method.kd.kd_weight must be >= 0, got -1.0"),
    ],
)
def test_out_of_range_options_are_one_line_before_anything_runs(tmp_path, capsys, override, message):
    out = tmp_path / "runs"
    line = train_error(capsys, reid_train_args(tmp_path / "no_data_needed", out, override))
    assert line == f"error: {message}" or line.startswith(f"error: {message} (")
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_one_line(tmp_path, capsys):
    line = train_error(capsys, reid_train_args(tmp_path, tmp_path / "runs", "train.device=cuda"))
    assert "train.device='cuda' but no CUDA device is available" in line


@pytest.mark.parametrize("text", ["5e-4", "1e30", "2E-4", "+3.5e+2", "1_000.5", ".5", "7", "1e-07"])
def test_floats_are_read_as_python_reads_them(tmp_path, text):
    expected = float(text)  # the oracle: Python's own float()
    # method.byot.hint_weight: a float key (range >= 0).
    from_override = load_config(None, [f"method.byot.hint_weight={text}"]).method.byot.hint_weight
    path = tmp_path / "c.yaml"
    path.write_text(f"method:\n  byot:\n    hint_weight: {text}\n")
    from_file = load_config(str(path)).method.byot.hint_weight
    assert from_override == from_file == expected and type(from_file) is float


def test_yaml_file_floats_without_a_dot(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-2\n  weight_decay: 5e-4\n  milestones: [5e-1, 7.5e-1]\n")
    raw = yaml.safe_load(path.read_text())
    assert raw["optim"]["weight_decay"] == "5e-4"  # what PyYAML (YAML 1.1) gives: a string
    cfg = load_config(str(path), ["optim.gamma=1e-1"])
    optim = cfg.optim
    assert (optim.lr, optim.weight_decay, optim.milestones, optim.gamma) == (0.01, 0.0005, (0.5, 0.75), 0.1)
    with pytest.raises(ConfigError, match="key 'optim.lr' expects float, got str 'fast'"):
        load_config(None, ["optim.lr=fast"])


@pytest.mark.parametrize(
    "tool, args, flag",
    [
        ("eval", ["--checkpoint", "RUN", "--data-root", "R", "--height", "0"], "--height"),
        ("eval", ["--checkpoint", "RUN", "--data-root", "R", "--width", "-4"], "--width"),
        ("eval", ["--checkpoint", "RUN", "--data-root", "R", "--batch-size", "0"], "--batch-size"),
        ("eval", ["--checkpoint", "RUN", "--data-root", "R", "--workers", "-1"], "--workers"),
        ("eval", ["--query", "q", "--gallery", "g", "--rerank", "--rerank-k1", "0"], "--rerank-k1"),
        ("export", ["RUN", "--onnx", "m.onnx", "--height", "0"], "--height"),
        ("export", ["RUN", "--onnx", "m.onnx", "--opset", "3"], "--opset"),
        ("export", ["RUN", "--onnx", "m.onnx", "--opset", "99"], "--opset"),
    ],
)
def test_cli_numbers_out_of_range_are_refused(capsys, tool, args, flag):
    main = {"eval": eval_cli.main, "export": export_cli.main}[tool]
    line = argparse_error(capsys, main, args)
    assert f"argument {flag}: must be" in line and "got" in line, line


def test_export_opset_range_is_the_one_torch_exports():
    from torch.onnx import _constants

    assert export_cli.opset_range() == (_constants.ONNX_MIN_OPSET, _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)


# ----------------------------------------------------------------------------- worker exceptions
def test_image_read_error_survives_torch_worker_wrapping():
    from torch._utils import ExceptionWrapper

    original = "cannot read image '/data/x.jpg': cannot identify image file '/data/x.jpg'"
    try:
        raise ImageReadError(original)
    except ImageReadError:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 1")
    with pytest.raises(ImageReadError) as e:
        wrapper.reraise()  # what the DataLoader does in the main process
    assert str(e.value) == original
    assert pickle.loads(pickle.dumps(e.value)).args == (original,)


def test_corrupt_training_image_with_two_workers_is_the_same_line_as_with_none(tiny_market_root, tmp_path, capsys):
    root = tiny_market_copy(tiny_market_root, tmp_path / "data")
    train_dir = market_split_dir(root, "bounding_box_train")
    # Not the first file: the FLOP count decodes sample 0 in the main process.
    bad = os.path.join(train_dir, sorted(os.listdir(train_dir))[-1])
    open(bad, "wb").write(b"\xff\xd8 not really a jpeg")
    lines = []
    for workers in (0, 2):
        args = reid_train_args(root, tmp_path / f"runs{workers}", f"data.workers={workers}", "train.max_batches=0")
        lines.append(train_error(capsys, args))
    assert lines[0] == lines[1]
    assert lines[0].startswith(f"error: cannot read image '{bad}'") and "worker" not in lines[0]


# ----------------------------------------------------------------------------- training messages
def test_nan_in_the_first_epoch_says_no_checkpoint_exists_yet(tiny_market_root, tmp_path, monkeypatch):
    from reid_srdl.engine.trainer import Trainer, TrainingDivergedError

    cfg = load_config(None, reid_train_args(tiny_market_root, tmp_path, "train.run_name=run"))
    trainer = Trainer(cfg, os.path.join(str(tmp_path), "run"))
    original = type(trainer.method).forward

    def forward(self, images, labels, indices):
        out = original(self, images, labels, indices)
        if self.training:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(type(trainer.method), "forward", forward)
    with pytest.raises(TrainingDivergedError) as e:
        trainer.fit()
    message = str(e.value)
    assert message.startswith("loss is nan at epoch 1, batch 1 (stage 1); stopped, no checkpoint exists yet")
    assert "last.pt" not in message and not os.path.exists(tmp_path / "run" / "last.pt")


def test_resume_with_a_changed_config_names_the_keys(tiny_market_root, tmp_path, capsys):
    args = reid_train_args(tiny_market_root, tmp_path, "train.run_name=run", "train.epochs=2", "train.max_batches=1")
    assert train_cli.main(args) == 0
    capsys.readouterr()
    run = tmp_path / "run"
    with open(run / "config.yaml") as f:
        cfg = yaml.safe_load(f)
    cfg["optim"]["lr"], cfg["train"]["epochs"] = 0.05, 3
    with open(run / "config.yaml", "w") as f:
        yaml.safe_dump(cfg, f)
    line = train_error(capsys, ["--resume", str(run)])
    assert "differs from the config the training state was written with" in line
    assert "optim.lr: 0.1 -> 0.05; train.epochs: 2 -> 3" in line
