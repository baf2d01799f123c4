"""Notebook 00's new exercise checks, both ways: the right answer passes, each plausible wrong
answer fails with the hint that explains it (the older ones are in test_checks.py)."""
from __future__ import annotations

import pytest
import torch

from fedlab_utils.checks import NotAnswered, baseline
from fedlab_utils.checks.baseline import _toy_history, check_cost_to_target, check_lte_saving_prediction, cost_to_target
from fedlab_utils.ledger import PROFILES


# ----------------------------------------------------------------------------- cost to the target
def _right(history, target):
    up = sessions = 0
    for r in history.records:
        up, sessions = up + r.bytes_up, sessions + len(r.clients)
        if r.accuracy >= target:
            return up, sessions
    return None


def test_cost_to_target_by_hand():
    h = _toy_history([0.5, 0.7, 0.8, 0.75, 0.9], [4, 4, 3, 4, 4], bytes_per_client=1000)
    assert cost_to_target(h, 0.8) == (11_000, 11)      # rounds 1-3: 4 + 4 + 3 clients, 1,000 B each
    assert cost_to_target(h, 0.5) == (4_000, 4)        # round 1 already
    assert cost_to_target(h, 0.85) == (19_000, 19)     # the last round
    assert cost_to_target(h, 0.95) is None             # never
    assert h.bytes_up_to_accuracy(0.8) == 11_000       # the History agrees on the bytes


@pytest.mark.parametrize("seed", [None, 1, 2, 3])
def test_right_answer_passes(seed, capsys):
    check_cost_to_target(_right, seed=seed)
    assert "✓ cost to reach the target" in capsys.readouterr().out


def test_right_answer_passes_on_real_runs():
    runs = {"a": _toy_history([0.2, 0.9], [3, 3]), "b": _toy_history([0.2, 0.3], [2, 2])}
    check_cost_to_target(_right, runs=runs, target=0.85)


def _rounds_not_sessions(history, target):
    answer = _right(history, target)
    return None if answer is None else (answer[0], history.rounds_to_accuracy(target))


def _one_round_early(history, target):
    up = sessions = 0
    for r in history.records:
        if r.accuracy >= target:
            return up, sessions
        up, sessions = up + r.bytes_up, sessions + len(r.clients)
    return None


def _whole_run(history, target):
    if _right(history, target) is None:
        return None
    return sum(r.bytes_up for r in history.records), sum(len(r.clients) for r in history.records)


def _last_crossing(history, target):
    best = None
    up = sessions = 0
    for r in history.records:
        up, sessions = up + r.bytes_up, sessions + len(r.clients)
        if r.accuracy >= target:
            best = (up, sessions)
    return best


def _strictly_above(history, target):
    up = sessions = 0
    for r in history.records:
        up, sessions = up + r.bytes_up, sessions + len(r.clients)
        if r.accuracy > target:
            return up, sessions
    return None


def _zero_when_never(history, target):
    return _right(history, target) or (0, 0)


@pytest.mark.parametrize("wrong, message", [
    (_rounds_not_sessions, "number of rounds"),
    (_one_round_early, "one round early"),
    (_whole_run, "whole run"),
    (_last_crossing, "first round"),
    (_strictly_above, "first round"),       # round 3 sits exactly at 0.8: >= counts it
    (_zero_when_never, "return None"),
    (lambda h, t: 11_000, "pair"),
])
def test_wrong_answers_fail_with_a_hint(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_cost_to_target(wrong)


def test_unanswered_is_reported_as_not_answered():
    def unanswered(history, target):
        raise NotImplementedError()

    with pytest.raises(NotAnswered):
        check_cost_to_target(unanswered)


# ----------------------------------------------------------------------------- the LTE prediction
def _measured(profile="phone-lte", flops=2.0e9, payload=203_560) -> float:
    p = PROFILES[profile]
    return p.energy(flops, payload, payload).total / p.energy(flops, payload // 100, payload // 100).total


def test_lte_saving_is_small_and_wifi_is_not():
    """The fact the prediction is about: on LTE a 100x smaller payload saves about 10 %, on WiFi
    it cuts the joules by a factor of several."""
    assert 1.0 < _measured("phone-lte") < 1.2
    assert _measured("phone-wifi") > 3


@pytest.mark.parametrize("answer", [1.1, 1.0, 1.3, torch.tensor(1.05)])
def test_prediction_within_the_band_passes(answer, capsys):
    check_lte_saving_prediction(answer, _measured())
    assert "✓ prediction" in capsys.readouterr().out


@pytest.mark.parametrize("answer, message", [(100, "about 1 W whatever it sends"), (2.0, "fixed cost"),
                                             (0.5, "below 1"), (-1, "positive number"), ("1.1", "positive number"),
                                             (True, "positive number"), (float("nan"), "positive number")])
def test_prediction_outside_the_band_fails_with_why(answer, message):
    with pytest.raises(AssertionError, match=message):
        check_lte_saving_prediction(answer, _measured())


def test_band_edges():
    m = _measured()
    check_lte_saving_prediction(m * baseline.PREDICTION_BAND * 0.999, m)
    check_lte_saving_prediction(m / baseline.PREDICTION_BAND * 1.001, m)
    with pytest.raises(AssertionError):
        check_lte_saving_prediction(m * baseline.PREDICTION_BAND * 1.01, m)
