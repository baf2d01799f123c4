"""Seed robustness of notebook 02's separable-CNN claims (issue 16), without running the notebook.

Runs exactly the notebook's "结构简化" federated experiment (default parameters: mnist5k,
10 IID clients, batch 50, lr 0.3, one local epoch) on seeds 0–19: the course CNN, the same CNN
with depthwise separable convolutions, and the separable CNN with an 8-bit uplink.  Test
accuracy is recorded after every round up to ``--rounds``, so the accuracy gap can be read for
any shorter run (the loop does not depend on the total number of rounds).

    nice .venv/bin/python benchmarks/separable_seeds.py            # -> benchmarks/results/separable_seeds.json
    nice .venv/bin/python benchmarks/separable_seeds.py --seeds 0 1 --rounds 10 --out /tmp/s.json

One torch thread (the notebook uses the machine's default), so the numbers can differ from a
notebook run in the last float bits; the claims' thresholds keep a margin for that.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fedlab_utils.compression import QuantizeCodec
from fedlab_utils.core import LocalTraining, run
from fedlab_utils.data import client_data, load_dataset, partition
from fedlab_utils.devices import seed_everything
from fedlab_utils.files import atomic_write_text
from fedlab_utils.models import make_model

RESULTS = Path(__file__).resolve().parent / "results" / "separable_seeds.json"
DEFAULTS = {"dataset": "mnist5k", "num_clients": 10, "fraction": 1.0, "local_epochs": 1, "batch_size": 50,
            "lr": 0.3, "bits": 8, "energy_profile": "phone-lte"}


def one_seed(seed: int, rounds: int) -> dict:
    """The notebook's three runs on one seed: per-round accuracy and ledger totals."""
    p = DEFAULTS
    seed_everything(seed)
    data = load_dataset(p["dataset"], seed=seed)
    clients = client_data(data, partition(data.y_train, p["num_clients"], "iid", seed=seed), torch.device("cpu"))
    test = (data.x_test, data.y_test)
    local = LocalTraining(epochs=p["local_epochs"], batch_size=p["batch_size"], lr=p["lr"])
    torch.manual_seed(seed)
    standard = make_model("cnn", data.input_shape, data.num_classes)
    torch.manual_seed(seed)
    separable = make_model("cnn", data.input_shape, data.num_classes, separable=True)
    setups = {"standard": (standard, None), "separable": (separable, None),
              "separable + 8-bit": (separable, QuantizeCodec(p["bits"], seed=seed))}
    out = {}
    for name, (model, uplink) in setups.items():
        h = run(model, clients, test, rounds=rounds, fraction=p["fraction"], local=local, seed=seed, uplink=uplink,
                label=name, energy_profile=p["energy_profile"], progress=False)
        out[name] = {"accuracy": h.accuracy, "totals": h.totals()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(20)))
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    record = {"parameters": DEFAULTS | {"rounds": args.rounds, "torch_threads": args.threads}, "seeds": {}}
    for seed in args.seeds:
        start = time.perf_counter()
        record["seeds"][str(seed)] = one_seed(seed, args.rounds)
        acc = {k: v["accuracy"][-1] for k, v in record["seeds"][str(seed)].items()}
        print(f"seed {seed}: final accuracy {acc} ({time.perf_counter() - start:.0f} s)", flush=True)
        atomic_write_text(args.out, json.dumps(record, indent=1))  # partial results survive an interrupt
    gaps = {r: [100 * (s["standard"]["accuracy"][r - 1] - s["separable"]["accuracy"][r - 1])
                for s in record["seeds"].values()] for r in range(1, args.rounds + 1)}
    record["worst_gap_points_by_rounds"] = {r: max(g) for r, g in gaps.items()}
    atomic_write_text(args.out, json.dumps(record, indent=1))
    print("worst separable accuracy gap (points) after r rounds:",
          {r: round(g, 2) for r, g in record["worst_gap_points_by_rounds"].items()})


if __name__ == "__main__":
    main()
