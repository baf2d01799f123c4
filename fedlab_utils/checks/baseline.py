"""Checks for notebook 00 (FedAvg baseline and the efficiency ledger)."""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping

import torch

from fedlab_utils.compression.wire import Fp32Codec
from fedlab_utils.core.aggregators.fedavg import weighted_average
from fedlab_utils.core.history import History, RoundRecord
from fedlab_utils.ledger.energy import PROFILES, Energy, EnergyProfile

from ..i18n import gettext
from . import call_safely, expect, expect_close, expect_tensors_close, expect_whole_number, passed

__all__ = ["check_weighted_average", "check_round_uplink_bytes", "check_client_round_joules", "cost_to_target",
           "check_cost_to_target", "check_lte_saving_prediction", "PREDICTION_BAND"]


def _weighted_average_cases(seed: int | None) -> list[tuple[list[dict], list[int]]]:
    if seed is None:  # hand-made: the plain mean is [1, 2] / [0.667]; the weighted one is [1.4, 2.4] / [0]
        return [([{"w": torch.tensor([1.0, 0.0]), "b": torch.tensor([3.0])},
                  {"w": torch.tensor([0.0, 4.0]), "b": torch.tensor([-1.0])},
                  {"w": torch.tensor([2.0, 2.0]), "b": torch.tensor([0.0])}], [10, 30, 60])]
    g = torch.Generator().manual_seed(seed)
    cases = []
    for clients in (2, 5):
        updates = [{"w": torch.randn(4, 3, generator=g), "b": torch.randn(4, generator=g)} for _ in range(clients)]
        counts = [int(n) for n in torch.randint(1, 500, (clients,), generator=g)]
        counts[0] += 1000  # unequal on purpose: the plain mean must differ
        cases.append((updates, counts))
    return cases


def check_weighted_average(fn: Callable, seed: int | None = None) -> None:
    """``fn(updates, num_samples)`` must return FedAvg's sample-weighted mean, key by key.

    ``seed=None``: three hand-made clients; an int: random clients of unequal sizes (hidden tests).
    """
    hint = (gettext("Weight each client's update by its number of samples n_k and divide by the total n, "
                    "i.e. sum_k (n_k / n) * update_k for every key."))
    for updates, counts in _weighted_average_cases(seed):
        originals = [{k: v.clone() for k, v in u.items()} for u in updates]
        answer = call_safely(fn, updates, list(counts), what="weighted_average")
        expect(isinstance(answer, dict),
               gettext('weighted_average should return a dict of tensors, got {type_answer_name}').format(type_answer_name=type(answer).__name__))
        plain_mean = {k: sum(u[k] for u in originals) / len(originals) for k in originals[0]}
        if set(answer) == set(plain_mean) and all(
                isinstance(answer[k], torch.Tensor) and answer[k].shape == plain_mean[k].shape
                and torch.allclose(answer[k], plain_mean[k]) for k in answer):
            raise AssertionError(gettext("weighted_average returned the plain (unweighted) mean: a client with few "
                                         "samples counts as much as one with many. ") + hint)
        expect_tensors_close(answer, weighted_average(originals, counts), "weighted_average", atol=1e-5, hint=hint)
        expect(all(torch.equal(u[k], o[k]) for u, o in zip(updates, originals) for k in o),
               gettext("weighted_average changed the clients' updates in place; build new tensors instead."))
    passed("weighted_average")


def check_round_uplink_bytes(answer, model: torch.nn.Module, clients_per_round: int,
                             measured_bytes_up: int | None = None) -> None:
    """``answer`` must be exactly the fp32 uplink bytes of one round: every sampled client sends
    its whole update, 4 bytes per parameter (an int, or a float with a whole value)."""
    state = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    expected = len(Fp32Codec().encode(state)) * clients_per_round
    hint = (gettext("Each sampled client sends one float32 (4 bytes) per parameter; multiply by the number of "
                    "clients sampled per round."))
    got = expect_whole_number(answer, "uplink bytes per round", hint)
    if got == expected // 4:
        raise AssertionError(gettext('{answer} counts parameters, not bytes: a float32 is 4 bytes. {hint}').format(answer=answer, hint=hint))
    if got == expected * 8:
        raise AssertionError(gettext('{answer} is in bits; the ledger counts bytes. {hint}').format(answer=answer, hint=hint))
    if clients_per_round > 1 and got == expected // clients_per_round:
        raise AssertionError(gettext("{answer} is one client's upload; all {clients_per_round} sampled clients send. {hint}").format(answer=answer, clients_per_round=clients_per_round, hint=hint))
    expect(got == expected, gettext('uplink bytes per round: got {answer!r}, expected exactly {expected:,} (off by {got_expected:+,} bytes). {hint}').format(answer=answer, expected=expected, got_expected=got - expected, hint=hint))
    if measured_bytes_up is not None:
        expect(measured_bytes_up == expected, gettext('the ledger measured {measured_bytes_up} bytes, your formula {expected}').format(measured_bytes_up=measured_bytes_up, expected=expected))
    passed("uplink bytes of one round")


