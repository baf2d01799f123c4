"""Notebook 02's predict exercise, both ways: a prediction within the stated band of the measured top-k
ratio passes; 1/fraction (the values alone), a far-off number and a non-number raise with a hint."""
import math

import pytest
import torch

from fedlab_utils.checks import compression
from fedlab_utils.compression import Fp32Codec, TopKCodec, index_bits
from fedlab_utils.models import make_model


def _update(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = make_model("mlp", (1, 28, 28), 10)
    return {k: torch.randn_like(v) * 1e-2 for k, v in model.state_dict().items()}


def test_measured_ratio_matches_the_hand_count():
    update = _update()
    n = sum(v.numel() for v in update.values())
    k = math.ceil(0.01 * n)
    assert (n, index_bits(n), k) == (50_890, 16, 509)
    assert len(Fp32Codec().encode(update)) == 4 * n and len(TopKCodec(0.01).encode(update)) == 6 * k


@pytest.mark.parametrize("fraction", [0.001, 0.01, 0.05])
def test_topk_ratio_prediction_both_ways(fraction):
    update = _update()
    measured = len(Fp32Codec().encode(update)) / len(TopKCodec(fraction).encode(update))
    for right in (measured, 1.09 * measured, 0.91 * measured, 4 / (fraction * (4 + index_bits(50_890) / 8))):
        compression.check_topk_ratio_prediction(right, update, fraction)
    for wrong in (1.12 * measured, 0.88 * measured, 4 / (fraction * 12), 1.0):  # 4/(f·12): int64 indices
        with pytest.raises(AssertionError, match="measured ratio"):
            compression.check_topk_ratio_prediction(wrong, update, fraction)
    with pytest.raises(AssertionError, match="1/fraction"):
        compression.check_topk_ratio_prediction(1 / fraction, update, fraction)
    for not_a_number in ("66", None, False, -1.0):
        with pytest.raises(AssertionError, match="positive number"):
            compression.check_topk_ratio_prediction(not_a_number, update, fraction)


# ----------------------------------------------------------------------------- the build-it cell: the quantizer
def _quantize(x, bits):
    lo, hi = float(x.min()), float(x.max())
    scale = (hi - lo) / (2 ** bits - 1)
    return torch.clamp(torch.round((x - lo) / scale), 0, 2 ** bits - 1), lo, scale


def _with_scale(divisor, rounding=torch.round, clamp=True, lo_of=lambda x: float(x.min())):
    def quantize(x, bits):
        lo, hi = lo_of(x), float(x.max())
        scale = (hi - float(x.min())) / divisor(bits)
        codes = rounding((x - lo) / scale)
        return (torch.clamp(codes, 0, 2 ** bits - 1) if clamp else codes), lo, scale
    return quantize


def _symmetric(x, bits):
    m = float(x.abs().max())
    scale = 2 * m / (2 ** bits - 1)
    return torch.clamp(torch.round((x + m) / scale), 0, 2 ** bits - 1), -m, scale


def test_quantize_matches_the_codec_and_accepts_tensor_outputs():
    for seed in (None, 0, 1, 2, 7):
        compression.check_quantize(_quantize, seed=seed)
    as_tensors = lambda x, b: tuple(torch.as_tensor(v) for v in _quantize(x, b))  # noqa: E731
    compression.check_quantize(as_tensors)


@pytest.mark.parametrize("wrong,match", [
    (_with_scale(lambda b: 2 ** b), "one level off"),                       # scale = range / 2^b, clamped
    (_with_scale(lambda b: 2 ** b, clamp=False), "one level off"),          # ... and not clamped
    (_with_scale(lambda b: 2 ** b - 1, rounding=lambda t: t), "did not round"),
    (_with_scale(lambda b: 2 ** b - 1, rounding=torch.floor), "truncated"),
    (_symmetric, "symmetric"),
    (_with_scale(lambda b: 2 ** b - 1, lo_of=lambda x: 0.0), "offset"),
    (lambda x, b: _quantize(x, b)[0], "tuple"),
])
def test_quantize_rejects_plausible_slips(wrong, match):
    with pytest.raises(AssertionError, match=match):
        compression.check_quantize(wrong)


def test_quantize_unanswered_is_reported_as_not_answered():
    from fedlab_utils.checks import NotAnswered

    def unanswered(x, bits):
        raise NotImplementedError()
    with pytest.raises(NotAnswered):
        compression.check_quantize(unanswered)
