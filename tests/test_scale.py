"""Rounds larger than one vmap stack: trained in slices, folded into FedAvg slice by slice.

The chunked path must give the run the unchunked path gives (accuracy, bytes, FLOPs, joules
exactly; weights up to float32 rounding, as only the order of the weighted sum changes), hold
one block at a time, and count bytes as ``len()`` of the payloads the clients send.
"""
import numpy as np
import pytest
import torch

from fedlab_utils.compression import Fp32Codec
from fedlab_utils.core import MAX_STACK_BYTES, Faults, FedAvgProtocol, LocalTraining, RoundContext, VmapTrainer, run
from fedlab_utils.data import ClientData, client_data, partition
from fedlab_utils.models import count_parameters, make_model


def _tiny_clients(digits, count=30, per=6, seed=0):
    """Cross-device clients: ``per`` samples each, drawn with replacement (as ``bench_scale`` draws them)."""
    picks = np.random.default_rng(seed).integers(0, len(digits.y_train), size=(count, per))
    return [ClientData(digits.x_train[p], digits.y_train[p]) for p in picks]


def _bytes_per_client(model) -> int:
    return 4 * count_parameters(model)


class _Recording(VmapTrainer):
    """A vmap trainer that records every block it hands out: its rows' fp32 payloads (copied, as the
    next block reuses the buffers), its number of rows and its buffers' addresses."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.blocks = []

    def train_stacked(self, model, received, clients, *args):
        block = super().train_stacked(model, received, clients, *args)
        if block is not None:
            payloads = {cid: Fp32Codec().encode({k: d[block.rows[i]] for k, d in block.updates.items()})
                        for i, (cid, _) in enumerate(clients)}
            self.blocks.append({"rows": len(clients), "payloads": payloads,
                                "address": next(iter(block.updates.values())).data_ptr()})
        return block


def _chunked_round(digits, clients, model, per_stack: int, local: LocalTraining):
    """A FedAvg protocol whose vmap stacks hold ``per_stack`` clients, set up and broadcast to every
    client, and its round trained: ``(protocol, results)``."""
    protocol = FedAvgProtocol(model, trainer=VmapTrainer(max_stack_bytes=per_stack * _bytes_per_client(model)))
    protocol.setup(RoundContext(clients, (digits.x_test, digits.y_test), local, 0, torch.device("cpu"),
                                digits.input_shape))
    protocol.broadcast(1, list(range(len(clients))))
    return protocol, protocol.train(1, list(range(len(clients))))


def _max_weight_gap(a, b) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.model.parameters(), b.model.parameters()))


def _same_run(a, b) -> None:
    """Accuracy, bytes, FLOPs and joules identical; weights (hence later losses) up to float32 rounding."""
    assert a.accuracy == b.accuracy
    assert [r.bytes_up for r in a.records] == [r.bytes_up for r in b.records]
    assert [r.bytes_down for r in a.records] == [r.bytes_down for r in b.records]
    assert [r.client_flops for r in a.records] == [r.client_flops for r in b.records]
    assert [r.energy.total for r in a.records] == [r.energy.total for r in b.records]
    assert [(r.dropped, r.late, r.rejected) for r in a.records] == [(r.dropped, r.late, r.rejected) for r in b.records]
    assert [r.train_loss for r in a.records] == pytest.approx([r.train_loss for r in b.records], abs=1e-6)
    assert _max_weight_gap(a, b) < 1e-6


def test_stack_slices_are_balanced_and_fit_the_budget(digits):
    model = make_model("mlp", digits.input_shape, 10, seed=0)
    per = _bytes_per_client(model)
    trainer = VmapTrainer(max_stack_bytes=7 * per + 1)
    assert trainer.group_size(model) == 7
    slices = trainer.stack_slices(model, 30)
    assert [stop - start for start, stop in slices] == [6, 6, 6, 6, 6]  # 5 stacks of at most 7, nearly equal
    assert slices[0][0] == 0 and slices[-1][1] == 30 and all(a[1] == b[0] for a, b in zip(slices, slices[1:]))
    assert trainer.stack_slices(model, 7) == [(0, 7)]
    assert VmapTrainer(max_group=4, max_stack_bytes=None).stack_slices(model, 9) == [(0, 3), (3, 6), (6, 9)]
    assert VmapTrainer(max_stack_bytes=1).group_size(model) == 1  # never less than one client
    assert VmapTrainer(max_stack_bytes=None).group_size(model) is None
    with pytest.raises(ValueError, match="max_stack_bytes"):
        VmapTrainer(max_stack_bytes=0)
    assert repr(VmapTrainer()) == "VmapTrainer(max_group=None)"  # History.config of the default is unchanged


def test_the_default_budget_is_above_every_notebook_round():
    """Lesson 04's largest vmap round (4 × 200 clients of the MNIST MLP) fits one stack, so the
    course's runs never take the chunked path; 10,000 such clients do not."""
    mnist_mlp = make_model("mlp", (1, 28, 28), 10, seed=0)
    assert VmapTrainer().stack_slices(mnist_mlp, 800) == [(0, 800)]
    assert 800 * _bytes_per_client(mnist_mlp) < MAX_STACK_BYTES
    assert len(VmapTrainer().stack_slices(mnist_mlp, 10_000)) == 4


