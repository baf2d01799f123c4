"""Tests for fedlab_utils.lessons.acceleration: server optimizers against hand computations, the vmap
trainer against the sequential one, mixed precision on the CPU, the pitfall demos, the checks."""
import copy
import math

import numpy as np
import pytest
import torch

from fedlab_utils.checks import acceleration as checks
from fedlab_utils.compression import Fp32Codec, unflatten
from fedlab_utils.core import (
    ClientTransform,
    Faults,
    FedAdagrad,
    FedAdam,
    FedAvgM,
    FedAvgProtocol,
    FedAvgServer,
    FedProx,
    FedYogi,
    History,
    LocalTraining,
    RoundContext,
    RoundRecord,
    SequentialTrainer,
    VmapTrainer,
    apply_delta,
    fedavgm_step,
    joules_to_target,
    make_server,
    make_trainer,
    resolve_trainer,
    rounds_to_target,
    run,
    vmap_trainer,
    weighted_average,
)
from fedlab_utils.core.vmap_trainer import _mlp_layers
from fedlab_utils.data import client_data, partition
from fedlab_utils.ledger import Energy, mlp_training_flops_per_sample, time_train_step, time_trainer
from fedlab_utils.lessons import acceleration as acc
from fedlab_utils.models import make_model


# ----------------------------------------------------------------------------- server steps by hand
def _two_params():
    """A 2-parameter model's state (Linear(1, 1): one weight, one bias) and two server updates."""
    state = {"weight": torch.tensor([[1.0]]), "bias": torch.tensor([-2.0])}
    updates = [{"weight": torch.tensor([[0.1]]), "bias": torch.tensor([-0.2])},
               {"weight": torch.tensor([[0.3]]), "bias": torch.tensor([0.1])},
               {"weight": torch.tensor([[0.0]]), "bias": torch.tensor([0.05])}]
    return state, updates


def _as_floats(state):
    return [state["weight"].item(), state["bias"].item()]


def test_fedavgm_matches_hand_computation():
    state, updates = _two_params()
    server = FedAvgM(lr=1.0, momentum=0.9)
    x1 = server.step(state, updates[0])  # v = Δ1 = (0.1, -0.2);  x = (1.1, -2.2)
    assert _as_floats(x1) == pytest.approx([1.1, -2.2], abs=1e-6)
    x2 = server.step(x1, updates[1])  # v = 0.9·(0.1, -0.2) + (0.3, 0.1) = (0.39, -0.08)
    assert _as_floats(server.velocity) == pytest.approx([0.39, -0.08], abs=1e-6)
    assert _as_floats(x2) == pytest.approx([1.49, -2.28], abs=1e-6)
    half = FedAvgM(lr=0.5, momentum=0.9)
    assert _as_floats(half.step(half.step(state, updates[0]), updates[1])) == pytest.approx(
        [1.0 + 0.5 * 0.1 + 0.5 * 0.39, -2.0 - 0.5 * 0.2 - 0.5 * 0.08], abs=1e-6)


def _scalar_fedopt(x0, deltas, variant, lr, b1, b2, tau):
    """Reddi et al. Algorithm 2 for one coordinate, in plain Python floats."""
    x, m, v = x0, 0.0, tau ** 2
    for d in deltas:
        m = b1 * m + (1 - b1) * d
        if variant == "adagrad":
            v = v + d * d
        elif variant == "adam":
            v = b2 * v + (1 - b2) * d * d
        else:
            v = v - (1 - b2) * d * d * math.copysign(1.0, v - d * d) if v != d * d else v
        x = x + lr * m / (math.sqrt(v) + tau)
    return x


@pytest.mark.parametrize("variant", ["adam", "yogi", "adagrad"])
def test_adaptive_servers_match_hand_computation(variant):
    state, updates = _two_params()
    server = {"adam": FedAdam, "yogi": FedYogi, "adagrad": FedAdagrad}[variant](lr=0.1)
    x = state
    for r in range(1, 4):
        x = server.step(x, updates[r - 1])
        expected = [_scalar_fedopt(x0, [u[key].item() for u in updates[:r]], variant, 0.1, 0.9, 0.99, 1e-3)
                    for x0, key in ((1.0, "weight"), (-2.0, "bias"))]
        assert _as_floats(x) == pytest.approx(expected, rel=1e-5, abs=1e-6), f"round {r}"


