"""BYOT: side exits (shapes, resolution factors), every loss term against a hand computation,
the hint reduction, which gradients the targets get, options, a run's per-exit accuracies.
What every method satisfies (deploy, training, FLOPs, resume, the trainer) is in
tests/test_method_contract.py."""

import functools
import json
import os

import pytest
import torch
from method_helpers import hand_ce, hand_kl, spread_classifiers
from tiny_runs import NETS, NUM_CLASSES, batch

from reid_srdl import load_config
from reid_srdl.config import ConfigError
from reid_srdl.methods import build_method
from reid_srdl.methods.byot import BYOT, BYOTOptions, hint_loss, stage_downsampling
from reid_srdl.models import build_model

pytestmark = pytest.mark.usefixtures("single_thread")


# ----------------------------------------------------------------------------- structure
def test_downsampling_factors_follow_each_architecture():
    # By hand: ResNet-8 halves twice (28 -> 14 -> 7); small_reid halves after stages 1-3;
    # ResNet-50 with last stride 1 keeps layer3's resolution in layer4.
    assert stage_downsampling(NETS["resnet8"][0]()) == [(4, 4), (2, 2), (1, 1)]
    assert stage_downsampling(NETS["small_reid"][0]()) == [(8, 8), (4, 4), (2, 2), (1, 1)]
    r50 = build_model("resnet50", NUM_CLASSES, feature_dim=16, last_stride=1)
    assert stage_downsampling(r50) == [(4, 4), (2, 2), (1, 1), (1, 1)]
    r50_s2 = build_model("resnet50", NUM_CLASSES, feature_dim=16, last_stride=2)
    assert stage_downsampling(r50_s2) == [(8, 8), (4, 4), (2, 2), (1, 1)]


@pytest.mark.parametrize("name", NETS)
def test_side_exits_reach_the_deepest_channels_and_resolution(name):
    torch.manual_seed(0)
    m = BYOT.create(NETS[name][0], total_epochs=2)
    net = m.trainable.net
    x, _, _ = batch(name, n=2)
    with torch.no_grad():
        maps = net.stage_maps(x)
        assert len(m.trainable.exits) == len(maps) - 1
        for side, stage_map in zip(m.trainable.exits, maps[:-1]):
            assert side.bottleneck(stage_map).shape == maps[-1].shape
            logits, feats = side(stage_map)
            assert logits.shape == (2, NUM_CLASSES) and feats.shape == (2, net.stage_channels[-1])
    # What is trained: the plain net, its side exits and their hint adaptations.
    assert {n.split(".")[0] for n, _ in m.trainable.named_parameters()} == {"net", "exits", "adaptation"}


def test_side_exit_on_a_last_stride_one_resnet50():
    # Stage 3 and 4 share a resolution: that exit's middle conv is a 3x3 without stride.
    torch.manual_seed(0)
    m = BYOT.create(functools.partial(build_model, "resnet50", NUM_CLASSES, feature_dim=16), total_epochs=2)
    third = m.trainable.exits[2]
    assert third.factor == (1, 1) and third.bottleneck[3].kernel_size == (3, 3) and third.bottleneck[3].stride == (1, 1)
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        maps = m.trainable.net.eval().stage_maps(x)
        for side, stage_map in zip(m.trainable.exits, maps[:-1]):
            assert side.eval().bottleneck(stage_map).shape == maps[-1].shape == (2, 2048, 4, 2)


def test_too_small_a_map_for_an_exit_is_a_clear_error():
    m = BYOT.create(NETS["small_reid"][0], total_epochs=2)
    with pytest.raises(
        ConfigError,
        match="side exit needs a map of at least 8x8, got \\(4, 2\\): the input images are too small .*data.height",
    ):
        m.trainable.exits[0](torch.randn(2, 16, 4, 2))


# ----------------------------------------------------------------------------- loss
def test_hint_is_summed_over_dimensions_and_averaged_over_the_batch():
    f = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    t = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    # Sample 1: 1 + 4 + 9 = 14; sample 2: 3 * 1 = 3; mean (14 + 3) / 2.
    assert hint_loss(f, t).item() == pytest.approx(17 / 2)


