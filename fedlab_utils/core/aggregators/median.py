"""The coordinate-wise median of the updates (Flower's ``FedMedian``, Yin et al. 2018), robust to a
minority of outlying clients.  An even number of clients averages the two middle values, as
``np.median`` does.  Flower's strategies aggregate parameters, these aggregate updates
``Δ_i = w_i − x``; with the same global ``x`` for every client, ``median(x + Δ_i) = x + median(Δ_i)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from fedlab_utils.compression.wire import Update
from fedlab_utils.core.training import ClientResult

__all__ = ["Median", "sorted_stack"]


def sorted_stack(results: list[ClientResult], key: str) -> torch.Tensor:
    return torch.stack([cast(Update, r.update)[key] for r in results]).sort(dim=0).values


@dataclass(frozen=True)
class Median:
    """Coordinate-wise median of the clients' updates (Flower's ``FedMedian``); sample counts are ignored."""

    name = "median"

    def __call__(self, results: list[ClientResult], global_model: nn.Module, round_idx: int) -> Update:
        n, out = len(results), {}
        for key in cast(Update, results[0].update):
            s = sorted_stack(results, key)
            out[key] = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
        return out