def test_first_adam_step_by_hand():
    # m = 0.1·0.1 = 0.01; v = 0.99·1e-6 + 0.01·0.01 = 1.0099e-4; step = 0.1·0.01/(√v + 1e-3)
    state, updates = _two_params()
    x = FedAdam(lr=0.1).step(state, updates[0])
    assert x["weight"].item() == pytest.approx(1.0 + 0.1 * 0.01 / (math.sqrt(1.0099e-4) + 1e-3), rel=1e-6)


def test_yogi_differs_from_adam_when_updates_shrink():
    state, updates = _two_params()
    big = {"weight": torch.tensor([[1.0]]), "bias": torch.tensor([1.0])}
    small = {"weight": torch.tensor([[1e-3]]), "bias": torch.tensor([1e-3])}
    adam, yogi = FedAdam(lr=0.1), FedYogi(lr=0.1)
    for u in (big, small, small):
        adam.step(state, u)
        yogi.step(state, u)
    # Adam's v decays multiplicatively, Yogi's additively: Yogi keeps the larger v here.
    assert yogi.v["weight"].item() > adam.v["weight"].item()


def test_fedavgm_momentum_zero_is_fedavg_bitwise():
    gen = torch.Generator().manual_seed(0)
    state = {"w": torch.randn(5, 3, generator=gen)}
    server, reference = FedAvgM(lr=0.7, momentum=0.0), FedAvgServer(lr=0.7)
    x, y = state, state
    for _ in range(4):
        update = {"w": torch.randn(5, 3, generator=gen)}
        x, y = server.step(x, update), reference.step(y, update)
        assert torch.equal(x["w"], y["w"])


def _federation(digits, num_clients=6, method="iid", seed=0):
    parts = partition(digits.y_train, num_clients, method, alpha=0.3, seed=seed)
    return client_data(digits, parts)


def test_fedavgm_momentum_zero_equals_fedavg_in_the_loop(digits):
    clients = _federation(digits)
    model = make_model("mlp", digits.input_shape, 10)
    common = dict(rounds=3, fraction=0.5, local=LocalTraining(lr=0.1), seed=1)
    h_avg = run(model, clients, (digits.x_test, digits.y_test), **common)
    h_m0 = run(model, clients, (digits.x_test, digits.y_test), server=FedAvgM(momentum=0.0), **common)
    h_m9 = run(model, clients, (digits.x_test, digits.y_test), server=FedAvgM(momentum=0.9), **common)
    assert h_avg.accuracy == h_m0.accuracy
    for p, q in zip(h_avg.model.parameters(), h_m0.model.parameters()):
        assert torch.equal(p, q)
    assert any(not torch.equal(p, q) for p, q in zip(h_avg.model.parameters(), h_m9.model.parameters()))


def test_make_server_builds_fresh_validated_servers():
    assert isinstance(make_server("fedavg"), FedAvgServer)
    a, b = make_server("fedadam", lr=0.03), make_server("fedadam", lr=0.03)
    state, updates = _two_params()
    a.step(state, updates[0])
    assert a.m is not None and b.m is None
    a.reset()
    assert a.m is None
    with pytest.raises(ValueError, match="server"):
        make_server("fedsgd")
    with pytest.raises(ValueError, match="server_lr"):
        make_server("fedyogi", lr=-1.0)
    with pytest.raises(ValueError, match="server_momentum"):
        FedAvgM(momentum=1.0)


# ----------------------------------------------------------------------------- FedProx
def test_fedprox_regularizer_by_hand():
    model = torch.nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.bias.fill_(-1.0)
    global_state = {"weight": torch.tensor([[1.0]]), "bias": torch.tensor([0.0])}
    # μ/2·((3−1)² + (−1−0)²) = 0.1/2·5 = 0.25
    assert FedProx(mu=0.1).regularizer(model, global_state).item() == pytest.approx(0.25)
    assert FedProx(mu=0.0).regularizer(model, global_state) is None
    with pytest.raises(ValueError, match="mu"):
        FedProx(mu=-1)


