"""One federated loop, written once; techniques plug in through small hooks.

A round of :func:`run`:

1. the server samples ``fraction`` of the clients (seeded);
2. **downlink**: the global state is encoded by ``downlink`` (a :class:`~fedlab_utils.wire.Codec`)
   and every sampled client decodes it -- a lossy downlink really changes what clients train;
3. each client trains locally (``local``: epochs, batch size, optimizer, precision), with a
   :class:`ClientTransform` able to act before training, add a loss term, act after every
   step and rewrite the update (pruning masks, FedProx);
4. **uplink**: each update (local − received state) is encoded by ``uplink``; the server
   decodes it; ``len()`` of each payload goes in the ledger;
5. ``aggregate`` turns the decoded updates into one (default: FedAvg weighted by each
   client's real number of training samples), and ``server`` applies it (default: plain
   FedAvg, ``global += update``; FedOpt optimizers plug in here);
6. the global model is evaluated, and FLOPs, bytes, wall time and joules are recorded.

FedSGD is the same loop with ``LocalTraining(epochs=1, batch_size=None)``: one full-batch step.
The loop is deterministic for a given seed on the CPU.
"""
from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .data import ClientData
from .ledger import Energy, EnergyMeter, EnergyProfile, get_profile, training_flops_per_sample
from .validation import check_choice, check_fraction, check_int, check_real
from .wire import Codec, Fp32Codec, Update

__all__ = ["LocalTraining", "ClientTransform", "ClientResult", "ClientTrainer", "SequentialTrainer",
           "ServerOptimizer", "FedAvgServer", "RoundRecord", "History", "run", "train_locally", "evaluate",
           "weighted_average", "fedavg_aggregate", "model_state", "state_delta", "apply_delta", "sample_clients",
           "make_optimizer", "summary_table", "OPTIMIZERS", "PRECISIONS"]

OPTIMIZERS = ("sgd", "sgdm", "adam", "adamw")
PRECISIONS = ("fp32", "bf16", "fp16")


# ----------------------------------------------------------------------------- state helpers
def model_state(model: nn.Module) -> Update:
    """A detached copy of the model's floating-point state (what FedAvg averages)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def state_delta(new: Update, old: Update) -> Update:
    """``new − old`` key by key: the update a client sends."""
    return {k: new[k] - old[k] for k in old}


def apply_delta(state: Update, delta: Update, scale: float = 1.0) -> Update:
    """``state + scale · delta`` key by key."""
    return {k: state[k] + scale * delta[k].to(state[k].device, state[k].dtype) for k in state}


def weighted_average(updates: Sequence[Update], weights: Sequence[float]) -> Update:
    """Σ w_i · u_i / Σ w_i key by key -- FedAvg's aggregation with w_i = client i's sample count."""
    if len(updates) == 0 or len(updates) != len(weights):
        raise ValueError(f"need one weight per update; got {len(updates)} updates and {len(weights)} weights")
    total = float(sum(weights))
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError(f"weights={list(weights)} must be non-negative with a positive sum")
    return {k: sum(float(w) / total * u[k] for u, w in zip(updates, weights)) for k in updates[0]}


def sample_clients(num_clients: int, fraction: float, rng: np.random.Generator) -> list[int]:
    """McMahan et al.'s C: ``max(1, round(C·K))`` distinct clients, sorted."""
    m = max(1, int(round(fraction * num_clients)))
    return sorted(rng.choice(num_clients, size=m, replace=False).tolist())


# ----------------------------------------------------------------------------- local training
@dataclass(frozen=True)
class LocalTraining:
    """How each client trains in a round.

    ``batch_size=None`` means full batch; with ``epochs=1`` that is one step, i.e. FedSGD.
    ``optimizer`` is a name in :data:`OPTIMIZERS` or a factory ``(params, lr) -> Optimizer``.
    ``precision`` ``'bf16'`` uses autocast (CPU or GPU); ``'fp16'`` needs CUDA and uses a GradScaler.
    """

    epochs: int = 1
    batch_size: int | None = 32
    lr: float = 0.05
    optimizer: str | Callable = "sgd"
    weight_decay: float = 0.0
    precision: str = "fp32"

    def __post_init__(self) -> None:
        check_int("local_epochs", self.epochs, 1)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, 1)
        check_real("lr", self.lr, 0.0, low_inclusive=False)
        check_real("weight_decay", self.weight_decay, 0.0)
        check_choice("precision", self.precision, PRECISIONS)
        if not callable(self.optimizer):
            check_choice("optimizer", self.optimizer, OPTIMIZERS)


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


