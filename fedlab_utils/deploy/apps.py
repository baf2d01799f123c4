"""The course's pieces on Flower's Deployment Engine: a ClientApp and a ServerApp, thin adapters.

Nothing here is a new FL framework, and there is no second round loop.  The ServerApp runs the
course's own :func:`~fedlab_utils.core.loop.run` with :class:`FlowerRounds`, a
:class:`~fedlab_utils.core.protocol.FedAvgProtocol` whose ``train`` step sends the global model to the
SuperNodes through Flower's Grid and decodes their replies into
:class:`~fedlab_utils.core.training.ClientResult` objects: sampling, the ``RoundRecord`` rows, energy,
aggregation, the server step and evaluation are the simulated loop's.  So a deployment's
:class:`~fedlab_utils.core.history.History` has every field of a simulated one, energy per round
included.  The ClientApp trains with the course's sequential trainer and encodes its update with
the run's codec; the payload travels as ``bytes`` in a Flower ``ConfigRecord``.  Every part
(``uplink``, ``server``, ``aggregate``, ``transform``) is a name or an import path
``package.module:name`` of :mod:`fedlab_utils.core.registry`, resolved in each process.  Per round the
History's ``metrics`` hold the bytes of Flower's own serialized messages (every object Flower
pushes for a message: header, records, our payload), so the protocol overhead is visible.

Everything both apps need travels in Flower's *run config* (:class:`DeploymentConfig`); each
SuperNode's identity (which client it is) travels in its *node config* (``partition-id``,
``num-partitions``).  Seeded identically, a deployment reproduces the in-process
:func:`~fedlab_utils.core.loop.run` round for round: same sampled clients, same shuffling
(:func:`~fedlab_utils.core.training.client_generator`), same payloads, same aggregation order.

Flower runs each ClientApp call in a fresh process (``flwr-clientapp``), so a part's state does
not survive between rounds in the process; it survives in Flower's ``context.state``, which the
SuperNode keeps per run and hands to each call.  Every client-side part that keeps state (the
uplink codec and the transform: anything with ``state_dict()``/``load_state_dict()``, inner parts
included, e.g. ``ef:<codec>``'s residuals and its inner codec's state) is saved there after each
call and loaded before the next, so a deployment equals ``run()`` round for round.  Each device
holds only its own client's state, as ``run()``'s one shared object holds every client's: a part
whose state mixes clients (one warm start shared by all) cannot behave the same on devices.  A part
with ``reset()`` but no ``state_dict()`` carries state it cannot hand over, and is refused when the
:class:`DeploymentConfig` is made, before any process starts.

The launcher that starts the SuperLink and SuperNodes is :mod:`fedlab_utils.deploy`.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from fedlab_utils.core.callbacks import Callback
from fedlab_utils.core.protocol import FedAvgProtocol
from fedlab_utils.core.registry import SPECS
from fedlab_utils.core.training import ClientResult
from fedlab_utils.validation import check_choice, check_fraction, check_int, check_real

CODEC_SPECS = SPECS["codec"]


__all__ = ["ProgressLines", "DeploymentConfig", "DeploymentResult", "make_codec", "CODEC_SPECS", "build_task", "simulate", "message_bytes",
           "make_client_app", "make_server_app", "send_and_receive", "PROGRESS_FILE",
           "HISTORY_FILE", "ROUNDS_FILE", "PAYLOAD_DIR", "FlowerRounds", "NODE_PARTITION_KEY", "NODE_COUNT_KEY", "PART_STATE_KEY"]

PROGRESS_FILE = "progress.jsonl"
HISTORY_FILE = "history.json"  # the run's History (History.from_dict reads it)
ROUNDS_FILE = "flower_rounds.json"  # the config and Flower's own record of each round (replies, message bytes)
PAYLOAD_DIR = "payloads"
DEFAULT_OUT = "fedlab-results"  # the ServerApp's output folder when the run config names none
NODE_PARTITION_KEY = "partition-id"
NODE_COUNT_KEY = "num-partitions"
PART_STATE_KEY = "fedlab-part-state"  # context.state entry: each stateful client-side part's state_dict()
STATEFUL_CLIENT_PARTS = ("uplink", "transform")
from fedlab_utils.data import PARTITIONS


def make_codec(spec: str):
    """A fresh course codec from a spec of :mod:`fedlab_utils.core.registry` (``fp32``, ``q8``,
    ``topk:0.01``, ``randk:0.1``, ``sign``, ``ef:<codec>`` or ``package.module:name``).  Both ends
    build theirs from the same spec."""
    from fedlab_utils.core.registry import resolve_codec

    return resolve_codec(spec, "uplink")


@dataclass(frozen=True)
class DeploymentConfig:
    """One federated task, as both apps read it from Flower's run config.

    The defaults are notebook 00's task, scaled to a handful of SuperNodes: mnist5k, the MLP,
    FedAvg with local SGD.  ``num_clients`` is the number of SuperNodes (one client each);
    ``uplink``, ``server``, ``aggregate`` and ``transform`` are registry names or import paths
    ``package.module:name`` (``server_lr`` sets a named server's rate).
    ``round_timeout`` is the longest the server waits for replies in a round (seconds; see
    :func:`send_and_receive`).  ``deadline_factor`` > 0 turns on a reporting deadline: after a
    round in which every client replied, later rounds wait at most ``deadline_factor`` × the
    slowest such round (at least 2 s), so a dead SuperNode costs one deadline, not the full timeout.
    """

    dataset: str = "mnist5k"
    data_dir: str = ""
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
    aggregate: str = "mean"
    transform: str = "none"
    seed: int = 0
    round_timeout: float = 120.0
    deadline_factor: float = 0.0
    node_wait: float = 120.0
    out_dir: str = ""
    save_payloads: bool = False

    def __post_init__(self) -> None:
        from fedlab_utils.data import DATASETS, NATURAL_CLIENT_DATASETS
        from fedlab_utils.models import MODELS

        check_choice("dataset", self.dataset, DATASETS)
        check_choice("model", self.model, MODELS)
        check_int("num_clients", self.num_clients, 1)
        check_choice("partition", self.partition, PARTITIONS)
        if self.partition == "natural" and self.dataset not in NATURAL_CLIENT_DATASETS:
            raise ValueError(f"partition='natural' needs a dataset with its own clients, not dataset={self.dataset!r}; "
                             f"valid: {list(NATURAL_CLIENT_DATASETS)}, or partition 'iid', 'dirichlet' or 'shards'")
        check_real("alpha", self.alpha, 0.0, low_inclusive=False)
        check_int("rounds", self.rounds, 1)
        check_fraction("fraction", self.fraction)
        check_int("local_epochs", self.local_epochs, 1)
        check_int("batch_size", self.batch_size, 1)
        check_real("lr", self.lr, 0.0, low_inclusive=False)
        check_real("server_lr", self.server_lr, 0.0, low_inclusive=False)
        parts = self.parts()  # every part resolves here, in the launcher, before any process starts
        for name in STATEFUL_CLIENT_PARTS:
            part_state_bytes(parts[name], name)  # a stateful part must hand its state to the next call
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
        from fedlab_utils.core.training import LocalTraining

        return LocalTraining(epochs=self.local_epochs, batch_size=self.batch_size, lr=self.lr)

    def server_optimizer(self):
        """A fresh server optimizer: a named one at ``server_lr``, else the registry's part."""
        from fedlab_utils.core.registry import SERVERS, make_server, resolve_server

        name = self.server.strip().lower()
        return make_server(name, lr=self.server_lr) if name in SERVERS else resolve_server(self.server, "server")

    def parts(self) -> dict:
        """Fresh ``uplink``, ``server``, ``aggregate`` and ``transform`` parts (imported if paths)."""
        from fedlab_utils.core.registry import resolve_aggregate, resolve_transform

        return {"uplink": make_codec(self.uplink), "server": self.server_optimizer(),
                "aggregate": resolve_aggregate(self.aggregate, "aggregate"),
                "transform": resolve_transform(self.transform, "transform")}


def part_state_bytes(part, name: str) -> bytes | None:
    """``part.state_dict()`` serialised for Flower's ``context.state`` (``None``: a stateless part).
    Raises ``ValueError`` naming ``name`` for a part with ``reset()`` but no ``state_dict()``."""
    import io

    import torch

    from fedlab_utils.core.checkpoint import object_state

    try:
        state = object_state(part, name)
    except ValueError as err:
        raise ValueError(f"{err}; on Flower each client's part lives in a fresh process every round, so its "
                         "state must travel through state_dict()/load_state_dict()") from None
    if state is None:
        return None
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def load_part_state(part, name: str, payload: bytes) -> None:
    """Load what :func:`part_state_bytes` wrote (``weights_only=True``: tensors and plain values, no pickle)."""
    import io

    import torch

    from fedlab_utils.core.checkpoint import load_object_state

    load_object_state(part, torch.load(io.BytesIO(payload), weights_only=True), name)


@dataclass
class DeploymentResult:
    """What a deployed run measured, round by round (see :mod:`fedlab_utils.deploy.apps`)."""

    config: DeploymentConfig
    records: list[dict]
    out_dir: Path
    seconds: float

    history_dict: dict | None = None

    @property
    def accuracy(self) -> list[float]:
        return [r["accuracy"] for r in self.records]

    @property
    def history(self):
        """The run's :class:`~fedlab_utils.core.history.History`, written by the ServerApp's ``run()``:
        the fields of a simulated run (rows, bytes, FLOPs, energy per round), Flower's message bytes
        in each round's ``metrics``."""
        from fedlab_utils.core.history import History

        return History.from_dict(self.history_dict)

    def totals(self) -> dict:
        keys = ("ledger_bytes_up", "flower_bytes_up", "ledger_bytes_down", "flower_bytes_down")
        return {k: int(sum(r[k] for r in self.records)) for k in keys}

    def table(self):
        import pandas as pd

        return pd.DataFrame([{k: r[k] for k in ("round", "accuracy", "ledger_bytes_up", "flower_bytes_up",
                                                 "replied")} | {"clients replied": len(r["replied"])}
                             for r in self.records]).set_index("round")


def build_task(config: DeploymentConfig):
    """``(clients, test, init_model)`` exactly as notebook 00 builds them for this seed.

    Every process (each SuperNode's ClientApp, the ServerApp, the notebook) builds the same task
    from the config; on real devices a SuperNode would load its own local data instead.
    """
    import torch

    from fedlab_utils.data import client_data, load_dataset, partition
    from fedlab_utils.models import make_model

    data = load_dataset(config.dataset, seed=config.seed, data_dir=config.data_dir or None)
    options = {"alpha": config.alpha} if config.partition == "dirichlet" else {}
    if config.partition == "natural":
        options = {"natural_ids": data.natural_clients}
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
    """One client's round, as the simulated loop trains it: decode the global state, train with the
    course's sequential trainer and the run's transform, encode the update with the run's codec."""
    from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

    from fedlab_utils.compression.wire import Fp32Codec
    from fedlab_utils.core.faults import update_is_finite
    from fedlab_utils.core.training import SequentialTrainer, model_state

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
    parts = config.parts()
    stored = context.state.config_records.get(PART_STATE_KEY)
    for name in STATEFUL_CLIENT_PARTS:  # the state this client's parts had after its last call
        if stored is not None and name in stored:
            load_part_state(parts[name], name, bytes(stored[name]))
    codec, transform = parts["uplink"], parts["transform"]
    received = Fp32Codec().decode(bytes(sent["global"]), model_state(model))
    [(update, loss, processed)] = SequentialTrainer()(model, received, [(partition_id, data)], config.local(),
                                                      round_idx, config.seed, transform)
    update = transform.on_update(update, partition_id)
    finite = update_is_finite(update)
    payload = codec.encode(update, partition_id) if finite else b""  # a non-finite update is never sent
    states = {name: part_state_bytes(parts[name], name) for name in STATEFUL_CLIENT_PARTS}
    if any(state is not None for state in states.values()):  # for this client's next call
        context.state[PART_STATE_KEY] = ConfigRecord({k: v for k, v in states.items() if v is not None})
    content = RecordDict({
        "fedlab": ConfigRecord({"payload": payload, "codec": config.uplink,
                                "sha256": hashlib.sha256(payload).hexdigest()}),
        "metrics": MetricRecord({"partition-id": partition_id, "num-examples": len(data), "train-loss": loss,
                                 "samples-processed": processed, "payload-bytes": len(payload),
                                 "finite": int(finite)}),
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


class FlowerRounds(FedAvgProtocol):
    """FedAvg's round steps with training on Flower: ``train`` sends the global model to the
    SuperNodes of the sampled clients and decodes their replies; the rest is FedAvgProtocol's.

    A client that does not reply within the round's timeout (or whose ClientApp raised) is an
    exception for :func:`~fedlab_utils.core.loop.run`, which records it as ``failed``.
    ``evaluate`` returns Flower's own message bytes as the round's metrics; the round's progress
    line is written by :class:`ProgressLines`, a callback of the run."""

    label = "flower"

    def __init__(self, model, grid, config: DeploymentConfig, progress: Path, out: Path):
        parts = config.parts()
        super().__init__(model, uplink=parts["uplink"], server=parts["server"], aggregate=parts["aggregate"],
                         transform=parts["transform"], trainer="sequential")
        self.grid, self.run_config, self.progress, self.out = grid, config, progress, out
        self.partition_to_node: dict[int, int] = {}
        self.slowest_full: float | None = None
        self.lines: list[dict] = []

    def setup(self, ctx) -> None:
        super().setup(ctx)
        config = self.run_config
        nodes = _wait_for_nodes(self.grid, config.num_clients, config.node_wait)
        _append_line(self.progress, {"event": "nodes", "nodes": len(nodes), "time": time.time()})
        if config.fraction < 1.0:
            self.partition_to_node = _partition_map(self.grid, nodes, config.round_timeout)

    def broadcast(self, round_idx, selected):
        down = super().broadcast(round_idx, selected)
        self.down_payload = self.downlink.encode(self.global_state)
        return down

    def _timeout(self) -> float:
        config = self.run_config
        if config.deadline_factor > 0 and self.slowest_full is not None:
            return min(config.round_timeout, max(2.0, config.deadline_factor * self.slowest_full))
        return config.round_timeout

    def train(self, round_idx, clients):
        from flwr.app import ConfigRecord, Message, MessageType, RecordDict

        start, timeout = time.monotonic(), self._timeout()
        if self.run_config.fraction < 1.0:
            targets = [self.partition_to_node[c] for c in clients if c in self.partition_to_node]
        else:
            targets = sorted(self.grid.get_node_ids())
        _append_line(self.progress, {"event": "round-start", "round": round_idx, "sent_to": len(targets),
                                     "time": time.time()})
        messages = [Message(RecordDict({"fedlab": ConfigRecord({"global": self.down_payload, "round": round_idx})}),
                            dst_node_id=node, message_type=MessageType.TRAIN, group_id=str(round_idx))
                    for node in targets]
        info = {"timeout": timeout, "flower_bytes_down": sum(message_bytes(m) for m in messages),
                "flower_bytes_up": 0, "errors": [], "payload_sha256": {}}
        fps = self.flops_per_sample(self.worker)
        results: dict[int, ClientResult] = {}
        for reply in send_and_receive(self.grid, messages, timeout):
            if reply.has_error():
                info["errors"].append(f"node {reply.metadata.src_node_id}: {reply.error.reason}")
                continue
            metrics, record = reply.content["metrics"], reply.content["fedlab"]
            payload, pid = bytes(record["payload"]), int(metrics["partition-id"])
            digest = hashlib.sha256(payload).hexdigest()
            if digest != record["sha256"]:
                raise ValueError(f"round {round_idx}: client {pid}'s payload changed in transit")
            if pid not in clients or pid in results:
                info["errors"].append(f"node {reply.metadata.src_node_id}: unexpected reply as client {pid}")
                continue
            info["flower_bytes_up"] += message_bytes(reply)
            info["payload_sha256"][pid] = digest
            if self.run_config.save_payloads:
                from fedlab_utils.files import atomic_write_bytes

                atomic_write_bytes(self.out / PAYLOAD_DIR / f"round{round_idx}-client{pid}.bin", payload)
            finite, processed = bool(metrics.get("finite", 1)), int(metrics["samples-processed"])
            update = self.uplink.decode(payload, self.received) if finite else {}
            results[pid] = ClientResult(pid, int(metrics["num-examples"]), update, float(metrics["train-loss"]),
                                        processed, len(payload), 0, fps * processed, finite=finite)
        if len(results) == len(targets) == len(clients):
            self.slowest_full = max(self.slowest_full or 0.0, time.monotonic() - start)
        info.update(round=round_idx, seconds=time.monotonic() - start, selected=list(clients), replied=sorted(results),
                    ledger_bytes_up=sum(r.bytes_up for r in results.values()),
                    ledger_bytes_down=len(self.down_payload) * len(clients))
        self.info = info
        return [results.get(c) or TimeoutError(f"client {c} sent no update within {timeout:.0f} s "
                                               f"({'; '.join(info['errors']) or 'no reply'})") for c in clients]

    def evaluate(self):
        accuracy, loss, _ = super().evaluate()
        info = self.round_info()
        return accuracy, loss, {k: info[k] for k in ("flower_bytes_up", "flower_bytes_down", "errors",
                                                      "payload_sha256")}

    def round_info(self) -> dict:
        """What Flower itself carried in the last round (message bytes, errors, payload digests)."""
        return {**self.info, "payload_sha256": {str(k): v for k, v in self.info["payload_sha256"].items()}}


class ProgressLines(Callback):
    """The deployment's progress file: one line per round, written when the round's record is
    complete (a :class:`~fedlab_utils.core.callbacks.Callback` of :func:`~fedlab_utils.core.loop.run`)."""

    def __init__(self, protocol: FlowerRounds, path: Path):
        self.protocol, self.path = protocol, path

    def on_round_end(self, record, history) -> None:
        line = {"event": "round", "accuracy": record.accuracy, "loss": record.loss, "time": time.time(),
                **self.protocol.round_info()}
        self.protocol.lines.append(line)
        _append_line(self.path, line)


def _server_main(grid, context, defaults: DeploymentConfig | None = None) -> None:
    """The course's :func:`~fedlab_utils.core.loop.run` on Flower's Grid (see :class:`FlowerRounds`)."""
    from fedlab_utils.core.loop import run
    from fedlab_utils.files import atomic_write_text

    config = _run_config(context, defaults)
    out = Path(config.out_dir or DEFAULT_OUT)
    out.mkdir(parents=True, exist_ok=True)
    progress = out / PROGRESS_FILE
    progress.write_text("", encoding="utf-8")
    clients, test, model = build_task(config)
    protocol = FlowerRounds(model, grid, config, progress, out)
    history = run(None, clients, test, rounds=config.rounds, fraction=config.fraction, local=config.local(),
                  seed=config.seed, protocol=protocol, on_client_error="skip", progress=False,
                  label=f"Flower {config.uplink}/{config.server}", callbacks=[ProgressLines(protocol, progress)])
    records = [{**line, "train_loss": rec.train_loss, "ledger_bytes_up": rec.bytes_up,
                "ledger_bytes_down": rec.bytes_down} for line, rec in zip(protocol.lines, history.records)]
    atomic_write_text(out / ROUNDS_FILE, json.dumps({"config": config.to_run_config(), "records": records}, indent=1))
    atomic_write_text(out / HISTORY_FILE, json.dumps(history.to_dict(), indent=1))  # last: it marks the run done


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
    """The same task in one process with the course's :func:`~fedlab_utils.core.loop.run`: the
    reference a deployment seeded identically must reproduce (``trainer`` as for ``run()``;
    the default trains client after client, as the SuperNodes do)."""
    from fedlab_utils.core.loop import run

    clients, test, init = build_task(config)
    parts = config.parts()
    return run(init, clients, test, rounds=config.rounds, fraction=config.fraction, local=config.local(),
               seed=config.seed, uplink=make_codec(config.uplink), server=parts["server"],
               aggregate=parts["aggregate"], transform=parts["transform"],
               label=f"in-process {config.uplink}/{config.server}", progress=progress, trainer=trainer)
