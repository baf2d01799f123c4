"""Compression codecs: error bounds, unbiasedness, error-feedback invariant, real byte counts."""
import math

import numpy as np
import pytest
import torch

from fedlab_utils.checks.compression import check_stochastic_round
from fedlab_utils.compression import (
    ErrorFeedback,
    Fp32Codec,
    QuantizeCodec,
    RandomKCodec,
    SignCodec,
    TopKCodec,
    choose_qparams,
    dequantize,
    flatten,
    index_bits,
    quantize,
    stochastic_round,
)
from fedlab_utils.core import LocalTraining, evaluate, run
from fedlab_utils.data import client_data, partition
from fedlab_utils.lessons.compression import model_size_bytes, quantize_model_int8
from fedlab_utils.models import make_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def make_update(seed=0, shapes=((64, 100), (64,), (10, 64), (10,))):
    g = torch.Generator().manual_seed(seed)
    return {f"t{i}": torch.randn(s, generator=g) * (0.1 * (i + 1)) for i, s in enumerate(shapes)}


def roundtrip(codec, update, client_id=0):
    payload = codec.encode(update, client_id)
    return payload, codec.decode(payload, update)


def max_err(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in b)


def chunk_bounds(update, chunk):
    v = flatten(update)
    if chunk is None:
        out, s = [], 0
        for t in update.values():
            out.append(v[s:s + t.numel()])
            s += t.numel()
        return out
    return [v[s:s + chunk] for s in range(0, v.numel(), chunk)]


# ----------------------------------------------------------------------------- the bytes, by hand
def test_sign_and_quantize_payloads_hand_computed():
    """The wire's one bit order (most significant first) shows in the codecs' real bytes."""
    x = {"w": torch.tensor([-1.0, 2.0, -3.0, -2.0, 1.0, 1.0, 1.0, -1.0, 4.0])}
    # sign: one fp32 scale (mean |x| = 16/9), then sign bits 1,0,1,1,0,0,0,1 | 0 -> 0b10110001, 0b00000000
    payload = SignCodec().encode(x)
    assert payload == np.asarray([16 / 9], dtype="<f4").tobytes() + bytes([0b10110001, 0])
    # 2-bit codes over [-3, 4] (scale 7/3): round((x + 3) / scale) = 1,2,0,0,2,2,2,1,3
    # -> 01 10 00 00 | 10 10 10 01 | 11 (padded) = 0x60, 0xA9, 0xC0
    payload = QuantizeCodec(2).encode(x)
    assert payload == np.asarray([-3.0, 7 / 3], dtype="<f4").tobytes() + bytes([0x60, 0xA9, 0xC0])


# ----------------------------------------------------------------------------- quantization math
@pytest.mark.parametrize("dtype, signed", [(torch.qint8, True), (torch.quint8, False)])
def test_quantize_matches_torch_quantize_per_tensor(dtype, signed):
    x = torch.randn(5000, generator=torch.Generator().manual_seed(3)) * 0.7 + 0.2
    scale, zp = choose_qparams(x, 8, signed=signed)
    ours = quantize(x, scale, zp, 8, signed=signed)
    theirs = torch.quantize_per_tensor(x, scale, zp, dtype)
    assert torch.equal(ours, theirs.int_repr().long())
    assert torch.allclose(dequantize(ours, scale, zp), theirs.dequantize(), atol=0, rtol=0)


def test_choose_qparams_hand_computed():
    x = torch.tensor([-1.0, 0.0, 0.5, 3.0])
    scale, zp = choose_qparams(x, bits=2)  # 4 levels over [-1, 3]: step 4/3, zero at round(0.75) = 1
    assert scale == pytest.approx(4 / 3)
    assert zp == 1
    q = quantize(x, scale, zp, bits=2)
    assert q.tolist() == [0, 1, 1, 3]  # 0.5/(4/3) = 0.375 rounds to 0 -> code 1


