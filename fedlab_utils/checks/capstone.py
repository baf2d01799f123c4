"""Checks for notebook 06: the recipe assembled from run()'s parts, and the pruning + top-k
prediction."""
from __future__ import annotations

import math
import random
from collections.abc import Callable

from ..i18n import gettext
from . import call_safely, expect, passed

__all__ = ["check_recipe_parts", "check_pruned_topk_prediction", "PRUNED_TOPK_BAND", "check_downlink_prediction",
           "DOWNLINK_BAND"]

#: run()'s keyword arguments a recipe may set (its parts and hooks).
RUN_PARTS = ("uplink", "downlink", "transform", "server", "aggregate", "trainer")


# ----------------------------------------------------------------------------- build: the recipe
def _recipe_case(seed: int | None):
    """A small federated task and a full-recipe configuration (the visible case, or a hidden one)."""
    import torch

    from fedlab_utils.lessons.capstone import RecipeConfig

    from ..data import client_data, load_dataset, partition
    from ..models import make_model

    rng = random.Random(seed)
    data_seed = 0 if seed is None else seed
    data = load_dataset("digits", seed=data_seed)
    parts = partition(data.y_train, 4, "dirichlet", alpha=0.5, seed=data_seed)
    clients = client_data(data, parts, torch.device("cpu"))
    torch.manual_seed(data_seed)
    model = make_model("mlp", data.input_shape, data.num_classes)
    if seed is None:
        config = RecipeConfig("full recipe", rounds=4, local_epochs=1, server_momentum=0.7, topk_fraction=0.05,
                              value_bits=8, downlink_bits=8, sparsity=0.5)
    else:
        config = RecipeConfig("full recipe", rounds=4, local_epochs=1, server_momentum=rng.choice([0.5, 0.8]),
                              topk_fraction=rng.choice([0.03, 0.1]), value_bits=rng.choice([4, 6]),
                              downlink_bits=rng.choice([6, 8]), sparsity=rng.choice([0.4, 0.6]))
    return model, clients, (data.x_test, data.y_test), config, data_seed


def _run_parts(model, clients, test, config, seed: int, parts: dict):
    from fedlab_utils.core.loop import run
    from fedlab_utils.core.training import LocalTraining

    return run(model, clients, test, rounds=config.rounds, local=LocalTraining(epochs=config.local_epochs,
               batch_size=32, lr=0.1), seed=seed, progress=False, **parts)


def _recipe_hint(parts: dict) -> str:
    """What a plausible wrong recipe most likely got wrong, read from its parts."""
    from fedlab_utils.compression.codecs import ErrorFeedback, TopKCodec
    from fedlab_utils.lessons.pruning.federated import MaskedTraining, PruningServer

    down, up = parts.get("downlink"), parts.get("uplink")
    if isinstance(down, (ErrorFeedback, TopKCodec)):
        return gettext("The top-k codec is on the downlink: top-k with error feedback compresses each client's "
                       "UPDATE on its way up (uplink=); the downlink sends the pruned global model, quantized "
                       "(SparseQuantizeCodec).")
    if not isinstance(parts.get("server"), PruningServer):
        return gettext("Federated pruning is missing: its hooks(inner=server) give both the server (which prunes "
                       "on the schedule and wraps FedAvgM) and the transform; pass them to run().")
    if not isinstance(parts.get("transform"), MaskedTraining):
        return gettext("The pruning mask is not applied before top-k: without the pruning transform the clients "
                       "train and send the pruned weights too. Pass both hooks of FederatedPruning.hooks(...) "
                       "(transform and server) to run().")
    if not isinstance(up, ErrorFeedback):
        return gettext("The uplink has no error feedback: wrap the top-k codec in ErrorFeedback(...), so that "
                       "each client keeps what top-k dropped and sends it later.")
    if parts["server"].inner.__class__.__name__ != "FedAvgM":
        return gettext("The server optimizer is missing: pass FedAvgM(lr=1.0, momentum=...) as inner= of the "
                       "pruning hooks, so that the pruning server steps with momentum.")
    return gettext("Check each setting against the configuration: top-k fraction and value bits, downlink bits, "
                   "momentum, and the pruning schedule PruningSchedule(sparsity, 'cubic', every=1, "
                   "end=max(1, rounds // 2)).")


