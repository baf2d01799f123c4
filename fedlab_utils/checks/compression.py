"""Checks for notebook 02 (compression).  Each raises ``AssertionError`` with a hint when wrong."""
from __future__ import annotations

import math

import torch

from ..i18n import gettext
from . import call_safely, expect, expect_ratio_within, passed

__all__ = ["check_quantize", "check_stochastic_round", "check_error_feedback_step",
           "check_separable_cost", "check_topk_ratio_prediction"]


def _quantize_cases(seed: int | None) -> list[tuple[torch.Tensor, int]]:
    """(tensor, bits): hand-made tensors (one all-positive, where a symmetric grid wastes levels),
    or random ones for a hidden test.  No value sits near a rounding tie."""
    if seed is None:
        mixed = torch.tensor([-0.30, -0.11, 0.0, 0.05, 0.21, 0.70])
        positive = torch.tensor([[0.20, 0.52], [0.93, 1.30]])
        return [(mixed, 2), (mixed, 3), (positive, 3), (mixed, 8), (positive, 4)]
    g = torch.Generator().manual_seed(6000 + seed)
    return [(torch.randn(5, 7, generator=g) * 0.1 + 0.02, 3), (torch.rand(40, generator=g) * 2 + 0.5, 5),
            (torch.randn(64, generator=g), 8)]


def _codec_reference(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, float, float]:
    """What :class:`~fedlab_utils.compression.QuantizeCodec` puts on the wire for ``x``: codes, lo, scale."""
    import numpy as np

    from fedlab_utils.compression.codecs import QuantizeCodec
    from fedlab_utils.compression.wire import unpack_bits

    payload = QuantizeCodec(bits).encode({"x": x})
    lo, scale = (float(v) for v in np.frombuffer(payload[:8], dtype="<f4"))
    codes = torch.from_numpy(unpack_bits(payload[8:], x.numel(), bits)).reshape(x.shape)
    return codes, lo, scale


