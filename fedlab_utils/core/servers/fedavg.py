"""The server optimizer's contract, :class:`ServerOptimizer`, and plain FedAvg's step
``x ← x + η·Δ`` (η = 1 is McMahan et al.'s FedAvg).  Server optimizers keep state (momentum,
moments) across rounds: :func:`~fedlab_utils.core.loop.run` resets it at the start of a run and a
checkpoint stores it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fedlab_utils.compression.wire import Update
from fedlab_utils.core.training import apply_delta

__all__ = ["ServerOptimizer", "FedAvgServer"]


class ServerOptimizer(Protocol):
    """Turns the aggregated update into the next global state (FedOpt's server step)."""

    def step(self, global_state: Update, update: Update) -> Update: ...


@dataclass
class FedAvgServer:
    """Plain FedAvg: ``global ← global + lr · update`` (``lr=1`` is McMahan et al.'s rule)."""

    lr: float = 1.0

    def step(self, global_state: Update, update: Update) -> Update:
        return apply_delta(global_state, update, self.lr)
