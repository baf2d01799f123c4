"""Checks for lesson 05 (model parallelism and split learning).  Each raises ``AssertionError``
with a hint when the answer is wrong."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from ..i18n import gettext
from . import call_safely, expect, expect_close, expect_percent, passed

__all__ = ["check_bubble_fraction", "check_choose_cut", "check_pipeline_time", "reference_choose_cut",
           "check_idle_prediction", "IDLE_PREDICTION_BAND"]

IDLE_PREDICTION_BAND = 5.0
"""How far (in percentage points) a predicted idle share may be from the measured one."""


def check_bubble_fraction(bubble_fraction: Callable[[int, int], float]) -> None:
    """``bubble_fraction(S, M)`` must give GPipe's idle share with equal stage times."""
    hint = (gettext("Count clock ticks: a step with S stages and M micro-batches lasts M+S−1 ticks per pass, "
                    "and each stage is busy for M of them."))
    for stages, micro in [(1, 1), (1, 8), (2, 1), (2, 4), (3, 4), (4, 16), (8, 32)]:
        got = call_safely(bubble_fraction, stages, micro, what=f"bubble_fraction({stages}, {micro})")
        expect_close(got, (stages - 1) / (micro + stages - 1), f"bubble_fraction(S={stages}, M={micro})",
                     rel=1e-9, abs_=1e-12, hint=hint)
    passed("bubble_fraction")


def reference_choose_cut(model: nn.Sequential, input_shape: Sequence[int], flop_budget: float) -> int | None:
    """Among cuts whose client FLOPs per sample fit ``flop_budget``, the one with the smallest
    activation payload per sample (ties: fewer client layers); ``None`` if none fits."""
    from fedlab_utils.lessons.parallel.split_learning import cut_profile

    fitting = [c for c in cut_profile(model, input_shape) if c.client_flops_per_sample <= flop_budget]
    return min(fitting, key=lambda c: (c.activation_bytes_per_sample, c.cut)).cut if fitting else None


def check_choose_cut(choose_cut: Callable, model: nn.Sequential, input_shape: Sequence[int]) -> None:
    """``choose_cut(model, input_shape, flop_budget)`` must match the rule of :func:`reference_choose_cut`
    for a tight budget, a generous one and one that nothing fits."""
    from fedlab_utils.lessons.parallel.split_learning import cut_profile

    profile = cut_profile(model, input_shape)
    smallest = min(c.client_flops_per_sample for c in profile)
    largest = max(c.client_flops_per_sample for c in profile)
    hint = (gettext("Use cut_profile(model, input_shape): keep the cuts with client_flops_per_sample <= flop_budget, "
                    "then take the smallest activation_bytes_per_sample (ties: the smaller cut); return None if none fits."))
    for budget in (smallest - 1, smallest, (smallest + largest) / 2, largest):
        want = reference_choose_cut(model, input_shape, budget)
        got = call_safely(choose_cut, model, input_shape, budget, what=f"choose_cut(budget={budget:.0f})")
        expect(got == want, gettext('choose_cut with a budget of {budget:,.0f} FLOPs/sample returned {got!r}, expected {want!r}. {hint}').format(budget=budget, got=got, want=want, hint=hint))
    passed("choose_cut")


def check_pipeline_time(pipeline_time: Callable[[Sequence[float], int], float], seed: int | None = None) -> None:
    """``pipeline_time(stage_times, M)``: the length of a GPipe forward pass with unequal stages.

    Stage ``s`` takes ``stage_times[s]`` per micro-batch; the first micro-batch crosses every stage
    (``sum``), then the slowest stage admits one more every ``max`` time: ``sum + (M − 1)·max``.
    Checked on hand-made cases (equal stages must give ``(M + S − 1)·t``) and, with ``seed``,
    random ones (hidden tests).
    """
    hint = (gettext("The first micro-batch goes through every stage (sum of the stage times); after that the slowest "
                    "stage is the bottleneck and lets one more micro-batch out every max(stage_times): "
                    "sum(stage_times) + (M - 1) * max(stage_times)."))
    cases = [([1.0, 1.0, 1.0, 1.0], 8), ([2.0], 5), ([1.0, 3.0], 4), ([3.0, 1.0, 1.0], 1), ([0.5, 2.0, 1.5], 10)]
    if seed is not None:
        import random

        rng = random.Random(seed)
        cases = [([round(rng.uniform(0.1, 5.0), 3) for _ in range(rng.randint(2, 6))], rng.randint(1, 32))
                 for _ in range(4)]
    for times, micro in cases:
        got = call_safely(pipeline_time, list(times), micro, what=f"pipeline_time({times}, {micro})")
        want = sum(times) + (micro - 1) * max(times)
        mean_based = (micro + len(times) - 1) * sum(times) / len(times)
        if abs(mean_based - want) > 1e-9 and isinstance(got, (int, float)) and abs(got - mean_based) < 1e-9:
            raise AssertionError(gettext('pipeline_time({times}, {micro}) = {got}: that is (M + S - 1) x the MEAN stage time, true only for equal stages; the slowest stage sets the pace. {hint}').format(times=times, micro=micro, got=got, hint=hint))
        expect_close(got, want, f"pipeline_time(stage_times={times}, M={micro})", rel=1e-9, abs_=1e-12, hint=hint)
    passed("pipeline_time")


def check_idle_prediction(predicted_idle_percent, measured_bubble: float, num_stages: int,
                          band: float = IDLE_PREDICTION_BAND) -> None:
    """A prediction of plain model parallelism's idle share, against the measurement.

    ``predicted_idle_percent``: the student's guess, in percent, of the share of time the average
    device idles with ``num_stages`` stages and one micro-batch (M = 1).  ``measured_bubble``: the
    replayed schedule's bubble (a fraction).  Passes within ``band`` percentage points.
    """
    hint = (gettext('With M = 1 only one stage works at any moment: the batch goes forward through stage 0, 1, ... and back. Each stage is busy only for its own forward and backward, and the step lasts the sum of all of them, so the devices together are busy 1/S of the time, whatever the stage times: the idle share is (S-1)/S = {v_100_num_stages_1_num_sta:.0f}% for S = {num_stages}.').format(v_100_num_stages_1_num_sta=100 * (num_stages - 1) / num_stages, num_stages=num_stages))
    expect_percent(predicted_idle_percent, "predicted_idle_percent", 100 * measured_bubble, band, "40 for 40 %")
    off = abs(predicted_idle_percent - 100 * measured_bubble)
    expect(off <= band, gettext('You predicted {predicted_idle_percent:.0f}% idle; the measured schedule idles {v_100_measured_bubble:.0f}% ({off:.0f} points off, the band is ±{band:.0f}). {hint}').format(predicted_idle_percent=predicted_idle_percent, v_100_measured_bubble=100 * measured_bubble, off=off, band=band, hint=hint))
    print(gettext('✓ prediction: {predicted_idle_percent:.0f}% idle, measured {v_100_measured_bubble:.0f}% (within ±{band:.0f} points)').format(predicted_idle_percent=predicted_idle_percent, v_100_measured_bubble=100 * measured_bubble, band=band))
