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
    claims                                              # last line: the visible ✓/✗ summary

**The claim policy.**  A course claim must hold on *every seed* with the default parameters; a
researcher's own parameters may legitimately make it false, and that is a finding, not a crash.
So :class:`Claims` picks one of three policies when it is created:

``raise``   a claim that does not hold raises ``AssertionError`` (nbval and CI keep their teeth);
``record``  every claim is evaluated, printed ✓ or ✗ with its numbers, recorded with
            ``holds: false``, and the notebook goes on; ``repr(claims)`` (the last line of the
            summary cell) then lists the claims that did not hold;
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
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["Claims", "record_results", "atomic_write_text", "atomic_write_bytes", "to_jsonable",
           "claim_policy", "POLICIES", "SEED_LIKE"]

#: Claim policies; ``strict`` is accepted as a synonym of ``raise``.
POLICIES = ("auto", "raise", "record")
#: Parameters that do not make a run "non-default": every seed must satisfy the claims.
SEED_LIKE = frozenset({"seed", "device", "results_path"})
POLICY_ENV = "FEDLAB_CLAIMS"
CHANGED_ENV = "FEDLAB_CHANGED_PARAMETERS"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    ``mkstemp`` creates the temporary file with mode 0600; it is widened to what a plain ``open``
    would give (0666 minus the umask, 0644 on a normal system) before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


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


def _format(measured: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in measured.items())


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
        if self.policy == "record":
            why = f"parameters changed from their defaults: {', '.join(self.changed)}" if self.changed \
                else f"{POLICY_ENV}=record"
            print(f"Claims are recorded, not raised ({why}); the summary lists any that do not hold.")

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
        numbers = _format(measured) + (f", margin={margin:.4g}" if margin is not None else "")
        if holds:
            print(f"✓ {claim}  [{numbers}]")
        elif self.policy == "raise":
            raise AssertionError(f"Claim does not hold on this run: {claim} ({numbers})")
        else:
            print(f"✗ {claim}  [{numbers}]  -- does NOT hold on this run (recorded)")
        return holds

    def observe(self, statement: str, **measured) -> None:
        """A labelled observation: printed and recorded with its numbers, never asserted.

        Use it for what this run shows but no threshold holds on every seed (e.g. which of two
        close methods ends ahead); the prose must present it as an observation.
        """
        self.observations.append({"observation": statement, "measured": to_jsonable(measured)})
        print(f"observation: {statement}  [{_format(measured)}]")

    @property
    def failed(self) -> list[dict]:
        return [c for c in self.items if not c["holds"]]

    def to_list(self) -> list[dict]:
        return list(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def summary(self) -> str:
        """One line with the count, then every claim that did not hold with its numbers."""
        held = len(self.items) - len(self.failed)
        lines = [f"{held}/{len(self.items)} claims hold (policy: {self.policy}"
                 + (f"; changed parameters: {', '.join(self.changed)})" if self.changed else ")")]
        if self.failed:
            lines.append("Claims that did NOT hold on this run:")
            lines += [f"  ✗ {c['claim']}  [{_format(c['measured'])}]" for c in self.failed]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def _repr_markdown_(self) -> str:
        head = f"**{len(self.items) - len(self.failed)}/{len(self.items)} claims hold** (policy: `{self.policy}`"
        head += f"; changed parameters: {', '.join(f'`{n}`' for n in self.changed)})" if self.changed else ")"
        rows = ["", "| | claim | measured |", "|---|---|---|"]
        for c in self.items:
            text = c["claim"].replace("|", "\\|")
            rows.append(f"| {'✓' if c['holds'] else '✗ **does not hold**'} | {text} | "
                        f"{_format(c['measured']).replace('|', '/')} |")
        for o in self.observations:
            rows.append(f"| observation | {o['observation'].replace('|', '/')} | "
                        f"{_format(o['measured']).replace('|', '/')} |")
        return head + "\n" + "\n".join(rows)


def record_results(path: str | Path | None, notebook: str, metrics: dict, claims: Claims | list | None = None,
                   parameters: dict | None = None) -> dict:
    """Write ``{notebook, parameters, metrics, claims, observations, claim_policy}`` as JSON atomically.

    Each claim is ``{"claim", "holds", "measured"}`` plus ``"margin"`` when the notebook gave one.
    With ``path=None`` (the default in notebooks) nothing is written; the record is returned.
    Claims that did not hold (possible under the ``record`` policy) are listed again on stdout.
    """
    record = {"notebook": notebook, "parameters": parameters or {}, "metrics": metrics,
              "claims": claims.to_list() if isinstance(claims, Claims) else (claims or [])}
    if isinstance(claims, Claims):
        record["observations"] = list(claims.observations)
        record["claim_policy"] = {"policy": claims.policy, "changed_parameters": claims.changed}
    record = to_jsonable(record)
    if path is not None:
        atomic_write_text(path, json.dumps(record, indent=2, sort_keys=False))
        print(f"Results written to {path}")
    failed = [c for c in record["claims"] if not c.get("holds", True)]
    if failed:
        print(f"{len(failed)} claim(s) did NOT hold on this run:\n"
              + "\n".join(f"  ✗ {c['claim']}" for c in failed))
    return record
