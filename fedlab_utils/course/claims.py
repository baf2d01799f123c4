"""Recording what a notebook measured: claims checked under a parameter-aware policy, results written atomically.

How a notebook uses this module (every course notebook follows the same pattern)::

    claims = Claims()                                   # setup cell, after the parameters cell
    ...
    claims.check("top-1% + EF sends >= 100x fewer bytes",  # a claim the prose makes
                 ratio >= 100, margin=ratio / 100 - 1,   # optional signed margin (see below)
                 ratio=ratio)                            # the numbers behind it, recorded
    claims.observe("momentum also travels faster here", speedup=s)   # shown and recorded, never asserted
    ...
    record = record_results(results_path, "NN_name", metrics, claims, parameters={...})
    claims                                              # last line: the one table of claims

Claims and observations are shown once, as that table at the end (numbers rounded for reading);
``check`` prints nothing while a claim holds, and the record keeps the exact numbers.

**The claim policy.**  A course claim must hold on *every seed* with the default parameters; a
researcher's own parameters may legitimately make it false, and that is a finding, not a crash.
So :class:`Claims` picks one of three policies when it is created:

``raise``   a claim that does not hold raises ``AssertionError`` (nbval and CI keep their teeth);
``record``  every claim is evaluated and recorded (``holds: false`` when it does not hold), and
            the notebook goes on; the table at the end marks each claim ✓ or ✗ with its numbers;
``auto``    (the default) ``raise`` when the notebook runs with its default parameters, ``record``
            when any parameter other than :data:`SEED_LIKE` (``seed``, ``device``,
            ``results_path``) was changed.  Instructors give each student a seed, so a run that
            only changes the seed still raises.

The course runner (``python -m fedlab_utils run/sweep``) tells the kernel what it changed through
environment variables, which the kernel inherits:

``FEDLAB_CHANGED_PARAMETERS``  comma-separated names of the parameters whose injected value differs
                               from the notebook's default (empty: defaults);
``FEDLAB_CLAIMS``              ``auto`` (default), ``strict`` (= ``raise``, set by ``--strict``) or
                               ``record`` (evaluate everything, never raise: ``benchmarks/bench_claims.py``
                               uses it to measure every claim's margin on every seed).

Running papermill yourself with changed parameters?  Set ``FEDLAB_CLAIMS=record`` (or
``FEDLAB_CHANGED_PARAMETERS``) in the environment, or pass ``Claims(policy="record")``.
Exercise checks (``fedlab_utils.checks``) are not claims: they always raise.

**Margins.**  ``check(..., margin=m)`` records how far the measured value lies on the right side of
the claim's threshold, in the claim's own units, signed: ``m >= 0`` when the claim holds and
``m < 0`` when it does not (``margin = measured - threshold`` for "at least" claims,
``threshold - measured`` for "at most" claims, a ratio's ``measured / threshold - 1`` where the
claim is a ratio).  ``make bench`` reports the worst margin over seeds, which shows how much room
a threshold has.  A margin whose sign contradicts ``holds`` is a bug in the notebook and raises
``ValueError`` whatever the policy.

:func:`record_results` writes JSON to a temporary file in the same folder and renames it, so a
crash never leaves a half-written results file; files get the usual umask permissions.

**Per-round curves.**  The record's ``histories`` holds, for each run the notebook made (each
:class:`~fedlab_utils.core.history.History`), per round: ``round``, ``accuracy`` (``null`` where the
round was not evaluated), ``bytes_up``, ``bytes_down``, ``joules`` (modelled, under the run's
energy ``profile``) and ``sim_time_s`` (simulated seconds; ``null`` without a fault model).  A
notebook may pass ``histories={"label": h, ...}``; by default :func:`record_results` collects the
History objects bound at the top level of the calling notebook, directly or as the values of a
dict, list or tuple, labelled by their dict key, else by their own ``label``.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fedlab_utils.files import atomic_write_text
from fedlab_utils.i18n import _

__all__ = ["Claims", "record_results", "to_jsonable",
           "claim_policy", "POLICIES", "SEED_LIKE", "ROUND_FIELDS", "history_series", "collect_histories",
           "readable"]

#: Claim policies; ``strict`` is accepted as a synonym of ``raise``.
POLICIES = ("auto", "raise", "record")
#: Parameters that do not make a run "non-default": every seed must satisfy the claims.
SEED_LIKE = frozenset({"seed", "device", "results_path"})
POLICY_ENV = "FEDLAB_CLAIMS"
CHANGED_ENV = "FEDLAB_CHANGED_PARAMETERS"


def to_jsonable(value):
    """Convert numpy/torch scalars, arrays, tuples and NaN into plain JSON values."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def claim_policy(policy: str | None = None, changed: set[str] | list[str] | str | None = None) -> tuple[str, list[str]]:
    """Resolve the effective policy (``raise`` or ``record``) and the non-seed-like changed parameters.

    ``policy``/``changed`` default to the ``FEDLAB_CLAIMS``/``FEDLAB_CHANGED_PARAMETERS``
    environment variables set by the course runner (see the module docstring).
    """
    policy = (policy if policy is not None else os.environ.get(POLICY_ENV, "") or "auto").strip().lower()
    policy = "raise" if policy == "strict" else policy
    if policy not in POLICIES:
        raise ValueError(f"claim policy {policy!r} is not valid; use one of {POLICIES} (or 'strict')")
    if changed is None:
        changed = os.environ.get(CHANGED_ENV, "")
    if isinstance(changed, str):
        changed = [name.strip() for name in changed.split(",")]
    relevant = sorted({name for name in changed if name} - SEED_LIKE)
    if policy == "auto":
        policy = "record" if relevant else "raise"
    return policy, relevant


