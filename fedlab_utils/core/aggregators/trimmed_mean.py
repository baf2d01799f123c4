"""The trimmed mean (Flower's ``FedTrimmedAvg``): per coordinate, drop the ``int(β·n)`` smallest and
largest values and average the rest, unweighted (β in [0, 0.5)).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from torch import nn

from fedlab_utils.compression.wire import Update
from fedlab_utils.core.aggregators.median import sorted_stack
from fedlab_utils.core.training import ClientResult
from fedlab_utils.validation import check_real

__all__ = ["TrimmedMean"]


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
        return {key: sorted_stack(results, key)[cut:n - cut].mean(dim=0) for key in cast(Update, results[0].update)}
