"""The recipe's terms against hand computations and the reference implementations: batch-hard
triplet (hinge and soft margin) on 1-D toys, label smoothing against its formula, the Recipe
helper every method calls, the schedule's warm-up and cosine, the optimizers."""

import math

import pytest
import torch
import torch.nn.functional as F

from reid_srdl import load_config
from reid_srdl.config import ConfigError
from reid_srdl.engine.schedule import epoch_learning_rates
from reid_srdl.engine.trainer import build_optimizer
from reid_srdl.methods.losses import batch_hard_triplet, cross_entropy
from reid_srdl.methods.recipe import PLAIN, Recipe


def column(*values):
    return torch.tensor(values, dtype=torch.float32).view(-1, 1)


# ---------------------------------------------------------------- batch-hard triplet
def test_batch_hard_triplet_on_a_1d_toy():
    # a a b b at 0, 1, 3, 7.  Hardest positive / nearest negative per anchor:
    #   0: 1 / 3 -> 1 - 3 + 0.3 < 0;  1: 1 / 2 -> < 0;  3: 4 / 2 -> 2.3;  7: 4 / 6 -> < 0.
    x, y = column(0, 1, 3, 7), torch.tensor([0, 0, 1, 1])
    assert batch_hard_triplet(x, y, margin=0.3).item() == pytest.approx(2.3 / 4, rel=1e-6)
    # A third identity with one image at 10: no positive, so it is no anchor; but it is the
    # nearest negative of 7 now: 4 - 3 + 0.3 = 1.3.
    x, y = column(0, 1, 3, 7, 10), torch.tensor([0, 0, 1, 1, 2])
    assert batch_hard_triplet(x, y, margin=0.3).item() == pytest.approx((2.3 + 1.3) / 4, rel=1e-6)


def test_soft_margin_triplet_on_a_1d_toy():
    x, y = column(0, 1, 3, 7), torch.tensor([0, 0, 1, 1])
    gaps = [1 - 3, 1 - 2, 4 - 2, 4 - 6]  # d_ap - d_an per anchor, as above
    expected = sum(math.log(1 + math.exp(g)) for g in gaps) / 4
    assert batch_hard_triplet(x, y, margin=None).item() == pytest.approx(expected, rel=1e-6)


def test_triplet_gradient_reaches_only_the_mined_pairs():
    # Only anchor 3 is active: loss = (|3 - 7| - |3 - 1| + 0.3) / 4; d/dx3 = (-1 - 1) / 4,
    # d/dx7 = +1/4, d/dx1 = +1/4, d/dx0 = 0.
    x = column(0, 1, 3, 7).requires_grad_()
    batch_hard_triplet(x, torch.tensor([0, 0, 1, 1]), margin=0.3).backward()
    assert x.grad.view(-1).tolist() == pytest.approx([0.0, 0.25, -0.5, 0.25], abs=1e-6)


def test_triplet_equals_torchreid_on_a_p_by_k_batch():
    from torchreid.reid.losses import TripletLoss

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 8, generator=g), torch.arange(4).repeat_interleave(4)
    assert batch_hard_triplet(x, y, 0.3).item() == pytest.approx(TripletLoss(margin=0.3)(x, y).item(), rel=1e-5)


def test_a_batch_without_positives_gives_zero_with_a_graph():
    x = torch.randn(4, 3, requires_grad=True)
    loss = batch_hard_triplet(x, torch.arange(4), 0.3)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


