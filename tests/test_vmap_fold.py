"""Every codec that declares ``folds`` is encoded and averaged block by block on the vmap path.

The folding path must send exactly what the per-client path sends (every payload byte for byte)
and give exactly its model (the same float operations in the same order), whether the round fits
one stack or is trained in several; a codec that declares nothing keeps the per-client path.
"""
import numpy as np
import pytest
import torch

from fedlab_utils.compression import ErrorFeedback, Fp32Codec, QuantizeCodec, RandomKCodec, SignCodec, TopKCodec
from fedlab_utils.compression.wire import encode_rows, flatten, folds
from fedlab_utils.core import Faults, FedAvgProtocol, LocalTraining, RoundContext, VmapTrainer, registry, run
from fedlab_utils.data import ClientData
from fedlab_utils.models import count_parameters, make_model

FOLDING = ["q8", "q4", "ef:topk:0.01", "topk:0.05", "randk:0.1", "sign", "ef:q8"]


class _Opaque:
    """Another codec around ``inner`` that declares nothing: the per-client path, the same wire."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.payloads: list[bytes] = []

    def encode(self, update, client_id=0):
        payload = self.inner.encode(update, client_id)
        self.payloads.append(payload)
        return payload

    def decode(self, payload, template):
        return self.inner.decode(payload, template)

    def reset(self):
        self.payloads.clear()
        reset = getattr(self.inner, "reset", None)
        if callable(reset):
            reset()


class _Recording:
    """A codec that declares ``folds`` around ``inner`` and records every payload it sends."""

    folds = True

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.payloads: list[bytes] = []

    def encode(self, update, client_id=0):
        payload = self.inner.encode(update, client_id)
        self.payloads.append(payload)
        return payload

    def decode(self, payload, template):
        return self.inner.decode(payload, template)

    def encode_rows(self, rows, client_ids, template):
        payloads, decoded = encode_rows(self.inner, rows, client_ids, template)
        self.payloads += payloads
        return payloads, decoded

    def reset(self):
        self.payloads.clear()
        reset = getattr(self.inner, "reset", None)
        if callable(reset):
            reset()


def _clients(digits, count=24, per=6, seed=0):
    picks = np.random.default_rng(seed).integers(0, len(digits.y_train), size=(count, per))
    return [ClientData(digits.x_train[p], digits.y_train[p]) for p in picks]


def _identical(a, b) -> None:
    """The same run, bit for bit: model, accuracy, losses and every client's bytes."""
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    assert a.accuracy == b.accuracy
    assert [r.train_loss for r in a.records] == [r.train_loss for r in b.records]
    assert [[row["bytes_up"] for row in r.client_rows] for r in a.records] == \
        [[row["bytes_up"] for row in r.client_rows] for r in b.records]
    assert [(r.late, r.rejected, r.dropped) for r in a.records] == [(r.late, r.rejected, r.dropped) for r in b.records]


def test_the_built_in_codecs_declare_what_folds():
    assert folds(TopKCodec(0.01, values=QuantizeCodec(8)))
    for spec in FOLDING + ["fp32"]:
        assert folds(registry.resolve_codec(spec, "uplink")), spec
    assert not folds(_Opaque(QuantizeCodec(8)))  # declares nothing
    assert not folds(ErrorFeedback(_Opaque(TopKCodec(0.1))))  # error feedback folds when its inner codec does

    class Measured(Fp32Codec):
        pass

    assert not folds(Measured()) and not Measured.rows_are_payload  # a subclass of fp32 declares for itself


@pytest.mark.parametrize("spec", ["q8", "ef:topk:0.01", "topk:0.05", "sign", "stoch-q4", "ef:randk:0.1"])
def test_encode_rows_is_encode_client_by_client(spec):
    """A block's payloads are byte for byte each client's ``encode``, and its decoded rows are ``decode``'s."""
    template = {"w": torch.zeros(12, 7), "b": torch.zeros(12)}
    rows = torch.randn(9, 96, generator=torch.Generator().manual_seed(1)) * 0.01
    rows[3, :5] = -0.0
    make = (lambda: QuantizeCodec(4, stochastic=True)) if spec == "stoch-q4" else \
        (lambda: registry.resolve_codec(spec, "uplink"))
    block, alone = make(), make()
    for _ in range(2):  # twice: error feedback's residuals carry over
        payloads, decoded = encode_rows(block, rows, list(range(9)), template)
        for i in range(9):
            update = {"w": rows[i, :84].reshape(12, 7).clone(), "b": rows[i, 84:].clone()}
            payload = alone.encode(update, i)
            assert payloads[i] == payload
            assert torch.equal(decoded[i], flatten(alone.decode(payload, template)))
        rows = rows * 1.5
    if isinstance(block, ErrorFeedback):
        assert all(torch.equal(flatten(block.residuals[c]), flatten(alone.residuals[c])) for c in range(9))


