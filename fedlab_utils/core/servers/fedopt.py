"""Server optimizers turn the aggregated update Δ into the next global state.  The FedOpt family
(Reddi et al., ICLR 2021) treats Δ as a pseudo-gradient (a step *downhill*):

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

Server optimizers keep state (momentum, moments) across rounds: :func:`~fedlab_utils.core.loop.run`
resets it at the start of a run and a checkpoint stores it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fedlab_utils.compression.wire import Update
from fedlab_utils.core.training import apply_delta
from fedlab_utils.validation import check_choice, check_real

__all__ = ["FedOpt", "FedAdam", "FedYogi", "FedAdagrad"]


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
        if self.m is None or self.v is None:
            self.m = {k: torch.zeros_like(d) for k, d in update.items()}
            self.v = {k: torch.full_like(d, self.tau ** 2) for k, d in update.items()}
        m, v = self.m, self.v
        direction = {}
        for k, delta in update.items():
            m[k] = self.beta1 * m[k] + (1 - self.beta1) * delta
            sq = delta * delta
            if self.variant == "adagrad":
                v[k] = v[k] + sq
            elif self.variant == "adam":
                v[k] = self.beta2 * v[k] + (1 - self.beta2) * sq
            else:  # yogi: v moves towards Δ² additively, so it shrinks slowly when Δ² drops
                v[k] = v[k] - (1 - self.beta2) * sq * torch.sign(v[k] - sq)
            direction[k] = m[k] / (v[k].sqrt() + self.tau)
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