def test_fedprox_keeps_clients_closer_to_global(digits):
    clients = _federation(digits, method="dirichlet")[:2]
    model = make_model("mlp", digits.input_shape, 10)
    received = {k: v.detach().clone() for k, v in model.state_dict().items()}
    local = LocalTraining(epochs=3, lr=0.1)
    pairs = list(enumerate(clients))

    def drift(transform):
        out = SequentialTrainer()(model, received, pairs, local, 1, 0, transform)
        return sum(float(sum((u[k] ** 2).sum() for k in u)) for u, _, _ in out)

    assert drift(FedProx(mu=1.0)) < drift(ClientTransform())


# ----------------------------------------------------------------------------- vmap trainer
def _max_weight_diff(h1, h2):
    return max((p - q).abs().max().item() for p, q in zip(h1.model.parameters(), h2.model.parameters()))


@pytest.mark.parametrize("stack", ["weights", "updates"])
@pytest.mark.parametrize("local, transform, min_accuracy", [
    (LocalTraining(epochs=2, batch_size=32, lr=0.1), None, 0.5),
    (LocalTraining(epochs=1, batch_size=None, lr=0.2, weight_decay=1e-3), FedProx(mu=0.1), 0.0),
])
def test_vmap_trainer_equals_sequential(digits, local, transform, min_accuracy, stack):
    # 1437 samples in 6 IID clients: sizes 240 and 239, so two size groups are exercised.
    clients = _federation(digits, 6)
    assert len({len(c) for c in clients}) == 2
    model = make_model("mlp", digits.input_shape, 10)
    common = dict(rounds=3, fraction=1.0, local=local, seed=3, transform=transform)
    h_seq = run(model, clients, (digits.x_test, digits.y_test), **common)
    h_vec = run(model, clients, (digits.x_test, digits.y_test), trainer=VmapTrainer(stack=stack), **common)
    assert np.allclose(h_seq.accuracy, h_vec.accuracy, atol=1e-4)
    assert _max_weight_diff(h_seq, h_vec) < 1e-4
    assert [r.train_loss for r in h_seq.records] == pytest.approx([r.train_loss for r in h_vec.records], abs=1e-4)
    assert h_seq.totals()["client_flops"] == h_vec.totals()["client_flops"]
    assert h_seq.accuracy[-1] > min_accuracy  # it really trained


def test_vmap_trainer_equals_sequential_on_a_cnn_with_sampling(digits):
    clients = _federation(digits, 4)
    model = make_model("cnn", digits.input_shape, 10, channels=(4,))
    common = dict(rounds=2, fraction=0.5, local=LocalTraining(batch_size=64, lr=0.1), seed=5)
    h_seq = run(model, clients, (digits.x_test, digits.y_test), **common)
    h_vec = run(model, clients, (digits.x_test, digits.y_test), trainer=VmapTrainer(max_group=1), **common)
    assert _max_weight_diff(h_seq, h_vec) < 1e-4


@pytest.mark.parametrize("local, transform, match", [
    (LocalTraining(optimizer="adam"), None, "optimizer"),
    (LocalTraining(precision="bf16"), None, "precision"),
    (LocalTraining(), type("Mask", (ClientTransform,), {})(), "transform"),
])
def test_vmap_trainer_refuses_what_it_cannot_reproduce(digits, local, transform, match):
    clients = _federation(digits, 2)
    model = make_model("mlp", digits.input_shape, 10)
    with pytest.raises(ValueError, match=match):
        run(model, clients, (digits.x_test, digits.y_test), rounds=1, local=local, transform=transform,
            trainer=VmapTrainer())


@pytest.mark.parametrize("stack", ["weights", "updates"])
def test_vmap_trainer_equals_sequential_on_unequal_clients_with_faults(digits, stack):
    # Dirichlet(0.3): sizes differ, so clients stop at different steps and last batches are padded.
    clients = _federation(digits, 8, method="dirichlet", seed=2)
    assert len({len(c) for c in clients}) > 4
    model = make_model("mlp", digits.input_shape, 10, hidden=(32, 16))
    common = dict(rounds=3, fraction=0.75, local=LocalTraining(epochs=2, batch_size=16, lr=0.1), seed=4,
                  faults=Faults(dropout=0.3, seed=1))
    h_seq = run(model, clients, (digits.x_test, digits.y_test), **common)
    h_vec = run(model, clients, (digits.x_test, digits.y_test), trainer=VmapTrainer(stack=stack), **common)
    assert any(r.dropped for r in h_seq.records)  # the stacked uplink also averages a subset of its rows
    assert [r.dropped for r in h_seq.records] == [r.dropped for r in h_vec.records]
    assert _max_weight_diff(h_seq, h_vec) < 1e-4
    assert [r.bytes_up for r in h_seq.records] == [r.bytes_up for r in h_vec.records]
    assert [r.train_loss for r in h_seq.records] == pytest.approx([r.train_loss for r in h_vec.records], abs=1e-4)