def autocast_context(device: torch.device, precision: str):
    """The autocast context for ``precision`` on ``device`` (a no-op for fp32; fp16 needs CUDA)."""
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision='fp16' needs a CUDA device (got {device}); use 'bf16' or 'fp32'")
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def backward_and_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                      scaler: torch.amp.GradScaler | None = None) -> None:
    """Backward pass and optimizer step, through ``scaler`` when fp16 training uses one."""
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def train_locally(model: nn.Module, data: ClientData, local: LocalTraining, *, generator: torch.Generator,
                  transform: ClientTransform | None = None, global_state: Update | None = None,
                  loss_fn: Callable = nn.functional.cross_entropy) -> tuple[float, int]:
    """Train ``model`` in place on one client's data; returns (mean loss, samples processed).

    The shuffling order comes from ``generator``, so a client's training is reproducible.
    """
    transform = transform or ClientTransform()
    model.train()
    device = data.x.device
    optimizer = make_optimizer(local.optimizer, model.parameters(), local.lr, local.weight_decay)
    if local.precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision='fp16' needs a CUDA device (got {device}); use 'bf16' or 'fp32'")
    scaler = torch.amp.GradScaler("cuda") if local.precision == "fp16" else None
    n = len(data)
    batch = n if local.batch_size is None else min(local.batch_size, n)
    losses, processed = [], 0
    for _ in range(local.epochs):
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            optimizer.zero_grad(set_to_none=True)
            with autocast_context(device, local.precision):
                loss = loss_fn(model(data.x[idx]), data.y[idx])
            extra = transform.regularizer(model, global_state) if global_state is not None else None
            total = loss if extra is None else loss + extra
            backward_and_step(total, optimizer, scaler)
            transform.after_step(model)
            losses.append(loss.detach().item())
            processed += len(idx)
    return float(np.mean(losses)), processed


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


@dataclass
class ClientResult:
    """What the server knows about one client after a round (the update is already decoded)."""

    client_id: int
    num_samples: int
    update: Update
    train_loss: float
    samples_processed: int
    bytes_up: int


class ClientTrainer(Protocol):
    """Runs local training for the sampled clients of one round.

    Returns, per client, ``(local_state, mean_loss, samples_processed)``.  The default
    trains clients one after another; ``fedlab_utils.acceleration`` offers a vectorised one.
    """

    def __call__(self, model: nn.Module, received: Update, clients: list[tuple[int, ClientData]],
                 local: LocalTraining, round_idx: int, seed: int,
                 transform: ClientTransform) -> list[tuple[Update, float, int]]: ...


