"""``fold_rows``: a block of clients encoded and folded into the running FedAvg sum in one pass (the
native loops of the built-in quantizer, top-k and error feedback) is byte for byte and bit for bit
``encode_rows`` followed by the per-client fold, ``average + w · decoded`` client after client,
on blocks built to leave the native loops: chunks whose extreme is zero or negative zero, ties at
top-k's k-th value, a residual that overflows to infinity."""
import copy

import numpy as np
import pytest
import torch

from fedlab_utils.compression import ErrorFeedback, QuantizeCodec, TopKCodec, fold_rows
from fedlab_utils.compression.wire import flatten, unflatten
from fedlab_utils.core import registry

TEMPLATE = {"w": torch.zeros(40, 30), "b": torch.zeros(40), "v": torch.zeros(5)}
N = 1245


def _rows(kind: str, count: int = 10, seed: int = 0) -> torch.Tensor:
    rows = torch.randn(count, N, generator=torch.Generator().manual_seed(seed)) * 0.01
    if kind == "zero-extremes":  # a chunk whose min is 0, one whose max is -0.0, one all zero
        rows[1, :1200] = rows[1, :1200].abs()
        rows[1, 7] = 0.0
        rows[2, 1200:1240] = -rows[2, 1200:1240].abs()
        rows[2, 1210] = -0.0
        rows[3, 1240:] = 0.0
        rows[4, :1200] = 0.0
    elif kind == "ties":  # few distinct values: top-k's k-th value is tied
        rows[::2] = torch.round(rows[::2] * 300) / 300
    elif kind == "huge":  # more huge values than top-k keeps: the residual left plus the next row overflows
        rows[5, :30] = 3e38
    return rows


def _reference(codec, rows, weights, rounds):
    """Each client's ``encode`` and ``decode`` (or the exception encoding raised), then each finite
    decoded update multiplied and added, as the per-client path folds."""
    out = []
    for r in range(rounds):
        average, payloads, folded = torch.zeros(N), [], []
        for i, row in enumerate(rows * (1 + r)):
            try:
                payload = codec.encode(unflatten(row.clone(), TEMPLATE), i)
                decoded = flatten(codec.decode(payload, TEMPLATE))
            except Exception as exc:  # noqa: BLE001
                payloads.append(exc)
                folded.append(False)
                continue
            ok = bool(torch.isfinite(decoded).all())
            if ok:
                average.add_(torch.mul(decoded, float(weights[i])))
            payloads.append(payload)
            folded.append(ok)
        out.append((payloads, folded, average))
    return out


def _same(p1, p2) -> bool:
    return [repr(p) if isinstance(p, Exception) else p for p in p1] == \
        [repr(p) if isinstance(p, Exception) else p for p in p2]


def _native(codec, rows, weights, rounds):
    out = []
    for r in range(rounds):
        average = torch.zeros(N)
        done = codec.fold_rows((rows * (1 + r)).contiguous(), list(range(len(rows))), TEMPLATE, weights, average)
        assert done is not None, "the native fold must take this block"
        out.append((*done, average))
    return out


def _bits(t: torch.Tensor) -> bytes:
    return t.numpy().tobytes()


@pytest.mark.parametrize("spec", ["q8", "topk:0.05", "ef:topk:0.02", "ef:q8"])
@pytest.mark.parametrize("kind", ["random", "zero-extremes", "ties", "huge"])
def test_the_native_fold_is_encode_rows_then_the_per_client_fold(spec, kind):
    rows = _rows(kind)
    weights = torch.tensor([(i + 1) / 55 for i in range(len(rows))], dtype=torch.float32)
    codec = registry.resolve_codec(spec, "uplink")
    reference, native = copy.deepcopy(codec), codec
    expected, got = _reference(reference, rows, weights, 3), _native(native, rows, weights, 3)
    for (p1, f1, a1), (p2, f2, a2) in zip(expected, got):
        assert _same(p2, p1)
        assert f2 == f1
        assert _bits(a2) == _bits(a1)  # bit for bit, the sign of every zero included
    if isinstance(codec, ErrorFeedback):
        assert sorted(native.residuals) == sorted(reference.residuals)
        for c in reference.residuals:
            assert _bits(flatten(native.residuals[c])) == _bits(flatten(reference.residuals[c]))