@pytest.mark.parametrize("stack", ["weights", "updates"])
def test_mlp_fast_path_equals_torch_func(digits, stack):
    """One round of the hand-written batched MLP step against vmap(grad(functional_call)), with FedProx
    and weight decay, on clients of different sizes."""
    clients = _federation(digits, 5, method="dirichlet", seed=1)
    model = make_model("mlp", digits.input_shape, 10, hidden=(24, 12))
    received = {k: v.detach().clone() for k, v in model.state_dict().items()}
    local = LocalTraining(epochs=2, batch_size=20, lr=0.1, weight_decay=1e-2)
    pairs = list(enumerate(clients))
    fast = VmapTrainer(stack=stack)(model, received, pairs, local, 1, 0, FedProx(mu=0.5))
    original = vmap_trainer._mlp_layers
    vmap_trainer._mlp_layers = lambda m: None  # force the torch.func path
    try:
        generic = VmapTrainer()(model, received, pairs, local, 1, 0, FedProx(mu=0.5))
    finally:
        vmap_trainer._mlp_layers = original
    for (s1, l1, n1), (s2, l2, n2) in zip(fast, generic):
        assert n1 == n2 and l1 == pytest.approx(l2, abs=1e-5)
        assert max((s1[k] - s2[k]).abs().max().item() for k in s1) < 1e-5


@pytest.mark.parametrize("hidden", [(), (16,), (32, 8)])
def test_mlp_flop_formula_equals_flop_counter(hidden):
    from fedlab_utils.ledger import training_flops_per_sample

    model = make_model("mlp", (1, 8, 8), 10, hidden=hidden)
    assert mlp_training_flops_per_sample(_mlp_layers(model)) == training_flops_per_sample(model, (1, 8, 8))


def test_mlp_layers_accepts_only_what_the_fast_path_computes():
    assert _mlp_layers(make_model("mlp", (1, 8, 8), 10, hidden=(16, 8))) is not None
    assert _mlp_layers(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))) is None
    assert _mlp_layers(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())) is None
    assert _mlp_layers(make_model("cnn", (1, 8, 8), 10, channels=(4,))) is None


class _CountingFp32(Fp32Codec):
    """The fp32 codec under another type: the stacked uplink must not apply to it."""


@pytest.mark.parametrize("stack", ["weights", "updates"])
def test_stacked_fp32_uplink_sends_exactly_the_fp32_payloads(digits, stack):
    clients = _federation(digits, 4, method="dirichlet", seed=3)
    model = make_model("mlp", digits.input_shape, 10)
    test = (digits.x_test, digits.y_test)
    trainer = VmapTrainer(stack=stack)
    protocol = FedAvgProtocol(model, trainer=trainer)
    protocol.setup(RoundContext(clients, test, LocalTraining(lr=0.1), 0, torch.device("cpu"), digits.input_shape))
    protocol.broadcast(1, [0, 1, 2, 3])
    pairs = [(c, clients[c]) for c in range(4)]
    reference = SequentialTrainer()(copy.deepcopy(model), protocol.received, pairs, LocalTraining(lr=0.1), 1, 0,
                                    ClientTransform())
    results = protocol.train(1, [0, 1, 2, 3])
    block = protocol.stacked.pending.block  # the stacked path ran: its round is pending, as one block
    for r, (expected, _, _) in zip(results, reference):
        assert r.finite is True
        assert max((r.update[k] - expected[k]).abs().max().item() for k in expected) < 1e-5
        payload = Fp32Codec().encode(r.update)  # what the per-client path would have sent for this update
        assert r.bytes_up == len(payload) == 4 * sum(v.numel() for v in expected.values())
    for r in results:  # the zero-copy slices of the stack are byte for byte the fp32 payload
        wire = b"".join(memoryview(r.update[k].numpy()).cast("B") for k in protocol.received)
        assert wire == Fp32Codec().encode(r.update)
        assert all(r.update[k]._base is block.updates[k] for k in protocol.received)
    pending = protocol.stacked.pending
    got = protocol.stacked.average(results)
    expected = weighted_average([r.update for r in results], [r.num_samples for r in results])
    assert all(torch.allclose(got[k], expected[k], atol=1e-7) for k in expected)
    assert protocol.stacked.pending is None  # average() ends the round
    protocol.stacked.pending = pending  # the same round again, with two of its clients left out
    subset = protocol.stacked.average(results[1:3])
    expected_subset = weighted_average([r.update for r in results[1:3]], [r.num_samples for r in results[1:3]])
    assert all(torch.allclose(subset[k], expected_subset[k], atol=1e-7) for k in expected_subset)
    other = FedAvgProtocol(model, trainer=VmapTrainer(stack=stack), uplink=_CountingFp32())
    other.setup(RoundContext(clients, test, LocalTraining(lr=0.1), 0, torch.device("cpu"), digits.input_shape))
    other.broadcast(1, [0, 1])
    fallback = other.train(1, [0, 1])
    assert all(r.finite is None for r in fallback)  # the per-client path, from the trainer's updates
    for r, (expected, _, _) in zip(fallback, reference[:2]):
        assert max((r.update[k] - expected[k]).abs().max().item() for k in expected) < 1e-5


