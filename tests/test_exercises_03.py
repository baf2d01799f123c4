"""Notebook 03's predict exercise, both ways: a prediction within the stated band of the measured
FedAvg/FedMD uplink ratio passes; logits counted as fp32, a far-off number and a non-number raise with
a hint."""
import pytest
import torch

from fedlab_utils.checks import distillation
from fedlab_utils.lessons.distillation import LogitCodec, weight_payload_bytes
from fedlab_utils.models import count_parameters, make_model


def test_measured_payloads_match_the_hand_count():
    teacher = make_model("mlp", (1, 28, 28), 10, hidden=(128,))
    assert count_parameters(teacher) == 784 * 128 + 128 + 128 * 10 + 10 == 101_770
    assert weight_payload_bytes(teacher) == 4 * 101_770
    assert len(LogitCodec("fp16").encode(torch.zeros(500, 10))) == 500 * 10 * 2


@pytest.mark.parametrize("proxy_size,hidden", [(500, 128), (200, 64), (2000, 16)])
def test_logit_ratio_prediction_both_ways(proxy_size, hidden):
    teacher = make_model("mlp", (1, 28, 28), 10, hidden=(hidden,))
    measured = 4 * count_parameters(teacher) / (2 * proxy_size * 10)
    kw = dict(model=teacher, proxy_size=proxy_size, num_classes=10)
    for right in (measured, 1.09 * measured, 0.91 * measured):
        distillation.check_logit_ratio_prediction(right, **kw)
    with pytest.raises(AssertionError, match="as fp32"):  # logits at 4 bytes: half the ratio
        distillation.check_logit_ratio_prediction(measured / 2, **kw)
    for wrong in (1.15 * measured, 0.85 * measured, 4 * measured, 1.0):
        with pytest.raises(AssertionError, match="measured ratio"):
            distillation.check_logit_ratio_prediction(wrong, **kw)
    for not_a_number in ("40", None, True, 0.0):
        with pytest.raises(AssertionError, match="positive number"):
            distillation.check_logit_ratio_prediction(not_a_number, **kw)


# ----------------------------------------------------------------------------- the build-it cell: the KD loss
import torch.nn.functional as F  # noqa: E402


def _kd(s, t, y, T, a):
    return a * T ** 2 * F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean") \
        + (1 - a) * F.cross_entropy(s, y)


def test_kd_loss_right_answer_passes_on_visible_and_hidden_cases():
    for seed in (None, 0, 1, 5):
        distillation.check_kd_loss(_kd, seed=seed)


@pytest.mark.parametrize("wrong,match", [
    (lambda s, t, y, T, a: a * F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean")
     + (1 - a) * F.cross_entropy(s, y), "T² factor"),
    (lambda s, t, y, T, a: a * T ** 2 * F.kl_div(F.softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean")
     + (1 - a) * F.cross_entropy(s, y), "LOG-probabilities"),
    (lambda s, t, y, T, a: a * T ** 2 * F.kl_div(F.log_softmax(t / T, 1), F.softmax(s / T, 1), reduction="batchmean")
     + (1 - a) * F.cross_entropy(s, y), "wrong way"),
    (lambda s, t, y, T, a: a * T ** 2 * F.kl_div(F.log_softmax(s, 1), F.softmax(t / T, 1), reduction="batchmean")
     + (1 - a) * F.cross_entropy(s, y), "BOTH"),
    (lambda s, t, y, T, a: (1 - a) * T ** 2 * F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1),
                                                       reduction="batchmean") + a * F.cross_entropy(s, y), "TEACHER"),
    (lambda s, t, y, T, a: float(_kd(s, t, y, T, a)), "connected"),
])
def test_kd_loss_names_each_plausible_slip(wrong, match):
    with pytest.raises(AssertionError, match=match):
        distillation.check_kd_loss(wrong)


# ----------------------------------------------------------------------------- Exercise 2: FedMD's client compute
def _fedmd_flops(train, fwd, private, epochs, proxy, distill_epochs):
    return train * (distill_epochs * proxy + epochs * private) + fwd * proxy


def test_fedmd_client_flops_both_ways():
    for seed in (None, 0, 1, 3):
        distillation.check_fedmd_client_flops(_fedmd_flops, seed=seed)
    slips = {
        "FedAvg client's count": lambda tr, fw, n, e, p, de: tr * e * n,
        "forward pass": lambda tr, fw, n, e, p, de: tr * (de * p + e * n),
        "distils toward": lambda tr, fw, n, e, p, de: tr * e * n + fw * p,
        "distilling is training": lambda tr, fw, n, e, p, de: fw * de * p + tr * e * n + fw * p,
        "local_epochs passes": lambda tr, fw, n, e, p, de: tr * (de * p + n) + fw * p,
        "Count every pass": lambda tr, fw, n, e, p, de: 2 * _fedmd_flops(tr, fw, n, e, p, de),
    }
    for match, wrong in slips.items():
        with pytest.raises(AssertionError, match=match):
            distillation.check_fedmd_client_flops(wrong)


def test_fedmd_client_flops_is_what_the_ledger_charges():
    """The check's reference equals the ledger of a real FedMD run (round 2, when a consensus exists)."""
    from fedlab_utils.checks.distillation import fedmd_client_flops
    from fedlab_utils.core import LocalTraining
    from fedlab_utils.data import client_data, load_dataset, partition
    from fedlab_utils.ledger import forward_flops, training_flops_per_sample
    from fedlab_utils.lessons.distillation import proxy_split, run_logit_sharing

    data = load_dataset("digits", seed=0)
    proxy_idx, private_idx = proxy_split(len(data.y_train), 60, seed=0, num_clients=3)
    parts = partition(data.y_train[private_idx], 3, "iid", seed=0)
    clients = client_data(data, [private_idx[p] for p in parts], torch.device("cpu"))
    model = make_model("mlp", data.input_shape, data.num_classes, hidden=(8,))
    h = run_logit_sharing(model, clients, (data.x_test, data.y_test), rounds=2, proxy_x=data.x_train[proxy_idx],
                          local=LocalTraining(epochs=2, batch_size=32, lr=0.1), seed=0, distill_epochs=2,
                          progress=False)
    shape = tuple(data.input_shape)
    expected = sum(fedmd_client_flops(training_flops_per_sample(model, shape), forward_flops(model, shape),
                                      len(c), 2, 60, 2) for c in clients)
    assert h.records[1].client_flops == expected