def _joule_cases(seed: int | None) -> list[tuple[float, float, float, EnergyProfile]]:
    if seed is None:
        triples = [(2.0e9, 203_560.0, 203_560.0), (1.0e6, 5.0e6, 0.0), (0.0, 1_000.0, 80_000.0)]
    else:
        g = torch.Generator().manual_seed(seed)
        triples = [(float(torch.randint(0, 10 ** 10, (1,), generator=g)), float(torch.randint(0, 10 ** 7, (1,), generator=g)),
                    float(torch.randint(1, 10 ** 7, (1,), generator=g))) for _ in range(3)]
    return [(f, u, d, profile) for profile in PROFILES.values() for f, u, d in triples]


def check_client_round_joules(fn: Callable, seed: int | None = None) -> None:
    """``fn(flops, bytes_up, bytes_down, profile) -> joules``: the ledger's linear energy model of one
    client-round, ``flops·e_flop + 8·bytes_up·e_up + 8·bytes_down·e_down`` (no fixed radio costs),
    compared with ``profile.energy(..., include_fixed=False).total`` for every profile."""
    hint = (gettext("E = flops * profile.joules_per_flop + 8 * bytes_up * profile.joules_per_bit_up "
                    "+ 8 * bytes_down * profile.joules_per_bit_down (the radio is priced per BIT, and up and down differ)."))
    for flops, up, down, profile in _joule_cases(seed):
        got = call_safely(fn, flops, up, down, profile, what="client_round_joules")
        expected = profile.energy(flops, up, down, include_fixed=False).total
        if isinstance(got, (int, float)) and not isinstance(got, bool) and up + down > 0:
            per_byte = flops * profile.joules_per_flop + up * profile.joules_per_bit_up + down * profile.joules_per_bit_down
            swapped = (flops * profile.joules_per_flop + 8 * up * profile.joules_per_bit_down
                       + 8 * down * profile.joules_per_bit_up)
            with_fixed = profile.energy(flops, up, down).total
            for wrong, why in ((per_byte, gettext("you priced bytes at the per-bit rate: multiply bytes by 8")),
                               (swapped, gettext("uplink and downlink cost different joules per bit: don't swap them")),
                               (with_fixed, gettext("this exercise asks for the linear, bytes-only model (no radio "
                                                    "promotion/tail)"))):
                if abs(wrong - expected) > 1e-9 * abs(expected) and abs(got - wrong) <= 1e-9 * abs(wrong):
                    raise AssertionError(gettext('{profile_name}: {why}. {hint}').format(profile_name=profile.name, why=why, hint=hint))
        expect_close(got, expected, f"{profile.name}, flops={flops:g}, bytes up={up:g}, down={down:g}",
                     rel=1e-9, abs_=1e-15, hint=hint)
    passed("joules of one client-round")


# ----------------------------------------------------------------------------- exercise 2: what the target costs
def cost_to_target(history: History, target: float) -> tuple[int, int] | None:
    """``(uplink bytes, client-rounds)`` from round 1 through the first round whose accuracy is
    at least ``target``; ``None`` if no round reaches it.  Each client-round is one radio session."""
    up, sessions = 0, 0
    for record in history.records:
        up += record.bytes_up
        sessions += len(record.clients)
        if record.accuracy is not None and record.accuracy >= target:
            return up, sessions
    return None


def _totals(records) -> tuple[int, int]:
    return sum(r.bytes_up for r in records), sum(len(r.clients) for r in records)


def _toy_history(accuracies: list[float], clients: list[int], bytes_per_client: int = 1000) -> History:
    records = [RoundRecord(i + 1, list(range(n)), acc, 1.0, 1.0, bytes_per_client * n, bytes_per_client * n, 0, 0.0,
                           Energy()) for i, (acc, n) in enumerate(zip(accuracies, clients))]
    return History("toy", records)


