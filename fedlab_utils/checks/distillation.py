"""Checks for notebook 03 (distillation).  Each raises ``AssertionError`` with a hint when wrong."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from . import call_safely, expect, expect_close, passed

__all__ = ["check_kd_loss", "check_payload_bytes"]


def _reference_kd(s, t, y, temperature, alpha):
    from ..distillation import kd_loss

    return float(kd_loss(s, t, y, temperature=temperature, alpha=alpha))


def check_kd_loss(fn: Callable) -> None:
    """``fn(student_logits, teacher_logits, targets, temperature, alpha)`` must be Hinton's loss.

    Convention: ``α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α)·CE(s, y)``, batch mean.
    """
    g = torch.Generator().manual_seed(3)
    s = torch.randn(6, 5, generator=g) * 2
    t = torch.randn(6, 5, generator=g) * 2
    y = torch.randint(0, 5, (6,), generator=g)
    for temperature, alpha in [(1.0, 0.0), (1.0, 1.0), (4.0, 1.0), (2.0, 0.5), (8.0, 0.9)]:
        got = call_safely(fn, s, t, y, temperature, alpha, what="your kd loss")
        expected = _reference_kd(s, t, y, temperature, alpha)
        hint = ""
        if alpha == 0.0:
            hint = "With alpha=0 the loss must be plain cross-entropy on the labels."
        elif isinstance(got, (float, torch.Tensor)):
            value = float(got)
            kl = _reference_kd(s, t, y, temperature, 1.0) / temperature ** 2
            if abs(value - alpha * kl - (1 - alpha) * _reference_kd(s, t, y, 1.0, 0.0)) < 1e-4 and temperature != 1:
                hint = "You forgot the T² factor on the KL term."
            else:
                hint = ("Soften BOTH logits by T, use KL(teacher ‖ student) = F.kl_div(log_softmax(s/T), "
                        "softmax(t/T), reduction='batchmean'), multiply by T², and mix with (1-alpha)*CE.")
        expect_close(got, expected, f"kd loss at T={temperature}, alpha={alpha}", rel=1e-4, abs_=1e-6, hint=hint)
    same = call_safely(fn, s, s.clone(), y, 3.0, 1.0, what="your kd loss")
    expect_close(same, 0.0, "kd loss when the student equals the teacher (alpha=1)", abs_=1e-5,
                 hint="KL of a distribution with itself is zero.")
    passed("check_kd_loss")


def check_payload_bytes(logit_bytes: int, weight_bytes: int, *, proxy_size: int, num_classes: int,
                        model: nn.Module, logit_dtype: str = "fp16") -> None:
    """Uplink bytes per client per round: logits on ``proxy_size`` samples vs ``model``'s fp32 weights."""
    from ..distillation import LogitCodec, weight_payload_bytes

    codec = LogitCodec(logit_dtype)
    expected_logits = len(codec.encode(torch.zeros(proxy_size, num_classes)))
    expected_weights = weight_payload_bytes(model)
    for name, got, expected, hint in [
        ("logit payload", logit_bytes, expected_logits,
         f"proxy_size × num_classes values, {codec.bytes_per_value} bytes each ({logit_dtype})."),
        ("weight payload", weight_bytes, expected_weights,
         "Every parameter (weights AND biases) at 4 bytes (fp32); count_parameters(model) helps."),
    ]:
        expect(isinstance(got, int) and not isinstance(got, bool),
               f"{name}: expected an int number of bytes, got {type(got).__name__}")
        expect(got == expected, f"{name}: got {got} bytes, expected {expected}. {hint}")
    passed("check_payload_bytes")
