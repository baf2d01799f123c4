"""Launch the course's Flower app on this machine exactly as it would run on several machines.

:func:`deploy` starts one ``flower-superlink`` and N ``flower-supernode`` processes (separate OS
processes, the same commands you would type on a server and on each device), submits the run
with ``flwr run``, streams per-round progress, and **always** tears every process down: on
success, on error and on Ctrl-C.  Ports are chosen free.  Locally the processes talk without
TLS (``--insecure``), which is only acceptable on localhost; :func:`real_machine_commands` prints
the commands for real machines, with pointers to Flower's TLS and SuperNode-authentication docs.

CLI: ``python -m fedlab_utils deploy --supernodes 2 -p rounds 3 -p uplink q8``.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .flower import HISTORY_FILE, NODE_COUNT_KEY, NODE_PARTITION_KEY, PROGRESS_FILE, DeploymentConfig

__all__ = ["DeploymentError", "LocalFederation", "DeploymentResult", "deploy", "local_federation", "free_port",
           "flower_command", "app_dir", "real_machine_commands", "FLOWER_PROCESS_NAMES", "INSECURE_WARNING",
           "flower_processes", "parse_parameters", "submit", "submit_many", "print_round"]

FLOWER_PROCESS_NAMES = ("flower-superlink", "flower-supernode", "flower-superexec", "flwr-serverapp",
                        "flwr-clientapp")
INSECURE_WARNING = ("WARNING: insecure mode (--insecure): SuperLink and SuperNodes talk plain HTTP on 127.0.0.1. "
                    "Fine on one machine; across machines use TLS and SuperNode authentication (see "
                    "real_machine_commands()).")
CONNECTION = "fedlab-local"
APP_MODULE = "fedlab_app"
TLS_DOCS = "https://flower.ai/docs/framework/how-to-enable-tls-connections.html"
AUTH_DOCS = "https://flower.ai/docs/framework/how-to-authenticate-supernodes.html"
DEPLOY_DOCS = "https://flower.ai/docs/framework/deploy.html"


class DeploymentError(RuntimeError):
    """A deployment could not start or did not finish; the message is one clear line."""


def flower_command(name: str) -> str:
    """Path of a Flower executable (``flwr``, ``flower-superlink``, ...), preferring this Python's env."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        raise DeploymentError(f"{name!r} not found: Flower is not installed in this environment "
                              f"(run `pip install -e .` in the course folder; it pins flwr)")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def app_dir(folder: str | Path, config: DeploymentConfig) -> Path:
    """Write the Flower app folder ``flwr run`` submits: a ``pyproject.toml`` naming the two
    components of :mod:`fedlab_utils.flower` and a one-line module that re-exports them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    defaults = "\n".join(f"{k} = {_toml_value(v)}" for k, v in config.to_run_config().items())
    (folder / "pyproject.toml").write_text(f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedlab-deploy"
version = "1.0.0"
description = "Efficient Federated Learning course: its loop's pieces as a Flower app"
license = "MIT"
dependencies = ["fedlab-utils"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "efficient-fl-course"

[tool.flwr.app.components]
serverapp = "{APP_MODULE}:server_app"
clientapp = "{APP_MODULE}:client_app"

[tool.flwr.app.config]
{defaults}
""", encoding="utf-8")
    (folder / f"{APP_MODULE}.py").write_text(
        '"""The course\'s Flower app: both components live in fedlab_utils.flower."""\n'
        "from fedlab_utils.flower import make_client_app, make_server_app\n\n"
        "client_app = make_client_app()\nserver_app = make_server_app()\n", encoding="utf-8")
    return folder


def flower_processes() -> list[dict]:
    """Every Flower process of this user on this machine: ``[{pid, name, cmdline}]``."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "username"]):
        cmd = proc.info.get("cmdline") or []
        text = " ".join(cmd)
        name = next((n for n in FLOWER_PROCESS_NAMES if n in text), None)
        if name is not None and proc.info["pid"] != os.getpid():
            found.append({"pid": proc.info["pid"], "name": name, "cmdline": text})
    return found


@dataclass
class LocalFederation:
    """A SuperLink and its SuperNodes running on this machine (see :func:`local_federation`)."""

    supernodes: int
    port: int
    home: Path
    logs: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def supernode_names(self) -> list[str]:
        return [n for n in self.processes if n.startswith("supernode-")]

    def kill_supernode(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Stop SuperNode ``index`` abruptly (as a device that loses power would), with its children."""
        proc = self.processes[f"supernode-{index}"]
        _signal_tree(proc.pid, sig)

    def pids(self) -> set[int]:
        """The processes this federation started and all their descendants, right now."""
        pids = set()
        for proc in self.processes.values():
            pids |= _tree(proc.pid)
        return pids

    def log_tail(self, name: str, lines: int = 5) -> str:
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        return " | ".join(line.strip() for line in path.read_text(errors="replace").splitlines()[-lines:] if line.strip())


