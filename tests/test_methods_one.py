"""ONE: the ramp, every loss term against a hand computation, the ensemble as a target only,
the branches, the deployed branch, the gated ensemble, options, a run's ramp weight.  What
every method satisfies (deploy, training, FLOPs, resume, the trainer) is in
tests/test_method_contract.py."""

import json
import math
import os

import pytest
import torch
from method_helpers import hand_ce, hand_kl, spread_classifiers
from tiny_runs import NETS, NUM_CLASSES, batch

from reid_srdl import load_config
from reid_srdl.config import ConfigError
from reid_srdl.methods import build_method
from reid_srdl.methods.one import ONE, ONEOptions, sigmoid_rampup

pytestmark = pytest.mark.usefixtures("single_thread")


def hand_gate(gate, shared_map):
    """Pool -> FC -> BN (training mode: batch statistics, biased variance) -> ReLU -> softmax."""
    pooled = shared_map.double().mean(dim=(2, 3))
    a = pooled @ gate.fc.weight.double().t()
    bn = gate.bn
    a = (a - a.mean(0)) / torch.sqrt(a.var(0, unbiased=False) + bn.eps) * bn.weight.double() + bn.bias.double()
    e = torch.exp(torch.clamp(a, min=0))
    return e / e.sum(dim=1, keepdim=True)


# ----------------------------------------------------------------------------- ramp
def test_sigmoid_rampup_values_at_chosen_epochs():
    assert sigmoid_rampup(0, 80) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(20, 80) == pytest.approx(math.exp(-5 * 0.75**2))
    assert sigmoid_rampup(40, 80) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(80, 80) == 1.0
    assert sigmoid_rampup(200, 80) == 1.0  # constant after the ramp
    assert sigmoid_rampup(0, 0) == 1.0 and sigmoid_rampup(7, 0) == 1.0  # no ramp


