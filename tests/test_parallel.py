"""Invariants of fedlab_utils.lessons.parallel.pipeline: splitting, pipelining, several processes and SplitFed."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from fedlab_utils.checks import parallel as checks
from fedlab_utils.compression import Fp32Codec
from fedlab_utils.core import LocalTraining, run
from fedlab_utils.data import ClientData
from fedlab_utils.devices import get_devices
from fedlab_utils.lessons.parallel import (
    StagedModel,
    article_large_net,
    client_training_flops_per_sample,
    cut_profile,
    gpipe_makespan,
    ideal_bubble,
    pipeline_train_step,
    reference_step,
    run_multiprocess_pipeline,
    split_at,
    split_sequential,
    splitfed_run,
    stage_boundaries,
)
from fedlab_utils.models import make_model

SHAPE = (1, 8, 8)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def cnn():
    torch.manual_seed(0)
    return make_model("cnn", SHAPE, 10)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(24, *SHAPE, generator=g), torch.randint(0, 10, (24,), generator=g)


def test_get_devices_cpu_only_gives_three_usable_placements_with_notice(capsys, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("CPU-only behaviour")
    import fedlab_utils.devices as devices_module
    monkeypatch.setattr(devices_module, "_shown_notices", set())  # the notice shows once per process
    devices = get_devices(3)
    assert len(devices) == 3 and all(isinstance(d, torch.device) for d in devices)
    assert "virtual device" in capsys.readouterr().out
    get_devices(3)
    assert "virtual device" not in capsys.readouterr().out  # once per process, not once per call
    staged = StagedModel(split_sequential(article_large_net(), 3), devices)
    assert staged(torch.randn(5, 10)).shape == (5, 2)


def test_stage_boundaries_balance_and_cover():
    assert stage_boundaries([1, 1, 1, 1], 2) == [0, 2, 4]
    assert stage_boundaries([10, 1, 1, 1, 1, 1], 2) == [0, 1, 6]
    assert stage_boundaries([5, 5, 5], 3) == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        stage_boundaries([1, 1], 3)


@pytest.mark.parametrize("num_stages", [1, 2, 3, 4])
def test_split_preserves_outputs_and_gradients(cnn, batch, num_stages):
    x, y = batch
    ref_out, ref_loss, ref_grads = reference_step(cnn, x, y)
    model = copy.deepcopy(cnn)
    staged = StagedModel(split_sequential(model, num_stages, input_shape=SHAPE), get_devices(num_stages, verbose=False))
    assert sum(len(s) for s in staged.stages) == len(cnn)
    torch.testing.assert_close(staged(x), ref_out, atol=1e-6, rtol=0)
    report = pipeline_train_step(staged, x, y, micro_batches=4)
    torch.testing.assert_close(report.output, ref_out, atol=1e-6, rtol=0)
    assert abs(report.loss - ref_loss) < 1e-5
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name], atol=1e-5, rtol=0)
    assert report.forward_s.shape == (num_stages, 4) and (report.forward_s > 0).all()
    assert 0.0 <= report.bubble < 1.0


def test_split_rejects_bad_boundaries(cnn):
    with pytest.raises(ValueError, match="boundaries"):
        split_sequential(cnn, 2, boundaries=[0, 9, 3])
    with pytest.raises(ValueError, match="num_stages"):
        split_sequential(cnn, len(cnn) + 1)


def test_gpipe_makespan_equal_times_gives_ideal_bubble():
    for S, M in [(1, 3), (2, 4), (3, 8), (4, 1)]:
        f, b = np.full((S, M), 1.0), np.full((S, M), 2.0)
        makespan = gpipe_makespan(f, b)
        assert makespan == pytest.approx((M + S - 1) * 3.0)
        assert 1 - (f.sum() + b.sum()) / (S * makespan) == pytest.approx(ideal_bubble(S, M))


def test_multiprocess_pipeline_matches_single_process(cnn, batch):
    x, y = batch
    ref_out, ref_loss, ref_grads = reference_step(cnn, x, y)
    result = run_multiprocess_pipeline(cnn, x, y, world_size=2, micro_batches=3, timeout_s=120)
    assert result.backend in ("gloo", "nccl") and result.world_size == 2
    torch.testing.assert_close(result.output, ref_out, atol=1e-5, rtol=0)
    assert abs(result.loss - ref_loss) < 1e-5
    assert set(result.grads) == set(ref_grads)
    for name in ref_grads:
        torch.testing.assert_close(result.grads[name], ref_grads[name], atol=1e-5, rtol=0)
    assert 0 < result.startup_s <= result.wall_s


def test_client_flops_only_count_the_client_part(cnn):
    client, server = split_at(cnn, 3)
    conv = cnn[0]
    macs = conv.out_channels * conv.in_channels * 9 * SHAPE[1] * SHAPE[2]
    # forward 2·MACs and the weight gradient 2·MACs; no input gradient for the first layer
    assert client_training_flops_per_sample(client, SHAPE) == 4 * macs
    infos = {c.cut: c for c in cut_profile(cnn, SHAPE)}
    assert infos[3].activation_bytes_per_sample == 4 * 8 * 4 * 4
    assert infos[3].model_weight_bytes == 4 * sum(p.numel() for p in cnn.parameters())
    assert infos[3].flops_saving > 5


def test_splitfed_bytes_equal_serialized_lengths_and_v1_equals_fedavg(cnn):
    g = torch.Generator().manual_seed(2)
    clients = [ClientData(torch.randn(n, *SHAPE, generator=g), torch.randint(0, 10, (n,), generator=g))
               for n in (20, 13)]
    test = (torch.randn(30, *SHAPE, generator=g), torch.randint(0, 10, (30,), generator=g))
    local = LocalTraining(epochs=2, batch_size=8, lr=0.05, optimizer="sgdm")
    cut, rounds = 3, 2
    sf = splitfed_run(cnn, clients, test, cut=cut, rounds=rounds, local=local, seed=3, num_classes=10)
    codec = Fp32Codec()
    client, _ = split_at(cnn, cut)
    with torch.no_grad():
        act_one = client(torch.zeros(1, *SHAPE))
    act_bytes = len(codec.encode({"a": act_one}))
    weight_bytes = len(codec.encode({k: v for k, v in client.state_dict().items()}))
    samples = sum(len(c) for c in clients) * local.epochs
    per_round_up = samples * (act_bytes + 1) + len(clients) * weight_bytes      # activations + uint8 labels + weights
    per_round_down = samples * act_bytes + len(clients) * weight_bytes           # gradients + weights
    assert [r.bytes_up for r in sf.records] == [per_round_up] * rounds
    assert [r.bytes_down for r in sf.records] == [per_round_down] * rounds
    assert sf.records[0].client_flops == samples * client_training_flops_per_sample(client, SHAPE)
    fa = run(cnn, clients, test, rounds=rounds, local=local, seed=3, progress=False)
    assert sf.accuracy == pytest.approx(fa.accuracy, abs=1e-9)
    for (k, a), b in zip(sf.model.state_dict().items(), fa.model.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_splitfed_v2_trains_and_validates(cnn):
    g = torch.Generator().manual_seed(4)
    clients = [ClientData(torch.randn(10, *SHAPE, generator=g), torch.randint(0, 10, (10,), generator=g))]
    sf = splitfed_run(cnn, clients, (clients[0].x, clients[0].y), cut=3, rounds=1, variant="v2")
    assert sf.records[0].client_flops > 0
    with pytest.raises(ValueError, match="variant"):
        splitfed_run(cnn, clients, (clients[0].x, clients[0].y), cut=3, rounds=1, variant="v3")
    with pytest.raises(ValueError, match="cut_layer"):
        split_at(cnn, len(cnn))


# ----------------------------------------------------------------------------- exercise checks both ways
def test_check_choose_cut_both_ways(cnn):
    checks.check_choose_cut(checks.reference_choose_cut, cnn, SHAPE)
    with pytest.raises(AssertionError, match="choose_cut"):
        checks.check_choose_cut(lambda model, shape, budget: 3, cnn, SHAPE)
    with pytest.raises(AssertionError, match="not implemented"):
        checks.check_choose_cut(_stub, cnn, SHAPE)


def _stub(*args):
    raise NotImplementedError()


def test_article_placement_fails_without_moving_activations():
    """The article's bug, reproduced with the meta device: a layer elsewhere, the activation not moved."""
    model = article_large_net()
    model[2].to("meta")
    with pytest.raises(RuntimeError, match="device"):
        model(torch.randn(4, 10))


def test_stage_input_shapes_and_schedule_plot(cnn, batch):
    import matplotlib

    matplotlib.use("Agg")
    from fedlab_utils.lessons.parallel import plot_schedule, stage_input_shapes

    staged = StagedModel(split_sequential(copy.deepcopy(cnn), 3, boundaries=[0, 3, 6, len(cnn)]),
                         get_devices(3, verbose=False))
    assert stage_input_shapes(staged, SHAPE) == [SHAPE, (8, 4, 4), (16, 2, 2)]
    report = pipeline_train_step(staged, *batch, micro_batches=2)
    fig, ax = plot_schedule(report)
    assert len(ax.patches) == 2 * 3 * 2  # a forward and a backward bar per stage and micro-batch


def test_timed_pipeline_step_leaves_one_steps_gradients(cnn, batch):
    from fedlab_utils.lessons.parallel import timed_pipeline_step

    x, y = batch
    _, _, ref_grads = reference_step(cnn, x, y)
    model = copy.deepcopy(cnn)
    staged = StagedModel(split_sequential(model, 2), get_devices(2, verbose=False))
    report = timed_pipeline_step(staged, x, y, micro_batches=3, repeats=3)
    assert report.micro_batches == 3
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name], atol=1e-5, rtol=0)
