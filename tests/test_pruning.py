"""fedlab_utils.lessons.pruning.masks, structured_pruning and federated_pruning: exact sparsity, masks that hold
through training and aggregation, plain state-dict keys, an exact codec whose byte count is the
payload length, structured pruning that builds a smaller model with the same outputs, and
checkpoints that resume a pruning run exactly."""
import copy

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

import fedlab_utils as fl
from fedlab_utils.compression import Fp32Codec, SparseCodec, sparse_payload_size
from fedlab_utils.core import LocalTraining, model_state, weighted_average
from fedlab_utils.lessons.pruning import federated as FP
from fedlab_utils.lessons.pruning import masks as P
from fedlab_utils.lessons.pruning import structured as SP


def mlp(hidden=(32,), shape=(1, 8, 8)):
    torch.manual_seed(0)
    return fl.make_model("mlp", shape, 10, hidden=hidden)


def cnn():
    torch.manual_seed(0)
    return fl.make_model("cnn", (1, 8, 8), 10, channels=(6, 8))


# ----------------------------------------------------------------------------- masks
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.8, 0.9, 0.97])
def test_global_masks_hit_requested_sparsity_exactly(sparsity):
    model = mlp(hidden=(32, 16))
    masks = P.magnitude_masks(model, sparsity, scope="global")
    total = sum(m.numel() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(sparsity * total)
    assert set(masks) == set(P.prunable_names(model)) == {"1.weight", "3.weight", "5.weight"}
    assert all(m.dtype == torch.bool for m in masks.values())


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.8, 0.95])
def test_layer_masks_hit_requested_sparsity_exactly_in_every_layer(sparsity):
    model = cnn()
    masks = P.magnitude_masks(model, sparsity, scope="layer")
    for name, mask in masks.items():
        assert int((~mask).sum()) == round(sparsity * mask.numel()), name


def test_masks_prune_the_smallest_magnitudes():
    weights = {"a": torch.tensor([[0.1, -5.0], [0.3, 2.0]]), "b": torch.tensor([-0.2, 4.0, 0.05])}
    masks = P.magnitude_masks(weights, 3 / 7, scope="global")  # the three smallest |w|: 0.05, 0.1, 0.2
    assert masks["a"].tolist() == [[False, True], [True, True]]
    assert masks["b"].tolist() == [False, True, False]
    layer = P.magnitude_masks(weights, 0.5, scope="layer")
    assert layer["a"].tolist() == [[False, True], [False, True]] and int((~layer["b"]).sum()) == 2


def test_previous_masks_only_grow_sparser():
    model = mlp()
    first = P.magnitude_masks(model, 0.5)
    P.apply_masks(model, first)
    with torch.no_grad():  # make a pruned weight large: it must still stay pruned
        name = "1.weight"
        idx = (~first[name]).nonzero()[0]
        model.get_parameter(name)[tuple(idx)] = 100.0
    second = P.magnitude_masks(model, 0.7, previous=first)
    for n in first:
        assert not bool((second[n] & ~first[n]).any())
    assert P.sparsity_of(second) == pytest.approx(0.7, abs=1e-3)


def test_model_is_never_reparametrized_and_keys_stay_plain():
    model = mlp()
    keys = list(model.state_dict())
    masks = P.magnitude_masks(model, 0.8)
    P.apply_masks(model, masks)
    SP.structured_masks(model, 0.5)
    P.sensitivity_scan(model, torch.rand(20, 1, 8, 8), torch.randint(0, 10, (20,)), sparsities=(0.0, 0.5))
    assert list(model.state_dict()) == keys
    assert not P.is_reparametrized(model)
    assert P.sparsity_of(model) == pytest.approx(0.8, abs=1e-3)


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, "0.5", True])
def test_sparsity_outside_unit_interval_is_refused(bad):
    with pytest.raises(ValueError, match="sparsity"):
        P.magnitude_masks(mlp(), bad)


def test_bad_parameters_name_themselves():
    with pytest.raises(ValueError, match="scope"):
        P.magnitude_masks(mlp(), 0.5, scope="row")
    with pytest.raises(ValueError, match="schedule"):
        FP.PruningSchedule(0.8, kind="exponential")
    with pytest.raises(ValueError, match="prune_every"):
        FP.PruningSchedule(0.8, every=0)
    with pytest.raises(ValueError, match="prune_every"):
        FP.PruningSchedule(0.8, every=5, end=3)
    with pytest.raises(ValueError, match="structured"):
        SP.structured_masks(mlp(), 1.0)
    with pytest.raises(ValueError, match="not in the model"):
        P.magnitude_masks(mlp(), 0.5, names=["9.weight"])


