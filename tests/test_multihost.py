"""The deployment of docs/deployment.md across separate network hosts: Linux network namespaces.

Four hosts, each a network namespace with its own interfaces, routes, loopback and folder: a
server, a laptop and two devices, joined by a bridge that lives in the server's namespace
(198.18.0.0/24, the benchmarking range of RFC 2544; nothing outside the namespaces can reach it).
The commands of docs/deployment.md run verbatim, with only ``SERVER_IP`` replaced, each in its
host's namespace and folder; each host holds only the files the docs give it (a device: ``ca.crt``
and its own private key).  Then what goes wrong between real machines, each with the message
Flower or the OS gives:

* a device that dials the server by an address missing from the certificate's SANs is refused;
* a SuperLink started with ``--host 127.0.0.1`` cannot be reached from a device host;
* a device whose link to the server is cut mid-run drops out, and the run finishes by its deadline.

Needs root and iproute2 (``ip netns``); slow (about two minutes), so it runs only with
``FEDLAB_MULTIHOST=1`` (``make multihost-check``, which CI runs). Every namespace and every
process in it is removed afterwards, also when a test fails.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fedlab_utils.core import History

ROOT = Path(__file__).resolve().parents[1]
SUBNET = "198.18.0"
SERVER, LAPTOP, DEVICES = f"{SUBNET}.1", f"{SUBNET}.2", (f"{SUBNET}.3", f"{SUBNET}.4")
NOT_IN_SANS = f"{SUBNET}.11"  # a second address of the server, not named in its certificate
PORT = 9092


def _why_not_runnable() -> str | None:
    if os.environ.get("FEDLAB_MULTIHOST") != "1":
        return "multi-host test: slow, run it with `make multihost-check` (FEDLAB_MULTIHOST=1)"
    if os.geteuid() != 0:
        return "multi-host test: needs root for `ip netns add`"
    if shutil.which("ip") is None:
        return "multi-host test: needs iproute2 (`apt-get install -y iproute2`)"
    return None


pytestmark = pytest.mark.skipif(_why_not_runnable() is not None, reason=str(_why_not_runnable()))


# ----------------------------------------------------------------------------- the hosts
@dataclass
class Host:
    """One machine: a network namespace, an address on the shared bridge and its own folder."""

    name: str
    namespace: str
    address: str
    folder: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        bin_dir = str(Path(sys.executable).parent)
        return {**os.environ, "FLWR_HOME": str(self.folder / ".flwr"), "HOME": str(self.folder),
                "PATH": bin_dir + os.pathsep + os.environ["PATH"], "OMP_NUM_THREADS": "1",
                "FEDLAB_PROGRESS": "0", "FLWR_TELEMETRY_ENABLED": "0", "PYTHONUNBUFFERED": "1"}

    def argv(self, command: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, "bash", "-euc", command]

    def run(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a shell command on this host and wait for it."""
        return subprocess.run(self.argv(command), cwd=self.folder, env=self.env(), capture_output=True,
                              text=True, timeout=timeout)

    def start(self, command: str, log_name: str) -> subprocess.Popen:
        """Start a long-running command on this host (what the docs background with ``&``)."""
        with open(self.folder / log_name, "wb") as log:
            proc = subprocess.Popen(self.argv(command), cwd=self.folder, env=self.env(), stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(proc)
        return proc

    def log(self, log_name: str) -> str:
        path = self.folder / log_name
        return path.read_text(errors="replace") if path.exists() else ""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _netns_pids(namespace: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _remove_namespace(namespace: str) -> None:
    """Kill every process inside ``namespace``, then delete it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _netns_pids(namespace):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while _netns_pids(namespace) and time.monotonic() < deadline:
            time.sleep(0.1)
    subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


class Network:
    """Four namespaces joined by a bridge in the server's; ``close()`` removes everything."""

    def __init__(self, root: Path):
        tag = f"fl{os.getpid() % 100000}"
        self.tag = tag
        self.hosts: dict[str, Host] = {}
        self._veths: list[str] = []
        roles = [("server", SERVER), ("laptop", LAPTOP), ("device 0", DEVICES[0]), ("device 1", DEVICES[1])]
        try:
            for role, address in roles:
                short = role.replace("device ", "d").replace("server", "srv").replace("laptop", "lap")
                namespace = f"{tag}-{short}"
                _ip("netns", "add", namespace)
                folder = root / short
                folder.mkdir(parents=True)
                self.hosts[role] = Host(role, namespace, address, folder)
                _ip("-n", namespace, "link", "set", "lo", "up")
            server_ns = self.hosts["server"].namespace
            _ip("-n", server_ns, "link", "add", "br0", "type", "bridge")
            _ip("-n", server_ns, "link", "set", "br0", "up")
            _ip("-n", server_ns, "addr", "add", f"{SERVER}/24", "dev", "br0")
            _ip("-n", server_ns, "addr", "add", f"{NOT_IN_SANS}/24", "dev", "br0")
            for role, host in self.hosts.items():
                if role == "server":
                    continue
                port_name = f"p-{host.namespace.rsplit('-', 1)[1]}"
                # the pair is made inside the server's namespace; one end moves to the host as eth0
                _ip("-n", server_ns, "link", "add", port_name, "type", "veth", "peer", "name", "eth0",
                    "netns", host.namespace)
                _ip("-n", server_ns, "link", "set", port_name, "master", "br0")
                _ip("-n", server_ns, "link", "set", port_name, "up")
                _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
                _ip("-n", host.namespace, "link", "set", "eth0", "up")
        except BaseException:
            self.close()
            raise

    def __getitem__(self, role: str) -> Host:
        return self.hosts[role]

    def cut(self, role: str) -> None:
        """Cut a host's link to the others (its cable pulled): no packet in or out."""
        _ip("-n", self.hosts[role].namespace, "link", "set", "eth0", "down")

    def close(self) -> None:
        for host in self.hosts.values():
            for proc in host.processes:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
            _remove_namespace(host.namespace)
        self.hosts.clear()


def _namespaces_with(tag: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"{tag}-")]


# ----------------------------------------------------------------------------- the docs' script
@dataclass
class DocStep:
    where: str  # "server", "laptop", "device 0", ...
    why: str
    command: str
    background: bool


STEP_COMMENT = re.compile(r"^# (server|laptop|device \d+): (.+)$")


def docs_steps(server_ip: str) -> list[DocStep]:
    """The bash block of docs/deployment.md, split at its ``# <host>: <why>`` comments, with only
    ``SERVER_IP`` replaced. A trailing `` &`` marks a command the docs run in the background."""
    text = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    steps: list[DocStep] = []
    for line in block.replace("SERVER_IP", server_ip).splitlines():
        match = STEP_COMMENT.match(line)
        if match:
            steps.append(DocStep(match[1], match[2], "", False))
        elif steps and not line.startswith("# "):
            steps[-1].command += line + "\n"
    for step in steps:
        step.command = step.command.rstrip("\n")
        if step.command.endswith(" &"):
            step.command, step.background = step.command[:-2], True
    return [s for s in steps if s.command]


def _give(src: Path, dst_folder: Path, names: list[str]) -> None:
    """Copy only ``names`` of the server's PKI folder to another host (as the docs say to)."""
    (dst_folder / "fedlab-pki").mkdir(exist_ok=True)
    for name in names:
        shutil.copy2(src / name, dst_folder / "fedlab-pki" / name)


def _wait_for(predicate, timeout: float, what: str, logs: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs[-3000:]}")


# ----------------------------------------------------------------------------- the federation
@pytest.fixture(scope="module")
def network(tmp_path_factory):
    net = Network(tmp_path_factory.mktemp("hosts"))
    tag = net.tag
    try:
        yield net
    finally:
        net.close()
        assert _namespaces_with(tag) == [], "a namespace survived the clean-up"


@pytest.fixture(scope="module")
def federation(network):
    """Run the docs' commands on their hosts; returns the laptop's `flwr run` output."""
    server, laptop = network["server"], network["laptop"]
    out = []
    for step in docs_steps(SERVER):
        host = network[step.where]
        if step.where.startswith("device") and not (host.folder / "fedlab-pki").exists():
            index = int(step.where.split()[1])
            _give(server.folder / "fedlab-pki", host.folder, ["ca.crt", f"supernode-{index}"])
        if step.where == "laptop" and not (host.folder / "fedlab-pki").exists():
            pki = server.folder / "fedlab-pki"
            _give(pki, host.folder, ["ca.crt", *sorted(p.name for p in pki.glob("supernode-*.pub"))])
        if step.background:
            host.start(step.command, f"{step.where.replace(' ', '')}.log")
            continue
        done = host.run(step.command, timeout=600)
        out.append(f"[{step.where}] $ {step.command}\n{done.stdout}{done.stderr}")
        assert done.returncode == 0, "\n".join(out)[-4000:] + "\n" + server.log("server.log")[-2000:]
    return "\n".join(out)


def test_hosts_hold_only_their_own_keys(network, federation):
    for i in (0, 1):
        held = sorted(p.name for p in (network[f"device {i}"].folder / "fedlab-pki").iterdir())
        assert held == ["ca.crt", f"supernode-{i}"]
    assert not (network["laptop"].folder / "fedlab-pki" / "server.key").exists()


def test_the_docs_commands_run_across_hosts_and_equal_run(network, federation):
    from fedlab_utils.deploy import DeploymentConfig, simulate

    results = network["server"].folder / "fedlab-results"
    records = json.loads((results / "flower_rounds.json").read_text())["records"]
    rounds = len(records)
    assert rounds == 20 and all(r["replied"] == [0, 1] for r in records), federation[-2000:]
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # each ClientApp trains with one thread
    try:
        reference = simulate(DeploymentConfig(num_clients=2, rounds=rounds))
    finally:
        torch.set_num_threads(threads)
    assert [r["accuracy"] for r in records] == reference.accuracy
    assert [r["ledger_bytes_up"] for r in records] == [r.bytes_up for r in reference.records]
    history = History.from_dict(json.loads((results / "history.json").read_text()))  # the run's History
    assert [r.energy for r in history.records] == [r.energy for r in reference.records]


def test_a_device_dialling_an_address_missing_from_the_sans_is_refused(network, federation):
    device = network["device 0"]
    cmd = (f"flower-supernode --root-certificates fedlab-pki/ca.crt --auth-supernode-private-key "
           f"fedlab-pki/supernode-0 --superlink {NOT_IN_SANS}:{PORT} --node-config 'partition-id=0 num-partitions=2' "
           f"--host 127.0.0.1 --port 9193")
    device.start(cmd, "wrong-address.log")
    # gRPC's TLS check: the certificate names 198.18.0.1 (and localhost), not the address dialled
    _wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in device.log("wrong-address.log")
              or "not in peer certificate" in device.log("wrong-address.log"),
              120, "the TLS refusal", device.log("wrong-address.log"))
    assert "Activated" not in device.log("wrong-address.log")