def test_vmap_stack_form_follows_the_rows_after_the_first_step():
    """``stack='auto'`` keeps updates when the later local steps are short (the stack passes it saves
    outweigh the shared products it adds), weights otherwise; and names a wrong choice."""
    def plan(sizes):
        return vmap_trainer._schedule(sizes, [torch.Generator().manual_seed(i) for i in range(len(sizes))], 32, 1,
                             torch.device("cpu"))

    auto = VmapTrainer()
    assert auto._stack_updates(plan([40] * 100), 100)         # 8 rows per client after the first batch
    assert auto._stack_updates(plan([96] * 10), 10)           # 64: the limit
    assert not auto._stack_updates(plan([97] * 10), 10)       # 65
    assert not auto._stack_updates(plan([400] * 10), 10)      # 368
    assert VmapTrainer(stack="updates")._stack_updates(plan([400] * 10), 10)
    assert not VmapTrainer(stack="weights")._stack_updates(plan([40] * 100), 100)
    with pytest.raises(ValueError, match="stack='deltas'.*auto"):
        VmapTrainer(stack="deltas")


class _NanAfterTraining(VmapTrainer):
    def train_stacked(self, *args):
        block = super().train_stacked(*args)
        block.updates["0.weight" if "0.weight" in block.updates else "1.weight"][0].fill_(float("nan"))
        return block


def test_stacked_uplink_rejects_a_nan_client_and_keeps_the_model_finite(digits):
    clients = _federation(digits, 4)
    model = make_model("mlp", digits.input_shape, 10)
    h = run(model, clients, (digits.x_test, digits.y_test), rounds=2, local=LocalTraining(lr=0.1),
            trainer=_NanAfterTraining())
    assert all(len(r.rejected) == 1 for r in h.records)
    assert all(torch.isfinite(p).all() for p in h.model.parameters())
    assert h.records[0].bytes_up == 3 * 4 * sum(p.numel() for p in model.parameters())


class _CountingChecks(VmapTrainer):
    checks = 0

    @staticmethod
    def check_supported(model, local, transform):
        _CountingChecks.checks += 1
        VmapTrainer.check_supported(model, local, transform)


@pytest.mark.parametrize("uplink", ["fp32", "q8"])
def test_vmap_trainer_checks_its_setup_before_round_1_not_every_round(digits, uplink):
    clients = _federation(digits, 4, method="dirichlet", seed=3)
    model = make_model("mlp", digits.input_shape, 10)
    counts = []
    for rounds in (1, 3):
        _CountingChecks.checks = 0
        run(model, clients, (digits.x_test, digits.y_test), rounds=rounds, uplink=uplink, trainer=_CountingChecks(),
            progress=False)
        counts.append(_CountingChecks.checks)
    assert counts[0] == counts[1] <= 2  # run's preflight, and the trainer's first call