def client_generator(seed: int, round_idx: int, client_id: int) -> torch.Generator:
    """The shuffling generator of one client in one round (independent of who else is sampled)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, round_idx, client_id]).generate_state(1)[0]))


class SequentialTrainer:
    """Train the sampled clients one after another on one working copy of the model."""

    def __call__(self, model, received, clients, local, round_idx, seed, transform):
        out = []
        for cid, data in clients:
            model.load_state_dict(received, strict=False)
            transform.on_receive(model, cid, round_idx)
            loss, processed = train_locally(model, data, local, generator=client_generator(seed, round_idx, cid),
                                            transform=transform, global_state=received)
            out.append((model_state(model), loss, processed))
        return out

    def __repr__(self) -> str:
        return "SequentialTrainer()"


# ----------------------------------------------------------------------------- server side
class ServerOptimizer(Protocol):
    """Turns the aggregated update into the next global state (FedOpt's server step)."""

    def step(self, global_state: Update, update: Update) -> Update: ...


@dataclass
class FedAvgServer:
    """Plain FedAvg: ``global ← global + lr · update`` (``lr=1`` is McMahan et al.'s rule)."""

    lr: float = 1.0

    def step(self, global_state: Update, update: Update) -> Update:
        return apply_delta(global_state, update, self.lr)


def fedavg_aggregate(results: list[ClientResult], global_model: nn.Module, round_idx: int) -> Update:
    """FedAvg: the updates averaged with weights = each client's real number of training samples."""
    return weighted_average([r.update for r in results], [r.num_samples for r in results])


Aggregate = Callable[[list[ClientResult], nn.Module, int], Update]


# ----------------------------------------------------------------------------- history
@dataclass
class RoundRecord:
    """The ledger line of one round (sums over the sampled clients)."""

    round: int
    clients: list[int]
    accuracy: float
    loss: float
    train_loss: float
    bytes_up: int
    bytes_down: int
    client_flops: int
    wall_time_s: float
    energy: Energy
    measured_joules: float | None = None


@dataclass
class History:
    """Everything a run measured, round by round, plus the final global model.

    ``history.accuracy`` is a list per round; ``totals()``, ``rounds_to_accuracy(t)`` and
    ``summary()`` answer the usual questions; ``to_dict()`` is JSON-ready.
    """

    label: str
    records: list[RoundRecord] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    profile: str = "phone-lte"
    meter: str = "not available"
    model: nn.Module | None = field(default=None, repr=False)

    # per-round series -------------------------------------------------------
    @property
    def rounds(self) -> list[int]:
        return [r.round for r in self.records]

    @property
    def accuracy(self) -> list[float]:
        return [r.accuracy for r in self.records]

    @property
    def loss(self) -> list[float]:
        return [r.loss for r in self.records]

    def cumulative(self, name: str) -> np.ndarray:
        """Running total of a numeric record field, e.g. ``'bytes_up'``."""
        return np.cumsum([getattr(r, name) for r in self.records])

    # answers ----------------------------------------------------------------
    @property
    def final_accuracy(self) -> float:
        return self.records[-1].accuracy

    def best_accuracy(self) -> float:
        return max(self.accuracy)

    def rounds_to_accuracy(self, target: float) -> int | None:
        """First round (1-based) whose test accuracy is ≥ ``target``; ``None`` if never."""
        return next((r.round for r in self.records if r.accuracy >= target), None)

    def bytes_up_to_accuracy(self, target: float) -> int | None:
        """Cumulative uplink bytes when ``target`` accuracy is first reached; ``None`` if never."""
        rounds = self.rounds_to_accuracy(target)
        return None if rounds is None else int(self.cumulative("bytes_up")[rounds - 1])

    def energy(self) -> Energy:
        return sum((r.energy for r in self.records), Energy())

    def totals(self) -> dict:
        e = self.energy()
        measured = [r.measured_joules for r in self.records]
        return {"rounds": len(self.records), "bytes_up": int(sum(r.bytes_up for r in self.records)),
                "bytes_down": int(sum(r.bytes_down for r in self.records)),
                "client_flops": int(sum(r.client_flops for r in self.records)),
                "wall_time_s": float(sum(r.wall_time_s for r in self.records)),
                "joules_compute": e.compute, "joules_uplink": e.uplink, "joules_downlink": e.downlink,
                "joules_total": e.total,
                "measured_joules": None if None in measured else float(sum(measured))}

    def summary(self, target: float | None = None) -> dict:
        """One row for a comparison table (MB, GFLOPs, J; accuracy in %)."""
        t = self.totals()
        row = {"run": self.label, "final acc %": 100 * self.final_accuracy, "rounds": t["rounds"],
               "MB up": t["bytes_up"] / 1e6, "MB down": t["bytes_down"] / 1e6,
               "client GFLOPs": t["client_flops"] / 1e9, "J (model)": t["joules_total"],
               "J measured": t["measured_joules"]}
        if target is not None:
            row[f"rounds to {100 * target:.0f}%"] = self.rounds_to_accuracy(target)
        return row

    def to_dict(self) -> dict:
        records = []
        for r in self.records:
            d = asdict(r)
            d["energy"] = {"compute": r.energy.compute, "uplink": r.energy.uplink, "downlink": r.energy.downlink}
            records.append(d)
        return {"label": self.label, "config": self.config, "profile": self.profile, "meter": self.meter,
                "totals": self.totals(), "records": records}

    def __repr__(self) -> str:
        if not self.records:
            return f"History({self.label!r}, no rounds)"
        t = self.totals()
        return (f"History({self.label!r}: {t['rounds']} rounds, final acc {100 * self.final_accuracy:.1f}%, "
                f"{t['bytes_up'] / 1e6:.2f} MB up, {t['client_flops'] / 1e9:.2f} GFLOPs, "
                f"{t['joules_total']:.3g} J modelled [{self.profile}])")


def summary_table(histories: Sequence[History] | dict[str, History], target: float | None = None):
    """A pandas DataFrame with one :meth:`History.summary` row per run."""
    import pandas as pd

    runs = histories.values() if isinstance(histories, dict) else histories
    return pd.DataFrame([h.summary(target) for h in runs]).set_index("run")


# ----------------------------------------------------------------------------- the loop
class _FlopCache:
    """Per-sample training FLOPs, measured once per architecture (keyed by parameter shapes)."""

    def __init__(self, input_shape: tuple[int, ...]):
        self.input_shape, self._cache = input_shape, {}

    def __call__(self, model: nn.Module) -> int:
        key = tuple((n, tuple(p.shape)) for n, p in model.named_parameters())
        if key not in self._cache:
            self._cache[key] = training_flops_per_sample(model, self.input_shape)
        return self._cache[key]


def progress_enabled(progress: bool | None) -> bool:
    """Show a progress bar? An explicit ``progress`` wins; else ``FEDLAB_PROGRESS`` (``0`` hides bars)."""
    if progress is not None:
        return progress
    return os.environ.get("FEDLAB_PROGRESS", "1") != "0"


def run(model: nn.Module, clients: Sequence[ClientData], test: tuple[torch.Tensor, torch.Tensor], *,
        rounds: int, fraction: float = 1.0, local: LocalTraining = LocalTraining(), seed: int = 0,
        uplink: Codec | None = None, downlink: Codec | None = None, transform: ClientTransform | None = None,
        server: ServerOptimizer | None = None, aggregate: Aggregate = fedavg_aggregate,
        trainer: ClientTrainer | None = None, energy_profile: str | EnergyProfile = "phone-lte",
        label: str = "FedAvg", progress: bool | None = None, eval_every: int = 1) -> History:
    """Run federated training and return its :class:`History` (the trained model is ``history.model``).

    ``model`` is copied, so the same initial model can start several runs for a fair comparison.
    Clients' data must already be on the device the model should train on.
    """
    check_int("rounds", rounds, 1)
    check_fraction("fraction", fraction)
    check_int("eval_every", eval_every, 1)
    if len(clients) == 0:
        raise ValueError("clients is empty; partition the data into at least one client")
    profile = get_profile(energy_profile)
    uplink, downlink = uplink or Fp32Codec(), downlink or Fp32Codec()
    transform, server, trainer = transform or ClientTransform(), server or FedAvgServer(), trainer or SequentialTrainer()
    device = clients[0].x.device
    global_model = copy.deepcopy(model).to(device)
    worker = copy.deepcopy(global_model)
    flops_per_sample = _FlopCache(tuple(clients[0].x.shape[1:]))
    meter = EnergyMeter(device)
    x_test, y_test = test[0].to(device), test[1].to(device)
    history = History(label, profile=profile.name, meter=meter.source,
                      config={"rounds": rounds, "fraction": fraction, "num_clients": len(clients), "seed": seed,
                              "local": {k: (v if not callable(v) else getattr(v, "__name__", repr(v)))
                                        for k, v in asdict(local).items()},
                              "uplink": getattr(uplink, "name", repr(uplink)),
                              "downlink": getattr(downlink, "name", repr(downlink)),
                              "server": repr(server), "device": str(device)})
    bar = tqdm(range(1, rounds + 1), desc=label, disable=not progress_enabled(progress), leave=False)
    accuracy, loss = float("nan"), float("nan")
    for round_idx in bar:
        start, joules_before = time.perf_counter(), meter.read()
        selected = sample_clients(len(clients), fraction, np.random.default_rng([seed, round_idx]))
        global_state = model_state(global_model)
        down_payload = downlink.encode(global_state)
        received = downlink.decode(down_payload, global_state)
        trained = trainer(worker, received, [(c, clients[c]) for c in selected], local, round_idx, seed, transform)
        results = []
        for cid, (local_state, train_loss, processed) in zip(selected, trained):
            update = transform.on_update(state_delta(local_state, received), cid)
            payload = uplink.encode(update, cid)
            results.append(ClientResult(cid, len(clients[cid]), uplink.decode(payload, received), train_loss,
                                        processed, len(payload)))
        new_state = server.step(global_state, aggregate(results, global_model, round_idx))
        global_model.load_state_dict(new_state, strict=False)
        if round_idx % eval_every == 0 or round_idx == rounds:
            accuracy, loss = evaluate(global_model, x_test, y_test)
        flops = flops_per_sample(worker) * sum(r.samples_processed for r in results)
        bytes_up = sum(r.bytes_up for r in results)
        bytes_down = len(down_payload) * len(selected)
        joules_after = meter.read()
        history.records.append(RoundRecord(
            round_idx, selected, accuracy, loss, float(np.mean([r.train_loss for r in results])), bytes_up,
            bytes_down, flops, time.perf_counter() - start, profile.energy(flops, bytes_up, bytes_down),
            None if joules_before is None else joules_after - joules_before))
        bar.set_postfix(acc=f"{100 * accuracy:.1f}%")
    history.model = global_model
    return history
