"""Acceleration: fewer rounds (server optimizers, FedProx) and faster rounds (vmap, precision, compile).

Energy is power × time, so a federation spends less when it needs **fewer rounds** or when each
round **runs faster**.  This module plugs both levers into the one loop of
:func:`fedlab_utils.federated.run`; it has no loop of its own.

Fewer rounds -- the FedOpt family (Reddi et al., ICLR 2021), as :class:`ServerOptimizer` hooks.
The server treats the aggregated client update Δ as a pseudo-gradient (a step *downhill*):

* :class:`FedAvgM` (Hsu et al. 2019): ``v ← β·v + Δ;  x ← x + η·v``.  β = 0 is FedAvg exactly.
* :class:`FedAdam`, :class:`FedYogi`, :class:`FedAdagrad` (Reddi et al., Algorithm 2)::

      m ← β1·m + (1−β1)·Δ
      v ← v + Δ²                               (FedAdagrad)
      v ← β2·v + (1−β2)·Δ²                     (FedAdam)
      v ← v − (1−β2)·Δ²·sign(v − Δ²)           (FedYogi)
      x ← x + η·m / (√v + τ)

  with ``m`` starting at 0 and ``v`` at τ² (the paper asks for v₋₁ ≥ τ²), no bias correction.
* :class:`FedProx` (Li et al., MLSys 2020) is a *client* option: a :class:`ClientTransform`
  adding μ/2·‖w − w_global‖² to each client's loss, which limits client drift.

Server optimizers keep state (momentum, second moments) across rounds: give every run a fresh
one (:func:`make_server` builds one by name).

Faster rounds:

* :class:`VmapTrainer` -- a :class:`ClientTrainer` that trains all sampled clients *at once*
  with ``torch.func`` (``functional_call`` + ``vmap`` + ``grad``) over stacked per-client
  parameters.  It reproduces :class:`SequentialTrainer` (same per-client shuffling from
  :func:`client_generator`, same SGD arithmetic) up to float rounding.  Clients are grouped by
  dataset size, because one vmapped step needs equal batch shapes: an IID split (equal sizes)
  runs as one group; a skewed split with all-different sizes gains nothing.  It supports plain
  SGD (``optimizer='sgd'``, with optional ``weight_decay``), ``precision='fp32'`` and the
  transforms ``ClientTransform()`` (none) and :class:`FedProx`; anything else raises.
* :func:`time_train_step` times one training step in fp32 / bf16 / fp16, eager or
  ``torch.compile``-d, on any device -- measured, never assumed (the first compiled call
  takes seconds).
* :func:`time_trainer` measures client updates per second of a trainer for one round.
"""
from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .data import ClientData
from .federated import (ClientTransform, backward_and_step, FedAvgServer, History, LocalTraining, SequentialTrainer, autocast_context,
                        apply_delta, client_generator, make_optimizer)
from .validation import check_choice, check_int, check_real
from .wire import Update

__all__ = ["FedAvgM", "FedAdam", "FedYogi", "FedAdagrad", "FedOpt", "FedProx", "SERVERS", "make_server",
           "quadratic_drift", "VmapTrainer", "BACKENDS", "make_trainer", "time_trainer", "time_train_step", "rounds_to_target",
           "joules_to_target", "article_loop", "fixed_data_loop", "adam_vs_adamw", "fedavgm_step"]

SERVERS = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad")
BACKENDS = ("sequential", "vmap")


# ----------------------------------------------------------------------------- server optimizers
def fedavgm_step(global_state: Update, update: Update, velocity: Update | None, lr: float = 1.0,
                 momentum: float = 0.9) -> tuple[Update, Update]:
    """One FedAvgM server step: ``v ← momentum·v + Δ``, ``x ← x + lr·v``; returns ``(x, v)``.

    ``velocity=None`` means the first round (v starts at 0).  With ``momentum=0`` this is
    FedAvg's ``x ← x + lr·Δ`` bit for bit.
    """
    if velocity is None:
        velocity = {k: torch.zeros_like(v) for k, v in update.items()}
    velocity = {k: momentum * velocity[k] + update[k] for k in update}
    return apply_delta(global_state, velocity, lr), velocity


