"""What a run measured, round by round: :class:`RoundRecord` lines gathered in a :class:`History`.

Every record sums over the round's sampled clients, and keeps one row per client
(``client_rows``: its status, bytes, FLOPs, joules and simulated seconds), so a run can be
re-cut afterwards -- :meth:`History.split` gives one History per group of clients (FedDF with
several architectures uses it).  ``to_dict``/``from_dict`` round-trip through JSON exactly.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import cast

import numpy as np
from torch import nn

from fedlab_utils.i18n import N_, gettext
from fedlab_utils.ledger.energy import Energy, EnergyProfile, RadioModel
from fedlab_utils.seeds import confidence_band, labelled

__all__ = ["ClientRow", "RoundRecord", "History", "summary_table", "seeds_summary",
           "rounds_to_target", "joules_to_target"]


@dataclass
class ClientRow:
    """One sampled client's line of a round: what became of it (``status``, one of
    :data:`~fedlab_utils.core.faults.CLIENT_STATUSES`), what it sent and received (bytes), what it
    computed (``flops``, over ``samples_processed`` training samples, every epoch counted), its mean
    training loss, its simulated seconds (``None`` without a fault model) and the modelled joules of
    that one client-round.  Fields read by name as well (``row["status"]``), as every consumer of
    ``RoundRecord.client_rows`` does."""

    client_id: int
    status: str
    bytes_up: int
    bytes_down: int
    flops: int
    samples_processed: int
    train_loss: float
    sim_time_s: float | None
    energy: Energy

    def __getitem__(self, name: str):
        if name not in _ROW_FIELDS:
            raise KeyError(name)
        return getattr(self, name)

    @classmethod
    def from_dict(cls, d: dict) -> "ClientRow":
        """The row :meth:`RoundRecord.to_dict` wrote (energy as a dict)."""
        values = {k: v for k, v in d.items() if k in _ROW_FIELDS}
        if "samples_processed" not in values and "samples" in d:  # a History written before the field had its name
            values["samples_processed"] = d["samples"]
        energy = values["energy"]
        return cls(**{**values, "energy": energy if isinstance(energy, Energy) else Energy(**energy)})


_ROW_FIELDS = frozenset(f.name for f in fields(ClientRow))


@dataclass
class RoundRecord:
    """The ledger line of one round (sums over the sampled clients).

    ``dropped``: clients that received the model but sent nothing back; ``late``: updates
    that arrived after the deadline and were discarded; ``rejected``: non-finite updates;
    ``failed``: clients whose training raised (with ``on_client_error='skip'``).
    ``sim_time_s`` is the simulated round duration (the slowest accepted client, or the
    deadline when the server waited for it; ``None`` without a fault model) and
    ``wasted_joules`` the modelled energy of work the server threw away.  ``metrics`` holds
    extra evaluation results a protocol reports (e.g. one accuracy per architecture).
    ``evaluated`` says whether the global model was tested after this round (``run``'s
    ``eval_every``); a round that was not has ``accuracy`` and ``loss`` NaN.  A sampled client
    without samples appears only in ``client_rows``, with status ``"empty"`` and nothing charged.
    """

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
    dropped: list[int] = field(default_factory=list)
    late: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    sim_time_s: float | None = None
    wasted_joules: float = 0.0
    server_flops: int = 0
    metrics: dict = field(default_factory=dict)
    client_rows: list[ClientRow] = field(default_factory=list, repr=False)
    evaluated: bool = True

    def to_dict(self) -> dict:
        d = asdict(self)
        d["energy"] = asdict(self.energy)
        for row in d["client_rows"]:
            row["energy"] = asdict(row["energy"]) if isinstance(row["energy"], Energy) else row["energy"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RoundRecord":
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        d["energy"] = Energy(**d["energy"])
        d["client_rows"] = [ClientRow.from_dict(row) for row in d.get("client_rows", [])]
        return cls(**d)


def _profile_from(name: str, values: dict | None) -> EnergyProfile | str:
    """The EnergyProfile that :meth:`History.to_dict` wrote: rebuilt from its values (a custom
    ``dataclasses.replace``-d profile stays itself), or the bare name when there are none."""
    if not values:
        return name
    radio = values["radio"]
    radio = RadioModel(**{f.name: radio[f.name] for f in fields(RadioModel) if f.name in radio})
    return EnergyProfile(**{f.name: values[f.name] for f in fields(EnergyProfile) if f.name in values and
                            f.name != "radio"}, radio=radio)


@dataclass
class History:
    """Everything a run measured, round by round, plus the final global model.

    ``history.accuracy`` is a list per round, NaN for a round that was not evaluated
    (``evaluated_rounds`` lists those that were); ``final_accuracy`` is the last evaluated one.
    ``totals()``, ``rounds_to_accuracy(t)`` and
    ``summary()`` answer the usual questions; ``to_dict()`` is JSON-ready.  ``profile`` is the
    :class:`~fedlab_utils.ledger.EnergyProfile` the joules were modelled with (the object, so
    a ``dataclasses.replace``-d profile is never confused with the stock one of its name).
    """

    label: str
    records: list[RoundRecord] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    profile: EnergyProfile | str = "phone-lte"
    meter: str = "not available"
    model: nn.Module | None = field(default=None, repr=False)

    @property
    def profile_name(self) -> str:
        return getattr(self.profile, "name", str(self.profile))

    # per-round series -------------------------------------------------------
    @property
    def rounds(self) -> list[int]:
        return [r.round for r in self.records]

    @property
    def accuracy(self) -> list[float]:
        """Test accuracy per round; NaN for a round that was not evaluated."""
        return [r.accuracy for r in self.records]

    @property
    def evaluated_rounds(self) -> list[int]:
        """The rounds after which the global model was tested (every round with ``eval_every=1``)."""
        return [r.round for r in self.records if r.evaluated]

    def evaluated_records(self) -> list[RoundRecord]:
        """The records of the evaluated rounds with a real (not NaN) accuracy, in order: what a
        curve of accuracy against round or bytes should draw."""
        return [r for r in self.records if r.evaluated and np.isfinite(r.accuracy)]

    @property
    def loss(self) -> list[float]:
        return [r.loss for r in self.records]

    def cumulative(self, name: str) -> np.ndarray:
        """Running total of a numeric record field, e.g. ``'bytes_up'``."""
        return np.cumsum([getattr(r, name) for r in self.records])

    # answers ----------------------------------------------------------------
    @property
    def final_accuracy(self) -> float:
        """The accuracy of the last evaluated round (``run`` always evaluates the last one); NaN if none."""
        measured = self.evaluated_records()
        return measured[-1].accuracy if measured else float("nan")

    def best_accuracy(self) -> float:
        """The best accuracy of the evaluated rounds; NaN if none."""
        measured = self.evaluated_records()
        return max(r.accuracy for r in measured) if measured else float("nan")

    def rounds_to_accuracy(self, target: float) -> int | None:
        """First evaluated round (1-based) whose test accuracy is ≥ ``target``; ``None`` if never."""
        return next((r.round for r in self.evaluated_records() if r.accuracy >= target), None)

    def bytes_up_to_accuracy(self, target: float) -> int | None:
        """Cumulative uplink bytes when ``target`` accuracy is first reached; ``None`` if never."""
        rounds = self.rounds_to_accuracy(target)
        return None if rounds is None else int(self.cumulative("bytes_up")[rounds - 1])

    def sim_time_to_accuracy(self, target: float) -> float | None:
        """Simulated seconds (sum of ``sim_time_s``) until ``target`` accuracy; ``None`` if never reached
        or the run had no fault model."""
        rounds = self.rounds_to_accuracy(target)
        times = [r.sim_time_s for r in self.records[:rounds or 0]]
        return None if rounds is None or None in times else float(sum(t for t in times if t is not None))

    def round_energy(self) -> list[Energy]:
        """Each round's modelled joules as the run priced them: every client row by
        :meth:`~fedlab_utils.ledger.EnergyProfile.energy` under the run's profile, summed per round
        (:func:`~fedlab_utils.ledger.price_rows` re-prices a run under another profile)."""
        return [r.energy for r in self.records]

    def energy(self) -> Energy:
        """The run's modelled joules: the sum of :meth:`round_energy`."""
        return sum(self.round_energy(), Energy())

    def totals(self) -> dict:
        e = self.energy()
        measured = [r.measured_joules for r in self.records]
        sim = [r.sim_time_s for r in self.records]
        return {"rounds": len(self.records), "bytes_up": int(sum(r.bytes_up for r in self.records)),
                "bytes_down": int(sum(r.bytes_down for r in self.records)),
                "client_flops": int(sum(r.client_flops for r in self.records)),
                "server_flops": int(sum(r.server_flops for r in self.records)),
                "wall_time_s": float(sum(r.wall_time_s for r in self.records)),
                **{f"joules_{k}": v for k, v in asdict(e).items()}, "joules_total": e.total,
                "measured_joules": None if None in measured else float(sum(j for j in measured if j is not None)),
                "dropped": sum(len(r.dropped) for r in self.records), "late": sum(len(r.late) for r in self.records),
                "rejected": sum(len(r.rejected) for r in self.records),
                "failed": sum(len(r.failed) for r in self.records),
                "sim_time_s": None if None in sim else float(sum(t for t in sim if t is not None)),
                "wasted_joules": float(sum(r.wasted_joules for r in self.records))}

    def summary(self, target: float | None = None) -> dict:
        """One row for a comparison table (MB, GFLOPs, J; accuracy in %).  A run with a fault model (or
        any rejected/failed client) also gets the totals of dropped, late, rejected and failed
        clients, the wasted joules and the simulated time."""
        t = self.totals()
        row = {"run": self.label, "final acc %": 100 * self.final_accuracy, "rounds": t["rounds"],
               "MB up": t["bytes_up"] / 1e6, "MB down": t["bytes_down"] / 1e6,
               "client GFLOPs": t["client_flops"] / 1e9, "J (model)": t["joules_total"],
               "J measured": t["measured_joules"]}
        faults = ("dropped", "late", "rejected", "failed")
        if self.config.get("faults") is not None or any(t[k] for k in faults):  # only where something can go wrong
            row.update({k: t[k] for k in faults})
            row.update({"J wasted": t["wasted_joules"], "sim time s": t["sim_time_s"]})
        if target is not None:
            row[f"rounds to {100 * target:.0f}%"] = self.rounds_to_accuracy(target)
        return row

    # re-cutting ---------------------------------------------------------------
    def split(self, group_of: Callable[[int], str], groups: Sequence[str], label: str | None = None) -> dict[str, "History"]:
        """One History per group of clients (``group_of(client_id)``), each ledgering only its own
        clients' rows; a round where a group had no client is left out of that group's History.
        Accuracy and loss come from ``metrics['accuracy/<group>']`` where the protocol reported them."""
        out = {}
        for g in groups:
            h = History(f"{label or self.label} · {g}", config={**self.config, "group": g}, profile=self.profile,
                        meter=self.meter)
            for r in self.records:
                rows = [row for row in r.client_rows if group_of(row["client_id"]) == g]
                if not rows:
                    continue
                h.records.append(_record_of_rows(r, rows, g))
            out[g] = h
        return out

    # serialisation ----------------------------------------------------------
    def to_dict(self) -> dict:
        profile = (self.profile.to_dict() if isinstance(self.profile, EnergyProfile) else None)
        return {"label": self.label, "config": self.config, "profile": self.profile_name,
                "profile_values": profile, "meter": self.meter, "totals": self.totals(),
                "records": [r.to_dict() for r in self.records]}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        """Rebuild a History (without its model) from :meth:`to_dict`'s output."""
        profile = _profile_from(d.get("profile", "phone-lte"), d.get("profile_values"))
        return cls(d["label"], [RoundRecord.from_dict(r) for r in d["records"]], d.get("config", {}), profile,
                   d.get("meter", "not available"))

    def __repr__(self) -> str:
        if not self.records:
            return gettext("History({label}, no rounds)").format(label=repr(self.label))
        t = self.totals()
        faults = "".join(gettext(_FAULT_COUNTS[k]).format(n=t[k]) for k in _FAULT_COUNTS if t[k])
        return gettext("History({label}: {rounds} rounds, final acc {accuracy:.1f}%, {mb_up:.2f} MB up, "
                       "{gflops:.2f} GFLOPs, {joules:.3g} J modelled [{profile}]{faults})").format(
            label=repr(self.label), rounds=t["rounds"], accuracy=100 * self.final_accuracy,
            mb_up=t["bytes_up"] / 1e6, gflops=t["client_flops"] / 1e9, joules=t["joules_total"],
            profile=self.profile_name, faults=faults)