@pytest.mark.parametrize("spec", ["q8", "q4", "ef:topk:0.01", "topk:0.05", "ef:q8"])
def test_block_encoding_of_a_large_tensor_is_encode_client_by_client(spec):
    """A tensor too large to take over the whole block at once (the MLP's first layer) is taken a few
    rows at a time, a small one (a bias) over the whole block: either way ``encode``'s bytes."""
    template = {"w": torch.zeros(300, 250), "b": torch.zeros(300), "v": torch.zeros(7)}
    rows = torch.randn(11, 75_307, generator=torch.Generator().manual_seed(2)) * 0.01
    block, alone = registry.resolve_codec(spec, "uplink"), registry.resolve_codec(spec, "uplink")
    for _ in range(2):
        payloads, decoded = encode_rows(block, rows, list(range(11)), template)
        for i in range(11):
            update = {"w": rows[i, :75_000].reshape(300, 250).clone(), "b": rows[i, 75_000:75_300].clone(),
                      "v": rows[i, 75_300:].clone()}
            payload = alone.encode(update, i)
            assert payloads[i] == payload
            assert torch.equal(decoded[i], flatten(alone.decode(payload, template)))
        rows = rows * -1.5


@pytest.mark.parametrize("spec", FOLDING)
@pytest.mark.parametrize("stack", ["auto", "weights", "updates"])
def test_folding_equals_the_per_client_path(digits, spec, stack):
    """One stack or several, the folded round is the per-client round bit for bit."""
    clients = _clients(digits)
    model = make_model("mlp", digits.input_shape, 10, seed=0)
    per_client_bytes = 4 * count_parameters(model)
    common = dict(rounds=3, fraction=0.75, seed=2, progress=False, local=LocalTraining(epochs=2, batch_size=3, lr=0.1))
    test = (digits.x_test, digits.y_test)
    reference = run(model, clients, test, uplink=_Opaque(registry.resolve_codec(spec, "uplink")),
                    trainer=VmapTrainer(stack=stack), **common)
    one = run(model, clients, test, uplink=spec, trainer=VmapTrainer(stack=stack), **common)
    several = run(model, clients, test, uplink=spec, **common,
                  trainer=VmapTrainer(stack=stack, max_stack_bytes=5 * per_client_bytes))
    _identical(reference, one)
    _identical(reference, several)
    moved = max((p - q).abs().max().item() for p, q in zip(one.model.parameters(), model.parameters()))
    assert moved > 1e-3  # it really trained


def test_folding_sends_the_same_payloads_in_the_same_order(digits):
    clients = _clients(digits, count=20)
    model = make_model("mlp", digits.input_shape, 10, seed=0)
    common = dict(rounds=2, seed=0, progress=False, local=LocalTraining(batch_size=3, lr=0.1))
    test = (digits.x_test, digits.y_test)
    opaque, folding = _Opaque(ErrorFeedback(TopKCodec(0.02))), _Recording(ErrorFeedback(TopKCodec(0.02)))
    run(model, clients, test, uplink=opaque, trainer=VmapTrainer(), **common)
    h = run(model, clients, test, uplink=folding, trainer=VmapTrainer(max_stack_bytes=6 * 4 * count_parameters(model)),
            **common)
    assert folding.payloads == opaque.payloads and len(folding.payloads) == 40
    assert [row["bytes_up"] for row in h.records[0].client_rows] == [len(p) for p in folding.payloads[:20]]


