"""The round protocol: the technique-specific half of a round of :func:`fedlab_utils.core.loop.run`.

:func:`~fedlab_utils.core.loop.run` samples clients, applies faults, prices every client-round,
evaluates and checkpoints; a :class:`RoundProtocol` does steps 3-6 of a round in between
(broadcast, local training, uplink, aggregation), set up once with a :class:`RoundContext`.

:class:`FedAvgProtocol` is FedAvg and its relatives: downlink and uplink codecs, a client
transform, an aggregate and a server optimizer, each a part of :mod:`fedlab_utils.core.registry`.
Its fast path takes a round's updates as one block of stacked updates from a trainer that offers
one (:class:`~fedlab_utils.core.training.StackedUpdates`), and only when its own uplink, transform
and aggregate make that block exactly what the per-client path would send and average.
FedDF, logit sharing (:mod:`fedlab_utils.lessons.distillation.federated`) and SplitFed
(:mod:`fedlab_utils.lessons.parallel.split_learning`) are other protocols.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fedlab_utils.compression.wire import Codec, Fp32Codec, Update
from fedlab_utils.core import registry
from fedlab_utils.core.aggregators.fedavg import Aggregate, fedavg_aggregate
from fedlab_utils.core.checkpoint import load_object_state, object_state, reset_state
from fedlab_utils.core.faults import update_is_finite
from fedlab_utils.core.preflight import check_trainer, probe_model
from fedlab_utils.core.servers.fedavg import ServerOptimizer
from fedlab_utils.core.training import (
    ClientResult,
    ClientTrainer,
    ClientTransform,
    LocalTraining,
    StackedUpdates,
    evaluate,
    model_state,
    state_delta,
)
from fedlab_utils.data import ClientData
from fedlab_utils.ledger.flops import mlp_layers, mlp_training_flops_per_sample, training_flops_per_sample

__all__ = ["RoundContext", "RoundProtocol", "FedAvgProtocol", "per_client"]


def per_client(clients: Sequence[int], work: Callable[[int], ClientResult]) -> list[ClientResult | Exception]:
    """``work(cid)`` for every client; a client whose work raises gets its exception in its place,
    so one broken client never takes the others down (:func:`~fedlab_utils.core.loop.run` decides
    what to do with it)."""
    out: list[ClientResult | Exception] = []
    for cid in clients:
        try:
            out.append(work(cid))
        except Exception as exc:  # noqa: BLE001 -- handed to run's on_client_error policy
            out.append(exc)
    return out


# ----------------------------------------------------------------------------- protocols
@dataclass
class RoundContext:
    """What :func:`~fedlab_utils.core.loop.run` hands a protocol once, before the first round."""

    clients: Sequence[ClientData]
    test: tuple[torch.Tensor, torch.Tensor]
    local: LocalTraining
    seed: int
    device: torch.device
    input_shape: tuple[int, ...]


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
        self.input_shape, self._cache = input_shape, {}

    def __call__(self, model: nn.Module) -> int:
        key = tuple((n, tuple(p.shape)) for n, p in model.named_parameters())
        if key not in self._cache:
            layers = mlp_layers(model)
            self._cache[key] = (mlp_training_flops_per_sample(layers) if layers is not None
                                else training_flops_per_sample(model, self.input_shape))
        return self._cache[key]


class FedAvgProtocol(RoundProtocol):
    """FedAvg and its relatives: broadcast the global model, train through ``trainer``, send
    updates through ``uplink``, ``aggregate`` them and step the ``server``."""

    label = "FedAvg"

    def __init__(self, model: nn.Module, *, uplink: Codec | str | None = None, downlink: Codec | str | None = None,
                 transform: ClientTransform | str | None = None, server: ServerOptimizer | str | None = None,
                 aggregate: Aggregate | str = fedavg_aggregate, trainer: ClientTrainer | str | None = None):
        self.model = model
        self.uplink = registry.resolve_codec(uplink, "uplink")
        self.downlink = registry.resolve_codec(downlink, "downlink")
        self.transform = registry.resolve_transform(transform, "transform")
        self.server = registry.resolve_server(server, "server")
        self.aggregate_fn = registry.resolve_aggregate(aggregate, "aggregate")
        self.trainer = registry.resolve_trainer(trainer, "trainer", model=model, transform=self.transform)
        self._block: tuple[StackedUpdates, dict[int, int], Update | None] | None = None
        self._chunks: dict | None = None  # a round trained in several stacks: its partial sums (_chunked_uplink)

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

    def broadcast(self, round_idx, selected):
        self.global_state = model_state(self.global_model)
        payload = self.downlink.encode(self.global_state)
        self.received = self.downlink.decode(payload, self.global_state)
        return dict.fromkeys(selected, len(payload))

    def _local(self, round_idx: int, clients: list[int]) -> list[tuple[Update, float, int] | Exception]:
        ctx = self.ctx
        pairs = [(c, ctx.clients[c]) for c in clients]
        try:
            return self.trainer(self.worker, self.received, pairs, ctx.local, round_idx, ctx.seed, self.transform)
        except Exception:  # noqa: BLE001 -- find out which client it was, one by one
            if len(clients) == 1:
                raise
            return [r if isinstance(r, Exception) else r[0] for r in per_client(
                clients, lambda c: self.trainer(self.worker, self.received, [(c, ctx.clients[c])], ctx.local,
                                                round_idx, ctx.seed, self.transform))]

    def _takes_blocks(self) -> bool:
        """Whether this round's updates may arrive as one block of stacked updates: only when the
        uplink is the plain lossless, stateless fp32 codec (the block's slices are its payloads), the
        transform leaves updates as they are and the aggregation is FedAvg's (one weighted sum)."""
        return (type(self.uplink) is Fp32Codec and type(self.transform).on_update is ClientTransform.on_update
                and self.aggregate_fn is fedavg_aggregate and callable(getattr(self.trainer, "train_stacked", None)))

    def train(self, round_idx, clients):
        self._block = self._chunks = None
        if not clients:
            return []
        if self._takes_blocks():
            ctx = self.ctx
            slicer = getattr(self.trainer, "stack_slices", None)
            slices = slicer(self.worker, len(clients)) if callable(slicer) else [(0, len(clients))]
            try:
                if len(slices) > 1:
                    chunked = self._chunked_uplink(round_idx, clients, slices)
                    if chunked is not None:
                        return chunked
                block = None if len(slices) > 1 else self.trainer.train_stacked(
                    self.worker, self.received, [(c, ctx.clients[c]) for c in clients], ctx.local, round_idx,
                    ctx.seed, self.transform)
            except Exception:  # noqa: BLE001 -- the per-client path below finds the client that raised
                block, self._chunks = None, None
            if block is not None:
                return self._stacked_uplink(block, clients)
        try:
            trained = self._local(round_idx, clients)
        except Exception as exc:  # noqa: BLE001 -- a one-client round
            trained = [exc]
        fps = self.flops_per_sample(self.worker)

        def upload(i: int) -> ClientResult:
            cid, outcome = clients[i], trained[i]
            if isinstance(outcome, Exception):
                raise outcome
            local_state, loss, processed = outcome
            update = self.transform.on_update(state_delta(local_state, self.received), cid)
            n = len(self.ctx.clients[cid])
            if not update_is_finite(update):  # never fed to a codec: error-feedback memory stays clean
                return ClientResult(cid, n, update, loss, processed, 0, 0, fps * processed)
            payload = self.uplink.encode(update, cid)
            return ClientResult(cid, n, self.uplink.decode(payload, self.received), loss, processed, len(payload), 0,
                                fps * processed)

        return per_client(range(len(clients)), upload)

    def _stacked_uplink(self, block: StackedUpdates, clients: list[int]) -> list[ClientResult]:
        """FedAvg's fp32 uplink read straight from a block of stacked updates, without per-client copies.

        A client's payload is its row of every tensor, in state-dict order, as a list of zero-copy
        byte views (what a vectored send such as ``socket.sendmsg`` transmits): byte for byte
        :class:`Fp32Codec`'s payload, its ``len()`` counted as everywhere; the server reads the
        decoded update as views of the same rows.  A non-finite update is not sent (0 bytes).
        """
        deltas, k = block.updates, len(clients)
        wire = {key: (d if d.device.type == "cpu" else d.cpu()).reshape(k, -1).numpy() for key, d in deltas.items()}
        order = sorted(range(k), key=lambda i: block.rows[i])  # row -> the caller's position
        # FedAvg of every client (what the server needs when no update is dropped, late or rejected),
        # which also tells whether all updates are finite: a NaN/inf anywhere makes the average non-finite.
        weights = torch.tensor([float(len(self.ctx.clients[clients[i]])) for i in order],
                               dtype=torch.float32, device=next(iter(deltas.values())).device)
        average = None
        if float(weights.sum()) > 0:
            average = {key: torch.tensordot(weights / weights.sum(), d, dims=1) for key, d in deltas.items()}
            if not all(bool(torch.isfinite(a).all()) for a in average.values()):
                average = None
        if average is not None:
            finite = [True] * k
        else:  # row by row: a NaN/inf makes the sum of its row non-finite
            finite = torch.isfinite(sum(d.reshape(k, -1).sum(1) for d in deltas.values())).tolist()
        fps = block.flops_per_sample or self.flops_per_sample(self.worker)
        results = []
        for i, cid in enumerate(clients):
            row, processed = block.rows[i], block.processed[i]
            update = {key: d[row] for key, d in deltas.items()}
            ok = finite[row] or all(bool(torch.isfinite(t).all()) for t in update.values())  # a sum can overflow
            payload = [memoryview(w[row]).cast("B") for w in wire.values()] if ok else []
            results.append(ClientResult(cid, len(self.ctx.clients[cid]), update, block.losses[i], processed,
                                        sum(len(part) for part in payload), 0, fps * processed, finite=ok))
        self._block = (block, {cid: block.rows[i] for i, cid in enumerate(clients)}, average)
        return results

    def _train_slice(self, round_idx: int, part: list[int]) -> StackedUpdates | None:
        """The trainer's block of updates of the clients ``part`` (one stack), or ``None``."""
        ctx = self.ctx
        return self.trainer.train_stacked(self.worker, self.received, [(c, ctx.clients[c]) for c in part], ctx.local,
                                          round_idx, ctx.seed, self.transform)

    def _fold(self, block: StackedUpdates, part: list[int], total: float,
              keep: set[int] | None = None) -> tuple[Update, list[bool]]:
        """One block's share of FedAvg: ``Σ nᵢ/total · Δᵢ`` over its finite rows (of the clients in
        ``keep``, or all), and whether each of ``part``'s updates is finite.  A non-finite row is zeroed
        in the block (the trainer writes every row again at its next call) so it cannot reach the sum."""
        deltas, k = block.updates, len(part)
        device = next(iter(deltas.values())).device
        share = [0.0] * k
        for i, cid in enumerate(part):
            if keep is None or cid in keep:
                share[block.rows[i]] = len(self.ctx.clients[cid]) / total
        weights = torch.tensor(share, dtype=torch.float32, device=device)
        partial = {key: torch.tensordot(weights, d, dims=1) for key, d in deltas.items()}
        if all(bool(torch.isfinite(p).all()) for p in partial.values()):  # a NaN/inf in any row would show here
            return partial, [True] * k
        finite = torch.isfinite(sum(d.reshape(k, -1).sum(1) for d in deltas.values())).tolist()
        ok = [finite[block.rows[i]] or all(bool(torch.isfinite(d[block.rows[i]]).all()) for d in deltas.values())
              for i in range(k)]  # a row's sum can overflow although every value is finite
        for i in range(k):
            if not ok[i]:
                weights[block.rows[i]] = 0.0
                for d in deltas.values():
                    d[block.rows[i]].zero_()
        return {key: torch.tensordot(weights, d, dims=1) for key, d in deltas.items()}, ok

    def _chunked_uplink(self, round_idx: int, clients: list[int],
                        slices: list[tuple[int, int]]) -> list[ClientResult] | None:
        """FedAvg's fp32 uplink of a round larger than one stack (:meth:`VmapTrainer.stack_slices`):
        the trainer's blocks, one slice of clients at a time, each folded into a partial weighted sum
        and dropped before the next is trained, so memory holds one block whatever the round's size.

        Each client's payload is its rows as zero-copy byte views, as in :meth:`_stacked_uplink`
        (byte for byte :class:`Fp32Codec`'s payload; its ``len()`` is counted; a client with no sample
        or a non-finite update sends nothing).  Its ``ClientResult.update`` is ``None``: the update is
        already in its slice's partial sum.  ``None`` (nothing trained) when the trainer offers no block.
        """
        ctx = self.ctx
        total = float(sum(len(ctx.clients[c]) for c in clients))
        results, parts = [], []
        for start, stop in slices:
            part = clients[start:stop]
            block = self._train_slice(round_idx, part)
            if block is None:
                if not parts:
                    return None
                raise RuntimeError(f"the trainer gave no block for clients {start}..{stop - 1} of round {round_idx}")
            partial, ok = self._fold(block, part, max(total, 1.0))
            fps = block.flops_per_sample or self.flops_per_sample(self.worker)
            wire = [(d if d.device.type == "cpu" else d.cpu()).reshape(len(part), -1).numpy()
                    for d in block.updates.values()]
            for i, cid in enumerate(part):
                n, processed = len(ctx.clients[cid]), block.processed[i]
                payload = [memoryview(w[block.rows[i]]).cast("B") for w in wire] if ok[i] and n else []
                results.append(ClientResult(cid, n, None, block.losses[i], processed,
                                            sum(len(view) for view in payload), 0, fps * processed, finite=ok[i]))
            parts.append((part, partial, {cid for cid, good in zip(part, ok) if good and len(ctx.clients[cid])}))
            del block, wire, payload, partial  # the trainer trains the next slice in the same buffers
        self._chunks = {"round": round_idx, "total": total, "parts": parts}
        return results

    def _chunked_average(self, results: list[ClientResult]) -> Update:
        """FedAvg of the surviving clients of a round trained in several stacks: the slices' partial
        sums, added in slice order and rescaled to the survivors' samples.  A slice in which a client
        that contributed was then left out (late past a deadline) is trained again, the same clients
        with the same seed giving the same updates, and summed over its survivors only; that re-run is
        the simulator's own work, not the clients', so the ledger does not charge it."""
        chunks = self._chunks
        keep = {r.client_id for r in results}
        update: Update | None = None
        for part, partial, contributors in chunks["parts"]:
            if not contributors <= keep:
                block = self._train_slice(chunks["round"], part)
                partial = self._fold(block, part, max(chunks["total"], 1.0), keep)[0]
                del block
            update = {key: p.clone() for key, p in partial.items()} if update is None else \
                {key: update[key].add_(partial[key]) for key in update}
        kept = float(sum(r.num_samples for r in results))
        if kept != chunks["total"]:
            update = {key: u.mul_(chunks["total"] / kept) for key, u in update.items()}
        return update

    def _stacked_average(self, results: list[ClientResult]) -> Update:
        """FedAvg of the surviving clients' rows of this round's block: one weighted sum per tensor."""
        block, row_of, average = self._block
        rows = [row_of[r.client_id] for r in results]
        if average is not None and sorted(rows) == list(range(len(row_of))):
            return dict(average)  # every client survived: computed with the uplink
        stack = next(iter(block.updates.values()))
        weights = torch.tensor([float(r.num_samples) for r in results], dtype=torch.float32, device=stack.device)
        index = torch.tensor(rows, device=stack.device)
        return {key: torch.tensordot(weights / weights.sum(), d[index], dims=1) for key, d in block.updates.items()}

    def aggregate(self, round_idx, results):
        results = [r for r in results if r.num_samples > 0]
        if not results:
            return 0
        if self._chunks is not None:
            update = self._chunked_average(results)
        elif self._block is not None:
            update = self._stacked_average(results)
        else:
            update = self.aggregate_fn(results, self.global_model, round_idx)
        self._block = self._chunks = None
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
