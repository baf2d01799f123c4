"""The round protocol: the technique-specific half of a round of :func:`fedlab_utils.core.loop.run`.

:func:`~fedlab_utils.core.loop.run` samples clients, applies faults, prices every client-round,
evaluates and checkpoints; a :class:`RoundProtocol` does steps 3-6 of a round in between
(broadcast, local training, uplink, aggregation), set up once with a :class:`RoundContext`.

:class:`FedAvgProtocol` is FedAvg and its relatives: downlink and uplink codecs, a client
transform, an aggregate and a server optimizer, each a part of :mod:`fedlab_utils.core.registry`.
Its fast path, :class:`~fedlab_utils.core.stacked.StackedFedAvg`, takes a round's updates in blocks
of stacked rows from a trainer that offers them and folds them into the average block by block; it
is chosen by what the parts declare (:func:`~fedlab_utils.core.stacked.stacked_path_applies`).
FedDF, logit sharing (:mod:`fedlab_utils.lessons.distillation.federated`) and SplitFed
(:mod:`fedlab_utils.lessons.parallel.split_learning`) are other protocols.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from fedlab_utils.compression.wire import Codec, Update
from fedlab_utils.core import registry
from fedlab_utils.core.aggregators.fedavg import Aggregate, fedavg_aggregate
from fedlab_utils.core.checkpoint import load_object_state, object_state, reset_state
from fedlab_utils.core.faults import update_is_finite
from fedlab_utils.core.preflight import check_trainer, probe_model
from fedlab_utils.core.servers.fedavg import ServerOptimizer
from fedlab_utils.core.stacked import StackedFedAvg, stacked_path_applies
from fedlab_utils.core.training import (
    ClientResult,
    ClientTrainer,
    ClientTransform,
    LocalTraining,
    evaluate,
    model_state,
)
from fedlab_utils.data import ClientData
from fedlab_utils.ledger.flops import mlp_layers, mlp_training_flops_per_sample, training_flops_per_sample

__all__ = ["RoundContext", "RoundProtocol", "FedAvgProtocol", "per_client"]

_Outcome = TypeVar("_Outcome")


def per_client(clients: Sequence[int], work: Callable[[int], _Outcome]) -> list[_Outcome | Exception]:
    """``work(cid)`` for every client; a client whose work raises gets its exception in its place,
    so one broken client never takes the others down (:func:`~fedlab_utils.core.loop.run` decides
    what to do with it)."""
    out: list[_Outcome | Exception] = []
    for cid in clients:
        try:
            out.append(work(cid))
        except Exception as exc:  # noqa: BLE001 -- handed to run's on_client_error policy
            out.append(exc)
    return out


# ----------------------------------------------------------------------------- protocols
@dataclass
class RoundContext:
    """What :func:`~fedlab_utils.core.loop.run` hands a protocol once, before the first round.

    ``late(client_id, round_idx, result, broadcast_bytes)`` is the round's deadline rule, the one
    ``run`` leaves results out by (:meth:`~fedlab_utils.core.faults.Faults.late_rule`); ``None``
    when nobody can be late."""

    clients: Sequence[ClientData]
    test: tuple[torch.Tensor, torch.Tensor]
    local: LocalTraining
    seed: int
    device: torch.device
    input_shape: tuple[int, ...]
    late: Callable[[int, int, ClientResult, int], bool] | None = None


class RoundProtocol:
    """The technique-specific half of a round; :func:`~fedlab_utils.core.loop.run` does the rest
    (sampling, faults, energy, the meter, progress, the record, checkpoints).

    * ``setup(ctx)``: once, before round 1 (build models on ``ctx.device``; reset stateful hooks);
    * ``broadcast(round_idx, selected)``: bytes each sampled client downloads before training;
    * ``train(round_idx, clients)``: one :class:`ClientResult` (or the exception it raised) per client;
    * ``aggregate(round_idx, results)``: fold the surviving results into the global state; returns
      the server's FLOPs if it counts them (else 0).  Not called when nothing survived;
    * ``evaluate()``: ``(accuracy, loss, extra metrics)``;
    * ``final_model()``, ``config()`` (JSON, short names for ``History.config``), ``identity()``
      (JSON, the parts' full configurations; with ``config()``, a checkpoint's identity),
      ``state_dict()`` / ``load_state_dict()`` (everything a resumed run needs).
    """

    label = "rounds"

    def setup(self, ctx: RoundContext) -> None:
        self.ctx = ctx

    def broadcast(self, round_idx: int, selected: list[int]) -> dict[int, int]:
        raise NotImplementedError

    def train(self, round_idx: int, clients: list[int]) -> list[ClientResult | Exception]:
        raise NotImplementedError

    def aggregate(self, round_idx: int, results: list[ClientResult]) -> int:
        raise NotImplementedError

    def evaluate(self) -> tuple[float, float, dict]:
        raise NotImplementedError

    def final_model(self) -> nn.Module | None:
        return None

    def config(self) -> dict:
        return {}

    def identity(self) -> dict:
        """What a checkpoint must match beyond ``config()``: the full configuration of each part."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None


