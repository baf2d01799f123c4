"""Notebook 06's helpers: the sparse+quantized downlink, pricing runs per client-round, the
radio-session floor, the energy-budget planner and the recipe's ablation (the exercise checks are
tested in test_exercises_06.py)."""
from types import SimpleNamespace

import pytest
import torch

from fedlab_utils.compression import Fp32Codec, SparseQuantizeCodec
from fedlab_utils.ledger import PROFILES
from fedlab_utils.lessons import capstone as cap


# ----------------------------------------------------------------------------- the downlink codec
def test_sparse_quantize_codec_keeps_zeros_and_is_smaller():
    torch.manual_seed(0)
    weights = torch.randn(1000)
    weights[torch.rand(1000) < 0.7] = 0.0
    update = {"w": weights.reshape(40, 25), "b": torch.zeros(7)}
    codec = SparseQuantizeCodec(8)
    payload = codec.encode(update)
    back = codec.decode(payload, update)
    nonzero = update["w"] != 0
    assert torch.equal(back["w"] == 0, ~nonzero) and torch.equal(back["b"], torch.zeros(7))
    scale = (weights.max() - weights.min()) / 255
    assert (back["w"] - update["w"]).abs().max() <= scale / 2 + 1e-6
    k = int(nonzero.sum())
    # 4-byte count + 1 bit per value + about 1 byte per nonzero (plus the quantizer's header)
    assert 4 + 1007 // 8 + k <= len(payload) <= 4 + 1007 // 8 + 1 + k + 16
    assert len(payload) < len(Fp32Codec().encode(update)) / 3


def test_sparse_quantize_codec_rejects_a_corrupt_header():
    update = {"w": torch.tensor([0.0, 1.0, 2.0])}
    payload = bytearray(SparseQuantizeCodec(8).encode(update))
    payload[0] = 3  # claims three nonzeros, the bitmap has two
    with pytest.raises(ValueError, match="corrupt"):
        SparseQuantizeCodec(8).decode(bytes(payload), update)


# ----------------------------------------------------------------------------- pricing and the floor
def _history(rows_per_round, accuracy=None):
    records = [SimpleNamespace(round=i + 1, client_rows=rows) for i, rows in enumerate(rows_per_round)]
    return SimpleNamespace(label="fake", records=records, accuracy=accuracy or [0.5] * len(records))


def test_price_charges_every_client_round_its_own_session():
    row = {"flops": 1e8, "bytes_up": 200_000, "bytes_down": 200_000}
    h = _history([[row, row], [row]])
    for name, p in PROFILES.items():
        one = p.energy(1e8, 200_000, 200_000)
        assert cap.price(h, name).total == pytest.approx(3 * one.total)
        assert cap.price(h, name, include_fixed=False).radio_fixed == 0
    assert cap.client_rounds(h) == 3
    assert cap.radio_floor_joules(h, "phone-lte") == pytest.approx(3 * PROFILES["phone-lte"].radio_floor(1e8))
    assert list(cap.cumulative_joules(h, "phone-lte")) == pytest.approx(
        [2 * PROFILES["phone-lte"].energy(1e8, 2e5, 2e5).total, 3 * PROFILES["phone-lte"].energy(1e8, 2e5, 2e5).total])
    # the floor is what one-byte payloads would cost: on LTE it is most of this client-round
    assert 0.85 < cap.radio_floor_joules(h, "phone-lte") / cap.price(h, "phone-lte").total < 1.0
    with pytest.raises(ValueError, match="client_rows"):
        cap.price(_history([[]]), "phone-lte")


# ----------------------------------------------------------------------------- the planner
def _summary(accuracy, joules_per_round):
    return {"accuracy": accuracy, "rounds": len(accuracy),
            "cumulative_joules": {"phone-wifi": list(torch.tensor(joules_per_round).cumsum(0).tolist())},
            "radio_floor_joules": {"phone-wifi": 0.1}}


