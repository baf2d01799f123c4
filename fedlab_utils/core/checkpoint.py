"""Checkpoints of a federated run: written atomically, read without unpickling.

A checkpoint is one ``torch.save`` file holding only tensors, numbers, strings, lists and
dicts -- so :func:`load_checkpoint` reads it with ``torch.load(weights_only=True)``, which
refuses arbitrary objects -- and two JSON strings: the run's configuration and its History so
far.  It is written to a temporary file and renamed (:func:`fedlab_utils.files.atomic_write_bytes`),
so a crash mid-write leaves the previous checkpoint intact.

Stateful hooks (server optimizers with momentum, error-feedback residuals, seeded codec
counters) take part through two methods, ``state_dict()`` and ``load_state_dict(state)``;
:func:`object_state` refuses, loudly, an object that has a ``reset()`` (so it carries state)
but cannot save it.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import torch

from fedlab_utils.files import atomic_write_bytes

__all__ = ["FORMAT", "object_state", "load_object_state", "reset_state", "save_checkpoint", "load_checkpoint",
           "config_mismatches"]

FORMAT = "fedlab-checkpoint/1"


def reset_state(obj) -> None:
    """Call ``obj.reset()`` where it exists: a stateful hook starts every run afresh."""
    reset = getattr(obj, "reset", None)
    if callable(reset):
        reset()


def object_state(obj, name: str):
    """``obj.state_dict()``, or ``None`` for a stateless hook; raises for state that cannot be saved."""
    if obj is None:
        return None
    if callable(getattr(obj, "state_dict", None)):
        return obj.state_dict()
    if callable(getattr(obj, "reset", None)):
        raise ValueError(f"{name}={obj!r} carries state between rounds (it has reset()) but no state_dict(); "
                         f"give it state_dict()/load_state_dict() or run without checkpoint=")
    return None


def load_object_state(obj, state, name: str) -> None:
    """Restore what :func:`object_state` saved."""
    if state is None:
        return
    if not callable(getattr(obj, "load_state_dict", None)):
        raise ValueError(f"the checkpoint holds state for {name} but {obj!r} has no load_state_dict()")
    obj.load_state_dict(state)


def config_mismatches(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Where two JSON configurations differ, as ``'key: checkpoint X, this run Y'`` lines."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_mismatches(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: checkpoint {a!r}, this run {b!r}")
    return out


def save_checkpoint(path: str | os.PathLike, *, round_idx: int, config: dict, history: dict, state: dict) -> Path:
    """Write a checkpoint atomically: ``state`` (tensors and plain values), ``config`` and ``history`` (JSON)."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "round": int(round_idx), "config_json": json.dumps(config, sort_keys=True),
                "history_json": json.dumps(history), "state": state}, buffer)
    return atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, config: dict | None = None, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint (``weights_only=True``: no pickle).  With ``config``, refuse one written by
    a different configuration, naming every difference."""
    try:
        raw = torch.load(Path(path), map_location=map_location, weights_only=True)
    except Exception as exc:  # not a checkpoint, or one holding objects weights_only refuses
        raise ValueError(f"checkpoint={str(path)!r} cannot be read as a fedlab checkpoint: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ValueError(f"checkpoint={str(path)!r} is not a {FORMAT} file")
    saved = json.loads(raw["config_json"])
    if config is not None:
        current = json.loads(json.dumps(config, sort_keys=True))
        diff = config_mismatches(saved, current)
        if diff:
            raise ValueError(f"checkpoint={str(path)!r} was written by a different configuration; refusing to "
                             f"resume from it:\n  " + "\n  ".join(diff))
    return {"round": raw["round"], "config": saved, "history": json.loads(raw["history_json"]), "state": raw["state"]}
