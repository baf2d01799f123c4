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
