"""Checks for notebook 02 (compression).  Each raises ``AssertionError`` with a hint when wrong."""
from __future__ import annotations

import math

import torch

from . import call_safely, expect, passed

__all__ = ["check_stochastic_round", "check_topk_payload_bytes"]


def check_stochastic_round(fn) -> None:
    """``fn(x, generator) -> tensor``: round each value down or up at random, unbiased.

    Checked: same shape; every output is ``floor(x)`` or ``ceil(x)``; integers stay put; both
    neighbours occur; and the mean of many draws matches ``x`` within a Hoeffding bound.
    """
    what = "stochastic_round"
    x = torch.tensor([0.5, -0.5, 2.25, -1.75, 3.0, 0.1, -0.9, 7.999])
    draws = 4000
    generator = torch.Generator().manual_seed(1234)
    out = call_safely(fn, x.repeat(draws, 1), generator, what=what)
    expect(isinstance(out, torch.Tensor), f"{what}: return a tensor, got {type(out).__name__}")
    expect(tuple(out.shape) == (draws, len(x)),
           f"{what}: the output must have the input's shape {(draws, len(x))}, got {tuple(out.shape)}")
    out = out.float()
    expect(bool(torch.isfinite(out).all()), f"{what}: the output has NaN or inf values")
    lower, upper = torch.floor(x), torch.ceil(x)
    on_grid = (out == lower) | (out == upper)
    expect(bool(on_grid.all()), f"{what}: every value must round to floor(x) or ceil(x) -- e.g. 2.25 becomes 2 or 3, "
                                "never anything else")
    expect(bool((out[:, 4] == 3.0).all()), f"{what}: an integer (3.0) must stay exactly where it is")
    expect(bool((out[:, 0] == 0).any() and (out[:, 0] == 1).any()),
           f"{what}: 0.5 should sometimes round down and sometimes up. Deterministic rounding "
           "(torch.round) is biased; add uniform noise u ~ U[0, 1) before taking the floor")
    # Hoeffding: each draw lies in an interval of width 1, so P(|mean − x| > t) ≤ 2·exp(−2·N·t²).
    # t = sqrt(ln(2/δ) / (2N)) with δ = 1e-9 per value.
    tolerance = math.sqrt(math.log(2 / 1e-9) / (2 * draws))
    bias = (out.mean(0) - x).abs()
    worst = int(bias.argmax())
    expect(bool((bias <= tolerance).all()),
           f"{what}: biased -- over {draws} draws the mean of round({x[worst].item():g}) is "
           f"{out[:, worst].mean().item():.3f} (tolerance {tolerance:.3f}). Round up with probability "
           "x − floor(x): floor(x + u) with u ~ U[0, 1) does exactly that")
    passed(what)


def check_topk_payload_bytes(fn) -> None:
    """``fn(num_params, fraction) -> int``: bytes of a top-k payload with fp32 values and 16-bit indices.

    ``k = ceil(fraction · num_params)``; each kept entry costs 4 bytes of value plus 2 of index.
    The answer is also compared with ``len()`` of a real :class:`TopKCodec` payload.
    """
    from ..compression import TopKCodec

    what = "topk_payload_bytes"
    cases = [(50_890, 0.01), (50_890, 0.001), (40_000, 0.05), (65_536, 0.1), (33_000, 0.0005)]
    for n, fraction in cases:
        got = call_safely(fn, n, fraction, what=what)
        expect(isinstance(got, int) or (isinstance(got, float) and float(got).is_integer()),
               f"{what}({n}, {fraction}): return a whole number of bytes, got {got!r}")
        k = max(1, math.ceil(fraction * n))
        expected = 6 * k
        expect(int(got) != 4 * k, f"{what}({n}, {fraction}): {got} counts only the values -- the receiver also "
                                  "needs each value's index (2 bytes at 16 bits)")
        expect(int(got) != 12 * k, f"{what}({n}, {fraction}): {got} uses 8-byte (int64) indices; 16 bits are enough "
                                   "to address up to 65,536 parameters")
        expect(int(got) == expected, f"{what}({n}, {fraction}): got {got}, expected {expected}. k = ceil(fraction "
                                     "· num_params) entries, each 4 bytes (fp32 value) + 2 bytes (16-bit index)")
        # The codec picks ceil(log2 n) = 16 bits for these sizes, so its real payload must agree.
        update = {"w": torch.randn(n, generator=torch.Generator().manual_seed(n))}
        real = len(TopKCodec(fraction).encode(update))
        expect(real == expected, f"internal: TopKCodec sent {real} bytes, formula says {expected}")
    passed(what)
