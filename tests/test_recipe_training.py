"""A BoT-recipe SRDL run (identity sampler, BNNeck, label smoothing, triplet, Adam with warm-up)
that resumes bit-exactly inside stage 2.  Every method x {plain CE, the BoT recipe} through
reid-train is in tests/test_method_contract.py."""

import json
import os

import pytest
import torch
from tiny_runs import Interrupt, reid_config

from reid_srdl.core import checkpoint as ckpt
from reid_srdl.engine.loop import TrainingLoop
from reid_srdl.engine.trainer import Trainer


def _bot_srdl_config(root, out):
    return reid_config(
        root,
        out,
        "eval.multi_query=false",
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
        epochs=4,
        max_batches=2,
    )


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
