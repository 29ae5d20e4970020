"""The paired-difference interval against a hand computation and scipy's paired t-test."""

import math

import pytest
from scipy import stats

from reid_srdl.evaluation.stats import paired_difference


def test_paired_interval_by_hand():
    a = [85.0, 86.0, 84.0, 85.5, 86.5]
    b = [84.0, 85.5, 84.5, 84.0, 85.0]
    # Differences 1, 0.5, -0.5, 1.5, 1.5: mean 0.8, sample variance (0.04+0.09+1.69+0.49+0.49)/4 = 0.7.
    d = paired_difference(a, b)
    assert d.n == 5 and d.mean == pytest.approx(0.8)
    assert d.std == pytest.approx(math.sqrt(0.7))
    t975 = 2.7764451051977987  # Student's t, 4 degrees of freedom, 97.5th percentile (tables)
    half = t975 * math.sqrt(0.7) / math.sqrt(5)
    assert (d.ci_low, d.ci_high) == (pytest.approx(0.8 - half), pytest.approx(0.8 + half))
    assert d.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue)
    # The interval excludes 0 exactly when the two-sided test rejects at 5%.
    assert (d.ci_low > 0) == (d.p_value < 0.05)


def test_degenerate_inputs():
    one = paired_difference([1.0], [0.5])
    assert one.mean == 0.5 and math.isnan(one.ci_low)
    with pytest.raises(ValueError, match="equal-length"):
        paired_difference([1.0, 2.0], [1.0])
