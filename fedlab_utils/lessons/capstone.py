"""Capstone: the course's techniques combined into one recipe, priced per profile, and planned.

Technique-free glue that notebook 06 needs; each technique stays in its own module:

* :data:`RULES_06` -- the notebook's parameter table, checked in one call by
  :func:`~fedlab_utils.validation.check_parameters`.
* :class:`RecipeConfig` / :func:`recipe_configs` -- which pieces a configuration switches on
  (server optimizer, more local work in fewer rounds, uplink top-k with error feedback,
  downlink quantization, federated pruning), the full recipe and the ablations that remove one
  piece each; :func:`recipe_parts` turns one into ``run()``'s keyword arguments (the parts and
  hooks the student assembles in notebook 06) and :func:`run_config` runs it through the
  ordinary loop.
* the downlink of a pruned model is :class:`~fedlab_utils.compression.SparseQuantizeCodec`
  (every codec lives in :mod:`fedlab_utils.compression`).
* :func:`price`, :func:`cumulative_joules`, :func:`radio_floor_joules` -- a run's ledger priced
  client-row by client-row under any :class:`~fedlab_utils.ledger.EnergyProfile` by the ledger's
  :func:`~fedlab_utils.ledger.price_rows` (the radio's fixed cost is per client-round, so totals
  must never be priced as one client).
* :func:`plan_budget` -- the energy-budget planner: the cheapest configuration that reached a
  target accuracy, among those run.

See ``docs/energy_model.md`` for the energy model and the radio-session floor.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from fedlab_utils.compression.codecs import ErrorFeedback, QuantizeCodec, SparseQuantizeCodec, TopKCodec
from fedlab_utils.core.history import History
from fedlab_utils.core.loop import run
from fedlab_utils.core.servers.fedavgm import FedAvgM
from fedlab_utils.core.training import LocalTraining
from fedlab_utils.data import ClientData
from fedlab_utils.i18n import gettext
from fedlab_utils.ledger.energy import Energy, EnergyProfile, get_profile, price_history, price_rows
from fedlab_utils.lessons.pruning.federated import FederatedPruning, PruningSchedule
from fedlab_utils.validation import (
    check_fraction,
    check_int,
    check_real,
    choice,
    fraction,
    integer,
    optional_path,
    real,
)
from fedlab_utils.viz.widgets import widgets_enabled

__all__ = ["RecipeConfig", "recipe_configs", "recipe_parts", "run_config", "price",
           "cumulative_joules", "radio_floor_joules", "client_rounds", "config_summary",
           "plan_budget", "PIECES", "RULES_06", "RELATIONS_06", "default_recipe_rounds", "budget_planner"]

#: The pieces of the recipe, in the order the ablation removes them.
PIECES = ("server optimizer", "fewer rounds", "uplink top-k + EF", "downlink quantization", "federated pruning")


def _optional_rounds(name: str, value: object) -> int | None:
    """``None`` (70 % of ``rounds``) or a round count >= 1."""
    return None if value is None else check_int(name, value, 1)


def _recipe_rounds_fit(values: dict) -> None:
    if values["recipe_rounds"] is not None and values["recipe_rounds"] > values["rounds"]:
        raise ValueError(f"recipe_rounds={values['recipe_rounds']!r} is larger than rounds={values['rounds']!r}; "
                         "valid: None or 1 .. rounds (the recipe runs at most FedAvg's rounds)")


def _rules_06() -> dict:
    from fedlab_utils.core.registry import TRAINERS
    from fedlab_utils.data import DATASETS
    from fedlab_utils.ledger.energy import PROFILES

    return {"seed": integer(0), "dataset": choice(DATASETS), "num_clients": integer(2, 200), "fraction": fraction(),
            "alpha": real(0.0, low_inclusive=False), "rounds": integer(2, 500), "local_epochs": integer(1),
            "batch_size": integer(1), "lr": real(0.0, low_inclusive=False), "recipe_rounds": _optional_rounds,
            "recipe_epochs": integer(1), "server_momentum": real(0.0, 1.0, high_inclusive=False),
            "topk_fraction": fraction(), "value_bits": integer(1, 16), "downlink_bits": integer(1, 16),
            "sparsity": real(0.0, 1.0, high_inclusive=False), "planner_profile": choice(PROFILES),
            "planner_target": real(0.0, 1.0, low_inclusive=False, high_inclusive=False),
            "trainer": choice(TRAINERS), "results_path": optional_path()}


#: Notebook 06's parameters and what is valid for each (``device`` is checked by ``get_device``).
RULES_06 = _rules_06()
#: Relations between notebook 06's parameters: the recipe runs at most FedAvg's rounds.
RELATIONS_06 = (_recipe_rounds_fit,)


def default_recipe_rounds(rounds: int) -> int:
    """The recipe's rounds when the notebook leaves ``recipe_rounds=None``: 70 % of FedAvg's."""
    return max(1, round(0.7 * rounds))


@dataclass(frozen=True)
class RecipeConfig:
    """One configuration of the combined recipe: which pieces are on, and their settings."""

    name: str
    rounds: int
    local_epochs: int
    server_momentum: float | None = None  # None: plain FedAvg server; else FedAvgM (Hsu et al. 2019)
    topk_fraction: float | None = None  # None: fp32 uplink; else error-feedback top-k with quantized values
    value_bits: int = 8
    downlink_bits: int | None = None  # None: fp32 downlink
    sparsity: float | None = None  # None: no pruning; else federated pruning (cubic schedule) to this sparsity


def recipe_configs(rounds: int, local_epochs: int, *, recipe_rounds: int, recipe_epochs: int,
                   server_momentum: float = 0.5, topk_fraction: float = 0.02, value_bits: int = 8,
                   downlink_bits: int = 8, sparsity: float = 0.5) -> dict[str, RecipeConfig]:
    """FedAvg, the full recipe, and the full recipe with each piece removed in turn.

    "Fewer rounds" is FedAvg's own lever (notebook 00): ``recipe_epochs`` local epochs for
    ``recipe_rounds`` rounds instead of ``local_epochs`` for ``rounds``; removing it gives the
    baseline's epochs and rounds back.
    """
    check_int("rounds", rounds, 1)
    check_int("local_epochs", local_epochs, 1)
    check_int("recipe_rounds", recipe_rounds, 1, rounds)
    check_int("recipe_epochs", recipe_epochs, 1)
    check_real("server_momentum", server_momentum, 0.0, 1.0, high_inclusive=False)
    check_fraction("topk_fraction", topk_fraction)
    check_int("value_bits", value_bits, 1, 16)
    check_int("downlink_bits", downlink_bits, 1, 16)
    check_real("sparsity", sparsity, 0.0, 1.0, high_inclusive=False)
    full = RecipeConfig("full recipe", recipe_rounds, recipe_epochs, server_momentum, topk_fraction, value_bits,
                        downlink_bits, sparsity)
    return {
        "FedAvg": RecipeConfig("FedAvg", rounds, local_epochs),
        "full recipe": full,
        "- server optimizer": _replace(full, "- server optimizer", server_momentum=None),
        "- fewer rounds": _replace(full, "- fewer rounds", rounds=rounds, local_epochs=local_epochs),
        "- uplink top-k + EF": _replace(full, "- uplink top-k + EF", topk_fraction=None),
        "- downlink quantization": _replace(full, "- downlink quantization", downlink_bits=None),
        "- federated pruning": _replace(full, "- federated pruning", sparsity=None),
    }


def _replace(config: RecipeConfig, name: str, **changes) -> RecipeConfig:
    return RecipeConfig(**{**asdict(config), "name": name, **changes})


def recipe_parts(config: RecipeConfig, model: nn.Module) -> dict:
    """``run()``'s keyword arguments that switch ``config``'s pieces on (fresh parts every call).

    * the server optimizer: FedAvgM as ``server`` (Hsu et al. 2019);
    * the uplink: top-k with quantized values, wrapped in error feedback (each client keeps what
      top-k dropped and adds it to its next update);
    * the downlink: the global model quantized to ``downlink_bits``, and with pruning only its
      nonzero weights plus a bitmap;
    * federated pruning: two hooks around one mask, ``transform`` (the clients train under the
      mask and zero the pruned entries of their update *before* the uplink encodes it) and
      ``server`` (prunes on the schedule and wraps the server optimizer as ``inner``).
    """
    server = None if config.server_momentum is None else FedAvgM(lr=1.0, momentum=config.server_momentum)
    parts: dict = {}
    if config.topk_fraction is not None:
        parts["uplink"] = ErrorFeedback(TopKCodec(config.topk_fraction, values=QuantizeCodec(config.value_bits)))
    if config.downlink_bits is not None:
        parts["downlink"] = (SparseQuantizeCodec(config.downlink_bits) if config.sparsity is not None
                             else QuantizeCodec(config.downlink_bits))
    if config.sparsity is not None:
        schedule = PruningSchedule(config.sparsity, "cubic", every=1, end=max(1, config.rounds // 2))
        parts.update(FederatedPruning(model, schedule).hooks(inner=server))  # transform + server
    elif server is not None:
        parts["server"] = server
    return parts


def run_config(config: RecipeConfig, model: nn.Module, clients: Sequence[ClientData],
               test: tuple[torch.Tensor, torch.Tensor], *, fraction: float, batch_size: int, lr: float,
               seed: int = 0, energy_profile: str | EnergyProfile = "phone-wifi", trainer=None,
               progress: bool | None = None) -> History:
    """Run ``config`` through the ordinary loop (fresh codecs and server state every call).

    ``trainer`` (e.g. the vmap trainer) is used where it applies: not with pruning, whose
    masked training needs the sequential trainer.
    """
    if config.sparsity is not None:
        trainer = None
    return run(model, clients, test, rounds=config.rounds, fraction=fraction,
               local=LocalTraining(epochs=config.local_epochs, batch_size=batch_size, lr=lr), seed=seed,
               trainer=trainer, energy_profile=energy_profile, label=config.name, progress=progress,
               **recipe_parts(config, model))


# ----------------------------------------------------------------------------- pricing a run
def _rows(history: History):
    for record in history.records:
        rows = getattr(record, "client_rows", None)
        if not rows:
            raise ValueError(f"history {history.label!r} has no per-client rows (record.client_rows); "
                             "price runs of the current loop")
        yield record, rows


def price(history: History, profile: str | EnergyProfile, *, include_fixed: bool = True) -> Energy:
    """The run's modelled joules under ``profile``: every client-round priced on its own."""
    for _ in _rows(history):  # every record must carry its client rows (raises otherwise)
        pass
    return price_history(history, profile, include_fixed=include_fixed)


