"""What crosses the network: updates as bytes.

An *update* is a ``dict`` of name → tensor (a model delta or a state).  A :class:`Codec`
turns it into ``bytes`` for the wire and back.  The ledger counts ``len()`` of those bytes,
so every size in the course is the size of a real payload, overhead included.

Both ends know the model architecture, so the plain fp32 codec sends only the values, in
state-dict order: 4 bytes per parameter and nothing else.  Lossy codecs live in
``fedlab_utils.compression`` and ``fedlab_utils.pruning``; they implement the same two methods.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

__all__ = ["Update", "Codec", "Fp32Codec", "flatten", "unflatten", "payload_bytes"]

Update = dict[str, torch.Tensor]


@runtime_checkable
class Codec(Protocol):
    """Encodes an update to bytes and decodes it given a template of names and shapes.

    ``client_id`` lets a stateful codec (error feedback) keep one memory per client.
    """

    name: str

    def encode(self, update: Update, client_id: int = 0) -> bytes: ...

    def decode(self, payload: bytes, template: Update) -> Update: ...


def flatten(update: Update) -> torch.Tensor:
    """All tensors of ``update`` as one fp32 CPU vector, in key order."""
    return torch.cat([t.detach().reshape(-1).to("cpu", torch.float32) for t in update.values()])


def unflatten(vector: torch.Tensor, template: Update) -> Update:
    """Inverse of :func:`flatten`: cut ``vector`` into tensors shaped (and placed) like ``template``."""
    needed = sum(ref.numel() for ref in template.values())
    if needed != vector.numel():
        raise ValueError(f"payload holds {vector.numel()} values but the template needs {needed}")
    out, start = {}, 0
    for name, ref in template.items():
        n = ref.numel()
        out[name] = vector[start:start + n].reshape(ref.shape).to(ref.device, ref.dtype)
        start += n
    return out


class Fp32Codec:
    """The uncompressed baseline: raw little-endian float32 values, 4 bytes per parameter."""

    name = "fp32"

    def encode(self, update: Update, client_id: int = 0) -> bytes:
        return flatten(update).numpy().astype("<f4").tobytes()

    def decode(self, payload: bytes, template: Update) -> Update:
        return unflatten(torch.from_numpy(np.frombuffer(payload, dtype="<f4").copy()), template)

    def __repr__(self) -> str:
        return "Fp32Codec()"


def payload_bytes(codec: Codec, update: Update) -> int:
    """Size in bytes of ``update`` as ``codec`` would send it (``len()`` of the real payload)."""
    return len(codec.encode(update))
