"""Lesson 02 (compression) beyond the codecs: post-training int8 of a trained model, its serialized
size, and the notebook's parameter table (:data:`RULES_02`).

Lesson 02 quantizes what clients *send* (:mod:`fedlab_utils.compression`); this is the other use
of quantization: shrinking the model a device runs.  :func:`quantize_model_int8` uses torchao, the
maintained successor of ``torch.ao.quantization``; :func:`model_size_bytes` is ``len()`` of the
state dict as ``torch.save`` writes it.
"""
from __future__ import annotations

import copy
import io
import logging
import warnings

import torch
from torch import nn

from fedlab_utils.data import DATASETS
from fedlab_utils.ledger.energy import PROFILES
from fedlab_utils.validation import Rule, choice, fraction, integer, optional_path, real

__all__ = ["RULES_02", "model_size_bytes", "quantize_model_int8"]


def model_size_bytes(model: nn.Module) -> int:
    """Serialized size of ``model.state_dict()`` (``torch.save`` into memory, ``len()``)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return len(buffer.getvalue())


def quantize_model_int8(model: nn.Module, mode: str = "weight-only") -> tuple[nn.Module, str]:
    """Post-training int8 quantization of a trained model's ``nn.Linear`` layers for deployment.

    Uses torchao (the maintained successor of ``torch.ao.quantization``):
    ``quantize_(model, Int8WeightOnlyConfig())`` (``mode='weight-only'``) or
    ``Int8DynamicActivationInt8WeightConfig()`` (``mode='dynamic'``).  If torchao cannot be
    imported, falls back to the deprecated ``torch.ao.quantization.quantize_dynamic``.
    Returns the quantized copy (on the CPU) and a line saying which library did it.
    """
    if mode not in ("weight-only", "dynamic"):
        raise ValueError(f"mode={mode!r} is not valid; choose 'weight-only' or 'dynamic'")
    quantized = copy.deepcopy(model).cpu().eval()
    try:
        # torchao's import logs that its GPU-only kernels (mxfp8, CUTLASS) cannot load on a CPU
        # machine; that is expected, so those two loggers are quieted while it imports.
        quiet = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
        levels = [logger.level for logger in quiet]
        try:
            for logger in quiet:
                logger.setLevel(logging.ERROR)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import torchao
                from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_
        finally:
            for logger, level in zip(quiet, levels):
                logger.setLevel(level)

        config = Int8WeightOnlyConfig() if mode == "weight-only" else Int8DynamicActivationInt8WeightConfig()
        quantize_(quantized, config)
        return quantized, f"torchao {torchao.__version__}: quantize_(model, {type(config).__name__}())"
    except ImportError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.ao.quantization import quantize_dynamic

            quantized = quantize_dynamic(quantized, {nn.Linear}, dtype=torch.qint8)
        from fedlab_utils.i18n import gettext

        return quantized, gettext("torch.ao.quantization.quantize_dynamic (deprecated; torchao not importable)")


# ----------------------------------------------------------------------------- lesson 02's parameters
def _boolean(name: str, value: object) -> bool:
    """Rule: ``True`` or ``False`` (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not valid; use True or False")
    return value


#: Notebook 02's parameters and what is valid for each, validated in one call by
#: ``fedlab_utils.validation.check_parameters(globals(), RULES_02)`` in its setup cell.
RULES_02: dict[str, Rule] = {
    "seed": integer(0), "dataset": choice(DATASETS), "data_dir": optional_path(), "num_clients": integer(2, 100),
    "fraction": fraction(), "rounds": integer(1), "cnn_rounds": integer(1), "local_epochs": integer(1),
    "batch_size": integer(1), "lr": real(0, low_inclusive=False), "cnn_lr": real(0, low_inclusive=False),
    "bits": integer(1, 16), "low_bits": integer(1, 16), "stochastic": _boolean, "topk_fraction": fraction(),
    "topk_value_bits": integer(0, 16), "energy_profile": choice(PROFILES), "results_path": optional_path(),
}