def check_quantize(fn, seed: int | None = None) -> None:
    """``fn(x, bits) -> (codes, lo, scale)``: the uplink codec's asymmetric ``bits``-bit quantizer.

    The grid has ``2^b`` levels from ``lo = min(x)`` to ``max(x)``, so ``scale = (max − min)/(2^b − 1)``;
    ``codes = clamp(round((x − lo)/scale), 0, 2^b − 1)`` and the receiver decodes ``lo + codes·scale``.
    Compared with what :class:`~fedlab_utils.compression.QuantizeCodec` really sends for the same
    tensor (its header and unpacked codes).  Plausible slips get their own hint: no rounding,
    truncation (floor), a scale of ``range/2^b`` (one level too many), codes that do not fit in
    ``b`` bits (no clamping), a symmetric grid from ``max|x|``, an offset other than the minimum.
    ``seed``: other random tensors and widths (hidden tests).
    """
    what = "quantize"
    hint = gettext("b bits give 2^b codes, 0 .. 2^b-1: code 0 must decode to min(x) and the top code to "
                   "max(x), so there are 2^b-1 steps between them; round each value to the nearest code.")
    for x, bits in _quantize_cases(seed):
        levels = (1 << bits) - 1
        case = gettext("{what}(x of shape {shape}, bits={bits})").format(what=what, shape=tuple(x.shape), bits=bits)
        out = call_safely(fn, x.clone(), bits, what=what)
        expect(isinstance(out, tuple) and len(out) == 3,
               gettext('{case}: return a tuple (codes, lo, scale), got {got}').format(case=case, got=type(out).__name__))
        codes, lo, scale = out
        expect(isinstance(codes, torch.Tensor) and tuple(codes.shape) == tuple(x.shape),
               gettext('{case}: codes must be a tensor shaped like x {shape}').format(case=case, shape=tuple(x.shape)))
        try:
            lo, scale = float(lo), float(scale)
        except (TypeError, ValueError):
            raise AssertionError(gettext('{case}: lo and scale must be numbers (floats or 0-d tensors)').format(case=case)) from None
        want_codes, want_lo, want_scale = _codec_reference(x, bits)
        span = float(x.max() - x.min())
        codes = codes.detach().double()
        expect(bool(torch.isfinite(codes).all()), gettext('{case}: the codes have NaN or inf values').format(case=case))
        expect(bool((codes == codes.round()).all()),
               gettext('{case}: the codes are not whole numbers -- you did not round. A code is an integer that '
                       'fits in b bits; round((x - lo) / scale) to the nearest one.').format(case=case))
        if math.isclose(scale, span / (1 << bits), rel_tol=1e-4):
            raise AssertionError(gettext('{case}: scale = (max - min) / 2^b is one level off: with 2^b codes there are '
                                         '2^b - 1 steps from min to max, so max(x) needs code 2^b, which does not fit in '
                                         '{bits} bits. {hint}').format(case=case, bits=bits, hint=hint))
        expect(bool((codes >= 0).all() and (codes <= levels).all()),
               gettext('{case}: codes range over {low:g} .. {high:g}, but {bits} bits hold only 0 .. {levels}: clamp '
                       'them to that range.').format(case=case, low=float(codes.min()), high=float(codes.max()),
                                                     bits=bits, levels=levels))
        symmetric = (2 * float(x.abs().max()) / levels, float(x.abs().max()) / levels,
                     float(x.abs().max()) / ((1 << (bits - 1)) - 1) if bits > 1 else -1.0)
        if any(math.isclose(scale, s, rel_tol=1e-4) for s in symmetric) and not math.isclose(scale, want_scale, rel_tol=1e-4):
            raise AssertionError(gettext('{case}: your scale comes from max|x| (a symmetric grid); this quantizer is '
                                         'asymmetric: its grid runs from min(x) to max(x), so no level is wasted when '
                                         'the values are not centred on 0. {hint}').format(case=case, hint=hint))
        expect(math.isclose(lo, want_lo, rel_tol=1e-5, abs_tol=1e-7),
               gettext('{case}: lo = {lo:.6g}, but the offset (the zero point) is the smallest value, min(x) = '
                       '{want:.6g}: code 0 decodes to it.').format(case=case, lo=lo, want=want_lo))
        expect(math.isclose(scale, want_scale, rel_tol=1e-4),
               gettext('{case}: scale = {scale:.6g}, expected {want:.6g}. {hint}').format(case=case, scale=scale,
                                                                                           want=want_scale, hint=hint))
        exact = (x.double() - want_lo) / want_scale
        # A value within 1e-4 of a rounding tie may go either way; every other code must match the codec's.
        mismatch = codes != want_codes.double()
        near_tie = ((exact - torch.floor(exact)) - 0.5).abs() < 1e-4
        wrong = (mismatch & ~near_tie).flatten()
        if bool(wrong.any()) and bool((codes.flatten()[wrong] == want_codes.double().flatten()[wrong] - 1).all()):
            raise AssertionError(gettext('{case}: you truncated (floor) instead of rounding to the nearest code: the '
                                         'error can reach a whole step instead of half of one.').format(case=case))
        if bool(wrong.any()):
            first = int(wrong.nonzero()[0])
            raise AssertionError(gettext("{case}: {count} of {n} codes differ from the codec's (e.g. x = {x:.6g}: "
                                         "yours {got:g}, the codec's {want:g}). {hint}").format(
                case=case, count=int(wrong.sum()), n=x.numel(), x=float(x.flatten()[first]),
                got=float(codes.flatten()[first]), want=float(want_codes.flatten()[first]), hint=hint))
    passed(what)


def _draws_with(fn, x: torch.Tensor, seed: int, global_seed: int, what: str):
    """Call ``fn(x, Generator(seed))`` with the global RNG seeded to ``global_seed`` (then restored)."""
    saved = torch.get_rng_state()
    try:
        torch.manual_seed(global_seed)
        return call_safely(fn, x.clone(), torch.Generator().manual_seed(seed), what=what)
    finally:
        torch.set_rng_state(saved)


