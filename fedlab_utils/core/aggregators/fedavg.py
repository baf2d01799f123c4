"""FedAvg's aggregation (McMahan et al. 2017): the updates weighted by each client's number of
training samples.  Lesson 00 introduces it; every other aggregator has the same signature,
:data:`Aggregate`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import nn

from fedlab_utils.compression.wire import Update
from fedlab_utils.core.training import ClientResult

__all__ = ["Aggregate", "weighted_average", "fedavg_aggregate"]

#: An aggregator: the round's surviving client results, the global model and the round -> one update.
Aggregate = Callable[[list[ClientResult], nn.Module, int], Update]


def weighted_average(updates: Sequence[Update], weights: Sequence[float]) -> Update:
    """Σ w_i · u_i / Σ w_i key by key -- FedAvg's aggregation with w_i = client i's sample count."""
    if len(updates) == 0 or len(updates) != len(weights):
        raise ValueError(f"need one weight per update; got {len(updates)} updates and {len(weights)} weights")
    total = float(sum(weights))
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError(f"weights={list(weights)} must be non-negative with a positive sum")
    return {k: cast(torch.Tensor, sum(float(w) / total * u[k] for u, w in zip(updates, weights))) for k in updates[0]}


def fedavg_aggregate(results: list[ClientResult], global_model: nn.Module, round_idx: int) -> Update:
    """FedAvg: the updates averaged with weights = each client's real number of training samples."""
    return weighted_average([cast(Update, r.update) for r in results], [r.num_samples for r in results])


#: Declared capability: this aggregate is exactly ``weighted_average`` of the updates by their
#: clients' samples, so FedAvg's stacked path may compute it block by block
#: (:mod:`fedlab_utils.core.stacked`).  An aggregator of your own declares it the same way.
setattr(fedavg_aggregate, "weighted_by_samples", True)
