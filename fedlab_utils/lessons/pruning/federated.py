"""Federated pruning: the server prunes the global model on a schedule while clients train under its mask.

PruneFL-style pruning *during* training, built only from the loop's hooks (no second loop):

* :class:`PruningSchedule` -- when the server raises sparsity, and to what (one-shot, linear, or
  Zhu & Gupta's cubic schedule);
* :class:`MaskState` -- the one mask the server writes and every client reads;
* :class:`MaskedTraining` -- the client side, a ``ClientTransform``: train under the mask and
  send zeros where it is False (so :class:`~fedlab_utils.compression.codecs.SparseCodec` can drop them);
* :class:`PruningServer` -- the server side, a ``ServerOptimizer`` wrapper that recomputes the
  mask from the new global model's magnitudes when the schedule says so;
* :class:`FederatedPruning` -- bundles them: ``run(..., **fp.hooks())``, then turns the run's
  ledger into nonzero FLOPs and the joules sparse hardware would spend.

The masks themselves (magnitude ranking, applying, measuring) are :mod:`fedlab_utils.lessons.pruning.masks`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from fedlab_utils.compression.wire import Update
from fedlab_utils.core.checkpoint import load_object_state, object_state, reset_state
from fedlab_utils.core.history import History
from fedlab_utils.core.servers.fedavg import FedAvgServer
from fedlab_utils.core.training import ClientTransform
from fedlab_utils.ledger.energy import Energy, get_profile
from fedlab_utils.ledger.flops import training_flops_per_sample
from fedlab_utils.lessons.pruning.masks import (
    SCOPES,
    Masks,
    apply_masks,
    check_sparsity,
    magnitude_masks,
    mask_state,
    prunable_names,
    prunable_weights,
    sparsity_of,
    weight_flops,
)
from fedlab_utils.validation import check_choice, check_int, check_real

__all__ = ["SCHEDULES", "PruningSchedule", "MaskState", "MaskedTraining", "PruningServer", "FederatedPruning",
           "RULES_01", "RELATIONS_01"]

SCHEDULES = ("oneshot", "linear", "cubic")


@dataclass(frozen=True)
class PruningSchedule:
    """When the server raises sparsity, and to what (PruneFL-style: prune during training).

    After every ``every``-th round up to round ``end``, the target in force becomes

    * ``'oneshot'``: ``target`` at once (after round ``every``);
    * ``'linear'``:  ``initial + (target − initial)·t``;
    * ``'cubic'``:   ``target + (initial − target)·(1 − t)³`` (Zhu & Gupta 2017: prune fast
      early while many weights are redundant, slowly near the target);

    with ``t = min(1, round / end)``.  Rounds after ``end`` fine-tune at ``target``.
    """

    target: float
    kind: str = "cubic"
    every: int = 2
    end: int = 10
    initial: float = 0.0

    def __post_init__(self) -> None:
        check_sparsity("sparsity", self.target)
        check_choice("schedule", self.kind, SCHEDULES)
        check_int("prune_every", self.every, 1)
        check_int("prune_end", self.end, 1)
        check_real("initial", self.initial, 0.0, self.target)
        if self.every > self.end:
            raise ValueError(f"prune_every={self.every} is larger than prune_end={self.end}; "
                             f"valid: 1 <= prune_every <= prune_end")

    def sparsity_at(self, round_idx: int) -> float:
        """Sparsity in force after the server step of round ``round_idx`` (1-based)."""
        updates = [r for r in range(self.every, min(round_idx, self.end) + 1, self.every)]
        if not updates:
            return self.initial
        last = self.end if round_idx >= self.end else updates[-1]
        if self.kind == "oneshot":
            return self.target
        t = min(1.0, last / self.end)
        if self.kind == "linear":
            return self.initial + (self.target - self.initial) * t
        return self.target + (self.initial - self.target) * (1.0 - t) ** 3

    def steps(self, rounds: int) -> list[tuple[int, float]]:
        """``[(round, sparsity)]`` at each round where the sparsity changes."""
        out, current = [], self.initial
        for r in range(1, rounds + 1):
            s = self.sparsity_at(r)
            if s != current:
                out.append((r, s))
                current = s
        return out


class MaskState:
    """The one mask object the server writes and every client reads.

    ``log`` holds ``(round, sparsity)`` each time the mask changed; ``round_densities`` the
    per-layer density each round trained under (for nonzero-FLOP accounting).
    """

    def __init__(self, masks: Masks):
        self.initial = {k: v.clone() for k, v in masks.items()}
        self.reset()

    def reset(self) -> None:
        """Back to the masks it was built with, with an empty log (a new run starts)."""
        self.masks = {k: v.clone() for k, v in self.initial.items()}
        self.log: list[tuple[int, float]] = [(0, self.sparsity)]
        self.round_densities: dict[int, dict[str, float]] = {}

    def state_dict(self) -> dict:
        """Masks, log and per-round densities: tensors, numbers and dicts only (``weights_only`` loads it)."""
        return {"masks": {k: v.clone() for k, v in self.masks.items()}, "log": [[r, s] for r, s in self.log],
                "round_densities": {int(r): dict(d) for r, d in self.round_densities.items()}}

    def load_state_dict(self, state: dict) -> None:
        if set(state["masks"]) != set(self.initial):
            raise ValueError(f"the saved masks cover {sorted(state['masks'])}, this MaskState {sorted(self.initial)}")
        self.masks = {k: state["masks"][k].to(torch.bool).clone() for k in self.initial}
        self.log = [(int(r), float(s)) for r, s in state["log"]]
        self.round_densities = {int(r): {n: float(d) for n, d in dens.items()}
                                for r, dens in state["round_densities"].items()}

    @property
    def names(self) -> list[str]:
        return list(self.masks)

    @property
    def sparsity(self) -> float:
        return sparsity_of(self.masks)

    def update(self, masks: Masks, round_idx: int) -> None:
        for name, mask in masks.items():
            if bool((mask & ~self.masks[name]).any()):
                raise ValueError(f"new mask of {name!r} revives pruned weights; masks may only grow sparser")
        self.masks = {k: v.clone() for k, v in masks.items()}
        self.log.append((round_idx, self.sparsity))

    def densities(self) -> dict[str, float]:
        return {n: float(m.float().mean()) for n, m in self.masks.items()}

    def __repr__(self) -> str:
        return f"MaskState({len(self.masks)} layers, sparsity {100 * self.sparsity:.1f}%)"


class MaskedTraining(ClientTransform):
    """Client side of federated pruning: train under the broadcast mask.

    ``on_receive`` applies the mask to the received model, ``after_step`` re-zeroes pruned
    weights after every optimizer step (so momentum or weight decay cannot revive them), and
    ``on_update`` masks the update before it is encoded, so the uplink carries zeros there.
    """

    def __init__(self, state: MaskState):
        self.state = state

    def on_receive(self, model: nn.Module, client_id: int, round_idx: int) -> None:
        apply_masks(model, self.state.masks)
        self.state.round_densities.setdefault(round_idx, self.state.densities())

    def after_step(self, model: nn.Module) -> None:
        apply_masks(model, self.state.masks)

    def on_update(self, update: Update, client_id: int) -> Update:
        return mask_state(update, self.state.masks)

    def __repr__(self) -> str:
        return f"MaskedTraining({self.state!r})"


class PruningServer:
    """Server side of federated pruning: a ``ServerOptimizer`` wrapper.

    ``step`` lets ``inner`` (plain FedAvg by default) apply the aggregated update, then, when
    the :class:`PruningSchedule` raises the target, recomputes the mask from the *new global
    model's* magnitudes (weights already pruned stay pruned), stores it in the shared
    :class:`MaskState`, and returns the masked global state -- so aggregation keeps pruned
    weights at zero.  It counts rounds itself (one ``step`` per round), and holds the run's
    pruning state: ``run`` resets it at the start and saves it in checkpoints.
    """

    def __init__(self, state: MaskState, schedule: PruningSchedule, scope: str = "global", inner=None):
        check_choice("scope", scope, SCOPES)
        self.state, self.schedule, self.scope = state, schedule, scope
        self.inner = inner or FedAvgServer()
        self.round = 0
        self.target = schedule.initial  # the sparsity currently asked for

    def reset(self) -> None:
        """A new run: round 0, the schedule's initial target, the mask as built, the inner optimizer reset.

        ``run`` calls it at the start, so one :class:`FederatedPruning` can drive several runs."""
        self.round, self.target = 0, self.schedule.initial
        self.state.reset()
        reset_state(self.inner)

    def state_dict(self) -> dict:
        """Round, target, the shared :class:`MaskState` and the inner optimizer's state, for a checkpoint."""
        return {"round": self.round, "target": self.target, "mask_state": self.state.state_dict(),
                "inner": object_state(self.inner, "inner")}

    def load_state_dict(self, state: dict) -> None:
        self.round, self.target = int(state["round"]), float(state["target"])
        self.state.load_state_dict(state["mask_state"])
        load_object_state(self.inner, state["inner"], "inner")

    def step(self, global_state: Update, update: Update) -> Update:
        new = self.inner.step(global_state, update)
        self.round += 1
        target = self.schedule.sparsity_at(self.round)
        if target > self.target:
            self.target = target
            weights = {n: new[n] for n in self.state.names}
            self.state.update(magnitude_masks(weights, target, self.scope, previous=self.state.masks), self.round)
        return mask_state(new, self.state.masks)

    def __repr__(self) -> str:
        s = self.schedule
        return (f"PruningServer({s.kind} to {100 * s.target:.0f}% every {s.every} rounds until round {s.end}, "
                f"{self.scope}, inner={self.inner!r})")


