"""One federated loop, written once; techniques plug in through small hooks.

A round of :func:`run`:

1. the server samples ``fraction`` of the clients (seeded);
2. with a :class:`~fedlab_utils.core.faults.Faults` model, some of them drop out (they still
   receive the model: downlink bytes and energy are spent);
3. **downlink**: the global state is encoded by ``downlink`` (a :class:`~fedlab_utils.compression.wire.Codec`)
   and every sampled client decodes it -- a lossy downlink really changes what clients train;
4. each client trains locally through the ``trainer`` hook (``local``: epochs, batch size,
   optimizer, precision), with a :class:`ClientTransform` able to act before training, add a
   loss term, act after every step and rewrite the update (pruning masks, FedProx);
5. **uplink**: each update (local − received state) is encoded by ``uplink``; the server
   decodes it; ``len()`` of each payload goes in the ledger.  Updates past the deadline are
   discarded (``late``), non-finite ones rejected (``rejected``), never averaged;
6. ``aggregate`` turns the surviving updates into one (default: FedAvg weighted by each
   client's real number of training samples), and ``server`` applies it (default: plain
   FedAvg, ``global += update``; FedOpt optimizers plug in here).  A round with no surviving
   update keeps the model;
7. the global model is evaluated; FLOPs, bytes, wall time and joules (modelled per client,
   summed) go in a :class:`RoundRecord`; a checkpoint is written every ``checkpoint_every`` rounds.

Steps 3-6 are a :class:`RoundProtocol` (:mod:`fedlab_utils.core.protocol`).
:class:`FedAvgProtocol` is the one above; FedDF with several architectures, logit sharing
(``fedlab_utils.lessons.distillation.federated``) and SplitFed (``fedlab_utils.lessons.parallel.split_learning``) are other
protocols on the same loop, so they get sampling, faults, energy, the meter, progress bars and
checkpoints for free.

Every hook may be given by name (``uplink="q8"``, ``server="fedadam"``, ``aggregate="median"``,
``transform="fedprox:0.01"``, ``trainer="auto"``) or as an import path ``package.module:name``;
:mod:`fedlab_utils.core.registry` resolves them.  The loop imports no lesson module: aggregators live in
:mod:`fedlab_utils.core.aggregators`, server optimizers in :mod:`fedlab_utils.core.servers`, local training in
:mod:`fedlab_utils.core.training`, the vmap trainer in :mod:`fedlab_utils.core.vmap_trainer`.

FedSGD is the same loop with ``LocalTraining(epochs=1, batch_size=None)``: one full-batch step.
The loop is deterministic for a given seed on the CPU, and a run resumed from a checkpoint is
bit-identical to an uninterrupted one.
"""
from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedlab_utils.compression.wire import Codec
from fedlab_utils.core.aggregators.fedavg import Aggregate, fedavg_aggregate
from fedlab_utils.core.callbacks import Callback, Checkpointing, ProgressBar
from fedlab_utils.core.checkpoint import load_checkpoint
from fedlab_utils.core.faults import CLIENT_STATUSES, Faults, RoundWarning, result_is_finite
from fedlab_utils.core.history import ClientRow, History, RoundRecord
from fedlab_utils.core.preflight import check_clients, check_local, check_test
from fedlab_utils.core.protocol import FedAvgProtocol, RoundContext, RoundProtocol
from fedlab_utils.core.servers.fedavg import ServerOptimizer
from fedlab_utils.core.training import (
    ClientResult,
    ClientTrainer,
    ClientTransform,
    LocalTraining,
)
from fedlab_utils.data import ClientData
from fedlab_utils.ledger.energy import Energy, EnergyMeter, EnergyProfile, get_profile
from fedlab_utils.validation import check_choice, check_fraction, check_int, check_optional_path

__all__ = ["run", "sample_clients", "progress_enabled", "ON_CLIENT_ERROR"]

ON_CLIENT_ERROR = ("raise", "skip")


# ----------------------------------------------------------------------------- sampling
def sample_clients(num_clients: int, fraction: float, rng: np.random.Generator) -> list[int]:
    """McMahan et al.'s C: ``max(1, round(C·K))`` distinct clients, sorted."""
    m = max(1, int(round(fraction * num_clients)))
    return sorted(rng.choice(num_clients, size=m, replace=False).tolist())


def progress_enabled(progress: bool | None) -> bool:
    """Show a progress bar? An explicit ``progress`` wins; else ``FEDLAB_PROGRESS`` (``0`` hides bars)."""
    if progress is not None:
        return progress
    return os.environ.get("FEDLAB_PROGRESS", "1") != "0"


