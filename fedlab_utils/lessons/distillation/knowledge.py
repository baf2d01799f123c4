"""Knowledge distillation itself: the loss, teacher → student training, ensembles, proxy data.

**The loss** (Hinton, Vinyals & Dean 2015).  With temperature ``T`` and mixing weight ``α``::

    L = α · T² · KL( softmax(t/T) ‖ softmax(s/T) )  +  (1 − α) · CE(s, y)

``s`` are the student's logits, ``t`` the teacher's **on the same inputs**, ``y`` the labels.
Convention here: ``α`` weights the *teacher* term, so ``α = 0`` is plain cross-entropy
(labels only) and ``α = 1`` is pure distillation (no labels needed -- what a server with an
unlabeled public set can do).  The ``T²`` keeps the soft term's gradients the same size as
``T`` changes: the gradient of the softened KL w.r.t. a logit is ``(p_s − p_t)/T``, and for
large ``T`` that difference itself shrinks like ``1/T``, so the raw term's gradients fall like
``1/T²``.

**Deployment** (:func:`distill`): a big teacher (a FedAvg global model) teaches a small student;
the same function with ``teacher=None`` trains the same student on labels alone, with the
same batches, so the comparison is fair.  :func:`ensemble_logits` is an ensemble's teacher
signal and :func:`proxy_split` sets aside the public/proxy set that no client owns.

Its federated uses (FedDF, logit sharing) are in :mod:`fedlab_utils.lessons.distillation.federated`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812  (the article forgot this import)
from torch import nn

from fedlab_utils.core.training import make_optimizer, minibatches
from fedlab_utils.ledger.flops import forward_flops, training_flops_per_sample
from fedlab_utils.validation import check_int, check_real

__all__ = ["kd_loss", "check_temperature", "check_alpha", "check_proxy_size", "proxy_split", "distill_step",
           "distill", "distill_flops", "ensemble_logits"]


# ----------------------------------------------------------------------------- validation
def check_temperature(value: object, name: str = "temperature") -> float:
    """A distillation temperature: a real number > 0 (1 = the ordinary softmax)."""
    return check_real(name, value, 0.0, low_inclusive=False)


def check_alpha(value: object, name: str = "alpha") -> float:
    """The weight of the teacher term, in [0, 1] (0 = labels only, 1 = teacher only)."""
    return check_real(name, value, 0.0, 1.0)


def check_proxy_size(value: object, num_train: int, num_clients: int, min_per_client: int = 2,
                     name: str = "proxy_size") -> int:
    """A proxy-set size that leaves every client at least ``min_per_client`` private samples."""
    high = num_train - num_clients * min_per_client
    if high < 1:
        raise ValueError(f"{name}: {num_train} training samples are too few for {num_clients} clients "
                         f"and a proxy set; use fewer clients")
    return check_int(name, value, 1, high)


# ----------------------------------------------------------------------------- the loss
def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, targets: torch.Tensor | None = None,
            *, temperature: float = 4.0, alpha: float = 0.9) -> torch.Tensor:
    """Hinton's distillation loss, averaged over the batch.

    ``α · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α) · CE(s, y)``.  With ``alpha=0`` the
    teacher is not needed (plain cross-entropy); with ``alpha=1`` the labels are not needed.
    """
    temperature, alpha = check_temperature(temperature), check_alpha(alpha)
    loss = student_logits.new_zeros(())
    if alpha > 0:
        if teacher_logits is None:
            raise ValueError(f"alpha={alpha} > 0 needs teacher_logits; pass alpha=0 to train on labels alone")
        if teacher_logits.shape != student_logits.shape:
            raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} and student logits "
                             f"{tuple(student_logits.shape)} differ: they must come from the same inputs")
        log_p_s = F.log_softmax(student_logits / temperature, dim=1)
        log_p_t = F.log_softmax(teacher_logits.detach().to(student_logits.dtype) / temperature, dim=1)
        kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)  # KL(p_t ‖ p_s)
        loss = loss + alpha * temperature ** 2 * kl
    if alpha < 1:
        if targets is None:
            raise ValueError(f"alpha={alpha} < 1 needs the labels (targets); pass alpha=1 for pure distillation")
        loss = loss + (1 - alpha) * F.cross_entropy(student_logits, targets)
    return loss


# ----------------------------------------------------------------------------- teacher -> student
def distill_step(student: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                 y: torch.Tensor | None = None, *, teacher: nn.Module | torch.Tensor | None = None,
                 temperature: float = 4.0, alpha: float = 0.9) -> float:
    """One optimizer step of ``student`` on the batch ``x`` -- the teacher sees **this same** ``x``.

    ``teacher`` is a module (run on ``x`` without gradients), a tensor of its logits for ``x``,
    or ``None`` for a labels-only step (then ``alpha`` is ignored and taken as 0).
    """
    if teacher is None or alpha == 0:
        t, alpha = None, 0.0
    elif isinstance(teacher, torch.Tensor):
        t = teacher
    else:
        with torch.no_grad():
            t = teacher(x)  # the teacher sees exactly the student's batch
    student.train()
    optimizer.zero_grad(set_to_none=True)
    loss = kd_loss(student(x), t, y, temperature=temperature, alpha=alpha)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def distill(student: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *,
            teacher: nn.Module | torch.Tensor | None = None, temperature: float = 4.0, alpha: float = 0.9,
            epochs: int = 10, batch_size: int = 64, lr: float = 1e-3, optimizer: str | Callable = "adam",
            seed: int = 0) -> list[float]:
    """Train ``student`` in place on ``x`` (and ``y``) for ``epochs``; returns the loss of every step.

    * ``teacher`` an ``nn.Module``: it is put in eval mode and run on each student batch;
    * ``teacher`` a tensor: precomputed teacher logits, one row per row of ``x`` (an ensemble's
      average, or logits received from other clients);
    * ``teacher=None``: the same loop on labels alone -- the fair baseline.

    The batch order depends only on ``seed``, so a distilled and a labels-only student with the
    same seed see exactly the same batches in the same order.
    """
    temperature, alpha = check_temperature(temperature), check_alpha(alpha)
    check_int("epochs", epochs, 0)
    check_int("batch_size", batch_size, 1)
    if isinstance(teacher, torch.Tensor) and len(teacher) != len(x):
        raise ValueError(f"teacher logits have {len(teacher)} rows but x has {len(x)}; give one row per input")
    if isinstance(teacher, nn.Module):
        teacher.eval()
    generator = torch.Generator().manual_seed(seed)
    opt = make_optimizer(optimizer, student.parameters(), lr)
    losses, n = [], len(x)
    for _ in range(epochs):
        for idx in minibatches(n, batch_size, generator, x.device):
            xb = x[idx]
            yb = None if y is None else y[idx]
            tb = teacher[idx] if isinstance(teacher, torch.Tensor) else teacher
            losses.append(distill_step(student, opt, xb, yb, teacher=tb, temperature=temperature, alpha=alpha))
    return losses


def distill_flops(student: nn.Module, input_shape: tuple[int, ...], samples: int,
                  teacher: nn.Module | None = None) -> int:
    """FLOPs of distilling on ``samples`` inputs: student training steps + teacher forward passes."""
    flops = training_flops_per_sample(student, input_shape) * samples
    if isinstance(teacher, nn.Module):
        flops += forward_flops(teacher, input_shape) * samples
    return int(flops)


# ----------------------------------------------------------------------------- proxy / public data
def proxy_split(num_train: int, proxy_size: int, seed: int = 0, num_clients: int = 1,
                min_per_client: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Split training indices into a public proxy set (no client owns it) and the private rest.

    Returns ``(proxy_idx, private_idx)``, both sorted; partition ``private_idx`` among clients.
    """
    check_proxy_size(proxy_size, num_train, num_clients, min_per_client)
    perm = np.random.default_rng([seed, 0xD15]).permutation(num_train)
    return np.sort(perm[:proxy_size]), np.sort(perm[proxy_size:])


@torch.no_grad()
def ensemble_logits(models: Sequence[nn.Module], x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """The ensemble's prediction as the mean of the members' logits on ``x`` (FedDF's teacher)."""
    if len(models) == 0:
        raise ValueError("ensemble_logits needs at least one model")
    total = None
    for model in models:
        model.eval()
        out = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
        total = out if total is None else total + out
    return total / len(models)
