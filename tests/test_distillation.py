"""Tests for fedlab_utils.lessons.distillation.federated and its exercise checks (hand computations and invariants)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fedlab_utils.checks import distillation as kd_checks
from fedlab_utils.core import LocalTraining, evaluate, fedavg_aggregate, run
from fedlab_utils.data import client_data, partition
from fedlab_utils.lessons.distillation import (
    EnsembleDistillation,
    LogitCodec,
    check_proxy_size,
    distill,
    ensemble_logits,
    kd_loss,
    proxy_split,
    run_feddf_heterogeneous,
    run_logit_sharing,
    weight_payload_bytes,
)
from fedlab_utils.models import count_parameters, make_model


# ----------------------------------------------------------------------------- the loss
def test_kd_loss_matches_hand_computation():
    s = torch.tensor([[1.0, 0.0, -1.0]])
    t = torch.tensor([[0.0, 2.0, 0.0]])
    y = torch.tensor([1])
    T, a = 2.0, 0.25
    ps = np.exp(s.numpy()[0] / T) / np.exp(s.numpy()[0] / T).sum()
    pt = np.exp(t.numpy()[0] / T) / np.exp(t.numpy()[0] / T).sum()
    kl = float((pt * np.log(pt / ps)).sum())
    ce = -math.log(math.exp(0.0) / (math.exp(1.0) + math.exp(0.0) + math.exp(-1.0)))
    expected = a * T ** 2 * kl + (1 - a) * ce
    assert kd_loss(s, t, y, temperature=T, alpha=a).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("T", [0.5, 1.0, 3.0, 20.0])
def test_kd_loss_zero_when_student_equals_teacher(T):
    logits = torch.randn(8, 10) * 4
    assert kd_loss(logits, logits.clone(), temperature=T, alpha=1.0).item() == pytest.approx(0.0, abs=1e-5)


def test_kd_loss_alpha_zero_is_cross_entropy_and_needs_no_teacher():
    s, y = torch.randn(16, 10), torch.randint(0, 10, (16,))
    ce = F.cross_entropy(s, y).item()
    assert kd_loss(s, None, y, temperature=7.0, alpha=0.0).item() == pytest.approx(ce, rel=1e-6)
    assert kd_loss(s, torch.randn(16, 10), y, temperature=7.0, alpha=0.0).item() == pytest.approx(ce, rel=1e-6)


def test_kd_loss_scales_kl_by_t_squared_and_is_batch_mean():
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    for T in (1.0, 4.0):
        kl_rows = (F.softmax(t / T, 1) * (F.log_softmax(t / T, 1) - F.log_softmax(s / T, 1))).sum(1)
        assert kd_loss(s, t, temperature=T, alpha=1.0).item() == pytest.approx(T ** 2 * kl_rows.mean().item(), rel=1e-5)


def test_kd_loss_validates_its_arguments():
    s = torch.randn(2, 3)
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(s, s, temperature=0.0, alpha=1.0)
    with pytest.raises(ValueError, match="alpha"):
        kd_loss(s, s, temperature=1.0, alpha=1.5)
    with pytest.raises(ValueError, match="labels"):
        kd_loss(s, s, None, temperature=1.0, alpha=0.5)
    with pytest.raises(ValueError, match="teacher"):
        kd_loss(s, None, torch.tensor([0, 1]), alpha=0.5)
    with pytest.raises(ValueError, match="same inputs"):
        kd_loss(s, torch.randn(3, 3), alpha=1.0)


# ----------------------------------------------------------------------------- teacher -> student
class Recorder(nn.Module):
    """Wraps a model and remembers every input batch it sees."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.model(x)


def test_teacher_and_student_receive_the_identical_batch(digits):
    x, y = digits.x_train[:200], digits.y_train[:200]
    teacher = Recorder(make_model("mlp", digits.input_shape, 10, hidden=(32,)))
    student = Recorder(make_model("mlp", digits.input_shape, 10, hidden=(8,)))
    distill(student, x, y, teacher=teacher, temperature=3.0, alpha=0.7, epochs=2, batch_size=32, seed=5)
    assert len(teacher.seen) == len(student.seen) == 2 * math.ceil(200 / 32)
    for xt, xs in zip(teacher.seen, student.seen):
        assert torch.equal(xt, xs)
    # and the labels-only baseline with the same seed sees the same batches in the same order
    baseline = Recorder(make_model("mlp", digits.input_shape, 10, hidden=(8,)))
    distill(baseline, x, y, teacher=None, epochs=2, batch_size=32, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(baseline.seen, student.seen))


