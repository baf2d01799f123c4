"""Checks for notebook 04 (acceleration).  Each raises ``AssertionError`` with a hint when wrong."""
from __future__ import annotations

import torch

from fedlab_utils.core.history import History, RoundRecord
from fedlab_utils.core.training import apply_delta
from fedlab_utils.ledger.energy import Energy

from ..i18n import N_, gettext
from . import call_safely, expect, expect_close, expect_percent, expect_tensors_close, passed

__all__ = ["check_fedavgm_step", "check_to_target", "check_fedadam_step", "check_server_step", "check_first_step",
           "check_wasted_prediction", "check_saving_prediction", "WASTED_PREDICTION_BAND", "SAVING_PREDICTION_BAND"]

WASTED_PREDICTION_BAND = 10.0
"""How far (in percentage points) a predicted share of wasted joules may be from the measured one."""

SAVING_PREDICTION_BAND = 10.0
"""How far (in percentage points) a predicted saving of joules may be from the measured one."""


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
            expect_tensors_close(mine_v, ref_v, gettext("velocity after round {r} (lr={lr}, momentum={momentum})").format(r=r, lr=lr, momentum=momentum),
                                 atol=1e-6, hint=hint)
            expect_tensors_close(mine_x, ref_x, gettext("global state after round {r} (lr={lr}, momentum={momentum})").format(
                                     r=r, lr=lr, momentum=momentum),
                                 atol=1e-6, hint=hint)
        if momentum == 0.0:
            fedavg = state
            for update in updates:
                fedavg = apply_delta(fedavg, update, lr)
            expect_tensors_close(mine_x, fedavg, gettext("momentum=0 against FedAvg"), atol=1e-6,
                                 hint=gettext("With momentum 0, FedAvgM must reduce to FedAvg: x = x + lr * update."))
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
        expect_close(got_joules, total, gettext("target {target}: joules").format(target=target), rel=1e-9, hint=hints[target])
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
            where = dict(r=r, lr=lr, beta1=beta1, beta2=beta2, tau=tau)
            expect_tensors_close(mine_m, server.m, gettext("m after round {r} (lr={lr}, beta1={beta1}, beta2={beta2}, tau={tau})").format(**where),
                                 atol=1e-6, hint=hint)
            expect_tensors_close(mine_v, server.v, gettext("v after round {r} (lr={lr}, beta1={beta1}, beta2={beta2}, tau={tau})").format(**where),
                                 atol=1e-7, hint=hint)
            expect_tensors_close(mine_x, ref_x, gettext("global state after round {r} (lr={lr}, beta1={beta1}, beta2={beta2}, tau={tau})").format(**where),
                                 atol=1e-5, hint=hint)
    passed("FedAdam server step")


def _server_step_variant(state, update, m, v, lr, beta1, beta2, tau, variant, *, bias_correction=False,
                         adam_v_for_yogi=False, tau_inside=False, descend=False, v_from_zero=False, round_=1):
    """Reddi et al.'s Algorithm 2 (as :class:`~fedlab_utils.core.servers.fedopt.FedOpt` runs it), and the plausible
    mistakes the check names: each keyword switches one of them on."""
    if m is None:
        m = {k: torch.zeros_like(d) for k, d in update.items()}
        v = {k: (torch.zeros_like(d) if v_from_zero else torch.full_like(d, tau ** 2)) for k, d in update.items()}
    new_m, new_v, new_x = {}, {}, {}
    for k, delta in update.items():
        new_m[k] = beta1 * m[k] + (1 - beta1) * delta
        sq = delta * delta
        if variant == "adam" or adam_v_for_yogi:
            new_v[k] = beta2 * v[k] + (1 - beta2) * sq
        else:
            new_v[k] = v[k] - (1 - beta2) * sq * torch.sign(v[k] - sq)
        m_hat = new_m[k] / (1 - beta1 ** round_) if bias_correction else new_m[k]
        v_hat = new_v[k] / (1 - beta2 ** round_) if bias_correction else new_v[k]
        denom = (v_hat + tau).sqrt() if tau_inside else v_hat.sqrt() + tau
        new_x[k] = state[k] + (-1 if descend else 1) * lr * m_hat / denom
    return new_x, new_m, new_v


