"""What real federations lose: dropped clients, stragglers past a deadline, broken updates.

:class:`Faults` is the ``faults=`` argument of :func:`fedlab_utils.core.loop.run`.  Each round:

* every sampled client **drops out** with probability ``dropout`` (it received the global
  state, so its downlink bytes and energy are spent, but it sends nothing back);
* every remaining client gets a **simulated time**: its FLOPs at its device speed, plus its
  payloads at the energy profile's ``uplink_mbps`` / ``downlink_mbps``.  Device speeds are
  log-normal around ``flops_per_s`` (a client keeps its device from round to round, times
  ``jitter_sigma`` of per-round noise).  With ``deadline_s`` set, an update that arrives
  later is **discarded**, and the energy the client spent on it is counted as wasted;
* an update that is not finite (NaN or ±inf) is **rejected** before aggregation, never
  averaged (this check runs with or without a :class:`Faults`).

A client with no samples takes no part in a round it is sampled in (status ``"empty"``): it
sends and receives nothing, costs nothing, and a dropout draw does not apply to it.  A round in
which no update is accepted (every sampled client dropped, late, rejected, failed or empty) keeps
the model and emits one :class:`RoundWarning` with the counts; so does a run that ends without
any accepted update.

Every draw comes from ``seed``, the round and the client id, never from a running random
state, so a run is reproducible and a resumed run draws what an uninterrupted one would.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from fedlab_utils.validation import check_int, check_real

__all__ = ["Faults", "update_is_finite", "result_is_finite", "CLIENT_STATUSES", "RoundWarning"]

#: What became of a sampled client in a round (``RoundRecord.client_rows[i]["status"]``); ``"empty"``
#: is a client without samples (nothing sent, received or charged).
CLIENT_STATUSES = ("accepted", "dropped", "late", "rejected", "failed", "empty")


class RoundWarning(UserWarning):
    """A round (or a whole run) in which the server accepted no client update, so the model did
    not change: the message gives how many sampled clients dropped out, were late, rejected,
    failed or had no samples.  ``warnings.simplefilter("error", RoundWarning)`` turns it into an error."""


@dataclass(frozen=True)
class Faults:
    """Dropouts and stragglers, drawn reproducibly from ``seed``.

    * ``dropout``: probability that a sampled client drops out of a round, in [0, 1];
    * ``deadline_s``: simulated seconds after which the server stops waiting (``None``: it
      waits for every client that did not drop out);
    * ``flops_per_s``: median training speed of a client device in FLOP/s (``None``: the
      energy profile's ``flops_per_second``, 5 GFLOP/s if it has none);
    * ``speed_sigma``: spread of device speeds between clients (σ of the log-normal; 0 means
      every device runs at ``flops_per_s``, 0.5 gives a ~2.7× gap between the 16th and 84th
      percentile);
    * ``jitter_sigma``: per-round noise on each device's speed (σ of a log-normal factor);
    * ``seed``: seeds every draw (with the round and the client id).
    """

    dropout: float = 0.0
    deadline_s: float | None = None
    flops_per_s: float | None = None
    speed_sigma: float = 0.5
    jitter_sigma: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        checked = {"dropout": check_real("dropout", self.dropout, 0.0, 1.0)}
        if self.deadline_s is not None:
            checked["deadline_s"] = check_real("deadline_s", self.deadline_s, 0.0, low_inclusive=False)
            if not math.isfinite(self.deadline_s):
                raise ValueError(f"deadline_s={self.deadline_s!r} is not valid; use a finite number of "
                                 "seconds > 0, or None for no deadline")
        if self.flops_per_s is not None:
            checked["flops_per_s"] = check_real("flops_per_s", self.flops_per_s, 0.0, low_inclusive=False)
        checked["speed_sigma"] = check_real("speed_sigma", self.speed_sigma, 0.0, 5.0)
        checked["jitter_sigma"] = check_real("jitter_sigma", self.jitter_sigma, 0.0, 5.0)
        checked["seed"] = check_int("seed", self.seed, 0)
        for name, value in checked.items():  # numpy scalars become plain numbers (JSON in History.config)
            if type(getattr(self, name)) not in (int, float):
                object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ draws
    def dropped(self, round_idx: int, selected: list[int]) -> list[int]:
        """The sampled clients that drop out of round ``round_idx`` (each with probability ``dropout``)."""
        if self.dropout == 0.0:
            return []
        u = np.random.default_rng([self.seed, round_idx, 0xD809]).random(max(selected, default=-1) + 1)
        return [c for c in selected if u[c] < self.dropout]

    def device_speed(self, client_id: int, round_idx: int, median_flops_per_s: float) -> float:
        """FLOP/s of ``client_id``'s device in ``round_idx``: its own log-normal draw times the round's jitter."""
        base = np.random.default_rng([self.seed, client_id, 0x5BEED]).standard_normal()
        jitter = np.random.default_rng([self.seed, client_id, round_idx, 0x717]).standard_normal()
        return float(median_flops_per_s * math.exp(self.speed_sigma * base + self.jitter_sigma * jitter))

    def client_seconds(self, client_id: int, round_idx: int, flops: float, bytes_up: float, bytes_down: float,
                       profile) -> float:
        """Simulated seconds of one client-round: download, local compute at its device speed, upload."""
        median = self.flops_per_s or getattr(profile, "flops_per_second", None) or 5e9
        speed = self.device_speed(client_id, round_idx, median)
        return (8 * bytes_down / (profile.downlink_mbps * 1e6) + flops / speed
                + 8 * bytes_up / (profile.uplink_mbps * 1e6))

    def is_late(self, seconds: float) -> bool:
        return self.deadline_s is not None and seconds > self.deadline_s

    def result_seconds(self, client_id: int, round_idx: int, result, broadcast_bytes: int, profile) -> float:
        """:meth:`client_seconds` of a client's result: its FLOPs and upload, and what it downloaded
        (the broadcast, plus what it received during training)."""
        return self.client_seconds(client_id, round_idx, result.flops, result.bytes_up,
                                   broadcast_bytes + result.bytes_down, profile)

    def late_rule(self, profile) -> Callable[[int, int, object, int], bool] | None:
        """``late(client_id, round_idx, result, broadcast_bytes)``: whether the server stops waiting
        before that result arrives, as :func:`~fedlab_utils.core.loop.run` decides it; ``None`` without
        a deadline.  A protocol that folds results as they are trained leaves late ones out with it."""
        if self.deadline_s is None:
            return None
        return functools.partial(self._result_is_late, profile=profile)

    def _result_is_late(self, client_id: int, round_idx: int, result, broadcast_bytes: int, *, profile) -> bool:
        return self.is_late(self.result_seconds(client_id, round_idx, result, broadcast_bytes, profile))


def update_is_finite(update) -> bool:
    """True when every value of ``update`` (a tensor or a dict of tensors) is finite."""
    if isinstance(update, torch.Tensor):
        return bool(torch.isfinite(update).all())
    if isinstance(update, dict):
        return all(update_is_finite(v) for v in update.values())
    if isinstance(update, (list, tuple)):
        return all(update_is_finite(v) for v in update)
    if isinstance(update, float):
        return math.isfinite(update)
    return True


def result_is_finite(result) -> bool:
    """Whether a client's result may be averaged, decided here for every protocol: its ``finite``
    when whoever built it already checked (FedAvg's stacked path checks a block's rows in one pass, a
    Flower reply reports it), else every value of its update (:func:`update_is_finite`)."""
    finite = getattr(result, "finite", None)
    return bool(finite) if finite is not None else update_is_finite(result.update)
