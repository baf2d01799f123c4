"""Checks for notebook 01 (pruning).  Each raises ``AssertionError`` with a hint when wrong."""
from __future__ import annotations

import torch

from . import call_safely, expect, passed

__all__ = ["check_global_masks", "check_payload_size"]


def _random_weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # Layers of different scales, as in a real network: global ranking must treat them together.
    return {"0.weight": torch.randn(16, 12, generator=g) * 0.05, "2.weight": torch.randn(10, 16, generator=g) * 0.5,
            "4.weight": torch.randn(3, 10, generator=g)}


def check_global_masks(fn) -> None:
    """``fn(weights, sparsity) -> masks``: global magnitude masks (bool, True = kept).

    Compared with ``fedlab_utils.pruning.magnitude_masks(weights, sparsity, scope='global')``
    on random weights without ties.
    """
    from ..pruning import magnitude_masks

    for seed, sparsity in [(0, 0.5), (1, 0.9), (2, 0.0), (3, 0.75), (4, 0.99)]:
        weights = _random_weights(seed)
        expected = magnitude_masks(weights, sparsity, scope="global")
        got = call_safely(fn, {k: v.clone() for k, v in weights.items()}, sparsity, what="global masks")
        expect(isinstance(got, dict) and set(got) == set(weights),
               f"return a dict with the same keys as `weights` ({sorted(weights)}), got "
               f"{sorted(got) if isinstance(got, dict) else type(got).__name__}")
        total = sum(w.numel() for w in weights.values())
        want_pruned = round(sparsity * total)
        for name in weights:
            expect(isinstance(got[name], torch.Tensor) and got[name].shape == weights[name].shape,
                   f"masks[{name!r}] must be a tensor shaped like the weight {tuple(weights[name].shape)}")
        pruned = sum(int((~got[n].bool()).sum()) for n in weights)
        expect(pruned == want_pruned,
               f"sparsity={sparsity}: you pruned {pruned} of {total} weights, expected exactly "
               f"round(sparsity·total) = {want_pruned}. Hint: rank |w| over *all* layers together "
               f"(torch.cat of the flattened weights) and take the k smallest.")
        for name in weights:
            expect(torch.equal(got[name].bool(), expected[name]),
                   f"sparsity={sparsity}: the mask of {name!r} prunes different weights than global magnitude "
                   f"pruning. Hint: one threshold for all layers -- the k-th smallest |w| overall -- not one per "
                   f"layer; keep weights with |w| above it.")
    passed("global magnitude masks")


def check_payload_size(fn) -> None:
    """``fn(mask) -> int``: bytes ``SparseCodec`` sends for an update whose nonzeros are ``mask``."""
    from ..pruning import SparseCodec

    codec = SparseCodec()
    g = torch.Generator().manual_seed(0)
    cases = [(1000, 0), (1000, 5), (1000, 60), (1000, 300), (1000, 1000), (50_890, 5_089), (50_890, 100), (7, 3)]
    for numel, nnz in cases:
        mask = torch.zeros(numel, dtype=torch.bool)
        mask[torch.randperm(numel, generator=g)[:nnz]] = True
        values = (torch.rand(numel, generator=g) + 0.5) * mask  # nonzero exactly where mask is True
        actual = len(codec.encode({"w": values}))
        got = call_safely(fn, mask.clone(), what="payload size")
        expect(isinstance(got, int) and not isinstance(got, bool),
               f"return an int (bytes), got {type(got).__name__}")
        expect(got == actual,
               f"numel={numel}, nnz={nnz}: you said {got} bytes, the codec sends {actual} ({codec.last_format} "
               f"format). Hint: compute all three sizes -- dense 1+4N; bitmask 5+ceil(N/8)+4k; indices "
               f"5+ceil(k·w/8)+4k with w=(N-1).bit_length() bits -- and return the smallest.")
    passed("sparse payload size")
