"""Shared by the trainer, precision, distributed and multi-source tests: a tiny training
config on the synthetic Market-1501 fixture, a kill-and-resume driver, a free TCP port."""

import os
import socket

import pytest

from reid_srdl.config import load_config
from reid_srdl.core import checkpoint as ckpt
from reid_srdl.engine.loop import TrainingLoop
from reid_srdl.engine.trainer import Trainer


def tiny_overrides(root, out, epochs: int = 4, max_batches: int = 3):
    """The overrides of a tiny run: small_reid at 64x32 on the tiny synthetic set, batches of 8,
    fp32, no workers, no plots, run folder out/run.  Callers append their own (a later key wins)."""
    return [
        f"data.root={root}",
        "data.synthetic=false",
        "data.height=64",
        "data.width=32",
        "data.batch_size=8",
        "data.test_batch_size=32",
        "data.workers=0",
        "model.name=small_reid",
        "model.feature_dim=32",
        f"train.epochs={epochs}",
        f"train.max_batches={max_batches}",
        "train.progress=false",
        "train.precision=fp32",
        "train.tensorboard=false",
        f"train.output_dir={out}",
        "train.run_name=run",
        "eval.plot=false",
    ]


def tiny_cfg(root, out, *extra):
    return load_config(None, [*tiny_overrides(root, out), *extra])


def run_dir_of(cfg):
    return os.path.join(cfg.train.output_dir, cfg.train.run_name)


class Interrupt(Exception):
    pass


def interrupted_then_resumed(cfg, stop_after_epochs, monkeypatch):
    """Train, 'kill' the run after `stop_after_epochs` complete epochs, resume it to the end."""
    run_dir = run_dir_of(cfg)
    original = TrainingLoop.train_epoch

    def train_epoch(self, epoch):
        if epoch == stop_after_epochs:
            raise Interrupt
        return original(self, epoch)

    monkeypatch.setattr(TrainingLoop, "train_epoch", train_epoch)
    with pytest.raises(Interrupt):
        Trainer(cfg, run_dir).fit()
    monkeypatch.setattr(TrainingLoop, "train_epoch", original)
    state = ckpt.load_train_state(run_dir)
    assert state["epoch"] == stop_after_epochs
    trainer = Trainer(cfg, run_dir, resume=True)
    assert trainer.run.state.start_epoch == stop_after_epochs
    trainer.fit()
    return trainer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