@pytest.mark.parametrize(
    "total_epochs, options, ramp",
    [
        # The official run: 80 of 300 epochs (cifar_one.py, scripts/ONE_ResNet32.sh).
        (300, {}, 80),
        # The same ratio scales with the budget: 240 * 80/300 = 64, 120 * 80/300 = 32; a short
        # run still ramps over at least one epoch (1 * 80/300 rounds to 0).
        (240, {}, 64),
        (120, {}, 32),
        (1, {}, 1),
        (240, dict(ramp_fraction=0.0), 0),
        (240, dict(ramp_fraction=0.5), 120),
        # A fixed length wins over the fraction; 0 is no ramp at all.
        (240, dict(ramp_epochs=80), 80),
        (240, dict(ramp_epochs=0), 0),
    ],
)
def test_ramp_up_is_a_fraction_of_the_run_by_default(total_epochs, options, ramp):
    m = ONE.create(NETS["resnet8"][0], total_epochs=total_epochs, **options)
    assert m.ramp_epochs == ramp
    m.set_epoch(ramp // 2)
    expected = 1.0 if ramp == 0 else math.exp(-5 * (1 - (ramp // 2) / ramp) ** 2)
    assert m.kl_weight() == pytest.approx(expected)


def test_kl_weight_follows_the_epoch_the_trainer_sets():
    m = ONE.create(NETS["resnet8"][0], total_epochs=100, ramp_epochs=10)
    weights = []
    for epoch in (0, 5, 10, 50):
        m.set_epoch(epoch)
        weights.append(m.kl_weight())
    assert weights == pytest.approx([math.exp(-5), math.exp(-5 * 0.25), 1.0, 1.0])


# ----------------------------------------------------------------------------- loss
@pytest.mark.parametrize("name", NETS)
def test_every_loss_term_matches_a_hand_computation(name):
    torch.manual_seed(0)
    m = ONE.create(NETS[name][0], total_epochs=100, branches=3, temperature=2.5, ramp_epochs=80)
    spread_classifiers(m.trainable)
    m.set_epoch(40)
    m.train()
    x, y, idx = batch(name)
    out = m(x, y, idx)
    with torch.no_grad():
        net = m.trainable.net
        maps = net.stage_maps(x)
        shared = maps[-2]
        branch_logits = [net.head(maps[-1])[0]]
        branch_logits += [b.head(b.stage(shared))[0] for b in m.trainable.branches]
        g = hand_gate(m.trainable.gate, shared)
    assert len(branch_logits) == 3
    ensemble = sum(g[:, i : i + 1] * z.double() for i, z in enumerate(branch_logits))
    ce = sum(hand_ce(z, y) for z in branch_logits)
    ce_e = hand_ce(ensemble, y)
    kl = sum(hand_kl(z, ensemble, 2.5) for z in branch_logits)
    w = math.exp(-1.25)
    assert kl > 1e-3  # the terms compared are not trivially zero
    assert out["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert out["ce_ensemble"].item() == pytest.approx(ce_e, rel=1e-5)
    assert out["kl"].item() == pytest.approx(kl, rel=1e-4)
    assert out["kl_weight"].item() == pytest.approx(w, rel=1e-6)
    assert out["loss"].item() == pytest.approx(ce + ce_e + w * kl, rel=1e-5)
    # The logged logits are branch 1's: the deployed network's.
    assert torch.allclose(out["logits"], branch_logits[0], atol=1e-6)
    assert out["acc"].item() == pytest.approx((branch_logits[0].argmax(1) == y).float().mean().item())


def test_ensemble_is_a_target_only_in_the_kl():
    """KL terms must not push the ensemble (hence the gate): with the CE terms removed by
    zeroing their weight, the gate gets no gradient."""
    torch.manual_seed(0)
    m = ONE.create(NETS["resnet8"][0], total_epochs=2, ramp_epochs=0)
    spread_classifiers(m.trainable)
    x, y, idx = batch("resnet8")
    out = m(x, y, idx)
    out["kl"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.trainable.gate.parameters())
    assert m.trainable.branches[0].head.classifier.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- branches
def test_branches_are_independent_copies_with_their_own_initialisation():
    torch.manual_seed(0)
    m = ONE.create(NETS["small_reid"][0], total_epochs=2, branches=3)
    # Shared layers, every branch and the gate are all in the one trainable module.
    assert {n.split(".")[0] for n, _ in m.trainable.named_parameters()} == {"net", "branches", "gate"}
    assert len(m.trainable.branches) == 2
    net = m.trainable.net
    own = {id(p) for p in net.parameters()}
    for b in m.trainable.branches:
        assert not any(id(p) in own for p in b.parameters())
        # Same architecture as branch 1's last stage and head...
        assert [p.shape for p in b.stage.parameters()] == [p.shape for p in net.stages[-1].parameters()]
        # ...drawn from another initialisation (identical copies would learn alike).
        assert not torch.equal(b.stage.conv1.weight, net.stages[-1].conv1.weight)


# ----------------------------------------------------------------------------- deploy
@pytest.mark.parametrize("name", NETS)
def test_deployed_net_is_branch_one(name):
    torch.manual_seed(0)
    m = ONE.create(NETS[name][0], total_epochs=2)
    deployed = m.deploy().eval()
    assert deployed is m.trainable.net
    x, _, _ = batch(name, n=3)
    with torch.no_grad():
        logits, _ = deployed(x)
        branch_logits, _, _ = m.trainable.eval()(x)
    assert torch.equal(logits, branch_logits[0])


def test_gated_ensemble_is_evaluated_only_when_asked():
    torch.manual_seed(0)
    m = ONE.create(NETS["small_reid"][0], total_epochs=2, deploy_ensemble=True)
    spread_classifiers(m.trainable)
    assert ONE.create(NETS["small_reid"][0], total_epochs=2).extra_eval_models(None) == {}
    ensemble = m.extra_eval_models(None)["ensemble"].eval()
    x, _, _ = batch("small_reid", n=4)
    with torch.no_grad():
        logits, feats = ensemble(x)
        maps = m.trainable.net.stage_maps(x)
        outs = [m.trainable.net.head(maps[-1])] + [b(maps[-2]) for b in m.trainable.branches]
        gate = m.trainable.gate(maps[-2])
    expected = sum(gate[:, i : i + 1] * z for i, (z, _) in enumerate(outs))
    assert torch.allclose(logits, expected, atol=1e-6)
    assert torch.allclose(gate.sum(1), torch.ones(4), atol=1e-6)
    # Embedding: the three L2-normalised 32-d branch features side by side.
    assert feats.shape == (4, 3 * 32)
    for i, (_, f) in enumerate(outs):
        assert torch.allclose(feats[:, 32 * i : 32 * (i + 1)], f / f.norm(dim=1, keepdim=True), atol=1e-6)


# ----------------------------------------------------------------------------- config, errors
def test_built_from_its_config_section():
    cfg = load_config(
        None, ["method.name=one", "method.one.branches=4", "method.one.temperature=2", "method.one.ramp_epochs=0"]
    )
    m = build_method(cfg.method, NETS["resnet8"][0], total_epochs=3, num_classes=NUM_CLASSES)
    assert isinstance(m, ONE)
    assert (m.trainable.num_branches, m.options.temperature, m.options.ramp_epochs, m.options.deploy_ensemble) == (
        4,
        2.0,
        0,
        False,
    )
    assert ONEOptions() == ONEOptions(
        branches=3, temperature=3.0, ramp_fraction=80 / 300, ramp_epochs=-1, deploy_ensemble=False
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(branches=1), r"^method.one.branches must be >= 2, got 1$"),
        (dict(temperature=0.0), r"^method.one.temperature must be > 0, got 0.0$"),
        (
            dict(ramp_epochs=-2),
            r"^method.one.ramp_epochs must be >= -1, got -2 \(-1 = ramp_fraction, 0 = constant weight 1\)$",
        ),
        (dict(ramp_fraction=1.5), r"^method.one.ramp_fraction must be in 0.0..1.0, got 1.5$"),
    ],
)
def test_bad_options_name_the_key(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ONE.create(NETS["resnet8"][0], total_epochs=2, **kwargs)


# ----------------------------------------------------------------------------- a run
def test_a_run_logs_the_ramp_weight_of_its_first_epoch(tiny_run):
    with open(os.path.join(tiny_run("one"), "metrics.jsonl")) as f:
        record = json.loads(f.readline())
    assert record["kl_weight"] == pytest.approx(math.exp(-5))  # epoch 0 of the ramp (ramp_length >= 1 epoch)
