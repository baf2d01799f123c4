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


# ----------------------------------------------------------------------------- build it: the global magnitude mask
def _global_masks(weights, sparsity):
    scores = torch.cat([w.abs().flatten() for w in weights.values()])
    k = round(sparsity * scores.numel())
    if k == 0:
        return {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    threshold = scores.kthvalue(k).values
    return {n: w.abs() > threshold for n, w in weights.items()}


def _layer_wise(weights, sparsity):
    return P.magnitude_masks(weights, sparsity, scope="layer")


@pytest.mark.parametrize("seed", [None, 1, 2])
def test_the_global_mask_passes_and_equals_torch_global_unstructured(seed):
    pruning.check_global_masks(_global_masks, seed=seed)
    weights = pruning._random_weights(5)
    holders = {n: torch.nn.Module() for n in weights}
    for n, h in holders.items():
        h.weight = torch.nn.Parameter(weights[n].clone())
    total = sum(w.numel() for w in weights.values())
    torch.nn.utils.prune.global_unstructured([(h, "weight") for h in holders.values()],
                                             pruning_method=torch.nn.utils.prune.L1Unstructured,
                                             amount=round(0.8 * total))
    mine = _global_masks(weights, 0.8)
    assert all(torch.equal(mine[n], holders[n].weight_mask.bool()) for n in weights)


@pytest.mark.parametrize("wrong, message", [
    (_layer_wise, "one threshold for all layers"),
    (lambda w, s: {n: m.float() for n, m in _global_masks(w, s).items()}, "bool masks"),
    (lambda w, s: {n: ~m for n, m in _global_masks(w, s).items()}, "prunes different weights|expected exactly"),
    (lambda w, s: {n: x.abs() >= torch.cat([v.abs().flatten() for v in w.values()]).kthvalue(
        max(1, round(s * sum(v.numel() for v in w.values())))).values for n, x in w.items()}, "expected exactly"),
    (lambda w, s: list(w), "same keys"),
])
def test_a_wrong_global_mask_fails_with_a_hint(wrong, message):
    with pytest.raises(AssertionError, match=message):
        pruning.check_global_masks(wrong)


def test_the_lessons_plausible_wrong_mask_fails():
    from fedlab_utils.course import PLAUSIBLE_WRONG_ANSWERS
    grade_id, source = PLAUSIBLE_WRONG_ANSWERS["01_pruning"]
    namespace = {"torch": torch}
    exec(source, namespace)
    assert grade_id == "01-build-global-mask"
    with pytest.raises(AssertionError):
        pruning.check_global_masks(namespace["my_global_masks"])


# ----------------------------------------------------------------------------- structured pruning: FLOPs saved
def _flops_ratio(widths, amount):
    def training_flops(ws):
        return sum((4 + 2 * (j > 0)) * i * o for j, (i, o) in enumerate(zip(ws[:-1], ws[1:])))
    small = [widths[0]] + [h - round(amount * h) for h in widths[1:-1]] + [widths[-1]]
    return training_flops(widths) / training_flops(small)


def test_the_measured_ratio_is_the_hand_count():
    assert pruning.structured_flops_ratio([784, 64, 10], 0.6) == pytest.approx(204_544 / 83_096)
    assert pruning.structured_flops_ratio([784, 128, 64, 10], 0.5) > 2.1 > 1 / (1 - 0.5)


@pytest.mark.parametrize("seed", [None, 1, 2])
def test_a_correct_flops_ratio_passes(seed):
    pruning.check_structured_flops_ratio(_flops_ratio, seed=seed)


@pytest.mark.parametrize("wrong, message", [
    (lambda w, a: 1 / (1 - a), "same factor"),
    (lambda w, a: 1 / _flops_ratio(w, a), "small / dense"),
    (lambda w, a: _flops_ratio(w[:-1] + [w[-1] - round(a * w[-1])], a), "measured ratio"),
    (lambda w, a: "2.5x", "positive number"),
])
def test_a_wrong_flops_ratio_fails_with_a_hint(wrong, message):
    with pytest.raises(AssertionError, match=message):
        pruning.check_structured_flops_ratio(wrong)


# ----------------------------------------------------------------------------- the lesson's parameters
def test_rules_01_check_every_parameter_and_the_schedule():
    from fedlab_utils.lessons.pruning import RELATIONS_01, RULES_01
    from fedlab_utils.validation import check_parameters
    good = {"seed": 0, "dataset": "digits", "data_dir": None, "model_name": "mlp", "num_clients": 4, "fraction": 1.0,
            "rounds": 4, "local_epochs": 1, "batch_size": 8, "lr": 0.05, "optimizer": "sgd", "partition_name": "iid",
            "alpha": 0.5, "sparsity": 0.9, "schedule": "cubic", "prune_every": 2, "prune_end": None, "scope": "global",
            "structured": 0.5, "finetune_rounds": 1, "article_threshold": 0.1, "energy_profile": "phone-wifi",
            "results_path": None}
    assert check_parameters(good, RULES_01, RELATIONS_01)["prune_end"] is None
    for name, value, says in (("prune_every", 5, "prune_every=5 is more than rounds=4"),
                              ("prune_end", 1, "prune_end=1 is out of range"), ("sparsity", 1.0, "sparsity=1.0"),
                              ("schedule", "steps", "schedule='steps'"), ("energy_profile", "5g", "energy_profile")):
        with pytest.raises(ValueError, match=says):
            check_parameters({**good, name: value}, RULES_01, RELATIONS_01)