def _tree(pid: int) -> set[int]:
    import psutil

    try:
        root = psutil.Process(pid)
        return {pid} | {child.pid for child in root.children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def _signal_tree(pid: int, sig: int) -> None:
    for member in _tree(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member, sig)


def teardown(federation: LocalFederation, grace: float = 5.0) -> None:
    """Stop every process of ``federation`` and their descendants: SIGTERM, then SIGKILL after
    ``grace`` seconds.  Returns when none is left (processes reaped)."""
    import psutil

    known = federation.pids()
    for pid in known:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        known |= federation.pids()
        alive = [p for p in known if psutil.pid_exists(p) and _not_zombie(p)]
        if not alive:
            break
        time.sleep(0.1)
    known |= federation.pids()
    for pid in known:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    for proc in federation.processes.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    deadline = time.monotonic() + grace
    while any(psutil.pid_exists(p) and _not_zombie(p) for p in known) and time.monotonic() < deadline:
        time.sleep(0.05)


def _not_zombie(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _child_env(home: Path, threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["FLWR_HOME"] = str(home)
    env["FEDLAB_PROGRESS"] = "0"
    env.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no network calls home from the course
    env.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def _start(federation: LocalFederation, name: str, command: list[str]) -> subprocess.Popen:
    log = open(federation.logs / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it
    try:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=federation.env, start_new_session=True)
    finally:
        log.close()
    federation.processes[name], federation.commands[name] = proc, command
    return proc


def _wait_listening(federation: LocalFederation, name: str, port: int, patience: float) -> None:
    proc = federation.processes[name]
    deadline = time.monotonic() + patience
    while not _port_open("127.0.0.1", port):
        if proc.poll() is not None:
            raise DeploymentError(f"{name} exited at start (code {proc.returncode}): {federation.log_tail(name, 3)}")
        if time.monotonic() > deadline:
            raise DeploymentError(f"{name} did not listen on port {port} within {patience:.0f} s: "
                                  f"{federation.log_tail(name, 3)}")
        time.sleep(0.1)


@contextlib.contextmanager
def local_federation(supernodes: int, *, workdir: str | Path | None = None, port: int | None = None,
                     threads: int | None = 1, start_timeout: float = 60.0,
                     announce: Callable[[str], None] | None = print) -> Iterator[LocalFederation]:
    """Start a SuperLink and ``supernodes`` SuperNodes; yield them; tear all down on exit.

    SuperNode ``i`` gets node config ``partition-id=i num-partitions=N``: it is client ``i``.
    ``threads`` caps each process's torch threads (1: N processes share few cores fairly).
    """
    if not isinstance(supernodes, int) or isinstance(supernodes, bool) or supernodes < 1:
        raise ValueError(f"supernodes={supernodes!r} is invalid; valid: an int ≥ 1")
    superlink, supernode = flower_command("flower-superlink"), flower_command("flower-supernode")
    base = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="fedlab-flower-"))
    home, logs = base / "flwr-home", base / "logs"
    home.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port() if port is None else port
    if _port_open("127.0.0.1", port):
        raise DeploymentError(f"port {port} is already in use; pass another port (or None to pick a free one)")
    federation = LocalFederation(supernodes, port, home, logs, env=_child_env(home, threads))
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\naddress = "{federation.address}"\n'
        f"insecure = true\n", encoding="utf-8")
    if announce:
        announce(INSECURE_WARNING)
    try:
        _start(federation, "superlink", [superlink, "--insecure", "--host", "127.0.0.1", "--port", str(port),
                                         "--disable-runtime-dependency-installation"])
        _wait_listening(federation, "superlink", port, start_timeout)
        for i in range(supernodes):
            node_port = free_port()
            _start(federation, f"supernode-{i}", [
                supernode, "--insecure", "--superlink", federation.address,
                "--node-config", f"{NODE_PARTITION_KEY}={i} {NODE_COUNT_KEY}={supernodes}",
                "--host", "127.0.0.1", "--port", str(node_port)])
        if announce:
            announce(f"SuperLink on {federation.address}, {supernodes} SuperNodes started (logs in {logs})")
        yield federation
    finally:
        teardown(federation)


