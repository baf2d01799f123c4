"""The course's pieces on Flower's Deployment Engine: a ClientApp and a ServerApp, thin adapters.

Nothing here is a new FL framework.  The ClientApp trains with the course's
:func:`~fedlab_utils.federated.train_locally` and encodes its update with a course
:class:`~fedlab_utils.wire.Codec`; the payload travels as ``bytes`` in a Flower ``ConfigRecord``.
The ServerApp decodes with the same codec, aggregates with
:func:`~fedlab_utils.federated.fedavg_aggregate` and steps a course server optimizer (FedAvg,
FedAvgM, FedAdam, ...).  Per round it records test accuracy, the ledger's bytes (``len()`` of the
course payloads) and the bytes of Flower's own serialized messages (every object Flower pushes for
a message: header, records, our payload), so the protocol overhead is visible.

Everything both apps need travels in Flower's *run config* (:class:`DeploymentConfig`); each
SuperNode's identity (which client it is) travels in its *node config* (``partition-id``,
``num-partitions``).  Seeded identically, a deployment reproduces the in-process
:func:`~fedlab_utils.federated.run` round for round: same sampled clients, same shuffling
(:func:`~fedlab_utils.federated.client_generator`), same payloads, same aggregation order.

Flower runs each ClientApp call in a fresh process (``flwr-clientapp``), so a codec's state does
not survive between rounds in the process; it survives in Flower's ``context.state``, which the
SuperNode keeps per run and hands to each call.  Error feedback (``ef:<codec>``, e.g.
``ef:topk:0.01``) keeps each client's residual there, as fp32 bytes.

The launcher that starts the SuperLink and SuperNodes is :mod:`fedlab_utils.deploy`.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .validation import check_choice, check_fraction, check_int, check_real

__all__ = ["DeploymentConfig", "make_codec", "CODEC_SPECS", "build_task", "simulate", "message_bytes",
           "make_client_app", "make_server_app", "send_and_receive", "EF_STATE_KEY", "PROGRESS_FILE",
           "HISTORY_FILE", "PAYLOAD_DIR", "NODE_PARTITION_KEY", "NODE_COUNT_KEY"]

PROGRESS_FILE = "progress.jsonl"
HISTORY_FILE = "history.json"
PAYLOAD_DIR = "payloads"
NODE_PARTITION_KEY = "partition-id"
NODE_COUNT_KEY = "num-partitions"
CODEC_SPECS = ("fp32", "q<bits> (1..16, e.g. q8)", "topk:<fraction>", "sign", "ef:<one of those>")
EF_STATE_KEY = "fedlab-ef"
PARTITIONS = ("iid", "dirichlet", "shards")


def make_codec(spec: str):
    """A fresh course codec from a short spec: ``fp32``, ``q8`` (any 1..16 bits), ``topk:0.01``,
    ``sign``, or ``ef:`` before any of them for error feedback around it (its residuals start
    at zero).  Both ends build theirs from the same spec."""
    from .compression import ErrorFeedback, QuantizeCodec, SignCodec, TopKCodec
    from .wire import Fp32Codec

    text = str(spec).strip().lower()
    if text.startswith("ef:"):
        try:
            inner = make_codec(text[3:])
        except ValueError:
            raise ValueError(f"uplink={spec!r} is not a codec spec; valid: {', '.join(CODEC_SPECS)}") from None
        if isinstance(inner, ErrorFeedback):
            raise ValueError(f"uplink={spec!r}: error feedback around error feedback; use one 'ef:'")
        return ErrorFeedback(inner)
    if text == "fp32":
        return Fp32Codec()
    if text == "sign":
        return SignCodec()
    if text.startswith("q") and text[1:].isdigit():
        return QuantizeCodec(bits=int(text[1:]))
    if text.startswith("topk:"):
        try:
            fraction = float(text.split(":", 1)[1])
        except ValueError:
            fraction = -1.0
        check_fraction("uplink top-k fraction", fraction)
        return TopKCodec(fraction)
    raise ValueError(f"uplink={spec!r} is not a codec spec; valid: {', '.join(CODEC_SPECS)}")


@dataclass(frozen=True)
class DeploymentConfig:
    """One federated task, as both apps read it from Flower's run config.

    The defaults are notebook 00's task, scaled to a handful of SuperNodes: mnist5k, the MLP,
    FedAvg with local SGD.  ``num_clients`` is the number of SuperNodes (one client each);
    ``round_timeout`` is the longest the server waits for replies in a round (seconds; see
    :func:`send_and_receive`).  ``deadline_factor`` > 0 turns on a reporting deadline: after a
    round in which every client replied, later rounds wait at most ``deadline_factor`` × the
    slowest such round (at least 2 s), so a dead SuperNode costs one deadline, not the full timeout.
    """

    dataset: str = "mnist5k"
    model: str = "mlp"
    num_clients: int = 2
    partition: str = "iid"
    alpha: float = 0.5
    rounds: int = 2
    fraction: float = 1.0
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    uplink: str = "fp32"
    server: str = "fedavg"
    server_lr: float = 1.0
    seed: int = 0
    round_timeout: float = 120.0
    deadline_factor: float = 0.0
    node_wait: float = 120.0
    out_dir: str = ""
    save_payloads: bool = False

    def __post_init__(self) -> None:
        from .acceleration import SERVERS
        from .data import DATASETS

        check_choice("dataset", self.dataset, DATASETS)
        check_choice("model", self.model, ("mlp", "cnn"))
        check_int("num_clients", self.num_clients, 1)
        check_choice("partition", self.partition, PARTITIONS)
        check_real("alpha", self.alpha, 0.0, low_inclusive=False)
        check_int("rounds", self.rounds, 1)
        check_fraction("fraction", self.fraction)
        check_int("local_epochs", self.local_epochs, 1)
        check_int("batch_size", self.batch_size, 1)
        check_real("lr", self.lr, 0.0, low_inclusive=False)
        make_codec(self.uplink)
        check_choice("server", self.server, SERVERS)
        check_real("server_lr", self.server_lr, 0.0, low_inclusive=False)
        check_int("seed", self.seed, 0)
        check_real("round_timeout", self.round_timeout, 0.0, low_inclusive=False)
        check_real("node_wait", self.node_wait, 0.0, low_inclusive=False)
        if self.deadline_factor != 0:
            check_real("deadline_factor", self.deadline_factor, 1.0)

    def to_run_config(self) -> dict:
        """Flat ``key -> str|int|float|bool`` for ``flwr run --run-config``."""
        return asdict(self)

    @classmethod
    def from_run_config(cls, config) -> "DeploymentConfig":
        """Rebuild from Flower's ``context.run_config`` (unknown keys are ignored)."""
        kinds = {f.name: f.type for f in fields(cls)}
        values = {}
        for name, kind in kinds.items():
            if name not in config:
                continue
            value = config[name]
            if kind == "int":
                value = int(value)
            elif kind == "float":
                value = float(value)
            elif kind == "bool":
                value = value if isinstance(value, bool) else str(value).lower() == "true"
            else:
                value = str(value)
            values[name] = value
        return cls(**values)

    def local(self):
        from .federated import LocalTraining

        return LocalTraining(epochs=self.local_epochs, batch_size=self.batch_size, lr=self.lr)

    def server_optimizer(self):
        from .acceleration import make_server

        return make_server(self.server, lr=self.server_lr)


