"""The federated loop: FedAvg's math, determinism, the ledger's byte and FLOP counts, bad input."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from fedlab_utils.compression import Fp32Codec
from fedlab_utils.core import (
    ClientTransform,
    FedAvgServer,
    LocalTraining,
    client_generator,
    evaluate,
    model_state,
    run,
    sample_clients,
    state_delta,
    summary_table,
    train_locally,
    weighted_average,
)
from fedlab_utils.data import ClientData, client_data, partition
from fedlab_utils.ledger import PROFILES, training_flops_per_sample
from fedlab_utils.models import make_model


def tiny_clients(n_clients=3, sizes=(12, 20, 8), dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [ClientData(torch.randn(n, dim, generator=g), torch.randint(0, 3, (n,), generator=g)) for n in sizes[:n_clients]]


def tiny_model(dim=6):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(dim, 5), nn.ReLU(), nn.Linear(5, 3))


def test_weighted_average_known_updates_unequal_counts():
    updates = [{"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([0.0, 4.0])}, {"w": torch.tensor([2.0, 2.0])}]
    avg = weighted_average(updates, [10, 30, 60])
    # (10*[1,0] + 30*[0,4] + 60*[2,2]) / 100 = [1.3, 2.4]
    assert torch.allclose(avg["w"], torch.tensor([1.3, 2.4]))
    # not the plain mean [1, 2]
    assert not torch.allclose(avg["w"], torch.tensor([1.0, 2.0]))


def test_weighted_average_of_identical_updates_is_that_update():
    u = {"w": torch.tensor([0.5, -2.0]), "b": torch.tensor([3.0])}
    avg = weighted_average([u, u, u], [1, 50, 7])
    for k in u:
        assert torch.allclose(avg[k], u[k])


@pytest.mark.parametrize("weights", [[], [1.0, -1.0], [0.0, 0.0]])
def test_weighted_average_rejects_bad_weights(weights):
    updates = [{"w": torch.zeros(1)}] * max(1, len(weights))
    with pytest.raises(ValueError, match="weight"):
        weighted_average(updates if weights else [], weights)


def test_fedavg_aggregation_uses_real_sample_counts():
    clients = tiny_clients(sizes=(4, 40, 8))
    seen = {}

    def spy(results, global_model, round_idx):
        seen.update({r.client_id: r.num_samples for r in results})
        return weighted_average([r.update for r in results], [r.num_samples for r in results])

    run(tiny_model(), clients, (clients[0].x, clients[0].y), rounds=1, aggregate=spy, progress=False)
    assert seen == {0: 4, 1: 40, 2: 8}


def test_single_client_equals_local_training():
    (client,) = tiny_clients(1, sizes=(30,))
    model = tiny_model()
    local = LocalTraining(epochs=3, batch_size=7, lr=0.1)
    history = run(model, [client], (client.x, client.y), rounds=1, local=local, seed=5, progress=False)
    reference = copy.deepcopy(model)
    train_locally(reference, client, local, generator=client_generator(5, 1, 0))
    for key, value in model_state(reference).items():
        assert torch.allclose(history.model.state_dict()[key], value, atol=1e-6)


def test_identical_clients_average_to_one_clients_training():
    (client,) = tiny_clients(1, sizes=(16,))
    model = tiny_model()
    local = LocalTraining(epochs=2, batch_size=None, lr=0.1)  # full batch: order-free
    history = run(model, [client, client, client], (client.x, client.y), rounds=1, local=local, progress=False)
    single = run(model, [client], (client.x, client.y), rounds=1, local=local, progress=False)
    for key, value in single.model.state_dict().items():
        assert torch.allclose(history.model.state_dict()[key], value, atol=1e-6)


class ZeroUpdate(ClientTransform):
    def on_update(self, update, client_id):
        return {k: torch.zeros_like(v) for k, v in update.items()}


def test_zero_updates_leave_the_model_unchanged():
    clients = tiny_clients()
    model = tiny_model()
    history = run(model, clients, (clients[0].x, clients[0].y), rounds=2, transform=ZeroUpdate(), progress=False)
    for key, value in model.state_dict().items():
        assert torch.equal(history.model.state_dict()[key], value)


def test_history_is_deterministic_for_a_seed(digits):
    parts = partition(digits.y_train, 6, "dirichlet", alpha=0.5, seed=1)
    clients = client_data(digits, parts)
    model = make_model("mlp", digits.input_shape, 10, hidden=(16,))
    kw = dict(rounds=3, fraction=0.5, local=LocalTraining(batch_size=16), seed=3, progress=False)
    a = run(model, clients, (digits.x_test, digits.y_test), **kw)
    b = run(model, clients, (digits.x_test, digits.y_test), **kw)
    ra, rb = a.to_dict()["records"], b.to_dict()["records"]
    for x, y in zip(ra, rb):
        x.pop("wall_time_s"), y.pop("wall_time_s")
    assert ra == rb
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[key])
    c = run(model, clients, (digits.x_test, digits.y_test), **{**kw, "seed": 4})
    assert [r["clients"] for r in c.to_dict()["records"]] != [r["clients"] for r in ra] or c.accuracy != a.accuracy


def test_ledger_bytes_are_serialized_lengths_and_flops_are_measured(digits):
    parts = partition(digits.y_train, 4, "iid", seed=0)
    clients = client_data(digits, parts)
    model = make_model("mlp", digits.input_shape, 10, hidden=(16,))
    local = LocalTraining(epochs=2, batch_size=32)
    h = run(model, clients, (digits.x_test, digits.y_test), rounds=2, fraction=0.5, local=local, progress=False)
    update_bytes = len(Fp32Codec().encode(model_state(model)))
    assert update_bytes == 4 * sum(p.numel() for p in model.parameters())
    per_sample = training_flops_per_sample(model, digits.input_shape)
    for rec in h.records:
        assert len(rec.clients) == 2
        assert rec.bytes_up == update_bytes * 2 and rec.bytes_down == update_bytes * 2
        samples = sum(len(parts[c]) for c in rec.clients) * local.epochs
        assert rec.client_flops == per_sample * samples
        # energy is modelled per client-round (each pays its own radio sessions) and summed
        expected = sum(PROFILES["phone-lte"].energy(per_sample * len(parts[c]) * local.epochs, update_bytes,
                                                    update_bytes).total for c in rec.clients)
        assert rec.energy.total == pytest.approx(expected)
        assert [row["client_id"] for row in rec.client_rows] == rec.clients
        assert all(row["status"] == "accepted" for row in rec.client_rows)
    totals = h.totals()
    assert totals["bytes_up"] == sum(r.bytes_up for r in h.records)
    assert totals["measured_joules"] is None  # no meter on this machine, never invented
    assert "FedAvg" in repr(h) and "MB up" in repr(h)
    table = summary_table([h], target=0.5)
    assert table.loc["FedAvg", "MB up"] == pytest.approx(totals["bytes_up"] / 1e6)


def test_history_answers():
    clients = tiny_clients()
    h = run(tiny_model(), clients, (clients[1].x, clients[1].y), rounds=4, local=LocalTraining(lr=0.5), progress=False)
    target = h.accuracy[2]
    first = h.rounds_to_accuracy(target)
    assert first is not None and first <= 3 and h.accuracy[first - 1] >= target
    assert h.rounds_to_accuracy(1.01) is None and h.bytes_up_to_accuracy(1.01) is None
    assert h.bytes_up_to_accuracy(target) == int(h.cumulative("bytes_up")[first - 1])


def test_fedsgd_is_one_full_batch_step():
    clients = tiny_clients()
    h = run(tiny_model(), clients, (clients[0].x, clients[0].y), rounds=1,
            local=LocalTraining(epochs=1, batch_size=None, lr=0.1), progress=False)
    per_sample = training_flops_per_sample(tiny_model(), (6,))
    assert h.records[0].client_flops == per_sample * sum(len(c) for c in clients)


def test_server_lr_scales_the_step():
    clients = tiny_clients()
    model = tiny_model()
    full = run(model, clients, (clients[0].x, clients[0].y), rounds=1, progress=False)
    half = run(model, clients, (clients[0].x, clients[0].y), rounds=1, server=FedAvgServer(lr=0.5), progress=False)
    start = model_state(model)
    d_full = state_delta(model_state(full.model), start)
    d_half = state_delta(model_state(half.model), start)
    for k in d_full:
        assert torch.allclose(d_half[k], 0.5 * d_full[k], atol=1e-6)


def test_sample_clients_counts_and_range():
    rng = np.random.default_rng(0)
    chosen = sample_clients(10, 0.3, rng)
    assert len(chosen) == 3 and len(set(chosen)) == 3 and all(0 <= c < 10 for c in chosen)
    assert len(sample_clients(10, 0.01, rng)) == 1


@pytest.mark.parametrize("kwargs, name", [({"rounds": 0}, "rounds"), ({"fraction": 0.0}, "fraction"),
                                          ({"fraction": 1.5}, "fraction"), ({"energy_profile": "laptop"}, "energy_profile")])
def test_run_rejects_bad_arguments(kwargs, name):
    clients = tiny_clients()
    args = {"rounds": 1, **kwargs}
    with pytest.raises(ValueError, match=name):
        run(tiny_model(), clients, (clients[0].x, clients[0].y), progress=False, **args)


@pytest.mark.parametrize("kwargs, name", [({"epochs": 0}, "local_epochs"), ({"lr": 0}, "lr"),
                                          ({"optimizer": "lion"}, "optimizer"), ({"precision": "int4"}, "precision"),
                                          ({"batch_size": 0}, "batch_size")])
def test_local_training_rejects_bad_settings(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LocalTraining(**kwargs)


def test_local_training_names_the_argument_the_caller_passed():
    """``LocalTraining(epochs=0)`` says ``epochs=0`` (and the notebooks' name for it)."""
    with pytest.raises(ValueError, match=r"^LocalTraining epochs=0 is out of range.*local_epochs"):
        LocalTraining(epochs=0)


def test_bf16_precision_runs_on_cpu():
    clients = tiny_clients()
    h = run(tiny_model(), clients, (clients[0].x, clients[0].y), rounds=1,
            local=LocalTraining(precision="bf16"), progress=False)
    assert np.isfinite(h.final_accuracy)
    with pytest.raises(ValueError, match="fp16"):
        run(tiny_model(), clients, (clients[0].x, clients[0].y), rounds=1, local=LocalTraining(precision="fp16"),
            progress=False)


def test_evaluate_counts_correct_predictions():
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    acc, loss = evaluate(model, x, torch.tensor([0, 1, 1, 1]))
    assert acc == 0.75 and loss > 0


@pytest.mark.parametrize("weight_decay", [0.0, 5e-3])
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_plain_sgd_is_torch_sgd_bit_for_bit(arch, weight_decay):
    """train_locally's optimizer='sgd' path (PlainSGD) ends on exactly the weights torch.optim.SGD gives."""
    torch.manual_seed(0)
    data = ClientData(torch.randn(96, 1, 28, 28), torch.randint(0, 10, (96,)))
    model = make_model(arch, (1, 28, 28), 10)
    plain, reference = copy.deepcopy(model), copy.deepcopy(model)
    local = LocalTraining(epochs=2, batch_size=16, lr=0.05, weight_decay=weight_decay)
    train_locally(plain, data, local, generator=client_generator(0, 1, 0))
    torch_sgd = LocalTraining(epochs=2, batch_size=16, lr=0.05, weight_decay=weight_decay,
                              optimizer=lambda params, lr: torch.optim.SGD(params, lr=lr, weight_decay=weight_decay))
    train_locally(reference, data, torch_sgd, generator=client_generator(0, 1, 0))
    for (name, a), b in zip(plain.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, b) for a, b in zip(plain.state_dict().values(), model.state_dict().values()))


