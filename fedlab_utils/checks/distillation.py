"""Checks for notebook 03 (distillation).  Each raises ``AssertionError`` with a hint when wrong."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..i18n import gettext
from . import call_safely, expect, expect_close, expect_ratio_within, passed

__all__ = ["check_kd_loss", "check_fedmd_client_flops", "check_payload_bytes", "check_ensemble_soft_targets", "check_logit_ratio_prediction"]


def _reference_kd(s, t, y, temperature, alpha):
    from fedlab_utils.lessons.distillation.knowledge import kd_loss

    return float(kd_loss(s, t, y, temperature=temperature, alpha=alpha))


def _kd_slips(s, t, y, temperature, alpha) -> dict[str, float]:
    """The usual wrong versions of the loss, each with the hint that names the slip."""
    import torch.nn.functional as F

    T = temperature
    ce = float(F.cross_entropy(s, y))

    def mix(soft: torch.Tensor, t2: float = T ** 2) -> float:
        return float(alpha * t2 * soft + (1 - alpha) * ce)

    log_ps, p_t = F.log_softmax(s / T, dim=1), F.softmax(t / T, dim=1)
    return {
        gettext("You forgot the T² factor on the KL term: softening by T shrinks the soft term's gradient by "
                "1/T², and T² restores it."): mix(F.kl_div(log_ps, p_t, reduction="batchmean"), 1.0),
        gettext("Your KL runs the wrong way: the target distribution is the teacher's. F.kl_div(input, target) "
                "computes KL(target ‖ input), so pass the student's log-probabilities as input and the teacher's "
                "probabilities as target."): mix(F.kl_div(F.log_softmax(t / T, dim=1), F.softmax(s / T, dim=1),
                                                          reduction="batchmean")),
        gettext("F.kl_div expects LOG-probabilities as its input: use F.log_softmax(student_logits / T) for the "
                "student, not F.softmax."): mix(F.kl_div(F.softmax(s / T, dim=1), p_t, reduction="batchmean")),
        gettext("reduction='mean' divides by batch × classes; the KL of a batch is its sum over classes averaged "
                "over samples: reduction='batchmean'."): mix(F.kl_div(log_ps, p_t, reduction="mean")),
        gettext("Soften BOTH logits by T: you divided only the teacher's."): mix(
            F.kl_div(F.log_softmax(s, dim=1), p_t, reduction="batchmean")),
        gettext("alpha weights the TEACHER's term here (alpha=1: teacher only), and 1-alpha the labels."): float(
            (1 - alpha) * T ** 2 * F.kl_div(log_ps, p_t, reduction="batchmean") + alpha * ce),
    }


def check_kd_loss(fn: Callable, seed: int | None = None) -> None:
    """``fn(student_logits, teacher_logits, targets, temperature, alpha)`` must be Hinton's loss.

    Convention: ``α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α)·CE(s, y)``, batch mean, compared
    with the package's :func:`fedlab_utils.lessons.distillation.knowledge.kd_loss`.  The usual slips get their own
    hint: no ``T²``, KL the wrong way round, ``softmax`` instead of ``log_softmax`` for the student,
    ``reduction='mean'``, only the teacher softened, α on the wrong term.  The loss must also be
    differentiable in the student's logits (it is what the student trains on).
    ``seed``: other logits, batch size and (T, α) pairs (hidden tests).
    """
    import warnings

    g = torch.Generator().manual_seed(3 if seed is None else 3000 + seed)
    batch, classes = (6, 5) if seed is None else (9, 7)
    s = torch.randn(batch, classes, generator=g) * 2
    t = torch.randn(batch, classes, generator=g) * 2
    y = torch.randint(0, classes, (batch,), generator=g)
    pairs = [(4.0, 1.0), (1.0, 0.0), (2.0, 0.5), (8.0, 0.9), (1.0, 1.0)] if seed is None else [(3.0, 0.7), (0.5, 0.2)]
    general = gettext("Soften BOTH logits by T, use KL(teacher ‖ student) = F.kl_div(log_softmax(s/T), "
                      "softmax(t/T), reduction='batchmean'), multiply by T², and mix with (1-alpha)*CE.")
    for temperature, alpha in pairs:
        got = call_safely(fn, s, t, y, temperature, alpha, what=gettext("your kd loss"))
        expected = _reference_kd(s, t, y, temperature, alpha)
        hint = general
        if alpha == 0.0:
            hint = gettext("With alpha=0 the loss must be plain cross-entropy on the labels.")
        elif isinstance(got, (float, torch.Tensor)) and not math.isclose(float(got), expected, rel_tol=1e-4, abs_tol=1e-6):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # reduction='mean' warns; that slip is named below
                slips = _kd_slips(s, t, y, temperature, alpha)
            named = [h for h, v in slips.items() if math.isclose(float(got), v, rel_tol=1e-4, abs_tol=1e-6)]
            hint = named[0] if named else general
        expect_close(got, expected, gettext("kd loss at T={temperature}, alpha={alpha}").format(temperature=temperature, alpha=alpha),
                     rel=1e-4, abs_=1e-6, hint=hint)
    same = call_safely(fn, s, s.clone(), y, 3.0, 1.0, what=gettext("your kd loss"))
    expect_close(same, 0.0, gettext("kd loss when the student equals the teacher (alpha=1)"), abs_=1e-5,
                 hint=gettext("KL of a distribution with itself is zero."))
    student = s.clone().requires_grad_(True)
    loss = call_safely(fn, student, t, y, 4.0, 0.9, what=gettext("your kd loss"))
    expect(isinstance(loss, torch.Tensor) and loss.requires_grad,
           gettext("your kd loss must stay a tensor connected to the student's logits (no .item(), no "
                   "torch.no_grad()): the student trains on its gradient."))
    passed("check_kd_loss")


def check_payload_bytes(logit_bytes: int, weight_bytes: int, *, proxy_size: int, num_classes: int,
                        model: nn.Module, logit_dtype: str = "fp16") -> None:
    """Uplink bytes per client per round: logits on ``proxy_size`` samples vs ``model``'s fp32 weights."""
    from fedlab_utils.lessons.distillation.federated import LogitCodec, weight_payload_bytes

    codec = LogitCodec(logit_dtype)
    expected_logits = len(codec.encode(torch.zeros(proxy_size, num_classes)))
    expected_weights = weight_payload_bytes(model)
    for name, got, expected, hint in [
        (gettext("logit payload"), logit_bytes, expected_logits,
         gettext("proxy_size × num_classes values, {bytes_per_value} bytes each ({logit_dtype}).").format(
             bytes_per_value=codec.bytes_per_value, logit_dtype=logit_dtype)),
        (gettext("weight payload"), weight_bytes, expected_weights,
         gettext("Every parameter (weights AND biases) at 4 bytes (fp32); count_parameters(model) helps.")),
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


def fedmd_client_flops(train_flops: float, forward_flops: float, private_samples: int, local_epochs: int,
                       proxy_size: int, distill_epochs: int) -> float:
    """FLOPs of one FedMD client in a round that has a consensus, as the ledger counts them
    (:class:`fedlab_utils.lessons.distillation.federated.LogitSharing`, ``mode='proxy'``): distil toward the consensus
    (``distill_epochs`` training passes over the proxy set), train on the private data
    (``local_epochs`` passes), then one forward pass over the proxy set for the logits it uploads."""
    return (train_flops * (distill_epochs * proxy_size + local_epochs * private_samples)
            + forward_flops * proxy_size)


def check_fedmd_client_flops(fn: Callable, seed: int | None = None) -> None:
    """``fn(train_flops, forward_flops, private_samples, local_epochs, proxy_size, distill_epochs)``:
    a FedMD client's FLOPs in a round after the first (see :func:`fedmd_client_flops`).

    Hand-made cases (or random ones with ``seed``, hidden tests); a FedAvg-only count, a missing
    distillation or a missing forward pass for the uploaded logits each get their own hint."""
    what = "fedmd_client_flops"
    if seed is None:
        cases = [(300.0, 100.0, 450, 2, 500, 1), (3_000.0, 1_000.0, 90, 1, 200, 3), (600.0, 200.0, 1_000, 5, 50, 2)]
    else:
        g = torch.Generator().manual_seed(7000 + seed)
        draw = lambda low, high: int(torch.randint(low, high + 1, (1,), generator=g))  # noqa: E731
        cases = [(float(3 * f), float(f), draw(10, 900), draw(1, 5), draw(10, 900), draw(1, 4))
                 for f in (draw(50, 5000), draw(50, 5000))]
    for train, fwd, private, epochs, proxy, distill_epochs in cases:
        args = (train, fwd, private, epochs, proxy, distill_epochs)
        case = (f"{what}(train_flops={train:g}, forward_flops={fwd:g}, private_samples={private}, "
                f"local_epochs={epochs}, proxy_size={proxy}, distill_epochs={distill_epochs})")
        got = call_safely(fn, *args, what=what)
        expect(isinstance(got, (int, float, torch.Tensor)) and not isinstance(got, bool),
               gettext('{case}: return a number of FLOPs, got {got}').format(case=case, got=type(got).__name__))
        got = float(got)
        want = fedmd_client_flops(*args)
        fedavg = train * epochs * private
        slips = {
            fedavg: gettext("that is a FedAvg client's count (local training only). A FedMD client also works on "
                            "the public proxy set every round."),
            want - fwd * proxy: gettext("the client must also compute the logits it uploads: one forward pass "
                                        "over the proxy set."),
            want - train * distill_epochs * proxy: gettext(
                "the client also distils toward the consensus it downloaded: distill_epochs training passes "
                "(forward and backward) over the proxy set."),
            want - train * distill_epochs * proxy + fwd * distill_epochs * proxy: gettext(
                "distilling is training: each proxy image costs train_flops (forward and backward), not a forward "
                "pass only."),
            train * (distill_epochs * proxy + private) + fwd * proxy: gettext(
                "the client trains local_epochs passes over its private data, not one."),
        }
        named = [h for v, h in slips.items() if math.isclose(got, v, rel_tol=1e-9) and not math.isclose(v, want)]
        expect(math.isclose(got, want, rel_tol=1e-6),
               gettext('{case}: got {got:g}, expected {want:g}. {hint}').format(
                   case=case, got=got, want=want, hint=named[0] if named else gettext(
                       "Count every pass over data a FedMD client makes in a round: over its private data, and "
                       "over the public proxy set.")))
    passed(what)