@pytest.mark.parametrize("spec", ["q8", "ef:topk:0.01"])
def test_folding_with_late_clients_equals_the_per_client_path(digits, spec):
    """Clients left out after they were folded (late past a deadline): the survivors are averaged again
    from their payloads, and the run is still the per-client run bit for bit (error feedback encodes once)."""
    clients = _clients(digits, count=24)
    model = make_model("mlp", digits.input_shape, 10, seed=0)
    slow = dict(flops_per_s=1e6, speed_sigma=1.0, seed=3)
    common = dict(rounds=2, seed=1, progress=False, local=LocalTraining(epochs=1, batch_size=3, lr=0.1))
    test = (digits.x_test, digits.y_test)
    probe = run(model, clients, test, uplink=spec, trainer=VmapTrainer(), faults=Faults(**slow), **common)
    seconds = sorted(r["sim_time_s"] for r in probe.records[0].client_rows)
    faults = Faults(deadline_s=seconds[len(seconds) // 2], **slow)
    reference = run(model, clients, test, uplink=_Opaque(registry.resolve_codec(spec, "uplink")),
                    trainer=VmapTrainer(), faults=faults, **common)
    folded = run(model, clients, test, uplink=spec, faults=faults,
                 trainer=VmapTrainer(max_stack_bytes=5 * 4 * count_parameters(model)), **common)
    assert all(r.late for r in reference.records)
    _identical(reference, folded)


class _NanFromClient3(VmapTrainer):
    def train_stacked(self, model, received, clients, *args):
        block = super().train_stacked(model, received, clients, *args)
        ids = [cid for cid, _ in clients]
        if block is not None and 3 in ids:
            block.updates["1.weight"][block.rows[ids.index(3)]].fill_(float("nan"))
        return block


def test_folding_rejects_a_nan_client_before_encoding(digits):
    clients = _clients(digits, count=9)
    model = make_model("mlp", digits.input_shape, 10, seed=0)
    codec = ErrorFeedback(TopKCodec(0.05))
    h = run(model, clients, (digits.x_test, digits.y_test), rounds=2, seed=0, progress=False, uplink=codec,
            local=LocalTraining(batch_size=3, lr=0.1), trainer=_NanFromClient3(max_stack_bytes=4 * 4 * count_parameters(model)))
    assert [r.rejected for r in h.records] == [[3], [3]]
    assert 3 not in codec.residuals and len(codec.residuals) == 8  # never encoded: its memory stays clean
    assert h.records[0].client_rows[3]["bytes_up"] == 0
    assert all(torch.isfinite(p).all() for p in h.model.parameters())


def test_a_codec_that_declares_nothing_keeps_every_update_until_aggregation(digits):
    clients = _clients(digits, count=8)
    model = make_model("mlp", digits.input_shape, 10, seed=0)

    def results_of(uplink):
        protocol = FedAvgProtocol(model, uplink=uplink, trainer=VmapTrainer())
        protocol.setup(RoundContext(clients, (digits.x_test, digits.y_test), LocalTraining(batch_size=3), 0,
                                    torch.device("cpu"), digits.input_shape))
        protocol.broadcast(1, list(range(8)))
        return protocol.train(1, list(range(8)))

    assert all(r.update is None and r.finite for r in results_of("q8"))  # folded: nothing held per client
    assert all(isinstance(r.update, dict) for r in results_of(_Opaque(QuantizeCodec(8))))


def test_sign_and_random_k_fold_too():
    assert SignCodec.folds and RandomKCodec(0.1).folds and not RandomKCodec(0.1, values=_Opaque(QuantizeCodec(8))).folds


def test_error_feedback_on_the_folding_path_resumes_bit_for_bit(digits, tmp_path):
    """Its residuals live in large blocks of rows: a checkpoint saves them and a resumed run goes on exactly."""
    clients = _clients(digits, count=10)
    model = make_model("mlp", digits.input_shape, 10, seed=0)
    common = dict(seed=0, progress=False, uplink="ef:topk:0.02", local=LocalTraining(batch_size=3, lr=0.1),
                  trainer=VmapTrainer(max_stack_bytes=4 * 4 * count_parameters(model)))
    test = (digits.x_test, digits.y_test)
    whole = run(model, clients, test, rounds=3, **common)
    path = tmp_path / "ef.pt"
    run(model, clients, test, rounds=2, checkpoint=path, **common)
    resumed = run(model, clients, test, rounds=3, checkpoint=path, resume=True, **common)
    _identical(whole, resumed)
    reference = run(model, clients, test, rounds=3, **{**common, "uplink": _Opaque(ErrorFeedback(TopKCodec(0.02)))})
    _identical(whole, reference)