@pytest.mark.parametrize("faults", [None, Faults(dropout=0.25, seed=1)])
def test_chunked_round_equals_one_stack(digits, faults):
    clients = _tiny_clients(digits)
    model = make_model("mlp", digits.input_shape, 10, seed=0)
    common = dict(rounds=3, fraction=0.8, seed=2, progress=False, faults=faults,
                  local=LocalTraining(epochs=2, batch_size=4, lr=0.1))
    whole = run(model, clients, (digits.x_test, digits.y_test), trainer=VmapTrainer(), **common)
    chunked_trainer = _Recording(max_stack_bytes=5 * _bytes_per_client(model))
    chunked = run(model, clients, (digits.x_test, digits.y_test), trainer=chunked_trainer, **common)
    _same_run(whole, chunked)
    assert max(b["rows"] for b in chunked_trainer.blocks) <= 5 < 24  # never one stack of the round
    moved = max((p - q).abs().max().item() for p, q in zip(whole.model.parameters(), model.parameters()))
    assert moved > 1e-2  # it really trained
    # an odd budget: stacks of unequal size reuse the first stack's buffers
    odd = run(model, clients, (digits.x_test, digits.y_test), trainer=VmapTrainer(max_group=7), **common)
    _same_run(whole, odd)


def test_chunked_round_with_late_clients_equals_one_stack(digits):
    """Clients past the deadline are left out of their slice's sum as the slice is folded (the run's
    deadline rule is known as soon as a client's result is): every slice is trained once a round, and
    the run is the one-stack run."""
    clients = _tiny_clients(digits, count=24)
    model = make_model("mlp", digits.input_shape, 10, seed=0)
    slow = dict(flops_per_s=1e6, speed_sigma=1.0, seed=3)
    common = dict(rounds=2, seed=1, progress=False, local=LocalTraining(epochs=1, batch_size=3, lr=0.1))
    probe = run(model, clients, (digits.x_test, digits.y_test), trainer=VmapTrainer(), faults=Faults(**slow), **common)
    seconds = sorted(r["sim_time_s"] for r in probe.records[0].client_rows)
    faults = Faults(deadline_s=seconds[len(seconds) // 2], **slow)
    whole = run(model, clients, (digits.x_test, digits.y_test), trainer=VmapTrainer(), faults=faults, **common)
    trainer = _Recording(max_stack_bytes=5 * _bytes_per_client(model))
    chunked = run(model, clients, (digits.x_test, digits.y_test), faults=faults, trainer=trainer, **common)
    assert all(r.late for r in whole.records)
    slices = trainer.stack_slices(model, len(clients))
    assert len(slices) == 5 and len(trainer.blocks) == 2 * len(slices)  # no slice trained twice
    _same_run(whole, chunked)
    sequential = run(model, clients, (digits.x_test, digits.y_test), faults=faults, **common)
    assert _max_weight_gap(sequential, chunked) < 1e-5


def test_chunked_round_refuses_a_caller_that_leaves_out_a_folded_client(digits):
    """A caller that drops a client by a rule of its own (not the run's deadline rule) cannot get a sum
    that still holds that client: the fast path says so instead of averaging it."""
    clients = _tiny_clients(digits, count=12)
    model = make_model("mlp", digits.input_shape, 10, seed=0)
    protocol, results = _chunked_round(digits, clients, model, 5, LocalTraining(lr=0.1))
    assert all(r.finite for r in results) and protocol.stacked.pending is not None
    with pytest.raises(RuntimeError, match="deadline rule"):
        protocol.aggregate(1, results[1:])
    protocol.train(1, list(range(12)))
    protocol.aggregate(1, results)  # every client it folded: accepted


def test_chunked_uplink_counts_the_payloads_and_holds_one_block(digits):
    clients = _tiny_clients(digits, count=20)
    model = make_model("mlp", digits.input_shape, 10, seed=0)
    trainer = _Recording(max_stack_bytes=6 * _bytes_per_client(model))
    h = run(model, clients, (digits.x_test, digits.y_test), rounds=2, seed=0, progress=False, trainer=trainer,
            local=LocalTraining(batch_size=3, lr=0.1))
    assert [b["rows"] for b in trainer.blocks] == [5, 5, 5, 5] * 2  # 4 stacks a round, one after the other
    assert len({b["address"] for b in trainer.blocks}) == 1  # every stack trained in the same buffers
    for r, blocks in zip(h.records, (trainer.blocks[:4], trainer.blocks[4:])):
        payloads = {cid: p for b in blocks for cid, p in b["payloads"].items()}
        assert sorted(payloads) == list(range(20))
        assert [row["bytes_up"] for row in r.client_rows] == [len(payloads[c]) for c in range(20)]
        assert r.bytes_up == 20 * _bytes_per_client(model)


def test_chunked_results_keep_no_update(digits):
    """What a chunked round hands back holds no update tensor: each is already in its slice's sum."""
    clients = _tiny_clients(digits, count=12)
    model = make_model("mlp", digits.input_shape, 10, seed=0)
    protocol, results = _chunked_round(digits, clients, model, 4, LocalTraining(batch_size=3))
    assert all(r.update is None and r.finite for r in results)
    assert len(protocol.stacked.pending.parts) == 3  # one partial sum per stack


class _NanFromClient3(VmapTrainer):
    """Client 3's update turns NaN, in whichever stack it is trained."""

    def train_stacked(self, model, received, clients, *args):
        block = super().train_stacked(model, received, clients, *args)
        ids = [cid for cid, _ in clients]
        if block is not None and 3 in ids:
            block.updates["1.weight"][block.rows[ids.index(3)]].fill_(float("nan"))
        return block


def test_chunked_round_rejects_a_nan_client_and_keeps_the_model_finite(digits):
    clients = client_data(digits, partition(digits.y_train, 9, "iid", seed=0))
    model = make_model("mlp", digits.input_shape, 10, seed=0)
    common = dict(rounds=2, seed=0, progress=False, local=LocalTraining(lr=0.1))
    h = run(model, clients, (digits.x_test, digits.y_test), trainer=_NanFromClient3(
        max_stack_bytes=3 * _bytes_per_client(model)), **common)
    assert [r.rejected for r in h.records] == [[3], [3]]
    assert all(torch.isfinite(p).all() for p in h.model.parameters())
    rows = h.records[0].client_rows
    assert rows[3]["bytes_up"] == 0 and all(r["bytes_up"] == _bytes_per_client(model) for r in rows if r["client_id"] != 3)
    _same_run(run(model, clients, (digits.x_test, digits.y_test), trainer=_NanFromClient3(), **common), h)