@dataclass
class FederatedPruning:
    """Server-scheduled magnitude pruning in the ordinary loop: ``run(..., **fp.hooks())``.

    ``hooks()`` starts a fresh :class:`MaskState` (dense) and returns the ``transform`` and
    ``server`` that share it; call it once per run.  Afterwards ``state`` holds the final mask
    and its log, and :meth:`nonzero_flops` turns a run's ledger into nonzero FLOPs.
    """

    model: nn.Module = field(repr=False)
    schedule: PruningSchedule
    scope: str = "global"
    names: Sequence[str] | None = None
    state: MaskState | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        check_choice("scope", self.scope, SCOPES)
        self.names = prunable_names(self.model) if self.names is None else list(self.names)
        prunable_weights(self.model, self.names)  # validates the names

    def hooks(self, inner=None) -> dict:
        """``{'transform': MaskedTraining, 'server': PruningServer}`` around a fresh, dense mask."""
        weights = prunable_weights(self.model, self.names)
        self.state = MaskState({n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()})
        return {"transform": MaskedTraining(self.state),
                "server": PruningServer(self.state, self.schedule, self.scope, inner)}

    def nonzero_fractions(self, history: History, input_shape: tuple[int, ...]) -> list[float]:
        """Per round, the share of a client's dense training FLOPs that sparse hardware would still
        execute under the mask that round trained with (1.0 while the model is dense)."""
        if self.state is None:
            raise ValueError("no run yet: pass **fp.hooks() to run(...) first")
        per_layer = weight_flops(self.model, input_shape)
        dense = training_flops_per_sample(self.model, input_shape)
        out = []
        for record in history.records:
            densities = self.state.round_densities.get(record.round, {})
            skipped = sum(f * (1.0 - densities.get(n, 1.0)) for n, f in per_layer.items())
            out.append((dense - skipped) / dense)
        return out

    def nonzero_flops(self, history: History, input_shape: tuple[int, ...]) -> list[int]:
        """Per round, the client FLOPs sparse hardware would execute (the ledger's are dense)."""
        fractions = self.nonzero_fractions(history, input_shape)
        return [int(round(r.client_flops * f)) for r, f in zip(history.records, fractions)]

    def sparse_energy(self, history: History, input_shape: tuple[int, ...]) -> Energy:
        """Modelled joules if the devices skipped the pruned multiplies (same bytes as the run).

        Priced like the run itself, one client-round at a time (each client's row of each
        record, with its FLOPs scaled to nonzero), on ``get_profile(history.profile)``, so the
        radio's per-session costs are counted once per client and round.
        """
        profile = get_profile(history.profile)
        total = Energy()
        for record, fraction in zip(history.records, self.nonzero_fractions(history, input_shape)):
            if record.client_rows:
                for row in record.client_rows:
                    total += profile.energy(row["flops"] * fraction, row["bytes_up"], row["bytes_down"])
            else:  # a History without per-client rows: split the round's totals over its clients
                total += profile.energy_for(record.client_flops * fraction, record.bytes_up, record.bytes_down,
                                            max(1, len(record.clients)))
        return total