# ----------------------------------------------------------------------------- the renaming pitfall
def test_torch_prune_renames_keys_and_plain_state_fixes_it():
    plain = mlp()
    pruned = copy.deepcopy(plain)
    torch_prune.l1_unstructured(pruned[1], "weight", amount=0.5)
    keys = set(pruned.state_dict())
    assert {"1.weight_orig", "1.weight_mask"} <= keys and "1.weight" not in keys
    with pytest.raises(KeyError):  # key-wise FedAvg of a plain and a pruned client
        weighted_average([model_state(plain), model_state(pruned)], [1, 1])
    template = model_state(plain)
    fixed = P.plain_state(pruned, template)
    assert list(fixed) == list(template)
    assert torch.equal(fixed["1.weight"], pruned[1].weight)  # weight_orig * weight_mask
    assert len(Fp32Codec().encode(model_state(pruned))) > len(Fp32Codec().encode(template))  # the mask travels
    with pytest.raises(ValueError, match="make_permanent"):
        P.magnitude_masks(pruned, 0.5)
    P.make_permanent(pruned)
    assert set(pruned.state_dict()) == set(template) and not P.is_reparametrized(pruned)
    assert torch.equal(pruned.state_dict()["1.weight"], fixed["1.weight"])


def test_make_permanent_handles_iterative_and_several_layers():
    model = mlp(hidden=(16,))
    torch_prune.l1_unstructured(model[1], "weight", amount=0.5)
    torch_prune.l1_unstructured(model[1], "weight", amount=0.5)  # a PruningContainer now
    torch_prune.l1_unstructured(model[1], "bias", amount=2)
    torch_prune.ln_structured(model[3], "weight", amount=3, n=2, dim=0)
    expected = P.plain_state(model)
    P.make_permanent(model)
    assert not P.is_reparametrized(model)
    assert set(model.state_dict()) == set(expected)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())
    assert int((model[1].weight == 0).sum()) == 64 * 16 * 3 // 4


# ----------------------------------------------------------------------------- federated pruning
@pytest.fixture(scope="module")
def federation(digits):
    parts = fl.partition(digits.y_train, 4, "iid", seed=0)
    return fl.client_data(digits, parts), (digits.x_test, digits.y_test)


def test_pruned_weights_stay_zero_through_local_training_and_aggregation(digits, federation):
    clients, test = federation
    model = mlp()
    fp = FP.FederatedPruning(model, FP.PruningSchedule(0.8, "cubic", every=1, end=3))
    hooks = fp.hooks()
    seen = []

    class Spy(FP.MaskedTraining):  # check every client's weights after every step
        def after_step(self, m):
            super().after_step(m)
            for n, mask in self.state.masks.items():
                seen.append(bool((m.get_parameter(n)[~mask] == 0).all()))

    hooks["transform"] = Spy(fp.state)
    local = LocalTraining(epochs=1, batch_size=16, lr=0.1, optimizer="sgdm", weight_decay=1e-3)
    history = fl.run(model, clients, test, rounds=5, local=local, seed=0, progress=False,
                     uplink=SparseCodec(), downlink=SparseCodec(), **hooks)
    assert seen and all(seen)
    final = history.model
    for n, mask in fp.state.masks.items():
        assert bool((final.get_parameter(n)[~mask] == 0).all())
    assert P.sparsity_of(final) == pytest.approx(0.8, abs=1e-3)
    assert [s for _, s in fp.state.log][-1] == pytest.approx(0.8, abs=1e-3)
    assert list(final.state_dict()) == list(model.state_dict())
    assert history.final_accuracy > 0.5
    # the uplink is smaller than fp32 once the mask is sparse
    dense_bytes = 4 * sum(p.numel() for p in model.parameters()) * len(clients)
    assert history.records[-1].bytes_up < dense_bytes / 2.5