def build_task(config: DeploymentConfig):
    """``(clients, test, init_model)`` exactly as notebook 00 builds them for this seed.

    Every process (each SuperNode's ClientApp, the ServerApp, the notebook) builds the same task
    from the config; on real devices a SuperNode would load its own local data instead.
    """
    import torch

    from .data import client_data, load_dataset, partition
    from .models import make_model

    data = load_dataset(config.dataset, seed=config.seed)
    options = {"alpha": config.alpha} if config.partition == "dirichlet" else {}
    parts = partition(data.y_train, config.num_clients, config.partition, seed=config.seed, **options)
    clients = client_data(data, parts, torch.device("cpu"))
    torch.manual_seed(config.seed)
    init = make_model(config.model, data.input_shape, data.num_classes)
    return clients, (data.x_test, data.y_test), init


def message_bytes(message) -> int:
    """Bytes of a Flower message (or one of its records) as Flower serializes it for transport.

    Flower sends a message as content-addressed objects (the message header, each record, each
    array chunk); this is the sum of their serialized sizes, what the SuperNode pushes and the
    ServerApp pulls.  HTTP and TCP framing come on top and are not counted."""
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    return sum(len(obj.deflate()) for obj in get_all_nested_objects(message).values())


# ----------------------------------------------------------------------------- ClientApp
def _run_config(context, defaults: DeploymentConfig | None) -> DeploymentConfig:
    """The run's config: Flower's ``context.run_config`` on top of ``defaults`` (if any)."""
    base = defaults.to_run_config() if defaults is not None else {}
    return DeploymentConfig.from_run_config({**base, **dict(context.run_config)})