def test_stochastic_round_hits_neighbours_only():
    x = torch.full((10_000,), 2.3)
    out = stochastic_round(x, torch.Generator().manual_seed(0))
    assert set(out.unique().tolist()) == {2.0, 3.0}
    assert abs(out.mean().item() - 2.3) < 4 * math.sqrt(0.21 / 10_000)  # Bernoulli(0.3) std


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 7, 8, 12, 16])
@pytest.mark.parametrize("chunk", [None, 1000])
def test_deterministic_quantization_error_at_most_half_a_step(bits, chunk):
    update = make_update()
    codec = QuantizeCodec(bits, chunk=chunk)
    _, decoded = roundtrip(codec, update)
    err = (flatten(decoded) - flatten(update)).abs()
    start = 0
    for part in chunk_bounds(update, chunk):  # bound computed by hand, chunk by chunk
        step = float(part.max() - part.min()) / (2 ** bits - 1)
        chunk_err = err[start:start + part.numel()]
        assert float(chunk_err.max()) <= step / 2 * (1 + 1e-5) + 1e-7, (bits, chunk)
        start += part.numel()
    assert float(err.max()) <= codec.error_bound(update)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_stochastic_quantization_error_at_most_one_step(bits):
    update = make_update(1)
    codec = QuantizeCodec(bits, stochastic=True, seed=5)
    _, decoded = roundtrip(codec, update)
    steps = [float(p.max() - p.min()) / (2 ** bits - 1) for p in chunk_bounds(update, None)]
    assert max_err(decoded, update) <= max(steps) * (1 + 1e-5) + 1e-7


def test_lossless_cases_are_exact():
    update = make_update(2)
    assert max_err(roundtrip(Fp32Codec(), update)[1], update) == 0
    assert max_err(roundtrip(TopKCodec(1.0), update)[1], update) == 0
    assert max_err(roundtrip(RandomKCodec(1.0), update)[1], update) == 0
    on_grid = {"a": torch.arange(256, dtype=torch.float32) * 0.5 - 10}  # exactly 256 levels
    assert max_err(roundtrip(QuantizeCodec(8), on_grid)[1], on_grid) == 0
    signs = {"a": torch.tensor([0.25, -0.25, 0.25, 0.25, -0.25])}
    assert max_err(roundtrip(SignCodec(), signs)[1], signs) == 0


def _unbiasedness_violation(codec, x, draws):
    """Largest |mean of `draws` decodes − x| in units of the Hoeffding tolerance (≤ 1 means unbiased)."""
    total = torch.zeros_like(x["w"])
    for _ in range(draws):
        total += codec.decode(codec.encode(x, 0), x)["w"]
    step = float(x["w"].max() - x["w"].min()) / (2 ** codec.bits - 1)
    # each decode lies in an interval of width `step` around x: Hoeffding gives
    # P(|mean − x| > t) ≤ 2 exp(−2 N t² / step²); δ = 1e-9 per value.
    tolerance = step * math.sqrt(math.log(2 / 1e-9) / (2 * draws))
    return float((total / draws - x["w"]).abs().max()) / tolerance


def test_stochastic_quantization_is_unbiased():
    x = {"w": torch.linspace(-1, 1, 301) + 0.0137}  # values off the 2-bit grid
    assert _unbiasedness_violation(QuantizeCodec(2, stochastic=True, seed=11), x, draws=400) <= 1


def test_unbiasedness_test_catches_deterministic_rounding():
    x = {"w": torch.linspace(-1, 1, 301) + 0.0137}
    assert _unbiasedness_violation(QuantizeCodec(2, stochastic=False), x, draws=400) > 1


def test_stochastic_codec_is_reproducible_per_seed():
    update = make_update(3)
    a, b = QuantizeCodec(4, stochastic=True, seed=9), QuantizeCodec(4, stochastic=True, seed=9)
    assert a.encode(update, 2) == b.encode(update, 2)
    assert a.encode(update, 2) != a.encode(update, 3)  # another client draws other noise


def test_topk_keeps_exactly_the_largest_entries():
    update = make_update(4)
    codec = TopKCodec(0.05)
    _, decoded = roundtrip(codec, update)
    v, d = flatten(update), flatten(decoded)
    k = math.ceil(0.05 * v.numel())
    kept = d != 0
    assert int(kept.sum()) == k
    assert torch.equal(d[kept], v[kept])  # values are sent exactly (fp32)
    assert float(v[~kept].abs().max()) <= float(v[kept].abs().min())