def test_the_edge_rows_really_leave_the_native_loops():
    """The blocks above reach the per-client fallbacks: a zero extreme stops the quantizer's loop, a tie
    sends a row to torch.topk, an overflow makes a decoded update non-finite (not folded)."""
    from fedlab_utils.compression import kernels
    rows = _rows("zero-extremes")
    starts, stops = np.array([0, 1200, 1240]), np.array([1200, 1240, 1245])
    header, codes = np.empty((10, 6), np.float32), np.empty((10, N), np.uint8)
    stop = kernels.quantize_fold(rows.numpy().copy(), 0, starts, stops, 255, np.ones(10, np.float32),
                                 np.zeros(N, np.float32), header, codes, np.empty(N, np.float32),
                                 np.zeros(10, bool), False)
    assert stop == 1
    ties = _rows("ties").abs().numpy()
    k, stride = 63, 1
    decided = np.zeros(10, bool)
    kernels.topk_select(ties, k, stride, 2 * k + 4, np.empty((10, k), np.int64), decided,
                        np.empty(N + 8, np.int64), np.empty(N + 8, np.float32), np.zeros(N + 3, np.uint8))
    assert not decided[::2].any() and decided[1::2].all()
    codec = ErrorFeedback(TopKCodec(0.02))
    rows = _rows("huge")
    _native(codec, rows, torch.ones(10) / 10, 1)
    payloads, folded, _ = _native(codec, rows, torch.ones(10) / 10, 1)[0]
    assert folded == [True] * 5 + [False] + [True] * 4  # 3e38 + 3e38 is infinite: sent, not folded
    assert len(payloads[5]) == len(payloads[4])


def test_fold_rows_without_a_native_fold_multiplies_and_adds_each_decoded_row():
    """A codec without ``fold_rows`` (here stochastic rounding) goes through encode_rows and the fold."""
    rows = _rows("random")
    weights = torch.full((10,), 0.1)
    codec = QuantizeCodec(4, stochastic=True, seed=3)
    assert codec.fold_rows(rows, list(range(10)), TEMPLATE, weights, torch.zeros(N)) is None
    average = torch.zeros(N)
    payloads, folded = fold_rows(codec, rows, list(range(10)), TEMPLATE, weights, average)
    (p1, f1, a1), = _reference(QuantizeCodec(4, stochastic=True, seed=3), rows, weights, 1)
    assert _same(payloads, p1) and folded == f1 and _bits(average) == _bits(a1)


def test_weights_in_float64_fold_as_the_float32_the_per_client_path_multiplies_by():
    rows = _rows("random")
    weights = torch.tensor([1 / 3 + i / 7 for i in range(10)], dtype=torch.float64)
    for spec in ("q8", "ef:topk:0.02"):
        (p1, f1, a1), = _reference(registry.resolve_codec(spec, "uplink"), rows, weights, 1)
        (p2, f2, a2), = _native(registry.resolve_codec(spec, "uplink"), rows, weights, 1)
        assert _same(p1, p2) and f1 == f2 and _bits(a1) == _bits(a2)


def test_error_feedback_declines_a_block_its_inner_codec_declines_and_changes_no_residual():
    rows = _rows("random")
    codec = ErrorFeedback(QuantizeCodec(8))
    strided = torch.zeros(2 * N)[::2]  # a running sum the native loop cannot write in place
    assert codec.fold_rows(rows, list(range(10)), TEMPLATE, torch.full((10,), 0.1), strided) is None
    assert len(codec.residuals) == 0