def check_stochastic_round(fn, seed: int | None = None) -> None:
    """``fn(x, generator) -> tensor``: round each value down or up at random, unbiased, drawing
    its randomness from ``generator`` (and only from it).

    Checked: same shape; every output is ``floor(x)`` or ``ceil(x)``; integers stay put; both
    neighbours occur; the mean of many draws matches ``x`` within a Hoeffding bound; and the
    supplied generator decides the result (same seed → same output whatever the global RNG;
    other seed → other output).  ``seed``: other values and seeds (hidden tests).
    """
    what = "stochastic_round"
    x = torch.tensor([0.5, -0.5, 2.25, -1.75, 3.0, 0.1, -0.9, 7.999])
    base_seed = 1234
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        r = torch.randn(6, generator=g) * 5
        x = torch.cat([torch.tensor([0.5]), r[:3], torch.tensor([3.0]), r[3:]])  # 0.5 first, 3.0 at index 4
        base_seed = 5000 + seed
    draws = 4000
    generator = torch.Generator().manual_seed(base_seed)
    out = call_safely(fn, x.repeat(draws, 1), generator, what=what)
    expect(isinstance(out, torch.Tensor), gettext('{what}: return a tensor, got {type_out_name}').format(what=what, type_out_name=type(out).__name__))
    expect(tuple(out.shape) == (draws, len(x)),
           gettext("{what}: the output must have the input's shape {draws_len_x}, got {tuple_out_shape}").format(what=what, draws_len_x=(draws, len(x)), tuple_out_shape=tuple(out.shape)))
    out = out.float()
    expect(bool(torch.isfinite(out).all()), gettext('{what}: the output has NaN or inf values').format(what=what))
    lower, upper = torch.floor(x), torch.ceil(x)
    on_grid = (out == lower) | (out == upper)
    expect(bool(on_grid.all()), gettext('{what}: every value must round to floor(x) or ceil(x) -- e.g. 2.25 becomes 2 or 3, never anything else').format(what=what))
    expect(bool((out[:, 4] == 3.0).all()), gettext('{what}: an integer (3.0) must stay exactly where it is').format(what=what))
    expect(bool((out[:, 0] == 0).any() and (out[:, 0] == 1).any()),
           gettext('{what}: 0.5 should sometimes round down and sometimes up. Deterministic rounding (torch.round) is biased; add uniform noise u ~ U[0, 1) before taking the floor').format(what=what))
    # Hoeffding: each draw lies in an interval of width 1, so P(|mean − x| > t) ≤ 2·exp(−2·N·t²).
    # t = sqrt(ln(2/δ) / (2N)) with δ = 1e-9 per value.
    tolerance = math.sqrt(math.log(2 / 1e-9) / (2 * draws))
    bias = (out.mean(0) - x).abs()
    worst = int(bias.argmax())
    expect(bool((bias <= tolerance).all()),
           gettext('{what}: biased -- over {draws} draws the mean of round({x_worst_item:g}) is {out_worst_mean_item:.3f} (tolerance {tolerance:.3f}). Round up with probability x − floor(x): floor(x + u) with u ~ U[0, 1) does exactly that').format(what=what, draws=draws, x_worst_item=x[worst].item(), out_worst_mean_item=out[:, worst].mean().item(), tolerance=tolerance))
    probe = x.repeat(64, 1)
    first = _draws_with(fn, probe, base_seed + 1, global_seed=1, what=what)
    again = _draws_with(fn, probe, base_seed + 1, global_seed=2, what=what)
    expect(isinstance(again, torch.Tensor) and torch.equal(first, again),
           gettext('{what}: two calls with identically seeded generators gave different results -- your code draws from the global RNG. Pass the supplied generator: torch.rand(x.shape, generator=generator)').format(what=what))
    other = _draws_with(fn, probe, base_seed + 2, global_seed=1, what=what)
    expect(not torch.equal(first, other),
           gettext('{what}: generators with different seeds gave the same result -- the supplied generator is ignored (or re-seeded). Draw with torch.rand(x.shape, generator=generator)').format(what=what))
    passed(what)


def _ef_cases(seed: int | None):
    """Updates, residuals and compressors (top-k and sign with a scale, both lossy)."""
    g = torch.Generator().manual_seed(11 if seed is None else 2000 + seed)

    def top2(t: torch.Tensor) -> torch.Tensor:
        kept = torch.zeros_like(t)
        idx = t.abs().flatten().topk(2).indices
        kept.view(-1)[idx] = t.view(-1)[idx]
        return kept

    def scaled_sign(t: torch.Tensor) -> torch.Tensor:
        return t.abs().mean() * torch.sign(t)

    cases = [(torch.tensor([0.5, -0.1, 0.05, 2.0, -0.3]), torch.tensor([0.0, 0.4, 0.0, -1.5, 0.0]), top2),
             (torch.randn(3, 4, generator=g), torch.zeros(3, 4), top2),
             (torch.randn(6, generator=g), torch.randn(6, generator=g) * 0.5, scaled_sign)]
    if seed is not None:
        cases = [(torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g), c) for c in (top2, scaled_sign)]
    return cases


