"""Real federations lose clients: dropouts, stragglers past a deadline, NaN updates, raising clients."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from fedlab_utils.compression import Fp32Codec
from fedlab_utils.core import ClientTransform, Faults, LocalTraining, model_state, run
from fedlab_utils.data import ClientData
from fedlab_utils.ledger import Energy, get_profile
from fedlab_utils.validation import check_real

DIM = 6


def tiny_clients(sizes=(12, 20, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [ClientData(torch.randn(n, DIM, generator=g), torch.randint(0, 3, (n,), generator=g)) for n in sizes]


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(DIM, 5), nn.ReLU(), nn.Linear(5, 3))


def run_tiny(clients, **kw):
    test = (clients[0].x, clients[0].y) if len(clients[0]) else (torch.randn(4, DIM), torch.zeros(4, dtype=torch.long))
    return run(tiny_model(), clients, test, rounds=kw.pop("rounds", 2), local=LocalTraining(lr=0.2, batch_size=8),
               progress=False, **kw)


def states_equal(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_nan_client_is_rejected_and_the_model_stays_finite():
    clients = tiny_clients()
    poisoned = ClientData(torch.full_like(clients[1].x, float("nan")), clients[1].y)
    h = run_tiny([clients[0], poisoned, clients[2]], rounds=3)
    assert all(torch.isfinite(v).all() for v in h.model.state_dict().values())
    assert [r.rejected for r in h.records] == [[1], [1], [1]]
    assert h.totals()["rejected"] == 3 and h.summary()["rejected"] == 3
    # rejected, never averaged: the same as a federation of the two healthy clients (ids kept)
    healthy = run_tiny([clients[0], ClientData(clients[1].x[:0], clients[1].y[:0]), clients[2]], rounds=3)
    assert states_equal(h.model, healthy.model)
    assert math.isfinite(h.final_accuracy)


def test_dropout_one_keeps_the_model_and_still_counts_the_downlink():
    clients = tiny_clients()
    h = run_tiny(clients, faults=Faults(dropout=1.0, seed=3))
    assert states_equal(h.model, tiny_model())
    model_bytes = len(Fp32Codec().encode(model_state(tiny_model())))
    profile = get_profile("phone-lte")
    for r in h.records:
        assert r.dropped == [0, 1, 2] and r.bytes_up == 0 and r.client_flops == 0
        assert r.bytes_down == 3 * model_bytes
        expected = sum((profile.energy(0, 0, model_bytes) for _ in range(3)), Energy())
        assert r.energy.downlink == pytest.approx(expected.downlink) and r.energy.downlink > 0
        assert r.wasted_joules == pytest.approx(r.energy.total)
    assert h.totals()["dropped"] == 6


def test_dropout_is_seeded_and_about_the_right_share():
    clients = tiny_clients(sizes=(5,) * 20)
    a = run_tiny(clients, rounds=3, faults=Faults(dropout=0.5, seed=1))
    b = run_tiny(clients, rounds=3, faults=Faults(dropout=0.5, seed=1))
    assert [r.dropped for r in a.records] == [r.dropped for r in b.records]
    assert 10 <= a.totals()["dropped"] <= 50  # 60 draws at p = 0.5
    for r in a.records:
        assert r.bytes_up == 4 * sum(p.numel() for p in tiny_model().parameters()) * (20 - len(r.dropped))


def test_skip_survives_a_raising_client_and_raise_names_it():
    class Broken(ClientTransform):
        def on_receive(self, model, client_id, round_idx):
            if client_id == 2:
                raise RuntimeError("battery died")

    clients = tiny_clients()
    with pytest.raises(RuntimeError, match="client 2 raised in round 1.*battery died"):
        run_tiny(clients, transform=Broken())
    h = run_tiny(clients, transform=Broken(), on_client_error="skip")
    assert [r.failed for r in h.records] == [[2], [2]]
    without = run_tiny(clients[:2])  # the same federation without client 2 (ids 0 and 1 unchanged)
    assert states_equal(h.model, without.model)
    with pytest.raises(ValueError, match="on_client_error"):
        run_tiny(clients, on_client_error="ignore")


def test_a_client_with_no_samples_does_not_crash():
    clients = tiny_clients()
    empty = ClientData(clients[0].x[:0], clients[0].y[:0])
    h = run_tiny([empty, clients[1], clients[2]])
    assert all(torch.isfinite(v).all() for v in h.model.state_dict().values())
    only_empty = run_tiny([empty], rounds=1, faults=None)
    assert states_equal(only_empty.model, tiny_model())  # nothing to average: the model is kept


def test_straggler_time_by_hand_and_late_updates_are_discarded():
    clients = tiny_clients()
    profile = get_profile("phone-lte")
    faults = Faults(flops_per_s=1e6, speed_sigma=0.0, seed=0)
    h = run_tiny(clients, rounds=1, faults=faults)
    r = h.records[0]
    times = {}
    for row in r.client_rows:  # download + compute at 1 MFLOP/s + upload
        by_hand = (8 * row["bytes_down"] / (profile.downlink_mbps * 1e6) + row["flops"] / 1e6
                   + 8 * row["bytes_up"] / (profile.uplink_mbps * 1e6))
        assert row["sim_time_s"] == pytest.approx(by_hand)
        times[row["client_id"]] = by_hand
    assert r.sim_time_s == pytest.approx(max(times.values())) and r.late == []
    # a deadline between the fastest and the slowest client
    slowest = max(times, key=times.get)
    deadline = (sorted(times.values())[-2] + times[slowest]) / 2
    h2 = run_tiny(clients, rounds=1, faults=Faults(flops_per_s=1e6, speed_sigma=0.0, deadline_s=deadline))
    r2 = h2.records[0]
    assert r2.late == [slowest] and r2.sim_time_s == deadline
    late_row = next(row for row in r2.client_rows if row["client_id"] == slowest)
    assert r2.wasted_joules == pytest.approx(late_row["energy"].total) and r2.wasted_joules > 0
    assert r2.bytes_up == r.bytes_up  # the late update was sent, then thrown away
    without = run_tiny([c if i != slowest else ClientData(c.x[:0], c.y[:0]) for i, c in enumerate(clients)], rounds=1)
    assert states_equal(h2.model, without.model)
    # everyone late: the model is kept
    h3 = run_tiny(clients, rounds=1, faults=Faults(flops_per_s=1e6, speed_sigma=0.0, deadline_s=1e-9))
    assert h3.records[0].late == [0, 1, 2] and states_equal(h3.model, tiny_model())
    assert h3.totals()["late"] == 3 and h3.sim_time_to_accuracy(0.0) == pytest.approx(1e-9)


def test_device_speeds_are_log_normal_per_client():
    f = Faults(speed_sigma=0.5, seed=2)
    speeds = np.array([f.device_speed(c, 1, 1e9) for c in range(400)])
    assert np.median(speeds) == pytest.approx(1e9, rel=0.15)
    assert np.std(np.log(speeds)) == pytest.approx(0.5, rel=0.15)
    assert f.device_speed(7, 1, 1e9) == f.device_speed(7, 5, 1e9)  # no jitter: a client keeps its device


@pytest.mark.parametrize("kwargs, name", [({"dropout": 1.5}, "dropout"), ({"dropout": float("nan")}, "dropout"),
                                          ({"deadline_s": 0}, "deadline_s"), ({"deadline_s": float("inf")}, "deadline_s"),
                                          ({"flops_per_s": -1.0}, "flops_per_s"), ({"speed_sigma": -0.1}, "speed_sigma"),
                                          ({"seed": -1}, "seed")])
def test_faults_validate_their_fields(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Faults(**kwargs)


def test_check_real_rejects_nan():
    with pytest.raises(ValueError, match="lr=nan.*NaN"):
        check_real("lr", float("nan"), 0.0)
    with pytest.raises(ValueError, match="faults"):
        run_tiny(tiny_clients(), faults={"dropout": 0.1})


def test_a_client_with_no_samples_sends_nothing_and_is_charged_nothing():
    clients = tiny_clients()
    empty = ClientData(clients[1].x[:0], clients[1].y[:0])
    model_bytes = 4 * sum(p.numel() for p in tiny_model().parameters())
    h = run_tiny([clients[0], empty, clients[2]], rounds=2, faults=Faults(dropout=0.0, flops_per_s=1e6))
    for r in h.records:
        row = next(row for row in r.client_rows if row["client_id"] == 1)
        assert row["status"] == "empty" and row["bytes_up"] == row["bytes_down"] == row["flops"] == 0
        assert row["energy"].total == 0 and row["sim_time_s"] is None
        assert r.bytes_up == r.bytes_down == 2 * model_bytes  # the two clients with data only
        assert r.energy.total == pytest.approx(sum(row["energy"].total for row in r.client_rows))
        assert 1 in r.clients and 1 not in r.dropped + r.late + r.rejected + r.failed
    # what the round costs is what it costs without the empty client sampled at all
    two = run_tiny([clients[0], clients[2]], rounds=2, faults=Faults(dropout=0.0, flops_per_s=1e6))
    assert h.totals()["joules_total"] == pytest.approx(two.totals()["joules_total"])
    assert h.totals()["bytes_up"] == two.totals()["bytes_up"]
    # a dropout draw does not apply to it: it never took part
    h_drop = run_tiny([clients[0], empty, clients[2]], rounds=2, faults=Faults(dropout=1.0))
    assert all(1 not in r.dropped for r in h_drop.records)
