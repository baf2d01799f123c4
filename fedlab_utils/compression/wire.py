"""What crosses the network: updates as bytes.

An *update* is a ``dict`` of name → tensor (a model delta or a state).  A :class:`Codec`
turns it into ``bytes`` for the wire and back.  The ledger counts ``len()`` of those bytes,
so every size in the course is the size of a real payload, overhead included.

Both ends know the model architecture, so the plain fp32 codec sends only the values, in
state-dict order: 4 bytes per parameter and nothing else.  Lossy codecs live in
``fedlab_utils.compression`` and ``fedlab_utils.lessons.pruning.masks``; they implement the same two methods.

The wire's building blocks live here, written once for every codec:

* :func:`pack_bits` / :func:`unpack_bits` -- integer codes of any width 1-32 packed into
  ``ceil(n·bits/8)`` bytes, with **one bit order everywhere: most significant bit first**
  (the first code's top bit is the top bit of the first byte; ``np.packbits``' default "big"
  order, so 8-bit codes are plain bytes and 16-bit codes big-endian ``uint16``);
* :func:`index_bits` -- the fewest bits that can address ``n`` positions (sparse indices);
* :class:`MeasuredCodec` -- send with one codec, record what another would have sent;
* :func:`folds` and :func:`encode_rows` -- the capability a codec declares so that a round's
  updates may be encoded and averaged block by block (bounded memory on the vmap path).
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from fedlab_utils.core.checkpoint import load_object_state, object_state, reset_state
from fedlab_utils.validation import check_int

__all__ = ["Update", "Codec", "Fp32Codec", "flatten", "unflatten", "payload_bytes", "pack_bits", "unpack_bits",
           "packed_len", "index_bits", "MeasuredCodec", "folds", "encode_rows", "fold_rows",
           "finite_rows"]

Update = dict[str, torch.Tensor]


@runtime_checkable
class Codec(Protocol):
    """Encodes an update to bytes and decodes it given a template of names and shapes.

    ``client_id`` lets a stateful codec (error feedback) keep one memory per client.  A codec
    that keeps state between calls also offers ``reset()`` (``run`` calls it when a run starts)
    and ``state_dict()`` / ``load_state_dict(state)`` (checkpoints; tensors, numbers, lists and
    dicts only), as :class:`MeasuredCodec` does.

    Optional capability (see :func:`folds`): ``folds = True`` declares that the codec encodes each
    client's update from that update and that client's own state only, decodes a payload without
    state, and keeps no reference to the update it was given.  Then the decoded updates of a round
    may be averaged in any grouping, so the vmap path encodes and averages a round block by block
    (:mod:`fedlab_utils.core.stacked`).  Such a codec may also offer ``encode_rows`` (see
    :func:`encode_rows`) to encode a block of clients at once.
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
    """The uncompressed baseline: raw little-endian float32 values, 4 bytes per parameter.

    It declares ``folds`` and ``rows_are_payload`` (its payload is the update's float32 values in
    state-dict order, so a block's rows can be sent as they lie).  A subclass, which usually measures
    or changes what is sent, declares its own: these two are not inherited."""

    name = "fp32"
    folds = True
    rows_are_payload = True

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.folds = bool(cls.__dict__.get("folds", False))
        cls.rows_are_payload = bool(cls.__dict__.get("rows_are_payload", False))

    def encode(self, update: Update, client_id: int = 0) -> bytes:
        return flatten(update).numpy().astype("<f4").tobytes()

    def decode(self, payload: bytes, template: Update) -> Update:
        return unflatten(torch.from_numpy(np.frombuffer(payload, dtype="<f4").copy()), template)

    def __repr__(self) -> str:
        return "Fp32Codec()"


def folds(codec: object) -> bool:
    """Whether ``codec`` declares ``folds``: its decoded updates may be averaged in any grouping
    (quantization, top-k, random-k, sign, error feedback around one of them, fp32).  A codec that
    declares nothing does not, and a round's decoded updates are then all held until aggregation."""
    return bool(getattr(codec, "folds", False))


