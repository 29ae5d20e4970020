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


def epoch_learning_rates(
    stage_epochs: Sequence[int],
    base_lr: float,
    milestones: Sequence[float],
    gamma: float,
    per_stage: bool = True,
) -> List[float]:
    """One learning rate per global epoch.

    per_stage=True is SRDL's stage-complete schedule: every stage has its own complete step
    decay.  per_stage=False spreads one decay over all epochs (the stage-incomplete
    ablation; for a single stage both are the same).
    """
    if per_stage:
        lrs: List[float] = []
        for n in stage_epochs:
            lrs.extend(step_decay(n, base_lr, milestones, gamma))
        return lrs
    return step_decay(sum(stage_epochs), base_lr, milestones, gamma)
