"""Checks for notebook 01 (pruning).  Each raises ``AssertionError`` with a hint when wrong."""
from __future__ import annotations

import torch

from ..i18n import gettext
from . import call_safely, expect, expect_ratio_within, passed

__all__ = ["check_global_masks", "check_payload_size", "check_structured_keep", "check_sparse_ratio_prediction",
           "structured_flops_ratio", "check_structured_flops_ratio"]


def _random_weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # Layers of different scales, as in a real network: global ranking must treat them together.
    return {"0.weight": torch.randn(16, 12, generator=g) * 0.05, "2.weight": torch.randn(10, 16, generator=g) * 0.5,
            "4.weight": torch.randn(3, 10, generator=g)}


def check_global_masks(fn, seed: int | None = None) -> None:
    """``fn(weights, sparsity) -> masks``: global magnitude masks (``torch.bool``, True = kept).

    Compared with ``fedlab_utils.lessons.pruning.masks.magnitude_masks(weights, sparsity, scope='global')``
    on random weights without ties.  Float 0/1 masks are refused: the exercise asks for bool
    masks (``w * mask`` works with both, but ``~mask`` and indexing do not).
    ``seed``: other random weights and sparsities (hidden tests).
    """
    from fedlab_utils.lessons.pruning.masks import magnitude_masks

    if seed is None:
        cases = [(0, 0.5), (1, 0.9), (2, 0.0), (3, 0.75), (4, 0.99)]
    else:
        g = torch.Generator().manual_seed(seed)
        cases = [(100 + seed * 10 + i, round(float(torch.rand(1, generator=g)) * 0.98, 3)) for i in range(3)]
    for weight_seed, sparsity in cases:
        weights = _random_weights(weight_seed)
        expected = magnitude_masks(weights, sparsity, scope="global")
        got = call_safely(fn, {k: v.clone() for k, v in weights.items()}, sparsity, what=gettext("global masks"))
        expect(isinstance(got, dict) and set(got) == set(weights),
               gettext('return a dict with the same keys as `weights` ({sorted_weights}), got {sorted_got_if_isinstance}').format(sorted_weights=sorted(weights), sorted_got_if_isinstance=sorted(got) if isinstance(got, dict) else type(got).__name__))
        total = sum(w.numel() for w in weights.values())
        want_pruned = round(sparsity * total)
        for name in weights:
            expect(isinstance(got[name], torch.Tensor) and got[name].shape == weights[name].shape,
                   gettext('masks[{name!r}] must be a tensor shaped like the weight {tuple_weights_name_shape}').format(name=name, tuple_weights_name_shape=tuple(weights[name].shape)))
            expect(got[name].dtype == torch.bool,
                   gettext('masks[{name!r}] has dtype {got_name_dtype}; return bool masks (True = kept), e.g. `w.abs() > threshold`, not 0/1 floats').format(name=name, got_name_dtype=got[name].dtype))
        pruned = sum(int((~got[n]).sum()) for n in weights)
        expect(pruned == want_pruned,
               gettext('sparsity={sparsity}: you pruned {pruned} of {total} weights, expected exactly round(sparsity·total) = {want_pruned}. Hint: rank |w| over *all* layers together (torch.cat of the flattened weights) and take the k smallest.').format(sparsity=sparsity, pruned=pruned, total=total, want_pruned=want_pruned))
        for name in weights:
            expect(torch.equal(got[name], expected[name]),
                   gettext('sparsity={sparsity}: the mask of {name!r} prunes different weights than global magnitude pruning. Hint: one threshold for all layers -- the k-th smallest |w| overall -- not one per layer; keep weights with |w| above it.').format(sparsity=sparsity, name=name))
    passed("global magnitude masks")


def check_payload_size(fn) -> None:
    """``fn(mask) -> int``: bytes ``SparseCodec`` sends for an update whose nonzeros are ``mask``."""
    from fedlab_utils.compression.codecs import SparseCodec

    codec = SparseCodec()
    g = torch.Generator().manual_seed(0)
    cases = [(1000, 0), (1000, 5), (1000, 60), (1000, 300), (1000, 1000), (50_890, 5_089), (50_890, 100), (7, 3)]
    for numel, nnz in cases:
        mask = torch.zeros(numel, dtype=torch.bool)
        mask[torch.randperm(numel, generator=g)[:nnz]] = True
        values = (torch.rand(numel, generator=g) + 0.5) * mask  # nonzero exactly where mask is True
        actual = len(codec.encode({"w": values}))
        got = call_safely(fn, mask.clone(), what=gettext("payload size"))
        expect(isinstance(got, int) and not isinstance(got, bool),
               gettext('return an int (bytes), got {type_got_name}').format(type_got_name=type(got).__name__))
        expect(got == actual,
               gettext('numel={numel}, nnz={nnz}: you said {got} bytes, the codec sends {actual} ({codec_last_format} format). Hint: compute all three sizes -- dense 1+4N; bitmask 5+ceil(N/8)+4k; indices 5+ceil(k·w/8)+4k with w=(N-1).bit_length() bits -- and return the smallest.').format(numel=numel, nnz=nnz, got=got, actual=actual, codec_last_format=codec.last_format))
    passed("sparse payload size")


