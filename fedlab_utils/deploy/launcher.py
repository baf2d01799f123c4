"""Launch the course's Flower app on this machine exactly as it would run on several machines.

:func:`deploy` starts one ``flower-superlink`` and N ``flower-supernode`` processes (separate OS
processes, the same commands you would type on a server and on each device), submits the run
with ``flwr run``, streams per-round progress, and **always** tears every process down: on
success, on error and on Ctrl-C.  Ports are chosen free.

Secure by default: each federation gets a throwaway PKI (:mod:`fedlab_utils.deploy.pki`) in its own
temporary folder; the SuperLink serves TLS and admits only SuperNodes whose public key was
registered with ``flwr supernode register`` before they start (``--enable-supernode-auth``).
``insecure=True`` (``--insecure``) is an explicit opt-in to plain HTTP and prints a warning.
:func:`real_machine_commands` renders the very commands :func:`local_federation` runs, with
only the addresses changed, for a server and real devices.

CLI (:mod:`fedlab_utils.deploy.cli`): ``python -m fedlab_utils deploy --supernodes 2 -p rounds 3 -p uplink q8``;
``python -m fedlab_utils deploy pki --out DIR --supernodes N --san 203.0.113.5``;
``python -m fedlab_utils deploy app --out DIR -p rounds 20``.
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
from dataclasses import dataclass, field, replace
from pathlib import Path

from fedlab_utils.deploy.apps import HISTORY_FILE, PROGRESS_FILE, ROUNDS_FILE, DeploymentConfig, DeploymentResult
from fedlab_utils.deploy.commands import (
    CONNECTION,
    app_dir,
    connection_toml,
    superlink_command,
    supernode_command,
    toml_value,
)
from fedlab_utils.deploy.pki import PKI, make_pki
from fedlab_utils.devices import free_port
from fedlab_utils.i18n import N_, gettext

__all__ = ["DeploymentError", "LocalFederation", "deploy", "local_simulation", "local_federation",
           "flower_command", "FLOWER_PROCESS_NAMES", "INSECURE_WARNING", "flower_processes",
           "submit", "submit_many", "print_round"]

FLOWER_PROCESS_NAMES = ("flower-superlink", "flower-supernode", "flower-superexec", "flwr-serverapp",
                        "flwr-clientapp")
# what the command lines of the simulation runtime's Ray processes contain
RAY_PROCESS_MARKS = ("ray/", "ray::", "raylet", "gcs_server", "flwr-simulation")
INSECURE_WARNING = N_("WARNING: insecure mode (--insecure): SuperLink and SuperNodes talk plain HTTP on 127.0.0.1. "
                      "Fine on one machine; across machines use TLS and SuperNode authentication (see "
                      "real_machine_commands()).")


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


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


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
    pki: PKI | None = None
    node_ids: dict[int, int] = field(default_factory=dict)
    simulation: bool = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def secure(self) -> bool:
        """TLS and SuperNode authentication on (False only for an explicit ``insecure=True``)."""
        return self.pki is not None

    def supernode_names(self) -> list[str]:
        return [n for n in self.processes if n.startswith("supernode-")]

    def kill_supernode(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Stop SuperNode ``index`` abruptly (as a device that loses power would), with its children."""
        proc = self.processes[f"supernode-{index}"]
        _signal_tree(proc.pid, sig)

    def pids(self) -> set[int]:
        """The processes this federation started and all their descendants, right now, plus any
        process running with this federation's ``$FLWR_HOME``: a SuperNode that exits leaves its
        detached SuperExec to init, and the simulation runtime's Ray daemons (GCS, raylet,
        workers) detach from the process that started them."""
        import psutil

        pids = set()
        for proc in self.processes.values():
            pids |= _tree(proc.pid)
        names = FLOWER_PROCESS_NAMES + (RAY_PROCESS_MARKS if self.simulation else ())
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if any(n in " ".join(proc.info.get("cmdline") or []) for n in names):
                with contextlib.suppress(psutil.Error):
                    if proc.environ().get("FLWR_HOME") == str(self.home):
                        pids.add(proc.info["pid"])
        return pids

    def log_tail(self, name: str, lines: int = 5) -> str:
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        return " | ".join(line.strip() for line in path.read_text(errors="replace").splitlines()[-lines:] if line.strip())

    def flwr(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``flwr ARGS`` against this federation (its ``$FLWR_HOME``); return stdout, or raise
        :class:`DeploymentError` with Flower's message."""
        done = subprocess.run([flower_command("flwr"), *args], capture_output=True, text=True, env=self.env,
                              stdin=subprocess.DEVNULL, timeout=timeout)
        if done.returncode != 0:
            raise DeploymentError(f"flwr {' '.join(args[:2])} failed (exit {done.returncode}): "
                                  f"{_one_line(done.stdout + done.stderr)}")
        return done.stdout

    def register(self, *public_keys: str | Path, timeout: float = 60.0) -> list[int]:
        """``flwr supernode register`` each key (at once): the SuperLink will admit their holders;
        their node ids, in order."""
        prefix = f"register-extra{sum(1 for n in self.processes if n.startswith('register-extra'))}"
        ids = _register_all(self, [Path(k) for k in public_keys], timeout, prefix=prefix)
        return [ids[i] for i in range(len(public_keys))]

    def wait_activated(self, node_id: int, timeout: float = 60.0) -> None:
        """Block until the SuperLink's log says it activated ``node_id`` (it came online)."""
        deadline, needle = time.monotonic() + timeout, f"Activated node_id={node_id}"
        while needle not in (self.logs / "superlink.log").read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise DeploymentError(f"node {node_id} did not come online within {timeout:.0f} s")
            time.sleep(0.2)

    def unregister(self, node_id: int) -> None:
        """``flwr supernode unregister``: the SuperLink stops serving this node."""
        self.flwr("supernode", "unregister", str(node_id), CONNECTION, "--format", "json")

    def nodes(self) -> dict[int, str]:
        """``flwr supernode list``: node id -> status (``registered``, ``online``, ``offline``, ``unregistered``)."""
        listing = _json_out(self.flwr("supernode", "list", CONNECTION, "--format", "json"))
        return {int(n["node-id"]): n["status"] for n in listing.get("nodes", [])}

    def start_supernode(self, name: str, index: int, *, private_key: str | Path | None,
                        root_certificates: str | Path | None, max_retries: int | None = None) -> subprocess.Popen:
        """Start one more ``flower-supernode`` named ``name`` as client ``index`` (a device, or an
        intruder: any key, any CA, ``root_certificates=None`` for plain HTTP); torn down with the rest."""
        command = supernode_command(self.address, index, self.supernodes, root_certificates=root_certificates,
                                    private_key=private_key, port=free_port(), max_retries=max_retries)
        return _start(self, name, [flower_command(command[0]), *command[1:]])


def _one_line(text: str) -> str:
    import re

    plain = re.sub(r"\x1b\[[0-9;]*m|[│╭╮╰╯─]", " ", text)
    return " ".join(plain.split())[-600:] or "(no output)"


def _json_out(text: str) -> dict:
    """The JSON object in ``flwr ... --format json`` output (Flower may print lines before it, and
    colours it when it believes it writes to a terminal)."""
    import re

    plain = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)
    return json.loads(plain[plain.index("{"):plain.rindex("}") + 1])


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
    # a part given as an import path (-p uplink mymodule:MyCodec) imports in the ServerApp and
    # ClientApp processes as in the launcher, which finds modules in its working folder
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), env.get("PYTHONPATH", "")) if p)
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
                     announce: Callable[[str], None] | None = print, insecure: bool = False,
                     sans: tuple[str, ...] = (), simulation: bool = False,
                     logs_kept: bool = True) -> Iterator[LocalFederation]:
    """Start a SuperLink and ``supernodes`` SuperNodes; yield them; tear all down on exit.

    Secure unless ``insecure=True``: a fresh PKI in ``workdir/pki`` (private keys 0600), the
    SuperLink on TLS with ``--enable-supernode-auth``, every SuperNode's public key registered
    with ``flwr supernode register`` before the SuperNodes start.  These are the commands of
    :func:`machine_steps` with ``server='127.0.0.1'``.  SuperNode ``i`` gets node config
    ``partition-id=i num-partitions=N``: it is client ``i``.  ``threads`` caps each process's torch
    threads (1: N processes share few cores fairly).

    ``simulation=True`` starts the SuperLink with Flower's **simulation runtime** instead
    (``flower-superlink --simulation``): no SuperNode processes; each run executes its ClientApps on
    ``supernodes`` virtual SuperNodes in Ray workers (one CPU each), on one machine or on a Ray cluster
    the machine has joined. It listens on 127.0.0.1 only, in plain HTTP (nothing leaves the machine).
    ``logs_kept=False``: the caller removes ``workdir`` afterwards, so the announcement names no path
    in it (neither the logs nor the PKI).
    """
    if not isinstance(supernodes, int) or isinstance(supernodes, bool) or supernodes < 1:
        raise ValueError(f"supernodes={supernodes!r} is invalid; valid: an int ≥ 1")
    if not isinstance(insecure, bool):
        raise ValueError(f"insecure={insecure!r} is invalid; valid: True or False")
    superlink = flower_command("flower-superlink")
    if simulation:
        _require_ray()
    else:
        flower_command("flower-supernode")
    base = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="fedlab-flower-"))
    home, logs = base / "flwr-home", base / "logs"
    home.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port() if port is None else port
    if _port_open("127.0.0.1", port):
        raise DeploymentError(f"port {port} is already in use; pass another port (or None to pick a free one)")
    pki = None if insecure or simulation else make_pki(base / "pki", supernodes, sans)
    federation = LocalFederation(supernodes, port, home, logs, env=_child_env(home, threads), pki=pki,
                                 simulation=simulation)
    (home / "config.toml").write_text(connection_toml(federation.address, pki and pki.ca_cert), encoding="utf-8")
    if announce and insecure and not simulation:
        announce(gettext(INSECURE_WARNING))
    try:
        command = superlink_command(pki, "127.0.0.1", port)[1:]
        if simulation:  # the runtime runs each run's ClientApps in Ray; its processes are subprocesses
            command += ["--simulation", "--isolation", "subprocess"]
        _start(federation, "superlink", [superlink, *command])
        _wait_listening(federation, "superlink", port, start_timeout)
        if simulation:
            if announce:
                announce(gettext("SuperLink on {address} with Flower's simulation runtime (Ray), "
                                 "{supernodes} virtual SuperNodes per run{logs}").format(
                    address=federation.address, supernodes=supernodes, logs=_where_logs(logs, logs_kept)))
            yield federation
            return
        if pki is not None:
            federation.node_ids.update(_register_all(federation, pki.supernode_public_keys, start_timeout))
        for i in range(supernodes):
            federation.start_supernode(f"supernode-{i}", i, private_key=pki and pki.supernode_keys[i],
                                       root_certificates=pki and pki.ca_cert)
        if announce:
            where_pki = (gettext(", PKI in {folder}").format(folder=pki.folder)
                         if pki is not None and logs_kept else "")  # never a path that goes
            mode = (gettext("TLS + SuperNode authentication, {supernodes} keys registered{pki}").format(
                supernodes=supernodes, pki=where_pki) if pki is not None else gettext("insecure"))
            announce(gettext("SuperLink on {address} ({mode}), {supernodes} SuperNodes started{logs}").format(
                address=federation.address, mode=mode, supernodes=supernodes, logs=_where_logs(logs, logs_kept)))
        yield federation
    finally:
        teardown(federation)