def test_distillation_moves_student_towards_teacher(digits):
    x = digits.x_train[:300]
    torch.manual_seed(1)
    with torch.no_grad():  # a teacher that is a function of x (random targets could not be learned)
        teacher_logits = 5 * make_model("mlp", digits.input_shape, 10, hidden=(64,))(x)
    student = make_model("mlp", digits.input_shape, 10, hidden=(32,))
    before = kd_loss(student(x), teacher_logits, alpha=1.0, temperature=2.0).item()
    distill(student, x, teacher=teacher_logits, temperature=2.0, alpha=1.0, epochs=15, lr=3e-3)
    after = kd_loss(student(x), teacher_logits, alpha=1.0, temperature=2.0).item()
    assert after < 0.5 * before


def test_distill_rejects_misaligned_teacher_logits(digits):
    student = make_model("mlp", digits.input_shape, 10)
    with pytest.raises(ValueError, match="one row per input"):
        distill(student, digits.x_train[:10], teacher=torch.zeros(9, 10), alpha=1.0)


# ----------------------------------------------------------------------------- proxy set
def test_proxy_split_is_disjoint_complete_and_validated():
    proxy, private = proxy_split(100, 30, seed=3, num_clients=5)
    assert len(proxy) == 30 and len(private) == 70
    assert set(proxy).isdisjoint(private) and set(proxy) | set(private) == set(range(100))
    assert np.array_equal(proxy, proxy_split(100, 30, seed=3, num_clients=5)[0])
    for bad in (0, 91, 2.5):
        with pytest.raises(ValueError, match="proxy_size"):
            check_proxy_size(bad, 100, 5)


# ----------------------------------------------------------------------------- ensembles
def test_ensemble_logits_is_the_mean_of_members(digits):
    a, b = make_model("mlp", digits.input_shape, 10), make_model("cnn", digits.input_shape, 10, channels=(4,))
    x = digits.x_test[:50]
    with torch.no_grad():
        expected = (a(x) + b(x)) / 2
    assert torch.allclose(ensemble_logits([a, b], x), expected, atol=1e-6)


LOCAL = LocalTraining(epochs=3, batch_size=32, lr=0.1, optimizer="sgdm")


@pytest.fixture(scope="module")
def federation(digits):
    proxy, private = proxy_split(len(digits.y_train), 200, seed=0, num_clients=4)
    parts = partition(digits.y_train[private], 4, "iid", seed=0)
    clients = client_data(digits, [private[p] for p in parts])
    return clients, digits.x_train[proxy], (digits.x_test, digits.y_test)