def official_soft_ce(student, teacher, T):
    """The official train.py's CrossEntropy: -sum_c softmax(t/T) log_softmax(s/T), batch mean."""
    ps = torch.exp(student.double() / T)
    ps = ps / ps.sum(dim=1, keepdim=True)
    pt = torch.exp(teacher.double() / T)
    pt = pt / pt.sum(dim=1, keepdim=True)
    return -(pt * ps.log()).sum(dim=1).mean().item()


def entropy_at(teacher, T):
    pt = torch.exp(teacher.double() / T)
    pt = pt / pt.sum(dim=1, keepdim=True)
    return -(pt * pt.log()).sum(dim=1).mean().item()


def _forward_by_hand(m, x):
    with torch.no_grad():
        maps = m.trainable.net.stage_maps(x)
        deep = m.trainable.net.head(maps[-1])[0]
        deep_feats = maps[-1].double().mean(dim=(2, 3))
        exits = [side(stage_map) for side, stage_map in zip(m.trainable.exits, maps[:-1])]
    return deep, deep_feats, exits


@pytest.mark.parametrize("name", NETS)
def test_default_loss_is_the_official_formula(name):
    """train.py (final version): CE(deep) + sum_i [0.7 CE(z_i) + 0.3 softCE_T(z_i, deep)] +
    0.03 sum_{index != 1} torch.dist(FC(f_i), f_deep) -- no T^2, unsquared whole-batch hint on
    FC-adapted features, the exit of the second-to-last stage without hint."""
    torch.manual_seed(0)
    alpha, lam, T = 0.3, 0.03, 3.0
    m = BYOT.create(NETS[name][0], total_epochs=2)  # the defaults are the official ones
    spread_classifiers(m.trainable)
    m.train()
    x, y, idx = batch(name)
    out = m(x, y, idx)
    deep, deep_feats, exits = _forward_by_hand(m, x)
    # The official output order is deep to shallow ([out4, out3, out2, out1]) and the hint
    # loop skips index 1 (out3): here, shallow to deep, every exit but the last one.
    hinted = list(range(len(exits) - 1))
    assert m.trainable.hinted == hinted
    ce = hand_ce(deep, y)
    exit_ce = sum(hand_ce(z, y) for z, _ in exits)
    # The official soft cross-entropy minus the teacher's entropy is the logged KL (same
    # gradient: the teacher is detached).
    soft_ce = sum(official_soft_ce(z, deep, T) for z, _ in exits)
    kd = soft_ce - len(exits) * entropy_at(deep, T)
    hint = 0.0
    for slot, i in enumerate(hinted):
        fc = m.trainable.adaptation[slot]
        adapted = exits[i][1].double() @ fc.weight.double().t() + fc.bias.double()
        hint += ((adapted - deep_feats) ** 2).sum().sqrt().item()  # torch.dist: L2 of the whole batch
    assert kd > 1e-3 and hint > 1e-3
    assert out["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert out["exit_ce"].item() == pytest.approx(exit_ce, rel=1e-5)
    assert out["kd"].item() == pytest.approx(kd, rel=1e-4, abs=1e-6)
    assert out["hint"].item() == pytest.approx(hint, rel=1e-4)
    expected = ce + (1 - alpha) * exit_ce + alpha * kd + lam * hint
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    # Up to the teacher's entropy (a constant), it is the official loss.
    official = ce + (1 - alpha) * exit_ce + alpha * soft_ce + lam * hint
    assert out["loss"].item() + alpha * len(exits) * entropy_at(deep, T) == pytest.approx(official, rel=1e-5)
    for i, (z, _) in enumerate(exits, start=1):
        assert out[f"acc_exit{i}"].item() == pytest.approx((z.argmax(1) == y).float().mean().item())
    assert torch.allclose(out["logits"], deep, atol=1e-6)


@pytest.mark.parametrize("name", NETS)
def test_t_squared_and_the_squared_hint_are_options(name):
    torch.manual_seed(0)
    alpha, lam, T = 0.4, 0.05, 2.0
    m = BYOT.create(
        NETS[name][0], total_epochs=2, temperature=T, alpha=alpha, hint_weight=lam, kd_t_squared=True, hint="squared"
    )
    assert m.trainable.adaptation is None and m.trainable.hinted == list(range(len(m.trainable.exits)))
    spread_classifiers(m.trainable)
    m.train()
    x, y, idx = batch(name)
    out = m(x, y, idx)
    deep, deep_feats, exits = _forward_by_hand(m, x)
    ce = hand_ce(deep, y)
    exit_ce = sum(hand_ce(z, y) for z, _ in exits)
    kd = sum(hand_kl(z, deep, T) for z, _ in exits)  # hand_kl carries T^2
    hint = sum(((f.double() - deep_feats) ** 2).sum().item() / len(y) for _, f in exits)
    assert kd > 1e-3 and hint > 1e-3
    assert out["kd"].item() == pytest.approx(kd, rel=1e-4)
    assert out["hint"].item() == pytest.approx(hint, rel=1e-4)
    expected = ce + (1 - alpha) * exit_ce + alpha * kd + lam * hint
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)