def _name(obj) -> str:
    """A hook's short name for ``History.config`` (its full configuration is :func:`registry.spec_of`)."""
    named = getattr(obj, "name", None) or getattr(obj, "__name__", None)
    if isinstance(named, str):
        return named
    return repr(obj) if type(obj).__repr__ is not object.__repr__ else type(obj).__qualname__


class _FlopCache:
    """Per-sample training FLOPs, measured once per architecture (keyed by parameter shapes).

    A plain MLP (the course's ``Flatten, Linear, ReLU, ..., Linear``) is counted with the ledger's
    closed form :func:`~fedlab_utils.ledger.flops.mlp_training_flops_per_sample`, which equals
    ``FlopCounterMode``'s count (tested); anything else is measured by ``FlopCounterMode``, whose
    first use in a process imports ``torch._dynamo``."""

    def __init__(self, input_shape: tuple[int, ...]):
        self.input_shape = input_shape
        self._cache: dict[tuple, int] = {}

    def __call__(self, model: nn.Module) -> int:
        key = tuple((n, tuple(p.shape)) for n, p in model.named_parameters())
        if key not in self._cache:
            layers = mlp_layers(model)
            self._cache[key] = (mlp_training_flops_per_sample(layers) if layers is not None
                                else training_flops_per_sample(model, self.input_shape))
        return self._cache[key]


