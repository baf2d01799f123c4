"""Notebook 04's exercises, each check tested both ways: the server step the student builds (FedAdam and
FedYogi), FedAdam's first step (a derivation), and the prediction of the joules a deadline saves."""
from __future__ import annotations

import pytest
import torch

from fedlab_utils.checks import NotAnswered, acceleration

HIDDEN = (1, 2)


def _server_step(global_state, update, m, v, lr, beta1, beta2, tau, variant):
    if m is None:
        m = {k: torch.zeros_like(d) for k, d in update.items()}
        v = {k: torch.full_like(d, tau ** 2) for k, d in update.items()}
    m = {k: beta1 * m[k] + (1 - beta1) * update[k] for k in update}
    if variant == "adam":
        v = {k: beta2 * v[k] + (1 - beta2) * update[k] ** 2 for k in update}
    else:
        v = {k: v[k] - (1 - beta2) * update[k] ** 2 * torch.sign(v[k] - update[k] ** 2) for k in update}
    return {k: global_state[k] + lr * m[k] / (v[k].sqrt() + tau) for k in global_state}, m, v


def _with(mistake):
    """The right step with one plausible mistake switched on (rounds counted for bias correction)."""
    def step(global_state, update, m, v, lr, beta1, beta2, tau, variant, _seen={}):
        round_ = 1 if m is None else _seen.get(id(m), 1) + 1
        out = acceleration._server_step_variant(global_state, update, m, v, lr, beta1, beta2, tau, variant,
                                                round_=round_, **{mistake: True})
        _seen[id(out[1])] = round_
        return out
    return step


def test_server_step_accepts_the_right_answer_visible_and_hidden(capsys):
    for seed in (None, *HIDDEN):
        acceleration.check_server_step(_server_step, seed=seed)
    assert "FedAdam and FedYogi server step: correct" in capsys.readouterr().out


@pytest.mark.parametrize("mistake, message", [
    ("bias_correction", "no bias correction"),
    ("adam_v_for_yogi", "Yogi's sign rule"),
    ("tau_inside", "after the square root"),
    ("descend", "move along it"),
    ("v_from_zero", "Start v at tau"),
])
def test_server_step_names_each_plausible_mistake(mistake, message):
    with pytest.raises(AssertionError, match=message):
        acceleration.check_server_step(_with(mistake))


def test_server_step_rejects_other_wrong_answers():
    def fedavg(global_state, update, m, v, lr, beta1, beta2, tau, variant):
        return {k: global_state[k] + update[k] for k in global_state}, m, v
    with pytest.raises(AssertionError, match="no bias correction"):  # the general hint lists the whole rule
        acceleration.check_server_step(fedavg)
    with pytest.raises(AssertionError, match="tuple"):
        acceleration.check_server_step(lambda *args: args[0])
    with pytest.raises(NotAnswered, match="not implemented yet"):
        acceleration.check_server_step(lambda *args: (_ for _ in ()).throw(NotImplementedError()))


def _first_step(delta, lr, beta1, beta2):
    return lr * (1 - beta1) / (1 - beta2) ** 0.5 * (1 if delta > 0 else -1)


def test_first_step_both_ways():
    for seed in (None, *HIDDEN):
        acceleration.check_first_step(_first_step, seed=seed)
    wrong = [lambda d, lr, b1, b2: lr,                                        # right only when the factors cancel
             lambda d, lr, b1, b2: lr * d,                                    # FedAvg's step, proportional to Δ
             lambda d, lr, b1, b2: lr * (1 - b1) / (1 - b2) * (1 if d > 0 else -1),   # forgot the square root
             lambda d, lr, b1, b2: lr * (1 - b1) / (1 - b2) ** 0.5]           # forgot the sign
    for answer in wrong:
        with pytest.raises(AssertionError, match="size of delta cancels"):
            acceleration.check_first_step(answer)


def test_saving_prediction_both_ways(capsys):
    for right in (0, 5, 10):
        acceleration.check_saving_prediction(right, 5084.06, 5084.06, late_share=0.5)
    assert "measured 0%" in capsys.readouterr().out
    for answer, message in [(50, "50% of the updates were late"), (25, "points off"), (-5, "0 to 100"),
                            (None, "expected a number"), (True, "expected a number")]:
        with pytest.raises(AssertionError, match=message):
            acceleration.check_saving_prediction(answer, 5084.06, 5084.06, late_share=0.5)
    with pytest.raises(AssertionError, match="spent no joules"):
        acceleration.check_saving_prediction(0, 0.0, 0.0, late_share=0.0)
    assert acceleration.SAVING_PREDICTION_BAND == 10.0


def test_wasted_prediction_both_ways(capsys):
    total, wasted = 5084.06, 2542.03  # half the updates late, every client-round the same joules
    for right in (50, 41, 59.5, 60):
        acceleration.check_wasted_prediction(right, wasted, total, late_share=0.5)
    assert "measured 50%" in capsys.readouterr().out
    for answer, message in [(0, "points off"), (25, "50% of the updates were late"), (0.5, "looks like a fraction"),
                            (-5, "0 to 100"), (None, "expected a number"), (False, "expected a number")]:
        with pytest.raises(AssertionError, match=message):
            acceleration.check_wasted_prediction(answer, wasted, total, late_share=0.5)