def test_plan_budget_picks_the_cheapest_run_to_reach_the_target():
    summaries = {"FedAvg": _summary([0.5, 0.7, 0.82, 0.85], [10, 10, 10, 10]),
                 "recipe": _summary([0.6, 0.81, 0.84], [2, 2, 2]),
                 "cheap but weak": _summary([0.5, 0.6], [0.1, 0.1])}
    assert cap.plan_budget(summaries, "phone-wifi", 0.80) == {"config": "recipe", "round": 2, "joules": 4.0,
                                                               "accuracy": 0.81}
    assert cap.plan_budget(summaries, "phone-wifi", 0.85)["config"] == "FedAvg"  # only one gets there
    assert cap.plan_budget(summaries, "phone-wifi", 0.6)["config"] == "cheap but weak"  # at the target counts
    assert cap.plan_budget(summaries, "phone-wifi", 0.9) is None
    with pytest.raises(ValueError, match="phone-lte"):
        cap.plan_budget(summaries, "phone-lte", 0.8)


# ----------------------------------------------------------------------------- the recipe
def test_recipe_configs_remove_one_piece_each():
    configs = cap.recipe_configs(20, 2, recipe_rounds=14, recipe_epochs=5, server_momentum=0.7, sparsity=0.7)
    full = configs["full recipe"]
    assert (full.rounds, full.local_epochs, full.server_momentum, full.sparsity) == (14, 5, 0.7, 0.7)
    assert configs["FedAvg"] == cap.RecipeConfig("FedAvg", 20, 2)
    assert configs["- server optimizer"].server_momentum is None
    assert (configs["- fewer rounds"].rounds, configs["- fewer rounds"].local_epochs) == (20, 2)
    assert configs["- uplink top-k + EF"].topk_fraction is None
    assert configs["- downlink quantization"].downlink_bits is None
    assert configs["- federated pruning"].sparsity is None
    for name, config in configs.items():
        if name.startswith("- "):  # exactly one field differs from the full recipe (two for rounds)
            differ = [f for f in ("rounds", "local_epochs", "server_momentum", "topk_fraction", "downlink_bits",
                                  "sparsity") if getattr(config, f) != getattr(full, f)]
            assert len(differ) == (2 if name == "- fewer rounds" else 1), (name, differ)
    with pytest.raises(ValueError, match="recipe_rounds=30"):
        cap.recipe_configs(20, 2, recipe_rounds=30, recipe_epochs=5)


def test_run_config_full_recipe_compresses_both_ways():
    from fedlab_utils.data import ClientData
    from fedlab_utils.models import make_model

    g = torch.Generator().manual_seed(0)
    clients = [ClientData(torch.randn(30, 1, 8, 8, generator=g), torch.randint(0, 3, (30,), generator=g))
               for _ in range(3)]
    test = (torch.randn(20, 1, 8, 8, generator=g), torch.randint(0, 3, (20,), generator=g))
    torch.manual_seed(0)
    model = make_model("mlp", (1, 8, 8), 3, hidden=(16,))
    configs = cap.recipe_configs(4, 1, recipe_rounds=2, recipe_epochs=1, sparsity=0.5)
    kw = dict(fraction=1.0, batch_size=10, lr=0.1, seed=0, progress=False)
    fedavg = cap.run_config(configs["FedAvg"], model, clients, test, **kw)
    full = cap.run_config(configs["full recipe"], model, clients, test, **kw)
    assert len(full.records) == 2 and len(fedavg.records) == 4
    per_round = lambda h, k: h.records[0].__getattribute__(k)  # noqa: E731
    assert per_round(full, "bytes_up") * 5 < per_round(fedavg, "bytes_up")
    assert per_round(full, "bytes_down") * 2 < per_round(fedavg, "bytes_down")
    s = cap.config_summary(full, ["phone-lte", "phone-wifi"])
    assert s["client_rounds"] == 6 and s["joules"]["phone-lte"] > s["radio_floor_joules"]["phone-lte"] > 0


# ----------------------------------------------------------------------------- exercise checks, both ways