def readable(value) -> str:
    """A number as a reader wants it: ``203,560``, ``5,084``, ``0.7264``, ``1.2e-05``; other values as ``str``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(readable(v) for v in value) + "]"
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if value == 0 or 1e-3 <= abs(value) < 1e3:
        return f"{value:.4g}"
    if 1e3 <= abs(value) < 1e9:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _format(measured: dict) -> str:
    return ", ".join(f"{k}={readable(v)}" for k, v in measured.items())


class Claims:
    """The claims a notebook makes in prose, each checked against this run's numbers.

    ``Claims()`` reads the policy from the environment (see the module docstring);
    ``Claims(policy="raise"|"record"|"auto", changed=[...])`` sets it explicitly.
    ``self.policy`` is the effective policy, ``self.changed`` the non-seed-like parameters that
    made it ``record`` under ``auto``.
    """

    def __init__(self, policy: str | None = None, changed: set[str] | list[str] | str | None = None) -> None:
        self.policy, self.changed = claim_policy(policy, changed)
        self.items: list[dict] = []
        self.observations: list[dict] = []
        if self.policy == "record" and self.changed:
            print(_("Parameters changed from their defaults ({names}): a claim that does not hold on this run is "
                    "marked in the table at the end instead of stopping the notebook.").format(
                names=", ".join(self.changed)))

    def check(self, claim: str, holds: bool, margin: float | None = None, **measured) -> bool:
        """Record ``claim`` with the ``measured`` numbers behind it; under ``raise``, raise if it fails.

        ``margin`` (optional) is the signed distance from the claim's threshold, ``>= 0`` exactly
        when it holds (module docstring).  Returns whether the claim holds.
        """
        holds = bool(holds)
        if margin is not None:
            margin = float(margin)
            if math.isfinite(margin) and ((holds and margin < 0) or (not holds and margin > 0)):
                raise ValueError(f"margin={margin:.4g} contradicts holds={holds} for claim {claim!r}: "
                                 "a margin is >= 0 exactly when the claim holds")
        item = {"claim": claim, "holds": holds, "measured": to_jsonable(measured)}
        if margin is not None:
            item["margin"] = to_jsonable(margin)
        self.items.append(item)
        if not holds and self.policy == "raise":
            shown = _format(measured) + (f", margin={readable(margin)}" if margin is not None else "")
            raise AssertionError(_("Claim does not hold on this run: {claim} ({numbers})").format(claim=claim,
                                                                                              numbers=shown))
        return holds  # shown once, in the table at the end (_repr_markdown_)

    def observe(self, statement: str, **measured) -> None:
        """A labelled observation: recorded with its numbers and shown in the table, never asserted.

        Use it for what this run shows but no threshold holds on every seed (e.g. which of two
        close methods ends ahead); the prose must present it as an observation.
        """
        self.observations.append({"observation": statement, "measured": to_jsonable(measured)})

    @property
    def failed(self) -> list[dict]:
        return [c for c in self.items if not c["holds"]]

    def to_list(self) -> list[dict]:
        return list(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def summary(self) -> str:
        """The plain-text table: a line with the count, then one line per claim (✓ or ✗) and observation."""
        held = len(self.items) - len(self.failed)
        lines = [_("{held}/{total} claims hold (changed parameters: {names})").format(
            held=held, total=len(self.items), names=", ".join(self.changed)) if self.changed
                 else _("{held}/{total} claims hold").format(held=held, total=len(self.items))]
        lines += [f"  {'✓' if c['holds'] else '✗'} {c['claim']}  [{_format(self._shown(c))}]"
                  + ("" if c["holds"] else f"  -- {_('does not hold')}") for c in self.items]
        lines += [f"  {_('observation')}: {o['observation']}  [{_format(o['measured'])}]" for o in self.observations]
        return "\n".join(lines)

    @staticmethod
    def _shown(item: dict) -> dict:
        """A claim's numbers with its margin, as the table shows them."""
        return {**item["measured"], **({"margin": item["margin"]} if item.get("margin") is not None else {})}

    def __repr__(self) -> str:
        return self.summary()

    def _repr_markdown_(self) -> str:
        held = _("{held}/{total} claims hold").format(held=len(self.items) - len(self.failed), total=len(self.items))
        head = f"**{held}**"  # the policy is the runner's business, not the lesson's: not shown
        head += (_(" (changed parameters: {names})").format(names=", ".join(f"`{n}`" for n in self.changed))
                 if self.changed else "")
        rows = ["", f"| | {_('claim')} | {_('measured')} |", "|---|---|---|"]
        for c in self.items:
            text = c["claim"].replace("|", "\\|")
            shown = _format(self._shown(c))
            mark = "✓" if c["holds"] else f"✗ **{_('does not hold')}**"
            rows.append(f"| {mark} | {text} | {shown.replace('|', '/')} |")
        for o in self.observations:
            rows.append(f"| {_('observation')} | {o['observation'].replace('|', '/')} | "
                        f"{_format(o['measured']).replace('|', '/')} |")
        return head + "\n" + "\n".join(rows)


