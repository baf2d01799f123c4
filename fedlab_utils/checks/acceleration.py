"""Checks for notebook 04 (acceleration).  Each raises ``AssertionError`` with a hint when wrong."""
from __future__ import annotations

import torch

from fedlab_utils.core.history import History, RoundRecord
from fedlab_utils.core.training import apply_delta
from fedlab_utils.ledger.energy import Energy

from ..i18n import gettext
from . import call_safely, expect, expect_close, expect_percent, expect_tensors_close, passed

__all__ = ["check_fedavgm_step", "check_to_target", "check_fedadam_step", "check_wasted_prediction",
           "WASTED_PREDICTION_BAND"]

WASTED_PREDICTION_BAND = 10.0
"""How far (in percentage points) a predicted share of wasted joules may be from the measured one."""


def _reference_fedavgm(global_state, update, velocity, lr, momentum):
    if velocity is None:
        velocity = {k: torch.zeros_like(v) for k, v in update.items()}
    velocity = {k: momentum * velocity[k] + update[k] for k in update}
    return apply_delta(global_state, velocity, lr), velocity


def check_fedavgm_step(fedavgm_step, seed: int | None = None) -> None:
    """``fedavgm_step(global_state, update, velocity, lr, momentum) -> (new_state, new_velocity)``.

    Checked over three rounds from ``velocity=None`` against ``v ← momentum·v + Δ; x ← x + lr·v``,
    and with ``momentum=0`` against plain FedAvg.  ``seed``: other states and updates (hidden tests).
    """
    gen = torch.Generator().manual_seed(4 if seed is None else 6000 + seed)
    state = {"weight": torch.randn(3, 2, generator=gen), "bias": torch.randn(3, generator=gen)}
    updates = [{k: 0.1 * torch.randn(v.shape, generator=gen) for k, v in state.items()} for _ in range(3)]
    hint = (gettext("Server momentum keeps a velocity v (zeros when velocity is None), updates it as "
                    "v = momentum * v + update (no (1 - momentum) factor), then moves x = x + lr * v, key by key."))
    for lr, momentum in ((1.0, 0.9), (0.5, 0.0)):
        mine_x, mine_v, ref_x, ref_v = state, None, state, None
        for r, update in enumerate(updates, start=1):
            out = call_safely(fedavgm_step, mine_x, update, mine_v, lr, momentum, what="fedavgm_step")
            expect(isinstance(out, tuple) and len(out) == 2,
                   gettext('fedavgm_step must return a tuple (new_state, new_velocity); got {type_out_name}').format(type_out_name=type(out).__name__))
            mine_x, mine_v = out
            ref_x, ref_v = _reference_fedavgm(ref_x, update, ref_v, lr, momentum)
            expect_tensors_close(mine_v, ref_v, f"velocity after round {r} (lr={lr}, momentum={momentum})",
                                 atol=1e-6, hint=hint)
            expect_tensors_close(mine_x, ref_x, f"global state after round {r} (lr={lr}, momentum={momentum})",
                                 atol=1e-6, hint=hint)
        if momentum == 0.0:
            fedavg = state
            for update in updates:
                fedavg = apply_delta(fedavg, update, lr)
            expect_tensors_close(mine_x, fedavg, "momentum=0 against FedAvg", atol=1e-6,
                                 hint="With momentum 0, FedAvgM must reduce to FedAvg: x = x + lr * update.")
    passed("FedAvgM server step")


def _fake_history(accuracies, joules) -> History:
    h = History("fake")
    for r, (acc, j) in enumerate(zip(accuracies, joules), start=1):
        h.records.append(RoundRecord(round=r, clients=[0], accuracy=acc, loss=0.0, train_loss=0.0, bytes_up=0,
                                     bytes_down=0, client_flops=0, wall_time_s=0.0,
                                     energy=Energy(compute=j / 2, uplink=j / 2)))
    return h


def check_to_target(to_target) -> None:
    """``to_target(history, target) -> (rounds, joules)``: the first round (1-based) whose
    accuracy is ≥ target, and the modelled joules of rounds 1..that round; ``(None, None)`` if never."""
    accuracies = [0.40, 0.70, 0.65, 0.82, 0.79, 0.91]
    joules = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    history = _fake_history(accuracies, joules)
    cases = {0.80: (4, 15.0), 0.70: (2, 3.0), 0.30: (1, 1.0), 0.90: (6, 63.0), 0.95: (None, None)}
    hints = {0.80: gettext("Take the FIRST round that reaches the target (round 4 here), counting rounds from 1."),
             0.70: gettext("Reaching the target means accuracy >= target (round 2 has exactly 0.70)."),
             0.30: gettext("Round 1 already reaches it: rounds are 1-based, and its joules count."),
             0.90: gettext("Sum the joules of every round up to and including the one that reaches the target "
                           "(record.energy.total)."),
             0.95: gettext("When the target is never reached, return (None, None).")}
    for target, (rounds, total) in cases.items():
        out = call_safely(to_target, history, target, what="to_target")
        expect(isinstance(out, tuple) and len(out) == 2,
               gettext('to_target must return a tuple (rounds, joules); got {type_out_name}').format(type_out_name=type(out).__name__))
        got_rounds, got_joules = out
        if rounds is None:
            expect(got_rounds is None and got_joules is None,
                   gettext('target {target}: expected (None, None), got {out!r}. {hints_target}').format(target=target, out=out, hints_target=hints[target]))
            continue
        expect(got_rounds == rounds, gettext('target {target}: rounds {got_rounds!r}, expected {rounds}. {hints_target}').format(target=target, got_rounds=got_rounds, rounds=rounds, hints_target=hints[target]))
        expect_close(got_joules, total, f"target {target}: joules", rel=1e-9, hint=hints[target])
    passed("rounds and joules to target")


