"""The server's half of a round: aggregators (many updates to one) and server optimizers (one step).

Aggregators take the surviving :class:`~fedlab_utils.training.ClientResult` objects of a round and
return one update:

* :func:`fedavg_aggregate` -- FedAvg: updates weighted by each client's number of training samples;
* :class:`Median` -- the coordinate-wise median of the updates, unweighted (Flower's ``FedMedian``,
  Yin et al. 2018): an even number of clients averages the two middle values, as ``np.median`` does;
* :class:`TrimmedMean` -- per coordinate, drop the ``int(β·n)`` smallest and largest values and
  average the rest, unweighted (Flower's ``FedTrimmedAvg``, β in [0, 0.5)).

Flower's strategies aggregate parameters, these aggregate updates ``Δ_i = w_i − x``; with the same
global ``x`` for every client, ``median(x + Δ_i) = x + median(Δ_i)`` and likewise for trimmed means.

Server optimizers turn the aggregated update Δ into the next global state.  The FedOpt family
(Reddi et al., ICLR 2021) treats Δ as a pseudo-gradient (a step *downhill*):

* :class:`FedAvgServer`: ``x ← x + η·Δ`` (η = 1 is McMahan et al.'s FedAvg);
* :class:`FedAvgM` (Hsu et al. 2019): ``v ← β·v + Δ;  x ← x + η·v``.  β = 0 is FedAvg exactly;
* :class:`FedOpt` -- FedAdam, FedYogi, FedAdagrad (Reddi et al., Algorithm 2)::

      m ← β1·m + (1−β1)·Δ
      v ← v + Δ²                               (FedAdagrad)
      v ← β2·v + (1−β2)·Δ²                     (FedAdam)
      v ← v − (1−β2)·Δ²·sign(v − Δ²)           (FedYogi)
      x ← x + η·m / (√v + τ)

  with ``m`` starting at 0 and ``v`` at τ² (the paper asks for v₋₁ ≥ τ²), no bias correction.
  FedAdam and FedYogi differ only while Δ² < v: then Adam's ``v`` shrinks by the factor β2 every
  round, Yogi's by at most (1−β2)·Δ².  While Δ² > v (always in the first rounds, since v starts
  at τ²) Yogi's ``v`` is Adam's plus (1−β2)·v, so with β2 = 0.99 their steps differ by well under
  1 % until the updates shrink.

Server optimizers keep state (momentum, moments) across rounds: :func:`~fedlab_utils.federated.run`
resets it at the start of a run and a checkpoint stores it.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from .training import ClientResult, apply_delta
from .validation import check_choice, check_real
from .wire import Update

__all__ = ["ServerOptimizer", "FedAvgServer", "FedAvgM", "FedOpt", "FedAdam", "FedYogi", "FedAdagrad", "fedavgm_step",
           "SERVERS", "make_server", "Aggregate", "weighted_average", "fedavg_aggregate", "Median", "TrimmedMean"]

SERVERS = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad")

Aggregate = Callable[[list[ClientResult], nn.Module, int], Update]


# ----------------------------------------------------------------------------- aggregators
def weighted_average(updates: Sequence[Update], weights: Sequence[float]) -> Update:
    """Σ w_i · u_i / Σ w_i key by key -- FedAvg's aggregation with w_i = client i's sample count."""
    if len(updates) == 0 or len(updates) != len(weights):
        raise ValueError(f"need one weight per update; got {len(updates)} updates and {len(weights)} weights")
    total = float(sum(weights))
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError(f"weights={list(weights)} must be non-negative with a positive sum")
    return {k: sum(float(w) / total * u[k] for u, w in zip(updates, weights)) for k in updates[0]}


def fedavg_aggregate(results: list[ClientResult], global_model: nn.Module, round_idx: int) -> Update:
    """FedAvg: the updates averaged with weights = each client's real number of training samples."""
    return weighted_average([r.update for r in results], [r.num_samples for r in results])


def _sorted_stack(results: list[ClientResult], key: str) -> torch.Tensor:
    return torch.stack([r.update[key] for r in results]).sort(dim=0).values


@dataclass(frozen=True)
class Median:
    """Coordinate-wise median of the clients' updates (Flower's ``FedMedian``); sample counts are ignored."""

    name = "median"

    def __call__(self, results: list[ClientResult], global_model: nn.Module, round_idx: int) -> Update:
        n, out = len(results), {}
        for key in results[0].update:
            s = _sorted_stack(results, key)
            out[key] = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
        return out


@dataclass(frozen=True)
class TrimmedMean:
    """Per coordinate, the mean of the updates left after dropping the ``int(beta·n)`` smallest and the
    ``int(beta·n)`` largest (Flower's ``FedTrimmedAvg``); sample counts are ignored."""

    beta: float = 0.2

    def __post_init__(self) -> None:
        check_real("trimmed_mean beta", self.beta, 0.0, 0.5, high_inclusive=False)

    @property
    def name(self) -> str:
        return f"trimmed_mean:{self.beta:g}"

    def __call__(self, results: list[ClientResult], global_model: nn.Module, round_idx: int) -> Update:
        n = len(results)
        cut = int(self.beta * n)
        return {key: _sorted_stack(results, key)[cut:n - cut].mean(dim=0) for key in results[0].update}


# ----------------------------------------------------------------------------- server optimizers
class ServerOptimizer(Protocol):
    """Turns the aggregated update into the next global state (FedOpt's server step)."""

    def step(self, global_state: Update, update: Update) -> Update: ...


