"""Learning rate per epoch: step decay, SRDL's stage-complete and stage-incomplete schedules."""

import pytest

from reid_srdl.engine.schedule import epoch_learning_rates, milestone_epochs, step_decay


def test_market_schedule_120_epochs_single_stage():
    lrs = epoch_learning_rates([120], 0.1, (0.5, 0.75), 0.1)
    assert len(lrs) == 120
    assert lrs[0] == lrs[59] == 0.1
    assert lrs[60] == lrs[89] == pytest.approx(0.01)
    assert lrs[90] == lrs[119] == pytest.approx(0.001)


def test_stage_complete_restarts_the_decay_in_each_stage():
    lrs = epoch_learning_rates([60, 60], 0.1, (0.5, 0.75), 0.1, per_stage=True)
    expected = ([0.1] * 30 + [0.01] * 15 + [0.001] * 15) * 2
    assert lrs == pytest.approx(expected)


def test_stage_incomplete_spreads_one_decay_over_both_stages():
    lrs = epoch_learning_rates([60, 60], 0.1, (0.5, 0.75), 0.1, per_stage=False)
    # Stage 1 never decays (it ends exactly at the first milestone): the ablation's point.
    assert lrs[:60] == pytest.approx([0.1] * 60)
    assert lrs[60:] == pytest.approx([0.01] * 30 + [0.001] * 30)


def test_small_and_odd_spans():
    assert milestone_epochs(6, (0.5, 0.75)) == [3, 4]
    assert milestone_epochs(5, (0.5, 0.75)) == [2, 3]
    assert milestone_epochs(1, (0.5, 0.75)) == [1, 1]  # a 1-epoch span trains at the base rate
    assert epoch_learning_rates([1, 1], 0.1, (0.5, 0.75), 0.1) == pytest.approx([0.1, 0.1])
    assert step_decay(2, 1.0, (0.5, 0.75), 0.1) == pytest.approx([1, 0.01])
    assert step_decay(6, 1.0, (0.5, 0.75), 0.1) == pytest.approx([1, 1, 1, 0.1, 0.01, 0.01])
    assert epoch_learning_rates([3, 4], 1.0, (0.5, 0.75), 0.5) == pytest.approx([1, 0.5, 0.25, 1, 1, 0.5, 0.25])
