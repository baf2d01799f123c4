"""Checks for notebook 00 (FedAvg baseline and the efficiency ledger)."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..federated import weighted_average
from ..wire import Fp32Codec
from . import call_safely, expect, expect_close, expect_tensors_close, passed

__all__ = ["check_weighted_average", "check_round_uplink_bytes"]


def check_weighted_average(fn: Callable) -> None:
    """``fn(updates, num_samples)`` must return FedAvg's sample-weighted mean, key by key."""
    updates = [{"w": torch.tensor([1.0, 0.0]), "b": torch.tensor([3.0])},
               {"w": torch.tensor([0.0, 4.0]), "b": torch.tensor([-1.0])},
               {"w": torch.tensor([2.0, 2.0]), "b": torch.tensor([0.0])}]
    counts = [10, 30, 60]
    answer = call_safely(fn, updates, counts, what="weighted_average")
    hint = ("Weight each client's update by its number of samples n_k and divide by the total n, "
            "i.e. sum_k (n_k / n) * update_k for every key.")
    plain_mean = {k: sum(u[k] for u in updates) / len(updates) for k in updates[0]}
    expect(isinstance(answer, dict), f"weighted_average should return a dict of tensors, got {type(answer).__name__}")
    if set(answer) == set(plain_mean) and all(torch.allclose(answer[k], plain_mean[k]) for k in answer):
        raise AssertionError("weighted_average returned the plain (unweighted) mean: a client with 10 samples counts "
                             "as much as one with 60. " + hint)
    expect_tensors_close(answer, weighted_average(updates, counts), "weighted_average", atol=1e-6, hint=hint)
    passed("weighted_average")


def check_round_uplink_bytes(answer: int, model: torch.nn.Module, clients_per_round: int,
                             measured_bytes_up: int | None = None) -> None:
    """``answer`` must be the fp32 uplink bytes of one round: every sampled client sends its whole update."""
    state = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    expected = len(Fp32Codec().encode(state)) * clients_per_round
    hint = ("Each sampled client sends one float32 (4 bytes) per parameter; multiply by the number of "
            "clients sampled per round.")
    expect(isinstance(answer, int) and not isinstance(answer, bool), f"give the answer as an int number of bytes. {hint}")
    if answer == expected // 4:
        raise AssertionError(f"{answer} counts parameters, not bytes: a float32 is 4 bytes. {hint}")
    if answer == expected * 8:
        raise AssertionError(f"{answer} is in bits; the ledger counts bytes. {hint}")
    expect_close(answer, expected, "uplink bytes per round", hint=hint)
    if measured_bytes_up is not None:
        expect(measured_bytes_up == expected, f"the ledger measured {measured_bytes_up} bytes, your formula {expected}")
    passed("uplink bytes of one round")
