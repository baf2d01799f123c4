"""FedAvgM, server momentum (Hsu et al. 2019): ``v ← β·v + Δ;  x ← x + η·v``.  β = 0 is FedAvg
exactly.  Lesson 04 introduces it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fedlab_utils.compression.wire import Update
from fedlab_utils.core.training import apply_delta
from fedlab_utils.validation import check_real

__all__ = ["fedavgm_step", "FedAvgM"]


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