def encode_rows(codec: Codec, rows: torch.Tensor, client_ids: Sequence[int],
                template: Update) -> tuple[list[bytes | Exception], torch.Tensor]:
    """Encode each row of ``rows`` (one client's update per row, flattened in ``template``'s order,
    fp32 on the CPU) exactly as ``codec.encode(update, client_id)`` would, one client after another,
    and decode every payload as ``codec.decode(payload, template)`` would.

    Returns the payloads (or the exception a client's encoding raised) and the decoded rows, flat
    (a row whose encoding raised is NaN).  A codec's own ``encode_rows(rows, client_ids, template)``
    computes both for the whole block at once when it can (it returns ``None`` when it cannot);
    otherwise each row is encoded on its own."""
    fast = getattr(codec, "encode_rows", None)
    if callable(fast):
        done = fast(rows, client_ids, template)
        if done is not None:
            return done
    payloads: list[bytes | Exception] = []
    decoded = torch.full(rows.shape, float("nan"), dtype=torch.float32)
    for i, cid in enumerate(client_ids):
        try:
            payload = codec.encode(unflatten(rows[i], template), cid)
            decoded[i] = flatten(codec.decode(payload, template))
        except Exception as exc:  # noqa: BLE001 -- that client's outcome, as on the per-client path
            payloads.append(exc)
            continue
        payloads.append(payload)
    return payloads, decoded


def fold_rows(codec: Codec, rows: torch.Tensor, client_ids: Sequence[int], template: Update,
              weights: torch.Tensor, average: torch.Tensor) -> tuple[list[bytes | Exception], list[bool]]:
    """Encode each row of ``rows`` as :func:`encode_rows` does and add each client's decoded update,
    when it is finite, to the running FedAvg sum: ``average ← average + weights[i] · decoded[i]`` in
    row order, float32, the operations of
    :func:`~fedlab_utils.core.aggregators.fedavg.weighted_average` (``average`` starts at zeros).

    Returns the payloads (or the exception a client's encoding raised) and whether each client was
    folded.  A codec's own ``fold_rows(rows, client_ids, template, weights, average)`` does it all
    in one pass over the block when it can (the built-in quantizer, top-k and error feedback around
    them, through native loops; ``None`` when it cannot); otherwise the block is encoded, then each
    decoded row is multiplied and added."""
    fast = getattr(codec, "fold_rows", None)
    if callable(fast):
        done = fast(rows, client_ids, template, weights, average)
        if done is not None:
            return done
    payloads, decoded = encode_rows(codec, rows, client_ids, template)
    finite, term, scale = finite_rows(decoded), torch.empty_like(average), weights.tolist()
    folded = [ok and not isinstance(payload, Exception) for ok, payload in zip(finite, payloads)]
    for i, ok in enumerate(folded):
        if ok:
            average.add_(torch.mul(decoded[i], scale[i], out=term))
    return payloads, folded


def finite_rows(rows: torch.Tensor) -> list[bool]:
    """Per row of a 2-D tensor, whether every value is finite: one summing pass, and a value-by-value
    look only at a row whose sum is not finite (a NaN/inf, or finite values whose sum overflows)."""
    sums = torch.isfinite(rows.sum(1)).tolist()
    return [ok or bool(torch.isfinite(rows[i]).all()) for i, ok in enumerate(sums)]


def payload_bytes(codec: Codec, update: Update) -> int:
    """Size in bytes of ``update`` as ``codec`` would send it (``len()`` of the real payload).

    Encoded by a copy of the codec, so a stateful one (error-feedback residuals, seeded
    counters) is left exactly as it was."""
    return len(copy.deepcopy(codec).encode(update, 0))


# ----------------------------------------------------------------------------- bit packing (MSB first)
def packed_len(count: int, bits: int) -> int:
    """Bytes taken by ``count`` codes of ``bits`` bits: ``ceil(count·bits/8)``."""
    return (count * bits + 7) // 8


