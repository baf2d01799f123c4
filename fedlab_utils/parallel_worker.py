"""One pipeline stage per process: the worker behind :func:`fedlab_utils.parallel.run_multiprocess_pipeline`.

It lives in a module because a function defined in a notebook cannot be started by
``spawn`` (the child process cannot import ``__main__`` of a kernel).  Launch it like any
``torch.distributed`` program::

    torchrun --nproc_per_node 2 -m fedlab_utils.parallel_worker --demo     # self-check
    python fedlab_utils/parallel_worker.py --job job.pt --out DIR          # with RANK etc. set

It imports only torch (each process pays for that import, about a second of CPU), so the
notebook starts it by file path; the job's model must be an ``nn.Sequential`` of torch layers.

Rank ``r`` holds stage ``r`` of the model.  One GPipe training step: the micro-batches'
activations are sent forward with ``dist.send``/``dist.recv``, the last rank computes the
loss, and the gradients with respect to the activations are sent back.  The backend is NCCL
when every rank has its own GPU and gloo otherwise (CPU tensors).
"""
from __future__ import annotations

import argparse
import copy
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
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    parser.add_argument("--job", help="torch.save'd dict: model, x, y, micro_batches, boundaries, timeout_s")
    parser.add_argument("--out", help="folder for rank<r>.pt results")
    parser.add_argument("--demo", action="store_true", help="a small CNN; the last rank checks against one process")
    args = parser.parse_args(argv)
    if not args.demo and not (args.job and args.out):
        parser.error("give --job and --out, or --demo")
    launched = float(os.environ.get("FEDLAB_LAUNCH_TIME", time.time()))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    job = _demo_job() if args.demo else torch.load(args.job, weights_only=False)
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