def test_topk_with_quantized_values_error_bound():
    update = make_update(5)
    _, decoded = roundtrip(TopKCodec(0.05, QuantizeCodec(8)), update)
    v, d = flatten(update), flatten(decoded)
    kept_true = v[torch.topk(v.abs(), math.ceil(0.05 * v.numel())).indices]
    step = float(kept_true.max() - kept_true.min()) / 255
    kept = torch.topk(v.abs(), math.ceil(0.05 * v.numel())).indices
    assert float((d[kept] - v[kept]).abs().max()) <= step / 2 * (1 + 1e-5) + 1e-7


def test_sign_decodes_to_sign_times_mean_magnitude():
    update = make_update(6)
    _, decoded = roundtrip(SignCodec(), update)
    for key, t in update.items():
        expected = torch.where(t < 0, -1.0, 1.0) * t.abs().mean()
        assert torch.allclose(decoded[key], expected, atol=1e-7)


def test_random_k_indices_come_from_the_seed():
    update = make_update(7)
    codec = RandomKCodec(0.1, seed=1)
    p1, d1 = roundtrip(codec, update, 0)
    p2, d2 = roundtrip(codec, update, 0)
    assert p1 != p2  # a fresh seed each call
    v, d = flatten(update), flatten(d1)
    kept = d != 0
    assert int(kept.sum()) == math.ceil(0.1 * v.numel())
    assert torch.equal(d[kept], v[kept])
    scaled = RandomKCodec(0.1, unbiased=True)
    unbiased = flatten(scaled.decode(scaled.encode(update), update))
    sent = unbiased != 0
    assert torch.allclose(unbiased[sent], v[sent] * v.numel() / math.ceil(0.1 * v.numel()))


# ----------------------------------------------------------------------------- error feedback
@pytest.mark.parametrize("inner", [TopKCodec(0.01), SignCodec(), QuantizeCodec(2), TopKCodec(0.02, QuantizeCodec(4))])
def test_error_feedback_residual_plus_sent_equals_update_plus_old_residual(inner):
    ef = ErrorFeedback(inner)
    for rnd in range(4):
        for cid in (0, 3):
            update = make_update(10 * rnd + cid)
            old = ef.residuals.get(cid, {k: torch.zeros_like(v) for k, v in update.items()})
            payload = ef.encode(update, cid)
            sent = ef.decode(payload, update)
            new = ef.residuals[cid]
            for k in update:
                torch.testing.assert_close(new[k] + sent[k], update[k] + old[k], atol=1e-6, rtol=0)
    assert set(ef.residuals) == {0, 3}


def test_error_feedback_eventually_sends_a_small_constant_coordinate():
    """Top-1 without memory never sends the small coordinate; with memory it gets through."""
    update = {"w": torch.tensor([1.0, 0.3])}
    plain, ef = TopKCodec(0.5), ErrorFeedback(TopKCodec(0.5))
    assert all(plain.decode(plain.encode(update), update)["w"][1] == 0 for _ in range(5))
    sent_small = sum(float(ef.decode(ef.encode(update), update)["w"][1]) for _ in range(10))
    assert sent_small > 0


# ----------------------------------------------------------------------------- bytes
def expected_len(codec, n, tensors):
    """Payload sizes computed by hand from each format."""
    if isinstance(codec, ErrorFeedback):
        return expected_len(codec.inner, n, tensors)
    if isinstance(codec, QuantizeCodec):
        return 8 * tensors + math.ceil(n * codec.bits / 8)
    if isinstance(codec, SignCodec):
        return 4 * tensors + math.ceil(n / 8)
    k = max(1, math.ceil(codec.fraction * n))
    values = 4 * k if codec.values is None else expected_len(codec.values, k, 1)
    if isinstance(codec, TopKCodec):
        return math.ceil(k * index_bits(n) / 8) + values
    return 4 + values  # random-k: a uint32 seed


