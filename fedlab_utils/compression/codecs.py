"""Compressing what clients send: quantization and sparsification codecs for the uplink.

Every codec here implements :class:`fedlab_utils.compression.wire.Codec` (``encode(update, client_id) ->
bytes`` and ``decode(payload, template) -> update``) and plugs into
``run(..., uplink=codec)`` (or ``downlink=``).  The ledger counts ``len()`` of the payload,
so the sizes are real: headers (scales), indices and padding are all included.

Both ends know the model (the template gives names and shapes) and the codec's settings,
so a payload carries only data.  Formats (little-endian):

==========================  ============================================================
:class:`QuantizeCodec`      per chunk: fp32 ``lo``, fp32 ``scale``; then all codes bit-packed
                            at ``bits`` bits each (``x̂ = lo + q·scale``, ``q ∈ [0, 2^b−1]``)
:class:`SignCodec`          per tensor: fp32 ``mean|x|``; then one sign bit per value
:class:`TopKCodec`          ``k`` indices bit-packed at ``ceil(log2 n)`` bits, then the ``k``
                            values (fp32, or encoded by a value codec, e.g. 8-bit)
:class:`RandomKCodec`       a uint32 seed (both ends regenerate the indices), then the values
:class:`ErrorFeedback`      wraps any lossy codec; the wire format is the inner codec's
:class:`SparseCodec`        lossless, for masked updates: the smallest of dense fp32, ``k`` +
                            bitmap + values, or ``k`` + bit-packed indices + values
:class:`SparseQuantizeCodec` ``k`` (uint32), a bitmap of the nonzeros, then only the nonzero
                            values quantized at ``bits`` (a pruned model on the downlink)
==========================  ============================================================

Every codec here but the sparse ones declares ``folds`` (:func:`fedlab_utils.compression.wire.folds`):
its decoded updates may be averaged in any grouping, so the vmap path folds a round into its
average block by block.  :class:`QuantizeCodec` (deterministic, per tensor), :class:`TopKCodec`
(fp32 values) and :class:`ErrorFeedback` around a codec that can also encode a whole block of
clients at once (``encode_rows``), byte for byte what ``encode`` sends each of them, and (8-bit
quantization, top-k with fp32 values, error feedback around either) also fold it into the running
average in the same pass (``fold_rows``, native loops in :mod:`fedlab_utils.compression.kernels`,
bit for bit the per-client fold).  Top-k finds
``torch.topk``'s own set through a sampled threshold (:func:`topk_indices`); error feedback keeps
its per-client residuals in a :class:`ResidualStore` (RAM up to a budget, then a temporary file).

The quantization math is also exposed as small functions (:func:`choose_qparams`,
:func:`quantize`, :func:`dequantize`, :func:`stochastic_round`) so that the notebook can
build the codec step by step and cross-check it against ``torch.quantize_per_tensor``.
Deployment-time int8 of a trained model (torchao), :func:`quantize_model_int8`, lives in
:mod:`fedlab_utils.lessons.quantization`: it is not a codec.
Bit packing (most significant bit first) and the index width come from :mod:`fedlab_utils.compression.wire`,
shared with pruning's sparse codec; timing a forward pass is :func:`fedlab_utils.ledger.timing.inference_latency`.
"""
from __future__ import annotations

import math
import os
import struct
import sys
import tempfile
import weakref
from collections.abc import MutableMapping
from typing import BinaryIO

import numpy as np
import torch

from fedlab_utils.compression.wire import (
    Update,
    encode_rows,
    flatten,
    folds,
    index_bits,
    pack_bits,
    packed_len,
    unflatten,
    unpack_bits,
)
from fedlab_utils.core.checkpoint import load_object_state, object_state, reset_state
from fedlab_utils.validation import check_fraction, check_int

__all__ = ["choose_qparams", "quantize", "dequantize", "stochastic_round", "QuantizeCodec", "SignCodec", "TopKCodec",
           "RandomKCodec", "ErrorFeedback", "ResidualStore", "topk_indices", "SparseCodec", "sparse_payload_size", "SparseQuantizeCodec"]


# ----------------------------------------------------------------------------- the math
def choose_qparams(x: torch.Tensor, bits: int = 8, signed: bool = False) -> tuple[float, int]:
    """PyTorch's affine convention: ``scale`` and integer ``zero_point`` covering ``[min(x,0), max(x,0)]``.

    Codes live in ``[0, 2^b−1]`` (``signed=False``, like ``quint8``) or ``[−2^(b−1), 2^(b−1)−1]``
    (like ``qint8``); ``x ≈ (q − zero_point)·scale`` and 0.0 is represented exactly.
    """
    check_int("bits", bits, 1, 16)
    qmin, qmax = _qrange(bits, signed)
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (hi - lo) / (qmax - qmin) if hi > lo else 1.0
    zero_point = int(np.clip(qmin - round(lo / scale), qmin, qmax))
    return float(scale), zero_point