@dataclass
class DeploymentResult:
    """What a deployed run measured, round by round (see :mod:`fedlab_utils.flower`)."""

    config: DeploymentConfig
    records: list[dict]
    out_dir: Path
    seconds: float

    @property
    def accuracy(self) -> list[float]:
        return [r["accuracy"] for r in self.records]

    def totals(self) -> dict:
        keys = ("ledger_bytes_up", "flower_bytes_up", "ledger_bytes_down", "flower_bytes_down")
        return {k: int(sum(r[k] for r in self.records)) for k in keys}

    def table(self):
        import pandas as pd

        return pd.DataFrame([{k: r[k] for k in ("round", "accuracy", "ledger_bytes_up", "flower_bytes_up",
                                                 "replied")} | {"clients replied": len(r["replied"])}
                             for r in self.records]).set_index("round")


@dataclass
class _Submission:
    """One ``flwr run`` in flight (see :func:`submit_many`)."""

    name: str
    config: DeploymentConfig
    out_dir: Path
    runner: subprocess.Popen
    log_path: Path
    start: float
    limit: float
    on_round: Callable[[dict], None] | None = None
    seen: int = 0
    result: DeploymentResult | None = None


def _launch(federation: LocalFederation, name: str, config: DeploymentConfig, out_dir: str | Path,
            timeout: float | None, on_round: Callable[[dict], None] | None) -> _Submission:
    """Start ``flwr run`` for ``config`` (its own app folder and output folder) and return at once."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (PROGRESS_FILE, HISTORY_FILE):
        (out_dir / stale).unlink(missing_ok=True)
    index = sum(1 for n in federation.processes if n.startswith("flwr-run-"))
    config = replace(config, out_dir=str(out_dir), num_clients=federation.supernodes)
    app = app_dir(federation.home.parent / f"app-{index}", config)
    command = [flower_command("flwr"), "run", str(app), CONNECTION, "--stream"]
    for key, value in config.to_run_config().items():
        command += ["--run-config", f"{key}={_toml_value(value)}"]
    log_path = federation.logs / f"run-{index}.log"
    with open(log_path, "wb") as log:
        runner = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env=federation.env, start_new_session=True)
    federation.processes[f"flwr-run-{index}"] = runner
    limit = timeout if timeout is not None else 60.0 + config.rounds * (config.round_timeout + 60.0)
    return _Submission(name, config, out_dir, runner, log_path, time.monotonic(), limit, on_round)


def _step(federation: LocalFederation, run: _Submission) -> bool:
    """Report ``run``'s new progress records; True once its history is written.  Raises
    :class:`DeploymentError` if the run, or the SuperLink, died, or the run ran out of time."""
    run.seen = _report_progress(run.out_dir / PROGRESS_FILE, run.seen, run.on_round)
    done = run.runner.poll() is not None
    history = run.out_dir / HISTORY_FILE
    if not history.exists() and done:
        time.sleep(0.5)  # the history may land just after the stream closes
    if history.exists():
        run.seen = _report_progress(run.out_dir / PROGRESS_FILE, run.seen, run.on_round)
        return True
    if done:
        raise DeploymentError(f"the Flower run {run.name!r} ended without results (exit {run.runner.returncode}); "
                              f"flwr run said: {_tail(run.log_path, 4)}")
    superlink = federation.processes["superlink"]
    if superlink.poll() is not None:
        raise DeploymentError(f"superlink died (exit {superlink.returncode}): {federation.log_tail('superlink', 3)}")
    if time.monotonic() - run.start > run.limit:
        raise DeploymentError(f"the Flower run {run.name!r} did not finish within {run.limit:.0f} s; "
                              f"flwr run said: {_tail(run.log_path, 4)}")
    return False


def _reap(run: _Submission) -> None:
    if run.runner.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            run.runner.wait(timeout=10)
    if run.runner.poll() is None:
        _signal_tree(run.runner.pid, signal.SIGKILL)
        run.runner.wait()


def _wait(federation: LocalFederation, runs: list[_Submission]) -> None:
    """Poll ``runs`` until every one has its result; whatever happens, no ``flwr run`` is left."""
    try:
        pending = list(runs)
        while pending:
            for run in list(pending):
                if _step(federation, run):
                    pending.remove(run)
                    _reap(run)
                    history = json.loads((run.out_dir / HISTORY_FILE).read_text(encoding="utf-8"))
                    run.result = DeploymentResult(run.config, history["records"], run.out_dir,
                                                  time.monotonic() - run.start)
            if pending:
                time.sleep(0.2)
    finally:
        for run in runs:
            _reap(run)


def submit_many(federation: LocalFederation, configs: dict[str, DeploymentConfig], out_dir: str | Path, *,
                on_round: Callable[[str, dict], None] | None = None,
                timeout: float | None = None) -> dict[str, DeploymentResult]:
    """``flwr run`` every config on ``federation`` **at the same time**, as a shared federation
    serves several runs; return ``{name: result}`` once all have finished.

    Each run gets its own app folder and ``out_dir/<name>`` output folder; ``on_round(name,
    record)`` is called with each progress record of each run as its ServerApp writes it.  The
    runs are independent (each its own ServerApp process, seed and model), so each result equals
    the same run made alone; only the wall time shrinks, because Flower's polling waits overlap.
    Raises :class:`DeploymentError` as soon as any run fails (the federation's teardown then stops
    the others).
    """
    if not configs:
        raise ValueError("configs is empty; pass at least one {name: DeploymentConfig}")
    out_root = Path(out_dir)
    runs = [_launch(federation, name, config, out_root / _folder_name(name), timeout,
                    None if on_round is None else (lambda record, _name=name: on_round(_name, record)))
            for name, config in configs.items()]
    _wait(federation, runs)
    return {run.name: run.result for run in runs}


def _folder_name(name: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip("._")
    return safe or "run"


def submit(federation: LocalFederation, config: DeploymentConfig, out_dir: str | Path, *,
           on_round: Callable[[dict], None] | None = None, timeout: float | None = None) -> DeploymentResult:
    """``flwr run`` the course app on ``federation``; call ``on_round`` with each progress record
    as the ServerApp writes it (``event`` is ``nodes``, ``round-start`` or ``round``); return the result.
    Raises :class:`DeploymentError` if the run fails.  Several runs at once: :func:`submit_many`."""
    run = _launch(federation, "run", config, out_dir, timeout, on_round)
    _wait(federation, [run])
    return run.result


def _tail(path: Path, lines: int) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip()) or "(nothing)"


def _report_progress(path: Path, seen: int, on_round: Callable[[dict], None] | None) -> int:
    if not path.exists():
        return seen
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    complete = lines if text.endswith("\n") else lines[:-1]  # a line being written is read next time
    for line in complete[seen:]:
        record = json.loads(line)
        if on_round is not None:
            on_round(record)
    return max(seen, len(complete))


def print_round(record: dict, name: str | None = None) -> None:
    """The default progress line of one round (other progress events are ignored); ``name``
    labels the run when several run at once (:func:`submit_many`)."""
    if record.get("event") != "round":
        return
    label = f"[{name}] " if name else ""
    print(f"{label}round {record['round']}: accuracy {100 * record['accuracy']:.2f}%  "
          f"clients {len(record['replied'])}/{len(record['selected'])}  "
          f"up {record['ledger_bytes_up']:,} B ledger / {record['flower_bytes_up']:,} B Flower  "
          f"({record['seconds']:.1f} s)", flush=True)


def deploy(config: DeploymentConfig | None = None, *, supernodes: int | None = None, out_dir: str | Path | None = None,
           on_round: Callable[[dict], None] | None = print_round, announce: Callable[[str], None] | None = print,
           threads: int | None = 1) -> DeploymentResult:
    """Start a local SuperLink and ``supernodes`` SuperNodes, run ``config`` on them, tear down.

    ``supernodes`` defaults to ``config.num_clients``.  Every process is stopped on return, on
    error and on Ctrl-C.
    """
    config = config or DeploymentConfig()
    supernodes = config.num_clients if supernodes is None else supernodes
    with tempfile.TemporaryDirectory(prefix="fedlab-flower-") as work:
        with local_federation(supernodes, workdir=work, threads=threads, announce=announce) as federation:
            return submit(federation, config, out_dir or Path(work) / "out", on_round=on_round)


def real_machine_commands(supernodes: int = 2, server: str = "SERVER_IP") -> str:
    """The commands for a SuperLink on a server and one SuperNode per device (TLS on)."""
    lines = [
        "# On the server (public address SERVER_IP), with TLS certificates:",
        "flower-superlink --ssl-ca-certfile ca.crt --ssl-certfile server.pem --ssl-keyfile server.key "
        "--host 0.0.0.0 --port 9091 --enable-supernode-auth",
        f"# TLS: {TLS_DOCS}",
        f"# SuperNode authentication: {AUTH_DOCS}",
        "",
    ]
    for i in range(supernodes):
        lines.append(f"# On device {i}:")
        lines.append(f"flower-supernode --root-certificates ca.crt --superlink {server}:9091 "
                     f"--auth-supernode-private-key device{i}_key "
                     f"--node-config \"{NODE_PARTITION_KEY}={i} {NODE_COUNT_KEY}={supernodes}\"")
    lines += ["", "# From your laptop: submit the app (a [superlink.<name>] entry in $FLWR_HOME/config.toml "
              "holds the address and root-certificates)",
              "flwr run <app folder> <superlink name> --stream --run-config \"rounds=20 uplink='q8'\"",
              f"# Flower deployment guide: {DEPLOY_DOCS}"]
    return "\n".join(lines)


def parse_parameters(pairs: list[list[str]] | None) -> dict:
    """``-p NAME VALUE`` pairs -> typed :class:`DeploymentConfig` keyword arguments."""
    kinds = {f.name: f.type for f in fields(DeploymentConfig)}
    values = {}
    for name, raw in pairs or []:
        if name not in kinds or name in ("out_dir", "num_clients"):
            valid = sorted(set(kinds) - {"out_dir", "num_clients"})
            raise ValueError(f"parameter {name!r} is not a deployment parameter; valid: {valid} "
                             f"(the number of clients is --supernodes)")
        kind = kinds[name]
        try:
            values[name] = (int(raw) if kind == "int" else float(raw) if kind == "float"
                            else raw.lower() in ("1", "true", "yes") if kind == "bool" else raw)
        except ValueError:
            raise ValueError(f"parameter {name}={raw!r} is not a valid {kind}") from None
    return values


def main(supernodes: int, pairs: list[list[str]] | None, out_dir: str | None) -> int:
    """The ``deploy`` subcommand: one clear line on failure, exit status 2."""
    try:
        if supernodes < 1:
            raise ValueError(f"--supernodes={supernodes} is invalid; valid: an int ≥ 1 (one SuperNode per client)")
        config = DeploymentConfig(**parse_parameters(pairs), num_clients=supernodes)
        result = deploy(config, supernodes=supernodes, out_dir=out_dir)
    except (DeploymentError, ValueError) as err:
        print(f"deploy: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deploy: interrupted; every Flower process was stopped", file=sys.stderr)
        return 130
    totals = result.totals()
    print(f"done in {result.seconds:.1f} s: final accuracy {100 * result.accuracy[-1]:.2f}%, "
          f"uplink {totals['ledger_bytes_up']:,} B (ledger) / {totals['flower_bytes_up']:,} B (Flower messages); "
          f"history in {result.out_dir / HISTORY_FILE}" if out_dir else
          f"done in {result.seconds:.1f} s: final accuracy {100 * result.accuracy[-1]:.2f}%, "
          f"uplink {totals['ledger_bytes_up']:,} B (ledger) / {totals['flower_bytes_up']:,} B (Flower messages)")
    return 0


def add_parser(sub) -> None:
    """The ``deploy`` subcommand of ``python -m fedlab_utils``."""
    parser = sub.add_parser("deploy", help="run the course's FL task on a local Flower SuperLink + N SuperNodes",
                            description="Start a local Flower SuperLink and N SuperNodes (separate processes, "
                                        "insecure localhost mode), run the task with `flwr run`, stream progress, "
                                        "tear everything down.")
    parser.add_argument("--supernodes", type=int, default=2, help="number of SuperNodes = clients (default: 2)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                        help="set a DeploymentConfig field, e.g. -p rounds 5 -p uplink q8 -p server fedadam")
    parser.add_argument("--out", default=None, help="folder for the run's progress.jsonl and history.json")
    parser.set_defaults(func=lambda args: main(args.supernodes, args.parameter, args.out))
