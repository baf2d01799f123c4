"""Where computation runs: device choice, multi-device placements, seeding and a free local port.

Code in this course never asserts that CUDA exists.  ``get_device("auto")`` picks the
best device present (CUDA, then Apple MPS, then the CPU) and says what it picked;
``get_devices(n)`` always returns ``n`` usable placements, reusing real devices or
falling back to CPU "virtual devices" with a notice when fewer exist.
"""
from __future__ import annotations

import os
import random
import re
import socket
import warnings

import numpy as np
import torch

from .i18n import gettext

__all__ = ["get_device", "get_devices", "seed_everything", "describe_device", "available_devices", "free_port"]

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def available_devices() -> list[str]:
    """Every device torch can use here, e.g. ``['cuda:0', 'cuda:1', 'cpu']``."""
    found = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if _mps_available():
        found.append("mps")
    return found + ["cpu"]


def describe_device(device: torch.device) -> str:
    """One human line about ``device``, in the reader's language: its name and, for a GPU, its memory."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return gettext("{device} ({name}, {memory:.0f} GiB)").format(
            device=device, name=props.name, memory=props.total_memory / 2**30)
    if device.type == "mps":
        return gettext("mps (Apple GPU)")
    return gettext("cpu ({cores} logical cores, {threads} torch threads)").format(
        cores=os.cpu_count(), threads=torch.get_num_threads())


def get_device(spec: str = "auto", verbose: bool = True) -> torch.device:
    """Return the device named by ``spec``.

    ``"auto"`` picks cuda, then mps, then cpu.  An explicit device that is not present
    raises ``ValueError`` naming what is available, instead of failing later in a kernel.
    """
    if not isinstance(spec, str) or not _DEVICE_PATTERN.match(spec):
        raise ValueError(f"device={spec!r} is not valid; use 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'")
    present = available_devices()
    if spec == "auto":
        device = torch.device("cuda:0" if present[0].startswith("cuda") else present[0])
    elif spec == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device='cuda' is not available here; available: {present}")
        device = torch.device("cuda:0")
    elif spec.startswith("cuda:") and spec not in present:
        raise ValueError(f"device={spec!r} is not available here; available: {present}")
    elif spec == "mps" and "mps" not in present:
        raise ValueError(f"device='mps' is not available here; available: {present}")
    else:
        device = torch.device(spec)
    if verbose:
        print(gettext("Using device: {device}").format(device=describe_device(device)))
    return device


_shown_notices: set[str] = set()


def _notice_once(text: str) -> None:
    """Print a device notice the first time this process meets it (a lesson calls ``get_devices`` often)."""
    if text not in _shown_notices:
        _shown_notices.add(text)
        print(text)


def get_devices(n: int, verbose: bool = True) -> list[torch.device]:
    """Return ``n`` placements for ``n`` model stages or workers.

    With at least ``n`` GPUs each stage gets its own GPU.  With fewer, real GPUs are
    reused round-robin; with none, every placement is the CPU (a "virtual device").
    A notice says when placements share hardware, so timings are read correctly; it is printed
    once per process (the GPU round-robin one as a warning).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n={n!r} is not valid; ask for at least 1 placement")
    gpus = [d for d in available_devices() if d.startswith("cuda")] or (["mps"] if _mps_available() else [])
    if len(gpus) >= n:
        placements = [torch.device(g) for g in gpus[:n]]
    elif gpus:
        placements = [torch.device(gpus[i % len(gpus)]) for i in range(n)]
        text = gettext("asked for {n} devices but only {gpus} GPU(s) exist; stages share them round-robin").format(
            n=n, gpus=len(gpus))
        if text not in _shown_notices:
            _shown_notices.add(text)
            warnings.warn(text, stacklevel=2)
    else:
        placements = [torch.device("cpu")] * n
        if n > 1:
            _notice_once(gettext("Notice: no GPU here, so model stages run on CPU 'virtual devices' "
                                 "(correct results, no parallel speed-up)."))
    if verbose:
        print(gettext("Placements: {placements}").format(placements=", ".join(str(p) for p in placements)))
    return placements


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices) and return a CPU generator seeded the same."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r} is not valid; use a non-negative integer")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it): a torch.distributed rendezvous
    (lesson 05) or a Flower SuperLink (lesson 07) on this machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
