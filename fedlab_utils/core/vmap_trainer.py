"""The vmap trainer: all sampled clients of a round trained at once, with the same result as one by one.

:class:`VmapTrainer` is a :class:`~fedlab_utils.core.training.ClientTrainer`: parameters are stacked
across clients for the whole local training, and each local step of all clients is one batched
computation (batched matmuls with fused in-place SGD for the course's MLPs, ``torch.func``'s
``vmap(grad(functional_call))`` for other models).  Clients of different sizes share one stack
(those still training are a prefix of it; short last batches are padded with rows of weight 0).
It reproduces :class:`~fedlab_utils.core.training.SequentialTrainer` (same per-client shuffling from
:func:`~fedlab_utils.core.training.client_generator`, same SGD arithmetic) up to float rounding, and
supports plain SGD (``optimizer='sgd'``, optional ``weight_decay``), ``precision='fp32'`` and the
transforms ``ClientTransform()`` (none) and :class:`~fedlab_utils.core.training.FedProx`; anything
else raises.

Besides the trainer call (each client's update, a view of its row of the stack),
:meth:`VmapTrainer.train_stacked` returns the round's updates as one
:class:`~fedlab_utils.core.training.StackedUpdates` block, without per-client copies; whoever calls
it decides whether a block is of any use to it.

Memory stays bounded: one stack holds one copy of the model per client, so a round with more
clients than fit in ``max_stack_bytes`` (512 MiB by default: 2,637 clients of the course's
50,890-parameter MLP) or ``max_group`` is trained in several stacks, in consecutive slices of
nearly equal size (:meth:`VmapTrainer.stack_slices`).  A caller that folds each block into a
running sum before asking for the next (as FedAvg's loop does) never holds more than one.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fedlab_utils.core.training import (
    ClientTransform,
    FedProx,
    LocalTraining,
    StackedUpdates,
    client_generator,
)
from fedlab_utils.data import ClientData
from fedlab_utils.ledger.flops import mlp_layers, mlp_training_flops_per_sample
from fedlab_utils.validation import check_choice, check_int

__all__ = ["VmapTrainer", "MAX_STACK_BYTES"]

_mlp_layers = mlp_layers

#: The default cap on one stack of parameters, in bytes (512 MiB).  Above it a round is trained in
#: several stacks.  No notebook reaches it (the largest vmap round, lesson 04's 800 MLP clients,
#: stacks 163 MB), so the course's results do not depend on it.
MAX_STACK_BYTES = 512 * 2 ** 20


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
    """Every client's minibatches, drawn exactly as :func:`~fedlab_utils.core.training.minibatches` draws
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
    returns each client's update: a stack of weights has ``received`` subtracted in place after
    training, a stack of updates is one already.

    Clients of different sizes share the stack: the schedule orders them by number of steps,
    so the clients still training are a prefix of the stack, and a short last batch is padded
    with rows of weight 0.  Shuffling comes from each client's own generator
    (:func:`client_generator`), exactly as in the sequential trainer, so both give the same
    model up to float rounding.  Memory: the stack holds one copy of the model per client, so
    ``max_stack_bytes`` caps its parameters' bytes (default :data:`MAX_STACK_BYTES`, 512 MiB) and
    ``max_group`` its number of clients (``None``: no cap); a round over either cap is trained in
    several stacks (:meth:`stack_slices`).  A client's result does not depend on which stack it
    was trained in.
    """

    def __init__(self, max_group: int | None = None, stack: str = "auto",
                 max_stack_bytes: int | None = MAX_STACK_BYTES):
        if max_group is not None:
            check_int("max_group", max_group, 1)
        if max_stack_bytes is not None:
            check_int("max_stack_bytes", max_stack_bytes, 1)
        self.max_group = max_group
        self.stack = check_choice("stack", stack, ("auto", "weights", "updates"))
        self.max_stack_bytes = max_stack_bytes
        self._pool: dict[str, torch.Tensor] = {}  # the previous block's buffers, trained in again
        self._checked: tuple | None = None  # the setup check_supported last passed

    def group_size(self, model: nn.Module) -> int | None:
        """How many clients one stack may hold: ``max_group`` and ``max_stack_bytes`` ÷ the bytes of
        one copy of ``model``'s parameters (at least 1), whichever is smaller; ``None`` for no cap."""
        caps = [] if self.max_group is None else [self.max_group]
        per_client = sum(p.numel() * p.element_size() for p in model.parameters())
        if self.max_stack_bytes is not None and per_client:
            caps.append(max(1, self.max_stack_bytes // per_client))
        return min(caps) if caps else None

    def stack_slices(self, model: nn.Module, num_clients: int) -> list[tuple[int, int]]:
        """The ``(start, stop)`` slices of a round's client list trained as one stack each: one slice
        when the round fits :meth:`group_size`, else the fewest slices that fit, of nearly equal size
        (so every stack after the first reuses the first one's buffers)."""
        size = self.group_size(model)
        if size is None or num_clients <= size:
            return [(0, num_clients)]
        count = -(-num_clients // size)
        base, extra = divmod(num_clients, count)
        bounds = np.cumsum([0] + [base + (i < extra) for i in range(count)]).tolist()
        return list(zip(bounds[:-1], bounds[1:]))

    @staticmethod
    def check_supported(model: nn.Module, local: LocalTraining, transform: ClientTransform) -> None:
        """Raise ``ValueError`` naming what the vmap trainer cannot reproduce."""
        if callable(local.optimizer) or local.optimizer != "sgd":
            raise ValueError(f"trainer='vmap' supports optimizer='sgd' only (got {local.optimizer!r}); "
                             "use trainer='sequential' for sgdm/adam/adamw")
        if local.precision != "fp32":
            raise ValueError(f"trainer='vmap' supports precision='fp32' only (got {local.precision!r}); "
                             "use trainer='sequential' for mixed precision")
        if type(transform) not in (ClientTransform, FedProx):
            raise ValueError(f"trainer='vmap' supports no transform or FedProx only (got {type(transform).__name__}); "
                             "use trainer='sequential'")
        if any(True for _ in model.buffers()) or any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules()):
            raise ValueError("trainer='vmap' needs a model without buffers (BatchNorm) or dropout; "
                             "use trainer='sequential'")

    def _check_once(self, model: nn.Module, local: LocalTraining, transform: ClientTransform) -> None:
        """:meth:`check_supported`, skipped while the model, ``local`` and the transform's type are the
        ones it last passed (a run checks its setup before round 1; every round then has the same)."""
        setup = (id(model), local, type(transform))
        if self._checked != setup:
            self.check_supported(model, local, transform)
            self._checked = setup

    def __call__(self, model, received, clients, local, round_idx, seed, transform):
        """Each client's ``(update, mean loss, samples processed)``; the updates are views of the rows
        of this call's own stacks (fresh buffers, never trained in again)."""
        self._check_once(model, local, transform)
        out: list = [None] * len(clients)
        for start, stop in self.stack_slices(model, len(clients)):
            chunk = clients[start:stop]
            block = self._train_stack(model, received, chunk, local, round_idx, seed, transform, {})
            for i in range(len(chunk)):
                row = block.rows[i]
                update = {key: block.updates[key][row] if key in block.updates else torch.zeros_like(value)
                          for key, value in received.items()}
                out[start + i] = (update, block.losses[i], block.processed[i])
        return out

    def train_stacked(self, model, received, clients, local, round_idx, seed, transform) -> StackedUpdates | None:
        """Train like the trainer call and return the round's updates (local − received) as one block,
        in the stack's own order (``rows``); ``None``, before training, when the clients do not fit one
        stack (:meth:`group_size`: ``max_group``, ``max_stack_bytes``) or ``received`` holds more than the
        model's parameters.  Call it on each of :meth:`stack_slices` to train a larger round block by block.

        The block lives in the trainer's buffers: the next call of ``train_stacked`` trains in them again
        (a fresh stack every round would cost page faults), so use a block, and drop every reference to
        it, before the next call.
        """
        self._check_once(model, local, transform)
        names = {name for name, _ in model.named_parameters()}
        size = self.group_size(model)
        if not clients or (size is not None and len(clients) > size) or any(key not in names for key in received):
            return None
        pool, self._pool = self._pool, {}
        block = self._train_stack(model, received, clients, local, round_idx, seed, transform, pool)
        self._pool = {key: d if d._base is None else d._base for key, d in block.updates.items()}  # whole buffers
        return block

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

    def _train_stack(self, model, received, group, local, round_idx, seed, transform, pool) -> StackedUpdates:
        """Train one stack (in ``pool``'s buffers where they fit) and return its updates, one row per
        client of ``group``: a stack of weights has ``received`` subtracted in place."""
        k = len(group)
        device = group[0][1].x.device
        sizes = [len(data) for _, data in group]
        plan = _schedule(sizes, [client_generator(seed, round_idx, cid) for cid, _ in group], local.batch_size,
                         local.epochs, device)
        x, y = self._round_data([group[i][1] for i in plan.order])
        names = [name for name, _ in model.named_parameters()]
        layers = mlp_layers(model)
        updates = layers is not None and self._stack_updates(plan, k)
        written = plan.steps[0][0] if updates and plan.steps else 0  # rows the first step writes itself
        params = {}
        for name in names:
            start = received[name].to(device).unsqueeze(0)
            buffer = pool.get(name)
            if (buffer is None or buffer.shape[1:] != start.shape[1:] or len(buffer) < k or buffer.dtype != start.dtype
                    or buffer.device != start.device):
                buffer = start.new_empty((k, *start.shape[1:]))  # recycled next round: no fresh pages
            elif len(buffer) > k:
                buffer = buffer[:k]  # a smaller stack trains in the first rows of the previous one
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
        mean_loss = (losses / counts).tolist()
        row_of = [0] * k
        for pos, i in enumerate(plan.order):
            row_of[i] = pos
        if not updates:
            for key in params:
                if key in received:
                    params[key].sub_(received[key].to(device).unsqueeze(0))  # weights -> updates, in place
        return StackedUpdates({key: d for key, d in params.items() if key in received}, row_of,
                              [mean_loss[row_of[i]] if sizes[i] else float("nan") for i in range(k)],
                              [local.epochs * n for n in sizes],
                              None if layers is None else mlp_training_flops_per_sample(layers))

    def _stack_updates(self, plan: _Schedule, k: int) -> bool:
        """Whether the MLP path keeps updates ``W − W₀`` rather than weights in the stack.

        Updates save three passes over the stack per round (copying ``W₀`` in, reading it in the
        first step, and ``W − W₀`` for the uplink) but add a shared product with ``W₀`` to every
        later step, which costs more the more rows those steps hold.  So: updates when the later
        steps hold at most 64 rows per client, about where the two forms break even for the course's
        MLP (``benchmarks/bench_loop.py`` times both).  Both give the same result up to float rounding.
        """
        if self.stack != "auto":
            return self.stack == "updates"
        later_rows = sum(rows.numel() for _, rows, _ in plan.steps[1:])
        return later_rows <= 64 * k

    # ------------------------------------------------------------------ the uplink of stacked fp32 updates

    def __repr__(self) -> str:
        extra = "" if self.stack == "auto" else f", stack={self.stack!r}"
        if self.max_stack_bytes != MAX_STACK_BYTES:
            extra += f", max_stack_bytes={self.max_stack_bytes}"
        return f"VmapTrainer(max_group={self.max_group}{extra})"


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
            if below is None:  # the first layer: nothing below it
                break
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