def _where_logs(logs: Path, kept: bool) -> str:
    return (gettext(" (logs in {logs})").format(logs=logs) if kept
            else gettext(" (Flower's logs are removed at the end; --keep-logs keeps them)"))


def _register_all(federation: LocalFederation, public_keys: tuple[Path, ...] | list[Path], timeout: float,
                  prefix: str = "register") -> dict[int, int]:
    """``flwr supernode register`` every key at once (one CLI process each, logged as
    ``<prefix>-<i>``); key index -> node id."""
    flwr = flower_command("flwr")
    running = {}
    for i, pub in enumerate(public_keys):
        name = f"{prefix}-{i}"
        running[i] = _start(federation, name, [flwr, "supernode", "register", str(pub), CONNECTION, "--format", "json"])
    ids = {}
    for i, proc in running.items():
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeploymentError(f"flwr supernode register did not finish within {timeout:.0f} s") from None
        text = (federation.logs / f"{prefix}-{i}.log").read_text(errors="replace")
        if code != 0 or "node-id" not in text:
            raise DeploymentError(f"registering SuperNode {i}'s key failed (exit {code}): {_one_line(text)}")
        ids[i] = int(_json_out(text)["node-id"])
    return ids


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
    for stale in (PROGRESS_FILE, ROUNDS_FILE, HISTORY_FILE):
        (out_dir / stale).unlink(missing_ok=True)
    index = sum(1 for n in federation.processes if n.startswith("flwr-run-"))
    config = replace(config, out_dir=str(out_dir), num_clients=federation.supernodes)
    app = app_dir(federation.home.parent / f"app-{index}", config)
    command = [flower_command("flwr"), "run", str(app), CONNECTION, "--stream"]
    if federation.simulation:
        command += ["--federation-config", f"num-supernodes={federation.supernodes}"]
    for key, value in config.to_run_config().items():
        command += ["--run-config", f"{key}={toml_value(value)}"]
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
                    rounds = json.loads((run.out_dir / ROUNDS_FILE).read_text(encoding="utf-8"))
                    history = json.loads((run.out_dir / HISTORY_FILE).read_text(encoding="utf-8"))
                    run.result = DeploymentResult(run.config, rounds["records"], run.out_dir,
                                                  time.monotonic() - run.start, history)
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