def test_a_fresh_process_running_fedavg_does_not_import_dynamo():
    """Building a torch.optim optimizer, or a first FlopCounterMode, imports torch._dynamo (0.5-1.5 s
    of a fresh process); a sequential FedAvg run of the course MLP with plain SGD needs neither."""
    import subprocess
    import sys

    script = ("import sys, torch\n"
              "from fedlab_utils.data import ClientData\n"
              "from fedlab_utils.core import LocalTraining, client_generator, train_locally\n"
              "from fedlab_utils.models import make_model\n"
              "data = ClientData(torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,)))\n"
              "from fedlab_utils.core import run\n"
              "run(make_model('mlp', (1, 28, 28), 10), [data, data], (data.x, data.y), rounds=2,\n"
              "    local=LocalTraining(batch_size=8), trainer='sequential', progress=False)\n"
              "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_vmap_trainer_knows_no_protocol():
    """The vmap trainer never mentions the protocol; that the core imports no lesson, course or
    deploy module is import-linter's contract (tests/test_architecture.py)."""
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "fedlab_utils"
    assert "protocol" not in (package / "core" / "vmap_trainer.py").read_text(encoding="utf-8").lower()
    assert len((package / "lessons" / "acceleration.py").read_text(encoding="utf-8").splitlines()) <= 300


def test_callbacks_see_the_run_and_every_round_with_the_complete_record(tmp_path):
    from fedlab_utils.core import Callback

    calls = []

    class Recorder(Callback):
        def on_run_start(self, history):
            calls.append(("run_start", len(history.records)))

        def on_round_start(self, round_idx, history):
            calls.append(("round_start", round_idx, len(history.records)))

        def on_round_end(self, record, history):
            assert record is history.records[-1]
            calls.append(("round_end", record.round, record.evaluated, record.accuracy == record.accuracy,
                          record.wall_time_s > 0, (tmp_path / "ck.json").exists()))

        def on_run_end(self, history):
            calls.append(("run_end", len(history.records), history.model is not None))

    torch.manual_seed(0)
    data = ClientData(torch.randn(24, 1, 8, 8), torch.randint(0, 3, (24,)))
    model = make_model("mlp", (1, 8, 8), 3, hidden=(8,))
    history = run(model, [data, data], (data.x, data.y), rounds=3, eval_every=2, progress=False,
                  local=LocalTraining(batch_size=8), checkpoint=tmp_path / "ck.json", callbacks=[Recorder()])
    assert calls == [("run_start", 0),
                     ("round_start", 1, 0), ("round_end", 1, False, False, True, True),
                     ("round_start", 2, 1), ("round_end", 2, True, True, True, True),
                     ("round_start", 3, 2), ("round_end", 3, True, True, True, True),
                     ("run_end", 3, True)]
    assert [r.round for r in history.records] == [1, 2, 3]