def test_pruning_run_resumed_from_a_checkpoint_equals_a_straight_run(digits, federation, tmp_path):
    """The schedule's round, the mask and its log travel in the checkpoint: resume == no interruption."""
    clients, test = federation
    model = mlp()
    local = LocalTraining(epochs=1, batch_size=32, lr=0.1)
    kw = dict(local=local, seed=0, progress=False, uplink=SparseCodec())
    plan = FP.PruningSchedule(0.8, "linear", every=1, end=4)
    straight_fp = FP.FederatedPruning(model, plan)
    straight = fl.run(model, clients, test, rounds=4, **kw, **straight_fp.hooks())
    fp = FP.FederatedPruning(model, plan)
    hooks = fp.hooks()
    path = tmp_path / "prune.ckpt"
    fl.run(model, clients, test, rounds=2, checkpoint=path, **kw, **hooks)
    fp.state.masks = {k: torch.ones_like(v) for k, v in fp.state.masks.items()}  # lose the live state on purpose
    resumed = fl.run(model, clients, test, rounds=4, checkpoint=path, resume=True, **kw, **hooks)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    assert all(torch.equal(fp.state.masks[n], straight_fp.state.masks[n]) for n in fp.state.names)
    assert fp.state.log == straight_fp.state.log
    assert [r.bytes_up for r in resumed.records] == [r.bytes_up for r in straight.records]


def test_sparse_energy_prices_every_client_round_like_the_run(digits, federation):
    """Dense rounds cost exactly what the run recorded (radio sessions per client, not per round);
    pruned rounds save compute joules only, in proportion to the nonzero FLOPs."""
    clients, test = federation
    model = mlp()
    kw = dict(local=LocalTraining(epochs=1, batch_size=32, lr=0.1), seed=0, progress=False)
    late = FP.FederatedPruning(model, FP.PruningSchedule(0.8, "oneshot", every=2, end=2))
    dense_rounds = fl.run(model, clients, test, rounds=2, **kw, **late.hooks())  # the mask changes after round 2
    assert late.nonzero_fractions(dense_rounds, (1, 8, 8)) == [1.0, 1.0]
    priced, recorded = late.sparse_energy(dense_rounds, (1, 8, 8)), dense_rounds.energy()
    for part in ("compute", "uplink", "downlink", "radio_fixed"):
        assert getattr(priced, part) == pytest.approx(getattr(recorded, part), rel=1e-9), part
    assert recorded.radio_fixed > 0  # every client-round pays a radio session
    fp = FP.FederatedPruning(model, FP.PruningSchedule(0.8, "oneshot", every=1, end=1))
    pruned = fl.run(model, clients, test, rounds=3, **kw, **fp.hooks())
    fractions = fp.nonzero_fractions(pruned, (1, 8, 8))
    assert fractions[0] == 1.0 and all(f < 0.5 for f in fractions[1:])
    sparse, run_energy = fp.sparse_energy(pruned, (1, 8, 8)), pruned.energy()
    profile = fl.ledger.get_profile(pruned.profile)
    assert sparse.compute == pytest.approx(profile.joules_per_flop * sum(fp.nonzero_flops(pruned, (1, 8, 8))),
                                           rel=1e-6)
    assert sparse.compute < run_energy.compute
    assert sparse.uplink == pytest.approx(run_energy.uplink) and sparse.downlink == pytest.approx(run_energy.downlink)


def test_the_same_hooks_drive_two_identical_runs(digits, federation):
    """``run`` resets the pruning server (round, target, mask), so reusing the hooks repeats the run."""
    clients, test = federation
    model = mlp()
    fp = FP.FederatedPruning(model, FP.PruningSchedule(0.7, "oneshot", every=1, end=1))
    hooks = fp.hooks()
    kw = dict(rounds=2, local=LocalTraining(epochs=1, batch_size=32, lr=0.1), seed=0, progress=False)
    first = fl.run(model, clients, test, **kw, **hooks)
    first_log = list(fp.state.log)
    second = fl.run(model, clients, test, **kw, **hooks)
    assert fp.state.log == first_log and hooks["server"].round == 2
    for key, value in first.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[key], value), key