def cumulative_joules(history: History, profile: str | EnergyProfile) -> np.ndarray:
    """Joules spent up to and including each round, under ``profile``."""
    for _ in _rows(history):  # every record must carry its client rows (raises otherwise)
        pass
    return np.cumsum([sum(e.total for e in row_prices) for row_prices in price_rows(history, profile)])


def client_rounds(history: History) -> int:
    """Radio sessions asked of clients: the sum over rounds of the clients that took part."""
    return sum(len(rows) for _, rows in _rows(history))


def radio_floor_joules(history: History, profile: str | EnergyProfile) -> float:
    """What the run would cost if every payload shrank to one byte: each client-round's fixed
    radio cost (promotion + tail, with its own compute time) -- no compression goes below it."""
    p = get_profile(profile)
    return float(sum(p.radio_floor(r["flops"]) for _, rows in _rows(history) for r in rows))


def config_summary(history: History, profiles: Sequence[str]) -> dict:
    """What the planner and the tables need from one run (small, JSON-friendly)."""
    t = history.totals()
    return {"final_accuracy": float(history.final_accuracy), "rounds": len(history.records),
            "accuracy": [float(a) for a in history.accuracy], "bytes_up": int(t["bytes_up"]),
            "bytes_down": int(t["bytes_down"]), "client_flops": int(t["client_flops"]),
            "client_rounds": client_rounds(history),
            "joules": {p: float(price(history, p).total) for p in profiles},
            "cumulative_joules": {p: [float(j) for j in cumulative_joules(history, p)] for p in profiles},
            "radio_floor_joules": {p: radio_floor_joules(history, p) for p in profiles}}


