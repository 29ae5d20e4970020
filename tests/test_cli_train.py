"""tools/train.py end to end on the tiny fixtures: re-id (SRDL), classification (SRDL, then
KD from the first run as teacher), and the errors a user sees."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from fixtures_data import write_fashion_mnist

from reid_srdl.cli import train as train_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

QUIET = ["train.progress=false", "train.precision=fp32", "train.tensorboard=false", "data.workers=0"]


def reid_args(root, out, name):
    return [
        f"data.root={root}",
        "data.synthetic=false",
        "data.height=64",
        "data.width=32",
        "data.batch_size=8",
        "model.feature_dim=32",
        "train.epochs=2",
        "train.max_batches=2",
        f"train.output_dir={out}",
        f"train.run_name={name}",
        *QUIET,
    ]


@pytest.fixture(scope="module")
def tiny_fashion_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("fmnist"))
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 10
    # Class-dependent brightness so that the task is learnable, plus noise.
    images = (labels[:, None, None] * 20 + rng.integers(0, 40, size=(60, 28, 28))).astype(np.uint8)
    write_fashion_mnist(root, images[:40], labels[:40], images[40:], labels[40:])
    return root


@pytest.mark.slow
def test_reid_srdl_run_as_a_user_would(tiny_market_root, tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "train.py"), *reid_args(tiny_market_root, tmp_path, "cli")],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Rank-1" in proc.stdout and "multi query" in proc.stdout and "ensemble" in proc.stdout
    with open(tmp_path / "cli" / "metrics.json") as f:
        metrics = json.load(f)
    sq = metrics["results"]["deployed"]["single_query"]
    assert 0.0 <= sq["rank1"] <= sq["rank5"] <= sq["rank10"] <= 1.0
    assert f"{100 * sq['rank1']:.2f}" in proc.stdout  # the table shows what the JSON holds
    # the machine that trained it, so that tables mixing machines can say which ran what
    env = metrics["environment"]
    assert env["torch"] == torch.__version__ and env["cpus"] == os.cpu_count()
    if os.path.isfile("/proc/cpuinfo"):
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        assert env["cpu"] == names[0]


def test_classification_srdl_then_kd_from_it(tiny_fashion_root, tmp_path, capsys):
    common = [
        "data.name=fashion_mnist",
        f"data.root={tiny_fashion_root}",
        "data.batch_size=16",
        "model.name=resnet8",
        "train.epochs=2",
        f"train.output_dir={tmp_path}",
        "eval.multi_query=false",
        *QUIET,
    ]
    assert train_cli.main([*common, "train.run_name=teacher", "method.name=srdl"]) == 0
    out = capsys.readouterr().out
    assert "Top-1" in out and "Top-5" in out
    with open(tmp_path / "teacher" / "metrics.json") as f:
        teacher = json.load(f)
    assert teacher["task"] == "classification" and teacher["num_train"] == 40 and teacher["num_classes"] == 10
    assert (
        0.0 <= teacher["results"]["deployed"]["test"]["top1"] <= teacher["results"]["deployed"]["test"]["top5"] <= 1.0
    )

    kd = [*common, "train.run_name=student", "method.name=kd", f"method.kd.teacher={tmp_path / 'teacher'}"]
    assert train_cli.main(kd) == 0
    with open(tmp_path / "student" / "metrics.jsonl") as f:
        lines = [json.loads(x) for x in f]
    assert all("kd" in line and line["loss"] == pytest.approx(line["ce"] + line["kd"], rel=1e-5) for line in lines)


@pytest.mark.parametrize(
    "args, message",
    [
        (["model.name=resnet5"], "unknown model 'resnet5'; valid models: densenet121"),
        (["method.name=magic"], "method.name='magic' is not one of: byot, frskd, kd, one, srdl, vanilla"),
        (["optim.lr=fast"], "key 'optim.lr' expects float"),
        (["train.epoch=3"], "unknown key 'train.epoch'; valid keys in 'train': epochs"),
        (["--resume", "."], "is not a run directory"),
        (["model.weights=http://example.com/w.pth"], "model.weights URL http://example.com/w.pth: only https"),
        (["model.pretrained=imagenet", "model.name=resnet32"], "model 'resnet32' has no published ImageNet weights"),
        (
            ["model.weights=http://127.0.0.1:9/mnv2-abcdef12.pth", "model.name=mobilenet_v2"],
            "cannot download http://127.0.0.1:9/mnv2-abcdef12.pth (",
        ),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(tiny_market_root, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # port 9 (discard): nobody listens
    base = [] if args[0] == "--resume" else reid_args(tiny_market_root, tmp_path, "bad")
    assert train_cli.main([*base, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    assert not os.path.exists(tmp_path / "bad")  # nothing written for a run that never started
    assert not os.path.exists(tmp_path / "torch_home" / "hub" / "checkpoints" / "mnv2-abcdef12.pth")


def test_missing_data_root_names_the_folder(tmp_path, capsys):
    args = reid_args(tmp_path / "nowhere", tmp_path, "missing") + ["data.synthetic=false"]
    assert train_cli.main(args) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "bounding_box_train" in err


def test_srdl_stage_one_is_cross_entropy_at_half_the_epochs(tiny_fashion_root, tmp_path):
    # The experiment tables' decomposition (halving cost = CE at M minus SRDL's stage 1) rests
    # on this: SRDL's stage 1 at M epochs is the vanilla run at M/2, bit for bit (same
    # initialisation, order, augmentation, schedule), in fp32 on one machine.
    from reid_srdl.models.model_file import load_model_file

    common = [
        "data.name=fashion_mnist",
        f"data.root={tiny_fashion_root}",
        "data.batch_size=16",
        "model.name=resnet8",
        f"train.output_dir={tmp_path}",
        "eval.multi_query=false",
        *QUIET,
    ]
    assert train_cli.main([*common, "train.run_name=ce", "method.name=vanilla", "train.epochs=4"]) == 0
    assert train_cli.main([*common, "train.run_name=srdl", "method.name=srdl", "train.epochs=8"]) == 0
    vanilla, _ = load_model_file(str(tmp_path / "ce" / "final.pt"))
    stage1, _ = load_model_file(str(tmp_path / "srdl" / "stage1.pt"))
    a, b = vanilla.state_dict(), stage1.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
    stage2, _ = load_model_file(str(tmp_path / "srdl" / "final.pt"))
    assert not all(torch.equal(a[k], v) for k, v in stage2.state_dict().items())  # the test can fail