def print_round(record: dict, name: str | None = None) -> None:
    """The default progress line of one round (other progress events are ignored); ``name``
    labels the run when several run at once (:func:`submit_many`)."""
    if record.get("event") != "round":
        return
    label = f"[{name}] " if name else ""
    print(label + gettext("round {round}: accuracy {accuracy:.2f}%  clients {replied}/{selected}  "
                          "up {ledger:,} B ledger / {flower:,} B Flower  ({seconds:.1f} s)").format(
        round=record["round"], accuracy=100 * record["accuracy"], replied=len(record["replied"]),
        selected=len(record["selected"]), ledger=record["ledger_bytes_up"], flower=record["flower_bytes_up"],
        seconds=record["seconds"]), flush=True)


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


def deploy(config: DeploymentConfig | None = None, *, supernodes: int | None = None, out_dir: str | Path | None = None,
           on_round: Callable[[dict], None] | None = print_round, announce: Callable[[str], None] | None = print,
           threads: int | None = 1, insecure: bool = False, simulation: bool = False,
           keep_logs: bool = False) -> DeploymentResult:
    """Start a local SuperLink and ``supernodes`` SuperNodes, run ``config`` on them, tear down.

    ``supernodes`` defaults to ``config.num_clients``.  TLS and SuperNode authentication are on
    unless ``insecure=True``; the PKI lives in a temporary folder removed on return.  Every process
    is stopped on return, on error and on Ctrl-C.  ``simulation=True`` runs the same apps on
    Flower's simulation runtime instead (:func:`local_simulation`).  ``keep_logs=True`` keeps the
    folder with Flower's logs (and the PKI's public parts) and names it; otherwise it is removed.
    """
    config = config or DeploymentConfig()
    supernodes = config.num_clients if supernodes is None else supernodes
    work = Path(tempfile.mkdtemp(prefix="fedlab-flower-"))
    try:
        with local_federation(supernodes, workdir=work, threads=threads, announce=announce, insecure=insecure,
                              simulation=simulation, logs_kept=keep_logs) as federation:
            result = submit(federation, config, out_dir or work / "out", on_round=on_round)
    finally:
        if not keep_logs:
            shutil.rmtree(work, ignore_errors=True)
        else:
            for secret in (work / "pki").glob("*"):  # private keys never outlive the run
                if secret.name.endswith(".key") or (secret.name.startswith("supernode-") and secret.suffix != ".pub"):
                    secret.unlink(missing_ok=True)
    return result


