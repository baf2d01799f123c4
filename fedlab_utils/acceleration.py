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

* :class:`VmapTrainer` -- a :class:`ClientTrainer` that trains all sampled clients of a round
  *at once*: parameters stacked across clients for the whole local training, one batched
  computation per local step (batched matmuls with fused in-place SGD for the course's MLPs,
  ``torch.func``'s ``vmap(grad(functional_call))`` for other models).  Clients of different
  sizes share one stack (those still training are a prefix of it; short last batches are
  padded with rows of weight 0).  It reproduces :class:`SequentialTrainer` (same per-client
  shuffling from :func:`client_generator`, same SGD arithmetic) up to float rounding, supports
  plain SGD (``optimizer='sgd'``, optional ``weight_decay``), ``precision='fp32'`` and the
  transforms ``ClientTransform()`` (none) and :class:`FedProx`; anything else raises.  With the
  fp32 uplink it hands the loop all updates as one block (:meth:`VmapTrainer.stacked_results`).
  ``run(..., trainer='auto')`` uses it whenever it applies (:func:`resolve_trainer`).
* :func:`time_train_step` times one training step in fp32 / bf16 / fp16, eager or
  ``torch.compile``-d, on any device -- measured, never assumed (the first compiled call
  takes seconds).
* :func:`time_trainer` measures client updates per second of a trainer for one round.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .data import ClientData
from .federated import (ClientResult, ClientTransform, backward_and_step, FedAvgServer, History, LocalTraining,
                        SequentialTrainer, autocast_context, apply_delta, client_generator, fedavg_aggregate,
                        make_optimizer)
from .validation import check_choice, check_int, check_real
from .wire import Fp32Codec, Update

__all__ = ["FedAvgM", "FedAdam", "FedYogi", "FedAdagrad", "FedOpt", "FedProx", "SERVERS", "make_server",
           "quadratic_drift", "VmapTrainer", "BACKENDS", "TRAINERS", "make_trainer", "resolve_trainer", "time_trainer", "time_train_step", "rounds_to_target",
           "joules_to_target", "article_loop", "fixed_data_loop", "adam_vs_adamw", "fedavgm_step"]

SERVERS = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad")
BACKENDS = ("sequential", "vmap")
TRAINERS = BACKENDS + ("auto",)


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
@dataclass
class _Schedule:
    """Which rows of the round's concatenated data every client uses at every local step.

    Clients are ordered by their number of steps per epoch, most first, so the clients still
    training at step ``t`` are always a *prefix* of the stack: a client with fewer samples simply
    stops, and nothing is computed for it any more.  Within a step, a client whose batch is
    shorter (its last, partial batch) is padded with a valid row of weight 0.
    """

    order: list[int]                      # stack position -> position in the caller's client list
    steps: list[tuple[int, torch.Tensor, torch.Tensor]]  # (active prefix k, row index k×B, row weight k×B)


def _schedule(sizes: Sequence[int], generators: Sequence[torch.Generator], batch_size: int | None,
              epochs: int, device: torch.device) -> _Schedule:
    """Every client's minibatches, drawn exactly as :func:`~fedlab_utils.training.minibatches` draws
    them (one ``randperm`` per epoch from the client's generator), laid out step by step."""
    batches = [n if batch_size is None else min(batch_size, n) for n in sizes]
    per_epoch = [-(-n // b) if n else 0 for n, b in zip(sizes, batches)]
    order = sorted(range(len(sizes)), key=lambda i: -per_epoch[i])  # stable: ties keep the caller's order
    offsets = dict(zip(order, np.concatenate([[0], np.cumsum([sizes[i] for i in order])[:-1]]).astype(np.int64)))
    steps = []
    for _ in range(epochs):
        perms = {i: torch.randperm(sizes[i], generator=generators[i]).numpy() + offsets[i]
                 for i in range(len(sizes)) if sizes[i]}
        for t in range(max(per_epoch, default=0)):
            active = [i for i in order if per_epoch[i] > t]
            chunks = [perms[i][t * batches[i]:(t + 1) * batches[i]] for i in active]
            width = max(len(c) for c in chunks)
            rows = np.empty((len(active), width), dtype=np.int64)
            weight = np.zeros((len(active), width), dtype=np.float32)
            for r, c in enumerate(chunks):
                rows[r, :len(c)], rows[r, len(c):] = c, c[0]
                weight[r, :len(c)] = 1.0 / len(c)  # cross_entropy's mean over the client's own batch
            steps.append((len(active), torch.from_numpy(rows).to(device), torch.from_numpy(weight).to(device)))
    return _Schedule(order, steps)


def _mlp_layers(model: nn.Module) -> list[tuple[str, nn.Linear, bool]] | None:
    """``[(name, linear, relu_after)]`` when ``model`` is an ``nn.Sequential`` of an optional leading
    ``Flatten``, then ``Linear`` layers with ``ReLU`` between them (the course's MLP); else ``None``."""
    if not isinstance(model, nn.Sequential):
        return None
    modules = list(model.named_children())
    if modules and isinstance(modules[0][1], nn.Flatten) and (modules[0][1].start_dim, modules[0][1].end_dim) == (1, -1):
        modules = modules[1:]
    layers: list[tuple[str, nn.Linear, bool]] = []
    for name, module in modules:
        if isinstance(module, nn.Linear):
            layers.append((name, module, False))
        elif isinstance(module, nn.ReLU) and layers and not layers[-1][2]:
            layers[-1] = (layers[-1][0], layers[-1][1], True)
        else:
            return None
    return layers if layers and not layers[-1][2] else None


class VmapTrainer:
    """Train all sampled clients of a round at once -- the same result as :class:`SequentialTrainer`.

    Every parameter is **stacked** across clients (a leading client dimension) and stays stacked
    for the whole local training; each local SGD step of all clients is one batched computation:

    * the course's MLPs (``Flatten``, ``Linear``, ``ReLU``) take a direct path: batched matmuls
      (``torch.baddbmm``) forward, the gradient of the cross-entropy by hand, and each weight's SGD
      step fused into its gradient matmul (``W ← W − lr·Gᵀ·A`` in one in-place ``baddbmm_``), so
      no gradient tensor is ever materialised;
    * any other supported model goes through ``torch.func``: ``vmap(grad(functional_call))``.

    On the MLP path the stack holds either each client's weights or, when the local steps after
    the first are short, each client's *update* ``W − W₀`` from the start (``stack='auto'``, see
    :meth:`_stack_updates`; ``'weights'`` or ``'updates'`` force one): the first step then writes
    the stack without reading it, and the uplink sends the stack as it is.  Either way the trainer
    returns each client's local weights.

    Clients of different sizes share the stack: the schedule orders them by number of steps,
    so the clients still training are a prefix of the stack, and a short last batch is padded
    with rows of weight 0.  Shuffling comes from each client's own generator
    (:func:`client_generator`), exactly as in the sequential trainer, so both give the same
    model up to float rounding.  ``max_group`` caps how many clients are stacked at once
    (memory: the stack holds one copy of the model per client); ``None`` means no cap.
    """

    def __init__(self, max_group: int | None = None, stack: str = "auto"):
        if max_group is not None:
            check_int("max_group", max_group, 1)
        self.max_group = max_group
        self.stack = check_choice("stack", stack, ("auto", "weights", "updates"))
        self._last: _Stack | None = None  # the latest round's stacked parameters (for the fp32 uplink)

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
        self._last = None
        step = self.max_group or max(len(clients), 1)
        for start in range(0, len(clients), step):
            chunk = clients[start:start + step]
            for pos, result in enumerate(self._train_stack(model, received, chunk, local, round_idx, seed, transform)):
                out[start + pos] = result
        if len(clients) > step:
            self._last = None  # several stacks: the uplink takes the per-client path
        elif self._last is not None:
            self._last.out = out
        return out

    def _round_data(self, ordered: list[ClientData]) -> tuple[torch.Tensor, torch.Tensor]:
        """All clients' samples concatenated in stack order.  Kept from the previous round when the
        same client tensors come in the same order, unchanged (same storage, same version counter)."""
        if len(ordered) == 1:
            return ordered[0].x, ordered[0].y
        sources = [t for d in ordered for t in (d.x, d.y)]
        versions = [t._version for t in sources]
        cached = getattr(self, "_data", None)  # (sources, versions, x, y); holding the sources keeps them alive
        if (cached is None or len(cached[0]) != len(sources) or any(a is not b for a, b in zip(cached[0], sources))
                or cached[1] != versions):
            cached = (sources, versions, torch.cat([d.x for d in ordered]), torch.cat([d.y for d in ordered]))
            self._data = cached
        return cached[2], cached[3]

    def _train_stack(self, model, received, group, local, round_idx, seed, transform):
        k = len(group)
        device = group[0][1].x.device
        sizes = [len(data) for _, data in group]
        plan = _schedule(sizes, [client_generator(seed, round_idx, cid) for cid, _ in group], local.batch_size,
                         local.epochs, device)
        x, y = self._round_data([group[i][1] for i in plan.order])
        names = [name for name, _ in model.named_parameters()]
        layers = _mlp_layers(model)
        updates = layers is not None and self._stack_updates(plan, k)
        pool, self._pool = getattr(self, "_pool", None) or {}, None  # buffers of the previous round, if recycled
        written = plan.steps[0][0] if updates and plan.steps else 0  # rows the first step writes itself
        params = {}
        for name in names:
            start = received[name].to(device).unsqueeze(0)
            buffer = pool.get(name)
            if buffer is None or buffer.shape != (k, *start.shape[1:]) or buffer.device != start.device:
                buffer = start.new_empty((k, *start.shape[1:]))  # recycled next round: no fresh pages
            if updates:
                buffer[written:].zero_()  # clients without a step send a zero update
            else:
                buffer.copy_(start.expand_as(buffer))
            params[name] = buffer
        anchor = {name: received[name].to(device) for name in names}
        mu = transform.mu if isinstance(transform, FedProx) else 0.0
        step_fn = _mlp_step(layers, updates) if layers is not None else _func_step(model, names)
        losses = torch.zeros(k, dtype=torch.float64, device=device)
        counts = torch.zeros(k, dtype=torch.float64, device=device)
        for t, (active, rows, weight) in enumerate(plan.steps):  # step 0: every client still holds `received`
            loss = step_fn(params, active, x[rows], y[rows], weight, local.lr, local.weight_decay, mu, anchor, t == 0)
            losses[:active] += loss.double()
            counts[:active] += 1
        processed = [local.epochs * n for n in sizes]
        mean_loss = (losses / counts).tolist()
        out: list = [None] * k
        for pos, i in enumerate(plan.order):
            state = (_LocalWeights(received, params, pos) if updates else
                     {key: params[key][pos] if key in params else value.clone() for key, value in received.items()})
            out[i] = (state, mean_loss[pos] if sizes[i] else float("nan"), processed[i])
        self._last = _Stack(params, plan.order, out, None if layers is None else mlp_training_flops_per_sample(layers),
                            holds_updates=updates)
        return out

    def _stack_updates(self, plan: _Schedule, k: int) -> bool:
        """Whether the MLP path keeps updates ``W − W₀`` rather than weights in the stack.

        Updates save three passes over the stack per round (copying ``W₀`` in, reading it in the
        first step, and ``W − W₀`` for the uplink) but add a shared product with ``W₀`` to every
        later step.  Measured on a 2-core CPU (MLP 784-200-200-10, batch 32, paired runs): 10-25 %
        faster with 8 rows per client after the first step (100 clients × 40 samples), about even at
        93 rows (32 × 125), 6-12 % slower at 368 (10 × 400).  So: updates when the later steps hold
        at most 64 rows per client.  Both forms give the same result up to float rounding.
        """
        if self.stack != "auto":
            return self.stack == "updates"
        later_rows = sum(rows.numel() for _, rows, _ in plan.steps[1:])
        return later_rows <= 64 * k

    # ------------------------------------------------------------------ the uplink of stacked fp32 updates
    def stacked_results(self, protocol, clients: list[int], trained: list) -> list[ClientResult] | None:
        """FedAvg's uplink for the round just trained, on the stacked parameters, without per-client copies.

        Called by :class:`~fedlab_utils.federated.FedAvgProtocol` after training.  It applies only
        when the uplink is the plain :class:`~fedlab_utils.wire.Fp32Codec` (lossless, stateless),
        the transform does not rewrite updates and the aggregation is FedAvg's; otherwise it returns
        ``None`` and the protocol encodes each client's update itself.  The stack becomes the
        updates in place (local − received, tensor by tensor).  A client's payload is its slice of
        every tensor, in state-dict order, as a list of zero-copy byte views (what a vectored send
        such as ``socket.sendmsg`` transmits): byte for byte :class:`Fp32Codec`'s payload, its
        ``len()`` counted as everywhere; the server reads the decoded update as views of the same
        slices.  A non-finite update is not sent (0 bytes), as in the per-client path.
        """
        last = self._last
        if (last is None or trained is not last.out or type(protocol.uplink) is not Fp32Codec
                or type(protocol.transform).on_update is not ClientTransform.on_update
                or protocol.aggregate_fn is not fedavg_aggregate):
            return None
        received = protocol.received
        if any(key not in last.params for key in received):
            return None
        k = len(trained)
        deltas = ({key: last.params[key] for key in received} if last.holds_updates else  # already the updates
                  {key: last.params[key].sub_(received[key].unsqueeze(0)) for key in received})  # in place
        wire = {key: (d if d.device.type == "cpu" else d.cpu()).reshape(k, -1).numpy() for key, d in deltas.items()}
        # FedAvg of every client (what the server needs when no update is dropped, late or rejected),
        # which also tells whether all updates are finite: a NaN/inf anywhere makes the average non-finite.
        weights = torch.tensor([float(len(protocol.ctx.clients[clients[i]])) for i in last.order],
                               dtype=torch.float32, device=next(iter(deltas.values())).device)
        average = None
        if float(weights.sum()) > 0:
            average = {key: torch.tensordot(weights / weights.sum(), d, dims=1) for key, d in deltas.items()}
            if not all(bool(torch.isfinite(a).all()) for a in average.values()):
                average = None
        if average is not None:
            finite = [True] * k
        else:  # client by client: a NaN/inf makes the sum of its slice non-finite
            sums = sum(d.reshape(k, -1).sum(1) for d in deltas.values())
            finite = torch.isfinite(sums).tolist()
        fps = last.flops_per_sample or protocol.flops_per_sample(protocol.worker)
        position = {i: pos for pos, i in enumerate(last.order)}
        results = []
        for i, cid in enumerate(clients):
            pos = position[i]
            _, loss, processed = trained[i]
            update = {key: d[pos] for key, d in deltas.items()}
            ok = finite[pos] or all(bool(torch.isfinite(t).all()) for t in update.values())  # a sum can overflow
            payload = [memoryview(w[pos]).cast("B") for w in wire.values()] if ok else []
            results.append(ClientResult(cid, len(protocol.ctx.clients[cid]), update, loss, processed,
                                        sum(len(part) for part in payload), 0, fps * processed, finite=ok))
        last.deltas, last.average, last.out = deltas, average, None
        return results

    def stacked_average(self, protocol, results: list[ClientResult]) -> Update | None:
        """FedAvg of the surviving clients' slices of the round's stacked updates: one weighted sum per
        tensor (a matrix-vector product) instead of a Python sum over clients; ``None`` when the
        results are not that round's."""
        last = self._last
        deltas = None if last is None else last.deltas
        if deltas is None or not results:
            return None
        first = next(iter(deltas))
        stack = deltas[first]
        if any(not isinstance(r.update, dict) or getattr(r.update.get(first), "_base", None) is not stack
               for r in results):
            return None
        rows = [(r.update[first].storage_offset() - stack.storage_offset()) // stack.stride(0) for r in results]
        self._last = None  # nothing of this round is needed any more
        # The loop is done with this round's updates once they are averaged: the next round may train
        # in the same buffers (a fresh stack would cost page faults every round).
        self._pool = deltas
        if last.average is not None and sorted(rows) == list(range(stack.shape[0])):
            return dict(last.average)  # every client survived: computed with the uplink
        weights = torch.tensor([float(r.num_samples) for r in results], dtype=torch.float32, device=stack.device)
        index = torch.tensor(rows, device=stack.device)
        return {key: torch.tensordot(weights / weights.sum(), d[index], dims=1) for key, d in deltas.items()}

    def __repr__(self) -> str:
        return f"VmapTrainer(max_group={self.max_group})" if self.stack == "auto" else \
            f"VmapTrainer(max_group={self.max_group}, stack={self.stack!r})"


@dataclass
class _Stack:
    """The stacked parameters of the latest round (``order``: stack position -> caller's position)."""

    params: dict[str, torch.Tensor]
    order: list[int]
    out: list | None = None
    flops_per_sample: int | None = None
    deltas: dict[str, torch.Tensor] | None = None   # after the uplink: the stack holds local − received
    average: dict[str, torch.Tensor] | None = None  # FedAvg of all clients' updates, if all are finite
    holds_updates: bool = False                     # the stack holds local − received from the start


class _LocalWeights(Mapping):
    """A client's local weights ``W₀ + D`` when the stack holds updates ``D``: read-only, each tensor
    computed when asked for (what a trainer returns is a client's *weights*, whatever the stack holds)."""

    def __init__(self, received: Update, updates: dict[str, torch.Tensor], pos: int):
        self.received, self.updates, self.pos = received, updates, pos

    def __getitem__(self, key: str) -> torch.Tensor:
        if key in self.updates:
            return self.received[key] + self.updates[key][self.pos].to(self.received[key].device)
        return self.received[key].clone()

    def __iter__(self):
        return iter(self.received)

    def __len__(self) -> int:
        return len(self.received)


def mlp_training_flops_per_sample(layers: list[tuple[str, nn.Linear, bool]]) -> int:
    """Training FLOPs per sample of an MLP as :func:`~fedlab_utils.ledger.training_flops_per_sample`
    counts them with ``FlopCounterMode``: per ``Linear(i, o)`` 2·i·o forward, 2·i·o for the weight
    gradient and 2·i·o for the input gradient, except the first layer's (its input needs none).

    The vmap fast path uses this count (checked against ``FlopCounterMode`` in the tests) because
    entering any ``TorchDispatchMode`` imports ``torch._dynamo``, about a second in a fresh process.
    """
    return sum((4 + 2 * (j > 0)) * m.in_features * m.out_features for j, (_, m, _) in enumerate(layers))


def _sgd_decay(lr: float, weight_decay: float, mu: float) -> float:
    """The factor on ``w`` of one SGD step with L2 weight decay and FedProx: ``w ← (1 − lr·(wd+μ))·w + …``."""
    return 1.0 - lr * (weight_decay + mu)


def _mlp_step(layers, updates: bool = False):
    """One SGD step of every active client of an MLP, on stacked parameters, in place.

    ``updates=False``: the stack holds each client's weights ``W``.  ``updates=True``: it holds
    each client's *update* ``D = W − W₀`` (what the uplink sends), so a round needs neither a
    copy of ``W₀`` into the stack first nor ``W − W₀`` afterwards; products with ``W`` become a
    shared product with ``W₀`` for all clients at once plus a batched one with ``D``.  From
    ``W' = W − lr·(G + wd·W + μ·(W − W₀))`` the update's step is ``D' = decay·D − lr·G − lr·wd·W₀``
    with ``decay = 1 − lr·(wd + μ)``.
    """
    linear = [(f"{name}.weight", f"{name}.bias" if module.bias is not None else None, relu)
              for name, module, relu in layers]
    relu_below = [False] + [relu for _, _, relu in linear[:-1]]

    def step(params, k, xb, yb, weight, lr, weight_decay, mu, anchor, shared=False):
        # shared: all k clients still hold the received weights (a round's first step), so the forward
        # pass and the gradients for the layers below are ordinary matmuls with one weight matrix
        rows = xb.shape[1]
        a = xb.reshape(k, rows, -1)
        inputs = []
        for w_name, b_name, relu in linear:
            inputs.append(a)
            if shared or updates:
                flat = a.reshape(k * rows, -1)
                w0 = anchor[w_name]
                z = (flat @ w0.t() if b_name is None else torch.addmm(anchor[b_name], flat, w0.t())).view(k, rows, -1)
                if not shared:  # x·(W₀ + D)ᵀ + b₀ + d_b
                    z.baddbmm_(a, params[w_name][:k].transpose(1, 2))
                    if b_name is not None:
                        z.add_(params[b_name][:k].unsqueeze(1))
            elif b_name is None:
                z = torch.bmm(a, params[w_name][:k].transpose(1, 2))
            else:
                z = torch.baddbmm(params[b_name][:k].unsqueeze(1), a, params[w_name][:k].transpose(1, 2))
            a = z.relu_() if relu else z
        logp = torch.log_softmax(a, dim=-1)
        target = yb.unsqueeze(-1)
        loss = -(logp.gather(-1, target).squeeze(-1) * weight).sum(1)  # each client's mean cross-entropy
        grad = logp.exp_()  # softmax
        grad.scatter_add_(-1, target, torch.full_like(target, -1, dtype=grad.dtype))
        grad.mul_(weight.unsqueeze(-1))  # d(mean loss)/d(logits); padded rows get 0
        decay = _sgd_decay(lr, weight_decay, mu)
        for j in range(len(linear) - 1, -1, -1):
            w_name, b_name, _ = linear[j]
            w, a = params[w_name][:k], inputs[j]
            below = None
            if j > 0:  # gradient for the layer below, with the *old* weights (and through its ReLU)
                if shared or updates:
                    below = (grad.reshape(k * rows, -1) @ anchor[w_name]).view(k, rows, -1)
                    if not shared:
                        below.baddbmm_(grad, w)
                else:
                    below = torch.bmm(grad, w)
                if relu_below[j]:  # ReLU's backward in one pass (what autograd runs)
                    below = torch.ops.aten.threshold_backward(below, a, 0)
            grad_t = grad.transpose(1, 2).contiguous()  # a contiguous left operand: the fast bmm layout
            if updates:
                if shared:  # D starts at 0: write −lr·Gᵀ·A, never read the stack
                    torch.bmm(grad_t.mul_(-lr), a, out=w)
                else:
                    w.baddbmm_(grad_t, a, beta=decay, alpha=-lr)
                if weight_decay:
                    w.add_(anchor[w_name].unsqueeze(0), alpha=-lr * weight_decay)
            elif mu:
                w.mul_(decay).add_(anchor[w_name], alpha=lr * mu)
                w.baddbmm_(grad_t, a, alpha=-lr)
            else:
                w.baddbmm_(grad_t, a, beta=decay, alpha=-lr)
            if b_name is not None:
                b = params[b_name][:k]
                if updates:
                    if shared:
                        torch.mul(grad.sum(1), -lr, out=b)
                    else:
                        b.mul_(decay).add_(grad.sum(1), alpha=-lr)
                    if weight_decay:
                        b.add_(anchor[b_name].unsqueeze(0), alpha=-lr * weight_decay)
                else:
                    if decay != 1.0:
                        b.mul_(decay)
                    if mu:
                        b.add_(anchor[b_name], alpha=lr * mu)
                    b.add_(grad.sum(1), alpha=-lr)
            grad = below
        return loss

    return step


def _func_step(model: nn.Module, names: list[str]):
    """One SGD step of every active client of any supported model, via ``torch.func``."""
    from torch.func import functional_call, grad, vmap

    def loss_fn(p, xb, yb, wb):
        nll = F.cross_entropy(functional_call(model, p, (xb,)), yb, reduction="none")
        loss = (nll * wb).sum()
        return loss, loss

    grads_of = vmap(grad(loss_fn, has_aux=True))

    def step(params, k, xb, yb, weight, lr, weight_decay, mu, anchor, shared=False):
        active = {nm: params[nm][:k] for nm in names}
        grads, loss = grads_of(active, xb, yb, weight)
        decay = _sgd_decay(lr, weight_decay, mu)
        with torch.no_grad():
            tensors = [active[nm] for nm in names]
            if decay != 1.0:
                torch._foreach_mul_(tensors, decay)
            if mu:
                torch._foreach_add_(tensors, [anchor[nm] for nm in names], alpha=lr * mu)
            torch._foreach_add_(tensors, [grads[nm] for nm in names], alpha=-lr)
        return loss.detach()

    return step


def make_trainer(backend: str = "sequential"):
    """The client trainer for ``backend``: ``'sequential'`` (any option) or ``'vmap'`` (SGD, fp32)."""
    check_choice("backend", backend, BACKENDS)
    return SequentialTrainer() if backend == "sequential" else VmapTrainer()


def resolve_trainer(trainer, model: nn.Module, local: LocalTraining, transform: ClientTransform | None):
    """The trainer :func:`~fedlab_utils.federated.run` uses for ``trainer=``.

    ``None`` is the :class:`SequentialTrainer`; ``'sequential'`` and ``'vmap'`` name a backend;
    ``'auto'`` picks :class:`VmapTrainer` when :meth:`VmapTrainer.check_supported` accepts the model,
    the local training and the transform (plain SGD, fp32, no transform or FedProx, no BatchNorm or
    dropout), and the sequential trainer otherwise.  A trainer object is returned as it is.  The
    run's ``History.config['trainer']`` says which one ran.
    """
    if trainer is None:
        return SequentialTrainer()
    if not isinstance(trainer, str):
        return trainer
    check_choice("trainer", trainer, TRAINERS)
    if trainer != "auto":
        return make_trainer(trainer)
    try:
        VmapTrainer.check_supported(model, local, transform or ClientTransform())
    except ValueError:
        return SequentialTrainer()
    return VmapTrainer()


# ----------------------------------------------------------------------------- timing (measured, never asserted)
def time_trainer(trainer, model: nn.Module, clients: Sequence[ClientData], local: LocalTraining,
                 repeats: int = 3, seed: int = 0) -> dict:
    """Wall time of one round of local training of ``clients`` by ``trainer`` (one warm-up call first).

    Returns ``{'seconds': median, 'client_updates_per_s': len(clients) / median, 'repeats': ...}``.
    """
    from .timing import time_calls  # imports torch.utils.benchmark (and setuptools): only when timing

    check_int("repeats", repeats, 1)
    device = clients[0].x.device
    model = copy.deepcopy(model).to(device)
    received = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    pairs = list(enumerate(clients))
    transform = ClientTransform()
    trainer(model, received, pairs, local, 1, seed, transform)  # warm-up (allocations, vmap tracing)
    rounds = iter(range(2, 2 + repeats))
    median = time_calls(lambda: trainer(model, received, pairs, local, next(rounds), seed, transform),
                        repeats=repeats, warmup=0, device=device).median_s
    return {"seconds": median, "client_updates_per_s": len(clients) / median, "repeats": repeats}


def time_train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str = "fp32",
                    compile: bool = False, steps: int = 20, lr: float = 0.05) -> dict:
    """Median wall time of one SGD training step (forward, backward, update) on ``x, y``.

    ``precision`` as in :class:`LocalTraining`; ``compile=True`` wraps the model in
    ``torch.compile`` and reports the first (compiling) call separately as ``first_call_s``.
    The model is copied; ``x``/``y`` are used on the model's device.
    """
    from .timing import time_calls, wall_time  # imports torch.utils.benchmark: only when timing

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

    with wall_time(device) as first:
        step()
    stats = time_calls(step, repeats=steps, warmup=0, device=device)
    return {"precision": precision, "compiled": compile, "device": str(device), "batch": len(y),
            "step_ms": 1e3 * stats.median_s, "first_call_s": first.seconds, "steps": steps}


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