def _structured_cases(seed: int | None) -> list[tuple[torch.Tensor, float]]:
    g = torch.Generator().manual_seed(7 if seed is None else 1000 + seed)
    # Rows whose L1 and L2 rankings differ (one large entry vs many medium ones), and columns
    # whose norms rank differently from the rows': a row/column or L1/L2 mix-up is caught.
    spiky = torch.tensor([[3.0, 0.0, 0.0, 0.0], [1.2, 1.2, 1.2, 1.2], [0.1, 0.2, 0.1, 0.2],
                          [0.0, 2.5, 0.0, 0.1], [1.0, 1.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
    cases = [(spiky, 0.5), (spiky, 0.34), (torch.randn(10, 7, generator=g), 0.3),
             (torch.randn(8, 3, 3, 3, generator=g), 0.6), (torch.randn(5, 4, generator=g), 0.0)]
    if seed is not None:
        cases = [(torch.randn(12, 9, generator=g) * torch.rand(12, 1, generator=g), 0.25),
                 (torch.randn(6, 2, 3, 3, generator=g), 0.5), (spiky.flip(0), 0.5)]
    return cases


def check_structured_keep(fn, seed: int | None = None) -> None:
    """``fn(weight, amount) -> kept``: the indices (ascending) of the output neurons/channels that
    structured pruning keeps: remove the ``round(amount · rows)`` rows (dim 0) with the smallest
    L2 norm.  Compared with ``torch.nn.utils.prune.ln_structured(..., n=2, dim=0)``."""
    hint = (gettext("Flatten each output row (weight.flatten(1)), take its L2 norm (.norm(dim=1)), drop the "
                    "round(amount * rows) rows with the smallest norms and return the other row indices, sorted."))
    for weight, amount in _structured_cases(seed):
        holder = torch.nn.Module()
        holder.weight = torch.nn.Parameter(weight.clone())
        torch.nn.utils.prune.ln_structured(holder, "weight", amount=int(round(amount * weight.shape[0])), n=2, dim=0)
        expected = torch.nonzero(holder.weight_mask.flatten(1).any(1)).flatten()
        got = call_safely(fn, weight.clone(), amount, what="structured_keep")
        expect(isinstance(got, torch.Tensor) and got.dim() == 1 and not got.is_floating_point()
               and got.dtype != torch.bool,
               gettext('return a 1-D tensor of integer row indices (e.g. torch.nonzero(keep).flatten()), got {got_dtype_if_isinstance_}{tuple_got_shape_if_isins}').format(got_dtype_if_isinstance_=got.dtype if isinstance(got, torch.Tensor) else type(got).__name__, tuple_got_shape_if_isins=tuple(got.shape) if isinstance(got, torch.Tensor) else ''))
        expect(len(got) == len(expected),
               gettext('weight {tuple_weight_shape}, amount={amount}: you kept {len_got} rows, expected {len_expected} (remove round(amount * rows) = {weight_shape_0_len_expec}). {hint}').format(tuple_weight_shape=tuple(weight.shape), amount=amount, len_got=len(got), len_expected=len(expected), weight_shape_0_len_expec=weight.shape[0] - len(expected), hint=hint))
        expect(torch.equal(torch.sort(got.long()).values, expected),
               gettext('weight {tuple_weight_shape}, amount={amount}: you kept rows {got_tolist}, structured L2 pruning keeps {expected_tolist}. {hint}').format(tuple_weight_shape=tuple(weight.shape), amount=amount, got_tolist=got.tolist(), expected_tolist=expected.tolist(), hint=hint))
        expect(torch.equal(got.long(), expected), gettext('return the kept indices in ascending order. {hint}').format(hint=hint))
    passed("structured pruning: kept neurons")


def check_sparse_ratio_prediction(prediction, state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                                  band: float = 0.15) -> None:
    """Predict-then-check: how many times fewer bytes ``SparseCodec`` sends than fp32 for ``state``
    pruned by ``masks``.

    The check *measures* the answer: ``len()`` of the fp32 payload over ``len()`` of the sparse
    payload of ``mask_state(state, masks)``, and accepts a prediction within ``band`` (relative) of it.
    A prediction of ``1 / (1 − sparsity)`` (the share of values removed, as if zeros and the
    positions of the nonzeros were free) is the usual wrong guess, and gets its own hint.
    """
    from fedlab_utils.compression.codecs import SparseCodec
    from fedlab_utils.compression.wire import Fp32Codec
    from fedlab_utils.lessons.pruning.masks import mask_state, sparsity_of

    what = "predicted_ratio"
    if isinstance(prediction, torch.Tensor) and prediction.numel() == 1:
        prediction = prediction.item()
    expect(isinstance(prediction, (int, float)) and not isinstance(prediction, bool) and prediction > 0,
           gettext('{what}: commit one positive number (how many times fewer bytes), got {prediction!r}').format(what=what, prediction=prediction))
    pruned = mask_state(state, masks)
    measured = len(Fp32Codec().encode(pruned)) / len(SparseCodec().encode(pruned))
    sparsity = sparsity_of(masks)
    naive = 1 / max(1e-12, 1 - sparsity)
    hint = (gettext('The measured ratio is {measured:.2f}x. Zeros are not free: each kept value still costs 4 bytes, and the receiver must learn *where* it goes -- a bitmask costs one bit for every one of the N values (N/8 bytes), kept or not, so at sparsity s the payload is about N/8 + 4(1-s)N bytes against 4N for fp32.').format(measured=measured))
    expect_ratio_within(prediction, measured, band, what, hint, usual_wrong=naive, digits=2,
                        usual_wrong_message=gettext('{what}: {prediction:g}x is 1/(1 - sparsity) = {naive:.2f}x, as if only the kept values travelled. {hint}').format(what=what, prediction=prediction, naive=naive, hint=hint))


# ----------------------------------------------------------------------------- structured pruning: FLOPs saved
def _mlp(widths: list[int]) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for j, (i, o) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [torch.nn.Linear(i, o)] + ([torch.nn.ReLU()] if j < len(widths) - 2 else [])
    return torch.nn.Sequential(*layers)


def structured_flops_ratio(widths: list[int], amount: float) -> float:
    """Training FLOPs per sample of the MLP ``widths`` (input, hidden..., classes) over those of the
    same MLP after structured pruning removes ``round(amount · h)`` neurons of every hidden layer,
    both counted by ``FlopCounterMode`` on the models ``structured_masks`` and ``shrink`` build."""
    from fedlab_utils.ledger.flops import training_flops_per_sample
    from fedlab_utils.lessons.pruning.structured import shrink, structured_masks

    torch.manual_seed(0)
    dense = _mlp(list(widths))
    small = shrink(dense, structured_masks(dense, amount))
    shape = (widths[0],)
    return training_flops_per_sample(dense, shape) / training_flops_per_sample(small, shape)


def check_structured_flops_ratio(fn, seed: int | None = None) -> None:
    """``fn(widths, amount) -> ratio``: how many times fewer training FLOPs per sample an MLP needs after
    structured pruning removes ``round(amount · h)`` of each hidden layer's ``h`` neurons (see
    :func:`structured_flops_ratio`), within 0.5 %.  ``1 / (1 − amount)``, the guess that every
    matrix shrinks by the same factor, gets its own hint, and so do a pruned output layer and an
    inverted ratio.  ``seed``: other widths (hidden tests)."""
    hint = gettext("Shrink every hidden width h to h - round(amount*h) (inputs and classes stay), count "
                   "(4 + 2*[not the first layer]) * in * out FLOPs per Linear(in, out) for the dense and the "
                   "small network, and divide dense by small. A matrix between two pruned layers loses rows AND "
                   "columns.")
    if seed is None:
        cases = [([784, 64, 10], 0.6), ([784, 128, 64, 10], 0.5), ([30, 200, 200, 4], 0.75), ([10, 7, 3], 0.0)]
    else:
        g = torch.Generator().manual_seed(seed)
        cases = [([int(w) for w in torch.randint(8, 300, (4,), generator=g)] + [10], 0.3 + 0.1 * (seed % 5))]
    for widths, amount in cases:
        expected = structured_flops_ratio(widths, amount)
        got = call_safely(fn, list(widths), amount, what="structured_flops_ratio")
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        expect(isinstance(got, (int, float)) and not isinstance(got, bool) and got > 0,
               gettext("structured_flops_ratio: expected a positive number (dense FLOPs / small FLOPs), got "
                       "{got!r}").format(got=got))
        close = abs(got - expected) <= 0.005 * expected
        where = f"widths={widths}, amount={amount}"
        if not close and amount > 0:
            naive = 1 / (1 - amount)
            if abs(got - naive) <= 0.005 * naive and abs(naive - expected) > 0.005 * expected:
                raise AssertionError(gettext("{where}: {got:.3g} is 1/(1 - amount), as if every matrix shrank by the "
                                             "same factor; the measured ratio is {expected:.3g}. {hint}").format(
                    where=where, got=got, expected=expected, hint=hint))
            if abs(1 / got - expected) <= 0.005 * expected:
                raise AssertionError(gettext("{where}: that is small / dense; return dense / small (a number above "
                                             "1). {hint}").format(where=where, hint=hint))
        expect(close, gettext("{where}: got {got:.4g}, the measured ratio is {expected:.4g}. {hint}").format(
            where=where, got=got, expected=expected, hint=hint))
    passed("structured pruning: FLOPs saved")