def test_a_superlink_bound_to_loopback_cannot_be_reached_from_a_device(network, federation):
    server, device = network["server"], network["device 1"]
    pki = "fedlab-pki"
    server.start(f"flower-superlink --ssl-ca-certfile {pki}/ca.crt --ssl-certfile {pki}/server.pem "
                 f"--ssl-keyfile {pki}/server.key --enable-supernode-auth --host 127.0.0.1 --port 9192 "
                 f"--disable-runtime-dependency-installation --database :flwr-in-memory:", "loopback.log")
    probe = "exec 3<>/dev/tcp/{}/9192"
    _wait_for(lambda: server.run(probe.format("127.0.0.1"), timeout=10).returncode == 0, 60,
              "the loopback SuperLink to listen", server.log("loopback.log"))
    reached = device.run(probe.format(SERVER), timeout=10)
    assert reached.returncode != 0 and "Connection refused" in reached.stderr, reached


def test_a_device_cut_off_mid_run_drops_out_and_the_run_finishes(network, federation):
    server, laptop = network["server"], network["laptop"]
    rounds, deadline_factor = 4, 2.0
    made = laptop.run(f"python -m fedlab_utils deploy app --out cut-app --supernodes 2 -p rounds {rounds} "
                      f"-p deadline_factor {deadline_factor}")
    assert made.returncode == 0, made.stderr
    results = server.folder / "fedlab-results"  # the ServerApp's folder, where the SuperLink runs
    shutil.rmtree(results)  # the first run's; this run writes its own
    submission = laptop.start("flwr run cut-app fedlab --stream", "cut-run.log")

    def rounds_done() -> int:
        lines = (results / "progress.jsonl").read_text().splitlines() if (results / "progress.jsonl").exists() else []
        return sum(json.loads(line)["event"] == "round" for line in lines if line.strip())

    _wait_for(lambda: rounds_done() >= 1, 300, "round 1", laptop.log("cut-run.log"))
    network.cut("device 1")
    submission.wait(timeout=600)  # each later round waits at most its deadline, not the 120 s timeout
    assert submission.returncode == 0, laptop.log("cut-run.log")[-3000:]
    records = json.loads((results / "flower_rounds.json").read_text())["records"]
    replied = [r["replied"] for r in records]
    assert len(replied) == rounds and replied[0] == [0, 1]
    assert all(r == [0] for r in replied[2:]), replied  # round 2 may have got device 1's reply in time
    assert all(r["timeout"] < 120 for r in records[2:]), "later rounds waited the full round timeout"
