"""Learning-rate schedules, as one learning rate per global epoch.

The trainer sets the optimizer's learning rate from this list at the start of every epoch,
so a resumed run needs no scheduler state: the epoch number is enough.
"""

import math
from typing import List, Sequence


def milestone_epochs(span_epochs: int, milestones: Sequence[float]) -> List[int]:
    """Epoch offsets (0-based, inside a span) at which the step decay applies.

    ``floor(fraction * span)``: 60 epochs with (0.5, 0.75) decay at 30 and 45, so epochs
    0-29 use the base rate, 30-44 one tenth of it, 45-59 one hundredth.  Never before epoch
    1: the first epoch of a span always runs at the base rate, even in a 1-epoch span.
    """
    return [max(1, int(math.floor(f * span_epochs + 1e-9))) for f in milestones]


def step_decay(span_epochs: int, base_lr: float, milestones: Sequence[float], gamma: float) -> List[float]:
    """Learning rate of each epoch of one span with a step decay at the given fractions."""
    points = milestone_epochs(span_epochs, milestones)
    return [base_lr * gamma ** sum(e >= p for p in points) for e in range(span_epochs)]


def cosine_decay(span_epochs: int, base_lr: float, warmup_epochs: int = 0) -> List[float]:
    """Learning rate of each epoch of one span: after the warm-up epochs (at the base rate
    here; :func:`warm_up` scales them), half a cosine from the base rate towards 0,
    ``base * (1 + cos(pi * t / T)) / 2`` with t the epochs since the warm-up and T their count."""
    decay = max(span_epochs - warmup_epochs, 1)
    return [
        base_lr if e < warmup_epochs else base_lr * 0.5 * (1.0 + math.cos(math.pi * (e - warmup_epochs) / decay))
        for e in range(span_epochs)
    ]


def warm_up(lrs: Sequence[float], warmup_epochs: int) -> List[float]:
    """Linear warm-up: epoch e < W of a span trains at ``lr * (e + 1) / W``.

    BoT's schedule (Luo et al. 2019): with W = 10 from 3.5e-5 up to 3.5e-4 in 10 epochs.
    (BoT's code steps a WarmupMultiStepLR with factor 0.01 at each epoch start, which gives
    the near-identical 0.109 ... 0.919 of the base rate, then 1 from epoch 10.)
    """
    return [lr * min(1.0, (e + 1) / warmup_epochs) if warmup_epochs else lr for e, lr in enumerate(lrs)]


def span_learning_rates(
    span_epochs: int,
    base_lr: float,
    milestones: Sequence[float],
    gamma: float,
    schedule: str = "step",
    warmup_epochs: int = 0,
) -> List[float]:
    """One span (a stage, or the whole run): warm-up, then step decay (milestones counted from
    the span's start, as BoT's 40/70 of 120) or cosine decay (over the epochs after the warm-up)."""
    if schedule == "step":
        lrs = step_decay(span_epochs, base_lr, milestones, gamma)
    elif schedule == "cosine":
        lrs = cosine_decay(span_epochs, base_lr, warmup_epochs)
    else:
        raise ValueError(f"schedule must be 'step' or 'cosine', got {schedule!r}")
    return warm_up(lrs, warmup_epochs)


def epoch_learning_rates(
    stage_epochs: Sequence[int],
    base_lr: float,
    milestones: Sequence[float],
    gamma: float,
    per_stage: bool = True,
    schedule: str = "step",
    warmup_epochs: int = 0,
) -> List[float]:
    """One learning rate per global epoch.

    per_stage=True is SRDL's stage-complete schedule: every stage has its own complete
    schedule (warm-up included).  per_stage=False spreads one schedule over all epochs (the
    stage-incomplete ablation; for a single stage both are the same).
    """
    if per_stage:
        lrs: List[float] = []
        for n in stage_epochs:
            lrs.extend(span_learning_rates(n, base_lr, milestones, gamma, schedule, warmup_epochs))
        return lrs
    return span_learning_rates(sum(stage_epochs), base_lr, milestones, gamma, schedule, warmup_epochs)