def _qrange(bits: int, signed: bool) -> tuple[int, int]:
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def stochastic_round(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Round each value down or up at random so that ``E[round(x)] = x``: ``floor(x + u)``, u ~ U[0, 1)."""
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
    return torch.floor(x + u)


def quantize(x: torch.Tensor, scale: float, zero_point: int, bits: int = 8, signed: bool = False,
             stochastic: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Integer codes ``clamp(round(x/scale) + zero_point)`` (int64); stochastic rounding if asked.

    Uses ``x · (1/scale)`` and round-half-to-even like PyTorch's kernels, so the codes match
    ``torch.quantize_per_tensor(x, scale, zero_point, dtype).int_repr()``.
    """
    qmin, qmax = _qrange(bits, signed)
    t = x.float() * (1.0 / scale)
    t = stochastic_round(t, generator) if stochastic else torch.round(t)
    return torch.clamp(t + zero_point, qmin, qmax).to(torch.int64)


def dequantize(q: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """``(q − zero_point) · scale`` as float32."""
    return (q.to(torch.float32) - zero_point) * scale


def _chunks(update: Update, chunk: int | None) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    vector = flatten(update)
    if chunk is None:  # one chunk per tensor
        bounds, start = [], 0
        for t in update.values():
            bounds.append((start, start + t.numel()))
            start += t.numel()
    else:
        bounds = [(s, min(s + chunk, vector.numel())) for s in range(0, vector.numel(), chunk)]
    return vector, bounds


#: Rows a block encoding processes together: a few clients of the course's MLP (0.2 MB each), so
#: that each pass over them stays in the CPU's cache; a tensor of at most ``_SMALL_BLOCK`` values over
#: the whole block (a bias) is processed in one go, as each operation's fixed cost then dominates.
_ROWS_IN_CACHE, _SMALL_BLOCK = 4, 1 << 16


def _template_size(template: Update) -> int:
    return sum(t.numel() for t in template.values())


def _native_block(rows: torch.Tensor, average: torch.Tensor) -> bool:
    """Whether a block and the running sum are what the native loops read: contiguous float32 on the CPU."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in (rows, average))


def _weights(weights: torch.Tensor) -> np.ndarray:
    """Each client's weight as the float32 the per-client fold multiplies by (a Python float becomes one)."""
    return np.ascontiguousarray(weights.detach().cpu().numpy(), dtype=np.float32)


def _fold_one(codec, row: torch.Tensor, client_id: int, template: Update, weight: float, average: torch.Tensor,
              keep_dropped: bool) -> tuple[bytes | Exception, bool]:
    """One client of a block through ``codec.encode``/``decode`` and the per-client fold
    (``average + weight · decoded`` when the decoded update is finite): the payload (or the exception
    encoding raised, that client's outcome) and whether it was folded.  With ``keep_dropped`` the row
    becomes ``row − decoded``."""
    try:
        payload = codec.encode(unflatten(row, template), client_id)
        decoded = flatten(codec.decode(payload, template))
    except Exception as exc:  # noqa: BLE001 -- as on the per-client path
        return exc, False
    ok = bool(torch.isfinite(decoded).all())
    if ok:
        average.add_(torch.mul(decoded, weight))
    if keep_dropped:
        row.sub_(decoded)
    return payload, ok


# ----------------------------------------------------------------------------- codecs
def _seed_for_call(calls: dict[int, int], seed: int, client_id: int) -> int:
    """The uint32 seed of this client's next call, ``(seed, client, call number)``, counting the call.

    Seeded codecs draw one reproducible stream per (client, call), whoever else was sampled;
    ``calls`` is their state: ``reset()`` clears it for a new run, checkpoints save it."""
    call = calls.get(client_id, 0)
    calls[client_id] = call + 1
    return int(np.random.SeedSequence([seed, client_id, call]).generate_state(1)[0])


def _calls_state(calls: dict[int, int]) -> dict[int, int]:
    return {int(c): int(n) for c, n in calls.items()}


class QuantizeCodec:
    """Uniform ``bits``-bit quantization (1–16), deterministic or stochastic (unbiased, QSGD-style).

    Each chunk (one per tensor by default, or ``chunk`` values) is mapped onto ``2^b`` evenly
    spaced levels between its min and max: ``x̂ = lo + q·scale`` with ``scale = (max−min)/(2^b−1)``.
    Deterministic rounding errs by at most ``scale/2``; stochastic rounding errs by at most
    ``scale`` but is unbiased (``E[x̂] = x``) with variance ≤ ``scale²/4`` per value.
    The grid spans exactly ``[min, max]`` (a real-valued offset rather than PyTorch's integer
    zero point), so no value is ever clamped and stochastic rounding stays exactly unbiased.
    """

    folds = True

    def __init__(self, bits: int = 8, stochastic: bool = False, chunk: int | None = None, seed: int = 0):
        self.bits = check_int("bits", bits, 1, 16)
        self.stochastic = bool(stochastic)
        self.chunk = None if chunk is None else check_int("chunk", chunk, 1)
        self.seed = seed
        self._calls: dict[int, int] = {}
        self._work = _Scratch()  # encode_rows' codes-as-floats, reused between blocks
        self.name = f"{'stoch-' if stochastic else ''}q{bits}" + ("" if chunk is None else f"/c{chunk}")

    def _generator(self, client_id: int) -> torch.Generator:
        return torch.Generator().manual_seed(_seed_for_call(self._calls, self.seed, client_id))

    def reset(self) -> None:
        """Restart every client's call counter (a new run draws the same rounding noise)."""
        self._calls.clear()

    def state_dict(self) -> dict:
        """Each client's call counter (it seeds the next stochastic rounding), for a checkpoint."""
        return {"calls": _calls_state(self._calls)}

    def load_state_dict(self, state: dict) -> None:
        self._calls = _calls_state(state["calls"])

    def encode(self, update: Update, client_id: int = 0) -> bytes:
        vector, bounds = _chunks(update, self.chunk)
        levels = (1 << self.bits) - 1
        generator = self._generator(client_id) if self.stochastic else None
        header, codes = [], []
        for start, stop in bounds:
            part = vector[start:stop]
            lo, hi = (float(part.min()), float(part.max())) if stop > start else (0.0, 0.0)
            scale = (hi - lo) / levels if hi > lo else 1.0
            t = (part - lo) / scale
            t = stochastic_round(t, generator) if self.stochastic else torch.round(t)
            codes.append(torch.clamp(t, 0, levels).to(torch.int64))
            header += [lo, scale]
        body = pack_bits(torch.cat(codes).numpy(), self.bits)
        return np.asarray(header, dtype="<f4").tobytes() + body

    def encode_rows(self, rows: torch.Tensor, client_ids, template: Update):
        """Deterministic per-tensor quantization of a block of clients (one flat update per row): the
        payloads ``encode`` sends and what ``decode`` makes of them, with the same float operations;
        ``None`` for stochastic rounding or fixed-size chunks (then each client is encoded on its own).
        A few rows at a time, so that every pass over them stays in the cache."""
        _, bounds = _chunks(template, self.chunk)
        if self.stochastic or self.chunk is not None or any(stop == start for start, stop in bounds):
            return None
        levels = (1 << self.bits) - 1
        codes = np.empty(tuple(rows.shape), dtype=np.uint8 if self.bits <= 8 else np.int32)
        decoded = torch.empty(rows.shape, dtype=torch.float32)
        header = np.empty((len(rows), 2 * len(bounds)), dtype="<f4")
        steps = [len(rows) if (stop - start) * len(rows) <= _SMALL_BLOCK else _ROWS_IN_CACHE for start, stop in bounds]
        work = self._work.take(1, max(step * (stop - start) for step, (start, stop) in zip(steps, bounds)))[0]
        for j, (start, stop) in enumerate(bounds):
            step = steps[j]
            for first in range(0, len(rows), step):
                last = min(first + step, len(rows))
                part = rows[first:last, start:stop]
                lo, hi = part.amin(1, keepdim=True), part.amax(1, keepdim=True)
                spread = hi.double() - lo.double()  # in float64, as encode's Python floats
                scale = torch.where(spread > 0, spread / levels, 1.0).float()
                t = torch.sub(part, lo, out=work[:(last - first) * (stop - start)].view(last - first, stop - start))
                t.div_(scale).round_().clamp_(0, levels)  # the codes, as floats
                codes[first:last, start:stop] = t.numpy()  # integral floats in [0, levels]: exact
                torch.mul(t, scale, out=decoded[first:last, start:stop]).add_(lo)
                header[first:last, 2 * j], header[first:last, 2 * j + 1] = lo[:, 0].numpy(), scale[:, 0].numpy()
        body = (lambda i: codes[i].tobytes()) if self.bits == 8 else (lambda i: pack_bits(codes[i], self.bits))
        payloads: list[bytes | Exception] = [header[i].tobytes() + body(i) for i in range(len(rows))]
        return payloads, decoded

    def folds_rows(self, template: Update) -> bool:
        """Whether :meth:`fold_rows` takes a block of ``template``'s updates: deterministic 8-bit
        codes, one chunk per tensor, no empty tensor."""
        return (self.bits == 8 and not self.stochastic and self.chunk is None
                and all(t.numel() > 0 for t in template.values()))

    def fold_rows(self, rows: torch.Tensor, client_ids, template: Update, weights: torch.Tensor,
                  average: torch.Tensor, keep_dropped: bool = False):
        """Encode a block of clients and fold them (:func:`fold_rows`), in a native loop of two passes
        over each row; ``None`` where :meth:`folds_rows` says it does not apply."""
        if not self.folds_rows(template) or not _native_block(rows, average):
            return None
        from fedlab_utils.compression import kernels  # numba compiles on first use: only when it is needed
        _, bounds = _chunks(template, self.chunk)
        starts, stops = (np.array(side, dtype=np.int64) for side in zip(*bounds))
        header = np.empty((len(rows), 2 * len(bounds)), dtype="<f4")
        codes = np.empty(tuple(rows.shape), dtype=np.uint8)
        block, w, total = rows.numpy(), _weights(weights), average.numpy()
        folded = np.zeros(len(rows), dtype=bool)
        payloads: list[bytes | Exception] = [b""] * len(rows)
        first, alone, scratch = 0, set(), np.empty(rows.shape[1], dtype=np.float32)
        while first < len(rows):
            first = kernels.quantize_fold(block, first, starts, stops, (1 << self.bits) - 1, w, total, header, codes,
                                          scratch, folded, keep_dropped)
            if first < len(rows):  # a row the native loop leaves to encode: the per-client path's own ops
                payloads[first], folded[first] = _fold_one(self, rows[first], client_ids[first], template,
                                                          float(w[first]), average, keep_dropped)
                alone.add(first)
                first += 1
        for i in range(len(rows)):
            if i not in alone:
                payloads[i] = header[i].tobytes() + codes[i].tobytes()
        return payloads, folded.tolist()

    def decode(self, payload: bytes, template: Update) -> Update:
        n = _template_size(template)
        _, bounds = _chunks(template, self.chunk)
        header = np.frombuffer(payload, dtype="<f4", count=2 * len(bounds))
        codes = torch.from_numpy(unpack_bits(payload[header.nbytes:], n, self.bits))
        out = torch.empty(n, dtype=torch.float32)
        for i, (start, stop) in enumerate(bounds):
            out[start:stop] = float(header[2 * i]) + codes[start:stop].to(torch.float32) * float(header[2 * i + 1])
        return unflatten(out, template)

    def error_bound(self, update: Update) -> float:
        """The largest possible |x̂ − x| for ``update``: ``scale/2`` (deterministic) or ``scale``
        (stochastic), plus float32 rounding of the decode (a few ulps of the largest |x|)."""
        vector, bounds = _chunks(update, self.chunk)
        scale = max(float(vector[a:b].max() - vector[a:b].min()) for a, b in bounds) / ((1 << self.bits) - 1)
        rounding = 4 * float(torch.finfo(torch.float32).eps) * float(vector.abs().max())
        return (scale if self.stochastic else scale / 2) + rounding

    def __repr__(self) -> str:
        return f"QuantizeCodec(bits={self.bits}, stochastic={self.stochastic}, chunk={self.chunk})"


class SignCodec:
    """signSGD with magnitude: one sign bit per value and one fp32 scale (mean |x|) per tensor.

    ``x̂ = sign(x) · mean|x|`` (zeros are sent as +); about 32× smaller than fp32.
    """

    name = "sign"
    folds = True

    def encode(self, update: Update, client_id: int = 0) -> bytes:
        vector, bounds = _chunks(update, None)
        scales = [float(vector[a:b].abs().mean()) if b > a else 0.0 for a, b in bounds]
        signs = (vector < 0).numpy().astype(np.uint8)
        return np.asarray(scales, dtype="<f4").tobytes() + pack_bits(signs, 1)

    def decode(self, payload: bytes, template: Update) -> Update:
        n = _template_size(template)
        _, bounds = _chunks(template, None)
        scales = np.frombuffer(payload, dtype="<f4", count=len(bounds))
        negative = torch.from_numpy(unpack_bits(payload[scales.nbytes:], n, 1).astype(bool))
        out = torch.empty(n, dtype=torch.float32)
        for i, (a, b) in enumerate(bounds):
            out[a:b] = float(scales[i])
        out[negative] *= -1
        return unflatten(out, template)

    def __repr__(self) -> str:
        return "SignCodec()"


def _k(fraction: float, n: int) -> int:
    return max(1, min(n, math.ceil(fraction * n)))


class _Sparse:
    """Shared value handling of the sparsifiers: fp32 values, or a value codec (composition)."""

    def __init__(self, fraction: float, values=None):
        self.fraction = check_fraction("topk_fraction", fraction)
        self.values = values

    def _encode_values(self, kept: torch.Tensor, client_id: int) -> bytes:
        if self.values is None:
            return kept.numpy().astype("<f4").tobytes()
        return self.values.encode({"values": kept}, client_id)

    def _decode_values(self, payload: bytes, k: int) -> torch.Tensor:
        if self.values is None:
            return torch.from_numpy(np.frombuffer(payload, dtype="<f4", count=k).copy())
        return self.values.decode(payload, {"values": torch.zeros(k)})["values"]

    def _suffix(self) -> str:
        return "" if self.values is None else f"+{self.values.name}"

    @property
    def folds(self) -> bool:
        """Declared when the kept values travel as fp32 or through a value codec that folds."""
        return self.values is None or folds(self.values)

    def reset(self) -> None:
        """Reset the value codec's state, if it has any (a stochastic quantizer's counters)."""
        reset_state(self.values)

    def state_dict(self) -> dict:
        return {"values": object_state(self.values, "values")}

    def load_state_dict(self, state: dict) -> None:
        load_object_state(self.values, state.get("values"), "values")


#: :func:`topk_indices` samples about ``_SAMPLED`` values of a row (evenly strided) and sets its
#: threshold so that about ``_CANDIDATES``·k values of the row lie above it.
_SAMPLED, _CANDIDATES = 1536, 2


def topk_indices(values: torch.Tensor, k: int) -> torch.Tensor:
    """The column indices, in increasing order, of the ``k`` values largest in magnitude of each row
    of ``values`` (a 2-D float CPU tensor): the set ``torch.topk(row.abs(), k, sorted=False)`` selects.

    Exact and cheaper than a top-k over the whole row: a strided sample of the row sets a threshold
    that about twice ``k`` magnitudes pass; the ``k``-th largest of those candidates is the row's
    ``k``-th largest.  When exactly ``k`` magnitudes of the row are at least that large, the top-k set
    is unique, so it is what ``torch.topk`` selects.  Otherwise (fewer than ``k`` candidates, the
    ``k``-th value tied, a NaN, a row too small to sample, ``k`` above a quarter of the row, values
    other than float32) the row goes to ``torch.topk`` itself, which then decides the ties as it always has."""
    rows = values.shape[0]
    out = torch.empty((rows, k), dtype=torch.int64)
    decided = _topk_by_threshold(values.detach().contiguous().numpy(), k, out.numpy())
    rest = np.flatnonzero(~decided)
    if rest.size == rows:
        out = torch.topk(values.detach().abs(), k, dim=1, sorted=False).indices
        return torch.sort(out, dim=1).values
    if rest.size:
        at = torch.from_numpy(rest)
        out[at] = torch.sort(torch.topk(values.detach()[at].abs(), k, dim=1, sorted=False).indices, dim=1).values
    return out


def _topk_by_threshold(values: np.ndarray, k: int, out: np.ndarray) -> np.ndarray:
    """Fill ``out``'s rows whose top-k set (by magnitude) is unique (see :func:`topk_indices`); say
    which (bool per row)."""
    rows, n = values.shape
    decided = np.zeros(rows, dtype=bool)
    stride = max(1, n // _SAMPLED)
    wanted = -(-_CANDIDATES * k // stride) + 4  # sampled values at or above the threshold
    if rows == 0 or wanted >= -(-n // stride) or 4 * k > n or values.dtype != np.float32:
        return decided
    from fedlab_utils.compression import kernels  # numba compiles on first use: only when it is needed
    kernels.topk_select(values, k, stride, wanted, out, decided, np.empty(n + 8, np.int64), np.empty(n + 8, np.float32),
                        np.zeros(-(-n // 8) * 8, np.uint8))
    return decided


class _Scratch:
    """A float32 block kept between calls of a block encoding: a fresh block of a few megabytes would
    cost the kernel's page faults every time.  Copies and pickles start empty."""

    def __init__(self) -> None:
        self._block: torch.Tensor | None = None

    def take(self, rows: int, numel: int) -> torch.Tensor:
        """A contiguous ``(rows, numel)`` block, its values undefined."""
        if self._block is None or self._block.shape[1] != numel or self._block.shape[0] < rows:
            self._block = torch.empty((rows, numel), dtype=torch.float32)
        return self._block[:rows]

    def __deepcopy__(self, memo) -> _Scratch:
        return _Scratch()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._block = None


def _sparse_payloads(index: np.ndarray, values: np.ndarray, width: int) -> list[bytes | Exception]:
    """Each row's ``pack_bits(index[i], width) + values[i]`` (fp32, little-endian); the whole block is
    packed at once when every row's indices fill whole bytes."""
    rows, k = index.shape
    if (k * width) % 8:
        return [pack_bits(index[i], width) + values[i].astype("<f4").tobytes() for i in range(rows)]
    packed = np.frombuffer(pack_bits(index, width), dtype=np.uint8).reshape(rows, -1)
    block = np.empty((rows, packed.shape[1] + 4 * k), dtype=np.uint8)
    block[:, :packed.shape[1]] = packed
    block[:, packed.shape[1]:] = np.ascontiguousarray(values, dtype="<f4").view(np.uint8).reshape(rows, 4 * k)
    return [block[i].tobytes() for i in range(rows)]


class TopKCodec(_Sparse):
    """Keep the ``fraction`` of entries largest in magnitude (over the whole update).

    Payload: ``k`` sorted indices bit-packed at ``ceil(log2 n)`` bits (16 for up to 65,536
    parameters), then the kept values -- fp32, or encoded by ``values`` (e.g.
    ``QuantizeCodec(8)``: top-k then quantize the kept values).  The kept set is
    ``torch.topk``'s, found by :func:`topk_indices`.
    """

    def __init__(self, fraction: float = 0.01, values=None):
        super().__init__(fraction, values)
        self.name = f"top{100 * self.fraction:g}%" + self._suffix()

    def encode(self, update: Update, client_id: int = 0) -> bytes:
        vector = flatten(update)
        k = _k(self.fraction, vector.numel())
        idx = topk_indices(vector.unsqueeze(0), k)[0]
        return pack_bits(idx.numpy(), index_bits(vector.numel())) + self._encode_values(vector[idx], client_id)

    def encode_rows(self, rows: torch.Tensor, client_ids, template: Update):
        """Top-k of a block of clients (one flat update per row) with fp32 values: the payloads
        ``encode`` sends and what ``decode`` makes of them; ``None`` with a value codec."""
        if self.values is not None:
            return None
        n = rows.shape[1]
        k, width = _k(self.fraction, n), index_bits(n)
        idx = topk_indices(rows, k)
        kept = torch.gather(rows, 1, idx)
        decoded = torch.zeros(rows.shape, dtype=torch.float32).scatter_(1, idx, kept)
        return _sparse_payloads(idx.numpy(), kept.numpy(), width), decoded

    def folds_rows(self, template: Update) -> bool:
        """Whether :meth:`fold_rows` takes a block: the kept values travel as fp32."""
        return self.values is None

    def fold_rows(self, rows: torch.Tensor, client_ids, template: Update, weights: torch.Tensor,
                  average: torch.Tensor, keep_dropped: bool = False):
        """Encode a block of clients and fold them (:func:`fold_rows`): only each client's ``k`` kept
        values are added to ``average`` (a decoded update is zero elsewhere); ``None`` with a value codec."""
        if not self.folds_rows(template) or not _native_block(rows, average):
            return None
        from fedlab_utils.compression import kernels  # numba compiles on first use: only when it is needed
        n = rows.shape[1]
        k, width = _k(self.fraction, n), index_bits(n)
        idx = topk_indices(rows, k).numpy()
        kept = np.empty((len(rows), k), dtype=np.float32)
        folded = np.zeros(len(rows), dtype=bool)
        kernels.sparse_fold(rows.numpy(), idx, _weights(weights), average.numpy(), kept, folded, keep_dropped)
        return _sparse_payloads(idx, kept, width), folded.tolist()

    def decode(self, payload: bytes, template: Update) -> Update:
        n = _template_size(template)
        k, width = _k(self.fraction, n), index_bits(n)
        split = packed_len(k, width)
        idx = torch.from_numpy(unpack_bits(payload[:split], k, width))
        out = torch.zeros(n, dtype=torch.float32)
        out[idx] = self._decode_values(payload[split:], k)
        return unflatten(out, template)

    def __repr__(self) -> str:
        return f"TopKCodec(fraction={self.fraction}, values={self.values!r})"


class RandomKCodec(_Sparse):
    """Keep a random ``fraction`` of entries.  The indices cost 4 bytes: the receiver regenerates
    them from a uint32 seed sent in front of the values (the minimal index width is a seed).

    ``x̂`` is *not* rescaled by n/k (biased, meant for use with :class:`ErrorFeedback`);
    with ``unbiased=True`` kept values are multiplied by n/k so ``E[x̂] = x``.
    """

    def __init__(self, fraction: float = 0.01, values=None, unbiased: bool = False, seed: int = 0):
        super().__init__(fraction, values)
        self.unbiased, self.seed = bool(unbiased), seed
        self._calls: dict[int, int] = {}
        self.name = f"rand{100 * self.fraction:g}%" + self._suffix()

    @staticmethod
    def _indices(seed: int, n: int, k: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return torch.sort(torch.randperm(n, generator=generator)[:k]).values

    def reset(self) -> None:
        """Restart every client's call counter (a new run draws the same index sets)."""
        self._calls.clear()
        super().reset()

    def state_dict(self) -> dict:
        """Each client's call counter (it seeds the next index set) and the value codec's state."""
        return {**super().state_dict(), "calls": _calls_state(self._calls)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._calls = _calls_state(state["calls"])

    def encode(self, update: Update, client_id: int = 0) -> bytes:
        vector = flatten(update)
        n = vector.numel()
        k = _k(self.fraction, n)
        seed = _seed_for_call(self._calls, self.seed, client_id)
        kept = vector[self._indices(seed, n, k)] * (n / k if self.unbiased else 1.0)
        return np.asarray([seed], dtype="<u4").tobytes() + self._encode_values(kept, client_id)

    def decode(self, payload: bytes, template: Update) -> Update:
        n = _template_size(template)
        k = _k(self.fraction, n)
        seed = int(np.frombuffer(payload, dtype="<u4", count=1)[0])
        out = torch.zeros(n, dtype=torch.float32)
        out[self._indices(seed, n, k)] = self._decode_values(payload[4:], k)
        return unflatten(out, template)

    def __repr__(self) -> str:
        return f"RandomKCodec(fraction={self.fraction}, values={self.values!r}, unbiased={self.unbiased})"


#: RAM that :class:`ResidualStore` gives residual rows by default before it spills to its file.
RESIDUAL_RAM_BYTES = 256 * 2**20
_SLAB_BYTES = 64 * 2**20  # RAM rows are allocated in blocks of about this size


def _copy_file(source: int, target: int) -> None:
    """Every byte of file descriptor ``source`` into ``target``, at the same offsets."""
    size, done = os.fstat(source).st_size, 0
    while done < size:
        chunk = os.pread(source, min(size - done, 64 * 2**20), done)
        if not chunk:
            raise OSError(f"the residual file ended at {done} of {size} bytes")
        done += os.pwrite(target, chunk, done)


def _after_fork_in_child() -> None:
    for store in list(_FILED.values()):
        store._own_copy()


_FILED: weakref.WeakValueDictionary[int, ResidualStore] = weakref.WeakValueDictionary()  # stores with a file, by id
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class ResidualStore(MutableMapping):
    """Error feedback's residuals, client id → update: in RAM up to a budget, beyond it in a file.

    A residual written as one float32 row (every block that :meth:`ErrorFeedback.encode_rows` encodes,
    and any float32 CPU residual of the model the rows hold) takes a *slot*: the first
    ``ram_bytes // (4·parameters)`` slots are rows of large blocks in RAM (about 64 MiB each, so
    thousands of residuals never scatter across the heap), the others rows of a temporary file,
    read and written with ``os.preadv``/``os.pwritev`` (never mapped: the file's pages are the page
    cache's, not the process's resident memory).  The values are the same float32 bits either way,
    so spilling changes no result.  Any other residual (another dtype, on a GPU) stays a dict in RAM.

    Cost: at most ``ram_bytes`` of RAM for the rows (``None``: no budget, never a file), plus
    ``4·parameters`` file bytes per client beyond it: at 10,000 clients of a 50,890-parameter model
    and 256 MiB, 1,318 rows in RAM and a file of 1.65 GiB (:attr:`file_bytes`).  The file is created
    in ``directory`` (default :func:`tempfile.gettempdir`, so ``TMPDIR``), unlinked from the start:
    it has no name, and the operating system frees it when :meth:`clear` runs, the store is
    garbage-collected or the process ends, even on a crash.  A forked child process copies the file
    (as it copies memory), so the two never write each other's residuals.  A read returns a copy (a
    snapshot that later writes leave alone).
    """

    def __init__(self, ram_bytes: int | None = RESIDUAL_RAM_BYTES, directory: str | None = None):
        self.ram_bytes = None if ram_bytes is None else check_int("ram_bytes", ram_bytes, 0)
        self.directory = directory
        self._file: BinaryIO | None = None
        self._empty()

    def _empty(self) -> None:
        self._close()
        self._where: dict[int, int | Update] = {}  # a client's slot, or its residual as a dict
        self._layout: tuple[tuple[str, tuple[int, ...]], ...] | None = None  # names and shapes of the rows
        self._place: dict[str, tuple[torch.dtype, torch.device]] = {}  # what a row's tensors are read back as
        self._numel, self._ram_rows, self._slab_rows = 0, 0, 1
        self._slabs: list[torch.Tensor] = []
        self._slots = 0  # slots handed out
        self._free: list[int] = []  # slots given back, handed out again first

    def _close(self) -> None:
        if self._file is not None:
            self._closer()
            self._file = None

    # ------------------------------------------------------------------ the mapping
    def __getitem__(self, client_id: int) -> Update:
        where = self._where[client_id]
        if isinstance(where, dict):
            return where
        row = torch.empty((1, self._numel), dtype=torch.float32)
        self._read([where], row)
        return self._unflatten(row[0])

    def __setitem__(self, client_id: int, residual: Update) -> None:
        layout = tuple((name, tuple(t.shape)) for name, t in residual.items())
        place = {name: (t.dtype, t.device) for name, t in residual.items()}
        as_row = all(t.dtype == torch.float32 and t.device.type == "cpu" for t in residual.values()) and \
            ((self._layout, self._place) == (layout, place) or not self._rows_held())
        if not as_row:
            if client_id in self._where:
                del self[client_id]
            self._where[client_id] = residual
            return
        self._adopt(layout, place)
        self.write_rows([client_id], flatten(residual).unsqueeze(0))

    def __delitem__(self, client_id: int) -> None:
        where = self._where.pop(client_id)
        if not isinstance(where, dict):
            self._free.append(where)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._where

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def clear(self) -> None:
        """Forget every residual, give the RAM back and delete the file."""
        self._empty()

    def __repr__(self) -> str:
        return (f"ResidualStore({len(self)} clients, {min(self._slots, self._ram_rows)} rows in RAM, "
                f"{self.file_bytes} file bytes)")

    @property
    def file_bytes(self) -> int:
        """Size of the spill file (0 when nothing spilled)."""
        return 0 if self._file is None else os.fstat(self._file.fileno()).st_size

    @property
    def ram_row_bytes(self) -> int:
        """RAM taken by the blocks of rows."""
        return sum(slab.numel() * 4 for slab in self._slabs)

    # ------------------------------------------------------------------ blocks of rows
    def use_layout(self, template: Update) -> None:
        """Rows hold updates shaped like ``template`` (read back with its dtypes and devices).  A
        store that holds rows of another model refuses: ``clear()`` it first."""
        layout = tuple((name, tuple(t.shape)) for name, t in template.items())
        if self._layout is not None and self._layout != layout and self._rows_held():
            raise ValueError(f"the residuals held are for a model of {self._numel} parameters in tensors "
                             f"{[n for n, _ in self._layout]}; this update is another model's: reset() first")
        self._adopt(layout, {name: (t.dtype, t.device) for name, t in template.items()})

    def read_rows(self, client_ids, numel: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Every client's residual as one float32 row (zeros for a client without one), in ``out``
        (contiguous, one row per client) or a new tensor."""
        out = torch.empty((len(client_ids), numel), dtype=torch.float32) if out is None else out
        slots, at = [], []
        for i, cid in enumerate(client_ids):
            where = self._where.get(cid)
            if isinstance(where, dict):
                out[i] = flatten(where)
            elif where is not None:
                slots.append(where)
                at.append(i)
            else:
                out[i] = 0.0
        if slots:
            if at == list(range(at[0], at[0] + len(at))):
                self._read(slots, out[at[0]:at[0] + len(at)])
            else:
                part = torch.empty((len(slots), numel), dtype=torch.float32)
                self._read(slots, part)
                out[torch.tensor(at)] = part
        return out

    def write_rows(self, client_ids, rows: torch.Tensor) -> None:
        """Keep ``rows[i]`` (float32, the layout's model) as client ``client_ids[i]``'s residual."""
        if self._layout is None or rows.shape[1] != self._numel:
            raise ValueError(f"rows of {rows.shape[1]} values, but the store holds rows of {self._numel}: "
                             "use_layout() first")
        slots = []
        for cid in client_ids:
            where = self._where.get(cid)
            if where is None or isinstance(where, dict):
                where = self._free.pop() if self._free else self._next_slot()
                self._where[cid] = where
            slots.append(where)
        self._write(slots, rows.contiguous())

    # ------------------------------------------------------------------ slots
    def _rows_held(self) -> bool:
        return any(not isinstance(w, dict) for w in self._where.values())

    def _adopt(self, layout, place: dict[str, tuple[torch.dtype, torch.device]]) -> None:
        if self._layout != layout:  # no rows held (checked by the callers): start the row store afresh
            for cid in [c for c, w in self._where.items() if not isinstance(w, dict)]:
                del self._where[cid]
            self._close()
            self._layout, self._numel = layout, sum(math.prod(shape) for _, shape in layout)
            self._slabs, self._slots, self._free = [], 0, []
            row_bytes = 4 * max(1, self._numel)
            self._ram_rows = sys.maxsize if self.ram_bytes is None else self.ram_bytes // row_bytes
            self._slab_rows = max(1, min(4096, _SLAB_BYTES // row_bytes, self._ram_rows))
        self._place = place

    def _next_slot(self) -> int:
        slot, self._slots = self._slots, self._slots + 1
        if slot < self._ram_rows and slot // self._slab_rows == len(self._slabs):
            rows = min(self._slab_rows, self._ram_rows - slot)
            self._slabs.append(torch.empty((rows, self._numel), dtype=torch.float32))
        return slot

    def _unflatten(self, row: torch.Tensor) -> Update:
        out, start = {}, 0
        for name, shape in self._layout or ():  # rows are only held once a layout is adopted
            size = math.prod(shape)
            dtype, device = self._place[name]
            out[name] = row[start:start + size].reshape(shape).to(device, dtype)
            start += size
        return out

    def _runs(self, slots: list[int]):
        """``(first, last, slot)``: consecutive positions whose slots are consecutive in one RAM block
        (``slot < ram rows``) or in the file, so each run is one copy or one system call."""
        first = 0
        for i in range(1, len(slots) + 1):
            if i == len(slots) or slots[i] != slots[i - 1] + 1 or self._region(slots[i]) != self._region(slots[first]):
                yield first, i, slots[first]
                first = i

    def _region(self, slot: int) -> int:
        return slot // self._slab_rows if slot < self._ram_rows else -1

    def _read(self, slots: list[int], out: torch.Tensor) -> None:
        for first, last, slot in self._runs(slots):
            if slot < self._ram_rows:
                block, row = divmod(slot, self._slab_rows)
                out[first:last].copy_(self._slabs[block][row:row + last - first])
            else:
                self._transfer(os.preadv, out[first:last], slot)

    def _write(self, slots: list[int], rows: torch.Tensor) -> None:
        for first, last, slot in self._runs(slots):
            if slot < self._ram_rows:
                block, row = divmod(slot, self._slab_rows)
                self._slabs[block][row:row + last - first].copy_(rows[first:last])
            else:
                self._transfer(os.pwritev, rows[first:last], slot)

    def _transfer(self, call, rows: torch.Tensor, slot: int) -> None:
        """``os.preadv`` or ``os.pwritev`` of contiguous ``rows`` at ``slot``'s offset in the file."""
        buffer = rows.numpy().data.cast("B")
        offset, done = (slot - self._ram_rows) * 4 * self._numel, 0
        try:
            file = self._file if self._file is not None else self._open()
            fd = file.fileno()
            while done < len(buffer):  # a regular file moves everything at once; loop for a rare partial call
                moved = call(fd, [buffer[done:]], offset + done)
                if moved <= 0:
                    raise OSError(f"{call.__name__} moved {moved} bytes at offset {offset + done}")
                done += moved
        except OSError as err:
            where = self.directory or tempfile.gettempdir()
            raise OSError(f"error feedback's residual file in {where!r} failed ({err}); it needs 4 bytes per "
                          f"parameter for every client beyond ram_bytes={self.ram_bytes}: give ErrorFeedback a "
                          f"spill_dir with room, or a larger ram_bytes (None keeps every residual in RAM)") from err

    def _open(self, copy_of: int | None = None) -> BinaryIO:
        """A new unnamed file (with the bytes of file descriptor ``copy_of``, when given), now the store's."""
        file = tempfile.TemporaryFile(dir=self.directory, prefix="fedlab-ef-residuals-", buffering=0)
        self._file = file
        self._closer = weakref.finalize(self, file.close)
        if copy_of is not None:
            _copy_file(copy_of, file.fileno())
        _FILED[id(self)] = self
        return file

    def _own_copy(self) -> None:
        """In a child process just forked: copy the file, as the child's memory is a copy of the
        parent's, so that neither process writes the other's residuals."""
        if self._file is not None:
            inherited = self._file
            self._closer.detach()
            self._open(copy_of=inherited.fileno())
            inherited.close()  # the child's descriptor only: the parent's file stays open

    # ------------------------------------------------------------------ copies
    def __getstate__(self) -> dict:
        return {"ram_bytes": self.ram_bytes, "directory": self.directory,
                "residuals": [(cid, self[cid]) for cid in self._where]}

    def __setstate__(self, state: dict) -> None:
        self.ram_bytes, self.directory, self._file = state["ram_bytes"], state["directory"], None
        self._empty()
        for cid, residual in state["residuals"]:
            self[cid] = residual


class ErrorFeedback:
    """Error feedback (Stich et al. 2018; Karimireddy et al. 2019) around any lossy codec.

    Each client keeps a residual ``e`` of what compression dropped so far and sends
    ``C(u + e)``, then keeps ``e ← (u + e) − decode(C(u + e))``.  So after every round
    ``residual_new + sent == update + residual_old`` exactly: nothing is lost, only delayed.
    The wire format (and size) is the inner codec's.  It folds when its inner codec does: each
    client's residual is its own, kept here (never in a round's block of updates).

    ``residuals`` (client id → update) is a :class:`ResidualStore`: one float32 residual per client
    that has sent, 4 bytes per parameter each, in RAM up to ``ram_bytes`` (default 256 MiB) and
    beyond that in an unnamed temporary file in ``spill_dir`` (default: the system's temporary
    directory); at 10,000 clients of the course's MLP that is 1,941 MiB of residuals, 256 MiB of
    them in RAM.  The bits are the same wherever they are kept, so results do not change.
    """

    def __init__(self, inner, ram_bytes: int | None = RESIDUAL_RAM_BYTES, spill_dir: str | None = None):
        self.inner = inner
        self._residuals = ResidualStore(ram_bytes, spill_dir)  # state, not configuration: no part of its spec
        self._block = _Scratch()  # the block's corrected rows, then its new residuals
        self.name = f"EF({getattr(inner, 'name', type(inner).__name__)})"

    @property
    def residuals(self) -> ResidualStore:
        """Each client's residual, client id → update (a snapshot on every read)."""
        return self._residuals

    @property
    def folds(self) -> bool:
        """Declared when the inner codec's is."""
        return folds(self.inner)

    def encode_rows(self, rows: torch.Tensor, client_ids, template: Update):
        """``encode`` for a block of clients (one flat update per row), through the inner codec's own
        block encoding when it has one (``None`` otherwise): each client's residual is added to its
        row, the inner codec encodes the block, and each residual becomes what it dropped."""
        if not callable(getattr(self.inner, "encode_rows", None)):
            return None
        corrected = self._corrected(rows, client_ids, template)
        payloads, decoded = encode_rows(self.inner, corrected, client_ids, template)
        if decoded.untyped_storage().data_ptr() == corrected.untyped_storage().data_ptr():
            decoded = decoded.clone()  # the inner codec handed the rows back: the caller's to keep
        self._keep_dropped(client_ids, payloads, corrected.sub_(decoded))  # in place: the block is ours
        return payloads, decoded

    def folds_rows(self, template: Update) -> bool:
        """Whether :meth:`fold_rows` takes a block: its inner codec's does."""
        inner = getattr(self.inner, "folds_rows", None)
        return callable(inner) and bool(inner(template))

    def fold_rows(self, rows: torch.Tensor, client_ids, template: Update, weights: torch.Tensor,
                  average: torch.Tensor, keep_dropped: bool = False):
        """Encode a block of clients and fold them (:func:`fold_rows`) through the inner codec's own
        ``fold_rows``: each client's residual is added to its row, the inner codec folds the block and
        leaves in it what it dropped, which becomes each client's residual; ``None`` where the inner
        codec has no block fold."""
        if keep_dropped or not self.folds_rows(template):
            return None
        corrected = self._corrected(rows, client_ids, template)
        done = self.inner.fold_rows(corrected, client_ids, template, weights, average, keep_dropped=True)
        if done is None:  # the inner codec declines this block (say, a running sum it cannot read): no residual changed
            return None
        self._keep_dropped(client_ids, done[0], corrected)
        return done

    def _corrected(self, rows: torch.Tensor, client_ids, template: Update) -> torch.Tensor:
        """Each client's residual plus its row, in the block buffer (a client without a residual adds 0,
        as ``encode`` does)."""
        self.residuals.use_layout(template)
        corrected = self.residuals.read_rows(client_ids, rows.shape[1], self._block.take(*rows.shape))
        return corrected.add_(rows)

    def _keep_dropped(self, client_ids, payloads: list, dropped: torch.Tensor) -> None:
        """Each sent client's residual becomes its row of ``dropped``; a client whose encoding raised
        keeps its old residual, as ``encode`` leaves it."""
        sent = [i for i, payload in enumerate(payloads) if not isinstance(payload, Exception)]
        if len(sent) == len(client_ids):
            self.residuals.write_rows(client_ids, dropped)
        elif sent:
            self.residuals.write_rows([client_ids[i] for i in sent], dropped[sent])

    def encode(self, update: Update, client_id: int = 0) -> bytes:
        old = self.residuals.get(client_id)
        corrected = {k: v.detach() + (old[k] if old is not None else 0) for k, v in update.items()}
        payload = self.inner.encode(corrected, client_id)
        sent = self.inner.decode(payload, corrected)
        self.residuals[client_id] = {k: corrected[k] - sent[k] for k in corrected}
        return payload

    def decode(self, payload: bytes, template: Update) -> Update:
        return self.inner.decode(payload, template)

    def reset(self) -> None:
        """Forget every client's residual (start a new run; the spill file is deleted)."""
        self.residuals.clear()
        reset_state(self.inner)

    def state_dict(self) -> dict:
        """Every client's residual (and the inner codec's state), for a checkpoint."""
        return {"residuals": {int(c): dict(r) for c, r in self.residuals.items()},
                "inner": object_state(self.inner, "inner")}

    def load_state_dict(self, state: dict) -> None:
        self.residuals.clear()
        for c, r in state["residuals"].items():
            self.residuals[int(c)] = dict(r)
        load_object_state(self.inner, state.get("inner"), "inner")

    def __repr__(self) -> str:
        return f"ErrorFeedback({self.inner!r})"

_DENSE, _BITMASK, _INDICES = 0, 1, 2
_FORMATS = {_DENSE: "dense", _BITMASK: "bitmask", _INDICES: "indices"}


def sparse_payload_size(numel: int, nnz: int) -> dict[str, int]:
    """Bytes of each :class:`SparseCodec` format for ``nnz`` nonzeros among ``numel`` values.

    * ``dense``:   1-byte tag + 4·numel
    * ``bitmask``: 1-byte tag + 4-byte count + ⌈numel/8⌉ + 4·nnz
    * ``indices``: 1-byte tag + 4-byte count + ⌈nnz·w/8⌉ + 4·nnz, with w = ⌈log₂ numel⌉ bits

    ``'best'`` is the smallest: what the codec sends.
    """
    check_int("numel", numel, 1)
    check_int("nnz", nnz, 0, numel)
    sizes = {"dense": 1 + 4 * numel, "bitmask": 5 + packed_len(numel, 1) + 4 * nnz,
             "indices": 5 + packed_len(nnz, index_bits(numel)) + 4 * nnz}
    sizes["best"] = min(sizes.values())
    return sizes


class SparseCodec:
    """Lossless sparse payload for masked updates: only nonzero values travel, plus their positions.

    Both ends know the architecture (the template), so no names or shapes are sent.  The
    update is flattened in key order; with N values of which k are nonzero, the payload is
    the smallest of three formats (see :func:`sparse_payload_size`):

    ========  ====================================================================
    tag 0     dense: N little-endian float32 (never worse than fp32 + 1 byte)
    tag 1     k (uint32) · a bitmask of N bits · the k float32 values
    tag 2     k (uint32) · k indices bit-packed at ⌈log₂ N⌉ bits each · the k values
    ========  ====================================================================

    Decoding gives back the exact values (``-0.0`` comes back as ``0.0``).  ``last_format``
    says which format the last ``encode`` chose.
    """

    name = "sparse"

    def __init__(self) -> None:
        self.last_format: str | None = None

    def encode(self, update: Update, client_id: int = 0) -> bytes:
        values = flatten(update).numpy()
        nonzero = np.flatnonzero(values != 0)
        sizes = sparse_payload_size(values.size, int(nonzero.size))
        if sizes["best"] == sizes["dense"]:
            self.last_format = "dense"
            return bytes([_DENSE]) + values.astype("<f4").tobytes()
        kept = values[nonzero].astype("<f4").tobytes()
        if sizes["best"] == sizes["bitmask"]:
            self.last_format = "bitmask"
            return struct.pack("<BI", _BITMASK, nonzero.size) + pack_bits(values != 0, 1) + kept
        self.last_format = "indices"
        positions = pack_bits(nonzero, index_bits(values.size))
        return struct.pack("<BI", _INDICES, nonzero.size) + positions + kept

    def decode(self, payload: bytes, template: Update) -> Update:
        numel = sum(t.numel() for t in template.values())
        tag = payload[0]
        if tag == _DENSE:
            vector = np.frombuffer(payload, dtype="<f4", offset=1).copy()
            return unflatten(torch.from_numpy(vector), template)
        if tag not in _FORMATS:
            raise ValueError(f"not a SparseCodec payload (format tag {tag})")
        (count,) = struct.unpack_from("<I", payload, 1)
        width = 1 if tag == _BITMASK else index_bits(numel)
        codes = numel if tag == _BITMASK else count
        start = 5 + packed_len(codes, width)
        if len(payload) != start + 4 * count:
            raise ValueError(f"corrupt SparseCodec payload: {len(payload)} bytes, but a {_FORMATS[tag]} payload of "
                             f"{count} values among {numel} needs {start + 4 * count}")
        unpacked = unpack_bits(payload[5:start], codes, width)
        positions = np.flatnonzero(unpacked) if tag == _BITMASK else unpacked
        if positions.size != count or (count and int(positions.max()) >= numel):
            raise ValueError(f"corrupt SparseCodec payload: header says {count} values, the positions say "
                             f"{positions.size}")
        vector = np.zeros(numel, dtype=np.float32)
        vector[positions] = np.frombuffer(payload, dtype="<f4", count=count, offset=start)
        return unflatten(torch.from_numpy(vector), template)

    def __repr__(self) -> str:
        return "SparseCodec()"


class SparseQuantizeCodec:
    """A pruned model on the wire: a bitmap of which values are nonzero, then only the nonzero
    values, quantized to ``bits`` bits (:class:`~fedlab_utils.compression.QuantizeCodec`).

    Payload: ``k`` (uint32) · ``N`` bits of bitmap · the quantized values.  Zeros come back as
    exact zeros, so the mask survives the trip; a dense model costs one bit per value more than
    plain quantization.
    """

    def __init__(self, bits: int = 8, chunk: int | None = None):
        self.values = QuantizeCodec(bits, chunk=chunk)
        self.bits = bits
        self.name = f"sparse+q{bits}"

    def encode(self, update: Update, client_id: int = 0) -> bytes:
        vector = flatten(update)
        nonzero = vector != 0
        header = struct.pack("<I", int(nonzero.sum()))
        return header + pack_bits(nonzero.numpy(), 1) + self.values.encode({"values": vector[nonzero]}, client_id)

    def decode(self, payload: bytes, template: Update) -> Update:
        n = sum(t.numel() for t in template.values())
        (k,) = struct.unpack_from("<I", payload)
        start = 4 + packed_len(n, 1)
        nonzero = torch.from_numpy(unpack_bits(payload[4:start], n, 1).astype(bool))
        if int(nonzero.sum()) != k:
            raise ValueError(f"corrupt SparseQuantizeCodec payload: header says {k} values, the bitmap {int(nonzero.sum())}")
        out = torch.zeros(n, dtype=torch.float32)
        if k:
            out[nonzero] = self.values.decode(payload[start:], {"values": torch.zeros(k)})["values"]
        return unflatten(out, template)

    def __repr__(self) -> str:
        return f"SparseQuantizeCodec(bits={self.bits})"