def _client_train(msg, context, defaults: DeploymentConfig | None = None):
    """One client's round: decode the global state, train, encode the update with the codec."""
    from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

    from .compression import ErrorFeedback
    from .federated import client_generator, model_state, state_delta, train_locally
    from .wire import Fp32Codec

    config = _run_config(context, defaults)
    partition_id = int(context.node_config[NODE_PARTITION_KEY])
    num_partitions = int(context.node_config.get(NODE_COUNT_KEY, config.num_clients))
    if num_partitions != config.num_clients or not 0 <= partition_id < num_partitions:
        raise ValueError(f"node config {NODE_PARTITION_KEY}={partition_id} {NODE_COUNT_KEY}={num_partitions} "
                         f"does not fit the run's num_clients={config.num_clients}")
    sent = msg.content["fedlab"]
    round_idx = int(sent["round"])
    clients, _, model = build_task(config)
    data = clients[partition_id]
    template = model_state(model)
    received = Fp32Codec().decode(bytes(sent["global"]), template)
    model.load_state_dict(received, strict=False)
    loss, processed = train_locally(model, data, config.local(), generator=client_generator(config.seed, round_idx,
                                                                                              partition_id),
                                    global_state=received)
    codec = make_codec(config.uplink)
    update = state_delta(model_state(model), received)
    if isinstance(codec, ErrorFeedback):  # the residual lives in Flower's context.state between calls
        stored = context.state.config_records.get(EF_STATE_KEY)
        if stored is not None:
            codec.residuals[partition_id] = Fp32Codec().decode(bytes(stored["residual"]), update)
    payload = codec.encode(update, partition_id)
    if isinstance(codec, ErrorFeedback):
        context.state[EF_STATE_KEY] = ConfigRecord({"residual": Fp32Codec().encode(codec.residuals[partition_id])})
    content = RecordDict({
        "fedlab": ConfigRecord({"payload": payload, "codec": config.uplink,
                                "sha256": hashlib.sha256(payload).hexdigest()}),
        "metrics": MetricRecord({"partition-id": partition_id, "num-examples": len(data), "train-loss": loss,
                                 "samples-processed": processed, "payload-bytes": len(payload)}),
    })
    return Message(content, reply_to=msg)


def _client_query(msg, context):
    """Which client is this SuperNode? (the server asks once when it samples a fraction)."""
    from flwr.app import Message, MetricRecord, RecordDict

    partition_id = int(context.node_config[NODE_PARTITION_KEY])
    return Message(RecordDict({"metrics": MetricRecord({"partition-id": partition_id})}), reply_to=msg)


def make_client_app(defaults: DeploymentConfig | None = None):
    """The Flower ClientApp: ``train`` runs one course client round, ``query`` names the client.

    ``defaults`` fills what the run config does not say (Flower's deprecated in-process
    ``run_simulation`` passes no run config; ``flwr run`` always passes the full one)."""
    from flwr.app import Context, Message
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return _client_train(msg, context, defaults)

    app.query()(_client_query)
    return app


# ----------------------------------------------------------------------------- ServerApp
def _append_line(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()


def send_and_receive(grid, messages: list, timeout: float, poll: float = 0.2) -> list:
    """Flower's ``Grid.send_and_receive`` with a finer poll: push ``messages``, then pull replies
    every ``poll`` seconds until all arrived or ``timeout`` passed.  Flower's own loop sleeps 3 s
    between pulls, so a round could end up to 3 s after its last reply (or its deadline)."""
    pending = set(grid.push_messages(messages))
    end = time.monotonic() + timeout
    replies: list = []
    while pending:
        arrived = list(grid.pull_messages(pending))
        replies += arrived
        pending -= {m.metadata.reply_to_message_id for m in arrived}
        if not pending or time.monotonic() >= end:
            break
        time.sleep(min(poll, max(0.0, end - time.monotonic())))
    return replies


def _wait_for_nodes(grid, count: int, patience: float) -> list[int]:
    deadline = time.monotonic() + patience
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count:
            return nodes
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(nodes)} of {count} SuperNodes connected within {patience:.0f} s")
        time.sleep(0.2)


def _partition_map(grid, nodes: list[int], timeout: float) -> dict[int, int]:
    """partition id -> node id, by asking every node once (a ``query`` message)."""
    from flwr.app import Message, MessageType, RecordDict

    messages = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY, group_id="0") for n in nodes]
    mapping = {}
    for reply in send_and_receive(grid, messages, timeout):
        if not reply.has_error():
            mapping[int(reply.content["metrics"]["partition-id"])] = reply.metadata.src_node_id
    return mapping