def check_error_feedback_step(fn, seed: int | None = None) -> None:
    """``fn(update, residual, compress) -> (sent, new_residual)``: one client's error-feedback step.

    ``sent = compress(update + residual)`` and ``new_residual = (update + residual) − sent``, so
    ``sent + new_residual == update + residual``: compression delays what it drops, never loses it.
    Checked on a hand-made case and random ones, with top-k and scaled-sign compressors, and over
    three rounds of feeding the residual back.  ``seed``: other random inputs (hidden tests).
    """
    what = "error_feedback_step"
    hint = (gettext("Add the residual to the update first (corrected = update + residual), send "
                    "compress(corrected), and keep what was dropped: new_residual = corrected - sent."))
    for update, residual, compress in _ef_cases(seed):
        out = call_safely(fn, update.clone(), residual.clone(), compress, what=what)
        expect(isinstance(out, tuple) and len(out) == 2,
               gettext('{what} must return a tuple (sent, new_residual); got {type_out_name}').format(what=what, type_out_name=type(out).__name__))
        sent, new_residual = out
        corrected = update + residual
        for name, got, want in (("sent", sent, compress(corrected)), ("new_residual", new_residual,
                                                                      corrected - compress(corrected))):
            expect(isinstance(got, torch.Tensor) and got.shape == update.shape,
                   gettext('{what}: {name} must be a tensor shaped like the update {tuple_update_shape}').format(what=what, name=name, tuple_update_shape=tuple(update.shape)))
            if name == "sent" and torch.allclose(got, compress(update)) and not torch.allclose(want, compress(update)):
                raise AssertionError(gettext('{what}: you compressed the update alone -- the residual from earlier rounds was never sent. {hint}').format(what=what, hint=hint))
            if name == "new_residual" and torch.allclose(got, update - sent) and not torch.allclose(want, update - sent):
                raise AssertionError(gettext('{what}: your new residual forgets the old one. {hint}').format(what=what, hint=hint))
            expect(torch.allclose(got, want, atol=1e-6),
                   gettext('{what}: {name} is off by up to {got_want_abs_max_item:.3g}. {hint}').format(what=what, name=name, got_want_abs_max_item=(got - want).abs().max().item(), hint=hint))
    # Over several rounds nothing is lost: everything sent plus the last residual is everything produced.
    update_seq = [u for u, _, _ in _ef_cases(seed)][:1] * 3
    compress = _ef_cases(seed)[0][2]
    residual, total_sent = torch.zeros_like(update_seq[0]), torch.zeros_like(update_seq[0])
    for update in update_seq:
        sent, residual = call_safely(fn, update.clone(), residual, compress, what=what)
        total_sent = total_sent + sent
    expect(torch.allclose(total_sent + residual, sum(update_seq), atol=1e-5),
           gettext('{what}: over 3 rounds, everything sent plus the final residual should equal the sum of the updates. {hint}').format(what=what, hint=hint))
    passed(what)


def _separable_cases(seed: int | None) -> list[tuple[int, int, int, int, int]]:
    """(c_in, c_out, k, height, width): hand-picked shapes, or random ones for a hidden test."""
    if seed is None:
        return [(16, 32, 3, 28, 28), (8, 16, 3, 14, 14), (32, 64, 5, 7, 9), (3, 24, 3, 32, 32)]
    g = torch.Generator().manual_seed(3000 + seed)

    def draw(low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (1,), generator=g))

    return [(draw(2, 48), draw(2, 96), 2 * draw(1, 3) + 1, draw(3, 20), draw(3, 20)) for _ in range(4)]