@dataclass
class FedAvgM:
    """Server momentum (Hsu et al. 2019): ``v ← β·v + Δ``, ``x ← x + η·v``.  β=0 is FedAvg."""

    lr: float = 1.0
    momentum: float = 0.9
    velocity: Update | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check_real("server_lr", self.lr, 0.0, low_inclusive=False)
        check_real("server_momentum", self.momentum, 0.0, 1.0, high_inclusive=False)

    def step(self, global_state: Update, update: Update) -> Update:
        new_state, self.velocity = fedavgm_step(global_state, update, self.velocity, self.lr, self.momentum)
        return new_state

    def reset(self) -> None:
        self.velocity = None

    def state_dict(self) -> dict:
        """The momentum buffer, for a checkpoint (``None`` before the first step)."""
        return {"velocity": self.velocity}

    def load_state_dict(self, state: dict) -> None:
        self.velocity = state["velocity"]


@dataclass
class FedOpt:
    """Adaptive server optimizers of Reddi et al. (ICLR 2021), Algorithm 2.

    ``variant`` is ``'adam'``, ``'yogi'`` or ``'adagrad'``; ``tau`` (τ) bounds the adaptivity:
    the step per coordinate is at most about η·|m|/τ.  The paper's defaults: β1 = 0.9,
    β2 = 0.99, τ = 1e-3; η is tuned per task (their grid runs from 1e-3 to 1).
    """

    lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    variant: str = "adam"
    m: Update | None = field(default=None, repr=False)
    v: Update | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check_real("server_lr", self.lr, 0.0, low_inclusive=False)
        check_real("beta1", self.beta1, 0.0, 1.0, high_inclusive=False)
        check_real("beta2", self.beta2, 0.0, 1.0, high_inclusive=False)
        check_real("tau", self.tau, 0.0, low_inclusive=False)
        check_choice("variant", self.variant, ("adam", "yogi", "adagrad"))

    def step(self, global_state: Update, update: Update) -> Update:
        if self.m is None:
            self.m = {k: torch.zeros_like(d) for k, d in update.items()}
            self.v = {k: torch.full_like(d, self.tau ** 2) for k, d in update.items()}
        direction = {}
        for k, delta in update.items():
            self.m[k] = self.beta1 * self.m[k] + (1 - self.beta1) * delta
            sq = delta * delta
            if self.variant == "adagrad":
                self.v[k] = self.v[k] + sq
            elif self.variant == "adam":
                self.v[k] = self.beta2 * self.v[k] + (1 - self.beta2) * sq
            else:  # yogi: v moves towards Δ² additively, so it shrinks slowly when Δ² drops
                self.v[k] = self.v[k] - (1 - self.beta2) * sq * torch.sign(self.v[k] - sq)
            direction[k] = self.m[k] / (self.v[k].sqrt() + self.tau)
        return apply_delta(global_state, direction, self.lr)

    def reset(self) -> None:
        self.m = self.v = None

    def state_dict(self) -> dict:
        """The moment estimates m and v, for a checkpoint (``None`` before the first step)."""
        return {"m": self.m, "v": self.v}

    def load_state_dict(self, state: dict) -> None:
        self.m, self.v = state["m"], state["v"]