def check_recipe_parts(fn: Callable, seed: int | None = None) -> None:
    """``fn(config, model)`` must return ``run()``'s keyword arguments (parts and hooks) for the
    full recipe ``config``: run on a small task, it must send the same bytes up and down and reach
    the same accuracy in every round as the package's :func:`~fedlab_utils.lessons.capstone.recipe_parts`."""
    from fedlab_utils.lessons.capstone import recipe_parts

    model, clients, test, config, data_seed = _recipe_case(seed)
    parts = call_safely(fn, config, model, what="recipe_parts")
    expect(isinstance(parts, dict), gettext("recipe_parts must return a dict of run()'s keyword arguments "
                                            "(e.g. {{'uplink': ..., 'downlink': ..., ...}}), got {kind}").format(
                                                kind=type(parts).__name__))
    unknown = sorted(set(parts) - set(RUN_PARTS))
    expect(not unknown, gettext("recipe_parts returned keys run() does not take as parts: {unknown}; valid: "
                                "{valid}").format(unknown=unknown, valid=list(RUN_PARTS)))
    try:
        mine = _run_parts(model, clients, test, config, data_seed, parts)
    except Exception as exc:  # a student's part that run() refuses: say which, with run()'s own message
        raise AssertionError(gettext("run() refused these parts: {error}").format(error=f"{type(exc).__name__}: {exc}"))
    reference = _run_parts(model, clients, test, config, data_seed, recipe_parts(config, model))
    for got, want in zip(mine.records, reference.records):
        if got.bytes_down != want.bytes_down:
            raise AssertionError(gettext("round {round}: {got} bytes down, the recipe sends {want}. ").format(
                round=want.round, got=got.bytes_down, want=want.bytes_down) + _recipe_hint(parts))
        if got.bytes_up != want.bytes_up:
            raise AssertionError(gettext("round {round}: {got} bytes up, the recipe sends {want}. ").format(
                round=want.round, got=got.bytes_up, want=want.bytes_up) + _recipe_hint(parts))
        if not math.isclose(got.accuracy, want.accuracy, abs_tol=1e-9):
            raise AssertionError(gettext("round {round}: accuracy {got:.4f}, the recipe reaches {want:.4f} with "
                                         "the same bytes. ").format(round=want.round, got=got.accuracy,
                                                                    want=want.accuracy) + _recipe_hint(parts))
    passed("recipe_parts")


# ----------------------------------------------------------------------------- predict: pruning + top-k
#: A prediction of pruning + top-k's "times fewer uplink bytes" passes within this relative band.
PRUNED_TOPK_BAND = 0.25


def check_pruned_topk_prediction(answer, uplink_bytes: dict, band: float = PRUNED_TOPK_BAND) -> None:
    """Predict-then-check: ``answer`` predicts how many times fewer uplink bytes than fp32 one update
    takes with pruning + top-k.  ``uplink_bytes`` holds the measured payloads ("fp32 (FedAvg)",
    "pruning alone (sparse payload)", "top-k alone", "pruning + top-k").  It passes within ``band``
    (relative) of the measurement; either way it prints the numbers, not the reason (an exercise
    asks for that)."""
    fp32, prune, topk, both = (uplink_bytes[k] for k in ("fp32 (FedAvg)", "pruning alone (sparse payload)",
                                                         "top-k alone", "pruning + top-k"))
    expect(min(fp32, prune, topk, both) > 0, gettext("an uplink payload is empty: nothing to compare"))
    measured = fp32 / both
    product = fp32 / (prune / fp32 * topk)
    got = answer.item() if hasattr(answer, "item") and getattr(answer, "ndim", 1) == 0 else answer
    expect(isinstance(got, (int, float)) and not isinstance(got, bool) and math.isfinite(got),
           gettext("pruning + top-k prediction: expected a number (how many times fewer bytes), got {answer!r}")
           .format(answer=answer))
    low, high = measured / (1 + band), measured * (1 + band)
    facts = gettext("Measured: {measured:.1f}x fewer bytes than fp32; top-k alone {topk:.1f}x, pruning alone "
                    "{prune:.2f}x; independent savings would give {product:.0f}x.").format(
                        measured=measured, topk=fp32 / topk, prune=fp32 / prune, product=product)
    message = gettext("pruning + top-k prediction: you said {got:.3g}x (the band is {low:.1f}x to {high:.1f}x). "
                      "{facts}").format(got=got, low=low, high=high, facts=facts)
    if low <= got <= high:
        print("✓ " + message)
        return
    raise AssertionError(message)


# ----------------------------------------------------------------------------- predict: the downlink
#: A prediction of the recipe's "times fewer downlink bytes" passes within this relative band.
DOWNLINK_BAND = 0.25


def check_downlink_prediction(answer, fedavg_bytes_down: int, recipe_bytes_down: int,
                              band: float = DOWNLINK_BAND) -> None:
    """Predict-then-check: ``answer`` predicts how many times fewer downlink bytes the full recipe
    sends than FedAvg over the whole run (``fedavg_bytes_down / recipe_bytes_down``).  It passes
    within ``band`` (relative) of the measurement."""
    expect(fedavg_bytes_down > 0 and recipe_bytes_down > 0, gettext("a run sent no downlink bytes: nothing to compare"))
    measured = fedavg_bytes_down / recipe_bytes_down
    got = answer.item() if hasattr(answer, "item") and getattr(answer, "ndim", 1) == 0 else answer
    expect(isinstance(got, (int, float)) and not isinstance(got, bool) and math.isfinite(got),
           gettext("downlink prediction: expected a number (how many times fewer bytes), got {answer!r}")
           .format(answer=answer))
    low, high = measured / (1 + band), measured * (1 + band)
    message = gettext("downlink prediction: you said {got:.3g}x, measured {measured:.2f}x fewer downlink bytes than "
                      "FedAvg (the band is {low:.2f}x to {high:.2f}x).").format(got=got, measured=measured, low=low,
                                                                              high=high)
    if low <= got <= high:
        print("✓ " + message)
        return
    hint = gettext(" Count per weight and per round: the bitmap (1 bit), the kept values (downlink_bits each) while "
                   "the mask ramps up to `sparsity` over the first half of the rounds, and the rounds themselves.")
    raise AssertionError(message + hint)