def _states(gen: torch.Generator, scale: float = 1.0) -> dict[str, torch.Tensor]:
    return {"weight": scale * torch.randn(3, 2, generator=gen), "bias": scale * torch.randn(3, generator=gen)}


def check_fedadam_step(fedadam_step, seed: int | None = None) -> None:
    """``fedadam_step(global_state, update, m, v, lr, beta1, beta2, tau) -> (new_state, m, v)``: FedAdam's
    server step (Reddi et al. 2021, Algorithm 2), key by key.  From ``m = v = None`` it starts with
    ``m = 0`` and ``v = τ²``; then ``m ← β1·m + (1−β1)·Δ``, ``v ← β2·v + (1−β2)·Δ²``,
    ``x ← x + lr·m / (√v + τ)`` (no bias correction).  Checked over three rounds against
    :class:`fedlab_utils.core.servers.fedopt.FedOpt`.  ``seed``: other inputs (hidden tests).
    """
    from fedlab_utils.core.servers.fedopt import FedOpt

    gen = torch.Generator().manual_seed(8 if seed is None else 7000 + seed)
    hint = (gettext("Start from m = zeros and v = tau**2 (not zeros); m = beta1*m + (1-beta1)*update; "
                    "v = beta2*v + (1-beta2)*update**2; x = x + lr * m / (sqrt(v) + tau). No bias correction."))
    settings = [(0.1, 0.9, 0.99, 1e-3), (1.0, 0.5, 0.9, 0.1)] if seed is None else [(0.3, 0.8, 0.95, 0.05)]
    for lr, beta1, beta2, tau in settings:
        state = _states(gen)
        updates = [_states(gen, 0.1) for _ in range(3)]
        server = FedOpt(lr, beta1, beta2, tau, "adam")
        mine_x, mine_m, mine_v, ref_x = state, None, None, state
        for r, update in enumerate(updates, start=1):
            out = call_safely(fedadam_step, mine_x, update, mine_m, mine_v, lr, beta1, beta2, tau, what="fedadam_step")
            expect(isinstance(out, tuple) and len(out) == 3,
                   gettext('fedadam_step must return a tuple (new_state, m, v); got {type_out_name}').format(type_out_name=type(out).__name__))
            mine_x, mine_m, mine_v = out
            ref_x = server.step(ref_x, update)
            where = f"after round {r} (lr={lr}, beta1={beta1}, beta2={beta2}, tau={tau})"
            expect_tensors_close(mine_m, server.m, f"m {where}", atol=1e-6, hint=hint)
            expect_tensors_close(mine_v, server.v, f"v {where}", atol=1e-7, hint=hint)
            expect_tensors_close(mine_x, ref_x, f"global state {where}", atol=1e-5, hint=hint)
    passed("FedAdam server step")


def check_wasted_prediction(predicted_wasted_percent, wasted_joules: float, total_joules: float,
                            late_share: float, band: float = WASTED_PREDICTION_BAND) -> None:
    """A prediction of the share of joules a deadline wastes, against the run's ledger.

    ``predicted_wasted_percent``: the student's guess, in percent of the run's total joules.
    ``wasted_joules`` and ``total_joules``: the run's ledger totals; ``late_share``: the fraction of
    client updates that arrived late (for the hint).  Passes within ``band`` percentage points.
    """
    expect(total_joules > 0, gettext('total_joules={total_joules!r}: the run spent no joules, nothing to compare with').format(total_joules=total_joules))
    measured = 100 * wasted_joules / total_joules
    hint = (gettext('A deadline does not stop a late client: it has trained and uploaded when the server drops its update, so its joules are spent for nothing. Here {v_100_late_share:.0f}% of the updates were late (the same slow clients every round), and every client-round costs about the same joules (equal data, the same radio session), so about that share of the joules is wasted; the total does not change at all.').format(v_100_late_share=100 * late_share))
    expect_percent(predicted_wasted_percent, "predicted_wasted_percent", measured, band, "25 for 25 %")
    off = abs(predicted_wasted_percent - measured)
    expect(off <= band, gettext('You predicted {predicted_wasted_percent:.0f}% of the joules wasted; the ledger measured {measured:.0f}% ({off:.0f} points off, the band is ±{band:.0f}). {hint}').format(predicted_wasted_percent=predicted_wasted_percent, measured=measured, off=off, band=band, hint=hint))
    print(gettext('✓ prediction: {predicted_wasted_percent:.0f}% of the joules wasted, measured {measured:.0f}% (within ±{band:.0f} points)').format(predicted_wasted_percent=predicted_wasted_percent, measured=measured, band=band))
