"""Notebook 04's new exercise (predict the joules a deadline wastes), its check tested both ways."""
from __future__ import annotations

import pytest

from fedlab_utils.checks import acceleration


def test_wasted_prediction_both_ways(capsys):
    total, wasted = 5084.06, 2542.03  # half the updates late, every client-round the same joules
    for right in (50, 41, 59.5, 60):
        acceleration.check_wasted_prediction(right, wasted, total, late_share=0.5)
    assert "measured 50%" in capsys.readouterr().out
    wrong = [(0, "points off"),                # "a shorter round saves energy"
             (25, "50% of the updates were late"),
             (0.5, "looks like a fraction"),
             (-5, "0 to 100"),
             (None, "expected a number"),
             (False, "expected a number")]
    for answer, message in wrong:
        with pytest.raises(AssertionError, match=message):
            acceleration.check_wasted_prediction(answer, wasted, total, late_share=0.5)


def test_wasted_prediction_compares_with_the_measured_share_within_the_stated_band():
    assert acceleration.WASTED_PREDICTION_BAND == 10.0
    acceleration.check_wasted_prediction(0, 0.0, 100.0, late_share=0.0)  # no deadline: nothing wasted
    acceleration.check_wasted_prediction(35, 25.0, 100.0, late_share=0.25)
    with pytest.raises(AssertionError, match="band is ±10"):
        acceleration.check_wasted_prediction(35.5, 25.0, 100.0, late_share=0.25)
    with pytest.raises(AssertionError, match="spent no joules"):
        acceleration.check_wasted_prediction(0, 0.0, 0.0, late_share=0.0)
