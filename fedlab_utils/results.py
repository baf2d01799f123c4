"""Recording what a notebook measured: asserted claims and results written atomically.

A notebook states a claim, computes the numbers, and calls :meth:`Claims.check`; a claim that
does not hold raises, so the notebook fails under nbval and papermill.  At the end it calls
:func:`record_results`, which writes JSON to a temporary file and renames it, so a crash
never leaves a half-written results file.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["Claims", "record_results", "atomic_write_text", "atomic_write_bytes", "to_jsonable"]


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
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


class Claims:
    """The claims a notebook makes in prose, each checked against this run's numbers."""

    def __init__(self) -> None:
        self.items: list[dict] = []

    def check(self, claim: str, holds: bool, **measured) -> None:
        """Record ``claim`` with the ``measured`` numbers behind it; raise if it does not hold."""
        self.items.append({"claim": claim, "holds": bool(holds), "measured": to_jsonable(measured)})
        numbers = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in measured.items())
        if not holds:
            raise AssertionError(f"Claim does not hold on this run: {claim} ({numbers})")
        print(f"✓ {claim}  [{numbers}]")

    def to_list(self) -> list[dict]:
        return list(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        held = sum(c["holds"] for c in self.items)
        return f"Claims({held}/{len(self.items)} hold)"


def record_results(path: str | Path | None, notebook: str, metrics: dict, claims: Claims | list | None = None,
                   parameters: dict | None = None) -> dict:
    """Write ``{notebook, parameters, metrics, claims}`` as JSON to ``path`` atomically.

    With ``path=None`` (the default in notebooks) nothing is written; the record is returned.
    """
    record = to_jsonable({"notebook": notebook, "parameters": parameters or {}, "metrics": metrics,
                          "claims": claims.to_list() if isinstance(claims, Claims) else (claims or [])})
    if path is not None:
        atomic_write_text(path, json.dumps(record, indent=2, sort_keys=False))
        print(f"Results written to {path}")
    return record
