"""The ledger's FLOPs, energy model and meters; codecs' byte counts; devices and seeding."""
import dataclasses

import pytest
import torch
from torch import nn

from fedlab_utils.compression import Fp32Codec, flatten, unflatten
from fedlab_utils.devices import available_devices, get_device, get_devices, seed_everything
from fedlab_utils.ledger import (
    LTE,
    PROFILES,
    WIFI,
    Energy,
    EnergyMeter,
    RaplCounter,
    forward_flops,
    get_profile,
    nvml_device_for,
    radio_timeline,
    training_flops_per_sample,
)


def test_flops_of_a_known_linear_layer():
    layer = nn.Linear(10, 5)
    assert forward_flops(layer, (10,)) == 2 * 10 * 5
    # backward of the first layer needs only the weight gradient (input needs none): 2*10*5 more
    assert training_flops_per_sample(layer, (10,)) == 2 * (2 * 10 * 5)
    two = nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 3))
    # forward 100 + 30; backward: layer 1 weight grad 100, layer 2 weight + input grads 30 + 30
    assert training_flops_per_sample(two, (10,)) == 100 + 30 + 100 + 30 + 30


def test_flop_measurement_leaves_the_model_untouched():
    model = nn.Linear(4, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    training_flops_per_sample(model, (4,))
    assert model.weight.grad is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_radio_model_matches_huang_et_al_formula():
    # P = alpha*t + beta (mW) at t Mbps -> (alpha + beta/t) nJ per bit
    assert LTE.joules_per_bit(6.0, "up") == pytest.approx((438.39 + 1288.04 / 6.0) * 1e-9)
    lte = PROFILES["phone-lte"]
    assert 640e-9 < lte.joules_per_bit_up < 660e-9 and 140e-9 < lte.joules_per_bit_down < 160e-9
    wifi = PROFILES["phone-wifi"]
    assert 290e-9 < wifi.joules_per_bit_up < 310e-9 and 140e-9 < wifi.joules_per_bit_down < 150e-9
    assert PROFILES["edge-gpu-wifi"].joules_per_flop == pytest.approx(42.4e-12, rel=0.01)


def test_energy_is_linear_and_user_settable():
    p = PROFILES["phone-lte"]
    e = p.energy(1e9, 1000, 2000, include_fixed=False)
    assert e.compute == pytest.approx(1e9 * 100e-12)
    assert e.uplink == pytest.approx(8000 * p.joules_per_bit_up)
    assert e.downlink == pytest.approx(16000 * p.joules_per_bit_down)
    assert e.radio_fixed == 0.0
    assert e.total == pytest.approx(e.compute + e.uplink + e.downlink)
    assert (e + e).total == pytest.approx(2 * e.total)
    full = p.energy(1e9, 1000, 2000)
    assert (full.compute, full.uplink, full.downlink) == (e.compute, e.uplink, e.downlink)
    assert full.total == pytest.approx(e.total + full.radio_fixed)
    assert (full + full).radio_fixed == pytest.approx(2 * full.radio_fixed)
    assert full.to_dict()["radio_fixed"] == full.radio_fixed and full.to_dict()["total"] == full.total
    mine = dataclasses.replace(p, joules_per_flop=20e-12)
    assert mine.energy(1e9, 0, 0).compute == pytest.approx(0.02)
    assert get_profile(mine) is mine
    with pytest.raises(ValueError, match="energy_profile='satellite'"):
        get_profile("satellite")
    assert "J" in repr(Energy(1.0, 2.0, 3.0)) and "radio fixed 4" in repr(Energy(1.0, 2.0, 3.0, 4.0))
    assert Energy(1.0, 2.0, 3.0, 4.0).total == 10.0
    with pytest.raises(ValueError, match="bytes_up=-1"):
        p.energy(0, -1, 0)


# ---- radio model: promotion and tail (Huang et al. 2012, Table 3), hand-computed timelines
P_PRO, T_PRO, P_TAIL, T_TAIL = 1.2107, 0.2601, 1.060, 11.576  # LTE, in W and s


def test_lte_radio_constants_and_session_cost():
    assert (LTE.promotion_mw, LTE.promotion_s, LTE.tail_mw, LTE.tail_s) == (1210.7, 0.2601, 1060.0, 11.576)
    assert (WIFI.promotion_mw, WIFI.promotion_s, WIFI.tail_mw, WIFI.tail_s) == (124.4, 0.0791, 119.3, 0.2381)
    # one isolated session: 1.2107*0.2601 + 1.06*11.576 = 0.31490 + 12.27056 = 12.5855 J
    assert LTE.session_joules == pytest.approx(12.58546, abs=1e-4)
    assert WIFI.session_joules == pytest.approx(0.1244 * 0.0791 + 0.1193 * 0.2381)


def test_one_byte_each_way_costs_a_radio_session_on_lte():
    e = PROFILES["phone-lte"].energy(0, 1, 1)
    assert e.total >= 1.0
    # no compute: download, upload right after it (no gap), one promotion and one full tail
    assert e.radio_fixed == pytest.approx(P_PRO * T_PRO + P_TAIL * T_TAIL)
    assert e.uplink + e.downlink < 1e-5
    assert PROFILES["phone-lte"].energy(0, 1, 1, include_fixed=False).total < 1e-5


def test_timeline_one_transfer_hand_computed():
    phases = radio_timeline(LTE, [("upload", 2.0, 3.0)])
    assert [(ph.name, ph.start_s, ph.duration_s) for ph in phases] == [
        ("promotion", 0.0, T_PRO), ("upload", T_PRO, 2.0), ("tail", T_PRO + 2.0, T_TAIL)]
    assert sum(ph.joules for ph in phases) == pytest.approx(P_PRO * T_PRO + 3.0 * 2.0 + P_TAIL * T_TAIL)
    # the profile: a zero-byte direction makes no transfer, so an upload alone is one session
    p = PROFILES["phone-lte"]
    e = p.energy(0, 6e6 / 8, 0)  # 6 Mbit at 6 Mbps: exactly one second of upload
    assert p.transfer_seconds(6e6 / 8, "up") == pytest.approx(1.0)
    assert e.uplink == pytest.approx((438.39 * 6 + 1288.04) * 1e-3 * 1.0)  # P = alpha*t + beta for 1 s
    assert e.radio_fixed == pytest.approx(P_PRO * T_PRO + P_TAIL * T_TAIL)
    assert e.downlink == 0.0


def test_timeline_two_transfers_inside_one_tail_share_a_session():
    # download 1 s, compute 3 s (< 11.576 s tail), upload 0.5 s: the tail is cut short at 3 s
    phases = radio_timeline(LTE, [("download", 1.0, 2.0), ("compute", 3.0, 0.5), ("upload", 0.5, 4.0)])
    names = [ph.name for ph in phases]
    assert names.count("promotion") == 1 and names.count("tail") == 2
    tails = [ph for ph in phases if ph.name == "tail"]
    assert tails[0].duration_s == pytest.approx(3.0) and tails[0].start_s == pytest.approx(T_PRO + 1.0)
    assert tails[1].duration_s == pytest.approx(T_TAIL)
    fixed = sum(ph.joules for ph in phases if ph.name in ("promotion", "tail"))
    assert fixed == pytest.approx(P_PRO * T_PRO + P_TAIL * 3.0 + P_TAIL * T_TAIL)
    # the same through a profile: 5 GFLOP/s, so 15 GFLOPs are 3 s of compute
    p = PROFILES["phone-lte"]
    e = p.energy(15e9, 1000, 1000)
    assert e.radio_fixed == pytest.approx(P_PRO * T_PRO + P_TAIL * 3.0 + P_TAIL * T_TAIL)
    assert e.compute == pytest.approx(15e9 * 100e-12)


def test_timeline_two_transfers_farther_apart_than_the_tail_pay_twice():
    phases = radio_timeline(LTE, [("download", 1.0, 2.0), ("compute", 20.0, 0.5), ("upload", 0.5, 4.0)])
    assert [ph.name for ph in phases if ph.name in ("promotion", "tail")] == ["promotion", "tail", "promotion", "tail"]
    fixed = sum(ph.joules for ph in phases if ph.name in ("promotion", "tail"))
    assert fixed == pytest.approx(2 * (P_PRO * T_PRO + P_TAIL * T_TAIL))
    upload = next(ph for ph in phases if ph.name == "upload")
    assert upload.start_s == pytest.approx(T_PRO + 1.0 + 20.0 + T_PRO)  # waits for its own promotion
    # WiFi's tail is 0.238 s: a 1 s compute gap already costs two sessions
    p = PROFILES["phone-wifi"]
    assert p.energy(5e9, 1000, 1000).radio_fixed == pytest.approx(2 * WIFI.session_joules)


def test_dropped_client_pays_download_session_and_bytes_stop_mattering_on_lte():
    p = PROFILES["phone-lte"]
    dropped = p.energy(0, 0, 400_000)
    assert dropped.uplink == 0 and dropped.radio_fixed == pytest.approx(LTE.session_joules)
    # the floor dominates: 200 B vs 200 KB uplink differ by < 10 % of the client-round on LTE
    small, big = p.energy(1e8, 200, 200_000), p.energy(1e8, 200_000, 200_000)
    assert big.total / small.total < 1.1
    assert p.radio_floor() == pytest.approx(LTE.session_joules)
    assert small.radio_fixed > 10 * (small.uplink + small.downlink + small.compute)


def test_custom_profile_speed_changes_the_tail_not_the_bytes():
    p = PROFILES["phone-lte"]
    slow = dataclasses.replace(p, flops_per_second=1e9)  # 1 GFLOP/s: 5e9 FLOPs take 5 s
    assert slow.energy(5e9, 100, 100).radio_fixed == pytest.approx(P_PRO * T_PRO + P_TAIL * 5.0 + P_TAIL * T_TAIL)
    assert slow.energy(5e9, 100, 100).uplink == p.energy(5e9, 100, 100).uplink


# ---- real meters: RAPL wrap-around and NVML device index
def _rapl_zone(tmp_path, energy_uj, max_uj=1_000_000):
    (tmp_path / "energy_uj").write_text(f"{energy_uj}\n")
    (tmp_path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return tmp_path


def test_rapl_counter_unwraps_past_max_energy_range(tmp_path):
    zone = _rapl_zone(tmp_path, 900_000)
    counter = RaplCounter(zone)
    assert counter.read() == 0.0
    (zone / "energy_uj").write_text("950000\n")
    assert counter.read() == pytest.approx(0.05)
    (zone / "energy_uj").write_text("100000\n")  # wrapped: 50_000 to the max, +1 to zero, +100_000
    assert counter.read() == pytest.approx((50_000 + 1 + 100_000 + 50_000) / 1e6)
    meter = EnergyMeter("cpu", rapl_zone=_rapl_zone(tmp_path, 10))
    assert meter.available and "RAPL" in meter.source and meter.read() == 0.0
    assert not EnergyMeter("cpu", rapl_zone=tmp_path / "absent").available


def test_nvml_device_follows_cuda_visible_devices():
    assert nvml_device_for(0, visible="") == ("index", 0)
    assert nvml_device_for(1, visible="") == ("index", 1)
    assert nvml_device_for(0, visible="2,3") == ("index", 2)
    assert nvml_device_for(1, visible=" 2, 3 ") == ("index", 3)
    assert nvml_device_for(0, visible="GPU-8a3b") == ("uuid", "GPU-8a3b")
    with pytest.raises(ValueError, match="cuda:2"):
        nvml_device_for(2, visible="0,1")


def test_meter_reports_not_available_instead_of_inventing():
    meter = EnergyMeter("cpu")
    if not meter.available:
        assert meter.read() is None and meter.source == "not available"
    else:  # RAPL readable on this machine: a real, monotone counter
        assert meter.read() >= 0


def test_fp32_codec_round_trips_and_counts_four_bytes_per_value():
    update = {"a": torch.randn(3, 4), "b": torch.randn(5)}
    codec = Fp32Codec()
    payload = codec.encode(update)
    assert isinstance(payload, bytes) and len(payload) == 4 * 17
    back = codec.decode(payload, update)
    assert all(torch.equal(back[k], update[k]) for k in update)
    with pytest.raises(ValueError, match="payload holds"):
        unflatten(flatten(update)[:-1], update)


def test_get_device_auto_and_errors(capsys):
    device = get_device("auto")
    assert device.type in {"cpu", "cuda", "mps"}
    assert "Using device" in capsys.readouterr().out
    with pytest.raises(ValueError, match="device='tpu'"):
        get_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available"):
            get_device("cuda")
    with pytest.raises(ValueError, match="cuda:99"):
        get_device("cuda:99")


def test_get_devices_returns_n_usable_placements(capsys, monkeypatch):
    import fedlab_utils.devices

    monkeypatch.setattr(fedlab_utils.devices, "_shown_notices", set())  # as in a fresh process: the notice not yet shown
    placements = get_devices(3)
    assert len(placements) == 3
    x = torch.ones(2)
    for p in placements:
        assert (x.to(p) * 2).sum().item() == 4.0
    if not any(d.startswith("cuda") for d in available_devices()):
        assert "virtual devices" in capsys.readouterr().out
    with pytest.raises(ValueError, match="n=0"):
        get_devices(0)


def test_seed_everything_reproduces_draws():
    seed_everything(11)
    a = torch.randn(3)
    seed_everything(11)
    assert torch.equal(a, torch.randn(3))
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)


def test_energy_for_prices_run_totals_per_client_round():
    p = PROFILES["phone-lte"]
    one = p.energy(2e9, 50_000, 80_000)
    ten = p.energy_for(10 * 2e9, 10 * 50_000, 10 * 80_000, client_rounds=10)
    assert ten.total == pytest.approx(10 * one.total)
    assert ten.radio_fixed == pytest.approx(10 * one.radio_fixed)
    # pricing totals as ONE client-round would count one radio session for ten
    assert p.energy(10 * 2e9, 10 * 50_000, 10 * 80_000).radio_fixed < 0.2 * ten.radio_fixed
    with pytest.raises(ValueError, match="client_rounds=0"):
        p.energy_for(1, 1, 1, client_rounds=0)


def test_price_history_prices_each_client_row_or_equal_shares():
    from types import SimpleNamespace

    from fedlab_utils.ledger import price_history

    p = PROFILES["phone-lte"]
    row = {"flops": 1e8, "bytes_up": 1000, "bytes_down": 2000}
    with_rows = SimpleNamespace(records=[SimpleNamespace(round=1, clients=[0, 1], client_rows=[row, row])])
    totals_only = SimpleNamespace(records=[SimpleNamespace(round=1, clients=[0, 1], client_rows=[], client_flops=2e8,
                                                           bytes_up=2000, bytes_down=4000)])
    assert price_history(with_rows, p).total == pytest.approx(2 * p.energy(1e8, 1000, 2000).total)
    assert price_history(totals_only, "phone-lte").total == pytest.approx(2 * p.energy(1e8, 1000, 2000).total)
    assert price_history(with_rows, p, include_fixed=False).radio_fixed == 0


def test_every_price_of_a_run_is_price_rows_summed():
    """One pricing function: the loop's recorded joules, price_history, energy_by_profile, the capstone's
    price/cumulative_joules and joules_to_target all equal sums of ledger.price_rows, exactly."""
    import numpy as np

    from fedlab_utils.core import Faults, joules_to_target, run
    from fedlab_utils.data import ClientData
    from fedlab_utils.ledger import energy_by_profile, price_history, price_rows
    from fedlab_utils.lessons import capstone

    g = torch.Generator().manual_seed(0)
    clients = [ClientData(torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)) for n in (9, 14, 6)]
    torch.manual_seed(0)
    h = run(nn.Sequential(nn.Linear(6, 3)), clients, (clients[0].x, clients[0].y), rounds=3, progress=False,
            faults=Faults(dropout=0.3, seed=1), energy_profile="phone-wifi")
    rows = price_rows(h, h.profile)
    assert [len(r) for r in rows] == [len(rec.client_rows) for rec in h.records]
    assert [sum(r, Energy()) for r in rows] == h.round_energy()  # what the loop recorded, bit for bit
    for name in PROFILES:
        flat = [e for r in price_rows(h, name) for e in r]
        assert price_history(h, name) == sum(flat, Energy())
        assert energy_by_profile(h)[name]["total"] == price_history(h, name).total
        assert capstone.price(h, name) == price_history(h, name)
        assert list(capstone.cumulative_joules(h, name)) == list(np.cumsum([sum(e.total for e in r)
                                                                            for r in price_rows(h, name)]))
    assert joules_to_target(h, 0.0) == sum(rows[0], Energy()).total
    assert price_rows(h, "phone-lte", include_fixed=False)[0][0].radio_fixed == 0


