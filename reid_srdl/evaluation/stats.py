"""Paired comparisons of two methods over the same seeds (experiment tables).

Seed s of method A and seed s of method B share the training subset, the initialisation of
their first network and the data order, so the per-seed differences ``a_s - b_s`` carry less
noise than the two means; their mean gets a two-sided 95% interval from Student's t with
n - 1 degrees of freedom (the paired t interval).
"""

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class PairedDifference:
    n: int
    mean: float  # mean of a_s - b_s
    std: float  # sample standard deviation of the differences (n - 1 in the denominator)
    ci_low: float
    ci_high: float
    p_value: float  # two-sided paired t-test (nan for n < 2 or identical differences)

    def to_dict(self) -> dict:
        return dict(
            n=self.n, mean=self.mean, std=self.std, ci_low=self.ci_low, ci_high=self.ci_high, p_value=self.p_value
        )


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """Mean, std and the paired-t ``confidence`` interval of ``a - b`` (same-seed pairs)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired values need two equal-length non-empty lists, got {a.shape} and {b.shape}")
    d = a - b
    n = len(d)
    mean = float(d.mean())
    if n < 2:
        return PairedDifference(n, mean, float("nan"), float("nan"), float("nan"), float("nan"))
    std = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    p = float(stats.ttest_rel(a, b).pvalue) if std > 0 else float("nan")
    return PairedDifference(n, mean, std, mean - half, mean + half, p)
