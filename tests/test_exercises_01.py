"""Notebook 01's predict exercise, both ways: a prediction within the stated band of the measured ratio
passes, and the usual wrong guesses (1 / (1 − sparsity), a far-off number, a non-number) raise an
``AssertionError`` whose hint says why."""
import pytest
import torch

from fedlab_utils.checks import pruning
from fedlab_utils.compression import Fp32Codec, SparseCodec
from fedlab_utils.lessons.pruning import masks as P
from fedlab_utils.models import make_model


def _state_and_masks(sparsity: float, seed: int = 0):
    torch.manual_seed(seed)
    model = make_model("mlp", (1, 28, 28), 10)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return state, P.magnitude_masks(model, sparsity, "global")


def _measured(state, masks) -> float:
    pruned = P.mask_state(state, masks)
    return len(Fp32Codec().encode(pruned)) / len(SparseCodec().encode(pruned))


def test_measured_ratio_matches_the_hand_count():
    # 50,890 values, 90% of the 50,816 weights removed: a bitmask (1 + 4 + ceil(N/8) bytes) plus fp32 nonzeros
    state, masks = _state_and_masks(0.9)
    n = sum(v.numel() for v in state.values())
    nonzero = sum(int((v != 0).sum()) for v in P.mask_state(state, masks).values())
    assert n == 50_890 and nonzero == 50_816 - round(0.9 * 50_816) + 74
    assert _measured(state, masks) == pytest.approx(4 * n / (5 + -(-n // 8) + 4 * nonzero))


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99])
def test_sparse_ratio_prediction_both_ways(sparsity):
    state, masks = _state_and_masks(sparsity)
    measured = _measured(state, masks)
    for right in (measured, measured * 1.14, measured * 0.86, 4 / min(4, 1 / 8 + 4 * (1 - sparsity), 6 * (1 - sparsity))):
        pruning.check_sparse_ratio_prediction(right, state, masks)
    pruning.check_sparse_ratio_prediction(torch.tensor(measured), state, masks)  # a 0-d tensor is a number too
    for wrong in (measured * 1.2, measured * 0.8, 1.0, 1000.0):
        with pytest.raises(AssertionError, match="measured ratio"):
            pruning.check_sparse_ratio_prediction(wrong, state, masks)
    for not_a_number in ("7.5", None, True, -3.0, 0):
        with pytest.raises(AssertionError, match="positive number"):
            pruning.check_sparse_ratio_prediction(not_a_number, state, masks)


def test_the_naive_guess_gets_its_own_hint():
    state, masks = _state_and_masks(0.9)
    with pytest.raises(AssertionError, match=r"1/\(1 - sparsity\)"):
        pruning.check_sparse_ratio_prediction(10.0, state, masks)