# ----------------------------------------------------------------------------- the loop
def run(model: nn.Module | None, clients: Sequence[ClientData], test: tuple[torch.Tensor, torch.Tensor], *,
        rounds: int, fraction: float = 1.0, local: LocalTraining = LocalTraining(), seed: int = 0,
        uplink: Codec | str | None = None, downlink: Codec | str | None = None,
        transform: ClientTransform | str | None = None, server: ServerOptimizer | str | None = None,
        aggregate: Aggregate | str = fedavg_aggregate,
        trainer: ClientTrainer | str | None = None, energy_profile: str | EnergyProfile = "phone-lte",
        label: str | None = None, progress: bool | None = None, eval_every: int = 1,
        protocol: RoundProtocol | None = None, faults: Faults | None = None, on_client_error: str = "raise",
        checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 1, resume: bool = False,
        callbacks: Sequence[Callback] = ()) -> History:
    """Run federated training and return its :class:`History` (the trained model is ``history.model``).

    ``model`` is copied, so the same initial model can start several runs for a fair comparison.
    ``clients`` is a list of ``ClientData(x, y)`` (:func:`fedlab_utils.data.client_data`), their data
    already on the device the model should train on; ``test`` is ``(x_test, y_test)``; ``local`` a
    :class:`LocalTraining` or a dict of its fields.  Integers and reals may be numpy scalars.

    What can be checked before round 1 is checked then, and reported as a ``ValueError`` naming the
    argument (``clients``, ``test``, ``local``, ``trainer``, ``model``; see
    :mod:`fedlab_utils.core.preflight`): the model makes one forward pass on one sample of the first
    client and of ``test``.

    A sampled client with no samples takes no part: it sends and receives nothing and is charged
    nothing (status ``"empty"`` in ``RoundRecord.client_rows``).  A round in which no update is
    accepted keeps the model and emits one :class:`~fedlab_utils.core.faults.RoundWarning` with the
    counts, and so does a run that ends with no accepted update at all.

    ``eval_every``: the global model is tested after every ``eval_every``-th round and after the
    last; a round that was not tested has accuracy and loss NaN (``History.evaluated_rounds``).

    * ``protocol``: a :class:`RoundProtocol` instead of FedAvg's steps (then ``model`` is
      ``None`` and ``uplink``/``downlink``/``transform``/``server``/``aggregate``/``trainer``
      are not used);
    * ``uplink``/``downlink``/``transform``/``server``/``aggregate``: a part, or its name in
      :mod:`fedlab_utils.core.registry` (``uplink="ef:topk:0.01"``, ``server="fedadam:0.1"``,
      ``aggregate="median"``, ``transform="fedprox:0.01"``) or an import path ``package.module:name``;
    * ``trainer``: a :class:`ClientTrainer`, or ``'sequential'``, ``'vmap'`` or ``'auto'`` (the vmap
      trainer when it supports the model and ``local``, else sequential; see
      :func:`fedlab_utils.core.registry.resolve_trainer`); ``History.config['trainer']`` says which ran;
    * ``faults``: a :class:`~fedlab_utils.core.faults.Faults` model of dropouts and stragglers;
    * ``on_client_error``: ``'raise'`` (default: the error names the client and round; when every
      client of a round raised, it says the setup is the likely cause) or ``'skip'`` (the client is
      listed in ``RoundRecord.failed`` and the round goes on);
    * ``checkpoint``: a file written atomically every ``checkpoint_every`` rounds and after the
      last; with ``resume=True`` the run continues from it (from round 1 if it does not exist
      yet).  A checkpoint of another configuration (any setting of any part) is refused, naming
      what differs.

    * ``callbacks``: :class:`~fedlab_utils.core.callbacks.Callback` objects called at the start and
      end of the run and of every round, the end with the round's complete :class:`RoundRecord`
      (the progress bar and the checkpoints are callbacks too).

    Stateful hooks (error-feedback residuals, server momentum) are reset at the start of a run
    and restored from the checkpoint on resume.
    """
    rounds = check_int("rounds", rounds, 1)  # numpy integers and reals become plain ones (JSON config)
    checked_fraction = check_fraction("fraction", fraction)
    fraction = fraction if type(fraction) in (int, float) else checked_fraction
    seed = check_int("seed", seed, 0)
    eval_every = check_int("eval_every", eval_every, 1)
    checkpoint_every = check_int("checkpoint_every", checkpoint_every, 1)
    check_choice("on_client_error", on_client_error, ON_CLIENT_ERROR)
    check_optional_path("checkpoint", None if checkpoint is None else os.fspath(checkpoint))
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=PATH (the file to resume from)")
    if faults is not None and not isinstance(faults, Faults):
        raise ValueError(f"faults={faults!r} is not valid; pass a fedlab_utils.core.faults.Faults(...) or None")
    clients, test, local = check_clients(clients), check_test(test), check_local(local)
    if protocol is None:
        if model is None:
            raise ValueError("model=None needs protocol=...; pass the initial model to train with FedAvg")
        protocol = FedAvgProtocol(model, uplink=uplink, downlink=downlink, transform=transform, server=server,
                                  aggregate=aggregate, trainer=trainer, local=local)
    elif any(v is not None for v in (uplink, downlink, transform, server, trainer)) or aggregate is not fedavg_aggregate:
        raise ValueError("protocol= replaces FedAvg's uplink/downlink/transform/server/aggregate/trainer hooks; "
                         "configure the protocol instead")
    label = label or protocol.label
    profile = get_profile(energy_profile)
    device = clients[0].x.device
    meter = EnergyMeter(device)
    protocol.setup(RoundContext(clients, (test[0].to(device), test[1].to(device)), local, seed, device,
                                tuple(clients[0].x.shape[1:]), late=None if faults is None else faults.late_rule(profile)))
    config = {"rounds": rounds, "fraction": fraction, "num_clients": len(clients), "seed": seed,
              "client_sizes": [len(c) for c in clients], "eval_every": eval_every,
              "local": {k: (v if not callable(v) else getattr(v, "__name__", repr(v))) for k, v in asdict(local).items()},
              "faults": None if faults is None else asdict(faults), "on_client_error": on_client_error,
              "energy_profile": profile.to_dict(), "device": str(device), **protocol.config()}
    history = History(label, profile=profile, meter=meter.source, config=config)
    start_round = 1
    empty = frozenset(i for i, n in enumerate(config["client_sizes"]) if n == 0)
    identity = {**{k: v for k, v in config.items() if k not in ("rounds", "device")}, "parts": protocol.identity()}
    if checkpoint is not None:
        protocol.state_dict()  # a stateful part that cannot be saved is refused now, not after round 1 trained
    if resume and checkpoint is not None and Path(checkpoint).exists():
        saved = load_checkpoint(checkpoint, identity, map_location=device)
        protocol.load_state_dict(saved["state"])
        history.records = History.from_dict(saved["history"]).records
        start_round = saved["round"] + 1
    hooks: list[Callback] = [ProgressBar(label, start_round, rounds, progress_enabled(progress))]
    if checkpoint is not None:
        hooks.append(Checkpointing(checkpoint, checkpoint_every, rounds, identity, protocol.state_dict))
    hooks += list(callbacks)
    for hook in hooks:
        hook.on_run_start(history)
    for round_idx in range(start_round, rounds + 1):
        for hook in hooks:
            hook.on_round_start(round_idx, history)
        started, joules_before = time.perf_counter(), meter.read()
        ledger = _play_round(protocol, round_idx, len(clients), fraction, seed, faults, profile, on_client_error,
                             empty)
        evaluated = round_idx % eval_every == 0 or round_idx == rounds
        # a round that was not evaluated keeps accuracy and loss NaN
        accuracy, loss, metrics = protocol.evaluate() if evaluated else (float("nan"), float("nan"), {})
        joules_after = meter.read()
        record = RoundRecord(**ledger, accuracy=accuracy, loss=loss, metrics=metrics, evaluated=evaluated,
                             wall_time_s=time.perf_counter() - started,
                             measured_joules=(None if joules_before is None or joules_after is None
                                              else joules_after - joules_before))
        history.records.append(record)
        for hook in hooks:
            hook.on_round_end(record, history)
    history.model = protocol.final_model()
    for hook in hooks:
        hook.on_run_end(history)
    rows = [row for r in history.records for row in r.client_rows]
    if history.records and not any(row.status == "accepted" for row in rows):
        n = len(history.records)
        warnings.warn(f"the run ended without any accepted client update in {n} round{'s' * (n != 1)}, so the model "
                      f"is the initial one (client-rounds: {_status_counts(rows)})", RoundWarning, stacklevel=2)
    return history