@pytest.mark.filterwarnings("ignore:LSTM with projections")
def test_lstm_flops_are_counted_in_closed_form_where_flopcountermode_sees_none():
    """FlopCounterMode counts nothing inside PyTorch's fused LSTM (LEAF's char LSTM came out as its
    head's 122,880 FLOPs); the ledger adds the gate matmuls for the shapes the LSTM really ran on."""
    from torch.utils.flop_counter import FlopCounterMode

    from fedlab_utils.ledger import (
        lstm_forward_flops_per_step,
        lstm_training_flops_per_sample,
        training_flops_per_layer,
    )
    from fedlab_utils.models import make_model

    model = make_model("char_lstm", (80,), 80, seed=0)
    expected = 3 * (80 * (2 * 4 * 256 * (8 + 256) + 2 * 4 * 256 * (256 + 256)) + 2 * 256 * 80)
    assert expected == 381_542_400
    assert training_flops_per_sample(model, (80,)) == lstm_training_flops_per_sample(model, 80) == expected
    assert forward_flops(model, (80,)) == expected // 3
    per_layer = training_flops_per_layer(model, (80,))
    assert per_layer == {"2.lstm": expected - 3 * 2 * 256 * 80, "3": 3 * 2 * 256 * 80}
    with FlopCounterMode(display=False) as counter:  # what FlopCounterMode alone sees: the head only
        model(torch.zeros(1, 80))
    assert counter.get_total_flops() == 2 * 256 * 80

    # a bare LSTM, sequence first, two layers, both directions, with a projection: 5 steps of 2 samples
    lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2)
    step = 2 * (2 * 4 * 4 * (3 + 2) + 2 * 4 * 2) + 2 * (2 * 4 * 4 * (2 * 2 + 2) + 2 * 4 * 2)
    assert lstm_forward_flops_per_step(lstm) == step

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.out = lstm, nn.Linear(4, 3)

        def forward(self, x):
            return self.out(self.lstm(x)[0][-1])

    # forward_flops feeds zeros of shape (5, 2, 3): 5 time steps of 2 samples, then the head on 2 samples
    assert forward_flops(Head(), (2, 3), batch=5) == (5 * 2 * step + 2 * (2 * 4 * 3)) // 5


def test_models_without_lstm_count_exactly_what_flopcountermode_counts():
    from torch.utils.flop_counter import FlopCounterMode

    from fedlab_utils.models import make_model

    for model in (make_model("cnn", (1, 8, 8), 10, seed=0), make_model("mlp", (1, 8, 8), 10, seed=0)):
        with FlopCounterMode(display=False) as counter:
            nn.functional.cross_entropy(model(torch.zeros(4, 1, 8, 8)), torch.zeros(4, dtype=torch.long)).backward()
        assert training_flops_per_sample(model, (1, 8, 8)) == counter.get_total_flops() // 4


def test_energy_by_profile_of_totals_needs_the_byte_totals():
    from fedlab_utils.ledger import energy_by_profile

    priced = energy_by_profile(1e9, bytes_up=1000, bytes_down=2000, client_rounds=2)
    assert priced["phone-lte"]["total"] > 0
    with pytest.raises(ValueError, match="bytes_up=None"):
        energy_by_profile(1e9, bytes_down=2000)
