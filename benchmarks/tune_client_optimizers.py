"""Pick notebook 04's client learning rates: each client optimizer at its best rate from one grid.

Notebook 04 compares SGD, SGD with momentum 0.9, Adam and AdamW (weight decay 0.01) as *client*
optimizers under FedAvg, each "at its best learning rate from the grid {0.003, 0.01, 0.03, 0.1,
0.3}".  This script is where those rates come from: it trains the notebook's default federation
(``digits``, 20 clients, ``shards`` split, 2 local epochs, batch 32, 10 FedAvg rounds) for every
optimizer and rate on the tuning seeds (0 and 1 by default, which the notebook's claims do not
depend on), and picks, per optimizer, the rate with the highest mean final test accuracy.

    python benchmarks/tune_client_optimizers.py                 # -> benchmarks/results/client_optimizer_lr.json
    python benchmarks/tune_client_optimizers.py --seeds 0 1 2 3 --out /tmp/lr.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GRID = (0.003, 0.01, 0.03, 0.1, 0.3)
OPTIMIZERS = {"SGD": ("sgd", 0.0), "SGD+momentum": ("sgdm", 0.0), "Adam": ("adam", 0.0), "AdamW": ("adamw", 0.01)}
SETTINGS = {"dataset": "digits", "num_clients": 20, "partition": "shards", "local_epochs": 2, "batch_size": 32,
            "rounds": 10}


def final_accuracy(optimizer: str, lr: float, weight_decay: float, seed: int) -> float:
    import fedlab_utils as fl
    from fedlab_utils.core import LocalTraining, run
    from fedlab_utils.devices import seed_everything

    seed_everything(seed)
    ds = fl.load_dataset(SETTINGS["dataset"], seed=seed)
    parts = fl.data.partition(ds.y_train, SETTINGS["num_clients"], SETTINGS["partition"], seed=seed)
    clients = fl.client_data(ds, parts, "cpu")
    model = fl.make_model("mlp", ds.input_shape, ds.num_classes)
    local = LocalTraining(epochs=SETTINGS["local_epochs"], batch_size=SETTINGS["batch_size"], lr=lr,
                          optimizer=optimizer, weight_decay=weight_decay)
    history = run(model, clients, (ds.x_test, ds.y_test), rounds=SETTINGS["rounds"], seed=seed, local=local,
                  progress=False)
    return history.final_accuracy


def tune(seeds: list[int]) -> dict:
    table: dict[str, dict[str, float]] = {}
    for name, (optimizer, weight_decay) in OPTIMIZERS.items():
        table[name] = {}
        for lr in GRID:
            accuracies = [final_accuracy(optimizer, lr, weight_decay, seed) for seed in seeds]
            table[name][str(lr)] = sum(accuracies) / len(accuracies)
            print(f"{name:>13} lr {lr:<6g} mean final accuracy {table[name][str(lr)]:.4f}  {accuracies}", flush=True)
    return {"settings": SETTINGS, "grid": list(GRID), "seeds": seeds, "weight_decay": {n: wd for n, (_, wd) in OPTIMIZERS.items()},
            "mean_final_accuracy": table, "best_lr": pick_best(table), "criterion": CRITERION}


CRITERION = "highest mean final test accuracy over the seeds after 10 FedAvg rounds; a tie goes to the larger rate"


def pick_best(table: dict[str, dict[str, float]]) -> dict[str, float]:
    """Per optimizer, the rate with the highest mean accuracy (ties, equal to 1e-9, go to the larger rate)."""
    return {name: max((round(acc, 9), float(lr)) for lr, acc in rates.items())[1] for name, rates in table.items()}


def main(argv: list[str] | None = None) -> int:
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "client_optimizer_lr.json")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from common import machine

    from fedlab_utils.files import atomic_write_text

    start = time.perf_counter()
    results = tune(args.seeds)
    record = {"benchmark": "tune_client_optimizers", "machine": machine(), "elapsed_s": time.perf_counter() - start,
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "results": results}
    atomic_write_text(args.out, json.dumps(record, indent=2))
    print(f"best learning rates: {results['best_lr']} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
