"""Notebook 00's runtime and the federated loop's throughput (client updates per second)."""
from __future__ import annotations

import time

from common import time_notebook

from fedlab_utils import LocalTraining, client_data, load_dataset, make_model, partition
from fedlab_utils.core import loop as federated


def loop_throughput(num_clients: int = 20, rounds: int = 5) -> dict:
    data = load_dataset("mnist5k")
    clients = client_data(data, partition(data.y_train, num_clients, "iid"))
    model = make_model("mlp", data.input_shape, data.num_classes)
    local = LocalTraining(epochs=1, batch_size=20)
    federated.run(model, clients, (data.x_test, data.y_test), rounds=1, local=local, progress=False)  # warm-up
    start = time.perf_counter()
    history = federated.run(model, clients, (data.x_test, data.y_test), rounds=rounds, local=local, progress=False)
    seconds = time.perf_counter() - start
    updates = rounds * num_clients
    return {"clients": num_clients, "rounds": rounds, "samples_per_client": len(clients[0]),
            "client_updates_per_s": updates / seconds, "seconds": seconds,
            "final_accuracy": history.final_accuracy}


def run() -> dict:
    return {"notebook_00": time_notebook("00"), "loop_throughput_mlp_mnist5k": loop_throughput()}
