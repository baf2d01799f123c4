"""Checks for notebook 00 (FedAvg baseline and the efficiency ledger)."""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping

import torch

from fedlab_utils.core.aggregators.fedavg import weighted_average
from fedlab_utils.core.history import History, RoundRecord
from fedlab_utils.ledger.energy import PROFILES, Energy, EnergyProfile

from ..i18n import gettext
from . import call_safely, expect, expect_close, expect_tensors_close, expect_whole_number, passed

__all__ = ["check_fedavg_round", "check_pooled_equivalent", "crossover_bytes", "check_crossover_bytes",
           "check_weighted_average", "check_client_round_joules", "cost_to_target",
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
        expect_close(got, expected, gettext("{profile}, flops={flops:g}, bytes up={up:g}, down={down:g}").format(
                         profile=profile.name, flops=flops, up=up, down=down),
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
        where = gettext("history {label!r}, target {goal:.3g}").format(label=history.label, goal=goal)
        if expected is None:
            expect(got is None, gettext('{where}: no round reaches the target, so return None, not {got!r}. {hint}').format(where=where, got=got, hint=hint))
            continue
        expect(isinstance(got, (tuple, list)) and len(got) == 2,
               gettext('{where}: return a pair (uplink_bytes, client_rounds), got {got!r}. {hint}').format(where=where, got=got, hint=hint))
        up = expect_whole_number(got[0], gettext("{where}: uplink bytes").format(where=where), hint)
        sessions = expect_whole_number(got[1], gettext("{where}: client-rounds").format(where=where), hint)
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


# ----------------------------------------------------------------------------- build it: one FedAvg round
def _round_cases(seed: int | None) -> list[tuple[torch.nn.Module, list, float, object]]:
    """Tiny federations whose clients differ a lot in size, so that every plausible mistake shows."""
    from fedlab_utils.core.training import LocalTraining
    from fedlab_utils.data import ClientData

    g = torch.Generator().manual_seed(11 if seed is None else 5000 + seed)
    sizes = [3, 40, 9, 25, 14] if seed is None else [int(n) for n in torch.randint(2, 40, (6,), generator=g)]
    if seed is not None:
        sizes[0] += 60  # unequal on purpose: the unweighted mean must differ
    clients = [ClientData(torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)) for n in sizes]
    torch.manual_seed(3 if seed is None else seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    local = LocalTraining(epochs=2, batch_size=4, lr=0.2)
    return [(model, clients, 0.6, local)]


def _round_variant(model, clients, fraction, local, round_idx, seed, *, weighting="samples", restart=True,
                   sampled_only=True) -> dict[str, torch.Tensor]:
    """One FedAvg round written out, or one of its plausible mistakes (for the check's hints)."""
    import copy

    import numpy as np

    from fedlab_utils.core.loop import sample_clients
    from fedlab_utils.core.training import client_generator, model_state, train_locally

    chosen = sample_clients(len(clients), fraction, np.random.default_rng([seed, round_idx]))
    global_state = model_state(model)
    worker = copy.deepcopy(model)
    updates, counts = [], []
    for cid in chosen:
        if restart:
            worker.load_state_dict(global_state, strict=False)
        train_locally(worker, clients[cid], local, generator=client_generator(seed, round_idx, cid))
        updates.append({k: v - global_state[k] for k, v in model_state(worker).items()})
        counts.append(len(clients[cid]) if weighting == "samples" else 1)
    total = sum(len(c) for c in clients) if not sampled_only else sum(counts)
    return {k: global_state[k] + sum(n / total * u[k] for u, n in zip(updates, counts)) for k in global_state}


def check_fedavg_round(fn: Callable, seed: int | None = None, rounds: int = 2) -> None:
    """``fn(global_model, clients, fraction, local, round_idx, seed) -> new global state``: one FedAvg round.

    Compared, round after round, with the package's :func:`fedlab_utils.core.loop.run` on a tiny
    federation of clients of very different sizes: ``rounds`` rounds of ``run`` against ``fn``
    applied ``rounds`` times from the same initial model.  The plausible mistakes (an unweighted
    mean, clients that continue from the previous client's weights, a total over all clients
    instead of the sampled ones, changing the global model in place) get their own hints.
    ``seed``: another random federation (hidden tests).
    """
    import copy

    from fedlab_utils.core.loop import run
    from fedlab_utils.core.training import model_state

    hint = gettext("Sample with sample_clients(len(clients), fraction, np.random.default_rng([seed, round_idx])); "
                   "for each sampled client, start a copy of the model from the GLOBAL weights, train it with "
                   "torch.optim.SGD over local.epochs epochs of minibatches(len(data), local.batch_size, "
                   "client_generator(seed, round_idx, cid)), and keep its update (local - global); return "
                   "global + sum_k (n_k / n) * update_k, with n the samples of the SAMPLED clients only.")
    mistakes = ((dict(weighting="equal"), gettext("you averaged the updates unweighted: a client with 3 samples "
                                                  "counts as much as one with 40")),
                (dict(restart=False), gettext("each client continued from the previous client's trained weights; "
                                              "every sampled client must start from the global weights")),
                (dict(sampled_only=False), gettext("you divided by the samples of ALL clients (as if the unsampled "
                                                   "ones sent a zero update); divide by the sampled clients' total")))
    for model, clients, fraction, local in _round_cases(seed):
        case_seed = 0 if seed is None else seed
        mine = copy.deepcopy(model)
        for round_idx in range(1, rounds + 1):
            before = model_state(mine)
            got = call_safely(fn, mine, clients, fraction, local, round_idx, case_seed, what="fedavg_round")
            expect(all(torch.equal(v, before[k]) for k, v in model_state(mine).items()),
                   gettext("round {round_idx}: your function changed the global model's weights in place; train a "
                           "copy (copy.deepcopy) for each client and return the new state instead.").format(
                       round_idx=round_idx))
            expect(isinstance(got, Mapping) and set(got) >= set(before),
                   gettext("round {round_idx}: return the new global state, a dict with the keys {keys}, got "
                           "{got}").format(round_idx=round_idx, keys=sorted(before),
                                           got=sorted(got) if isinstance(got, Mapping) else type(got).__name__))
            reference = run(model, clients, (clients[0].x, clients[0].y), rounds=round_idx, fraction=fraction,
                            local=local, seed=case_seed, progress=False, label="package")
            expected = model_state(reference.model)
            close = all(isinstance(got[k], torch.Tensor) and got[k].shape == v.shape
                        and torch.allclose(got[k].detach().float(), v, atol=1e-5) for k, v in expected.items())
            if not close:
                for options, why in mistakes:
                    wrong = _round_variant(mine, clients, fraction, local, round_idx, case_seed, **options)
                    if any(not torch.allclose(wrong[k], v, atol=1e-5) for k, v in expected.items()) and all(
                            isinstance(got[k], torch.Tensor) and got[k].shape == v.shape
                            and torch.allclose(got[k].detach().float(), wrong[k], atol=1e-5)
                            for k, v in expected.items()):
                        raise AssertionError(gettext("round {round_idx}: {why}. {hint}").format(
                            round_idx=round_idx, why=why, hint=hint))
            expect_tensors_close({k: got[k] for k in expected}, expected,
                                 gettext("round {round_idx}, the new global weights").format(round_idx=round_idx),
                                 atol=1e-5, hint=hint)
            mine.load_state_dict(expected, strict=False)
    passed("one FedAvg round, against run()")


# ----------------------------------------------------------------------------- when FedAvg is a pooled step
def check_pooled_equivalent(answer: Mapping) -> None:
    """``answer`` = ``{"local_epochs": E, "batch_size": B, "fraction": C}``: settings under which one
    FedAvg round is exactly one full-batch gradient step on all clients' data pooled together.

    The check measures it: one round of ``run`` with these settings against that pooled step, on
    clients of very different sizes.  ``batch_size`` may be ``None`` (full batch)."""
    from fedlab_utils.core.loop import run
    from fedlab_utils.core.training import LocalTraining, model_state, train_locally
    from fedlab_utils.data import ClientData

    expect(isinstance(answer, Mapping) and {"local_epochs", "batch_size", "fraction"} <= set(answer),
           gettext('my_pooled_equivalent: expected a dict with the keys "local_epochs", "batch_size" and '
                   '"fraction", got {answer!r}').format(answer=answer))
    epochs, batch, fraction = answer["local_epochs"], answer["batch_size"], answer["fraction"]
    g = torch.Generator().manual_seed(21)
    sizes = [5, 30, 12, 48]
    clients = [ClientData(torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)) for n in sizes]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    try:
        local = LocalTraining(epochs=epochs, batch_size=batch, lr=0.3)
        one_round = run(model, clients, (clients[0].x, clients[0].y), rounds=1, fraction=fraction, local=local,
                        seed=0, progress=False)
    except ValueError as exc:
        raise AssertionError(gettext("my_pooled_equivalent: {error}").format(error=exc)) from None
    pooled = __import__("copy").deepcopy(model)
    everything = ClientData(torch.cat([c.x for c in clients]), torch.cat([c.y for c in clients]))
    train_locally(pooled, everything, LocalTraining(epochs=1, batch_size=None, lr=0.3),
                  generator=torch.Generator().manual_seed(0))
    gap = max((model_state(one_round.model)[k] - v).abs().max().item() for k, v in model_state(pooled).items())
    if gap <= 1e-5:
        print(gettext("✓ one FedAvg round with these settings is the pooled full-batch step (largest weight "
                      "difference {gap:.1e})").format(gap=gap))
        return
    reasons = []
    if fraction < 1:
        reasons.append(gettext("with fraction < 1 only the sampled clients' data enter the round, so the step "
                               "is taken on part of the pooled data"))
    if batch is not None and batch < max(sizes):
        reasons.append(gettext("a mini-batch smaller than a client's data makes several steps per epoch, each on "
                               "part of that client's data"))
    if epochs > 1:
        reasons.append(gettext("after its first step each client takes its gradients at its OWN weights, not at "
                               "the global ones: the average of several local steps is not a step on the pooled "
                               "data (client drift)"))
    raise AssertionError(gettext("my_pooled_equivalent: one round with these settings lands {gap:.2g} away from "
                                 "the pooled full-batch step. {reasons}").format(
        gap=gap, reasons="; ".join(reasons) or gettext("think about how many gradient steps each client takes, "
                                                       "on which data, and at which weights")))


# ----------------------------------------------------------------------------- the crossover payload
def crossover_bytes(profile: EnergyProfile, flops: float) -> float:
    """The payload each way (bytes) whose transfer energy, up plus down, equals the fixed cost of the
    client-round's radio session: ``radio_floor(flops) / (8 · (e_up + e_down))``."""
    return profile.radio_floor(flops) / (8 * (profile.joules_per_bit_up + profile.joules_per_bit_down))


def check_crossover_bytes(fn: Callable, flops: float = 1.0e9) -> None:
    """``fn(profile, flops) -> bytes``: the crossover payload of every profile (see :func:`crossover_bytes`),
    within 0.1 %.  The usual slips (bits for bytes, the uplink alone, compute counted as fixed
    radio cost) get their own hints."""
    hint = gettext("Set the bytes' energy equal to the session's fixed cost: B bytes each way cost "
                   "8·B·(joules_per_bit_up + joules_per_bit_down); the fixed cost is profile.radio_floor(flops). "
                   "Solve for B.")
    for profile in PROFILES.values():
        for f in (flops, 0.0, 5.0e10):
            expected = crossover_bytes(profile, f)
            got = call_safely(fn, profile, f, what="crossover_bytes")
            if isinstance(got, torch.Tensor) and got.numel() == 1:
                got = got.item()
            expect(isinstance(got, numbers.Real) and not isinstance(got, bool) and math.isfinite(got),
                   gettext("crossover_bytes: expected a number of bytes, got {got!r}").format(got=got))
            floor, up, down = profile.radio_floor(f), profile.joules_per_bit_up, profile.joules_per_bit_down
            slips = ((floor / (up + down), gettext("that is in bits; a byte is 8 bits")),
                     (floor / (8 * up), gettext("the payload travels both ways: price the download too")),
                     ((floor + f * profile.joules_per_flop) / (8 * (up + down)),
                      gettext("the compute energy is not part of the radio session's fixed cost")))
            for wrong, why in slips:
                if not math.isclose(wrong, expected, rel_tol=1e-3) and math.isclose(got, wrong, rel_tol=1e-3):
                    raise AssertionError(gettext("{profile_name}: {why}. {hint}").format(
                        profile_name=profile.name, why=why, hint=hint))
            expect_close(got, expected, f"{profile.name}, flops={f:g}", rel=1e-3, hint=hint)
    passed("the crossover payload")