def FedAdam(lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> FedOpt:
    """FedAdam (Reddi et al. 2021): v ← β2·v + (1−β2)·Δ²."""
    return FedOpt(lr, beta1, beta2, tau, "adam")


def FedYogi(lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> FedOpt:
    """FedYogi (Reddi et al. 2021): v ← v − (1−β2)·Δ²·sign(v − Δ²)."""
    return FedOpt(lr, beta1, beta2, tau, "yogi")


def FedAdagrad(lr: float = 0.01, beta1: float = 0.9, tau: float = 1e-3) -> FedOpt:
    """FedAdagrad (Reddi et al. 2021): v ← v + Δ²."""
    return FedOpt(lr, beta1, 0.99, tau, "adagrad")


def make_server(name: str, lr: float | None = None, **kwargs):
    """A fresh server optimizer by name (``SERVERS``); ``lr=None`` takes the class default."""
    check_choice("server", name, SERVERS)
    factory = {"fedavg": FedAvgServer, "fedavgm": FedAvgM, "fedadam": FedAdam, "fedyogi": FedYogi,
               "fedadagrad": FedAdagrad}[name]
    return factory(**({} if lr is None else {"lr": lr}), **kwargs)


class FedProx(ClientTransform):
    """FedProx's proximal term (Li et al., MLSys 2020): adds μ/2·‖w − w_global‖² to the client loss."""

    def __init__(self, mu: float = 0.01):
        self.mu = check_real("mu", mu, 0.0)

    def regularizer(self, model: nn.Module, global_state: Update) -> torch.Tensor | None:
        if self.mu == 0:
            return None
        return 0.5 * self.mu * sum(((p - global_state[n]) ** 2).sum() for n, p in model.named_parameters())

    def __repr__(self) -> str:
        return f"FedProx(mu={self.mu})"


# ----------------------------------------------------------------------------- vmap client trainer
class VmapTrainer:
    """Train many clients at once with ``torch.func`` -- the same result as :class:`SequentialTrainer`.

    Clients with the same number of samples form a group; each group's parameters are stacked
    (one slice per client) and every local SGD step is one vmapped ``grad`` call.  Per-client
    shuffling comes from :func:`client_generator`, exactly as in the sequential trainer.
    ``max_group`` caps how many clients are stacked at once (memory); ``None`` means no cap.
    """

    def __init__(self, max_group: int | None = None):
        if max_group is not None:
            check_int("max_group", max_group, 1)
        self.max_group = max_group

    @staticmethod
    def check_supported(model: nn.Module, local: LocalTraining, transform: ClientTransform) -> None:
        """Raise ``ValueError`` naming what the vmap backend cannot reproduce."""
        if callable(local.optimizer) or local.optimizer != "sgd":
            raise ValueError(f"backend='vmap' supports optimizer='sgd' only (got {local.optimizer!r}); "
                             "use backend='sequential' for sgdm/adam/adamw")
        if local.precision != "fp32":
            raise ValueError(f"backend='vmap' supports precision='fp32' only (got {local.precision!r}); "
                             "use backend='sequential' for mixed precision")
        if type(transform) not in (ClientTransform, FedProx):
            raise ValueError(f"backend='vmap' supports no transform or FedProx only (got {type(transform).__name__}); "
                             "use backend='sequential'")
        if any(True for _ in model.buffers()) or any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules()):
            raise ValueError("backend='vmap' needs a model without buffers (BatchNorm) or dropout; "
                             "use backend='sequential'")

    def __call__(self, model, received, clients, local, round_idx, seed, transform):
        self.check_supported(model, local, transform)
        out: list = [None] * len(clients)
        by_size: dict[int, list[int]] = {}
        for pos, (_, data) in enumerate(clients):
            by_size.setdefault(len(data), []).append(pos)
        for size, positions in by_size.items():
            step = self.max_group or len(positions)
            for start in range(0, len(positions), step):
                chunk = positions[start:start + step]
                results = self._train_group(model, received, [clients[p] for p in chunk], size, local,
                                            round_idx, seed, transform)
                for pos, res in zip(chunk, results):
                    out[pos] = res
        return out

    def _train_group(self, model, received, group, n, local, round_idx, seed, transform):
        from torch.func import functional_call, grad, vmap

        k = len(group)
        device = group[0][1].x.device
        names = [name for name, _ in model.named_parameters()]
        params = {name: received[name].to(device).unsqueeze(0).repeat(k, *[1] * received[name].dim())
                  for name in names}
        anchor = {name: received[name].to(device) for name in names}
        x = torch.stack([data.x for _, data in group])  # k × n × features
        y = torch.stack([data.y for _, data in group])
        generators = [client_generator(seed, round_idx, cid) for cid, _ in group]
        batch = n if local.batch_size is None else min(local.batch_size, n)
        mu = transform.mu if isinstance(transform, FedProx) else 0.0
        lr, wd = local.lr, local.weight_decay

        def loss_fn(p, xb, yb):
            loss = F.cross_entropy(functional_call(model, p, (xb,)), yb)
            total = loss
            if mu:
                total = loss + 0.5 * mu * sum(((p[nm] - anchor[nm]) ** 2).sum() for nm in names)
            return total, loss

        grads_of = vmap(grad(loss_fn, has_aux=True))
        rows = torch.arange(k, device=device).unsqueeze(1)
        losses = []
        for _ in range(local.epochs):
            order = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(device)
            for start in range(0, n, batch):
                idx = order[:, start:start + batch]
                grads, loss = grads_of(params, x[rows, idx], y[rows, idx])
                with torch.no_grad():
                    for nm in names:
                        g = grads[nm] if not wd else grads[nm] + wd * params[nm]  # torch.optim.SGD's rule
                        params[nm] = params[nm] - lr * g
                losses.append(loss.detach())
        mean_loss = torch.stack(losses, 1).double().cpu().numpy().mean(1)
        processed = local.epochs * n
        # Each client's state: its slice of the stacked parameters (fresh tensors, never modified
        # again) plus copies of any non-parameter floating state it received.
        return [({key: params[key][i] if key in params else value.clone() for key, value in received.items()},
                 float(mean_loss[i]), processed) for i in range(k)]

    def __repr__(self) -> str:
        return f"VmapTrainer(max_group={self.max_group})"


def make_trainer(backend: str = "sequential"):
    """The client trainer for ``backend``: ``'sequential'`` (any option) or ``'vmap'`` (SGD, fp32)."""
    check_choice("backend", backend, BACKENDS)
    return SequentialTrainer() if backend == "sequential" else VmapTrainer()


# ----------------------------------------------------------------------------- timing (measured, never asserted)
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_trainer(trainer, model: nn.Module, clients: Sequence[ClientData], local: LocalTraining,
                 repeats: int = 3, seed: int = 0) -> dict:
    """Wall time of one round of local training of ``clients`` by ``trainer`` (one warm-up call first).

    Returns ``{'seconds': median, 'client_updates_per_s': len(clients) / median, 'repeats': ...}``.
    """
    check_int("repeats", repeats, 1)
    device = clients[0].x.device
    model = copy.deepcopy(model).to(device)
    received = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    pairs = list(enumerate(clients))
    transform = ClientTransform()
    trainer(model, received, pairs, local, 1, seed, transform)  # warm-up (allocations, vmap tracing)
    times = []
    for r in range(repeats):
        _sync(device)
        start = time.perf_counter()
        trainer(model, received, pairs, local, 2 + r, seed, transform)
        _sync(device)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"seconds": median, "client_updates_per_s": len(clients) / median, "repeats": repeats}