CODECS_AND_FACTORS = [(QuantizeCodec(16), 1.99), (QuantizeCodec(8), 3.9), (QuantizeCodec(8, stochastic=True), 3.9),
                      (QuantizeCodec(4), 7.8), (QuantizeCodec(2), 15.5), (QuantizeCodec(1), 30.0),
                      (SignCodec(), 31.0), (TopKCodec(0.01), 60.0), (TopKCodec(0.01, QuantizeCodec(8)), 120.0),
                      (RandomKCodec(0.01), 95.0), (ErrorFeedback(TopKCodec(0.01)), 60.0)]


def assert_smaller_than_fp32(codec, update, factor):
    payload = codec.encode(update, 0)
    fp32 = len(Fp32Codec().encode(update))
    assert isinstance(payload, bytes)
    assert fp32 / len(payload) >= factor, f"{codec!r}: {len(payload)} bytes is only {fp32 / len(payload):.2f}x " \
                                          f"smaller than fp32 ({fp32}); expected ≥ {factor}x"


@pytest.mark.parametrize("codec, factor", CODECS_AND_FACTORS, ids=lambda c: getattr(c, "name", str(c)))
def test_payload_length_matches_format_and_beats_fp32(codec, factor):
    model = make_model("mlp", (1, 28, 28), 10)  # the notebook's 50,890-parameter MLP
    update = {k: v.detach() * 0.01 for k, v in model.state_dict().items()}
    n = sum(v.numel() for v in update.values())
    assert len(codec.encode(update, 0)) == expected_len(codec, n, len(update))
    assert_smaller_than_fp32(codec, update, factor)
    assert 4 * n / len(codec.encode(update, 0)) >= factor


class FedLabStyleTopK:
    """What FedLab's top-k sent: int64 indices and fp32 values (with a large k it is bigger than fp32)."""

    name = "fedlab-topk"

    def __init__(self, fraction):
        self.fraction = fraction

    def encode(self, update, client_id=0):
        v = flatten(update)
        idx = torch.topk(v.abs(), math.ceil(self.fraction * v.numel())).indices
        return idx.numpy().astype("<i8").tobytes() + v[idx].numpy().astype("<f4").tobytes()


class FedLabStyleQSGD:
    """What FedLab's QSGD sent: int32 codes plus one bool sign byte per value (larger than fp32)."""

    name = "fedlab-qsgd"

    def encode(self, update, client_id=0):
        v = flatten(update)
        return (v.abs() * 255).to(torch.int32).numpy().tobytes() + (v < 0).numpy().tobytes()


@pytest.mark.parametrize("bad", [FedLabStyleQSGD(), FedLabStyleTopK(0.5)], ids=["qsgd-int32", "topk-int64"])
def test_a_codec_larger_than_fp32_fails_the_size_check(bad):
    update = make_update(8)
    with pytest.raises(AssertionError, match="smaller than fp32"):
        assert_smaller_than_fp32(bad, update, 1.0)


def test_ledger_counts_the_real_payload(digits):
    parts = partition(digits.y_train, 4, "iid", seed=0)
    clients = client_data(digits, parts)
    model = make_model("mlp", digits.input_shape, digits.num_classes, hidden=(16,))
    for codec in (QuantizeCodec(8), ErrorFeedback(TopKCodec(0.05, QuantizeCodec(8))), SignCodec()):
        h = run(model, clients, (digits.x_test, digits.y_test), rounds=2, local=LocalTraining(lr=0.1), uplink=codec,
                seed=0)
        size = len(QuantizeCodec(8).encode({k: v for k, v in model.state_dict().items()})) \
            if isinstance(codec, QuantizeCodec) else None
        per_client = expected_len(codec, sum(p.numel() for p in model.parameters()), len(model.state_dict()))
        if size is not None:
            assert size == per_client
        assert all(r.bytes_up == per_client * len(r.clients) for r in h.records)


def test_invalid_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="bits=0"):
        QuantizeCodec(0)
    with pytest.raises(ValueError, match=r"bits=17 is out of range; valid: \[1, 16\]"):
        QuantizeCodec(17)
    with pytest.raises(ValueError, match="topk_fraction"):
        TopKCodec(0.0)
    with pytest.raises(ValueError, match="topk_fraction"):
        RandomKCodec(1.5)


