"""Local training on one client: settings, optimizer, minibatches, hooks, evaluation.

:func:`fedlab_utils.core.loop.run` calls a :class:`ClientTrainer` (default
:class:`SequentialTrainer`) with the sampled clients; it trains each one with
:func:`train_locally`, whose shuffling comes from :func:`client_generator` (seed, round,
client), so a client's training does not depend on who else was sampled.  A
:class:`ClientTransform` can act before training, add a loss term, act after each step and
rewrite the update (pruning masks, FedProx).  :func:`minibatches` is the one minibatch loop
every training loop of the package uses.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np
import torch
from torch import nn

from fedlab_utils.compression.wire import Update
from fedlab_utils.data import ClientData
from fedlab_utils.validation import check_choice, check_int, check_real

__all__ = ["LocalTraining", "OPTIMIZERS", "PRECISIONS", "make_optimizer", "PlainSGD", "ClientTransform", "FedProx",
           "autocast_context", "backward_and_step", "minibatches", "train_locally", "evaluate", "ClientTrainer",
           "StackedUpdates", "client_generator", "SequentialTrainer", "ClientResult", "model_state", "state_delta",
           "apply_delta"]

OPTIMIZERS = ("sgd", "sgdm", "adam", "adamw")
PRECISIONS = ("fp32", "bf16", "fp16")


def model_state(model: nn.Module) -> Update:
    """A detached copy of the model's floating-point state (what FedAvg averages)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def state_delta(new: Update, old: Update) -> Update:
    """``new − old`` key by key: the update a client sends."""
    return {k: new[k] - old[k] for k in old}


def apply_delta(state: Update, delta: Update, scale: float = 1.0) -> Update:
    """``state + scale · delta`` key by key."""
    return {k: state[k] + scale * delta[k].to(state[k].device, state[k].dtype) for k in state}


@dataclass
class ClientResult:
    """What the server knows about one client after a round (the update is already decoded).

    * ``client_id``: the client's index in ``run``'s ``clients``;
    * ``num_samples``: the client's number of training samples (FedAvg's weight); a client with
      none is not trained, sends and receives nothing and is charged nothing (status ``"empty"``);
    * ``update``: what the server decoded (a state-dict delta for FedAvg; a protocol may send a
      tensor, e.g. logits, or ``None``);
    * ``train_loss``: the client's mean training loss (NaN when it took no step);
    * ``samples_processed``: samples seen in training, all epochs (the ledger's FLOPs are per sample);
    * ``bytes_up``: everything the client sent (``len()`` of its payloads); ``bytes_down`` what it
      received *during* training beyond the broadcast (e.g. SplitFed's gradients); ``flops`` its
      training FLOPs;
    * ``finite``: ``None`` unless whoever built the result already checked the update (the
      stacked uplink checks all rows in one pass); :func:`~fedlab_utils.core.loop.run` checks it otherwise.
    """

    client_id: int
    num_samples: int
    update: Update | torch.Tensor | None
    train_loss: float
    samples_processed: int
    bytes_up: int
    bytes_down: int = 0
    flops: int = 0
    finite: bool | None = None


@dataclass(frozen=True)
class LocalTraining:
    """How each client trains in a round.

    ``batch_size=None`` means full batch; with ``epochs=1`` that is one step, i.e. FedSGD.
    ``optimizer`` is a name in :data:`OPTIMIZERS` or a factory ``(params, lr) -> Optimizer``.
    ``precision`` ``'bf16'`` uses autocast (CPU or GPU); ``'fp16'`` needs CUDA and uses a GradScaler.
    Numbers may be numpy scalars (``np.int64(2)``); they are kept as plain ``int``/``float``.
    :func:`~fedlab_utils.core.loop.run` also takes a dict of these fields as ``local=``.
    """

    epochs: int = 1
    batch_size: int | None = 32
    lr: float = 0.05
    optimizer: str | Callable = "sgd"
    weight_decay: float = 0.0
    precision: str = "fp32"

    def __post_init__(self) -> None:
        try:
            checked: dict[str, int | float] = {"epochs": check_int("epochs", self.epochs, 1)}
        except ValueError as exc:  # the notebooks' parameter of the same meaning is local_epochs
            raise ValueError(f"LocalTraining {exc} (the notebooks' local_epochs)") from None
        if self.batch_size is not None:
            checked["batch_size"] = check_int("batch_size", self.batch_size, 1)
        checked["lr"] = check_real("lr", self.lr, 0.0, low_inclusive=False)
        checked["weight_decay"] = check_real("weight_decay", self.weight_decay, 0.0)
        check_choice("precision", self.precision, PRECISIONS)
        if not callable(self.optimizer):
            check_choice("optimizer", self.optimizer, OPTIMIZERS)
        for name, value in checked.items():  # numpy scalars (np.int64 from a sweep) become plain numbers
            if type(getattr(self, name)) not in (int, float):
                object.__setattr__(self, name, value)