def check_separable_cost(fn, seed: int | None = None) -> None:
    """``fn(c_in, c_out, k, height, width) -> (parameters, flops)`` of one depthwise separable block.

    The block is :class:`fedlab_utils.models.SeparableConv2d` ``(c_in, c_out, k, padding=k // 2)``:
    a depthwise k×k conv without bias, then a pointwise 1×1 conv with bias, on one
    ``c_in × height × width`` image.  Parameters: ``k²·c_in + c_in·c_out + c_out``.  FLOPs as
    ``FlopCounterMode`` counts them: 2 per multiply-add, biases free, so
    ``2·height·width·(k²·c_in + c_in·c_out)``.  Both are also compared with the real block.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from ..models import SeparableConv2d, count_parameters
    from . import expect_whole_number

    what = "separable_cost"
    for c_in, c_out, k, h, w in _separable_cases(seed):
        shape = f"{what}(c_in={c_in}, c_out={c_out}, k={k}, height={h}, width={w})"
        got = call_safely(fn, c_in, c_out, k, h, w, what=what)
        expect(isinstance(got, (tuple, list)) and len(got) == 2,
               gettext('{shape}: return a pair (parameters, flops), got {got!r}').format(shape=shape, got=got))
        params, flops = (expect_whole_number(v, label.format(shape=shape)) for v, label in
                         zip(got, (gettext("{shape}: parameters"), gettext("{shape}: FLOPs"))))
        macs_per_pixel = k * k * c_in + c_in * c_out
        block = SeparableConv2d(c_in, c_out, k, padding=k // 2)
        real_params = count_parameters(block)
        with FlopCounterMode(display=False) as counter:
            block(torch.zeros(1, c_in, h, w))
        real_flops = int(counter.get_total_flops())
        expected_params, expected_flops = macs_per_pixel + c_out, 2 * h * w * macs_per_pixel
        expect(real_params == expected_params and real_flops == expected_flops,
               gettext('internal: the block has {real_params} parameters and {real_flops} FLOPs, the formula says {expected_params} and {expected_flops}').format(real_params=real_params, real_flops=real_flops, expected_params=expected_params, expected_flops=expected_flops))
        standard = k * k * c_in * c_out
        expect(params not in (standard, standard + c_out),
               gettext('{shape}: {params} parameters is a *standard* k×k conv (k²·c_in·c_out). The separable block has a depthwise k×k conv (one filter per input channel: k²·c_in) and a pointwise 1×1 conv (c_in·c_out)').format(shape=shape, params=params))
        expect(params != k * k * c_in * c_in + c_in * c_out + c_out,
               gettext('{shape}: {params} parameters gives the depthwise conv c_in filters of c_in channels each; with groups=c_in each of its c_in filters sees one channel only (k² weights)').format(shape=shape, params=params))
        expect(params != macs_per_pixel,
               gettext("{shape}: {params} parameters forgets the pointwise conv's bias (c_out more)").format(shape=shape, params=params))
        expect(params != macs_per_pixel + c_out + c_in,
               gettext('{shape}: {params} parameters counts a depthwise bias; this block has none (it would only duplicate the pointwise bias)').format(shape=shape, params=params))
        expect(params == expected_params,
               gettext('{shape}: got {params} parameters, expected k²·c_in + c_in·c_out + c_out').format(shape=shape, params=params))
        expect(flops != expected_flops // 2,
               gettext('{shape}: {flops} counts multiply-adds; FlopCounterMode counts 2 FLOPs per multiply-add').format(shape=shape, flops=flops))
        expect(flops not in (2 * h * w * standard, h * w * standard),
               gettext('{shape}: {flops} FLOPs is the cost of a standard conv (k²·c_in·c_out per pixel)').format(shape=shape, flops=flops))
        expect(flops != 2 * macs_per_pixel,
               gettext('{shape}: {flops} FLOPs is one output pixel; the block computes height·width of them').format(shape=shape, flops=flops))
        expect(flops == expected_flops,
               gettext('{shape}: got {flops} FLOPs, expected 2·height·width·(k²·c_in + c_in·c_out) (2 per multiply-add, biases free, same-size output)').format(shape=shape, flops=flops))
    passed(what)


def check_topk_ratio_prediction(prediction, update: dict[str, torch.Tensor], fraction: float,
                                band: float = 0.1) -> None:
    """Predict-then-check: how many times smaller than fp32 is a top-k payload (fp32 values) of ``update``?

    The check *measures* the answer, ``len(Fp32Codec().encode(update)) / len(TopKCodec(fraction).encode(update))``,
    and accepts a prediction within ``band`` (relative) of it.  The usual wrong guess, ``1 / fraction``
    (as if the kept values travelled alone), gets its own hint: every kept value also carries its index.
    """
    from fedlab_utils.compression.codecs import TopKCodec
    from fedlab_utils.compression.wire import Fp32Codec, flatten, index_bits

    what = "predicted_topk_ratio"
    if isinstance(prediction, torch.Tensor) and prediction.numel() == 1:
        prediction = prediction.item()
    expect(isinstance(prediction, (int, float)) and not isinstance(prediction, bool) and prediction > 0,
           gettext('{what}: commit one positive number (how many times smaller than fp32), got {prediction!r}').format(what=what, prediction=prediction))
    measured = len(Fp32Codec().encode(update)) / len(TopKCodec(fraction).encode(update))
    n = flatten(update).numel()
    width = index_bits(n)
    hint = (gettext('The measured ratio is {measured:.1f}x. Top-k keeps k = ceil(fraction·n) values, but the server must also learn *where* each one goes: with n = {n:,} entries an index takes ceil(log2 n) = {width} bits, so each kept entry costs 4 + {width_8:g} bytes instead of 4.').format(measured=measured, n=n, width=width, width_8=width / 8))
    naive = 1 / fraction
    expect_ratio_within(prediction, measured, band, what, hint, usual_wrong=naive, digits=1,
                        usual_wrong_message=gettext('{what}: {prediction:g}x is 1/fraction, as if only the kept values travelled. {hint}').format(what=what, prediction=prediction, hint=hint))