def test_client_update_is_masked_and_server_keeps_zeros():
    model = mlp()
    state = FP.MaskState(P.magnitude_masks(model, 0.6))
    transform = FP.MaskedTraining(state)
    update = {k: torch.ones_like(v) for k, v in model_state(model).items()}
    masked = transform.on_update(update, 0)
    for n, mask in state.masks.items():
        assert torch.equal(masked[n], mask.float())
    assert torch.equal(masked["1.bias"], update["1.bias"])
    server = FP.PruningServer(state, FP.PruningSchedule(0.6, "oneshot", every=1, end=1))
    new = server.step(model_state(model), update)  # a dense update arrives: the server re-masks it
    for n, mask in state.masks.items():
        assert bool((new[n][~mask] == 0).all())


def test_schedule_rises_to_target_and_stays():
    s = FP.PruningSchedule(0.9, "cubic", every=2, end=10)
    values = [s.sparsity_at(r) for r in range(1, 21)]
    assert values[0] == 0.0 and values[1] > 0  # first prune after round 2
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[9] == pytest.approx(0.9) and values[-1] == pytest.approx(0.9)
    assert FP.PruningSchedule(0.8, "oneshot", every=3, end=9).steps(12) == [(3, 0.8)]
    linear = FP.PruningSchedule(0.8, "linear", every=5, end=10)
    assert linear.steps(20) == [(5, pytest.approx(0.4)), (10, pytest.approx(0.8))]


def test_nonzero_flops_scale_with_density():
    model = mlp(hidden=(32,))
    dense = P.nonzero_training_flops(model, (1, 8, 8))
    assert dense["dense"] == dense["nonzero"] == fl.ledger.training_flops_per_sample(model, (1, 8, 8))
    masks = P.magnitude_masks(model, 0.75, scope="layer")
    sparse = P.nonzero_training_flops(model, (1, 8, 8), masks)
    assert sparse["dense"] == dense["dense"]
    assert sparse["nonzero"] == pytest.approx(0.25 * dense["dense"], rel=0.01)
    per_layer = P.weight_flops(model, (1, 8, 8))
    # first layer: forward + weight gradient (no input gradient), 2 FLOPs per multiply-add
    assert per_layer["1.weight"] == 2 * 2 * 64 * 32
    assert sum(per_layer.values()) == dense["dense"]
    assert per_layer == {f"{k}.weight": v for k, v in fl.ledger.training_flops_per_layer(model, (1, 8, 8)).items()}


# ----------------------------------------------------------------------------- codec
def _update(density, seed=0, shapes=((64, 100), (64,), (10, 64), (10,))):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, shape in enumerate(shapes):
        t = torch.randn(*shape, generator=g)
        out[f"t{i}"] = t * (torch.rand(*shape, generator=g) < density)
    return out


@pytest.mark.parametrize("density,fmt", [(0.0, "indices"), (0.01, "indices"), (0.3, "bitmask"), (1.0, "dense")])
def test_sparse_codec_round_trips_exactly_and_counts_payload_bytes(density, fmt):
    codec = SparseCodec()
    update = _update(density)
    payload = codec.encode(update)
    assert codec.last_format == fmt
    decoded = codec.decode(payload, update)
    assert list(decoded) == list(update)
    for k in update:
        assert torch.equal(decoded[k], update[k]) and decoded[k].dtype == update[k].dtype
    numel = sum(t.numel() for t in update.values())
    nnz = sum(int(t.count_nonzero()) for t in update.values())
    assert len(payload) == sparse_payload_size(numel, nnz)["best"] == sparse_payload_size(numel, nnz)[fmt]


def test_sparse_codec_payloads_hand_computed():
    """Bytes on the wire: tag, uint32 count, MSB-first positions, little-endian fp32 values."""
    import struct

    codec = SparseCodec()
    # 3 values, 1 nonzero: bitmask (5 + 1 + 4 = 10) ties indices (5 + 1 + 4); the bitmask wins ties
    payload = codec.encode({"x": torch.tensor([0.0, 0.0, 3.5])})
    assert codec.last_format == "bitmask"
    assert payload == b"\x01" + struct.pack("<I", 1) + bytes([0b00100000]) + struct.pack("<f", 3.5)
    # 100 values, 1 nonzero at position 5: a 7-bit index 0000101 + padding = 0b00001010
    x = torch.zeros(100)
    x[5] = -1.25
    payload = codec.encode({"x": x})
    assert codec.last_format == "indices"
    assert payload == b"\x02" + struct.pack("<I", 1) + bytes([0b00001010]) + struct.pack("<f", -1.25)
    assert torch.equal(codec.decode(payload, {"x": x})["x"], x)