#: the fault counts a History's repr names, each a whole message (``n`` is the count)
_FAULT_COUNTS = {"dropped": N_(", {n} dropped"), "late": N_(", {n} late"), "rejected": N_(", {n} rejected"),
                 "failed": N_(", {n} failed")}


def _record_of_rows(r: RoundRecord, rows: list[ClientRow], group: str) -> RoundRecord:
    """A group's share of round record ``r``: its clients' rows summed, its own accuracy."""
    by_status = {s: [row["client_id"] for row in rows if row["status"] == s]
                 for s in ("dropped", "late", "rejected", "failed")}
    losses = [row["train_loss"] for row in rows if row["status"] == "accepted" and np.isfinite(row["train_loss"])]
    return replace(
        r, clients=[row["client_id"] for row in rows], accuracy=r.metrics.get(f"accuracy/{group}", r.accuracy),
        loss=r.metrics.get(f"loss/{group}", r.loss), train_loss=float(np.mean(losses)) if losses else float("nan"),
        bytes_up=int(sum(row["bytes_up"] for row in rows)), bytes_down=int(sum(row["bytes_down"] for row in rows)),
        client_flops=int(sum(row["flops"] for row in rows)), energy=sum((row["energy"] for row in rows), Energy()),
        wasted_joules=float(sum(row["energy"].total for row in rows if row["status"] != "accepted")),
        metrics={}, client_rows=rows, dropped=by_status["dropped"], late=by_status["late"],
        rejected=by_status["rejected"], failed=by_status["failed"])