def test_triplet_is_computed_in_float32_under_autocast():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 16, generator=g), torch.arange(2).repeat_interleave(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = batch_hard_triplet(x.bfloat16(), y, 0.3)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(batch_hard_triplet(x.bfloat16().float(), y, 0.3).item(), rel=1e-6)


# ---------------------------------------------------------------- label smoothing
def test_label_smoothing_equals_the_bot_formula():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    labels = torch.tensor([0, 1])
    eps, k = 0.1, 3
    expected = 0.0
    for row, label in zip(logits.tolist(), labels.tolist()):
        log_norm = math.log(sum(math.exp(v) for v in row))
        q = [(1 - eps) * (c == label) + eps / k for c in range(k)]
        expected -= sum(qc * (v - log_norm) for qc, v in zip(q, row))
    expected /= 2
    assert cross_entropy(logits, labels, eps).item() == pytest.approx(expected, rel=1e-6)


def test_label_smoothing_equals_torchreid_and_zero_is_the_plain_ce():
    from torchreid.reid.losses import CrossEntropyLoss

    g = torch.Generator().manual_seed(2)
    logits, labels = torch.randn(6, 5, generator=g), torch.tensor([0, 1, 2, 3, 4, 0])
    theirs = CrossEntropyLoss(num_classes=5, eps=0.1, use_gpu=False)(logits, labels)
    assert cross_entropy(logits, labels, 0.1).item() == pytest.approx(theirs.item(), rel=1e-6)
    assert torch.equal(cross_entropy(logits, labels, 0.0), F.cross_entropy(logits, labels))


# ---------------------------------------------------------------- the helper
def test_plain_recipe_changes_nothing():
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    out = {"loss": torch.tensor(1.5)}
    assert PLAIN.add_metric_terms(dict(out), torch.randn(4, 2), labels) == out
    assert torch.equal(PLAIN.id_loss(logits, labels), F.cross_entropy(logits, labels))


def test_recipe_adds_the_weighted_triplet_and_logs_it_unweighted():
    recipe = Recipe(label_smoothing=0.1, triplet_weight=0.5, triplet_margin=0.3)
    x, y = column(0, 1, 3, 7), torch.tensor([0, 0, 1, 1])
    out = recipe.add_metric_terms({"loss": torch.tensor(1.0)}, x, y)
    assert out["triplet"].item() == pytest.approx(2.3 / 4, rel=1e-6)
    assert out["loss"].item() == pytest.approx(1.0 + 0.5 * 2.3 / 4, rel=1e-6)
    # ONE's branches: one triplet per branch, summed like their cross-entropies.
    two = recipe.add_metric_terms({"loss": torch.tensor(0.0)}, [x, x * 2], y)
    # x * 2 at 0, 2, 6, 14: only anchor 6 is active, 8 - 4 + 0.3.
    assert two["triplet"].item() == pytest.approx(2.3 / 4 + 4.3 / 4, rel=1e-6)


def test_recipe_from_the_loss_section():
    cfg = load_config(None, ["loss.label_smoothing=0.1", "loss.triplet_weight=1", "loss.triplet_soft_margin=true"])
    assert Recipe.from_config(cfg.loss) == Recipe(0.1, 1.0, None)
    assert Recipe.from_config(load_config().loss) == PLAIN


@pytest.mark.parametrize(
    "override, message",
    [
        ("loss.label_smoothing=1.0", "loss.label_smoothing is an epsilon in \\[0, 1\\), got 1.0"),
        ("loss.triplet_weight=-1", "loss.triplet_weight must be >= 0.0, got -1.0 \\(0 = off\\)"),
        ("loss.triplet_margin=-0.5", "loss.triplet_margin must be >= 0.0, got -0.5"),
        ("optim.name=rmsprop", "optim.name='rmsprop' is not one of: sgd, adam, adamw"),
        ("optim.schedule=linear", "optim.schedule='linear' is not one of: step, cosine"),
        ("optim.warmup_epochs=-2", "optim.warmup_epochs must be in 0..100000, got -2"),
        ("model.neck=bn", "model.neck='bn' is not one of: plain, bnneck"),
        ("data.random_erasing=2", "data.random_erasing must be in 0.0..1.0, got 2.0 \\(a probability\\)"),
        ("data.sampler=pk", "data.sampler='pk' is not one of: random, identity"),
    ],
)
def test_bad_recipe_values_are_one_line(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


# ---------------------------------------------------------------- schedule and optimizer
def test_bot_schedule_warm_up_then_steps_at_40_and_70_of_120():
    lrs = epoch_learning_rates([120], 3.5e-4, (0.3334, 0.5834), 0.1, warmup_epochs=10)
    # The paper: 3.5e-5 * t / ... -> "linearly from 3.5e-5 to 3.5e-4 in 10 epochs" (t = 1..10),
    # 3.5e-4 to epoch 40, 3.5e-5 to 70, 3.5e-6 to 120.
    assert lrs[:10] == pytest.approx([3.5e-5 * t for t in range(1, 11)])
    assert lrs[10:40] == pytest.approx([3.5e-4] * 30)
    assert lrs[40:70] == pytest.approx([3.5e-5] * 30)
    assert lrs[70:] == pytest.approx([3.5e-6] * 50)


def test_srdl_warms_up_in_each_stage_and_cosine_decays_after_the_warm_up():
    lrs = epoch_learning_rates([4, 4], 1.0, (0.5, 0.75), 0.1, per_stage=True, warmup_epochs=2)
    assert lrs == pytest.approx([0.5, 1.0, 0.1, 0.01] * 2)
    one_decay = epoch_learning_rates([4, 4], 1.0, (0.5, 0.75), 0.1, per_stage=False, warmup_epochs=2)
    assert one_decay == pytest.approx([0.5, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])
    cosine = epoch_learning_rates([6], 2.0, (0.5,), 0.1, schedule="cosine", warmup_epochs=2)
    # After 2 warm-up epochs, 4 epochs of (1 + cos(pi t / 4)) / 2 for t = 0..3.
    assert cosine == pytest.approx([1.0, 2.0, 2.0, 1 + math.cos(math.pi / 4), 1.0, 1 + math.cos(3 * math.pi / 4)])


@pytest.mark.parametrize(
    "name, cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)]
)
def test_optimizer_by_name(name, cls):
    cfg = load_config(None, [f"optim.name={name}", "optim.lr=3.5e-4", "optim.weight_decay=5e-4"]).optim
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    net[1].bias.requires_grad_(False)  # e.g. BNNeck's frozen shift: never optimised
    opt = build_optimizer(net, cfg)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 3.5e-4 and group["weight_decay"] == 5e-4 and len(group["params"]) == 3
