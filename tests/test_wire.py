"""fedlab_utils.compression.wire: one bit order (most significant bit first), exact round trips, hand-computed
bytes, the minimal index width, and the measuring codec."""
import math

import numpy as np
import pytest
import torch

from fedlab_utils.compression import (
    ErrorFeedback,
    Fp32Codec,
    MeasuredCodec,
    SparseCodec,
    TopKCodec,
    index_bits,
    pack_bits,
    packed_len,
    payload_bytes,
    unpack_bits,
)


# ----------------------------------------------------------------------------- bit packing
def test_eight_one_bit_codes_pack_into_one_known_byte():
    assert pack_bits(np.array([1, 0, 1, 1, 0, 0, 0, 1]), 1) == bytes([0b10110001]) == bytes([177])


@pytest.mark.parametrize("codes, bits, expected", [
    ([5, 3], 3, [0b10101100]),                      # 101 011 + two padding zeros
    ([1], 1, [0b10000000]),                          # a lone bit is the top bit of its byte
    ([0x1FF], 9, [0xFF, 0x80]),                      # 9 ones, then 7 padding zeros
    ([1, 2, 3], 2, [0b01101100]),                    # 01 10 11 + padding
    ([0xABC, 0x123], 12, [0xAB, 0xC1, 0x23]),       # 12-bit codes are 1.5 bytes each
    ([0xAB, 0x01], 8, [0xAB, 0x01]),                 # 8-bit codes are plain bytes
    ([0xABCD], 16, [0xAB, 0xCD]),                    # 16-bit codes are big-endian
    ([0x80000001], 32, [0x80, 0x00, 0x00, 0x01]),   # 32-bit likewise
])
def test_pack_bits_hand_computed(codes, bits, expected):
    packed = pack_bits(np.array(codes), bits)
    assert packed == bytes(expected)
    assert unpack_bits(packed, len(codes), bits).tolist() == codes


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 7, 8, 11, 16, 17, 31, 32])
@pytest.mark.parametrize("count", [0, 1, 7, 1001])
def test_pack_unpack_round_trip_and_size(bits, count):
    rng = np.random.default_rng(bits * 1000 + count)
    codes = rng.integers(0, 2 ** bits, size=count, dtype=np.int64)
    packed = pack_bits(codes, bits)
    assert len(packed) == packed_len(count, bits) == math.ceil(count * bits / 8)
    assert np.array_equal(unpack_bits(packed, count, bits), codes)


def test_every_width_agrees_with_the_one_bit_stream():
    """Any width is the same MSB-first stream: unpacking 12-bit codes as bits gives their binary digits."""
    codes = np.array([0b101000000011, 0b000011110000, 0b111111111111])
    stream = unpack_bits(pack_bits(codes, 12), 36, 1)
    assert "".join(map(str, stream)) == "".join(format(int(c), "012b") for c in codes)


@pytest.mark.parametrize("codes, bits", [([0, 8], 3), ([-1], 4), ([2], 1)])
def test_pack_rejects_codes_that_do_not_fit(codes, bits):
    with pytest.raises(ValueError, match="codes must lie"):
        pack_bits(np.array(codes), bits)


@pytest.mark.parametrize("bits", [0, 33, 2.0])
def test_pack_names_a_bad_width(bits):
    with pytest.raises(ValueError, match="bits"):
        pack_bits(np.array([0]), bits)


def test_unpack_refuses_a_short_buffer():
    with pytest.raises(ValueError, match="need"):
        unpack_bits(bytes(2), 3, 7)  # 21 bits need 3 bytes


# ----------------------------------------------------------------------------- index width
@pytest.mark.parametrize("n, width", [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (256, 8), (257, 9), (50_890, 16),
                                      (65_536, 16), (65_537, 17), (2 ** 40, 40), (2 ** 40 + 1, 41)])
def test_index_bits_is_minimal(n, width):
    assert index_bits(n) == width
    assert 2 ** width >= n  # every position 0..n-1 fits
    assert n == 1 or 2 ** (width - 1) < n  # and one bit fewer would not


def test_index_bits_names_a_bad_size():
    with pytest.raises(ValueError, match="n=0"):
        index_bits(0)


def test_both_index_codecs_use_the_same_width_and_order():
    """Top-k and the sparse codec's index format carry the same positions in the same bits."""
    n = 1000
    vector = torch.zeros(n)
    positions = [3, 500, 999]
    vector[positions] = torch.tensor([1.0, -2.0, 3.0])
    width = index_bits(n)
    top = TopKCodec(fraction=3 / n).encode({"v": vector})
    sparse = SparseCodec()
    payload = sparse.encode({"v": vector})
    assert sparse.last_format == "indices"
    expected = pack_bits(np.array(positions), width)
    assert top[:packed_len(3, width)] == expected
    assert payload[5:5 + packed_len(3, width)] == expected


# ----------------------------------------------------------------------------- codecs
def test_fp32_codec_round_trip_and_size():
    update = {"a": torch.randn(3, 4), "b": torch.randn(5)}
    codec = Fp32Codec()
    decoded = codec.decode(codec.encode(update), update)
    assert all(torch.equal(decoded[k], update[k]) for k in update)
    assert payload_bytes(codec, update) == 4 * 17


def test_measured_codec_sends_primary_and_records_shadow():
    update = {"a": torch.tensor([0.0, 1.5, 0.0, 0.0, -2.0] + [0.0] * 95)}
    codec = MeasuredCodec(Fp32Codec(), SparseCodec())
    payload = codec.encode(update)
    assert payload == Fp32Codec().encode(update)
    assert torch.equal(codec.decode(payload, update)["a"], update["a"])
    # the shadow: tag + count + two 7-bit indices (2 bytes) + two fp32 values
    assert codec.shadow_bytes == [len(SparseCodec().encode(update))] == [1 + 4 + 2 + 8]
    codec.encode(update, client_id=1)
    assert len(codec.shadow_bytes) == 2


def test_measured_codec_resets_and_round_trips_its_state():
    update = {"a": torch.tensor([0.0, 1.5] + [0.0] * 98)}
    codec = MeasuredCodec(Fp32Codec(), SparseCodec())
    codec.encode(update)
    state = codec.state_dict()
    codec.reset()
    assert codec.shadow_bytes == []
    codec.load_state_dict(state)
    assert codec.shadow_bytes == [1 + 4 + 1 + 4]


def test_payload_size_helpers_leave_a_stateful_codec_untouched():
    update = {"a": torch.arange(1.0, 101.0)}
    codec = ErrorFeedback(TopKCodec(0.1))
    assert payload_bytes(codec, update) == packed_len(10, 7) + 4 * 10  # ten 7-bit indices + ten fp32 values
    assert 400 / payload_bytes(codec, update) == pytest.approx(400 / 49)
    assert codec.residuals == {}  # measured on a copy: no residual was kept