@dataclass
class FedAvgServer:
    """Plain FedAvg: ``global ← global + lr · update`` (``lr=1`` is McMahan et al.'s rule)."""

    lr: float = 1.0

    def step(self, global_state: Update, update: Update) -> Update:
        return apply_delta(global_state, update, self.lr)


def fedavgm_step(global_state: Update, update: Update, velocity: Update | None, lr: float = 1.0,
                 momentum: float = 0.9) -> tuple[Update, Update]:
    """One FedAvgM server step: ``v ← momentum·v + Δ``, ``x ← x + lr·v``; returns ``(x, v)``.

    ``velocity=None`` means the first round (v starts at 0).  With ``momentum=0`` this is
    FedAvg's ``x ← x + lr·Δ`` bit for bit.
    """
    if velocity is None:
        velocity = {k: torch.zeros_like(v) for k, v in update.items()}
    velocity = {k: momentum * velocity[k] + update[k] for k in update}
    return apply_delta(global_state, velocity, lr), velocity


@dataclass
class FedAvgM:
    """Server momentum (Hsu et al. 2019): ``v ← β·v + Δ``, ``x ← x + η·v``.  β=0 is FedAvg."""

    lr: float = 1.0
    momentum: float = 0.9
    velocity: Update | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check_real("server_lr", self.lr, 0.0, low_inclusive=False)
        check_real("server_momentum", self.momentum, 0.0, 1.0, high_inclusive=False)

    def step(self, global_state: Update, update: Update) -> Update:
        new_state, self.velocity = fedavgm_step(global_state, update, self.velocity, self.lr, self.momentum)
        return new_state

    def reset(self) -> None:
        self.velocity = None

    def state_dict(self) -> dict:
        """The momentum buffer, for a checkpoint (``None`` before the first step)."""
        return {"velocity": self.velocity}

    def load_state_dict(self, state: dict) -> None:
        self.velocity = state["velocity"]


@dataclass
class FedOpt:
    """Adaptive server optimizers of Reddi et al. (ICLR 2021), Algorithm 2.

    ``variant`` is ``'adam'``, ``'yogi'`` or ``'adagrad'``; ``tau`` (τ) bounds the adaptivity:
    the step per coordinate is at most about η·|m|/τ.  The paper's defaults: β1 = 0.9,
    β2 = 0.99, τ = 1e-3; η is tuned per task (their grid runs from 1e-3 to 1).
    """

    lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    variant: str = "adam"
    m: Update | None = field(default=None, repr=False)
    v: Update | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check_real("server_lr", self.lr, 0.0, low_inclusive=False)
        check_real("beta1", self.beta1, 0.0, 1.0, high_inclusive=False)
        check_real("beta2", self.beta2, 0.0, 1.0, high_inclusive=False)
        check_real("tau", self.tau, 0.0, low_inclusive=False)
        check_choice("variant", self.variant, ("adam", "yogi", "adagrad"))

    def step(self, global_state: Update, update: Update) -> Update:
        if self.m is None:
            self.m = {k: torch.zeros_like(d) for k, d in update.items()}
            self.v = {k: torch.full_like(d, self.tau ** 2) for k, d in update.items()}
        direction = {}
        for k, delta in update.items():
            self.m[k] = self.beta1 * self.m[k] + (1 - self.beta1) * delta
            sq = delta * delta
            if self.variant == "adagrad":
                self.v[k] = self.v[k] + sq
            elif self.variant == "adam":
                self.v[k] = self.beta2 * self.v[k] + (1 - self.beta2) * sq
            else:  # yogi: v moves towards Δ² additively, so it shrinks slowly when Δ² drops
                self.v[k] = self.v[k] - (1 - self.beta2) * sq * torch.sign(self.v[k] - sq)
            direction[k] = self.m[k] / (self.v[k].sqrt() + self.tau)
        return apply_delta(global_state, direction, self.lr)

    def reset(self) -> None:
        self.m = self.v = None

    def state_dict(self) -> dict:
        """The moment estimates m and v, for a checkpoint (``None`` before the first step)."""
        return {"m": self.m, "v": self.v}

    def load_state_dict(self, state: dict) -> None:
        self.m, self.v = state["m"], state["v"]


def FedAdam(lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> FedOpt:
    """FedAdam (Reddi et al. 2021): v ← β2·v + (1−β2)·Δ²."""
    return FedOpt(lr, beta1, beta2, tau, "adam")


def FedYogi(lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> FedOpt:
    """FedYogi (Reddi et al. 2021): v ← v − (1−β2)·Δ²·sign(v − Δ²)."""
    return FedOpt(lr, beta1, beta2, tau, "yogi")


def FedAdagrad(lr: float = 0.01, beta1: float = 0.9, tau: float = 1e-3) -> FedOpt:
    """FedAdagrad (Reddi et al. 2021): v ← v + Δ²."""
    return FedOpt(lr, beta1, 0.99, tau, "adagrad")


def make_server(name: str, lr: float | None = None, **kwargs):
    """A fresh server optimizer by name (``SERVERS``); ``lr=None`` takes the class default."""
    check_choice("server", name, SERVERS)
    factory = {"fedavg": FedAvgServer, "fedavgm": FedAvgM, "fedadam": FedAdam, "fedyogi": FedYogi,
               "fedadagrad": FedAdagrad}[name]
    return factory(**({} if lr is None else {"lr": lr}), **kwargs)