def _cost_cases(seed: int | None) -> list[tuple[History, float]]:
    if seed is None:  # hand-made: first crossing in round 3 (not the last round), exactly at the target,
        # never, in round 1, and a round with fewer clients (a client dropped out)
        rising = _toy_history([0.5, 0.7, 0.8, 0.75, 0.9], [4, 4, 3, 4, 4])
        return [(rising, 0.8), (rising, 0.95), (rising, 0.5), (rising, 0.85)]
    g = torch.Generator().manual_seed(seed)
    cases = []
    for _ in range(4):
        rounds = int(torch.randint(3, 12, (1,), generator=g))
        accs = (0.3 + 0.6 * torch.rand(rounds, generator=g)).tolist()
        clients = torch.randint(1, 9, (rounds,), generator=g).tolist()
        cases.append((_toy_history(accs, clients, int(torch.randint(100, 5000, (1,), generator=g))),
                      float(sorted(accs)[len(accs) // 2])))
    return cases


def check_cost_to_target(fn: Callable, runs: Mapping[str, History] | None = None, target: float | None = None,
                         seed: int | None = None) -> None:
    """``fn(history, target)`` must return ``(uplink_bytes, client_rounds)`` up to and including the
    first round that reaches ``target`` (``None`` if none does).

    ``seed=None`` runs hand-made histories (and, with ``runs`` and ``target``, the notebook's own
    runs, against ``History.bytes_up_to_accuracy``); an int draws random histories (hidden tests).
    """
    hint = (gettext("Walk through history.records in order, adding each round's bytes_up and len(record.clients) "
                    "(one radio session per sampled client); stop at the FIRST round whose accuracy >= target, "
                    "and include that round. Return None if no round reaches the target."))
    cases = list(_cost_cases(seed))
    if runs is not None and target is not None:
        cases += [(h, target) for h in runs.values()]
    for history, goal in cases:
        expected = cost_to_target(history, goal)
        got = call_safely(fn, history, goal, what="cost_to_target")
        where = f"history {history.label!r}, target {goal:.3g}"
        if expected is None:
            expect(got is None, gettext('{where}: no round reaches the target, so return None, not {got!r}. {hint}').format(where=where, got=got, hint=hint))
            continue
        expect(isinstance(got, (tuple, list)) and len(got) == 2,
               gettext('{where}: return a pair (uplink_bytes, client_rounds), got {got!r}. {hint}').format(where=where, got=got, hint=hint))
        up = expect_whole_number(got[0], f"{where}: uplink bytes", hint)
        sessions = expect_whole_number(got[1], f"{where}: client-rounds", hint)
        rounds = history.rounds_to_accuracy(goal)
        if sessions == rounds and sessions != expected[1]:
            raise AssertionError(gettext('{where}: {sessions} is the number of rounds; count client-rounds, i.e. the sampled clients of each round (one radio session each). {hint}').format(where=where, sessions=sessions, hint=hint))
        if rounds and rounds > 1 and (up, sessions) == _totals(history.records[:rounds - 1]):
            raise AssertionError(gettext('{where}: you stopped one round early; the round that reaches the target counts too. {hint}').format(where=where, hint=hint))
        everything = _totals(history.records)
        if (up, sessions) == everything and everything != expected:
            raise AssertionError(gettext('{where}: that is the whole run; stop at the first round that reaches the target. {hint}').format(where=where, hint=hint))
        expect((up, sessions) == expected, gettext('{where}: got ({up:,}, {sessions}), expected ({expected_0:,}, {expected_1}). {hint}').format(where=where, up=up, sessions=sessions, expected_0=expected[0], expected_1=expected[1], hint=hint))
        if history.bytes_up_to_accuracy(goal) is not None:
            expect(history.bytes_up_to_accuracy(goal) == expected[0], gettext("the ledger disagrees with cost_to_target"))
    passed("cost to reach the target")


# ----------------------------------------------------------------------------- predict: 100x smaller on LTE
#: A prediction passes when it is within this factor of the measured value (either side).
PREDICTION_BAND = 1.5


def check_lte_saving_prediction(answer, measured: float, band: float = PREDICTION_BAND) -> None:
    """``answer`` predicts by what factor the joules of one LTE client-round drop when its payload
    shrinks 100x (fp32 update -> 1 % of its bytes, both ways); ``measured`` is the ledger's
    ``energy(full).total / energy(small).total``.  It passes within a factor ``band`` either side.
    """
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()
    expect(isinstance(answer, numbers.Real) and not isinstance(answer, bool) and math.isfinite(answer)
           and answer > 0, gettext('my_lte_saving: expected a positive number (a factor such as 3.0), got {answer!r}').format(answer=answer))
    expect(measured > 0, gettext('measured={measured!r}: the measured factor must be positive').format(measured=measured))
    low, high = measured / band, measured * band
    why = (gettext("On LTE every client-round pays a promotion and an ~11.6 s tail at about 1 W whatever it sends; "
                   "that fixed cost does not shrink with the payload, so a 100x smaller payload removes only the "
                   "bytes' part of the bill."))
    if answer > high:
        raise AssertionError(gettext('You predicted the joules drop {answer:g}x; the ledger measured {measured:.3g}x (accepted: {low:.3g} to {high:.3g}). {why}').format(answer=answer, measured=measured, low=low, high=high, why=why))
    if answer < low:
        raise AssertionError(gettext("You predicted {answer:g}x; the ledger measured {measured:.3g}x (accepted: {low:.3g} to {high:.3g}). A factor below 1 would mean the smaller payload costs more; the bytes' part does shrink, only it is small.").format(answer=answer, measured=measured, low=low, high=high))
    print(gettext('✓ prediction: you said {answer:g}x, the ledger measured {measured:.3g}x (accepted: {low:.3g} to {high:.3g})').format(answer=answer, measured=measured, low=low, high=high))