def time_train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str = "fp32",
                    compile: bool = False, steps: int = 20, lr: float = 0.05) -> dict:
    """Median wall time of one SGD training step (forward, backward, update) on ``x, y``.

    ``precision`` as in :class:`LocalTraining`; ``compile=True`` wraps the model in
    ``torch.compile`` and reports the first (compiling) call separately as ``first_call_s``.
    The model is copied; ``x``/``y`` are used on the model's device.
    """
    check_choice("precision", precision, ("fp32", "bf16", "fp16"))
    check_int("steps", steps, 1)
    model = copy.deepcopy(model)
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision='fp16' needs a CUDA device (got {device}); use 'bf16' or 'fp32'")
    net = torch.compile(model) if compile else model
    optimizer = make_optimizer("sgd", model.parameters(), lr)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(device, precision):
            loss = F.cross_entropy(net(x), y)
        backward_and_step(loss, optimizer, scaler)
        return float(loss.detach())

    _sync(device)
    start = time.perf_counter()
    step()
    _sync(device)
    first = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return {"precision": precision, "compiled": compile, "device": str(device), "batch": len(y),
            "step_ms": 1e3 * statistics.median(times), "first_call_s": first, "steps": steps}


# ----------------------------------------------------------------------------- reading a History
def rounds_to_target(history: History, target: float) -> int | None:
    """First round (1-based) at which test accuracy reaches ``target``; ``None`` if never."""
    return history.rounds_to_accuracy(target)


def joules_to_target(history: History, target: float) -> float | None:
    """Modelled joules spent (all clients, all parts) up to and including the round that first
    reaches ``target`` accuracy; ``None`` if it is never reached."""
    r = history.rounds_to_accuracy(target)
    return None if r is None else float(sum(rec.energy.total for rec in history.records[:r]))


