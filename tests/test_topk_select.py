"""``topk_indices`` selects exactly the set ``torch.topk`` selects, on rows built to break a sampled
threshold: ties at the k-th value, zeros, all-equal rows, k near n, tiny rows, NaN, and every row of a
block on its own.  Top-k's payloads follow it, so ``encode`` and ``encode_rows`` agree byte for byte."""
import numpy as np
import pytest
import torch

from fedlab_utils.compression import TopKCodec, flatten, index_bits, pack_bits
from fedlab_utils.compression.codecs import _topk_by_threshold, topk_indices


def _reference(magnitudes: torch.Tensor, k: int) -> torch.Tensor:
    """What the codec selected before: torch.topk over each whole row, indices sorted."""
    return torch.sort(torch.topk(magnitudes, k, dim=1, sorted=False).indices, dim=1).values


def _decided(magnitudes: torch.Tensor, k: int) -> np.ndarray:
    out = np.empty((magnitudes.shape[0], k), dtype=np.int64)
    return _topk_by_threshold(magnitudes.numpy(), k, out)


def _rows(kind: str, rows: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, n, generator=g)
    if kind == "ties":  # few distinct values: the k-th value is almost always tied
        x = torch.round(x * 3)
    elif kind == "zeros":  # most of the row is zero, some of it negative zero
        x[:, : 3 * n // 4] = 0.0
        x[:, : n // 8] = -0.0
    elif kind == "all-equal":
        x = torch.full((rows, n), 0.25)
    elif kind == "spike":  # a few huge values, the rest tiny: the sample sees none of the spikes
        x = x * 1e-6
        x[:, torch.randint(0, n, (max(1, n // 500),), generator=g)] = 1e3
    elif kind == "duplicates-above":  # the k-th largest value repeated just across the boundary
        x = x.abs()
        top = torch.topk(x, max(1, n // 100), dim=1).values[:, -1:]
        x[:, -3:] = top
    elif kind == "structured":  # every 16th value large: the strided sample sees only those
        x = x * 1e-3
        x[:, ::16] += 1.0
    return x.abs()


KINDS = ["random", "ties", "zeros", "all-equal", "spike", "duplicates-above", "structured"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n, fraction", [(50_890, 0.01), (4_000, 0.01), (4_000, 0.2), (1_000, 0.001), (777, 0.05)])
def test_the_selected_set_is_torch_topk_s(kind, n, fraction):
    k = max(1, min(n, int(np.ceil(fraction * n))))
    m = _rows(kind, 6, n, seed=n + len(kind))
    assert torch.equal(topk_indices(m, k), _reference(m, k))
    for i in range(len(m)):  # one row alone, as the per-client encode asks
        assert torch.equal(topk_indices(m[i:i + 1], k), _reference(m[i:i + 1], k))


def test_random_rows_take_the_threshold_path_and_ties_do_not():
    """The cheap path really decides random rows (else the test above proves only the fallback), and
    leaves every row whose k-th value is tied to torch.topk."""
    m = _rows("random", 16, 50_890, seed=0)
    assert _decided(m, 509).all()
    assert not _decided(_rows("ties", 16, 50_890, seed=0), 509).any()
    assert not _decided(_rows("all-equal", 4, 5_000, seed=0), 50).any()
    zeros = _rows("zeros", 4, 50_890, seed=1)
    assert torch.equal(topk_indices(zeros, 509), _reference(zeros, 509))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 17, 64])
def test_tiny_rows_and_every_k(n):
    m = _rows("random", 3, n, seed=n)
    m[0, -1] = m[0, 0]  # a tie in a tiny row
    for k in range(1, n + 1):
        assert torch.equal(topk_indices(m, k), _reference(m, k)), k


@pytest.mark.parametrize("k", [2_000, 2_400, 2_500, 7_999, 8_000])
def test_k_near_n(k):
    m = _rows("random", 4, 8_000, seed=k)
    assert torch.equal(topk_indices(m, k), _reference(m, k))


def test_nan_and_inf_rows_go_to_torch_topk():
    m = _rows("random", 4, 20_000, seed=3)
    m[1, 17] = float("nan")  # torch.topk counts NaN as the largest value
    m[2, 5] = float("inf")
    assert torch.equal(topk_indices(m, 200), _reference(m, 200))
    assert 17 in topk_indices(m, 200)[1].tolist()


def test_each_row_is_decided_on_its_own():
    """A block mixing rows the threshold decides with rows it cannot gives each row its own set."""
    m = torch.cat([_rows("random", 3, 30_000, 0), _rows("ties", 2, 30_000, 1), _rows("random", 3, 30_000, 2)])
    assert _decided(m, 300).tolist() == [True] * 3 + [False] * 2 + [True] * 3
    assert torch.equal(topk_indices(m, 300), _reference(m, 300))


@pytest.mark.parametrize("kind", ["random", "ties", "zeros", "spike"])
@pytest.mark.parametrize("outputs", [100, 640])  # 8,100 values (13-bit indices, 81 of them: rows end mid-byte)
def test_top_k_payloads_are_what_the_old_selection_sent(kind, outputs):  # or 51,840 (16-bit: whole bytes)
    """The payload is the sorted indices then their values: the same bytes as with torch.topk's set,
    through ``encode`` and ``encode_rows`` alike."""
    n = 81 * outputs
    template = {"w": torch.zeros(outputs, 80), "b": torch.zeros(outputs)}
    signs = torch.sign(torch.randn(5, n, generator=torch.Generator().manual_seed(8)))
    rows = _rows(kind, 5, n, seed=7) * signs
    codec = TopKCodec(0.01)
    k = int(np.ceil(0.01 * n))
    payloads, decoded = codec.encode_rows(rows, list(range(5)), template)
    for i in range(5):
        update = {"w": rows[i, :80 * outputs].reshape(outputs, 80).clone(), "b": rows[i, 80 * outputs:].clone()}
        idx = _reference(rows[i:i + 1].abs(), k)[0]
        expected = pack_bits(idx.numpy(), index_bits(n)) + rows[i, idx].numpy().astype("<f4").tobytes()
        assert codec.encode(update, i) == payloads[i] == expected
        assert torch.equal(decoded[i], flatten(codec.decode(payloads[i], template)))


def test_float64_rows_take_torch_topk_on_their_own_values():
    """The threshold path reads float32; a float64 row is selected by torch.topk on its float64 magnitudes."""
    m = _rows("random", 3, 20_000, seed=5).double()
    m[0, 7] = m[0, 9] * (1 + 1e-12)  # equal in float32, distinct in float64
    assert not _decided(m, 200).any()
    assert torch.equal(topk_indices(m, 200), _reference(m, 200))
