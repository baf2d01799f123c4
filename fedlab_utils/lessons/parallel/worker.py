"""One pipeline stage per process: the worker behind :func:`fedlab_utils.lessons.parallel.pipeline.run_multiprocess_pipeline`.

It lives in a module because a function defined in a notebook cannot be started by
``spawn`` (the child process cannot import ``__main__`` of a kernel).  Launch it like any
``torch.distributed`` program::

    torchrun --nproc_per_node 2 -m fedlab_utils.lessons.parallel.worker --demo     # self-check
    python fedlab_utils/lessons/parallel/worker.py --job job.json --out DIR        # with RANK etc. set

It imports only torch (each process pays for that import, about a second of CPU), so the
notebook starts it by file path.  The job is JSON -- the model as a list of layer specs
(:func:`layer_spec`, torch layers from :data:`LAYER_ARGS` only), micro-batches, cut points --
plus a tensors file (weights, inputs, labels) read with ``torch.load(weights_only=True)``:
nothing is unpickled, so a job file cannot run code.  Results go back the same way.

Rank ``r`` holds stage ``r`` of the model.  One GPipe training step: the micro-batches'
activations are sent forward with ``dist.send``/``dist.recv``, the last rank computes the
loss, and the gradients with respect to the activations are sent back.  The backend is NCCL
when every rank has its own GPU and gloo otherwise (CPU tensors).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn


def _backend_and_device(rank: int, world: int) -> tuple[str, torch.device]:
    if torch.cuda.is_available() and torch.cuda.device_count() >= world:
        return "nccl", torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}")
    return "gloo", torch.device("cpu")


def _sync(device: torch.device) -> None:
    """``fedlab_utils.ledger.timing.synchronize`` (CUDA and MPS), repeated here: this file imports only torch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


#: The torch layers a job may contain, with the constructor arguments read back from each layer.
LAYER_ARGS: dict[str, tuple[str, ...]] = {
    "Linear": ("in_features", "out_features", "bias"),
    "Conv1d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias",
               "padding_mode"),
    "Conv2d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias",
               "padding_mode"),
    "MaxPool2d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
    "AvgPool2d": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"),
    "AdaptiveAvgPool2d": ("output_size",),
    "BatchNorm1d": ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    "BatchNorm2d": ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    "Flatten": ("start_dim", "end_dim"),
    "Dropout": ("p",),
    "LeakyReLU": ("negative_slope",),
    "GELU": ("approximate",),
    "ReLU": (), "Tanh": (), "Sigmoid": (), "Identity": (),
}


def layer_spec(layer: nn.Module) -> dict:
    """A JSON description of one torch layer (its class and constructor arguments; weights travel apart)."""
    kind = type(layer).__name__
    if kind not in LAYER_ARGS or type(layer) is not getattr(nn, kind):
        raise ValueError(f"layer {layer!r} cannot be sent to a pipeline worker; supported torch layers: "
                         f"{sorted(LAYER_ARGS)}")
    args = {}
    for name in LAYER_ARGS[kind]:
        value = getattr(layer, name)
        args[name] = (value is not None) if name == "bias" else (list(value) if isinstance(value, tuple) else value)
    return {"type": kind, "args": args}


def model_from_specs(specs: list[dict]) -> nn.Sequential:
    """Rebuild the ``nn.Sequential`` that :func:`layer_spec` described (only layers in :data:`LAYER_ARGS`)."""
    layers = []
    for spec in specs:
        kind = spec["type"]
        if kind not in LAYER_ARGS:
            raise ValueError(f"job names layer type {kind!r}; supported: {sorted(LAYER_ARGS)}")
        layers.append(getattr(nn, kind)(**spec["args"]))
    return nn.Sequential(*layers)


def write_job(folder: Path, model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, micro_batches: int,
              boundaries, timeout_s: float) -> Path:
    """Write ``job.json`` and its tensors file into ``folder``; returns the JSON's path."""
    folder = Path(folder)
    torch.save({"state": model.state_dict(), "x": x.cpu(), "y": y.cpu()}, folder / "job_tensors.pt")
    job = {"layers": [layer_spec(layer) for layer in model], "micro_batches": int(micro_batches),
           "boundaries": None if boundaries is None else [int(b) for b in boundaries], "timeout_s": float(timeout_s),
           "tensors": "job_tensors.pt"}
    (folder / "job.json").write_text(json.dumps(job))
    return folder / "job.json"


def read_job(path: str | Path) -> dict:
    """Read a job written by :func:`write_job` (JSON + ``weights_only`` tensors: no pickle)."""
    path = Path(path)
    job = json.loads(path.read_text())
    tensors = torch.load(path.parent / job["tensors"], map_location="cpu", weights_only=True)
    model = model_from_specs(job["layers"])
    model.load_state_dict(tensors["state"])
    return {**job, "model": model, "x": tensors["x"], "y": tensors["y"]}


