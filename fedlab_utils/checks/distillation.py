"""Checks for notebook 03 (distillation).  Each raises ``AssertionError`` with a hint when wrong."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..i18n import gettext
from . import call_safely, expect, expect_close, expect_ratio_within, passed

__all__ = ["check_kd_loss", "check_payload_bytes", "check_ensemble_soft_targets", "check_logit_ratio_prediction"]


def _reference_kd(s, t, y, temperature, alpha):
    from fedlab_utils.lessons.distillation.knowledge import kd_loss

    return float(kd_loss(s, t, y, temperature=temperature, alpha=alpha))


def check_kd_loss(fn: Callable, seed: int | None = None) -> None:
    """``fn(student_logits, teacher_logits, targets, temperature, alpha)`` must be Hinton's loss.

    Convention: ``α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α)·CE(s, y)``, batch mean.
    ``seed``: other logits, batch size and (T, α) pairs (hidden tests).
    """
    g = torch.Generator().manual_seed(3 if seed is None else 3000 + seed)
    batch, classes = (6, 5) if seed is None else (9, 7)
    s = torch.randn(batch, classes, generator=g) * 2
    t = torch.randn(batch, classes, generator=g) * 2
    y = torch.randint(0, classes, (batch,), generator=g)
    pairs = [(1.0, 0.0), (1.0, 1.0), (4.0, 1.0), (2.0, 0.5), (8.0, 0.9)] if seed is None else [(3.0, 0.7), (0.5, 0.2)]
    for temperature, alpha in pairs:
        got = call_safely(fn, s, t, y, temperature, alpha, what="your kd loss")
        expected = _reference_kd(s, t, y, temperature, alpha)
        hint = ""
        if alpha == 0.0:
            hint = gettext("With alpha=0 the loss must be plain cross-entropy on the labels.")
        elif isinstance(got, (float, torch.Tensor)):
            value = float(got)
            kl = _reference_kd(s, t, y, temperature, 1.0) / temperature ** 2
            if abs(value - alpha * kl - (1 - alpha) * _reference_kd(s, t, y, 1.0, 0.0)) < 1e-4 and temperature != 1:
                hint = gettext("You forgot the T² factor on the KL term.")
            else:
                hint = (gettext("Soften BOTH logits by T, use KL(teacher ‖ student) = F.kl_div(log_softmax(s/T), "
                                "softmax(t/T), reduction='batchmean'), multiply by T², and mix with (1-alpha)*CE."))
        expect_close(got, expected, f"kd loss at T={temperature}, alpha={alpha}", rel=1e-4, abs_=1e-6, hint=hint)
    same = call_safely(fn, s, s.clone(), y, 3.0, 1.0, what="your kd loss")
    expect_close(same, 0.0, "kd loss when the student equals the teacher (alpha=1)", abs_=1e-5,
                 hint="KL of a distribution with itself is zero.")
    passed("check_kd_loss")


def check_payload_bytes(logit_bytes: int, weight_bytes: int, *, proxy_size: int, num_classes: int,
                        model: nn.Module, logit_dtype: str = "fp16") -> None:
    """Uplink bytes per client per round: logits on ``proxy_size`` samples vs ``model``'s fp32 weights."""
    from fedlab_utils.lessons.distillation.federated import LogitCodec, weight_payload_bytes

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
               gettext('{name}: expected an int number of bytes, got {type_got_name}').format(name=name, type_got_name=type(got).__name__))
        expect(got == expected, gettext('{name}: got {got} bytes, expected {expected}. {hint}').format(name=name, got=got, expected=expected, hint=hint))
    passed("check_payload_bytes")


