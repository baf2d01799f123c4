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