# ----------------------------------------------------------------------------- the planner
def plan_budget(summaries: Mapping[str, Mapping], profile: str, target: float) -> dict | None:
    """The cheapest configuration (among those run) that reached ``target`` accuracy on ``profile``.

    Each configuration is charged the joules it spent up to the first round at or above the
    target (so a run that gets there early is not charged for the rounds after).  Returns
    ``{"config", "round", "joules", "accuracy"}`` or ``None`` when no configuration reached it.
    """
    check_real("target", target, 0.0, 1.0)
    best = None
    for name, s in summaries.items():
        if profile not in s["cumulative_joules"]:
            raise ValueError(f"profile={profile!r} was not priced; valid: {sorted(s['cumulative_joules'])}")
        first = next((i for i, a in enumerate(s["accuracy"]) if a >= target), None)
        if first is None:
            continue
        joules = s["cumulative_joules"][profile][first]
        if best is None or joules < best["joules"]:
            best = {"config": name, "round": first + 1, "joules": float(joules), "accuracy": float(s["accuracy"][first])}
    return best


def budget_planner(summaries, profiles, default_profile: str = "phone-wifi", default_target: float = 0.8,
                   targets=None):
    """Energy-budget planner over cached runs (notebook 06): pick a device profile and a target
    accuracy; it shows the cheapest configuration that reached the target (nothing is retrained).

    ``summaries`` maps a configuration's name to :func:`config_summary`.
    """
    def render(profile_name: str, target_acc: float) -> None:
        choice = plan_budget(summaries, profile_name, target_acc)
        if choice is None:
            print(gettext("no configuration run here reached {target:.0f}% accuracy").format(target=100 * target_acc))
            return
        s = summaries[choice["config"]]
        floor = s["radio_floor_joules"][profile_name] * choice["round"] / s["rounds"]
        print(gettext("cheapest on {profile} to reach {target:.0f}%: {config!r}, round {round}, {joules:.2f} J "
                      "modelled (radio-session floor of those rounds about {floor:.2f} J)").format(
            profile=profile_name, target=100 * target_acc, config=choice["config"], round=choice["round"],
            joules=choice["joules"], floor=floor))
        costs = {name: plan_budget({name: summ}, profile_name, target_acc) for name, summ in summaries.items()}
        for name, c in sorted(costs.items(), key=lambda kv: np.inf if kv[1] is None else kv[1]["joules"]):
            print(f"  {name:24s} " + (gettext("never reached") if c is None else
                                      gettext("{joules:10.2f} J at round {round}").format(joules=c["joules"], round=c["round"])))

    if not widgets_enabled():
        print(gettext("Static view: profile {profile!r}, target {target:.0f}%. "
                      "In JupyterLab the profile and the target are live controls.").format(
            profile=default_profile, target=100 * default_target))
        render(default_profile, default_target)
        return None
    import ipywidgets as widgets

    targets = targets or [round(t, 2) for t in np.arange(0.50, 0.96, 0.01)]
    if default_target not in targets:
        targets = sorted({*targets, default_target})
    output = widgets.Output()
    profile = widgets.Dropdown(options=list(profiles), value=default_profile, description=gettext("profile"))
    target = widgets.SelectionSlider(options=targets, value=default_target, description=gettext("target acc"),
                                     continuous_update=False)

    def show(change=None) -> None:
        with output:
            output.clear_output(wait=True)
            render(profile.value, target.value)

    profile.observe(show, names="value")
    target.observe(show, names="value")
    show()
    return widgets.VBox([widgets.HBox([profile, target]), output])
