"""Notebook 05's new exercises, each check tested both ways, and its one-notice device fallback."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fedlab_utils import devices
from fedlab_utils.checks import parallel
from fedlab_utils.lessons.parallel import PipelineReport


def _report(forward: np.ndarray, backward: np.ndarray) -> PipelineReport:
    stages, micro = forward.shape
    return PipelineReport(stages, micro, forward, backward, loss=0.0, output=torch.zeros(1))


@pytest.mark.parametrize("stages", [1, 2, 3, 5])
def test_plain_model_parallelism_idles_s_minus_1_over_s_whatever_the_stage_times(stages):
    """The fact the prediction rests on: with M = 1 the replayed bubble is (S-1)/S for any stage times."""
    rng = np.random.default_rng(stages)
    report = _report(rng.uniform(0.1, 5.0, (stages, 1)), rng.uniform(0.1, 5.0, (stages, 1)))
    assert report.bubble == pytest.approx((stages - 1) / stages, abs=1e-12)


def test_idle_prediction_both_ways(capsys):
    measured = _report(np.array([[1.0], [3.0], [0.5]]), np.array([[2.0], [1.0], [0.5]])).bubble  # 2/3
    for right in (67, 66.7, 62, 71.5):
        parallel.check_idle_prediction(right, measured, num_stages=3)
    assert "measured 67%" in capsys.readouterr().out
    wrong = [(33, "(S-1)/S = 67%"),            # the GPipe bubble at M = 4 (or "one stage in three works")
             (0, "points off"),                # "the stages are on different devices, so nothing waits"
             (0.67, "looks like a fraction"),  # right idea, wrong unit
             (150, "0 to 100"),
             ("67", "expected a number"),
             (True, "expected a number")]
    for answer, message in wrong:
        with pytest.raises(AssertionError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parallel.check_idle_prediction(answer, measured, num_stages=3)


def test_idle_prediction_band_is_stated_and_used():
    assert parallel.IDLE_PREDICTION_BAND == 5.0
    parallel.check_idle_prediction(50 + 5.0, 0.5, num_stages=2)
    with pytest.raises(AssertionError, match="band is ±5"):
        parallel.check_idle_prediction(50 + 5.5, 0.5, num_stages=2)


def test_no_gpu_notice_is_printed_once_per_process(capsys, monkeypatch):
    monkeypatch.setattr(devices, "available_devices", lambda: ["cpu"])
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    monkeypatch.setattr(devices, "_shown_notices", set())
    assert devices.get_devices(3) == [torch.device("cpu")] * 3
    assert devices.get_devices(4, verbose=False) == [torch.device("cpu")] * 4
    out = capsys.readouterr().out
    assert out.count("virtual devices") == 1
    assert out.count("Placements:") == 1


# ----------------------------------------------------------------------------- the build: one step across the cut
def _right_step(client_part, server_part, x, y, send_up, send_down):
    activation = client_part(x)
    server_in = send_up(activation).requires_grad_()
    loss = torch.nn.functional.cross_entropy(server_part(server_in), y)
    loss.backward()
    activation.backward(send_down(server_in.grad))
    return loss


def _never_sent(client_part, server_part, x, y, send_up, send_down):  # the article's bug: nothing crosses
    loss = torch.nn.functional.cross_entropy(server_part(client_part(x)), y)
    loss.backward()
    return loss


def _detached(client_part, server_part, x, y, send_up, send_down):  # no gradient goes back to stage 1
    server_in = send_up(client_part(x)).requires_grad_()
    loss = torch.nn.functional.cross_entropy(server_part(server_in), y)
    loss.backward()
    return loss


def _sent_back_but_unused(client_part, server_part, x, y, send_up, send_down):
    server_in = send_up(client_part(x)).requires_grad_()
    loss = torch.nn.functional.cross_entropy(server_part(server_in), y)
    loss.backward()
    send_down(server_in.grad)
    return loss


def _wrong_gradient(client_part, server_part, x, y, send_up, send_down):  # sends ones instead of the gradient
    activation = client_part(x)
    server_in = send_up(activation).requires_grad_()
    loss = torch.nn.functional.cross_entropy(server_part(server_in), y)
    loss.backward()
    activation.backward(send_down(torch.ones_like(server_in)))
    return loss


def test_split_step_accepts_the_right_answer_and_the_package_version(capsys):
    from fedlab_utils.lessons.parallel import split_step

    for seed in (None, 1, 2):
        parallel.check_split_step(_right_step, seed=seed)
        parallel.check_split_step(split_step, seed=seed)
    assert "split_step: correct" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, message", [
    (_never_sent, "send_up was called 0 times"),
    (_detached, "send_down was called 0 times"),
    (_sent_back_but_unused, "has no gradient"),
    (_wrong_gradient, "differs from the model trained in one piece"),
])
def test_split_step_names_each_plausible_mistake(wrong, message):
    with pytest.raises(AssertionError, match=message):
        parallel.check_split_step(wrong)


def test_split_step_not_answered_is_reported():
    from fedlab_utils.checks import NotAnswered

    def stub(*args):
        raise NotImplementedError()
    with pytest.raises(NotAnswered, match="not implemented yet"):
        parallel.check_split_step(stub)


def test_radio_awake_joules_prices_the_exchanges_the_ledger_leaves_out():
    from fedlab_utils.ledger import PROFILES
    from fedlab_utils.lessons.parallel import radio_awake_joules

    lte = PROFILES["phone-lte"]
    out = radio_awake_joules(lte, exchanges=13, wait_s=0.05)
    assert out["awake"] == pytest.approx(13 * 0.05 * lte.radio.tail_mw * 1e-3)
    assert out["sessions"] == pytest.approx(12 * lte.radio.session_joules)
    assert radio_awake_joules(lte, exchanges=50, wait_s=0.0, sessions_counted=50) == {
        "session_joules": lte.radio.session_joules, "awake": 0.0, "sessions": 0.0}


def test_parameter_rules_refuse_micro_batches_larger_than_the_batch():
    from fedlab_utils.lessons.parallel import RELATIONS_05, RULES_05
    from fedlab_utils.validation import check_parameters

    values = dict(seed=0, dataset="mnist5k", data_dir=None, num_clients=10, rounds=5, local_epochs=1, batch_size=32,
                  lr=0.05, cut_layer=3, splitfed_variant="v1", num_stages=3, micro_batches=4, pipeline_batch=64,
                  num_processes=2, energy_profile="phone-lte", device="auto", results_path=None)
    assert check_parameters(values, RULES_05, RELATIONS_05)["cut_layer"] == 3
    with pytest.raises(ValueError, match="micro_batches=65 is larger than pipeline_batch=64"):
        check_parameters({**values, "micro_batches": 65}, RULES_05, RELATIONS_05)
    with pytest.raises(ValueError, match="energy_profile"):
        check_parameters({**values, "energy_profile": "phone-5g"}, RULES_05, RELATIONS_05)
