"""Checks for notebook 06 (the combined recipe, the radio-session floor, the energy-budget planner)."""
from __future__ import annotations

import math
import random
from collections.abc import Callable

from fedlab_utils.ledger.energy import LTE, WIFI, RadioModel

from ..i18n import gettext
from . import call_safely, expect, expect_close, passed

__all__ = ["check_combined_saving", "check_client_round_fixed_joules", "check_cheapest_config",
           "check_lte_factor_prediction", "LTE_PREDICTION_BAND"]


# ----------------------------------------------------------------------------- exercise 1
def _combined_cases(seed: int | None) -> list[list[float]]:
    if seed is None:  # the tempting sum: 50 % + 60 % + 30 % would "add up" to 140 %
        return [[0.5, 0.6, 0.3], [0.9], [0.25, 0.25], []]
    rng = random.Random(seed)
    return [[round(rng.uniform(0.05, 0.95), 3) for _ in range(rng.randint(2, 5))] for _ in range(4)]


def check_combined_saving(fn: Callable, seed: int | None = None) -> None:
    """``fn(savings)`` must return the fraction saved when independent savings (fractions of
    what is left) are combined: ``1 − Π(1 − s_i)``, never their sum."""
    hint = (gettext("Each technique saves a fraction of what is LEFT after the others: the remaining cost is "
                    "the product of (1 - s_i), so the combined saving is 1 - prod(1 - s_i). An empty list saves 0."))
    for savings in _combined_cases(seed):
        remaining = 1.0
        for s in savings:
            remaining *= 1.0 - s
        answer = call_safely(fn, list(savings), what="combined_saving")
        if len(savings) > 1 and isinstance(answer, (int, float)) and abs(answer - sum(savings)) < 1e-9:
            raise AssertionError(gettext("combined_saving added the savings; savings of what is left do not add up "
                                         "(three of them could exceed 100 %). ") + hint)
        expect_close(answer, 1.0 - remaining, "combined_saving", rel=1e-9, abs_=1e-12, hint=hint)
    passed("combined_saving")


# ----------------------------------------------------------------------------- exercise 2
def _fixed_reference(radio: RadioModel, compute_s: float) -> float:
    promotion = radio.promotion_mw * 1e-3 * radio.promotion_s
    tail = radio.tail_mw * 1e-3 * radio.tail_s
    if compute_s < radio.tail_s:  # the upload starts inside the download's tail: one session
        return promotion + radio.tail_mw * 1e-3 * compute_s + tail
    return 2 * (promotion + tail)


def _fixed_cases(seed: int | None) -> list[tuple[RadioModel, float]]:
    if seed is None:
        return [(LTE, 0.5), (LTE, 20.0), (WIFI, 0.1), (WIFI, 1.0), (LTE, 0.0)]
    rng = random.Random(seed)
    out = []
    for radio in (LTE, WIFI):
        out += [(radio, rng.uniform(0, radio.tail_s * 0.99)), (radio, rng.uniform(radio.tail_s * 1.01, 3 * radio.tail_s))]
    custom = RadioModel("custom", 0.0, 0.0, 0.0, "hidden test", promotion_mw=rng.uniform(100, 2000),
                        promotion_s=rng.uniform(0.05, 1.0), tail_mw=rng.uniform(100, 2000), tail_s=rng.uniform(1, 10))
    return out + [(custom, custom.tail_s / 2), (custom, custom.tail_s * 2)]


def check_client_round_fixed_joules(fn: Callable, seed: int | None = None) -> None:
    """``fn(radio, compute_s)`` must return the promotion + tail joules of one client-round:
    download, ``compute_s`` seconds of training, upload (the radio's powers are in mW, times in s)."""
    hint = (gettext("Draw the timeline: a promotion before the download; while the client computes the radio sits in "
                    "the download's tail. If the upload starts inside the tail (compute_s < tail_s), the tail is cut "
                    "short after compute_s and no second promotion is needed; otherwise the download pays a full tail and "
                    "the upload pays its own promotion. A full tail follows the upload. Powers are in mW: multiply by 1e-3."))
    for radio, compute_s in _fixed_cases(seed):
        answer = call_safely(fn, radio, compute_s, what="client_round_fixed_joules")
        expected = _fixed_reference(radio, compute_s)
        one_session = radio.promotion_mw * 1e-3 * radio.promotion_s + radio.tail_mw * 1e-3 * radio.tail_s
        if isinstance(answer, (int, float)) and abs(answer - 1e3 * expected) < 1e-6 * 1e3 * expected:
            raise AssertionError(gettext("client_round_fixed_joules is 1000x too large: mW x s gives mJ. ") + hint)
        if (isinstance(answer, (int, float)) and compute_s > 0 and compute_s < radio.tail_s
                and abs(answer - 2 * one_session) < 1e-9):
            raise AssertionError(gettext('with compute_s={compute_s:.3g} s < tail {radio_tail_s} s the upload starts inside the tail: it pays no new promotion. ').format(compute_s=compute_s, radio_tail_s=radio.tail_s) + hint)
        expect_close(answer, expected, f"client_round_fixed_joules({radio.name}, compute_s={compute_s:.3g})",
                     rel=1e-6, hint=hint)
    passed("client_round_fixed_joules")