def check_ensemble_soft_targets(fn: Callable, seed: int | None = None) -> None:
    """``fn(member_logits, temperature) -> probs``: FedDF's teacher for distillation: average the
    members' logits (a list of ``[batch, classes]`` tensors), then soften with temperature
    ``T``: ``softmax(mean_k(logits_k) / T)`` over the classes.  ``seed``: other inputs (hidden tests)."""
    what = "ensemble_soft_targets"
    hint = (gettext("Average the logits of the members first (torch.stack(member_logits).mean(0)), then take "
                    "softmax(avg / T, dim=1) over the classes."))
    g = torch.Generator().manual_seed(5 if seed is None else 4000 + seed)
    shapes = [(3, 4, 6), (2, 5, 10)] if seed is None else [(4, 3, 7)]
    temperatures = [1.0, 3.0] if seed is None else [2.5]
    for members, batch, classes in shapes:
        logits = [torch.randn(batch, classes, generator=g) * 3 for _ in range(members)]
        for temperature in temperatures:
            got = call_safely(fn, [z.clone() for z in logits], temperature, what=what)
            expect(isinstance(got, torch.Tensor) and tuple(got.shape) == (batch, classes),
                   gettext('{what}: return a tensor of shape (batch, classes) = {batch_classes}, got {tuple_got_shape_if_isins}').format(what=what, batch_classes=(batch, classes), tuple_got_shape_if_isins=tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__))
            mean = torch.stack(logits).mean(0)
            want = torch.softmax(mean / temperature, dim=1)
            prob_mean = torch.stack([torch.softmax(z / temperature, dim=1) for z in logits]).mean(0)
            if torch.allclose(got, prob_mean, atol=1e-6) and not torch.allclose(want, prob_mean, atol=1e-6):
                raise AssertionError(gettext('{what}: you averaged probabilities; FedDF averages the LOGITS and softens the average. {hint}').format(what=what, hint=hint))
            if temperature != 1.0 and torch.allclose(got, torch.softmax(mean, dim=1), atol=1e-6):
                raise AssertionError(gettext('{what}: at T={temperature} the targets must be softened: divide the averaged logits by T before the softmax. {hint}').format(what=what, temperature=temperature, hint=hint))
            expect(torch.allclose(got.sum(1), torch.ones(batch), atol=1e-5),
                   gettext('{what}: each row must be a probability distribution over the classes (sum to 1 along dim=1). {hint}').format(what=what, hint=hint))
            expect(torch.allclose(got, want, atol=1e-6),
                   gettext('{what}: T={temperature}: off by up to {got_want_abs_max_item:.3g}. {hint}').format(what=what, temperature=temperature, got_want_abs_max_item=(got - want).abs().max().item(), hint=hint))
    passed(what)


def check_logit_ratio_prediction(prediction, *, model: nn.Module, proxy_size: int, num_classes: int,
                                 logit_dtype: str = "fp16", band: float = 0.1) -> None:
    """Predict-then-check: how many times fewer bytes a FedMD client uploads per round (logits on the
    proxy set) than a FedAvg client (``model``'s fp32 weights).

    The check *measures* the answer from real payloads, ``weight_payload_bytes(model)`` over
    ``len(LogitCodec(logit_dtype).encode(zeros(proxy_size, num_classes)))`` (the sizes the ledger
    counts), and accepts a prediction within ``band`` (relative) of it.  The usual slip, logits
    counted as fp32 (half the ratio), gets its own hint.
    """
    from fedlab_utils.lessons.distillation.federated import LogitCodec, weight_payload_bytes

    from ..models import count_parameters

    what = "predicted_logit_ratio"
    if isinstance(prediction, torch.Tensor) and prediction.numel() == 1:
        prediction = prediction.item()
    expect(isinstance(prediction, (int, float)) and not isinstance(prediction, bool) and prediction > 0,
           gettext('{what}: commit one positive number (how many times fewer bytes), got {prediction!r}').format(what=what, prediction=prediction))
    codec = LogitCodec(logit_dtype)
    logit_bytes = len(codec.encode(torch.zeros(proxy_size, num_classes)))
    weight_bytes = weight_payload_bytes(model)
    measured = weight_bytes / logit_bytes
    hint = (gettext('The measured ratio is {measured:.1f}x: FedAvg sends every parameter, weights and biases ({count_parameters_model:,}), at 4 bytes; FedMD sends proxy_size × classes = {proxy_size} × {num_classes} logits at {codec_bytes_per_value} bytes ({logit_dtype}).').format(measured=measured, count_parameters_model=count_parameters(model), proxy_size=proxy_size, num_classes=num_classes, codec_bytes_per_value=codec.bytes_per_value, logit_dtype=logit_dtype))
    as_fp32 = weight_bytes / (proxy_size * num_classes * 4)
    expect_ratio_within(prediction, measured, band, what, hint, usual_wrong=as_fp32, digits=1,
                        usual_wrong_message=gettext('{what}: {prediction:g}x counts the logits as fp32 (4 bytes); they travel as {logit_dtype}. {hint}').format(what=what, prediction=prediction, logit_dtype=logit_dtype, hint=hint))