def test_trainer_auto_picks_vmap_when_supported_and_says_so(digits):
    clients = _federation(digits, 3)
    model = make_model("mlp", digits.input_shape, 10)
    test = (digits.x_test, digits.y_test)
    h = run(model, clients, test, rounds=1, trainer="auto")
    assert h.config["trainer"].startswith("VmapTrainer")
    h_adam = run(model, clients, test, rounds=1, trainer="auto", local=LocalTraining(optimizer="adam"))
    assert h_adam.config["trainer"] == "SequentialTrainer()"
    assert run(model, clients, test, rounds=1).config["trainer"] == "SequentialTrainer()"
    assert isinstance(resolve_trainer("vmap", model=model, local=LocalTraining()), VmapTrainer)
    with pytest.raises(ValueError, match="trainer"):
        run(model, clients, test, rounds=1, trainer="fastest")


def test_vmap_mlp_round_imports_no_dynamo():
    """The first optimizer step of torch.optim imports torch._dynamo (about a second); the MLP fast path
    has no optimizer object, so a fresh process never pays for it."""
    import subprocess
    import sys

    code = ("import sys, torch\n"
            "from fedlab_utils.data import load_dataset, partition, client_data\n"
            "from fedlab_utils.core import run\n"
            "from fedlab_utils.models import make_model\n"
            "ds = load_dataset('mnist5k')\n"
            "clients = client_data(ds, partition(ds.y_train, 4, 'iid'))\n"
            "h = run(make_model('mlp', ds.input_shape, 10), clients, (ds.x_test, ds.y_test), rounds=1,"
            " trainer='auto', progress=False)\n"
            "print(h.config['trainer'], 'torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "False", out.stdout + out.stderr
    assert out.stdout.startswith("VmapTrainer")


def test_make_trainer():
    assert isinstance(make_trainer("sequential"), SequentialTrainer)
    assert isinstance(make_trainer("vmap"), VmapTrainer)
    with pytest.raises(ValueError, match="trainer"):
        make_trainer("threads")


def test_time_trainer_reports_positive_rates(digits):
    clients = _federation(digits, 4)
    model = make_model("mlp", digits.input_shape, 10)
    out = time_trainer(VmapTrainer(), model, clients, LocalTraining(), repeats=1)
    assert out["seconds"] > 0 and out["client_updates_per_s"] == pytest.approx(4 / out["seconds"])


# ----------------------------------------------------------------------------- mixed precision on the CPU
def test_bf16_training_runs_on_cpu(digits):
    clients = _federation(digits, 2)
    model = make_model("mlp", digits.input_shape, 10)
    h = run(model, clients, (digits.x_test, digits.y_test), rounds=2, local=LocalTraining(lr=0.1, precision="bf16"))
    assert all(math.isfinite(r.train_loss) for r in h.records) and h.accuracy[-1] > 0.3
    step = time_train_step(model, digits.x_train[:64], digits.y_train[:64], precision="bf16", steps=2)
    assert step["step_ms"] > 0 and step["precision"] == "bf16"


def test_fp16_needs_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present: fp16 is allowed")
    model = make_model("mlp", (4,), 2)
    with pytest.raises(ValueError, match="fp16"):
        time_train_step(model, torch.randn(8, 4), torch.zeros(8, dtype=torch.long), precision="fp16", steps=1)


# ----------------------------------------------------------------------------- the article's pitfall
def test_article_loop_learns_nothing():
    losses = acc.article_loop(steps=600, seed=0)
    # fresh noise targets: the best possible expected MSE is the noise variance, 1.0
    assert 0.8 < np.mean(losses[200:]) < 1.2
    fixed = acc.fixed_data_loop(steps=300, seed=0)
    assert fixed["losses"][-1] < 0.1 < fixed["losses"][0]


def test_adamw_is_adam_without_weight_decay():
    same = acc.adam_vs_adamw(steps=50, weight_decay=0.0)
    assert same["max_weight_diff"] == 0.0 and same["adam"] == same["adamw"]
    assert acc.adam_vs_adamw(steps=50, weight_decay=0.1)["max_weight_diff"] > 0


# ----------------------------------------------------------------------------- reading a History
def _history(accuracies, joules):
    h = History("t")
    for r, (a, j) in enumerate(zip(accuracies, joules), start=1):
        h.records.append(RoundRecord(round=r, clients=[0], accuracy=a, loss=0.0, train_loss=0.0, bytes_up=0, bytes_down=0,
                                     client_flops=0, wall_time_s=0.0, energy=Energy(compute=j)))
    return h


def test_rounds_and_joules_to_target():
    h = _history([0.5, 0.8, 0.7, 0.9], [1.0, 2.0, 3.0, 4.0])
    assert rounds_to_target(h, 0.8) == 2 and joules_to_target(h, 0.8) == pytest.approx(3.0)
    assert rounds_to_target(h, 0.95) is None and joules_to_target(h, 0.95) is None


# ----------------------------------------------------------------------------- exercise checks, both ways
def test_check_fedavgm_step_accepts_the_solution():
    checks.check_fedavgm_step(fedavgm_step)


def _ema_fedavgm(global_state, update, velocity, lr, momentum):
    velocity = velocity or {k: torch.zeros_like(v) for k, v in update.items()}
    velocity = {k: momentum * velocity[k] + (1 - momentum) * update[k] for k in update}
    return apply_delta(global_state, velocity, lr), velocity


def _no_memory_fedavgm(global_state, update, velocity, lr, momentum):
    return apply_delta(global_state, update, lr), update


@pytest.mark.parametrize("wrong", [_ema_fedavgm, _no_memory_fedavgm])
def test_check_fedavgm_step_rejects_wrong_answers(wrong):
    with pytest.raises(AssertionError, match="momentum"):
        checks.check_fedavgm_step(wrong)


def test_check_fedavgm_step_stub_gives_a_hint():
    def stub(*args):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="not implemented"):
        checks.check_fedavgm_step(stub)


