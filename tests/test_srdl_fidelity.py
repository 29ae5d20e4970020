"""SRDL beyond the loss: independent random streams per (seed, purpose), the stage-1 bank's
diagnostics, and the teacher_view=augmented ablation (not the paper's method)."""

import hashlib
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from method_helpers import hand_ce, hand_kl, spread_classifiers
from tiny_runs import NETS, TinySet, reid_config, stage_context

from reid_srdl.core.seeding import MODEL_INIT, SRDL_STAGE2_INIT, derive_seed
from reid_srdl.engine.flops import training_forward_flops
from reid_srdl.engine.trainer import Trainer
from reid_srdl.methods.srdl import SRDL, bank_statistics

pytestmark = pytest.mark.usefixtures("single_thread")

factory = NETS["resnet8"][0]


# ----------------------------------------------------------------------------- seeds
def test_derived_seeds_are_a_stable_hash_of_seed_purpose_and_keys():
    # The contract written out: sha256 of "seed:purpose:keys", first 8 bytes little-endian, 63 bits.
    digest = hashlib.sha256(b"3:srdl.stage2-init").digest()
    assert derive_seed(3, SRDL_STAGE2_INIT) == int.from_bytes(digest[:8], "little") & (2**63 - 1)
    digest = hashlib.sha256(b"0:train.epoch:7").digest()
    assert derive_seed(0, "train.epoch", 7) == int.from_bytes(digest[:8], "little") & (2**63 - 1)
    values = {derive_seed(s, p, *k) for s in range(5) for p in (MODEL_INIT, SRDL_STAGE2_INIT) for k in ((), (0,), (1,))}
    assert len(values) == 30


def _weights(net):
    return torch.cat([v.flatten().float() for k, v in net.state_dict().items() if v.is_floating_point()])


def test_no_two_runs_of_different_seeds_share_an_initialisation(tiny_market_root, tmp_path):
    """Vanilla's init and SRDL's stage-2 re-init, seeds 0-2: six different networks.  The old
    scheme (stage 2 from seed + 1) made SRDL seed s's stage 2 start from vanilla seed s+1."""
    inits = {}
    for seed in range(3):
        for method in ("vanilla", "srdl"):
            cfg = reid_config(
                tiny_market_root,
                tmp_path / f"{method}{seed}",
                f"method.name={method}",
                f"train.seed={seed}",
                epochs=2,
                max_batches=2,
            )
            trainer = Trainer(cfg, str(tmp_path / f"{method}{seed}" / "run"))
            inits[(method, seed)] = _weights(trainer.method.trainable)
            if method == "srdl":
                inits[("srdl-stage2", seed)] = _weights(trainer.method.fresh_model())
    # Vanilla and SRDL stage 1 of one seed start alike (a paired comparison)...
    for seed in range(3):
        assert torch.equal(inits[("vanilla", seed)], inits[("srdl", seed)])
    # ...and every other pair differs.
    keys = [k for k in inits if k[0] != "srdl"]
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            assert not torch.equal(inits[a], inits[b]), (a, b)
    assert not torch.equal(inits[("srdl-stage2", 0)], inits[("vanilla", 1)])


def test_training_order_of_one_seed_is_not_a_shifted_order_of_another(tiny_market_root, tmp_path):
    """DistributedSampler shuffles epoch e from seed + e: without a hashed seed, epoch 1 of seed
    0 would be epoch 0 of seed 1."""
    orders = {}
    for seed in (0, 1):
        cfg = reid_config(tiny_market_root, tmp_path / str(seed), f"train.seed={seed}", "method.name=vanilla", epochs=1)
        sampler = Trainer(cfg, str(tmp_path / str(seed) / "run")).data.train_loader.sampler
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            orders[(seed, epoch)] = list(sampler)
    assert [i for i, _ in orders[(0, 1)]] != [i for i, _ in orders[(1, 0)]]
    # Augmentation seeds differ between epochs and between seeds.
    assert len({orders[k][0][1] for k in orders}) == 4


# ----------------------------------------------------------------------------- diagnostics
def test_bank_statistics_by_hand():
    bank = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 3.0]])
    labels = torch.tensor([0, 0, 1])
    stats = bank_statistics(bank, labels, temperature=2.0)
    # Arg-max 0, 1, 0 (ties: the first) against labels 0, 0, 1: one right of three.
    assert stats["bank_train_acc"] == pytest.approx(1 / 3)

    def h(a, b):  # entropy of softmax([a, b] / 2)
        p = 1 / (1 + math.exp((b - a) / 2))
        return -(p * math.log(p) + (1 - p) * math.log(1 - p))

    assert stats["bank_entropy"] == pytest.approx((h(2, 0) + h(0, 1) + h(3, 3)) / 3)
    assert stats["bank_entropy_max"] == pytest.approx(math.log(2))


