"""The generic trainer on the tiny synthetic Market-1501 set: stages, resume, NaN guard,
run directory contents."""

import json
import os

import pytest
import torch
from tiny_runs import interrupted_then_resumed, reid_config, run_dir_of

from reid_srdl import load_config
from reid_srdl.core import checkpoint as ckpt
from reid_srdl.engine.trainer import Trainer, TrainingDivergedError
from reid_srdl.models.model_file import load_model_file


@pytest.fixture(scope="module")
def uninterrupted_srdl(tiny_market_root, tmp_path_factory):
    cfg = reid_config(tiny_market_root, tmp_path_factory.mktemp("uninterrupted"))
    trainer = Trainer(cfg, run_dir_of(cfg))
    trainer.fit()
    return trainer


@pytest.mark.parametrize("stop_after", [1, 2, 3])
def test_resumed_srdl_run_ends_with_the_same_weights(
    uninterrupted_srdl, tiny_market_root, tmp_path, monkeypatch, stop_after
):
    # 1: inside stage 1; 2: right after the stage boundary (logit bank + restart); 3: inside stage 2.
    resumed = interrupted_then_resumed(reid_config(tiny_market_root, tmp_path), stop_after, monkeypatch)
    ref_state = uninterrupted_srdl.method.trainable.state_dict()
    for k, v in resumed.method.trainable.state_dict().items():
        assert torch.equal(v, ref_state[k]), k
    # The metrics log has exactly one line per epoch, in order, after the resume.
    with open(os.path.join(resumed.run_dir, "metrics.jsonl")) as f:
        epochs = [json.loads(line)["epoch"] for line in f]
    assert epochs == [1, 2, 3, 4]


def test_run_directory_contents_and_metrics(tiny_market_root, tmp_path):
    cfg = reid_config(tiny_market_root, tmp_path, "train.epochs=2")
    trainer = Trainer(cfg, run_dir_of(cfg))
    summary = trainer.fit()
    run = trainer.run_dir
    for name in (
        "config.yaml",
        "last.pt",
        "final.pt",
        "stage1.pt",
        "stage1_logits.pt",
        "metrics.jsonl",
        "metrics.json",
    ):
        assert os.path.isfile(os.path.join(run, name)), name
    assert load_config(os.path.join(run, "config.yaml")) == cfg
    with open(os.path.join(run, "metrics.jsonl")) as f:
        lines = [json.loads(x) for x in f]
    assert [(line["stage"], line["epoch"]) for line in lines] == [(1, 1), (2, 2)]
    assert "kl" not in lines[0] and "kl" in lines[1]
    for line in lines:
        assert line["loss"] == pytest.approx(line["ce"] + line.get("kl", 0.0), rel=1e-5)
        assert 0.0 <= line["train_acc"] <= 1.0 and line["seconds"] > 0
    with open(os.path.join(run, "metrics.json")) as f:
        saved = json.load(f)
    assert saved["results"]["deployed"]["single_query"]["num_queries"] == len(trainer.data.query.pids)
    assert set(saved["results"]) == {"deployed", "ensemble"}
    assert set(saved["results"]["deployed"]) == {"single_query", "multi_query", "open_set"}
    assert {"threshold@FAR=1%", "TAR@FAR=5%", "DIR@FAR=10%"} <= set(saved["results"]["deployed"]["open_set"])
    # Training cost as in the paper: forward FLOPs x epochs x training-set size, per stage.
    flops = saved["forward_flops_per_sample"]
    assert len(flops) == 2 and flops[0] == flops[1] > 0
    assert saved["train_flops"] == flops[0] * 1 * trainer.data.num_train + flops[1] * 1 * trainer.data.num_train
    assert summary == saved
    # final.pt is the deployed network: rebuilt from its spec, it gives the same outputs.
    model, meta = load_model_file(run)
    x = torch.randn(2, 3, 64, 32)
    trained = trainer.method.deploy().eval()
    assert torch.allclose(model(x)[1], trained(x)[1], atol=1e-6)
    assert meta["method"] == "srdl" and meta["task"] == "reid"


def test_nan_loss_stops_naming_epoch_and_batch_and_keeps_the_last_checkpoint(tiny_market_root, tmp_path, monkeypatch):
    cfg = reid_config(tiny_market_root, tmp_path, "method.name=vanilla", "train.epochs=3")
    trainer = Trainer(cfg, run_dir_of(cfg))
    original = type(trainer.method).forward
    calls = {"n": 0}

    def forward(self, images, labels, indices):
        out = original(self, images, labels, indices)
        calls["n"] += self.training  # the FLOP counter's eval-mode pass does not count
        if calls["n"] == 5:  # epoch 2, batch 2 (3 batches per epoch)
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(type(trainer.method), "forward", forward)
    with pytest.raises(TrainingDivergedError, match=r"loss is nan at epoch 2, batch 2 .*last.pt \(after epoch 1\)"):
        trainer.fit()
    assert ckpt.load_train_state(trainer.run_dir)["epoch"] == 1


def test_resume_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="is not a run directory"):
        ckpt.load_train_state(str(tmp_path))
    (tmp_path / "config.yaml").write_text("{}")
    with pytest.raises(ckpt.CheckpointError, match="has no last.pt"):
        ckpt.load_train_state(str(tmp_path))