def _server_main(grid, context, defaults: DeploymentConfig | None = None) -> None:
    """The course's round on Flower: sample, send, receive, decode, FedAvg, server step, evaluate."""
    import numpy as np
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict

    from .federated import ClientResult, evaluate, fedavg_aggregate, model_state, sample_clients
    from .results import atomic_write_bytes, atomic_write_text
    from .wire import Fp32Codec

    config = _run_config(context, defaults)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    progress = out / PROGRESS_FILE
    progress.write_text("", encoding="utf-8")
    _, test, model = build_task(config)
    codec, downlink, server = make_codec(config.uplink), Fp32Codec(), config.server_optimizer()
    nodes = _wait_for_nodes(grid, config.num_clients, config.node_wait)
    _append_line(progress, {"event": "nodes", "nodes": len(nodes), "time": time.time()})
    partition_to_node: dict[int, int] = {}
    if config.fraction < 1.0:
        partition_to_node = _partition_map(grid, nodes, config.round_timeout)
    records, slowest_full = [], None
    for round_idx in range(1, config.rounds + 1):
        start = time.monotonic()
        global_state = model_state(model)
        down = downlink.encode(global_state)
        received = downlink.decode(down, global_state)
        online = sorted(grid.get_node_ids())
        if config.fraction < 1.0:
            selected = sample_clients(config.num_clients, config.fraction, np.random.default_rng([config.seed, round_idx]))
            targets = [partition_to_node[p] for p in selected if p in partition_to_node]
        else:
            selected, targets = list(range(config.num_clients)), online
        _append_line(progress, {"event": "round-start", "round": round_idx, "sent_to": len(targets),
                                "time": time.time()})
        messages = [Message(RecordDict({"fedlab": ConfigRecord({"global": down, "round": round_idx})}),
                            dst_node_id=node, message_type=MessageType.TRAIN, group_id=str(round_idx))
                    for node in targets]
        bytes_down_flower = sum(message_bytes(m) for m in messages)
        timeout = config.round_timeout
        if config.deadline_factor > 0 and slowest_full is not None:
            timeout = min(timeout, max(2.0, config.deadline_factor * slowest_full))
        replies = send_and_receive(grid, messages, timeout)
        results, flower_up, errors, digests = [], 0, [], {}
        for reply in replies:
            if reply.has_error():
                errors.append(f"node {reply.metadata.src_node_id}: {reply.error.reason}")
                continue
            metrics, record = reply.content["metrics"], reply.content["fedlab"]
            payload = bytes(record["payload"])
            pid = int(metrics["partition-id"])
            if hashlib.sha256(payload).hexdigest() != record["sha256"]:
                raise ValueError(f"round {round_idx}: client {pid}'s payload changed in transit")
            flower_up += message_bytes(reply)
            digests[pid] = hashlib.sha256(payload).hexdigest()
            if config.save_payloads:
                atomic_write_bytes(out / PAYLOAD_DIR / f"round{round_idx}-client{pid}.bin", payload)
            results.append(ClientResult(pid, int(metrics["num-examples"]), codec.decode(payload, received),
                                        float(metrics["train-loss"]), int(metrics["samples-processed"]),
                                        len(payload)))
        results.sort(key=lambda r: r.client_id)  # the in-process loop aggregates in client order
        if results:
            model.load_state_dict(server.step(global_state, fedavg_aggregate(results, model, round_idx)), strict=False)
        if len(results) == len(targets) == len(selected):
            slowest_full = max(slowest_full or 0.0, time.monotonic() - start)
        accuracy, loss = evaluate(model, *test)
        record = {"timeout": timeout, "event": "round", "round": round_idx, "selected": selected,
                  "replied": [r.client_id for r in results], "errors": errors, "accuracy": accuracy, "loss": loss,
                  "train_loss": float(np.mean([r.train_loss for r in results])) if results else None,
                  "ledger_bytes_up": sum(r.bytes_up for r in results), "flower_bytes_up": flower_up,
                  "ledger_bytes_down": len(down) * len(targets), "flower_bytes_down": bytes_down_flower,
                  "payload_sha256": digests, "seconds": time.monotonic() - start, "time": time.time()}
        records.append(record)
        _append_line(progress, record)
    history = {"config": config.to_run_config(), "records": records}
    atomic_write_text(out / HISTORY_FILE, json.dumps(history, indent=1))


def make_server_app(defaults: DeploymentConfig | None = None):
    """The Flower ServerApp: the course's round loop on Flower's Grid (``defaults`` as for
    :func:`make_client_app`)."""
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        _server_main(grid, context, defaults)

    return app


def simulate(config: DeploymentConfig, progress: bool | None = False, trainer=None):
    """The same task in one process with the course's :func:`~fedlab_utils.federated.run`: the
    reference a deployment seeded identically must reproduce (``trainer`` as for ``run()``;
    the default trains client after client, as the SuperNodes do)."""
    from .federated import run

    clients, test, init = build_task(config)
    return run(init, clients, test, rounds=config.rounds, fraction=config.fraction, local=config.local(),
               seed=config.seed, uplink=make_codec(config.uplink), server=config.server_optimizer(),
               label=f"in-process {config.uplink}/{config.server}", progress=progress, trainer=trainer)