SPREAD = "±"  # suffix of a column holding the 95 % Student-t half-width over seeds


def seeds_summary(seeds: Sequence[History], target: float | None = None) -> dict:
    """One table row for the same configuration run over several seeds: the mean of each numeric
    :meth:`History.summary` column, ``seeds`` (how many), and for the final accuracy and the rounds
    to ``target`` a ``±`` column, the half-width of the 95 % Student-t interval of the mean
    (:func:`confidence_band`; NaN with one seed).  Rounds to target are averaged over the seeds
    that reached it; ``reached <t>%`` says how many did (``"2/3"``), and the mean is ``None``
    when none did."""
    rows = [h.summary(target) for h in seeds]
    columns = list(dict.fromkeys(c for row in rows for c in row if c != "run"))
    out: dict = {"seeds": len(rows)}
    for column in columns:
        values = [row.get(column) for row in rows]
        numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if column.startswith("rounds to "):
            mean, half, reached = confidence_band(values)
            out[column] = None if reached == 0 else mean
            out[f"{column} {SPREAD}"] = half
            out[f"reached {column.removeprefix('rounds to ')}"] = f"{reached}/{len(rows)}"
        elif column == "final acc %":
            out[column], out[f"{column} {SPREAD}"], _ = confidence_band(values)
        elif len(numeric) == len(values):
            out[column] = float(np.mean(numeric))
        else:  # e.g. "J measured" where no meter ran: None on every seed
            out[column] = values[0] if all(v == values[0] for v in values) else None
    return out