class FedAvgProtocol(RoundProtocol):
    """FedAvg and its relatives: broadcast the global model, train through ``trainer``, send
    updates through ``uplink``, ``aggregate`` them and step the ``server``.

    Every part is resolved here, once (``local`` is what ``trainer='auto'`` decides on), and checked
    against the run's setup in :meth:`setup`, which also chooses the round's path: the stacked one
    (:class:`~fedlab_utils.core.stacked.StackedFedAvg`) when the parts declare what it needs, else
    client by client."""

    label = "FedAvg"

    def __init__(self, model: nn.Module, *, uplink: Codec | str | None = None, downlink: Codec | str | None = None,
                 transform: ClientTransform | str | None = None, server: ServerOptimizer | str | None = None,
                 aggregate: Aggregate | str = fedavg_aggregate, trainer: ClientTrainer | str | None = None,
                 local: LocalTraining | None = None):
        self.model = model
        self.uplink = registry.resolve_codec(uplink, "uplink")
        self.downlink = registry.resolve_codec(downlink, "downlink")
        self.transform = registry.resolve_transform(transform, "transform")
        self.server = registry.resolve_server(server, "server")
        self.aggregate_fn = registry.resolve_aggregate(aggregate, "aggregate")
        self.trainer = registry.resolve_trainer(trainer, "trainer", model=model, local=local, transform=self.transform)
        self.stacked: StackedFedAvg | None = None

    def _hooks(self) -> dict:
        return {"uplink": self.uplink, "downlink": self.downlink, "transform": self.transform, "server": self.server,
                "aggregate": self.aggregate_fn}

    def setup(self, ctx: RoundContext) -> None:
        super().setup(ctx)
        check_trainer(self.trainer, self.model, ctx.local, self.transform)  # before round 1, naming `trainer`
        self.global_model = copy.deepcopy(self.model).to(ctx.device)
        probe_model(self.global_model, ctx.clients, ctx.test)  # one forward pass: naming `model` if it does not fit
        self.worker = copy.deepcopy(self.global_model)
        self.flops_per_sample = _FlopCache(ctx.input_shape)
        for hook in self._hooks().values():
            reset_state(hook)  # stateful codecs and server optimizers start every run afresh
        self.stacked = (StackedFedAvg(self.trainer, self.uplink, self.transform, self._local, self.flops_per_sample,
                                      ctx.late)
                        if stacked_path_applies(self.trainer, self.uplink, self.transform, self.aggregate_fn) else None)

    def broadcast(self, round_idx, selected):
        self.global_state = model_state(self.global_model)
        payload = self.downlink.encode(self.global_state)
        self.received = self.downlink.decode(payload, self.global_state)
        self.broadcast_bytes = len(payload)
        return dict.fromkeys(selected, len(payload))

    def _local(self, round_idx: int, clients: list[int]) -> list[tuple[Update, float, int] | Exception]:
        """Each client's ``(update, mean loss, samples processed)`` from the trainer, or the
        exception its training raised (found client by client when the trainer's call raises)."""
        ctx = self.ctx
        pairs = [(c, ctx.clients[c]) for c in clients]
        try:
            return self.trainer(self.worker, self.received, pairs, ctx.local, round_idx, ctx.seed, self.transform)
        except Exception as exc:  # noqa: BLE001 -- find out which client it was, one by one
            if len(clients) == 1:
                return [exc]
            return [r if isinstance(r, Exception) else r[0] for r in per_client(
                clients, lambda c: self.trainer(self.worker, self.received, [(c, ctx.clients[c])], ctx.local,
                                                round_idx, ctx.seed, self.transform))]

    def train(self, round_idx, clients):
        if not clients:
            return []
        if self.stacked is not None:
            results = self.stacked.train(round_idx, clients, self.worker, self.received, self.ctx.clients,
                                         self.ctx.local, self.ctx.seed, self.broadcast_bytes)
            if results is not None:
                return results
        trained = self._local(round_idx, clients)
        fps = self.flops_per_sample(self.worker)

        def upload(i: int) -> ClientResult:
            cid, outcome = clients[i], trained[i]
            if isinstance(outcome, Exception):
                raise outcome
            update, loss, processed = outcome
            update = self.transform.on_update(update, cid)
            n = len(self.ctx.clients[cid])
            if not update_is_finite(update):  # never fed to a codec: error-feedback memory stays clean
                return ClientResult(cid, n, update, loss, processed, 0, 0, fps * processed, finite=False)
            payload = self.uplink.encode(update, cid)
            return ClientResult(cid, n, self.uplink.decode(payload, self.received), loss, processed, len(payload), 0,
                                fps * processed)

        return per_client(range(len(clients)), upload)

    def aggregate(self, round_idx, results):
        results = [r for r in results if r.num_samples > 0]
        if not results:
            return 0
        if self.stacked is not None and self.stacked.pending is not None:
            update = self.stacked.average(results)
        else:
            update = self.aggregate_fn(results, self.global_model, round_idx)
        self.global_model.load_state_dict(self.server.step(self.global_state, update), strict=False)
        return 0

    def evaluate(self):
        accuracy, loss = evaluate(self.global_model, *self.ctx.test)
        return accuracy, loss, {}

    def final_model(self):
        return self.global_model

    def config(self) -> dict:
        return {"uplink": _name(self.uplink), "downlink": _name(self.downlink), "server": _name(self.server),
                "aggregate": _name(self.aggregate_fn), "transform": _name(self.transform), "trainer": _name(self.trainer),
                "model": [[k, list(v.shape)] for k, v in self.model.state_dict().items()]}

    def identity(self) -> dict:
        """Every hook's full configuration (:func:`registry.spec_of`), part of a checkpoint's identity."""
        return {name: registry.spec_of(hook) for name, hook in {**self._hooks(), "trainer": self.trainer}.items()}

    def state_dict(self) -> dict:
        return {"global": self.global_model.state_dict(), "worker": self.worker.state_dict(),
                **{name: object_state(hook, name) for name, hook in self._hooks().items()}}

    def load_state_dict(self, state: dict) -> None:
        self.global_model.load_state_dict(state["global"])
        self.worker.load_state_dict(state["worker"])
        for name, hook in self._hooks().items():
            load_object_state(hook, state.get(name), name)