# ----------------------------------------------------------------------------- lesson 01's parameters
def _optional_round(name: str, value: object) -> int | None:
    """``None`` (the lesson picks a default) or a round number ≥ 1."""
    return None if value is None else check_int(name, value, 1)


def _schedule_within_rounds(values: dict[str, object]) -> None:
    """The server raises sparsity every ``prune_every`` rounds and reaches the target by ``prune_end``."""
    rounds, every, end = values["rounds"], values["prune_every"], values["prune_end"]
    if every > rounds:
        raise ValueError(f"prune_every={every} is more than rounds={rounds}: the server raises sparsity every "
                         "prune_every rounds; valid: prune_every in [1, rounds], so lower prune_every or raise rounds")
    if end is not None and not every <= end <= rounds:
        raise ValueError(f"prune_end={end} is out of range; valid: None or a round in [prune_every, rounds] = "
                         f"[{every}, {rounds}]")


def _rules_01() -> tuple[dict, list]:
    from fedlab_utils.core.training import OPTIMIZERS
    from fedlab_utils.data import DATASETS, PARTITIONS
    from fedlab_utils.ledger.energy import PROFILES
    from fedlab_utils.validation import choice, fraction, integer, optional_path, real

    rules = {
        "seed": integer(0), "dataset": choice(DATASETS), "data_dir": optional_path(),
        "model_name": choice(("mlp", "cnn")), "num_clients": integer(1), "fraction": fraction(),
        "rounds": integer(1), "local_epochs": integer(1), "batch_size": integer(1),
        "lr": real(0, low_inclusive=False), "optimizer": choice(OPTIMIZERS), "partition_name": choice(PARTITIONS),
        "alpha": real(0, low_inclusive=False), "sparsity": check_sparsity, "schedule": choice(SCHEDULES),
        "prune_every": integer(1), "prune_end": _optional_round, "scope": choice(SCOPES),
        "structured": check_sparsity, "finetune_rounds": integer(1),
        "article_threshold": real(0, low_inclusive=False), "energy_profile": choice(PROFILES),
        "results_path": optional_path(),
    }
    return rules, [_schedule_within_rounds]


#: Lesson 01's parameters and what each may be, and the relations between them:
#: ``check_parameters(globals(), RULES_01, RELATIONS_01)`` in the notebook's setup cell.
RULES_01, RELATIONS_01 = _rules_01()