def summary_table(histories, target: float | None = None):
    """A pandas DataFrame with one :meth:`History.summary` row per run, indexed by the run's
    label: the key of a dict, else ``History.label``.  ``final acc %`` is the last evaluated round's.

    A run may be a list of History objects, the same configuration over several seeds
    (``{"FedAvg": [h_seed0, h_seed1, h_seed2], ...}``): its row holds the means
    (:func:`seeds_summary`), with a ``±`` column after the final accuracy and the rounds to
    ``target`` -- the half-width of the 95 % Student-t interval over the seeds (empty with one
    seed) -- so a difference smaller than the spread is not read as a win.  A table of single
    runs has no such columns.  The columns keep these English keys; shown in a notebook, they carry
    labels in the reader's language (:func:`fedlab_utils.viz.tables.labelled`)."""
    import pandas as pd

    from fedlab_utils.viz.tables import labelled as labelled_columns
    from fedlab_utils.viz.tables import run_column_labels

    rows = []
    for label, run in labelled(histories):
        row = run.summary(target) if isinstance(run, History) else seeds_summary(cast(Sequence[History], run), target)
        rows.append({**row, "run": label})
    table = pd.DataFrame(rows).set_index("run")
    if "seeds" not in table:
        return labelled_columns(table, run_column_labels(table.columns))
    table["seeds"] = table["seeds"].fillna(1).astype(int)
    added = [c for c in table if c.endswith(f" {SPREAD}") or c.startswith("reached ")]
    order = ["seeds"]
    for column in (c for c in table if c != "seeds" and c not in added):
        order += [column, *(c for c in (f"{column} {SPREAD}", f"reached {column.removeprefix('rounds to ')}")
                            if c in added)]
    return labelled_columns(table[order], run_column_labels(order))


def rounds_to_target(history: History, target: float) -> int | None:
    """First round (1-based) at which test accuracy reaches ``target``; ``None`` if never
    (rounds that were not evaluated are skipped)."""
    return history.rounds_to_accuracy(target)


def joules_to_target(history: History, target: float) -> float | None:
    """Modelled joules spent (all clients, all parts) up to and including the round that first
    reaches ``target`` accuracy, as the run priced them; ``None`` if it is never reached."""
    r = history.rounds_to_accuracy(target)
    return None if r is None else float(sum(e.total for e in history.round_energy()[:r]))
