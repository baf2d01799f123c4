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