# ----------------------------------------------------------------------------- client drift, in 2-D
def quadratic_drift(server=None, rounds: int = 30, local_steps: int = 5, lr: float = 0.2,
                    centers=((2.0, 1.0), (-1.0, 3.0)), curvatures=((1.0, 0.02), (0.2, 0.05))) -> dict:
    """FedAvg on two clients with quadratic losses ``f_i(w) = ½ Σ_j a_ij (w_j − c_ij)²``.

    Each round both clients take ``local_steps`` gradient steps from the global ``w`` and drift
    towards their *own* optimum ``c_i``; the server averages the two updates and applies
    ``server`` (default FedAvg).  Returns the global path (rounds+1 × 2), the clients' end points
    per round, and the optimum of the global objective ``f_1 + f_2``.  Pure arithmetic: instant.
    """
    check_int("rounds", rounds, 1)
    check_int("local_steps", local_steps, 1)
    server = server or FedAvgServer()
    c = torch.tensor(centers, dtype=torch.float64)
    a = torch.tensor(curvatures, dtype=torch.float64)
    w = torch.zeros(2, dtype=torch.float64)
    path, ends = [w.clone()], []
    for _ in range(rounds):
        locals_ = []
        for ci, ai in zip(c, a):
            wi = w.clone()
            for _ in range(local_steps):
                wi = wi - lr * ai * (wi - ci)
            locals_.append(wi)
        ends.append(torch.stack(locals_))
        update = {"w": torch.stack(locals_).mean(0) - w}
        w = server.step({"w": w}, update)["w"]
        path.append(w.clone())
    optimum = (a * c).sum(0) / a.sum(0)
    return {"path": torch.stack(path).numpy(), "client_ends": torch.stack(ends).numpy(),
            "optimum": optimum.numpy(), "centers": c.numpy(), "curvatures": a.numpy()}


# ----------------------------------------------------------------------------- the article's pitfall
class _ArticleNet(nn.Module):
    """The article's ``SimpleNet``: one ``Linear(10, 2)``."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(10, 2)

    def forward(self, x):
        return self.fc(x)


def article_loop(steps: int = 10, seed: int = 0, optimizer: str = "adamw", lr: float = 0.01,
                 device: torch.device | str = "cpu") -> list[float]:
    """The article's "acceleration" loop, with ``F`` imported: every step draws a *fresh* random
    input and a *fresh* random target.  Returns the loss of every step.

    Since the target is noise independent of the input, the best the model can do is predict
    the noise's mean (0), where the expected MSE is the noise's variance, 1.0: nothing is learned.
    """
    check_int("steps", steps, 1)
    torch.manual_seed(seed)
    model = _ArticleNet().to(device)
    opt = make_optimizer(optimizer, model.parameters(), lr,
                         weight_decay=0.01 if optimizer == "adamw" else 0.0)  # torch's AdamW default
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        output = model(torch.randn(10).to(device))
        loss = F.mse_loss(output, torch.randn(2).to(device))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def fixed_data_loop(steps: int = 200, seed: int = 0, optimizer: str = "adamw", lr: float = 0.01,
                    n: int = 256, noise: float = 0.1) -> dict:
    """The corrected loop: a fixed dataset ``y = x·W* + noise`` (unit-variance targets) that the same model can fit.

    Returns the per-step training losses and the floor (the noise variance, ``noise²``).
    """
    check_int("steps", steps, 1)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=gen)
    w_true = torch.randn(10, 2, generator=gen) / 10 ** 0.5  # targets of unit variance, like the article's noise
    y = x @ w_true + noise * torch.randn(n, 2, generator=gen)
    torch.manual_seed(seed)
    model = _ArticleNet()
    opt = make_optimizer(optimizer, model.parameters(), lr, weight_decay=0.01 if optimizer == "adamw" else 0.0)
    return {"losses": _fit_full_batch(model, x, y, opt, steps), "floor": noise ** 2}


def _fit_full_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer,
                    steps: int) -> list[float]:
    """``steps`` full-batch MSE steps on one fixed dataset; the per-step losses."""
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def adam_vs_adamw(steps: int = 200, seed: int = 0, lr: float = 0.01, weight_decay: float = 0.0) -> dict:
    """Train the same model from the same start with Adam and AdamW (both at ``weight_decay``).

    Returns both loss curves and the largest weight difference at the end: with
    ``weight_decay=0`` the two optimizers are the same algorithm, so it is exactly 0.
    """
    curves, weights = {}, {}
    for name in ("adam", "adamw"):
        torch.manual_seed(seed)
        model = _ArticleNet()
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(256, 10, generator=gen)
        y = x @ torch.randn(10, 2, generator=gen) + 0.1 * torch.randn(256, 2, generator=gen)
        opt = make_optimizer(name, model.parameters(), lr, weight_decay)
        curves[name] = _fit_full_batch(model, x, y, opt, steps)
        weights[name] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return {"adam": curves["adam"], "adamw": curves["adamw"],
            "max_weight_diff": float((weights["adam"] - weights["adamw"]).abs().max())}