def _play_round(protocol: RoundProtocol, round_idx: int, num_clients: int, fraction: float, seed: int,
                faults: Faults | None, profile: EnergyProfile, on_client_error: str,
                empty: frozenset[int] = frozenset()) -> dict:
    """Sampling, faults, the protocol's steps, and the round's ledger: every :class:`RoundRecord` field
    but the evaluation, the wall time and the measured joules, which :func:`run` adds.

    A sampled client in ``empty`` (no samples) is neither trained nor charged: its row says ``"empty"``
    with no bytes, FLOPs or joules.  A round without an accepted update warns (:class:`RoundWarning`)."""
    selected = sample_clients(num_clients, fraction, np.random.default_rng([seed, round_idx]))
    present = [c for c in selected if c not in empty] if empty else selected
    dropped = faults.dropped(round_idx, present) if faults is not None else []
    down = protocol.broadcast(round_idx, selected)
    active = [c for c in present if c not in set(dropped)]
    outcomes = protocol.train(round_idx, active)
    errors = [o for o in outcomes if isinstance(o, Exception)]
    if on_client_error == "raise" and len(active) > 1 and len(errors) == len(outcomes):
        raise _naming_client(errors[0], active[0], round_idx, every=len(active)) from errors[0]
    rows: list[ClientRow] = []
    accepted, seconds = [], []
    for cid in selected:
        if cid in empty:
            rows.append(_row(cid, "empty", profile, 0))
    for cid in dropped:
        rows.append(_row(cid, "dropped", profile, down[cid]))
    for cid, out in zip(active, outcomes):
        if isinstance(out, Exception):
            if on_client_error == "raise":
                raise _naming_client(out, cid, round_idx) from out
            rows.append(_row(cid, "failed", profile, down[cid]))
            continue
        bytes_down = down[cid] + out.bytes_down
        t = faults.result_seconds(cid, round_idx, out, down[cid], profile) if faults is not None else None
        if faults is not None and t is not None and faults.is_late(t):
            status = "late"
        elif not result_is_finite(out):
            status = "rejected"
        else:
            status = "accepted"
            accepted.append(out)
        if status != "late" and t is not None:
            seconds.append(t)
        rows.append(_row(cid, status, profile, bytes_down, out, t))
    server_flops = protocol.aggregate(round_idx, accepted) if accepted else 0
    rows.sort(key=lambda r: r.client_id)
    status_of = {s: [r.client_id for r in rows if r.status == s] for s in ("dropped", "late", "rejected", "failed")}
    sim_time = None
    if faults is not None:
        deadline = faults.deadline_s
        waited = status_of["late"] or status_of["dropped"] or status_of["failed"]  # for someone who never came
        sim_time = float(deadline) if deadline is not None and waited else float(max(seconds, default=0.0))
    if selected and not accepted:
        warnings.warn(f"round {round_idx}: no client update was accepted, so the model is unchanged "
                      f"(of {len(selected)} sampled clients: {_status_counts(rows)})", RoundWarning, stacklevel=3)
    losses = [o.train_loss for o in accepted if np.isfinite(o.train_loss)]
    return dict(
        round=round_idx, clients=selected, train_loss=float(np.mean(losses)) if losses else float("nan"),
        bytes_up=int(sum(r.bytes_up for r in rows)), bytes_down=int(sum(r.bytes_down for r in rows)),
        client_flops=int(sum(r.flops for r in rows)), energy=sum((r.energy for r in rows), Energy()),
        sim_time_s=sim_time, wasted_joules=float(sum(r.energy.total for r in rows if r.status != "accepted")),
        server_flops=int(server_flops), client_rows=rows, **status_of)


