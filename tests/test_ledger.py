"""The ledger's FLOPs, energy model and meters; codecs' byte counts; devices and seeding."""
import dataclasses

import pytest
import torch
from torch import nn

from fedlab_utils.devices import available_devices, get_device, get_devices, seed_everything
from fedlab_utils.ledger import LTE, PROFILES, Energy, EnergyMeter, forward_flops, get_profile, training_flops_per_sample
from fedlab_utils.wire import Fp32Codec, flatten, unflatten


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
    e = p.energy(1e9, 1000, 2000)
    assert e.compute == pytest.approx(1e9 * 100e-12)
    assert e.uplink == pytest.approx(8000 * p.joules_per_bit_up)
    assert e.downlink == pytest.approx(16000 * p.joules_per_bit_down)
    assert e.total == pytest.approx(e.compute + e.uplink + e.downlink)
    assert (e + e).total == pytest.approx(2 * e.total)
    mine = dataclasses.replace(p, joules_per_flop=20e-12)
    assert mine.energy(1e9, 0, 0).compute == pytest.approx(0.02)
    assert get_profile(mine) is mine
    with pytest.raises(ValueError, match="energy_profile='satellite'"):
        get_profile("satellite")
    assert "J" in repr(Energy(1.0, 2.0, 3.0))


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


def test_get_devices_returns_n_usable_placements(capsys):
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
