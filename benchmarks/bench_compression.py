"""Compression benchmarks (notebook 02).

* each codec's encode + decode throughput in MB/s of fp32 input, on a model-sized update
  (the notebook's 50,890-parameter MLP), with its payload size and factor against fp32;
* post-training int8 (torchao) vs fp32 inference: latency ratio on 1,000 mnist5k images,
  serialized sizes;
* the notebook's runtime with default parameters.

Wall times depend on the machine and on what else runs on it: the load average is recorded.
"""
from __future__ import annotations

import os

import torch
from common import time_notebook

from fedlab_utils.compression import (ErrorFeedback, QuantizeCodec, RandomKCodec, SignCodec, TopKCodec,
                                      model_size_bytes, quantize_model_int8)
from fedlab_utils.data import load_dataset
from fedlab_utils.models import make_model
from fedlab_utils.timing import inference_latency, time_calls
from fedlab_utils.wire import Fp32Codec


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def bench_codecs() -> dict:
    torch.manual_seed(0)
    model = make_model("mlp", (1, 28, 28), 10)
    update = {k: torch.randn_like(v) * 0.01 for k, v in model.state_dict().items()}
    fp32_bytes = 4 * sum(v.numel() for v in update.values())
    codecs = [Fp32Codec(), QuantizeCodec(16), QuantizeCodec(8), QuantizeCodec(8, stochastic=True), QuantizeCodec(4),
              QuantizeCodec(4, chunk=4096), QuantizeCodec(3), QuantizeCodec(1), SignCodec(), TopKCodec(0.01),
              TopKCodec(0.01, QuantizeCodec(8)), RandomKCodec(0.01), ErrorFeedback(TopKCodec(0.01, QuantizeCodec(8)))]
    out = {}
    for codec in codecs:
        payload = codec.encode(update, 0)

        def roundtrip(codec=codec):
            codec.decode(codec.encode(update, 0), update)

        seconds = time_calls(roundtrip, repeats=15, warmup=2).median_s
        out[codec.name] = {"payload_bytes": len(payload), "x_smaller_than_fp32": fp32_bytes / len(payload),
                           "encode_decode_ms": 1e3 * seconds, "encode_decode_MB_per_s": fp32_bytes / 1e6 / seconds}
    return {"update_params": fp32_bytes // 4, "fp32_bytes": fp32_bytes, "codecs": out}


def bench_int8() -> dict:
    ds = load_dataset("mnist5k", seed=0)
    torch.manual_seed(0)
    model = make_model("mlp", ds.input_shape, ds.num_classes).eval()
    x = ds.x_test
    fp32_s = inference_latency(model, x, repeats=50)
    out = {"batch": len(x), "fp32_latency_ms": 1e3 * fp32_s, "fp32_size_bytes": model_size_bytes(model)}
    for mode in ("weight-only", "dynamic"):
        quantized, how = quantize_model_int8(model, mode)
        seconds = inference_latency(quantized, x, repeats=50)
        out[mode] = {"how": how, "latency_ms": 1e3 * seconds, "latency_ratio_int8_over_fp32": seconds / fp32_s,
                     "size_bytes": model_size_bytes(quantized),
                     "size_ratio_fp32_over_int8": out["fp32_size_bytes"] / model_size_bytes(quantized)}
    return out


def run() -> dict:
    result = {"torch_threads": torch.get_num_threads(), "load_avg_before": _load()}
    result["codecs"] = bench_codecs()
    result["int8_inference"] = bench_int8()
    result["notebook"] = time_notebook("02")
    result["load_avg_after"] = _load()
    return result