def pipeline_step(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, micro_batches: int,
                  boundaries, rank: int, world: int, device: torch.device) -> dict:
    """Run this rank's stage of one GPipe step; return its gradients, outputs (last rank) and timings."""
    layers = list(model)
    if boundaries is None:  # equal layer counts
        boundaries = [round(i * len(layers) / world) for i in range(world + 1)]
    if len(boundaries) != world + 1:
        raise ValueError(f"boundaries={boundaries} do not describe {world} stages")
    stages = [nn.Sequential(*layers[a:b]) for a, b in zip(boundaries, boundaries[1:])]
    stage = stages[rank].to(device)
    xs, ys = x.tensor_split(micro_batches), y.tensor_split(micro_batches)
    n = len(x)
    # Every rank holds the whole (small) model, so it can work out the shape of what it receives.
    with torch.no_grad():
        in_shapes = [tuple(nn.Sequential(*stages[:rank])(xb).shape) if rank else tuple(xb.shape) for xb in xs]
    # Warm-up: the first forward and backward of a kernel in a fresh process pay one-off set-up
    # costs (seconds for a CPU convolution); run both once so the step below times steady state.
    probe = torch.zeros(in_shapes[0], device=device, requires_grad=rank > 0)
    warm = stage(probe)
    warm.backward(torch.ones_like(warm))  # a dense gradient, like the ones received below
    stage.zero_grad(set_to_none=True)
    _sync(device)
    dist.barrier()  # start the timed step together, after every rank's warm-up
    first, last = rank == 0, rank == world - 1
    inputs, outputs, losses, busy = [], [], [], 0.0
    step_start = time.perf_counter()
    for m, xb in enumerate(xs):  # forward: receive, compute, send
        if first:
            inp = xb.to(device)
        else:
            inp = torch.empty(in_shapes[m], device=device)
            dist.recv(inp, src=rank - 1)
            inp.requires_grad_()
        t = time.perf_counter()
        out = stage(inp)
        if last:
            losses.append(nn.functional.cross_entropy(out, ys[m].to(device), reduction="sum") / n)
        _sync(device)
        busy += time.perf_counter() - t
        if not last:
            dist.send(out.detach().contiguous(), dst=rank + 1)
        inputs.append(inp)
        outputs.append(out)
    for m in range(len(xs)):  # backward: receive the gradient, compute, send the input's gradient
        if last:
            t = time.perf_counter()
            losses[m].backward()
        else:
            grad = torch.empty_like(outputs[m])
            dist.recv(grad, src=rank + 1)
            t = time.perf_counter()
            outputs[m].backward(grad)
        _sync(device)
        busy += time.perf_counter() - t
        if not first:
            dist.send(inputs[m].grad.contiguous(), dst=rank - 1)
    step = time.perf_counter() - step_start
    own = {id(p) for p in stage.parameters()}
    grads = {k: p.grad.detach().cpu() for k, p in model.named_parameters() if id(p) in own and p.grad is not None}
    result = {"grads": grads, "busy_s": busy, "step_s": step}
    if last:
        result["output"] = torch.cat([o.detach().cpu() for o in outputs])
        result["loss"] = float(sum(loss.item() for loss in losses))
    return result


def _demo_job() -> dict:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    return {"model": model, "x": torch.randn(16, 1, 8, 8), "y": torch.randint(0, 10, (16,)), "micro_batches": 4,
            "boundaries": None, "timeout_s": 60}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", help="job.json written by write_job (layers, micro_batches, boundaries, timeout_s) "
                                      "beside its tensors file")
    parser.add_argument("--out", help="folder for rank<r>.pt results")
    parser.add_argument("--demo", action="store_true", help="a small CNN; the last rank checks against one process")
    args = parser.parse_args(argv)
    if not args.demo and not (args.job and args.out):
        parser.error("give --job and --out, or --demo")
    launched = float(os.environ.get("FEDLAB_LAUNCH_TIME", time.time()))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    job = _demo_job() if args.demo else read_job(args.job)
    reference = copy.deepcopy(job["model"]) if args.demo else None
    backend, device = _backend_and_device(rank, world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=rank, world_size=world,
                            timeout=timedelta(seconds=float(job.get("timeout_s", 60))))
    ready = time.time() - launched
    try:
        result = pipeline_step(job["model"], job["x"], job["y"], job["micro_batches"], job["boundaries"],
                               rank, world, device)
        result.update(backend=backend, ready_s=ready, rank=rank)
        if args.out:
            torch.save(result, Path(args.out) / f"rank{rank}.pt")
        if args.demo and rank == world - 1:
            out = reference(job["x"])
            err = (out.detach() - result["output"]).abs().max().item()
            print(f"[rank {rank}] {world} processes ({backend}): outputs match one process to {err:.2e}", flush=True)
            if err > 1e-5:
                raise SystemExit(f"outputs differ from the single-process model by {err}")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