def test_deepest_exit_is_a_target_only_in_the_distillation_terms():
    """Neither the KL nor the hint may move the deepest classifier or the last stage."""
    torch.manual_seed(0)
    m = BYOT.create(NETS["resnet8"][0], total_epochs=2)
    spread_classifiers(m.trainable)
    x, y, idx = batch("resnet8")
    out = m(x, y, idx)
    (out["kd"] + out["hint"]).backward()
    net = m.trainable.net
    for p in list(net.head.parameters()) + list(net.stages[-1].parameters()):
        assert p.grad is None or p.grad.abs().sum() == 0
    assert m.trainable.exits[0].head.classifier.weight.grad.abs().sum() > 0
    assert net.stages[0][0].conv1.weight.grad.abs().sum() > 0  # the shallow exits train the early stages


# ----------------------------------------------------------------------------- config, errors
def test_built_from_its_config_section():
    cfg = load_config(
        None,
        [
            "method.name=byot",
            "method.byot.alpha=0.5",
            "method.byot.hint_weight=0.1",
            "method.byot.temperature=4",
            "method.byot.kd_t_squared=true",
            "method.byot.hint=squared",
        ],
    )
    m = build_method(cfg.method, NETS["resnet8"][0], total_epochs=3, num_classes=NUM_CLASSES)
    assert isinstance(m, BYOT)
    o = m.options
    assert (o.alpha, o.hint_weight, o.temperature, o.kd_t_squared, o.hint) == (0.5, 0.1, 4.0, True, "squared")
    # The defaults are the official code's: T=3, alpha=0.3, lambda=0.03, no T^2, FC-adapted hint.
    assert BYOTOptions() == BYOTOptions(
        temperature=3.0, alpha=0.3, hint_weight=0.03, kd_t_squared=False, hint="official"
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(alpha=1.5), r"^method.byot.alpha must be in 0.0..1.0, got 1.5$"),
        (dict(temperature=-1.0), r"^method.byot.temperature must be > 0, got -1.0$"),
        (dict(hint_weight=-0.1), r"^method.byot.hint_weight must be >= 0, got -0.1$"),
        (dict(hint="sum"), r"^method.byot.hint='sum' is not one of: official, squared$"),
    ],
)
def test_bad_options_name_the_key(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        BYOT.create(NETS["resnet8"][0], total_epochs=2, **kwargs)


# ----------------------------------------------------------------------------- a run
def test_a_run_logs_the_accuracy_of_every_exit(tiny_run):
    # small_reid has 4 stages: 3 side exits.
    with open(os.path.join(tiny_run("byot"), "metrics.jsonl")) as f:
        record = json.loads(f.readline())
    assert {"acc_exit1", "acc_exit2", "acc_exit3"} <= set(record) and "acc_exit4" not in record