def _status_counts(rows: list[ClientRow]) -> str:
    """``'3 dropped, 1 failed'``: how many client rows had each status, in :data:`CLIENT_STATUSES` order."""
    counts = {s: sum(1 for row in rows if row.status == s) for s in CLIENT_STATUSES}
    return ", ".join(f"{n} {'empty (no samples)' if s == 'empty' else s}" for s, n in counts.items() if n) or "none"


def _naming_client(error: Exception, cid: int, round_idx: int, every: int = 0) -> Exception:
    """``error`` again, of the same type where it can be rebuilt, with a message naming the client.

    ``every``: the number of clients of the round when all of them raised: then the setup (model,
    trainer, local training, the data's format) is the likely cause, and skipping clients is no fix."""
    if every:
        message = (f"every one of the {every} clients trained in round {round_idx} raised; client {cid}: "
                   f"{type(error).__name__}: {error} (when every client fails, check the setup -- model, trainer, "
                   f"local, transform -- rather than skip clients)")
    else:
        message = (f"client {cid} raised in round {round_idx}: {type(error).__name__}: {error} "
                   f"(pass on_client_error='skip' to leave a failing client out of its round)")
    try:
        return type(error)(message)
    except Exception:  # noqa: BLE001 -- an exception class with another constructor
        return RuntimeError(message)


def _row(cid: int, status: str, profile: EnergyProfile, bytes_down: int, out: ClientResult | None = None,
         seconds: float | None = None) -> ClientRow:
    """One client's line of a round: what it sent, received and computed, and the modelled joules of
    that one client-round (a dropped or failed client only paid for the download)."""
    up, flops = (out.bytes_up, out.flops) if out is not None else (0, 0)
    return ClientRow(client_id=cid, status=status, bytes_up=int(up), bytes_down=int(bytes_down), flops=int(flops),
                     samples_processed=0 if out is None else int(out.samples_processed),
                     train_loss=float("nan") if out is None else float(out.train_loss), sim_time_s=seconds,
                     energy=profile.energy(flops, up, bytes_down))
