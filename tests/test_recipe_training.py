"""Every method x {plain CE, the BoT recipe} through tools/train.py on the tiny synthetic set,
with each logged term adding up to the loss; and a BoT-recipe SRDL run that resumes bit-exactly."""

import json
import os

import pytest
import torch
import train as train_cli

from reid_srdl.config import load_config
from reid_srdl.core import checkpoint as ckpt
from reid_srdl.engine.loop import TrainingLoop
from reid_srdl.engine.trainer import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = [
    "data.synthetic=false",
    "data.height=64",
    "data.width=32",
    "data.batch_size=8",
    "data.test_batch_size=32",
    "data.workers=0",
    "model.name=small_reid",
    "train.max_batches=2",
    "train.progress=false",
    "train.precision=fp32",
    "train.tensorboard=false",
    "eval.plot=false",
    "eval.multi_query=false",
]
# The BoT YAMLs, shrunk to the tiny set: small_reid without weights, a 1-epoch warm-up.
BOT_TINY = ["model.weights=", "optim.warmup_epochs=1", "data.num_instances=4"]

# loss = f(logged terms) for each method at its default weights (docs/methods.md).
LOSS = {
    "vanilla": lambda t: t["ce"],
    "kd": lambda t: t["ce"] + t["kd"],
    "srdl": lambda t: t["ce"] + t.get("kl", 0.0),
    "one": lambda t: t["ce"] + t["ce_ensemble"] + t["kl_weight"] * t["kl"],
    "byot": lambda t: t["ce"] + 0.7 * t["exit_ce"] + 0.3 * t["kd"] + 0.03 * t["hint"],
    "frskd": lambda t: t["ce"] + t["ce_teacher"] + 2.0 * t["kd"] + 100.0 * t["attention"],
}


@pytest.fixture(scope="module")
def teacher(tiny_market_root, tmp_path_factory):
    """A small_reid vanilla run: the frozen teacher of both KD runs."""
    out = tmp_path_factory.mktemp("teacher")
    args = [
        f"data.root={tiny_market_root}",
        *TINY,
        "model.feature_dim=32",
        "method.name=vanilla",
        "train.epochs=1",
        f"train.output_dir={out}",
        "train.run_name=teacher",
    ]
    assert train_cli.main(args) == 0
    return str(out / "teacher")


@pytest.mark.parametrize("recipe", ["ce", "bot"])
@pytest.mark.parametrize("method", sorted(LOSS))
def test_every_method_trains_with_either_recipe(method, recipe, tiny_market_root, teacher, tmp_path, capsys):
    args = [
        f"data.root={tiny_market_root}",
        *TINY,
        f"method.name={method}",
        f"train.output_dir={tmp_path}",
        "train.run_name=run",
        f"train.epochs={2 if method == 'srdl' else 1}",
    ]
    if method == "kd":
        args += [f"method.kd.teacher={teacher}", "method.kd.teacher_model=small_reid"]
    if recipe == "bot":
        config = os.path.join(REPO, "configs", "market1501", f"{method}_bot_resnet50.yaml")
        args = ["--config", config, *args, *BOT_TINY]
    else:
        args += ["model.feature_dim=32"]
    assert train_cli.main(args) == 0, capsys.readouterr().err
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        lines = [json.loads(x) for x in f]
    for line in lines:
        expected = LOSS[method](line) + (line["triplet"] if recipe == "bot" else 0.0)
        assert line["loss"] == pytest.approx(expected, rel=1e-4)
        assert ("triplet" in line) == (recipe == "bot")
    with open(tmp_path / "run" / "metrics.json") as f:
        summary = json.load(f)
    assert summary["forward_flops_per_sample"][0] > 0 and summary["deployed_parameters"] > 0
    assert 0.0 <= summary["results"]["deployed"]["single_query"]["rank1"] <= 1.0
    with open(tmp_path / "run" / "config.yaml") as f:
        saved = f.read()
    assert ("neck: bnneck" in saved) == (recipe == "bot") and ("sampler: identity" in saved) == (recipe == "bot")


def _bot_srdl_config(root, out):
    return load_config(
        None,
        [
            f"data.root={root}",
            *TINY,
            f"train.output_dir={out}",
            "train.run_name=run",
            "method.name=srdl",
            "data.sampler=identity",
            "data.num_instances=4",
            "data.random_erasing=0.5",
            "model.neck=bnneck",
            "model.feature_dim=0",
            "loss.label_smoothing=0.1",
            "loss.triplet_weight=1",
            "optim.name=adam",
            "optim.lr=3.5e-4",
            "optim.weight_decay=5e-4",
            "optim.warmup_epochs=1",
            "train.epochs=4",
        ],
    )


class Interrupt(Exception):
    pass


@pytest.mark.slow
def test_bot_srdl_resumes_bit_exactly(tiny_market_root, tmp_path, monkeypatch):
    reference = Trainer(_bot_srdl_config(tiny_market_root, tmp_path / "a"), os.path.join(tmp_path, "a", "run"))
    reference.fit()
    # Each 2-epoch stage: its own schedule (milestones 0.5 and 0.75 both fall on its 2nd epoch).
    assert reference.run.lrs == pytest.approx([3.5e-4, 3.5e-6, 3.5e-4, 3.5e-6])

    cfg = _bot_srdl_config(tiny_market_root, tmp_path / "b")
    run_dir = os.path.join(tmp_path, "b", "run")
    original = TrainingLoop.train_epoch

    def train_epoch(self, epoch):
        if epoch == 3:  # inside stage 2, after the logit bank and the restart
            raise Interrupt
        return original(self, epoch)

    monkeypatch.setattr(TrainingLoop, "train_epoch", train_epoch)
    with pytest.raises(Interrupt):
        Trainer(cfg, run_dir).fit()
    monkeypatch.setattr(TrainingLoop, "train_epoch", original)
    assert ckpt.load_train_state(run_dir)["optimizer"]["state"]  # Adam's moments were saved
    resumed = Trainer(cfg, run_dir, resume=True)
    resumed.fit()
    ref = reference.method.trainable.state_dict()
    for k, v in resumed.method.trainable.state_dict().items():
        assert torch.equal(v, ref[k]), k
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        lines = [json.loads(x) for x in f]
    assert [x["epoch"] for x in lines] == [1, 2, 3, 4] and all("triplet" in x for x in lines)
    assert "kl" in lines[2] and "kl" not in lines[1]