def test_a_run_reports_bank_statistics_and_the_stage2_kl_of_every_epoch(tiny_market_root, tmp_path):
    cfg = reid_config(tiny_market_root, tmp_path, "method.name=srdl", "eval.multi_query=false", epochs=4, max_batches=2)
    run = os.path.join(str(tmp_path), "run")
    os.makedirs(run)
    summary = Trainer(cfg, run).fit()
    with open(os.path.join(run, "metrics.json")) as f:
        saved = json.load(f)
    with open(os.path.join(run, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    diag = saved["diagnostics"]
    assert diag == summary["diagnostics"]
    assert diag["stage2_kl"] == [r["kl"] for r in records if r["stage"] == 2] and len(diag["stage2_kl"]) == 2
    # The bank statistics, recomputed from the saved bank and the training labels.
    bank = torch.load(os.path.join(run, "stage1_logits.pt"), weights_only=True)["logits"]
    trainer = Trainer(cfg, os.path.join(str(tmp_path), "again"))
    labels = torch.tensor([trainer.data.train_eval_loader.dataset[i][1] for i in range(len(bank))])
    acc = (bank.argmax(1) == labels).double().mean().item()
    p = F.softmax(bank.double() / 3.0, dim=1)
    entropy = -(p * p.log()).sum(1).mean().item()
    assert diag["bank_train_acc"] == pytest.approx(acc)
    assert diag["bank_entropy"] == pytest.approx(entropy)
    assert 0 <= diag["bank_entropy"] <= diag["bank_entropy_max"] == pytest.approx(math.log(trainer.data.num_classes))


# ----------------------------------------------------------------------------- teacher_view=augmented
def test_augmented_teacher_view_distils_the_frozen_stage1_net_on_the_same_batch(tmp_path):
    torch.manual_seed(0)
    m = SRDL.create(factory, total_epochs=2, teacher_view="augmented", seed=5)
    spread_classifiers(m.trainable)  # non-trivial logits (the init gives all ~0)
    data = TinySet()
    m.train()
    for _ in range(2):
        m(data.x, data.y, torch.arange(len(data)))["loss"].backward()
    stage1 = m.trainable
    m.on_stage_end(0, stage_context(tmp_path, data))
    assert m.stage1_net is stage1 and m.trainable is not stage1
    spread_classifiers(m.trainable)
    m.train()  # the trainer sets train mode every epoch: the frozen stage-1 net stays in eval mode
    assert not m.stage1_net.training and all(not p.requires_grad for p in m.stage1_net.parameters())
    x = data.x[:6] + 0.3 * torch.randn(6, 1, 28, 28)  # an "augmented" batch, unlike the bank's clean images
    y = data.y[:6]
    out = m(x, y, torch.arange(6))
    with torch.no_grad():
        teacher = stage1.eval()(x)[0]
    student = out["logits"].detach()
    assert out["kl"].item() == pytest.approx(hand_kl(student, teacher, 3.0), rel=1e-5)
    assert out["loss"].item() == pytest.approx(hand_ce(student, y) + hand_kl(student, teacher, 3.0), rel=1e-5)
    # Not the stored clean-image logits.
    clean = m.bank[:6]
    assert abs(hand_kl(student, clean, 3.0) - out["kl"].item()) > 1e-4
    out["loss"].backward()
    assert all(p.grad is None for p in m.stage1_net.parameters())


def test_augmented_teacher_view_costs_one_more_forward_and_resumes(tmp_path):
    data = TinySet()
    m = SRDL.create(factory, total_epochs=2, teacher_view="augmented")
    plain = SRDL.create(factory, total_epochs=2)
    m.on_stage_end(0, stage_context(tmp_path, data))
    os.makedirs(tmp_path / "plain")
    plain.on_stage_end(0, stage_context(tmp_path / "plain", data))
    one = TinySet((1, 28, 28), n=1)
    assert training_forward_flops(m, one, "cpu") == 2 * training_forward_flops(plain, one, "cpu")
    again = SRDL.create(factory, total_epochs=2, teacher_view="augmented")
    again.load_extra_state(m.extra_state(), str(tmp_path))
    x = data.x[:3]
    with torch.no_grad():
        assert torch.equal(again.stage1_net(x)[0], m.stage1_net(x)[0])