_SERVER_STEP_MISTAKES = {
    "bias_correction": N_("The package (like Reddi et al.'s Algorithm 2) uses no bias correction: use m and v as they are, "
                          "not divided by (1 - beta**t)."),
    "adam_v_for_yogi": N_("For variant 'yogi' v must follow Yogi's sign rule, v = v - (1-beta2) * update**2 * "
                       "sign(v - update**2), not Adam's moving average."),
    "tau_inside": N_("tau is added after the square root: x = x + lr * m / (sqrt(v) + tau), not sqrt(v + tau)."),
    "descend": N_("The update is the clients' average change (new weights minus old), already a step downhill: "
               "move along it, x = x + lr * m / (sqrt(v) + tau), not x - ..."),
    "v_from_zero": N_("Start v at tau**2 (torch.full_like(update, tau**2)), not at zeros, as the package does."),
}


def _server_step_case(gen: torch.Generator, scale: float) -> list[dict[str, torch.Tensor]]:
    """Two rounds on hand-made coordinates (Δ = 2 then 0: Adam's v halves at β2 = 0.5, Yogi's stays)
    plus random ones."""
    fixed = torch.tensor([2.0, -1.0, 0.5])
    return [{"a": fixed, "b": scale * torch.randn(2, 3, generator=gen)},
            {"a": torch.tensor([0.0, -1.5, 0.05]), "b": scale * torch.randn(2, 3, generator=gen)}]


def check_server_step(server_step, seed: int | None = None) -> None:
    """``server_step(global_state, update, m, v, lr, beta1, beta2, tau, variant) -> (new_state, m, v)``.

    FedAdam (``variant='adam'``) or FedYogi (``'yogi'``), key by key, as
    :class:`fedlab_utils.core.servers.fedopt.FedOpt` runs Reddi et al.'s Algorithm 2: from ``m = v = None`` start
    with ``m = 0`` and ``v = τ²``; ``m ← β1·m + (1−β1)·Δ``; Adam ``v ← β2·v + (1−β2)·Δ²``, Yogi
    ``v ← v − (1−β2)·Δ²·sign(v − Δ²)``; ``x ← x + η·m/(√v + τ)``; no bias correction.  Checked on a
    hand-made two-round case (Δ = 2, then 0, where Adam and Yogi part) against the package's
    ``FedOpt``; a mismatch is compared with the plausible mistakes to name the one made.
    ``seed``: other random coordinates and settings (hidden tests).
    """
    from fedlab_utils.core.servers.fedopt import FedOpt

    gen = torch.Generator().manual_seed(11 if seed is None else 8000 + seed)
    settings = [(1.0, 0.9, 0.5, 0.1), (0.1, 0.9, 0.99, 1e-3)] if seed is None else [(0.3, 0.8, 0.9, 0.05)]
    general = gettext("Start from m = zeros and v = tau**2; m = beta1*m + (1-beta1)*update; Adam: v = beta2*v + "
                      "(1-beta2)*update**2; Yogi: v = v - (1-beta2)*update**2*sign(v - update**2); "
                      "x = x + lr * m / (sqrt(v) + tau); no bias correction.")
    for variant in ("adam", "yogi"):
        for lr, beta1, beta2, tau in settings:
            state = {"a": torch.zeros(3), "b": torch.randn(2, 3, generator=gen)}
            updates = _server_step_case(gen, 0.3)
            server = FedOpt(lr, beta1, beta2, tau, variant)
            mine = (state, None, None)
            ref_x = state
            for r, update in enumerate(updates, start=1):
                before = mine
                out = call_safely(server_step, mine[0], update, mine[1], mine[2], lr, beta1, beta2, tau, variant,
                                  what="server_step")
                expect(isinstance(out, tuple) and len(out) == 3,
                       gettext('server_step must return a tuple (new_state, m, v); got {type_out_name}').format(
                           type_out_name=type(out).__name__))
                ref_x = server.step(ref_x, update)
                where = dict(variant=variant, r=r, lr=lr, beta1=beta1, beta2=beta2, tau=tau)
                ok = True
                labels = {"v": gettext("v after {variant}, round {r} (lr={lr}, beta1={beta1}, beta2={beta2}, tau={tau})"),
                          "m": gettext("m after {variant}, round {r} (lr={lr}, beta1={beta1}, beta2={beta2}, tau={tau})"),
                          "x": gettext("global state after {variant}, round {r} (lr={lr}, beta1={beta1}, beta2={beta2}, tau={tau})")}
                for name, got, want, atol in (("v", out[2], server.v, 1e-7), ("m", out[1], server.m, 1e-7),
                                              ("x", out[0], ref_x, 1e-5)):
                    try:
                        expect_tensors_close(got, want, labels[name].format(**where), atol=atol)
                    except AssertionError as exc:
                        ok, failure = False, str(exc)
                        break
                if not ok:
                    for mistake, hint in _SERVER_STEP_MISTAKES.items():
                        if mistake == "adam_v_for_yogi" and variant != "yogi":
                            continue
                        wrong = _server_step_variant(before[0], update, before[1], before[2], lr, beta1, beta2, tau, variant, round_=r,
                                                     **{mistake: True})
                        try:
                            expect_tensors_close(out[0], wrong[0], "x", atol=1e-6)
                        except AssertionError:
                            continue
                        raise AssertionError(f"{failure} {gettext(hint)}")
                    raise AssertionError(f"{failure} {general}")
                mine = out
    passed("FedAdam and FedYogi server step")


