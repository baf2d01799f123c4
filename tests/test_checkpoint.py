"""Checkpoint and resume: bit-identical continuation, refusal of foreign checkpoints, no pickle."""
import io
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from fedlab_utils.compression import ErrorFeedback, RandomKCodec, TopKCodec
from fedlab_utils.core import Faults, FedAdam, History, LocalTraining, load_checkpoint, run, save_checkpoint
from fedlab_utils.data import ClientData
from fedlab_utils.lessons.parallel import splitfed_run
from fedlab_utils.lessons.parallel.worker import layer_spec, read_job, write_job

DIM = 6


def tiny_clients(sizes=(12, 20, 8, 15), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [ClientData(torch.randn(n, DIM, generator=g), torch.randint(0, 3, (n,), generator=g)) for n in sizes]


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(DIM, 5), nn.ReLU(), nn.Linear(5, 3))


def fedadam_ef_run(rounds, **kw):
    clients = tiny_clients()
    return run(tiny_model(), clients, (clients[0].x, clients[0].y), rounds=rounds, fraction=0.75, seed=5,
               local=LocalTraining(lr=0.2, batch_size=8), uplink=ErrorFeedback(RandomKCodec(0.3, seed=1)),
               server=FedAdam(lr=0.05), faults=Faults(dropout=0.2, seed=2), progress=False, **kw)


def comparable(h):
    records = h.to_dict()["records"]
    for r in records:
        r.pop("wall_time_s"), r.pop("measured_joules")
    return json.dumps(records)


def test_resumed_run_equals_an_uninterrupted_one_exactly(tmp_path):
    path = tmp_path / "run.ckpt"
    straight = fedadam_ef_run(4)
    first = fedadam_ef_run(2, checkpoint=path, checkpoint_every=2)
    saved = load_checkpoint(path)
    assert saved["round"] == 2 and saved["state"]["uplink"]["residuals"]  # error-feedback memory is in it
    assert saved["state"]["server"]["m"] is not None and saved["state"]["uplink"]["inner"]["calls"]
    resumed = fedadam_ef_run(4, checkpoint=path, resume=True)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert comparable(resumed) == comparable(straight)
    assert comparable(first) == json.dumps(json.loads(comparable(straight))[:2])
    # the state matters: the same checkpoint without optimizer moments and residuals resumes differently
    saved["state"]["server"] = {"m": None, "v": None}
    saved["state"]["uplink"] = {"residuals": {}, "inner": {"calls": {}}}
    save_checkpoint(tmp_path / "amnesic.ckpt", round_idx=2, config=saved["config"], history=saved["history"],
                    state=saved["state"])
    amnesic = fedadam_ef_run(4, checkpoint=tmp_path / "amnesic.ckpt", resume=True)
    assert not all(torch.equal(a, b) for a, b in zip(amnesic.model.state_dict().values(),
                                                      straight.model.state_dict().values()))
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # atomic: no leftovers


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path):
    path = tmp_path / "run.ckpt"
    fedadam_ef_run(1, checkpoint=path)
    clients = tiny_clients()
    with pytest.raises(ValueError, match=r"different configuration[\s\S]*seed: checkpoint 5, this run 6"):
        run(tiny_model(), clients, (clients[0].x, clients[0].y), rounds=2, fraction=0.75, seed=6,
            local=LocalTraining(lr=0.2, batch_size=8), uplink=ErrorFeedback(RandomKCodec(0.3, seed=1)),
            server=FedAdam(lr=0.05), faults=Faults(dropout=0.2, seed=2), progress=False, checkpoint=path, resume=True)
    with pytest.raises(ValueError, match=r"uplink: checkpoint 'EF\(rand30%\)', this run 'EF\(top30%\)'"):
        run(tiny_model(), clients, (clients[0].x, clients[0].y), rounds=2, fraction=0.75, seed=5,
            local=LocalTraining(lr=0.2, batch_size=8), uplink=ErrorFeedback(TopKCodec(0.3)),
            server=FedAdam(lr=0.05), faults=Faults(dropout=0.2, seed=2), progress=False, checkpoint=path, resume=True)
    with pytest.raises(ValueError, match="resume=True needs checkpoint"):
        fedadam_ef_run(1, resume=True)


class Payload:
    """Any object that is not a tensor or plain value: a pickle of it could run code on load."""


def test_loading_never_unpickles(tmp_path):
    path = tmp_path / "evil.ckpt"
    buffer = io.BytesIO()
    torch.save({"format": "fedlab-checkpoint/1", "object": Payload()}, buffer)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="cannot be read"):
        load_checkpoint(path)


def test_stateful_hooks_reset_at_the_start_and_unsaveable_state_is_refused(tmp_path):
    ef = ErrorFeedback(TopKCodec(0.3))
    clients = tiny_clients()
    kw = dict(rounds=2, local=LocalTraining(lr=0.2), uplink=ef, progress=False)
    a = run(tiny_model(), clients, (clients[0].x, clients[0].y), **kw)
    b = run(tiny_model(), clients, (clients[0].x, clients[0].y), **kw)  # same codec object: starts afresh
    assert comparable(a) == comparable(b)

    class MomentumWithoutState:
        def step(self, global_state, update):
            return {k: global_state[k] + update[k] for k in global_state}

        def reset(self):
            pass

        def __repr__(self):
            return "MomentumWithoutState()"

    with pytest.raises(ValueError, match="server=MomentumWithoutState.*state_dict"):
        run(tiny_model(), clients, (clients[0].x, clients[0].y), rounds=1, server=MomentumWithoutState(),
            progress=False, checkpoint=tmp_path / "x.ckpt")