def pack_bits(codes: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integer ``codes`` (each < 2^bits) into ``ceil(n·bits/8)`` bytes, MSB first.

    The bit stream is every code's bits from most to least significant, code after code, cut
    into bytes whose first bit is their most significant; the last byte is padded with zeros.
    E.g. eight 1-bit codes ``[1,0,1,1,0,0,0,1]`` give the byte ``0b10110001`` (177), and the
    3-bit codes ``[5, 3]`` give ``101 011`` + padding = ``0b10101100`` (172).
    """
    check_int("bits", bits, 1, 32)
    codes = np.asarray(codes)
    if codes.size and (codes.min() < 0 or int(codes.max()) >> bits):
        raise ValueError(f"codes must lie in [0, 2^{bits}); got [{codes.min()}, {codes.max()}]")
    if bits == 8:
        return codes.astype(np.uint8).tobytes()
    if bits == 16:
        return codes.astype(">u2").tobytes()
    if bits == 1:
        return np.packbits(codes.astype(np.uint8)).tobytes()
    codes = codes.reshape(-1).astype(np.uint32)
    matrix = np.empty((codes.size, bits), dtype=np.uint8)  # one column per bit, most significant first
    for j in range(bits):
        matrix[:, j] = (codes >> (bits - 1 - j)) & 1
    return np.packbits(matrix.reshape(-1)).tobytes()


def unpack_bits(buffer: bytes, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: the first ``count`` codes of ``bits`` bits each (int64)."""
    check_int("bits", bits, 1, 32)
    check_int("count", count, 0)
    if len(buffer) < packed_len(count, bits):
        raise ValueError(f"buffer holds {len(buffer)} bytes but {count} codes of {bits} bits need "
                         f"{packed_len(count, bits)}")
    if bits == 8:
        return np.frombuffer(buffer, dtype=np.uint8, count=count).astype(np.int64)
    if bits == 16:
        return np.frombuffer(buffer, dtype=">u2", count=count).astype(np.int64)
    raw = np.frombuffer(buffer, dtype=np.uint8, count=packed_len(count, bits))
    flat = np.unpackbits(raw, count=count * bits)
    if bits == 1:
        return flat.astype(np.int64)
    columns = flat.reshape(count, bits)
    out = np.zeros(count, dtype=np.int64)
    for j in range(bits):  # most significant bit first
        out = (out << 1) | columns[:, j]
    return out


def index_bits(n: int) -> int:
    """The fewest bits that can address ``n`` positions: ``ceil(log2 n)``, at least 1.

    Computed on integers (``(n − 1).bit_length()``), so it is exact for any size.
    """
    check_int("n", n, 1)
    return max(1, (n - 1).bit_length())


# ----------------------------------------------------------------------------- measuring codecs
class MeasuredCodec:
    """Sends with ``primary`` and records what ``shadow`` *would* have sent, in ``shadow_bytes``.

    A control for experiments: run dense FedAvg once with the fp32 codec and learn, from the
    same updates, how much a sparse codec alone would have saved (no second run needed).
    ``run`` resets it at the start (``shadow_bytes`` holds one run) and checkpoints its state.
    """

    def __init__(self, primary: Codec, shadow: Codec):
        self.primary, self.shadow = primary, shadow
        self.name = f"{primary.name} (measuring {shadow.name})"
        self.shadow_bytes: list[int] = []

    def encode(self, update: Update, client_id: int = 0) -> bytes:
        self.shadow_bytes.append(len(self.shadow.encode(update, client_id)))
        return self.primary.encode(update, client_id)

    def decode(self, payload: bytes, template: Update) -> Update:
        return self.primary.decode(payload, template)

    def reset(self) -> None:
        """Start a new run: forget the recorded sizes and reset both codecs (where they have state)."""
        self.shadow_bytes.clear()
        reset_state(self.primary)
        reset_state(self.shadow)

    def state_dict(self) -> dict:
        """The recorded sizes and both codecs' state, for a checkpoint."""
        return {"shadow_bytes": list(self.shadow_bytes), "primary": object_state(self.primary, "primary"),
                "shadow": object_state(self.shadow, "shadow")}

    def load_state_dict(self, state: dict) -> None:
        self.shadow_bytes = [int(b) for b in state["shadow_bytes"]]
        load_object_state(self.primary, state["primary"], "primary")
        load_object_state(self.shadow, state["shadow"], "shadow")

    def __repr__(self) -> str:
        return f"MeasuredCodec({self.primary!r}, shadow={self.shadow!r})"
