"""FedAvg's stacked fast path: a round's updates taken from a trainer in blocks of stacked rows,
sent through the uplink and folded into the average block by block, so memory holds one block.

:class:`StackedFedAvg` is the strategy :class:`~fedlab_utils.core.protocol.FedAvgProtocol` uses
when the parts declare what it needs (:func:`stacked_path_applies`), never by their concrete types:

* the trainer offers blocks: ``train_stacked`` (:class:`~fedlab_utils.core.vmap_trainer.VmapTrainer`,
  returning :class:`~fedlab_utils.core.training.StackedUpdates`) and, to split a large round,
  ``stack_slices``;
* the uplink folds (:func:`~fedlab_utils.compression.wire.folds`): its decoded updates may be
  averaged in any grouping;
* the transform leaves updates as they are (it does not override ``ClientTransform.on_update``);
* the aggregate declares ``weighted_by_samples`` (FedAvg's mean weighted by each client's samples).

Two ways through a round, both giving what the per-client path gives:

* an uplink whose payload is the rows themselves (``rows_are_payload``, the fp32 codec): each
  client's payload is its rows as zero-copy byte views, and the block is averaged with one weighted
  sum per tensor (up to float rounding of the sum's order); a round over several stacks keeps one
  partial sum per stack, of its clients that are finite and on time (the run's deadline rule,
  ``late``, is known as soon as a client's result is), so no stack is ever trained twice;
* any other uplink that folds: each client's update (exactly the per-client path's) is encoded in
  client order, decoded, and added to one running weighted sum in client order
  (:func:`~fedlab_utils.compression.wire.fold_rows`, in native loops for the built-in quantizer,
  top-k and error feedback), the same float operations as
  :func:`~fedlab_utils.core.aggregators.fedavg.weighted_average`, so the model is bit for bit the
  per-client path's.  Each payload is kept (its compressed size) until aggregation, so that a
  round in which a client is left out after being folded (late past a deadline) is averaged again
  over its survivors from their payloads, without encoding again.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn

from fedlab_utils.compression.wire import Codec, Update, finite_rows, flatten, fold_rows, folds, unflatten
from fedlab_utils.core.training import ClientResult, ClientTransform, StackedUpdates
from fedlab_utils.data import ClientData

__all__ = ["StackedFedAvg", "stacked_path_applies", "rewrites_updates", "ROWS_PER_ENCODE"]

#: Clients encoded together on the folding path: their rows are copied out of the block (16 rows of
#: the course's MLP: 3.3 MB, small enough to be reused by the allocator rather than faulted in).
ROWS_PER_ENCODE = 16


def rewrites_updates(transform: ClientTransform) -> bool:
    """Whether ``transform`` changes updates before they are encoded (overrides ``on_update``)."""
    return type(transform).on_update is not ClientTransform.on_update


def stacked_path_applies(trainer: object, uplink: Codec, transform: ClientTransform, aggregate: object) -> bool:
    """Whether the parts declare everything :class:`StackedFedAvg` needs (see the module's docstring)."""
    return (callable(getattr(trainer, "train_stacked", None)) and folds(uplink) and not rewrites_updates(transform)
            and bool(getattr(aggregate, "weighted_by_samples", False)))


@dataclass
class _Views:
    """A round trained in one stack and sent as zero-copy views: the block, each client's row, and
    the average of every client (``None`` when not all are finite)."""

    block: StackedUpdates
    row_of: dict[int, int]
    average: Update | None


@dataclass
class _Partials:
    """A round trained in several stacks and sent as zero-copy views: per stack its clients, its
    partial weighted sum and the clients that contributed to it."""

    round_idx: int
    total: float
    parts: list[tuple[list[int], Update, set[int]]] = field(default_factory=list)


@dataclass
class _Folded:
    """A round encoded and folded client by client: the running weighted sum (flat), the clients
    in it in order, the total of samples it is weighted by, and every sent payload."""

    total: float
    average: torch.Tensor | int = 0
    order: list[int] = field(default_factory=list)
    payloads: dict[int, bytes] = field(default_factory=dict)


Trained = list[tuple[Update, float, int] | Exception]


class StackedFedAvg:
    """The stacked fast path of one FedAvg protocol; :meth:`train` plays a round's local training
    and uplink, :meth:`average` the round's FedAvg of the surviving clients.

    ``per_client(round_idx, clients)`` trains clients through the trainer's ordinary call, each
    client's outcome or exception (the path for a stack the trainer gives no block for or that
    raised); ``flops_per_sample(model)`` is the protocol's FLOP count; ``late`` the run's deadline
    rule (:attr:`~fedlab_utils.core.protocol.RoundContext.late`)."""

    def __init__(self, trainer, uplink: Codec, transform: ClientTransform,
                 per_client: Callable[[int, list[int]], Trained], flops_per_sample: Callable[[nn.Module], int],
                 late: Callable[[int, int, ClientResult, int], bool] | None = None):
        self.trainer, self.uplink, self.transform = trainer, uplink, transform
        self.per_client, self.flops_per_sample, self.late = per_client, flops_per_sample, late
        self.views = bool(getattr(uplink, "rows_are_payload", False))
        self._buffer: torch.Tensor | None = None  # the folded path's batch of rows, reused batch after batch
        self.pending: _Views | _Partials | _Folded | None = None

    # ------------------------------------------------------------------ the round
    def train(self, round_idx: int, clients: list[int], worker: nn.Module, received: Update,
              data: Sequence[ClientData], local, seed: int,
              broadcast_bytes: int = 0) -> list[ClientResult | Exception] | None:
        """One :class:`ClientResult` (or exception) per client, or ``None`` (nothing trained, nothing
        sent) when the trainer offers no block for this round: the per-client path plays it then.
        ``broadcast_bytes``: what each client downloaded before training (for the deadline rule)."""
        self.pending = None
        self._round = (round_idx, worker, received, data, local, seed)
        self._broadcast_bytes = broadcast_bytes
        slicer = getattr(self.trainer, "stack_slices", None)
        slices = slicer(worker, len(clients)) if callable(slicer) else [(0, len(clients))]
        if not self.views:
            return self._folded_uplink(clients, slices)
        try:
            if len(slices) > 1:
                return self._chunked_views(clients, slices)
            block = self._train_slice(clients)
        except Exception:  # noqa: BLE001 -- the per-client path finds the client that raised
            self.pending = None
            return None
        return None if block is None else self._stacked_views(block, clients)

    def average(self, results: list[ClientResult]) -> Update:
        """FedAvg of ``results`` (the round's surviving clients, each with samples), as the per-client
        path's :func:`~fedlab_utils.core.aggregators.fedavg.fedavg_aggregate` computes it."""
        pending, self.pending = self.pending, None
        if isinstance(pending, _Folded):
            return self._folded_average(pending, results)
        if isinstance(pending, _Partials):
            return self._chunked_average(pending, results)
        assert pending is not None, "average() without a round trained on the stacked path"
        return self._stacked_average(pending, results)

    def _train_slice(self, part: list[int]) -> StackedUpdates | None:
        round_idx, worker, received, data, local, seed = self._round
        return self.trainer.train_stacked(worker, received, [(c, data[c]) for c in part], local, round_idx, seed,
                                          self.transform)

    def _fps(self, block: StackedUpdates | None) -> int:
        return (block.flops_per_sample if block is not None else None) or self.flops_per_sample(self._round[1])

    # ------------------------------------------------------------------ encoded and folded client by client
    def _folded_uplink(self, clients: list[int], slices: list[tuple[int, int]]) -> list[ClientResult | Exception]:
        round_idx, _, received, data, _, _ = self._round
        fold = _Folded(total=float(sum(len(data[c]) for c in clients)))
        self.pending = fold
        results: list[ClientResult | Exception] = []
        for start, stop in slices:
            part = clients[start:stop]
            try:
                block = self._train_slice(part)
            except Exception:  # noqa: BLE001 -- the per-client path finds the client that raised
                block = None
            if block is None:
                results += self._send_trained(fold, part, self.per_client(round_idx, part))
                continue
            fps = self._fps(block)
            for first in range(0, len(part), ROWS_PER_ENCODE):
                batch = range(first, min(first + ROWS_PER_ENCODE, len(part)))
                rows = self._rows_of(block, [block.rows[i] for i in batch])
                results += self._send(fold, [part[i] for i in batch], rows, [block.losses[i] for i in batch],
                                      [block.processed[i] for i in batch], fps)
            del block
        return results

    def _rows_of(self, block: StackedUpdates, rows: list[int]) -> torch.Tensor:
        """The block's ``rows`` as flat float32 CPU rows, copied once into a buffer reused batch after
        batch (the codec is done with a batch before the next is copied).  Consecutive rows, as a
        block of clients of equal size has them, are sliced rather than gathered."""
        width = sum(d[0].numel() for d in block.updates.values())
        buffer = self._buffer
        if buffer is None or buffer.shape[1] != width or len(buffer) < len(rows):
            buffer = self._buffer = torch.empty((ROWS_PER_ENCODE, width), dtype=torch.float32)
        out = buffer[:len(rows)]
        on_cpu = all(d.device.type == "cpu" and d.dtype == torch.float32 for d in block.updates.values())
        if on_cpu and rows == list(range(rows[0], rows[0] + len(rows))):
            parts = [d[rows[0]:rows[0] + len(rows)].reshape(len(rows), -1) for d in block.updates.values()]
        else:
            index = torch.tensor(rows, device=next(iter(block.updates.values())).device)
            parts = [d.index_select(0, index).reshape(len(rows), -1).to("cpu", torch.float32)
                     for d in block.updates.values()]
        return torch.cat(parts, dim=1, out=out)

    def _send_trained(self, fold: _Folded, part: list[int], trained: Trained) -> list[ClientResult | Exception]:
        """The clients of a stack trained one by one: each update goes through :meth:`_send` like a
        block's rows."""
        out: list[ClientResult | Exception] = []
        fps = self._fps(None)
        for cid, outcome in zip(part, trained):
            if isinstance(outcome, Exception):
                out.append(outcome)
                continue
            update, loss, processed = outcome
            row = flatten(update).unsqueeze(0)
            out += self._send(fold, [cid], row, [loss], [processed], fps)
        return out

    def _send(self, fold: _Folded, ids: list[int], rows: torch.Tensor, losses: list[float], processed: list[int],
              fps: int) -> list[ClientResult | Exception]:
        """Encode the finite rows in client order and fold each decoded finite update into the running
        sum (:func:`~fedlab_utils.compression.wire.fold_rows`)."""
        data, received = self._round[3], self._round[2]
        finite = finite_rows(rows)
        sent = [i for i, ok in enumerate(finite) if ok]  # a non-finite update is never encoded
        outcome: dict[int, tuple[bytes | Exception, bool]] = {}
        if sent:
            sending = rows if len(sent) == len(rows) else rows[sent]
            if not isinstance(fold.average, torch.Tensor):
                fold.average = torch.zeros(rows.shape[1], dtype=torch.float32)  # 0 + the first term, as sum() starts
            weights = torch.tensor([len(data[ids[i]]) / fold.total for i in sent], dtype=torch.float32)
            payloads, folded = fold_rows(self.uplink, sending, [ids[i] for i in sent], received, weights, fold.average)
            outcome = {i: (payloads[j], folded[j]) for j, i in enumerate(sent)}
        out: list[ClientResult | Exception] = []
        for i, cid in enumerate(ids):
            payload, ok = outcome.get(i, (b"", False))
            if isinstance(payload, Exception):
                out.append(payload)
                continue
            if ok:
                fold.order.append(cid)
                fold.payloads[cid] = payload
            out.append(ClientResult(cid, len(data[cid]), None, losses[i], processed[i], len(payload), 0,
                                    fps * processed[i], finite=ok))
        return out

    def _folded_average(self, fold: _Folded, results: list[ClientResult]) -> Update:
        received = self._round[2]
        if [r.client_id for r in results] == fold.order and float(sum(r.num_samples for r in results)) == fold.total:
            average = fold.average
        else:  # a client was left out after it was folded: average the survivors again from their payloads
            total, average = float(sum(r.num_samples for r in results)), 0
            for r in results:
                values = flatten(self.uplink.decode(fold.payloads[r.client_id], received))
                average = average + float(r.num_samples) / total * values
        assert isinstance(average, torch.Tensor)
        return unflatten(average, received)

    # ------------------------------------------------------------------ fp32 rows sent as they lie
    def _stacked_views(self, block: StackedUpdates, clients: list[int]) -> list[ClientResult | Exception]:
        """The fp32 uplink read straight from one block, without per-client copies.

        A client's payload is its row of every tensor, in state-dict order, as a list of zero-copy
        byte views (what a vectored send such as ``socket.sendmsg`` transmits): byte for byte the fp32
        codec's payload, its ``len()`` counted as everywhere; the server reads the decoded update as
        views of the same rows.  A non-finite update is not sent (0 bytes)."""
        data = self._round[3]
        deltas, k = block.updates, len(clients)
        wire = {key: (d if d.device.type == "cpu" else d.cpu()).reshape(k, -1).numpy() for key, d in deltas.items()}
        order = sorted(range(k), key=lambda i: block.rows[i])  # row -> the caller's position
        # FedAvg of every client (what the server needs when no update is dropped, late or rejected),
        # which also tells whether all updates are finite: a NaN/inf anywhere makes the average non-finite.
        weights = torch.tensor([float(len(data[clients[i]])) for i in order],
                               dtype=torch.float32, device=next(iter(deltas.values())).device)
        average = None
        if float(weights.sum()) > 0:
            average = {key: torch.tensordot(weights / weights.sum(), d, dims=1) for key, d in deltas.items()}
            if not all(bool(torch.isfinite(a).all()) for a in average.values()):
                average = None
        finite = [True] * k if average is not None else _finite_rows(deltas, k)
        fps = self._fps(block)
        results: list[ClientResult | Exception] = []
        for i, cid in enumerate(clients):
            row, processed = block.rows[i], block.processed[i]
            update = {key: d[row] for key, d in deltas.items()}
            ok = finite[row] or _row_finite(deltas, row)  # a row's sum can overflow
            payload = [memoryview(w[row]).cast("B") for w in wire.values()] if ok else []
            results.append(ClientResult(cid, len(data[cid]), update, block.losses[i], processed,
                                        sum(len(part) for part in payload), 0, fps * processed, finite=ok))
        self.pending = _Views(block, {cid: block.rows[i] for i, cid in enumerate(clients)}, average)
        return results

    def _stacked_average(self, views: _Views, results: list[ClientResult]) -> Update:
        """FedAvg of the surviving clients' rows of this round's block: one weighted sum per tensor."""
        rows = [views.row_of[r.client_id] for r in results]
        if views.average is not None and sorted(rows) == list(range(len(views.row_of))):
            return dict(views.average)  # every client survived: computed with the uplink
        stack = next(iter(views.block.updates.values()))
        weights = torch.tensor([float(r.num_samples) for r in results], dtype=torch.float32, device=stack.device)
        index = torch.tensor(rows, device=stack.device)
        return {key: torch.tensordot(weights / weights.sum(), d[index], dims=1)
                for key, d in views.block.updates.items()}

    def _fold_views(self, block: StackedUpdates, part: list[int], total: float,
                    keep: set[int] | None = None) -> tuple[Update, list[bool]]:
        """One block's share of FedAvg: ``Σ nᵢ/total · Δᵢ`` over its finite rows (of the clients in
        ``keep``, or all), and whether each of ``part``'s updates is finite.  A non-finite row is zeroed
        in the block (the trainer writes every row again at its next call) so it cannot reach the sum."""
        data = self._round[3]
        deltas, k = block.updates, len(part)
        device = next(iter(deltas.values())).device
        share = [0.0] * k
        for i, cid in enumerate(part):
            if keep is None or cid in keep:
                share[block.rows[i]] = len(data[cid]) / total
        weights = torch.tensor(share, dtype=torch.float32, device=device)
        partial = {key: torch.tensordot(weights, d, dims=1) for key, d in deltas.items()}
        if all(bool(torch.isfinite(p).all()) for p in partial.values()):  # a NaN/inf in any row would show here
            return partial, [True] * k
        finite = _finite_rows(deltas, k)
        ok = [finite[block.rows[i]] or _row_finite(deltas, block.rows[i]) for i in range(k)]
        for i in range(k):
            if not ok[i]:
                weights[block.rows[i]] = 0.0
                for d in deltas.values():
                    d[block.rows[i]].zero_()
        return {key: torch.tensordot(weights, d, dims=1) for key, d in deltas.items()}, ok

    def _chunked_views(self, clients: list[int], slices: list[tuple[int, int]]) -> list[ClientResult | Exception] | None:
        """The fp32 uplink of a round larger than one stack: the trainer's blocks, one slice of clients
        at a time, each folded into a partial weighted sum and dropped before the next is trained.

        Each client's payload is its rows as zero-copy byte views, as in :meth:`_stacked_views`; its
        ``ClientResult.update`` is ``None`` (the update is already in its slice's partial sum).  ``None``
        (nothing trained) when the trainer offers no block."""
        round_idx, data = self._round[0], self._round[3]
        chunks = _Partials(round_idx, float(sum(len(data[c]) for c in clients)))
        results: list[ClientResult | Exception] = []
        for start, stop in slices:
            part = clients[start:stop]
            block = self._train_slice(part)
            if block is None:
                if not chunks.parts:
                    return None
                raise RuntimeError(f"the trainer gave no block for clients {start}..{stop - 1} of round {round_idx}")
            partial, ok = self._fold_views(block, part, max(chunks.total, 1.0))
            fps = self._fps(block)
            wire = [(d if d.device.type == "cpu" else d.cpu()).reshape(len(part), -1).numpy()
                    for d in block.updates.values()]
            sent: list[ClientResult] = []
            for i, cid in enumerate(part):
                n, processed = len(data[cid]), block.processed[i]
                payload = [memoryview(w[block.rows[i]]).cast("B") for w in wire] if ok[i] and n else []
                sent.append(ClientResult(cid, n, None, block.losses[i], processed,
                                         sum(len(view) for view in payload), 0, fps * processed, finite=ok[i]))
            contributors = {r.client_id for r, good in zip(sent, ok) if good and r.num_samples}
            late = {r.client_id for r in sent if r.client_id in contributors and self.late is not None
                    and self.late(r.client_id, round_idx, r, self._broadcast_bytes)}
            if late:  # past the deadline: the server never averages them, so neither does the partial sum
                contributors -= late
                partial = self._fold_views(block, part, max(chunks.total, 1.0), contributors)[0]
            results += sent
            chunks.parts.append((part, partial, contributors))
            del block, wire, payload, partial  # the trainer trains the next slice in the same buffers
        self.pending = chunks
        return results

    def _chunked_average(self, chunks: _Partials, results: list[ClientResult]) -> Update:
        """FedAvg of the surviving clients of a round trained in several stacks: the slices' partial
        sums, added in slice order and rescaled to the survivors' samples.  Each partial sum holds
        exactly the clients the server accepts (finite, on time), so ``results`` must be those."""
        keep = {r.client_id for r in results}
        update: Update | None = None
        for part, partial, contributors in chunks.parts:
            if contributors != keep & set(part):
                raise RuntimeError(
                    f"round {chunks.round_idx}: the stacked fast path folded clients {sorted(contributors)} of "
                    f"this stack into its sum, but the accepted ones are {sorted(keep & set(part))}; its sums "
                    "follow the run's deadline rule (RoundContext.late), so a caller that leaves clients out by "
                    "another rule must use the per-client path")
            update = {key: p.clone() for key, p in partial.items()} if update is None else \
                {key: update[key].add_(partial[key]) for key in update}
        assert update is not None
        kept = float(sum(r.num_samples for r in results))
        if kept != chunks.total:
            update = {key: u.mul_(chunks.total / kept) for key, u in update.items()}
        return update


def _finite_rows(deltas: dict[str, torch.Tensor], k: int) -> list[bool]:
    """Per row of a block, whether the sum of its values is finite: a NaN/inf makes it not, and so
    may an overflow of finite values, which :func:`_row_finite` settles."""
    total = sum(d.reshape(k, -1).sum(1) for d in deltas.values())
    return torch.isfinite(cast(torch.Tensor, total)).tolist()


def _row_finite(deltas: dict[str, torch.Tensor], row: int) -> bool:
    return all(bool(torch.isfinite(d[row]).all()) for d in deltas.values())
