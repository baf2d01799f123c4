"""What crosses the wire: the ``Codec`` protocol, fp32 and bit packing (:mod:`.wire`), and every
other codec: quantization, top-k, random-k, sign, sparse and error feedback (:mod:`.codecs`).
Part of the core; the ledger counts ``len()`` of each payload.

Names load lazily from their modules on first use (:data:`_EXPORTS`).
"""
from fedlab_utils.facade import lazy_exports

#: public name -> the module that defines it
_EXPORTS = {
    "ErrorFeedback": "fedlab_utils.compression.codecs",
    "QuantizeCodec": "fedlab_utils.compression.codecs",
    "RandomKCodec": "fedlab_utils.compression.codecs",
    "SignCodec": "fedlab_utils.compression.codecs",
    "SparseCodec": "fedlab_utils.compression.codecs",
    "SparseQuantizeCodec": "fedlab_utils.compression.codecs",
    "TopKCodec": "fedlab_utils.compression.codecs",
    "choose_qparams": "fedlab_utils.compression.codecs",
    "dequantize": "fedlab_utils.compression.codecs",
    "quantize": "fedlab_utils.compression.codecs",
    "sparse_payload_size": "fedlab_utils.compression.codecs",
    "stochastic_round": "fedlab_utils.compression.codecs",
    "Codec": "fedlab_utils.compression.wire",
    "Fp32Codec": "fedlab_utils.compression.wire",
    "MeasuredCodec": "fedlab_utils.compression.wire",
    "Update": "fedlab_utils.compression.wire",
    "encode_rows": "fedlab_utils.compression.wire",
    "fold_rows": "fedlab_utils.compression.wire",
    "flatten": "fedlab_utils.compression.wire",
    "folds": "fedlab_utils.compression.wire",
    "index_bits": "fedlab_utils.compression.wire",
    "pack_bits": "fedlab_utils.compression.wire",
    "packed_len": "fedlab_utils.compression.wire",
    "payload_bytes": "fedlab_utils.compression.wire",
    "unflatten": "fedlab_utils.compression.wire",
    "unpack_bits": "fedlab_utils.compression.wire",
}
__all__ = ["Codec", "ErrorFeedback", "Fp32Codec", "MeasuredCodec", "QuantizeCodec", "RandomKCodec",
           "SignCodec", "SparseCodec", "SparseQuantizeCodec", "TopKCodec", "Update",
           "choose_qparams", "dequantize", "encode_rows", "flatten", "fold_rows", "folds", "index_bits", "pack_bits", "packed_len",
           "payload_bytes", "quantize", "sparse_payload_size", "stochastic_round", "unflatten",
           "unpack_bits"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
