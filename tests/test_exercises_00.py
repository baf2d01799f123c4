"""Notebook 00's exercise checks, both ways: the right answer passes, each plausible wrong answer
fails with the hint that explains it (the build-it round, the pooled-step settings, the crossover
payload and the LTE prediction)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fedlab_utils.checks import NotAnswered, baseline
from fedlab_utils.checks.baseline import _round_variant, check_lte_saving_prediction
from fedlab_utils.core import client_generator, minibatches, model_state, sample_clients
from fedlab_utils.ledger import PROFILES


# ----------------------------------------------------------------------------- build it: one FedAvg round
def _student_round(global_model, clients, fraction, local, round_idx, seed):
    """The notebook's solution, written out as a student would (torch.optim.SGD, not the package's loop)."""
    chosen = sample_clients(len(clients), fraction, np.random.default_rng([seed, round_idx]))
    global_state = model_state(global_model)
    updates, counts = [], []
    for cid in chosen:
        data = clients[cid]
        model = copy.deepcopy(global_model)
        optimizer = torch.optim.SGD(model.parameters(), lr=local.lr)
        shuffle = client_generator(seed, round_idx, cid)
        for _ in range(local.epochs):
            for idx in minibatches(len(data), local.batch_size, shuffle):
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(data.x[idx]), data.y[idx]).backward()
                optimizer.step()
        updates.append({k: v - global_state[k] for k, v in model_state(model).items()})
        counts.append(len(data))
    total = sum(counts)
    return {k: global_state[k] + sum(n / total * u[k] for u, n in zip(updates, counts)) for k in global_state}


@pytest.mark.parametrize("seed", [None, 1])
def test_a_correct_round_passes(seed, capsys):
    baseline.check_fedavg_round(_student_round, seed=seed)
    assert "correct" in capsys.readouterr().out


def _in_place(global_model, clients, fraction, local, round_idx, seed):
    state = _student_round(global_model, clients, fraction, local, round_idx, seed)
    global_model.load_state_dict(state, strict=False)
    return state


def _fresh_generator_every_epoch(global_model, clients, fraction, local, round_idx, seed):
    class Local:  # the same settings, but a new shuffling generator each epoch: another order from epoch 2
        epochs, batch_size, lr = 1, local.batch_size, local.lr
    state = model_state(global_model)
    for _ in range(local.epochs):
        holder = copy.deepcopy(global_model)
        holder.load_state_dict(state, strict=False)
        state = _student_round(holder, clients, fraction, Local, round_idx, seed)
    return state


@pytest.mark.parametrize("wrong, message", [
    (lambda *a: _round_variant(*a, weighting="equal"), "unweighted"),
    (lambda *a: _round_variant(*a, restart=False), "previous client's trained weights"),
    (lambda *a: _round_variant(*a, sampled_only=False), "ALL clients"),
    (_in_place, "in place"),
    (_fresh_generator_every_epoch, "off by up to"),
    (lambda m, c, f, l, r, s: model_state(m), "off by up to"),
    (lambda m, c, f, l, r, s: [1, 2], "return the new global state"),
])
def test_a_wrong_round_fails_with_a_hint(wrong, message):
    with pytest.raises(AssertionError, match=message):
        baseline.check_fedavg_round(wrong)


def test_an_unanswered_round_is_reported_as_not_answered():
    def unanswered(*args):
        raise NotImplementedError()
    with pytest.raises(NotAnswered):
        baseline.check_fedavg_round(unanswered)


# ----------------------------------------------------------------------------- when a round is a pooled step
@pytest.mark.parametrize("answer", [{"local_epochs": 1, "batch_size": None, "fraction": 1.0},
                                    {"local_epochs": 1, "batch_size": 1000, "fraction": 1}])
def test_fedsgd_with_every_client_is_the_pooled_step(answer, capsys):
    baseline.check_pooled_equivalent(answer)
    assert "pooled full-batch step" in capsys.readouterr().out


@pytest.mark.parametrize("answer, message", [
    ({"local_epochs": 2, "batch_size": None, "fraction": 1.0}, "client drift"),
    ({"local_epochs": 1, "batch_size": 10, "fraction": 1.0}, "mini-batch"),
    ({"local_epochs": 1, "batch_size": None, "fraction": 0.5}, "sampled clients"),
    ({"local_epochs": 0, "batch_size": None, "fraction": 1.0}, "epochs"),
    ({"epochs": 1}, "expected a dict"),
])
def test_other_settings_fail_with_the_reason(answer, message):
    with pytest.raises(AssertionError, match=message):
        baseline.check_pooled_equivalent(answer)


# ----------------------------------------------------------------------------- the crossover payload
def test_the_crossover_balances_bytes_and_session():
    for profile in PROFILES.values():
        b = baseline.crossover_bytes(profile, 2e9)
        bytes_only = profile.energy(2e9, b, b, include_fixed=False)
        assert bytes_only.uplink + bytes_only.downlink == pytest.approx(profile.radio_floor(2e9), rel=1e-9)
    assert baseline.crossover_bytes(PROFILES["phone-lte"], 2e9) > 50 * baseline.crossover_bytes(PROFILES["phone-wifi"], 2e9)


def test_a_correct_crossover_passes():
    baseline.check_crossover_bytes(lambda p, f: p.radio_floor(f) / (8 * (p.joules_per_bit_up + p.joules_per_bit_down)))


@pytest.mark.parametrize("wrong, message", [
    (lambda p, f: p.radio_floor(f) / (p.joules_per_bit_up + p.joules_per_bit_down), "bits"),
    (lambda p, f: p.radio_floor(f) / (8 * p.joules_per_bit_up), "both ways"),
    (lambda p, f: (p.radio_floor(f) + f * p.joules_per_flop) / (8 * (p.joules_per_bit_up + p.joules_per_bit_down)),
     "compute"),
    (lambda p, f: p.radio.session_joules / (8 * (p.joules_per_bit_up + p.joules_per_bit_down)) * 1.5, "got"),
    (lambda p, f: "2 MB", "number of bytes"),
])
def test_a_wrong_crossover_fails_with_a_hint(wrong, message):
    with pytest.raises(AssertionError, match=message):
        baseline.check_crossover_bytes(wrong)


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