# ----------------------------------------------------------------------------- deployment
def test_int8_deployment_shrinks_the_model_and_keeps_its_outputs(digits):
    torch.manual_seed(0)
    model = make_model("mlp", digits.input_shape, digits.num_classes, hidden=(256,)).eval()
    quantized, how = quantize_model_int8(model)
    assert "torchao" in how or "deprecated" in how
    assert model_size_bytes(model) / model_size_bytes(quantized) >= 2.5
    with torch.no_grad():
        ref, out = model(digits.x_test), quantized(digits.x_test)
    assert float((ref - out).abs().max()) < 0.05 * float(ref.abs().max())
    acc_fp32, _ = evaluate(model, digits.x_test, digits.y_test)
    acc_int8, _ = evaluate(quantized, digits.x_test, digits.y_test)
    assert abs(acc_fp32 - acc_int8) <= 0.02
    with pytest.raises(ValueError, match="mode="):
        quantize_model_int8(model, "int3")


# ----------------------------------------------------------------------------- exercise checks
def test_check_stochastic_round_accepts_a_correct_answer():
    check_stochastic_round(lambda x, g: torch.floor(x + torch.rand(x.shape, generator=g)))


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, g: torch.round(x), "sometimes round down"),
    (lambda x, g: torch.floor(x), "sometimes round down"),
    (lambda x, g: torch.floor(x + 0.8 * torch.rand(x.shape, generator=g)), "biased"),
    (lambda x, g: x + torch.rand(x.shape, generator=g) - 0.5, "floor"),
    (lambda x, g: torch.floor(x + torch.rand(x.shape, generator=g))[0], "shape"),
])
def test_check_stochastic_round_rejects_wrong_answers(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check_stochastic_round(wrong)


def test_check_stochastic_round_stub_gives_a_hint():
    def stub(x, g):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="not implemented yet"):
        check_stochastic_round(stub)


# ----------------------------------------------------------------------------- state: reset and checkpoints
SEEDED = [lambda: QuantizeCodec(4, stochastic=True), lambda: RandomKCodec(0.1),
          lambda: TopKCodec(0.1, values=QuantizeCodec(8, stochastic=True)),
          lambda: RandomKCodec(0.1, values=QuantizeCodec(4, stochastic=True)),
          lambda: ErrorFeedback(RandomKCodec(0.1, values=QuantizeCodec(2, stochastic=True)))]


@pytest.mark.parametrize("make", SEEDED)
def test_reset_repeats_a_seeded_codec_and_state_dict_resumes_it(make):
    """reset() gives a new run the same random streams; state_dict() taken after call 2 and loaded
    into a fresh codec continues with exactly the payload a straight run sends at call 3."""
    update = make_update()
    codec = make()
    straight = [codec.encode(update, client_id=3) for _ in range(3)]
    codec.reset()
    assert [codec.encode(update, client_id=3) for _ in range(3)] == straight
    codec.reset()
    codec.encode(update, client_id=3)
    codec.encode(update, client_id=3)
    resumed = make()
    resumed.load_state_dict(codec.state_dict())
    assert resumed.encode(update, client_id=3) == straight[2]
    assert straight[1] != straight[0]  # the stream really moves on: the test could fail


def test_rules_02_accept_the_notebook_defaults_and_name_a_bad_parameter():
    """Notebook 02 validates its parameters in one call against RULES_02."""
    from fedlab_utils.lessons.compression import RULES_02
    from fedlab_utils.validation import check_parameters

    defaults = dict(seed=0, dataset="mnist5k", data_dir=None, num_clients=10, fraction=1.0, rounds=25, cnn_rounds=10,
                    local_epochs=1, batch_size=50, lr=0.3, cnn_lr=0.2, bits=8, low_bits=4, stochastic=False,
                    topk_fraction=0.01, topk_value_bits=8, energy_profile="phone-lte", results_path=None)
    assert check_parameters(defaults, RULES_02) == defaults
    for name, bad in [("cnn_lr", 0), ("bits", 17), ("stochastic", 1), ("energy_profile", "phone-5g"), ("topk_fraction", 0.0)]:
        with pytest.raises(ValueError, match=name):
            check_parameters(defaults | {name: bad}, RULES_02)
