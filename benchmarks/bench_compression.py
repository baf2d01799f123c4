"""Compression benchmarks (notebook 02).

* each codec's encode + decode throughput in MB/s of fp32 input, on a model-sized update
  (the notebook's 50,890-parameter MLP), with its payload size and factor against fp32;
* post-training int8 (torchao) vs fp32 inference: latency ratio on 1,000 mnist5k images,
  serialized sizes;
* depthwise separable vs standard course CNN (issue 16): training-step and inference latency
  ratios on the CPU, timed interleaved, beside the FLOP ratio they are *not* proportional to;
* the notebook's runtime with default parameters.

Wall times depend on the machine and on what else runs on it: the load average is recorded.
"""
from __future__ import annotations

import os

import torch
from common import time_notebook

from fedlab_utils.compression import ErrorFeedback, Fp32Codec, QuantizeCodec, RandomKCodec, SignCodec, TopKCodec
from fedlab_utils.data import load_dataset
from fedlab_utils.ledger import inference_latency, time_calls
from fedlab_utils.lessons.compression import model_size_bytes, quantize_model_int8
from fedlab_utils.models import make_model


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


def bench_separable() -> dict:
    """Separable/standard CNN wall-time ratios (one SGD step on a batch of 50; inference on 1,000 images)."""
    import torch.nn.functional as F

    from fedlab_utils.ledger import forward_flops, time_interleaved, training_flops_per_sample

    ds = load_dataset("mnist5k", seed=0)
    torch.manual_seed(0)
    models = {"standard": make_model("cnn", ds.input_shape, ds.num_classes),
              "separable": make_model("cnn", ds.input_shape, ds.num_classes, separable=True)}
    xb, yb, x = ds.x_train[:50], ds.y_train[:50], ds.x_test
    steps, infers = {}, {}
    for name, model in models.items():
        opt = torch.optim.SGD(model.parameters(), lr=0.3)

        def step(model=model, opt=opt):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()

        def infer(model=model):
            with torch.no_grad():
                model.eval()(x)
            model.train()

        steps[name], infers[name] = step, infer
    step_t = time_interleaved(steps, repeats=10, blocks=5)
    infer_t = time_interleaved(infers, repeats=5, blocks=5)
    fwd = {n: forward_flops(m, ds.input_shape) for n, m in models.items()}
    train = {n: training_flops_per_sample(m, ds.input_shape) for n, m in models.items()}
    return {"step_ms_min": {n: 1e3 * t.min_s for n, t in step_t.items()},
            "inference_ms_min": {n: 1e3 * t.min_s for n, t in infer_t.items()},
            "separable_step_latency_ratio": step_t["separable"].min_s / step_t["standard"].min_s,
            "separable_inference_latency_ratio": infer_t["separable"].min_s / infer_t["standard"].min_s,
            "forward_flop_ratio": fwd["separable"] / fwd["standard"],
            "training_flop_ratio_ledger": train["separable"] / train["standard"],
            "note": "ratios < 1 mean the separable CNN is faster; compare with the FLOP ratios"}


def run() -> dict:
    result = {"torch_threads": torch.get_num_threads(), "load_avg_before": _load()}
    result["codecs"] = bench_codecs()
    result["int8_inference"] = bench_int8()
    result["separable_cnn"] = bench_separable()
    result["notebook"] = time_notebook("02")
    result["load_avg_after"] = _load()
    return result
