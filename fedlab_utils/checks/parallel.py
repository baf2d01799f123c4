"""Checks for lesson 05 (model parallelism and split learning).  Each raises ``AssertionError``
with a hint when the answer is wrong."""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..i18n import gettext
from . import call_safely, expect, expect_close, expect_percent, passed

__all__ = ["check_split_step", "check_choose_cut", "check_pipeline_time", "reference_choose_cut",
           "check_idle_prediction", "IDLE_PREDICTION_BAND"]

IDLE_PREDICTION_BAND = 5.0
"""How far (in percentage points) a predicted idle share may be from the measured one."""


class _Wire:
    """The cut between two devices, as the check sees it: it copies what crosses (a new tensor, no
    autograd graph, as over a network or between processes) and records it."""

    def __init__(self):
        self.up: list[torch.Tensor] = []
        self.down: list[torch.Tensor] = []

    def send_up(self, activation):
        expect(isinstance(activation, torch.Tensor), gettext("send_up must be given the activation tensor; got {type_name}").format(type_name=type(activation).__name__))
        self.up.append(activation.detach().clone())
        return activation.detach().clone()

    def send_down(self, gradient):
        expect(isinstance(gradient, torch.Tensor), gettext("send_down must be given the gradient at the cut (a tensor); got {type_name}. Did the server's copy of the activation require grad before the forward?").format(type_name=type(gradient).__name__))
        self.down.append(gradient.detach().clone())
        return gradient.detach().clone()


def _split_case(gen: torch.Generator) -> tuple[nn.Sequential, torch.Tensor, torch.Tensor]:
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model, torch.randn(7, 6, generator=gen), torch.randint(0, 3, (7,), generator=gen)


def check_split_step(split_step: Callable, seed: int | None = None) -> None:
    """``split_step(client_part, server_part, x, y, send_up, send_down) -> loss``: one mini-batch of
    split learning, compared with the same model trained in one piece (same loss, same gradients in
    both parts) and with the package's :func:`fedlab_utils.lessons.parallel.split_learning.split_step`.

    ``send_up(activation)`` and ``send_down(gradient)`` stand for the cut between two devices: each
    returns a copy with no autograd graph, and the check records what crossed.  It names the
    plausible mistakes: never sending the activation (the article's bug), detaching it so that no
    gradient reaches the client part, sending back something other than the gradient at the cut.
    ``seed``: another model and batch (hidden tests).
    """
    from fedlab_utils.lessons.parallel.split_learning import split_at
    from fedlab_utils.lessons.parallel.split_learning import split_step as package_step

    gen = torch.Generator().manual_seed(21 if seed is None else 9100 + seed)
    cuts = (2, 4) if seed is None else (1, 3)
    for cut in cuts:
        model, x, y = _split_case(gen)
        whole = copy.deepcopy(model)
        want_loss = nn.functional.cross_entropy(whole(x), y)
        want_loss.backward()
        want = {name: p.grad for name, p in whole.named_parameters()}
        with torch.no_grad():
            want_activation = nn.Sequential(*list(model)[:cut])(x)

        mine_model = copy.deepcopy(model)
        client_part, server_part = split_at(mine_model, cut)
        wire = _Wire()
        loss = call_safely(split_step, client_part, server_part, x, y, wire.send_up, wire.send_down,
                           what="split_step")
        where = gettext("cut after layer {cut}").format(cut=cut)
        expect(len(wire.up) == 1, gettext("{where}: send_up was called {n} times; the client must send its activation across the cut exactly once per mini-batch (the article never moved it to the next device at all).").format(where=where, n=len(wire.up)))
        expect(wire.up[0].shape == want_activation.shape and torch.allclose(wire.up[0], want_activation, atol=1e-6),
               gettext("{where}: send_up must carry the client part's output (the activation at the cut), shape {shape}.").format(where=where, shape=tuple(want_activation.shape)))
        expect_close(loss, want_loss.item(), gettext("{where}: loss").format(where=where), rel=1e-5, abs_=1e-7,
                     hint=gettext("The server computes loss_fn(server_part(its copy of the activation), y)."))
        server_names = {name for name, _ in mine_model.named_parameters() if int(name.split(".")[0]) >= cut}
        for name, p in mine_model.named_parameters():
            if name not in server_names:
                continue
            expect(p.grad is not None and torch.allclose(p.grad, want[name], atol=1e-5),
                   gettext("{where}: the server part's gradient of {name} is wrong or missing: call loss.backward() on the server.").format(where=where, name=name))
        expect(len(wire.down) == 1, gettext("{where}: send_down was called {n} times; after its backward the server must send the gradient at the cut back to the client exactly once. Without it, no gradient reaches the client part: its layers never learn.").format(where=where, n=len(wire.down)))
        expect(wire.down[0].shape == want_activation.shape, gettext("{where}: send_down must carry the gradient of the loss with respect to the server's copy of the activation (its .grad), shape {shape}; got shape {got}.").format(where=where, shape=tuple(want_activation.shape), got=tuple(wire.down[0].shape)))
        for name, p in mine_model.named_parameters():
            if name in server_names:
                continue
            expect(p.grad is not None, gettext("{where}: the client part's {name} has no gradient. The activation was cut off from the client's graph: finish the backward on the client with activation.backward(gradient that came down).").format(where=where, name=name))
            expect(torch.allclose(p.grad, want[name], atol=1e-5), gettext("{where}: the client part's gradient of {name} differs from the model trained in one piece. Continue the backward from the client's own activation with the gradient that came down: activation.backward(send_down(server_copy.grad)).").format(where=where, name=name))

        pkg_model = copy.deepcopy(model)
        pkg_wire = _Wire()
        package_step(*split_at(pkg_model, cut), x, y, pkg_wire.send_up, pkg_wire.send_down)
        for (name, p), q in zip(mine_model.named_parameters(), pkg_model.parameters()):
            expect(torch.allclose(p.grad, q.grad, atol=1e-6), gettext("{where}: {name} differs from the package's split_step").format(
                where=where, name=name))
    passed("split_step")


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
    hint = (gettext('With M = 1 only one stage works at any moment: the batch goes forward through stage 0, 1, ... and back. Each stage is busy only for its own forward and backward, and the step lasts the sum of all of them, so the devices together are busy 1/S of the time, whatever the stage times: the idle share is (S-1)/S = {idle_percent:.0f}% for S = {num_stages}.').format(idle_percent=100 * (num_stages - 1) / num_stages, num_stages=num_stages))
    expect_percent(predicted_idle_percent, "predicted_idle_percent", 100 * measured_bubble, band, gettext("40 for 40 %"))
    off = abs(predicted_idle_percent - 100 * measured_bubble)
    expect(off <= band, gettext('You predicted {predicted_idle_percent:.0f}% idle; the measured schedule idles {bubble_percent:.0f}% ({off:.0f} points off, the band is ±{band:.0f}). {hint}').format(predicted_idle_percent=predicted_idle_percent, bubble_percent=100 * measured_bubble, off=off, band=band, hint=hint))
    print(gettext('✓ prediction: {predicted_idle_percent:.0f}% idle, measured {bubble_percent:.0f}% (within ±{band:.0f} points)').format(predicted_idle_percent=predicted_idle_percent, bubble_percent=100 * measured_bubble, band=band))
