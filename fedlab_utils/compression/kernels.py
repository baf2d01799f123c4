"""Native loops (numba) of the folding path: a block of clients encoded, decoded and added to the
running FedAvg sum in a few passes over each row, instead of a dozen tensor operations each.

Each loop performs the per-client path's float operations one by one in IEEE float32 (numba never
fuses a multiply and an add unless asked), so what it sends is byte for byte ``encode``'s payload,
what it folds is bit for bit ``average + w · decode(payload)``, and a row it cannot match exactly
(a NaN or infinity, an extreme that is zero, whose sign the tensor library decides, a top-k set
with a tie) is left to the caller, which takes the codec's own per-client path for it.
Compiled on first use and cached next to this file (or in numba's per-user cache).
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["quantize_fold", "topk_select", "sparse_fold"]

_EXPONENT = np.int32(0x7F800000)
_LOW31 = np.int32(0x7FFFFFFF)


@njit(cache=True, nogil=True)
def _range(bits: np.ndarray) -> tuple[np.int32, np.int32, bool]:
    """Smallest and largest of float32 values given as their int32 bits, in an integer order that
    is the float order (so the loop vectorizes), and whether every value is finite."""
    lo, hi, bad = np.int32(2147483647), np.int32(-2147483648), np.int32(0)
    for j in range(bits.size):
        i = bits[j]
        key = i ^ ((i >> 31) & _LOW31)
        lo, hi = min(lo, key), max(hi, key)
        bad |= np.int32((i & _EXPONENT) == _EXPONENT)
    return lo, hi, bad == 0


@njit(cache=True, nogil=True)
def _float_of(key: np.int32) -> np.float32:
    bits = np.empty(1, np.int32)
    bits[0] = key ^ ((key >> 31) & _LOW31)
    return bits.view(np.float32)[0]


@njit(cache=True, nogil=True, inline="never")
def _quantize(row, lo, scale, levels, code, decoded) -> bool:
    """One chunk's codes and decoded values; whether every decoded value is finite.  (Each inner
    loop is a function of its own, over contiguous slices, so that it vectorizes.)"""
    zero, bad = np.float32(0), np.int32(0)
    for j in range(row.size):
        t = np.rint((row[j] - lo) / scale)
        t = zero if t < zero else t
        t = levels if t > levels else t
        code[j] = np.uint8(t)
        d = t * scale + lo
        decoded[j] = d
        bad |= np.int32((d - d) != zero)
    return bad == 0


@njit(cache=True, nogil=True, inline="never")
def _add_scaled(average, w, values) -> None:
    for j in range(values.size):
        average[j] = average[j] + w * values[j]


@njit(cache=True, nogil=True, inline="never")
def _subtract(row, values) -> None:
    for j in range(values.size):
        row[j] = row[j] - values[j]


@njit(cache=True, nogil=True)
def quantize_fold(rows, first, starts, stops, levels, weights, average, header, codes, scratch, folded,
                  keep_dropped):
    """:class:`~fedlab_utils.compression.codecs.QuantizeCodec`'s deterministic per-tensor encoding of
    ``rows[first:]`` (float32, one client per row), folded in row order.

    For each row: each chunk ``starts[c]:stops[c]`` gets ``lo`` = its min and ``scale`` =
    ``(max − lo)/levels`` (in float64, as ``encode``'s Python floats, then float32), written to
    ``header[i]``; its codes ``clamp(rint((x − lo)/scale), 0, levels)`` go to ``codes[i]``; the decoded
    row ``code·scale + lo`` is added as ``average + weights[i]·decoded`` when it is finite
    (``folded[i]``), and with ``keep_dropped`` the row becomes ``row − decoded``.  Stops at the first
    row that is not finite or has a chunk whose min or max is zero and returns its index (the
    caller encodes it on its own and calls again past it); ``len(rows)`` when all are done."""
    fl = np.float32(levels)
    for i in range(first, rows.shape[0]):
        row = rows[i]
        bits = row.view(np.int32)
        line, code = header[i], codes[i]
        for c in range(starts.size):
            lo_key, hi_key, finite = _range(bits[starts[c]:stops[c]])
            lo, hi = _float_of(lo_key), _float_of(hi_key)
            if not finite or lo == 0 or hi == 0:
                return i
            spread = np.float64(hi) - np.float64(lo)
            line[2 * c] = lo
            line[2 * c + 1] = np.float32(spread / levels) if spread > 0 else np.float32(1.0)
        ok = True
        for c in range(starts.size):
            a, b = starts[c], stops[c]
            ok &= _quantize(row[a:b], line[2 * c], line[2 * c + 1], fl, code[a:b], scratch[a:b])
        folded[i] = ok
        if ok:
            _add_scaled(average, weights[i], scratch)
        if keep_dropped:
            _subtract(row, scratch)
    return rows.shape[0]


@njit(cache=True, nogil=True, inline="never")
def _threshold(row, stride, wanted, top) -> np.float32:
    """The ``wanted``-th largest magnitude of the strided sample ``row[::stride]`` (NaN when the sample
    holds a NaN), kept in ``top`` (``wanted`` long, ascending) by insertion: few sampled values enter it."""
    top[:] = -np.inf
    for j in range(0, row.size, stride):
        m = abs(row[j])
        if m != m:
            return m
        if m > top[0]:
            at = 0
            while at + 1 < wanted and top[at + 1] < m:
                top[at] = top[at + 1]
                at += 1
            top[at] = m
    return top[0]


@njit(cache=True, nogil=True, inline="never")
def _mark(row, threshold, flags) -> bool:
    """``flags[j]`` = 1 where ``|row[j]|`` reaches ``threshold`` (the loop vectorizes); whether the row
    holds a NaN."""
    nan = np.int32(0)
    for j in range(row.size):
        m = abs(row[j])
        flags[j] = np.uint8(m >= threshold)
        nan |= np.int32(m != m)
    return nan != 0


@njit(cache=True, nogil=True, inline="never")
def _collect(row, flags, candidates, magnitudes) -> int:
    """The flagged positions (increasing) and their magnitudes; their count.  ``flags`` is padded with
    zeros to whole 8-byte words, read a word at a time, and a word's flags are taken without branches."""
    words = flags.view(np.uint64)
    found = 0
    for w in range(words.size):
        if words[w] != 0:
            for j in range(8 * w, 8 * w + 8):
                candidates[found] = j
                found += flags[j]
    for f in range(found):
        magnitudes[f] = abs(row[candidates[f]])
    return found


@njit(cache=True, nogil=True)
def topk_select(values, k, stride, wanted, out, decided, candidates, magnitudes, flags):
    """The column indices, increasing, of each row's ``k`` values largest in magnitude, in ``out[i]``
    where that set is unique (``decided[i]``): a strided sample of the row (``values[i, ::stride]``)
    sets a threshold that its ``wanted`` largest magnitudes reach; the ``k``-th largest of the row's
    magnitudes at or above it is the row's ``k``-th largest, and the set is unique when exactly ``k``
    magnitudes reach that.  A row with a NaN, fewer than ``k`` candidates or a tie is left undecided.
    ``candidates`` (int64) and ``magnitudes`` (float32) are work space of a row's length plus 8,
    ``flags`` (uint8) of the row's length rounded up to a multiple of 8, its padding zero."""
    n = values.shape[1]
    top = np.empty(wanted, np.float32)
    for i in range(values.shape[0]):
        decided[i] = False
        row = values[i]
        threshold = _threshold(row, stride, wanted, top)
        if threshold != threshold or _mark(row, threshold, flags[:n]):
            continue
        found = _collect(row, flags, candidates, magnitudes)
        if found < k:
            continue
        kth = np.partition(magnitudes[:found], found - k)[found - k]
        count = 0
        for f in range(found):
            count += magnitudes[f] >= kth
        if count != k:
            continue
        at = 0
        for f in range(found):
            if magnitudes[f] >= kth:
                out[i, at] = candidates[f]
                at += 1
        decided[i] = True


@njit(cache=True, nogil=True)
def sparse_fold(rows, index, weights, average, kept, folded, keep_dropped):
    """Top-k's fold of a block: ``kept[i] = rows[i, index[i]]``; when they are all finite (the
    decoded row, zero elsewhere, is then finite) ``average[index[i]] += weights[i]·kept[i]``, which
    is ``average + w · decoded`` bit for bit (``+ w·0`` changes no value: the running sum is never
    −0.0); with ``keep_dropped`` the kept entries of the row become ``x − x`` (what was dropped)."""
    for i in range(rows.shape[0]):
        row, at, out = rows[i], index[i], kept[i]
        bad = np.int32(0)
        for j in range(at.size):
            v = row[at[j]]
            out[j] = v
            bad |= np.int32((v - v) != np.float32(0))
        folded[i] = bad == 0
        if bad == 0:
            w = weights[i]
            for j in range(at.size):
                average[at[j]] = average[at[j]] + w * out[j]
        if keep_dropped:
            for j in range(at.size):
                row[at[j]] = row[at[j]] - out[j]