def test_sparse_codec_sizes_and_edge_cases():
    codec = SparseCodec()
    one = {"x": torch.tensor([0.0, 0.0, 3.5])}
    assert torch.equal(codec.decode(codec.encode(one), one)["x"], one["x"])
    single = {"x": torch.tensor([2.0])}
    assert torch.equal(codec.decode(codec.encode(single), single)["x"], single["x"])
    # indices: 17 bits per index for 100k values; bitmask: 12.5 kB; dense: 400 kB
    sizes = sparse_payload_size(100_000, 1000)
    assert sizes == {"dense": 400_001, "bitmask": 5 + 12_500 + 4000, "indices": 5 + 2125 + 4000, "best": 6130}
    # never more than fp32 + one byte
    dense = _update(1.0)
    assert len(codec.encode(dense)) == len(Fp32Codec().encode(dense)) + 1
    with pytest.raises(ValueError, match="corrupt"):
        codec.decode(codec.encode(_update(0.3))[:-4], _update(0.3))


# ----------------------------------------------------------------------------- structured
@pytest.mark.parametrize("build,shape", [(lambda: mlp(hidden=(32, 16)), (1, 8, 8)), (cnn, (1, 8, 8)),
                                         (lambda: fl.make_model("cnn", (1, 12, 12), 10, channels=(4, 6, 8)),
                                          (1, 12, 12))])
def test_shrink_gives_same_outputs_as_masked_model(build, shape):
    model = build()
    masks = SP.structured_masks(model, 0.5)
    masked = P.apply_masks(copy.deepcopy(model), masks)
    small = SP.shrink(model, masks)
    x = torch.rand(7, *shape)
    torch.testing.assert_close(small(x), masked(x), rtol=1e-5, atol=1e-6)
    assert fl.count_parameters(small) < fl.count_parameters(model)
    names = P.prunable_names(model)
    for (name, layer), (_, new) in zip([(n, model.get_submodule(n[:-7])) for n in names[:-1]],
                                       [(n, small.get_submodule(n[:-7])) for n in names[:-1]]):
        assert new.weight.shape[0] == layer.weight.shape[0] - round(0.5 * layer.weight.shape[0]), name
    assert list(small.state_dict()) == list(model.state_dict())  # same layer indices, same keys


def test_structured_pruning_cuts_dense_flops():
    model = mlp(hidden=(64,), shape=(1, 28, 28))
    small = SP.shrink(model, SP.structured_masks(model, 0.5))
    dense = fl.ledger.training_flops_per_sample(model, (1, 28, 28))
    assert fl.ledger.training_flops_per_sample(small, (1, 28, 28)) * 2 == dense
    assert small[1].out_features == 32 and small[3].in_features == 32


def test_shrink_refuses_what_it_cannot_do_exactly():
    model = mlp()
    with pytest.raises(ValueError, match="not structured"):
        SP.shrink(model, P.magnitude_masks(model, 0.5))
    with pytest.raises(ValueError, match="Sigmoid"):
        SP.shrink(nn.Sequential(nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2)), {})


# ----------------------------------------------------------------------------- scans and the article
def test_sensitivity_scan_and_curve(digits):
    model = fl.make_model("mlp", digits.input_shape, 10)
    parts = fl.partition(digits.y_train, 1, "iid", seed=0)
    fl.core.train_locally(model, fl.client_data(digits, parts)[0], LocalTraining(epochs=3, lr=0.1),
                               generator=torch.Generator().manual_seed(0))
    before = copy.deepcopy(model.state_dict())
    scan = P.sensitivity_scan(model, digits.x_test, digits.y_test, sparsities=(0.0, 0.9, 0.99))
    assert set(scan) == {"1.weight", "3.weight"}
    dense_acc = fl.core.evaluate(model, digits.x_test, digits.y_test)[0]
    assert all(curve[0] == dense_acc for curve in scan.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    curve = P.accuracy_vs_sparsity(model, digits.x_test, digits.y_test, [0.0, 0.5, 0.99])
    assert curve[0] == dense_acc and curve[2] < curve[0]


def test_article_prune_model_zeroes_whole_tensors():
    model = mlp()
    zeroed = P.article_prune_model(model, threshold=0.1)
    assert zeroed  # at default init every tensor's mean |w| is below 0.1
    for name in zeroed:
        assert bool((model.get_parameter(name) == 0).all())