#: The per-round fields of a run in a results record's ``histories`` (module docstring).
ROUND_FIELDS = ("round", "accuracy", "bytes_up", "bytes_down", "joules", "sim_time_s")


def history_series(history) -> dict:
    """One run's per-round curves: ``{"profile": name, "round": [...], "accuracy": [...], ...}`` (ROUND_FIELDS).

    ``joules`` is each round's modelled energy under the run's own profile (``RoundRecord.energy``);
    ``accuracy`` of a round that was not evaluated stays NaN here (``null`` in JSON).
    """
    records = history.records
    series = {"profile": history.profile_name,
              "round": [int(r.round) for r in records],
              "accuracy": [float(r.accuracy) for r in records],
              "bytes_up": [int(r.bytes_up) for r in records],
              "bytes_down": [int(r.bytes_down) for r in records],
              "joules": [float(r.energy.total) for r in records],
              "sim_time_s": [None if r.sim_time_s is None else float(r.sim_time_s) for r in records]}
    return series


_SKIPPED_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython"})


def collect_histories(namespace: Mapping) -> dict:
    """The History objects bound in ``namespace`` (a notebook's globals), labelled and without repeats.

    A History found as the value of a dict is labelled by its key (the notebook's own name for it,
    e.g. ``runs["FedAvg IID"]``), or, in a list of seeds held under a key, by the key and its seed
    (``runs["FedAvg"] = [h0, h1]`` gives ``"FedAvg · seed 0"``...); one held directly, or in a list or
    tuple, by its ``label``.  The
    same object found twice is kept once, under its dict key.  Two different runs with the same
    label are told apart by the variable holding them (``"FedAvg (fedavg_iid)"``).  Names that
    start with ``_`` and IPython's ``In``/``Out`` are skipped (output caches, not the notebook's runs).
    """
    from fedlab_utils.core.history import History

    def found_in(name: str, value) -> list[tuple[str, History]]:
        if isinstance(value, History):
            return [(value.label, value)]
        if isinstance(value, Mapping):
            return [(str(k), v) for k, v in value.items() if isinstance(v, History)] + [
                (f"{k} · seed {h.config.get('seed', i)}", h) for k, v in value.items()
                if isinstance(v, (list, tuple)) for i, h in enumerate(v) if isinstance(h, History)]
        if isinstance(value, (list, tuple)):
            return [(v.label, v) for v in value if isinstance(v, History)]
        return []

    names = [name for name in namespace if not name.startswith("_") and name not in _SKIPPED_NAMES]
    keyed = {id(h): key for name in names if isinstance(namespace[name], Mapping)
             for key, h in found_in(name, namespace[name])}
    collected: dict[str, History] = {}
    seen: set[int] = set()
    for name in names:
        for label, history in found_in(name, namespace[name]):
            if id(history) in seen:
                continue
            seen.add(id(history))
            label = keyed.get(id(history), label)
            if label in collected:
                label = f"{label} ({name})"
            unique, count = label, 2
            while unique in collected:
                unique, count = f"{label} #{count}", count + 1
            collected[unique] = history
    return collected


