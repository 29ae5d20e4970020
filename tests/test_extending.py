"""A new method is one file (docs/extending.md): it declares its options and registers itself,
and from then on the config, the trainer, --list-methods and the run directory know it."""

import importlib.util
import json
import os
import textwrap

import pytest
from tiny_runs import reid_config, run_dir_of

from reid_srdl import load_config
from reid_srdl.config import ConfigError
from reid_srdl.engine.trainer import Trainer
from reid_srdl.methods import METHODS

TOY_METHOD = '''
"""A toy method: cross-entropy scaled by an option, plus the mean logit norm as a logged term."""
from dataclasses import dataclass

import torch.nn.functional as F

from reid_srdl.config import check_range
from reid_srdl.methods.base import METHODS, Method


@dataclass(frozen=True)
class ScaledOptions:
    weight: float = 1.0

    def __post_init__(self):
        check_range("method.scaled_ce.weight", self.weight, above=0)


@METHODS.register("scaled_ce", options=ScaledOptions)
class ScaledCE(Method):
    def forward(self, images, labels, indices):
        logits, _ = self.trainable(images)
        ce = F.cross_entropy(logits, labels)
        return {"loss": self.options.weight * ce, "ce": ce, "logits": logits,
                "logit_norm": logits.detach().norm(dim=1).mean()}
'''


@pytest.fixture
def toy_method(tmp_path):
    path = tmp_path / "scaled_ce.py"
    path.write_text(textwrap.dedent(TOY_METHOD))
    spec = importlib.util.spec_from_file_location("scaled_ce_method", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        yield module
    finally:
        METHODS.unregister("scaled_ce")


def test_a_method_from_one_file_trains_through_the_whole_stack(toy_method, tiny_market_root, tmp_path):
    assert "scaled_ce" in METHODS.list()
    cfg = reid_config(tiny_market_root, tmp_path / "runs", "method.name=scaled_ce", "method.scaled_ce.weight=0.25")
    assert cfg.method.scaled_ce.weight == 0.25
    summary = Trainer(cfg, run_dir_of(cfg)).fit()
    assert summary["method"] == "scaled_ce"
    with open(os.path.join(run_dir_of(cfg), "metrics.jsonl")) as f:
        epochs = [json.loads(line) for line in f]
    assert len(epochs) == cfg.train.epochs
    for record in epochs:
        # the loop logs every scalar the method returns, as per-sample means over the epoch
        assert record["loss"] == pytest.approx(0.25 * record["ce"], rel=1e-6)
        assert record["logit_norm"] > 0
    # the saved config names the option, and reads back equal
    assert load_config(os.path.join(run_dir_of(cfg), "config.yaml")) == cfg


def test_a_new_methods_options_are_checked_like_the_built_in_ones(toy_method, tiny_market_root, tmp_path):
    with pytest.raises(ConfigError, match=r"method.scaled_ce.weight must be > 0"):
        reid_config(tiny_market_root, tmp_path, "method.name=scaled_ce", "method.scaled_ce.weight=0")
    with pytest.raises(ConfigError, match=r"method.scaled_ce.*weigth"):
        reid_config(tiny_market_root, tmp_path, "method.name=scaled_ce", "method.scaled_ce.weigth=2")


def test_an_unregistered_method_is_gone_from_the_config(tiny_market_root, tmp_path, toy_method):
    METHODS.unregister("scaled_ce")  # (the fixture's own unregister is then a no-op)
    with pytest.raises(
        ConfigError, match=r"method.name='scaled_ce' is not one of: byot, frskd, kd, one, srdl, vanilla"
    ):
        reid_config(tiny_market_root, tmp_path, "method.name=scaled_ce")