def check_first_step(first_step, seed: int | None = None) -> None:
    """``first_step(delta, lr, beta1, beta2) -> float``: FedAdam's first move of one weight whose
    averaged update is ``delta``, for ``|delta|`` much larger than τ (so τ is left out).

    From ``m = 0``, ``v = τ² ≈ 0``: ``m = (1−β1)Δ``, ``v ≈ (1−β2)Δ²``, so the step is
    ``η·(1−β1)/√(1−β2)·sign(Δ)``: the same size for every weight, whatever ``|Δ|``.  Checked on
    deltas from 1e-2 to 1e2 and against the package's ``FedAdam`` with a tiny τ.
    """
    from fedlab_utils.core.servers.fedopt import FedAdam

    gen = torch.Generator().manual_seed(12 if seed is None else 9000 + seed)
    settings = [(0.1, 0.9, 0.99), (1.0, 0.5, 0.9), (0.03, 0.8, 0.999)]
    if seed is not None:
        settings = [(float(torch.empty(1).uniform_(0.01, 1, generator=gen)),
                     float(torch.empty(1).uniform_(0.5, 0.95, generator=gen)),
                     float(torch.empty(1).uniform_(0.9, 0.999, generator=gen)))]
    hint = gettext("One round from m = 0 and v = tau**2 (about 0): m = (1-beta1)*delta and v = (1-beta2)*delta**2, "
                   "so lr * m / sqrt(v) = lr * (1-beta1) / sqrt(1-beta2) * sign(delta): the size of delta cancels.")
    for lr, beta1, beta2 in settings:
        for delta in (1e-2, -0.3, 2.0, -50.0, 100.0):
            want = lr * (1 - beta1) / (1 - beta2) ** 0.5 * (1 if delta > 0 else -1)
            got = call_safely(first_step, delta, lr, beta1, beta2, what="first_step")
            if isinstance(got, torch.Tensor) and got.numel() == 1:
                got = got.item()
            expect_close(got, want, f"first_step(delta={delta}, lr={lr}, beta1={beta1}, beta2={beta2})", rel=1e-6,
                         hint=hint)
            server = FedAdam(lr=lr, beta1=beta1, beta2=beta2, tau=1e-9)
            package = server.step({"w": torch.zeros(1, dtype=torch.float64)},
                                  {"w": torch.tensor([delta], dtype=torch.float64)})["w"].item()
            expect_close(package, want, gettext("the package's FedAdam (tau=1e-9)"), rel=1e-5)
    passed("FedAdam's first step")