def record_results(path: str | Path | None, notebook: str, metrics: dict, claims: Claims | list | None = None,
                   parameters: dict | None = None, histories: Mapping | None = None) -> dict:
    """Write ``{notebook, parameters, metrics, claims, observations, claim_policy, histories}`` as JSON atomically.

    Each claim is ``{"claim", "holds", "measured"}`` plus ``"margin"`` when the notebook gave one.
    ``histories`` maps run labels to History objects; by default (``None``) they are collected from
    the caller's globals (:func:`collect_histories`), so every run a notebook made is recorded
    round by round (:func:`history_series`); pass ``{}`` to record none.
    With ``path=None`` (the default in notebooks) nothing is written; the record is returned.
    Nothing about the path is printed (the course runner passes a path relative to the kernel's
    working folder, so no path of the building machine reaches the executed notebook).
    Claims given as a plain list (no table to show them) that did not hold are listed on stdout.
    """
    if histories is None:
        histories = collect_histories(sys._getframe(1).f_globals)
    record = {"notebook": notebook, "parameters": parameters or {}, "metrics": metrics,
              "claims": claims.to_list() if isinstance(claims, Claims) else (claims or [])}
    if isinstance(claims, Claims):
        record["observations"] = list(claims.observations)
        record["claim_policy"] = {"policy": claims.policy, "changed_parameters": claims.changed}
    record["histories"] = {str(label): history_series(h) for label, h in histories.items()}
    record = to_jsonable(record)
    if path is not None:  # silently: the student's copy of the notebook shows no path of the machine
        atomic_write_text(path, json.dumps(record, indent=2, sort_keys=False))
    failed = [c for c in record["claims"] if not c.get("holds", True)]
    if failed and not isinstance(claims, Claims):
        print(_("{count} claim(s) did NOT hold on this run:").format(count=len(failed)) + "\n"
              + "\n".join(f"  ✗ {c['claim']}" for c in failed))
    return record