def test_ensemble_distillation_without_epochs_is_fedavg(digits, federation):
    clients, proxy_x, test = federation
    model = make_model("mlp", digits.input_shape, 10, hidden=(16,))
    local = LOCAL
    plain = run(model, clients, test, rounds=2, local=local, seed=0, aggregate=fedavg_aggregate)
    hook = EnsembleDistillation(proxy_x, epochs=0)
    same = run(model, clients, test, rounds=2, local=local, seed=0, aggregate=hook)
    for p, q in zip(plain.model.parameters(), same.model.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    distilled = run(model, clients, test, rounds=2, local=local, seed=0,
                    aggregate=EnsembleDistillation(proxy_x, epochs=1))
    assert distilled.final_accuracy > 0.5
    assert distilled.totals()["bytes_up"] == plain.totals()["bytes_up"]  # the wire does not change


def test_ensemble_distillation_with_two_architectures(digits, federation):
    clients, proxy_x, test = federation
    archs = {"mlp": make_model("mlp", digits.input_shape, 10, hidden=(32,)),
             "cnn": make_model("cnn", digits.input_shape, 10, channels=(4,))}
    histories = run_feddf_heterogeneous(archs, ["mlp", "cnn", "mlp", "cnn"], clients, proxy_x, test, rounds=3,
                                        local=LOCAL, seed=0,
                                        distill_epochs=1)
    assert set(histories) == {"FedDF hetero · mlp", "FedDF hetero · cnn"}
    for name, arch in archs.items():
        h = histories[f"FedDF hetero · {name}"]
        assert len(h.records) == 3 and h.final_accuracy > 0.5
        # each client uploads its own architecture's fp32 weights: 2 clients per architecture
        assert h.records[0].bytes_up == 2 * weight_payload_bytes(arch)
        assert count_parameters(h.model) == count_parameters(arch)
        assert evaluate(h.model, *test)[0] == pytest.approx(h.final_accuracy)
    with pytest.raises(ValueError, match="assignment"):
        run_feddf_heterogeneous(archs, ["mlp", "rnn", "mlp", "cnn"], clients, proxy_x, test, rounds=1)


# ----------------------------------------------------------------------------- logit sharing
def test_logit_codec_payload_is_serialized_length():
    logits = torch.randn(37, 10)
    for dtype, size in (("fp16", 2), ("fp32", 4)):
        codec = LogitCodec(dtype)
        payload = codec.encode({"logits": logits})
        assert isinstance(payload, bytes) and len(payload) == 37 * 10 * size
        back = codec.decode(payload, logits)
        assert torch.allclose(back, logits, atol=1e-2 if dtype == "fp16" else 0)


@pytest.mark.parametrize("mode", ["proxy", "per_class"])
def test_logit_sharing_ledger_counts_payload_bytes(digits, federation, mode):
    clients, proxy_x, test = federation
    model = make_model("mlp", digits.input_shape, 10, hidden=(16,))
    h = run_logit_sharing(model, clients, test, rounds=2, proxy_x=proxy_x, mode=mode, seed=0,
                          local=LOCAL, codec=LogitCodec("fp16"))
    rows = len(proxy_x) if mode == "proxy" else 10
    per_client = len(LogitCodec("fp16").encode(torch.zeros(rows, 10)))
    assert all(r.bytes_up == len(clients) * per_client for r in h.records)
    assert h.records[0].bytes_down == 0 and h.records[1].bytes_down == len(clients) * per_client
    assert per_client == rows * 10 * 2
    assert h.final_accuracy > 0.5 and len(h.client_models) == len(clients)


# ----------------------------------------------------------------------------- exercise checks
def _right(s, t, y, T, a):
    return kd_loss(s, t, y, temperature=T, alpha=a)


def _no_t_squared(s, t, y, T, a):
    kl = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean")
    return a * kl + (1 - a) * F.cross_entropy(s, y)


def _stub(s, t, y, T, a):
    raise NotImplementedError()


def test_check_kd_loss_both_ways():
    kd_checks.check_kd_loss(_right)
    with pytest.raises(AssertionError, match="T²"):
        kd_checks.check_kd_loss(_no_t_squared)
    with pytest.raises(AssertionError, match="not implemented"):
        kd_checks.check_kd_loss(_stub)


def test_check_payload_bytes_both_ways(digits):
    model = make_model("mlp", digits.input_shape, 10, hidden=(16,))
    n = count_parameters(model)
    kd_checks.check_payload_bytes(50 * 10 * 2, n * 4, proxy_size=50, num_classes=10, model=model)
    with pytest.raises(AssertionError, match="logit payload"):
        kd_checks.check_payload_bytes(50 * 10 * 4, n * 4, proxy_size=50, num_classes=10, model=model)
    with pytest.raises(AssertionError, match="weight payload"):
        kd_checks.check_payload_bytes(50 * 10 * 2, n * 2, proxy_size=50, num_classes=10, model=model)
    with pytest.raises(AssertionError, match="int"):
        kd_checks.check_payload_bytes(1000.0, n * 4, proxy_size=50, num_classes=10, model=model)


def test_rules_03_accept_the_notebook_defaults_and_name_a_bad_parameter():
    """Notebook 03 validates its parameters in one call against RULES_03 (proxy_split checks proxy_size's upper bound)."""
    from fedlab_utils.lessons.distillation import RULES_03
    from fedlab_utils.validation import check_parameters

    defaults = dict(seed=0, dataset="mnist5k", data_dir=None, num_clients=10, rounds=8, local_epochs=2, partition="iid",
                    temperature=4.0, alpha=0.9, proxy_size=500, teacher_hidden=128, student_hidden=16, distill_epochs=40,
                    results_path=None)
    assert check_parameters(defaults, RULES_03) == defaults
    for name, bad in [("temperature", 0), ("alpha", 1.5), ("partition", "shards"), ("proxy_size", 0), ("num_clients", 51)]:
        with pytest.raises(ValueError, match=name):
            check_parameters(defaults | {name: bad}, RULES_03)
    with pytest.raises(ValueError, match="proxy_size"):
        proxy_split(4000, 3999, num_clients=10)
