"""What every registered method must satisfy, one table entry per method.

An entry names the loss terms the method logs and how they add up to its loss: the method's
formula from its paper or official code (docs/methods.md), written here from those sources,
not read from the method's code.  The contract suite (tests/test_method_contract.py) fails for
a registered method without an entry, so a new method cannot go untested.

``options`` are the ``method.<name>.<key>`` overrides every contract test runs the method with:
non-default weights wherever the formula has one, so that a weight the method forgot to apply
shows; and whatever makes the method declare its extra evaluation models.
"""

from dataclasses import dataclass, field
from typing import Callable, FrozenSet, Mapping, Tuple

Terms = Mapping[str, float]


@dataclass(frozen=True)
class SGD:
    """A few plain SGD steps on one batch that must lower the loss by ``ratio``."""

    lr: float = 0.1
    momentum: float = 0.0
    steps: int = 20
    ratio: float = 0.9


@dataclass(frozen=True)
class Contract:
    # Every loss term (and logged weight) the method's forward returns, besides loss, logits
    # and accuracies, in its last stage; earlier stages log a subset.
    terms: FrozenSet[str]
    # loss = f(logged terms, the method's options), at the options below.
    loss: Callable[[Terms, object], float]
    options: Tuple[str, ...] = ()
    # Names of extra_eval_models() under these options.
    extra_eval: FrozenSet[str] = frozenset()
    # Training-forward FLOPs over the plain net's, as the method's structure dictates.
    flops: Callable[[float], bool] = lambda ratio: ratio == 1
    sgd: SGD = field(default_factory=SGD)
    # The method needs a frozen teacher file (method.kd.teacher).
    teacher: bool = False


CONTRACTS = {
    # Plain cross-entropy.
    "vanilla": Contract(terms=frozenset({"ce"}), loss=lambda t, o: t["ce"]),
    # Hinton et al. 2015: ce_weight * CE + kd_weight * T^2 KL(p_teacher || p_student); the
    # teacher (of the student's architecture here) runs one more forward of the same cost.
    "kd": Contract(
        terms=frozenset({"ce", "kd"}),
        loss=lambda t, o: o.ce_weight * t["ce"] + o.kd_weight * t["kd"],
        options=("temperature=2", "ce_weight=0.3", "kd_weight=0.7"),
        flops=lambda ratio: ratio == 2,
        teacher=True,
    ),
    # Lan et al. 2018: stage 1 CE; stage 2 CE + T^2 KL(p_stage1 || p) with the stored logits;
    # stage-1 + stage-2 ensemble evaluated too.
    "srdl": Contract(
        terms=frozenset({"ce", "kl"}),
        loss=lambda t, o: t["ce"] + t.get("kl", 0.0),
        options=("temperature=2",),
        extra_eval=frozenset({"ensemble"}),
    ),
    # Lan et al. 2018 (ONE): sum_i CE(z_i) + CE(z_e) + w(epoch) sum_i T^2 KL(p_e || p_i); the
    # ramp weight w is logged as kl_weight.  Two more copies of the last stage and head plus the
    # gate: more than the plain net, less than three.
    "one": Contract(
        terms=frozenset({"ce", "ce_ensemble", "kl", "kl_weight"}),
        loss=lambda t, o: t["ce"] + t["ce_ensemble"] + t["kl_weight"] * t["kl"],
        options=("temperature=2.5", "deploy_ensemble=true"),
        extra_eval=frozenset({"ensemble"}),
        flops=lambda ratio: 1 < ratio < 3,
        sgd=SGD(lr=0.05, momentum=0.9, steps=12, ratio=0.7),
    ),
    # Zhang et al. 2019, official train.py: CE(deep) + (1 - alpha) sum CE(exits)
    # + alpha sum KL(exits || deep) + lambda hint.
    "byot": Contract(
        terms=frozenset({"ce", "exit_ce", "kd", "hint"}),
        loss=lambda t, o: t["ce"] + (1 - o.alpha) * t["exit_ce"] + o.alpha * t["kd"] + o.hint_weight * t["hint"],
        options=("alpha=0.4", "hint_weight=0.05"),
        flops=lambda ratio: ratio > 1,
    ),
    # Ji et al. 2021 (FRSKD): CE + CE(self-teacher) + alpha T^2 KL(p_teacher || p)
    # + beta sum attention distances.
    "frskd": Contract(
        terms=frozenset({"ce", "ce_teacher", "kd", "attention"}),
        loss=lambda t, o: t["ce"] + t["ce_teacher"] + o.alpha * t["kd"] + o.beta * t["attention"],
        options=("alpha=1.5", "beta=50"),
        flops=lambda ratio: ratio > 1,
    ),
}


def contract_of(name: str) -> Contract:
    """The entry of method ``name``; a registered method without one fails the test."""
    if name not in CONTRACTS:
        raise AssertionError(
            f"method {name!r} is registered but has no entry in tests/method_contracts.py CONTRACTS: "
            "add its loss terms and how they add up to the loss (its paper's or official code's formula)"
        )
    return CONTRACTS[name]


def overrides(name: str):
    """The config overrides of method ``name`` at its contract options."""
    return [f"method.name={name}", *(f"method.{name}.{option}" for option in contract_of(name).options)]


def expected_loss(name: str, terms: Terms, options, triplet_weight: float = 0.0) -> float:
    """The table's loss from the logged terms; the recipe's triplet term added with its weight."""
    loss = contract_of(name).loss(terms, options)
    return loss + (triplet_weight * terms["triplet"] if triplet_weight else 0.0)


def logged_terms(out) -> set:
    """The names of the loss terms a forward (or a metrics.jsonl line) logged: everything but the
    loss, the logits and the accuracies."""
    return {k for k in out if k not in ("loss", "logits") and not k.startswith("acc")}