def local_simulation(config: DeploymentConfig | None = None, *, supernodes: int | None = None,
                     out_dir: str | Path | None = None, on_round: Callable[[dict], None] | None = print_round,
                     announce: Callable[[str], None] | None = print, threads: int | None = 1) -> DeploymentResult:
    """The course's ServerApp and ClientApp on Flower's **simulation runtime** (Ray): a local
    SuperLink started with ``--simulation`` runs ``config`` on ``supernodes`` virtual SuperNodes.

    The apps, the parts (``uplink``, ``server``, ``aggregate``, ``transform``, import paths included)
    and the :class:`~fedlab_utils.core.history.History` are those of :func:`deploy`, so a seeded run equals
    :func:`~fedlab_utils.core.loop.run` round for round.  Needs Ray (``pip install
    'fedlab-utils[scale]'``).  Every process, Ray's included, is stopped on return.
    """
    return deploy(config, supernodes=supernodes, out_dir=out_dir, on_round=on_round, announce=announce,
                  threads=threads, simulation=True)


def _require_ray() -> None:
    """Flower's simulation runtime runs on Ray: one clear error when it is missing."""
    try:
        import ray  # noqa: F401
    except ImportError as err:
        raise DeploymentError("Flower's simulation runtime needs Ray, which is not installed "
                              f"({err}); install it with: pip install 'fedlab-utils[scale]' "
                              "(flwr[simulation])") from None