def _to_target(history, target):
    return rounds_to_target(history, target), joules_to_target(history, target)


def test_check_to_target_accepts_the_solution():
    checks.check_to_target(_to_target)


@pytest.mark.parametrize("wrong", [
    lambda h, t: (next((i for i, a in enumerate(h.accuracy) if a >= t), None), 0.0),  # 0-based
    lambda h, t: _to_target(h, t + 1e-9),  # strict >
    lambda h, t: (rounds_to_target(h, t), sum(r.energy.total for r in h.records)),  # all joules
    lambda h, t: (rounds_to_target(h, t) or 0, joules_to_target(h, t) or 0.0),  # no None
])
def test_check_to_target_rejects_wrong_answers(wrong):
    with pytest.raises(AssertionError):
        checks.check_to_target(wrong)


def test_check_to_target_stub_gives_a_hint():
    def stub(history, target):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="not implemented"):
        checks.check_to_target(stub)


def test_vmap_round_data_is_rebuilt_when_a_client_changes(digits):
    clients = _federation(digits, 3)
    trainer = VmapTrainer()
    x1, _ = trainer._round_data(clients)
    assert trainer._round_data(clients)[0] is x1  # same tensors, unchanged: reused
    clients[1].x.mul_(1.0)  # an in-place change bumps the version counter
    x2, _ = trainer._round_data(clients)
    assert x2 is not x1 and torch.equal(x2, torch.cat([c.x for c in clients]))
    assert trainer._round_data(clients[::-1])[0].data_ptr() != x2.data_ptr()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
def test_vmap_trainer_equals_sequential_on_cuda(digits, model_name):
    """The GPU path: MLP fast path and torch.func path, stacked uplink, clients of different sizes."""
    device = torch.device("cuda")
    clients = client_data(digits, partition(digits.y_train, 6, "dirichlet", alpha=0.3, seed=0), device)
    model = make_model(model_name, digits.input_shape, 10, **({"channels": (4,)} if model_name == "cnn" else {}))
    common = dict(rounds=2, local=LocalTraining(batch_size=32, lr=0.1), seed=1, transform=FedProx(mu=0.01))
    h_seq = run(model, clients, (digits.x_test, digits.y_test), **common)
    h_vec = run(model, clients, (digits.x_test, digits.y_test), trainer="auto", **common)
    assert h_vec.config["trainer"].startswith("VmapTrainer") and h_vec.config["device"].startswith("cuda")
    assert _max_weight_diff(h_seq, h_vec) < 1e-4
    assert [r.bytes_up for r in h_seq.records] == [r.bytes_up for r in h_vec.records]