def check_saving_prediction(predicted_saving_percent, deadline_joules: float, waiting_joules: float,
                            late_share: float, band: float = SAVING_PREDICTION_BAND) -> None:
    """A prediction of the joules a deadline saves, in percent of the run that waits for every client.

    ``deadline_joules`` and ``waiting_joules``: the two runs' ledger totals; ``late_share``: the fraction
    of client updates that arrived late in the deadline run (for the hint).  Passes within ``band``
    percentage points of the measured saving.
    """
    expect(waiting_joules > 0, gettext('waiting_joules={waiting_joules!r}: the run spent no joules, nothing to compare with').format(waiting_joules=waiting_joules))
    measured = 100 * (1 - deadline_joules / waiting_joules)
    hint = gettext('A deadline does not stop a late client: the server simply drops its update when it arrives, after the client has trained and uploaded, so its joules are spent all the same. Here {late:.0f}% of the updates were late: those joules are not saved but wasted.').format(late=100 * late_share)
    expect_percent(predicted_saving_percent, "predicted_saving_percent", max(measured, 0.0), band, gettext("25 for 25 %"))
    off = abs(predicted_saving_percent - measured)
    expect(off <= band, gettext('You predicted a saving of {predicted:.0f}% of the joules; the ledger measured {measured:.0f}% ({off:.0f} points off, the band is ±{band:.0f}). {hint}').format(predicted=predicted_saving_percent, measured=measured, off=off, band=band, hint=hint))
    print(gettext('✓ prediction: {predicted:.0f}% of the joules saved, measured {measured:.0f}% (within ±{band:.0f} points)').format(predicted=predicted_saving_percent, measured=measured, band=band))


def check_wasted_prediction(predicted_wasted_percent, wasted_joules: float, total_joules: float,
                            late_share: float, band: float = WASTED_PREDICTION_BAND) -> None:
    """A prediction of the share of joules a deadline wastes, against the run's ledger.

    ``predicted_wasted_percent``: the student's guess, in percent of the run's total joules.
    ``wasted_joules`` and ``total_joules``: the run's ledger totals; ``late_share``: the fraction of
    client updates that arrived late (for the hint).  Passes within ``band`` percentage points.
    """
    expect(total_joules > 0, gettext('total_joules={total_joules!r}: the run spent no joules, nothing to compare with').format(total_joules=total_joules))
    measured = 100 * wasted_joules / total_joules
    hint = (gettext('A deadline does not stop a late client: it has trained and uploaded when the server drops its update, so its joules are spent for nothing. Here {late_percent:.0f}% of the updates were late (the same slow clients every round), and every client-round costs about the same joules (equal data, the same radio session), so about that share of the joules is wasted; the total does not change at all.').format(late_percent=100 * late_share))
    expect_percent(predicted_wasted_percent, "predicted_wasted_percent", measured, band, gettext("25 for 25 %"))
    off = abs(predicted_wasted_percent - measured)
    expect(off <= band, gettext('You predicted {predicted_wasted_percent:.0f}% of the joules wasted; the ledger measured {measured:.0f}% ({off:.0f} points off, the band is ±{band:.0f}). {hint}').format(predicted_wasted_percent=predicted_wasted_percent, measured=measured, off=off, band=band, hint=hint))
    print(gettext('✓ prediction: {predicted_wasted_percent:.0f}% of the joules wasted, measured {measured:.0f}% (within ±{band:.0f} points)').format(predicted_wasted_percent=predicted_wasted_percent, measured=measured, band=band))