# ----------------------------------------------------------------------------- exercise 3
def _reference_cheapest(options: list[dict], target: float) -> str | None:
    feasible = [o for o in options if o["accuracy"] >= target]
    return min(feasible, key=lambda o: o["joules"])["name"] if feasible else None


def _cheapest_cases(seed: int | None) -> list[tuple[list[dict], float]]:
    if seed is None:
        options = [{"name": "FedAvg", "accuracy": 0.86, "joules": 150.0},
                   {"name": "top-k only", "accuracy": 0.83, "joules": 60.0},
                   {"name": "full recipe", "accuracy": 0.85, "joules": 12.0},
                   {"name": "- pruning", "accuracy": 0.85, "joules": 14.0},
                   {"name": "tiny", "accuracy": 0.70, "joules": 5.0}]
        return [(options, 0.85), (options, 0.86), (options, 0.90), (options, 0.80), (options[:1], 0.5)]
    rng = random.Random(seed)
    cases = []
    for _ in range(4):
        options = [{"name": f"config {i}", "accuracy": round(rng.uniform(0.6, 0.95), 3),
                    "joules": round(rng.uniform(1, 200), 2)} for i in range(rng.randint(3, 8))]
        target = rng.choice([o["accuracy"] for o in options])  # ties with the target on purpose
        cases.append((options, target))
    return cases


def check_cheapest_config(fn: Callable, seed: int | None = None) -> None:
    """``fn(options, target)`` must return the ``name`` of the option with the fewest joules among
    those whose accuracy is at least ``target`` (``>=``), or ``None`` when none reaches it."""
    hint = (gettext("Keep only the options with accuracy >= target (an option exactly at the target counts), then "
                    "return the name of the one with the fewest joules; return None when no option reaches the target."))
    for options, target in _cheapest_cases(seed):
        copies = [dict(o) for o in options]
        answer = call_safely(fn, copies, target, what="cheapest_config")
        expected = _reference_cheapest(options, target)
        if expected is not None and answer == min(options, key=lambda o: o["joules"])["name"] != expected:
            raise AssertionError(gettext('cheapest_config picked {answer!r}, the cheapest option overall, but its accuracy is below the target {target}. ').format(answer=answer, target=target) + hint)
        expect(answer == expected, gettext('cheapest_config(target={target}) returned {answer!r}, expected {expected!r}. ').format(target=target, answer=answer, expected=expected)
               + hint)
    passed("cheapest_config")


# ----------------------------------------------------------------------------- predict: the LTE factor
#: A prediction of the LTE energy factor passes within this relative band of the measured factor.
LTE_PREDICTION_BAND = 0.25


def check_lte_factor_prediction(answer, fedavg_joules: float, recipe_joules: float, fedavg_client_rounds: int,
                                recipe_client_rounds: int, band: float = LTE_PREDICTION_BAND) -> None:
    """Predict-then-check: ``answer`` predicts how many times fewer modelled joules the full recipe
    uses than FedAvg on ``phone-lte`` (``fedavg_joules / recipe_joules``).  It passes within
    ``band`` (relative) of the measured factor; either way it prints why the factor is what it is."""
    expect(fedavg_joules > 0 and recipe_joules > 0 and fedavg_client_rounds > 0 and recipe_client_rounds > 0,
           gettext("the runs spent no joules or ran no client-round: nothing to compare"))
    measured = fedavg_joules / recipe_joules
    got = answer.item() if hasattr(answer, "item") and getattr(answer, "ndim", 1) == 0 else answer
    expect(isinstance(got, (int, float)) and not isinstance(got, bool) and math.isfinite(got),
           gettext('LTE factor prediction: expected a number (how many times fewer joules), got {answer!r}').format(answer=answer))
    low, high = measured / (1 + band), measured * (1 + band)
    sessions = fedavg_client_rounds / recipe_client_rounds
    why = (gettext("On LTE every client-round pays one radio session (a promotion and a long high-power tail) whatever it sends, and that fixed cost is most of a FedAvg client-round's joules. Compression removes only the rest, so the factor stays close to the ratio of radio sessions: {fedavg_client_rounds} / {recipe_client_rounds} client-rounds = {sessions:.2f}x.").format(fedavg_client_rounds=fedavg_client_rounds, recipe_client_rounds=recipe_client_rounds, sessions=sessions))
    if low <= got <= high:
        print(gettext('✓ LTE factor prediction: you said {got:.3g}x, measured {measured:.2f}x (the band is {low:.2f}x to {high:.2f}x). {why}').format(got=got, measured=measured, low=low, high=high, why=why))
        return
    if got > high:
        hint = (gettext("Too large: the uplink's and WiFi's factors do not carry over to LTE, because bytes are a small "
                        "part of the LTE bill. "))
    elif got <= 0:
        hint = gettext("A factor of 'times fewer joules' is positive (1 means no saving). ")
    else:
        hint = gettext("Too small: the recipe runs fewer rounds, and each round saved is one radio session per client. ")
    raise AssertionError(gettext('LTE factor prediction: you said {got:.3g}x, measured {measured:.2f}x (the band is {low:.2f}x to {high:.2f}x). {hint}{why}').format(got=got, measured=measured, low=low, high=high, hint=hint, why=why))