def test_history_round_trips_through_json():
    h = fedadam_ef_run(2)
    back = History.from_dict(json.loads(json.dumps(h.to_dict())))
    assert back.to_dict() == json.loads(json.dumps(h.to_dict()))
    assert back.profile == h.profile  # the EnergyProfile object, not just its name


def test_splitfed_resumes_exactly(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(DIM, 8), nn.ReLU(), nn.Linear(8, 3))
    clients = tiny_clients()
    kw = dict(cut=2, local=LocalTraining(lr=0.1, batch_size=8, optimizer="sgdm"), seed=1, progress=False)
    straight = splitfed_run(model, clients, (clients[0].x, clients[0].y), rounds=3, **kw)
    splitfed_run(model, clients, (clients[0].x, clients[0].y), rounds=1, checkpoint=tmp_path / "s.ckpt", **kw)
    resumed = splitfed_run(model, clients, (clients[0].x, clients[0].y), rounds=3, checkpoint=tmp_path / "s.ckpt",
                           resume=True, **kw)
    assert comparable(resumed) == comparable(straight)
    assert resumed.config["bytes"] == straight.config["bytes"]


def test_pipeline_job_is_json_plus_tensors(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10))
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 10, (5,))
    path = write_job(tmp_path, model, x, y, micro_batches=2, boundaries=[0, 3, 5], timeout_s=30)
    job = json.loads(Path(path).read_text())
    assert job["layers"][0] == {"type": "Conv2d", "args": {"in_channels": 1, "out_channels": 4, "kernel_size": [3, 3],
                                                           "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1],
                                                           "groups": 1, "bias": True, "padding_mode": "zeros"}}
    back = read_job(path)
    assert torch.equal(back["model"](back["x"]), model(x)) and torch.equal(back["y"], y)
    with pytest.raises(ValueError, match="cannot be sent to a pipeline worker"):
        layer_spec(nn.Bilinear(2, 2, 2))


def test_a_custom_energy_profile_is_kept_not_replaced_by_the_stock_one():
    from dataclasses import replace

    from fedlab_utils.ledger import PROFILES

    custom = replace(PROFILES["phone-lte"], joules_per_flop=20e-12)
    clients = tiny_clients()
    h = run(tiny_model(), clients, (clients[0].x, clients[0].y), rounds=1, energy_profile=custom, progress=False)
    stock = run(tiny_model(), clients, (clients[0].x, clients[0].y), rounds=1, progress=False)
    assert h.profile is custom and h.energy().compute == pytest.approx(stock.energy().compute / 5)
    back = History.from_dict(json.loads(json.dumps(h.to_dict())))
    assert back.profile == custom and back.profile != PROFILES["phone-lte"]


def test_logit_sharing_resumes_exactly(tmp_path):
    from fedlab_utils.lessons.distillation import run_logit_sharing

    clients = tiny_clients()
    kw = dict(mode="per_class", local=LocalTraining(lr=0.2, batch_size=8), seed=2, temperature=2.0, progress=False)
    straight = run_logit_sharing(tiny_model(), clients, (clients[0].x, clients[0].y), rounds=3, **kw)
    run_logit_sharing(tiny_model(), clients, (clients[0].x, clients[0].y), rounds=2, checkpoint=tmp_path / "l.ckpt",
                      **kw)
    resumed = run_logit_sharing(tiny_model(), clients, (clients[0].x, clients[0].y), rounds=3,
                                checkpoint=tmp_path / "l.ckpt", resume=True, **kw)
    assert comparable(resumed) == comparable(straight) and resumed.records[2].bytes_down > 0
    for a, b in zip(resumed.client_models, straight.client_models):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


class _LowRank(TopKCodec):
    """A codec whose name does not say its setting: ``rank`` changes what it sends, ``name`` does not."""

    def __init__(self, rank: int):
        super().__init__(0.1 * rank)
        self.rank, self.name = rank, "lowrank"


def test_a_checkpoint_identity_is_each_parts_configuration_not_its_name(tmp_path):
    clients = tiny_clients()
    path = tmp_path / "ckpt.json"

    def go(rank, rounds):
        return run(tiny_model(), clients, (clients[0].x, clients[0].y), rounds=rounds, uplink=_LowRank(rank),
                   checkpoint=path, resume=True, progress=False)

    assert go(2, 1).config["uplink"] == "lowrank"
    with pytest.raises(ValueError, match="rank"):
        go(9, 2)  # same name, another setting: refused
    assert len(go(2, 2).records) == 2  # the same configuration resumes


def test_a_stateful_part_without_state_dict_is_refused_before_round_one(tmp_path):
    """Issue 30 D6: with checkpoint=, a codec that has reset() but no state_dict() is refused before
    any client trains, naming the part."""
    import torch

    from fedlab_utils.compression import Fp32Codec
    from fedlab_utils.core import run
    from fedlab_utils.data import ClientData
    from fedlab_utils.models import make_model

    class Forgetful(Fp32Codec):
        encoded = 0

        def reset(self):
            pass

        def encode(self, update, client_id=None):
            Forgetful.encoded += 1
            return super().encode(update, client_id)

    data = ClientData(torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,)))
    with pytest.raises(ValueError, match="uplink=.*has reset\\(\\).*no state_dict"):
        run(make_model("mlp", (1, 8, 8), 3, hidden=(8,)), [data, data], (data.x, data.y), rounds=2,
            uplink=Forgetful(), checkpoint=tmp_path / "ck.json", progress=False)
    assert Forgetful.encoded == 0 and not (tmp_path / "ck.json").exists()