def make_optimizer(spec: str | Callable, params, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Build a client optimizer from a name (``sgd``, ``sgdm``, ``adam``, ``adamw``) or a factory."""
    if callable(spec):
        return spec(params, lr)
    if spec == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if spec == "sgdm":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if spec == "adam":  # L2 penalty added to the gradient (coupled)
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)  # decoupled weight decay


class PlainSGD:
    """SGD without momentum, bit for bit what ``torch.optim.SGD`` computes (the same elementwise
    ``param - lr * (grad + weight_decay * param)``, via ``torch._foreach_*``), without being a
    ``torch.optim.Optimizer``: building the first of those in a process imports ``torch._dynamo``,
    a large share of a short run in a fresh process (and every Flower ClientApp call runs in one).
    :func:`train_locally` uses it for ``optimizer='sgd'``."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0):
        self.params = list(params)
        self.lr, self.weight_decay = lr, weight_decay
        self.param_groups = [{"params": self.params, "lr": lr, "weight_decay": weight_decay}]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        params = [p for p in self.params if p.grad is not None]
        if not params:
            return
        grads: list[torch.Tensor] = [p.grad for p in params]
        if self.weight_decay:
            grads = list(torch._foreach_add(grads, params, alpha=self.weight_decay))
        torch._foreach_add_(params, grads, alpha=-self.lr)


class ClientTransform:
    """Hooks into a client's local training.  Subclass and override what you need.

    * ``on_receive``: after the client loads the global model, before training
      (e.g. apply a pruning mask the server broadcast);
    * ``regularizer``: an extra loss term given the received global state (e.g. FedProx's
      μ/2·‖w − w_global‖²); return ``None`` for none;
    * ``after_step``: after each optimizer step (e.g. re-zero pruned weights);
    * ``on_update``: rewrite the update before it is encoded (e.g. mask it).
    """

    def on_receive(self, model: nn.Module, client_id: int, round_idx: int) -> None:
        return None

    def regularizer(self, model: nn.Module, global_state: Update) -> torch.Tensor | None:
        return None

    def after_step(self, model: nn.Module) -> None:
        return None

    def on_update(self, update: Update, client_id: int) -> Update:
        return update


class FedProx(ClientTransform):
    """FedProx's proximal term (Li et al., MLSys 2020): adds μ/2·‖w − w_global‖² to the client loss,
    which limits how far a client drifts from the global model in one round."""

    def __init__(self, mu: float = 0.01):
        self.mu = check_real("mu", mu, 0.0)

    def regularizer(self, model: nn.Module, global_state: Update) -> torch.Tensor | None:
        if self.mu == 0:
            return None
        penalty = sum(((p - global_state[n]) ** 2).sum() for n, p in model.named_parameters())
        return 0.5 * self.mu * cast(torch.Tensor, penalty)

    def __repr__(self) -> str:
        return f"FedProx(mu={self.mu})"


def autocast_context(device: torch.device, precision: str):
    """The autocast context for ``precision`` on ``device`` (a no-op for fp32; fp16 needs CUDA)."""
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision='fp16' needs a CUDA device (got {device}); use 'bf16' or 'fp32'")
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def backward_and_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer | PlainSGD,
                      scaler: torch.amp.GradScaler | None = None) -> None:
    """Backward pass and optimizer step, through ``scaler`` when fp16 training uses one."""
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"precision='fp16' steps through a GradScaler, which needs a torch.optim optimizer "
                        f"(got {type(optimizer).__name__})")
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def minibatches(n: int, batch_size: int | None, generator: torch.Generator,
                device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    """One epoch of shuffled index batches over ``n`` samples (the only minibatch loop of the package).

    The order is ``torch.randperm(n, generator=generator)``; ``batch_size=None`` (or larger
    than ``n``) gives one full batch.  ``n = 0`` yields nothing.
    """
    if n == 0:
        return
    batch = n if batch_size is None else min(batch_size, n)
    order = torch.randperm(n, generator=generator).to(device)
    for start in range(0, n, batch):
        yield order[start:start + batch]


def train_locally(model: nn.Module, data: ClientData, local: LocalTraining, *, generator: torch.Generator,
                  transform: ClientTransform | None = None, global_state: Update | None = None,
                  loss_fn: Callable = nn.functional.cross_entropy) -> tuple[float, int]:
    """Train ``model`` in place on one client's data; returns (mean loss, samples processed).

    The shuffling order comes from ``generator``, so a client's training is reproducible.
    A client without samples trains nothing: ``(nan, 0)``.
    """
    transform = transform or ClientTransform()
    model.train()
    device = data.x.device
    optimizer: torch.optim.Optimizer | PlainSGD
    if local.optimizer == "sgd" and local.precision != "fp16":  # GradScaler wants a torch.optim optimizer
        optimizer = PlainSGD(model.parameters(), local.lr, local.weight_decay)
    else:
        optimizer = make_optimizer(local.optimizer, model.parameters(), local.lr, local.weight_decay)
    if local.precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision='fp16' needs a CUDA device (got {device}); use 'bf16' or 'fp32'")
    scaler = torch.amp.GradScaler("cuda") if local.precision == "fp16" else None
    losses, processed = [], 0
    for _ in range(local.epochs):
        for idx in minibatches(len(data), local.batch_size, generator, device):
            optimizer.zero_grad(set_to_none=True)
            with autocast_context(device, local.precision):
                loss = loss_fn(model(data.x[idx]), data.y[idx])
            extra = transform.regularizer(model, global_state) if global_state is not None else None
            total = loss if extra is None else loss + extra
            backward_and_step(total, optimizer, scaler)
            transform.after_step(model)
            losses.append(loss.detach().item())
            processed += len(idx)
    return (float(np.mean(losses)) if losses else float("nan")), processed


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048,
             loss_fn: Callable = nn.functional.cross_entropy) -> tuple[float, float]:
    """(accuracy in [0, 1], mean loss) of ``model`` on ``x, y``."""
    model.eval()
    device = next(model.parameters()).device
    correct, loss_sum = 0, 0.0
    for start in range(0, len(y), batch_size):
        xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
        logits = model(xb)
        loss_sum += float(loss_fn(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    return correct / len(y), loss_sum / len(y)


class ClientTrainer(Protocol):
    """Runs local training for the sampled clients of one round.

    Returns, per client, ``(update, mean_loss, samples_processed)`` (or the exception it raised),
    where ``update`` is the client's trained floating-point state minus ``received``, key by key
    over ``received`` (:func:`state_delta`): what the client sends.  The default trains clients one
    after another; :mod:`fedlab_utils.core.vmap_trainer` trains them all at once.  A trainer may also offer a fast path, ``train_stacked`` with the same
    arguments, returning the round's updates as one :class:`StackedUpdates` block (or ``None`` when
    it cannot); the caller decides whether it may use such a block at all.
    """

    def __call__(self, model: nn.Module, received: Update, clients: list[tuple[int, ClientData]],
                 local: LocalTraining, round_idx: int, seed: int,
                 transform: ClientTransform) -> list[tuple[Update, float, int]]: ...


@dataclass
class StackedUpdates:
    """All clients' updates of one round as one block: ``updates[key][row]`` is the update
    (local − received) of the client at ``rows[i]`` for the caller's i-th client.

    Each row is exactly what the trainer's ordinary call gives as that client's update.
    ``losses``/``processed`` are per caller position; ``flops_per_sample`` is the training FLOPs per
    sample when the trainer knows them (else ``None``).  A block is valid until the next call of the
    trainer that made it (it may train in the same buffers again).
    """

    updates: dict[str, torch.Tensor]
    rows: list[int]
    losses: list[float]
    processed: list[int]
    flops_per_sample: int | None = None


def client_generator(seed: int, round_idx: int, client_id: int) -> torch.Generator:
    """The shuffling generator of one client in one round (independent of who else is sampled)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, round_idx, client_id]).generate_state(1)[0]))


class SequentialTrainer:
    """Train the sampled clients one after another on one working copy of the model; each
    client's update is its trained state minus ``received``."""

    def __call__(self, model, received, clients, local, round_idx, seed, transform):
        out = []
        for cid, data in clients:
            model.load_state_dict(received, strict=False)
            transform.on_receive(model, cid, round_idx)
            loss, processed = train_locally(model, data, local, generator=client_generator(seed, round_idx, cid),
                                            transform=transform, global_state=received)
            out.append((state_delta(model_state(model), received), loss, processed))
        return out

    def __repr__(self) -> str:
        return "SequentialTrainer()"
