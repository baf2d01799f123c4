"""Checks for lesson 05 (model parallelism and split learning).  Each raises ``AssertionError``
with a hint when the answer is wrong."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from . import call_safely, expect, expect_close, passed

__all__ = ["check_bubble_fraction", "check_choose_cut", "reference_choose_cut"]


def check_bubble_fraction(bubble_fraction: Callable[[int, int], float]) -> None:
    """``bubble_fraction(S, M)`` must give GPipe's idle share with equal stage times."""
    hint = ("Count clock ticks: a step with S stages and M micro-batches lasts M+S−1 ticks per pass, "
            "and each stage is busy for M of them.")
    for stages, micro in [(1, 1), (1, 8), (2, 1), (2, 4), (3, 4), (4, 16), (8, 32)]:
        got = call_safely(bubble_fraction, stages, micro, what=f"bubble_fraction({stages}, {micro})")
        expect_close(got, (stages - 1) / (micro + stages - 1), f"bubble_fraction(S={stages}, M={micro})",
                     rel=1e-9, abs_=1e-12, hint=hint)
    passed("bubble_fraction")


def reference_choose_cut(model: nn.Sequential, input_shape: Sequence[int], flop_budget: float) -> int | None:
    """Among cuts whose client FLOPs per sample fit ``flop_budget``, the one with the smallest
    activation payload per sample (ties: fewer client layers); ``None`` if none fits."""
    from ..parallel import cut_profile

    fitting = [c for c in cut_profile(model, input_shape) if c.client_flops_per_sample <= flop_budget]
    return min(fitting, key=lambda c: (c.activation_bytes_per_sample, c.cut)).cut if fitting else None


def check_choose_cut(choose_cut: Callable, model: nn.Sequential, input_shape: Sequence[int]) -> None:
    """``choose_cut(model, input_shape, flop_budget)`` must match the rule of :func:`reference_choose_cut`
    for a tight budget, a generous one and one that nothing fits."""
    from ..parallel import cut_profile

    profile = cut_profile(model, input_shape)
    smallest = min(c.client_flops_per_sample for c in profile)
    largest = max(c.client_flops_per_sample for c in profile)
    hint = ("Use cut_profile(model, input_shape): keep the cuts with client_flops_per_sample <= flop_budget, "
            "then take the smallest activation_bytes_per_sample (ties: the smaller cut); return None if none fits.")
    for budget in (smallest - 1, smallest, (smallest + largest) / 2, largest):
        want = reference_choose_cut(model, input_shape, budget)
        got = call_safely(choose_cut, model, input_shape, budget, what=f"choose_cut(budget={budget:.0f})")
        expect(got == want, f"choose_cut with a budget of {budget:,.0f} FLOPs/sample returned {got!r}, "
                            f"expected {want!r}. {hint}")
    passed("choose_cut")
