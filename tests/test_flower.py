"""Flower deployment (fedlab_utils.deploy.apps / fedlab_utils.deploy) on real Flower processes.

One secure federation (a SuperLink on TLS with SuperNode authentication, 2 registered SuperNodes)
serves three runs at once (``submit_many``): 2 rounds of 8-bit uplink + FedAdam, 2 rounds of FedAvg
that samples one of the two clients per round (``fraction=0.5``), and error feedback.  The checks
that need them: each run's accuracy equals the in-process ``run()``; every course payload the
ServerApp received is byte for byte the one the in-process loop encodes.  While the runs train,
three intruders try the same SuperLink -- an unregistered key, a SuperNode trusting another CA,
a plain-HTTP SuperNode -- and before them a registered node is unregistered; each must be refused
with Flower's own error.  More deployments stop in the middle of a run, by an exception and by
Ctrl-C (SIGINT) on the ``deploy`` CLI, and check that no Flower process is left.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fedlab_utils.deploy import (
    PAYLOAD_DIR,
    DeploymentConfig,
    DeploymentError,
    build_task,
    flower_processes,
    local_federation,
    make_codec,
    make_pki,
    message_bytes,
    parse_parameters,
    real_machine_commands,
    simulate,
    submit,
    submit_many,
)
from fedlab_utils.deploy import cli as deploy_cli

CONFIG = DeploymentConfig(num_clients=2, rounds=2, uplink="q8", server="fedadam", server_lr=0.01,
                          round_timeout=300.0, save_payloads=True)
PARTS_MODULE = "fedlab_test_parts"
PARTS_SOURCE = '''"""A researcher's own codec, in a module of their own (the tests write it to a temporary folder)."""
import numpy as np
import torch


class HalfCodec:
    """Every tensor of the update as float16, in state-dict order: 2 bytes per value."""

    name = "fp16 (own module)"

    def encode(self, update, client_id=0):
        return b"".join(t.detach().to(torch.float16).contiguous().numpy().tobytes() for t in update.values())

    def decode(self, payload, template):
        out, offset = {}, 0
        for key, t in template.items():
            size = 2 * t.numel()
            values = np.frombuffer(payload[offset:offset + size], dtype=np.float16).copy()
            out[key] = torch.from_numpy(values).to(t.dtype).reshape(t.shape)
            offset += size
        return out


class PowerSGDLike:
    """PowerSGD's low-rank uplink (Vogels et al., 2019), as a researcher writes it: each matrix M of
    the update (a conv kernel read as rows x rest) is sent as P = orth(M Q) and Q' = M^T P, float32,
    and decoded as P Q'^T; a tensor too small for ``rank`` goes as float32.  Each client's Q' is the
    next round's warm start: per-client state that changes every payload from round 2 on.
    ``warm_start=False`` starts every payload from the initial Q (what a lost state looks like)."""

    def __init__(self, rank=2, warm_start=True):
        self.rank, self.warm_start = rank, warm_start
        self.name = f"PowerSGD-like rank {rank}" + ("" if warm_start else " (no warm start)")
        self._q = {}

    def _low_rank(self, shape):
        return len(shape) >= 2 and min(shape[0], int(np.prod(shape[1:]))) > self.rank

    def encode(self, update, client_id=0):
        qs = self._q.setdefault(int(client_id), {}) if self.warm_start else {}
        parts = []
        for index, (key, t) in enumerate(update.items()):
            m = t.detach().float()
            if not self._low_rank(tuple(m.shape)):
                parts.append(m.contiguous().numpy().tobytes())
                continue
            m = m.reshape(m.shape[0], -1)
            q = qs.get(key)
            if q is None:
                q = torch.randn(m.shape[1], self.rank, generator=torch.Generator().manual_seed(index))
            p, _ = torch.linalg.qr(m @ q)
            q = m.T @ p
            qs[key] = q
            parts += [p.contiguous().numpy().tobytes(), q.contiguous().numpy().tobytes()]
        return b"".join(parts)

    def decode(self, payload, template):
        out, offset = {}, 0

        def take(count):
            nonlocal offset
            values = np.frombuffer(payload[offset:offset + 4 * count], dtype=np.float32).copy()
            offset += 4 * count
            return torch.from_numpy(values)

        for key, t in template.items():
            if not self._low_rank(tuple(t.shape)):
                out[key] = take(t.numel()).to(t.dtype).reshape(t.shape)
                continue
            rows, rest = t.shape[0], t.numel() // t.shape[0]
            p, q = take(rows * self.rank).reshape(rows, self.rank), take(rest * self.rank).reshape(rest, self.rank)
            out[key] = (p @ q.T).to(t.dtype).reshape(t.shape)
        return out

    def reset(self):
        self._q = {}

    def state_dict(self):
        return {"q": {int(c): dict(qs) for c, qs in self._q.items()}}

    def load_state_dict(self, state):
        self._q = {int(c): dict(qs) for c, qs in state["q"].items()}


class ResetOnly(HalfCodec):
    """State it cannot hand over: reset() but no state_dict()."""

    def reset(self):
        pass
'''
# one of two clients per round, with a codec imported from the researcher's module and FedMedian
HALF = dict(num_clients=2, rounds=2, fraction=0.5, seed=3, round_timeout=300.0, save_payloads=True,
            uplink=f"{PARTS_MODULE}:HalfCodec", aggregate="median")


@pytest.fixture(scope="module")
def half(tmp_path_factory):
    """HALF's config, with the researcher's module importable here and in every Flower process."""
    folder = tmp_path_factory.mktemp("own-parts")
    (folder / f"{PARTS_MODULE}.py").write_text(PARTS_SOURCE, encoding="utf-8")
    saved = os.environ.get("PYTHONPATH")
    sys.path.insert(0, str(folder))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), saved) if p)
    try:
        yield DeploymentConfig(**HALF)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(PARTS_MODULE, None)
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
EF = DeploymentConfig(num_clients=2, rounds=2, uplink="ef:topk:0.05", seed=1, round_timeout=300.0)
# a stateful codec by import path with constructor arguments, as `deploy -p uplink "mod:PowerSGDLike(rank=4)"` gives it
POWERSGD = f"{PARTS_MODULE}:PowerSGDLike(rank=4)"
STATEFUL = dict(num_clients=2, rounds=2, seed=2, round_timeout=300.0, save_payloads=True, uplink=POWERSGD)


class RecordingCodec:
    """Wraps a codec and keeps every payload it encodes, in call order: (client_id, bytes)."""

    def __init__(self, inner):
        self.inner, self.name, self.sent = inner, inner.name, []

    def encode(self, update, client_id=0):
        payload = self.inner.encode(update, client_id)
        self.sent.append((client_id, payload))
        return payload

    def decode(self, payload, template):
        return self.inner.decode(payload, template)


INTRUDER_PATIENCE = 120.0  # seconds an intruder (--max-retries 0) may take to give up on a busy 2-core machine


@dataclass
class Intruder:
    """A SuperNode the federation must refuse: how it ended and what Flower said."""

    returncode: int | None
    log: str
    pid: int


def _wait_intruder(federation, name: str, patience: float = INTRUDER_PATIENCE) -> Intruder:
    """Wait (bounded) for intruder ``name`` to give up; kill it if it has not by then."""
    proc = federation.processes[name]
    try:
        code = proc.wait(timeout=patience)
    except subprocess.TimeoutExpired:
        code = None  # still running: it was let in (or hangs); the test says which
        proc.kill()
        proc.wait()
    return Intruder(code, (federation.logs / f"{name}.log").read_text(errors="replace"), proc.pid)


def _wait_joined(federation, name: str, node_id: int, patience: float = 60.0) -> None:
    """Until SuperNode ``name`` is online: the SuperLink activated its registered ``node_id``; on an
    insecure federation (no keys: Flower gives the node a new id) until the node logs its id."""
    if federation.secure:
        federation.wait_activated(node_id, patience)
        return
    deadline = time.monotonic() + patience
    while "SuperNode ID" not in (federation.logs / f"{name}.log").read_text(errors="replace"):
        if time.monotonic() > deadline:
            return
        time.sleep(0.2)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, half):
    """The secure federation: a member joins and is unregistered, three intruders knock while three
    runs train at once, then the member tries again."""
    work = tmp_path_factory.mktemp("flower")
    rogue = make_pki(work / "rogue-pki", 3)  # another CA and keys the federation never saw
    with local_federation(2, workdir=work / "fed", announce=None) as federation:
        secure = federation.secure
        # what a device of this federation presents: our CA and a key (none without TLS: Flower refuses a key then)
        trust = federation.pki.ca_cert if secure else None
        key = (lambda i: rogue.supernode_keys[i]) if secure else (lambda i: None)
        # key 1: registered, used by the wrong-CA node (only TLS can stop it); key 2: a member
        spare, member = federation.register(rogue.supernode_public_keys[1], rogue.supernode_public_keys[2])
        federation.start_supernode("member", 0, private_key=key(2), root_certificates=trust, max_retries=0)
        federation.start_supernode("unregistered", 0, private_key=key(0), root_certificates=trust, max_retries=0)
        federation.start_supernode("wrong-ca", 0, private_key=key(1), max_retries=0,
                                   root_certificates=rogue.ca_cert if secure else None)
        # a plain-HTTP SuperNode, without a key (with one, Flower itself refuses to start without TLS)
        federation.start_supernode("plaintext", 0, private_key=None, root_certificates=None, max_retries=0)
        _wait_joined(federation, "member", member)
        before = federation.nodes().get(member)
        federation.unregister(member)  # no run is active yet: the member never gets work
        federation.start_supernode("member-again", 0, private_key=key(2), root_certificates=trust, max_retries=0)
        results = submit_many(federation, {"q8": CONFIG, "half": half, "ef": EF,
                                           "stateful": DeploymentConfig(**STATEFUL)}, work / "out")
        intruders = {name: _wait_intruder(federation, name) for name in ("unregistered", "wrong-ca", "plaintext")}
        unregister = {"node_id": member, "before": before, "member": _wait_intruder(federation, "member", 60.0),
                      "again": _wait_intruder(federation, "member-again")}
        nodes = federation.nodes()
        commands = dict(federation.commands)
        pids, pki, port = federation.pids(), federation.pki, federation.port
    return SimpleNamespace(results=results, pids=pids, intruders=intruders, unregister=unregister, spare=spare,
                           nodes=nodes, commands=commands, pki=pki, port=port, secure=secure)


def _recorded_run(config):
    """The in-process run() of ``config``, recording every uplink payload.  Torch runs with
    1 thread, as each Flower process does (the launcher's default): a different thread count
    splits the matmul sums differently and changes the last bits of the weights."""
    import fedlab_utils.deploy.apps as flower

    recorder, threads = RecordingCodec(make_codec(config.uplink)), torch.get_num_threads()
    original, flower.make_codec = flower.make_codec, lambda spec: recorder
    torch.set_num_threads(1)
    try:
        history = simulate(config)
    finally:
        flower.make_codec = original
        torch.set_num_threads(threads)
    return history, recorder.sent


@pytest.fixture(scope="module")
def reference():
    return _recorded_run(CONFIG)


def _received_payloads(result, history) -> dict:
    """(round, client) -> the payload bytes the ServerApp saved, for every client that replied."""
    folder = result.out_dir / PAYLOAD_DIR
    return {(r.round, c): (folder / f"round{r.round}-client{c}.bin").read_bytes() for r in history.records
            for c in r.clients}


def _simulate_one_thread(config):
    """run() of ``config`` with 1 torch thread, as each Flower process trains."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return simulate(config)
    finally:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- real processes
def test_deployment_accuracy_equals_the_in_process_run(deployed, reference):
    result = deployed.results["q8"]
    reference, _ = reference
    assert [r["round"] for r in result.records] == [1, 2]
    assert all(r["replied"] == [0, 1] and not r["errors"] for r in result.records)
    assert result.accuracy == reference.accuracy  # same seed, same payloads, same order: identical
    assert [r["loss"] for r in result.records] == pytest.approx(reference.loss, rel=0, abs=1e-9)
    assert result.totals()["ledger_bytes_up"] == reference.totals()["bytes_up"]


def test_a_sampled_fraction_on_flower_equals_the_in_process_run(deployed, half):
    """fraction=0.5 of 2 clients: the ServerApp samples one SuperNode per round, as run() does."""
    result = deployed.results["half"]
    reference = _simulate_one_thread(half)
    assert [len(r["selected"]) for r in result.records] == [1, 1]
    assert [sorted(r["selected"]) for r in result.records] == [sorted(r.clients) for r in reference.records]
    assert all(r["replied"] == r["selected"] for r in result.records)
    assert result.accuracy == reference.accuracy
    assert result.totals()["ledger_bytes_up"] == reference.totals()["bytes_up"]


def test_error_feedback_residual_survives_between_clientapp_calls(deployed):
    """Each ClientApp call is a fresh process; EF's residual lives in Flower's context.state, so
    round 2 sends top-k of (update + round 1's residual), exactly as run()'s ErrorFeedback does."""
    result = deployed.results["ef"]
    reference = _simulate_one_thread(EF)
    assert result.accuracy == reference.accuracy
    assert result.totals()["ledger_bytes_up"] == reference.totals()["bytes_up"]
    without_memory = _simulate_one_thread(replace(EF, uplink="topk:0.05"))
    assert without_memory.accuracy[0] == reference.accuracy[0]  # round 1: no residual yet
    assert without_memory.accuracy[1] != reference.accuracy[1]  # round 2: the residual matters


def test_deployment_history_has_the_simulated_fields_and_energy_per_round(deployed, reference):
    """The ServerApp runs the course's run(): its History has every field of a simulated one, and
    the same clients, bytes, FLOPs and modelled joules per round; Flower's bytes are in metrics."""
    import json
    from dataclasses import fields as dataclass_fields

    from fedlab_utils.core import History, RoundRecord
    from fedlab_utils.deploy.apps import HISTORY_FILE

    # D8: the history.json a deployment writes is the run's History, as History.from_dict reads it
    written = deployed.results["q8"].out_dir / HISTORY_FILE
    deployed_history, simulated = History.from_dict(json.loads(written.read_text(encoding="utf-8"))), reference[0]
    assert deployed_history.to_dict().keys() == simulated.to_dict().keys()
    assert deployed_history.totals().keys() == simulated.totals().keys()
    assert deployed_history.config["uplink"] == simulated.config["uplink"] and deployed_history.config["server"] == \
        simulated.config["server"]
    names = [f.name for f in dataclass_fields(RoundRecord)]
    for ours, theirs in zip(deployed_history.records, simulated.records, strict=True):
        assert list(ours.to_dict()) == list(theirs.to_dict()) == names
        assert (ours.clients, ours.bytes_up, ours.bytes_down, ours.client_flops) == \
            (theirs.clients, theirs.bytes_up, theirs.bytes_down, theirs.client_flops)
        assert ours.energy.total > 0 and ours.energy == theirs.energy  # energy per round, priced as simulated
        assert [row["energy"] for row in ours.client_rows] == [row["energy"] for row in theirs.client_rows]
        assert ours.metrics["flower_bytes_up"] > ours.bytes_up > 0
    assert deployed_history.energy() == simulated.energy()


def test_own_codec_from_a_module_runs_on_flower_byte_for_byte(deployed, half):
    """-p uplink fedlab_test_parts:HalfCodec: both Flower processes import the researcher's module,
    and every payload the ServerApp received is byte for byte the one run() encodes."""
    result = deployed.results["half"]
    history, sent = _recorded_run(half)
    assert history.config["uplink"] == "fp16 (own module)" and result.history.config["uplink"] == "fp16 (own module)"
    received = _received_payloads(result, result.history)
    assert [payload for _, payload in sent] == [received[(r.round, c)] for r in history.records for c in r.clients]
    values = sum(t.numel() for t in build_task(half)[2].state_dict().values())
    assert all(len(p) == 2 * values for p in received.values())  # float16: 2 bytes per value
    assert result.accuracy == history.accuracy


def test_a_stateful_codec_keeps_its_state_between_rounds_on_flower(deployed, half):
    """-p uplink "fedlab_test_parts:PowerSGDLike(rank=4)": a researcher's codec by import path with a
    constructor argument, whose per-client warm start is state (state_dict/load_state_dict).  Each
    SuperNode's ClientApp runs in a fresh process every round and the state travels in Flower's
    context.state, so over 2 rounds and 2 SuperNodes the deployment equals run() in accuracy, and
    in payload bytes every round: each payload byte for byte, each of the hand-counted length."""
    config = DeploymentConfig(**STATEFUL)
    result = deployed.results["stateful"]
    reference, sent = _recorded_run(config)
    assert reference.config["uplink"] == result.history.config["uplink"] == "PowerSGD-like rank 4"
    assert [r["round"] for r in result.records] == [1, 2]
    assert all(r["replied"] == [0, 1] and not r["errors"] for r in result.records)
    assert result.accuracy == reference.accuracy
    assert [r["ledger_bytes_up"] for r in result.records] == [r.bytes_up for r in reference.records]
    received = _received_payloads(result, result.history)
    assert [payload for _, payload in sent] == [received[(r.round, c)] for r in reference.records for c in r.clients]
    assert all(len(p) == _powersgd_bytes(config, 4) for p in received.values())
    # the warm start matters: without it round 1 is the same and round 2 is not
    cold = _simulate_one_thread(replace(config, uplink=f"{PARTS_MODULE}:PowerSGDLike(rank=4, warm_start=False)"))
    assert cold.loss[0] == reference.loss[0] and cold.loss[1] != reference.loss[1]


def _powersgd_bytes(config, rank: int) -> int:
    """The hand count of one PowerSGDLike payload: float32 P (rows x rank) and Q (rest x rank) for
    each matrix larger than the rank, every other tensor whole."""
    total = 0
    for t in build_task(config)[2].state_dict().values():
        rows, rest = (t.shape[0], t.numel() // t.shape[0]) if t.ndim >= 2 else (1, t.numel())
        total += 4 * rank * (rows + rest) if t.ndim >= 2 and min(rows, rest) > rank else 4 * t.numel()
    return total


def test_an_import_path_with_arguments_runs_and_its_checkpoint_keeps_the_arguments(half, tmp_path):
    """run(uplink="fedlab_test_parts:PowerSGDLike(rank=4)") builds the researcher's codec with
    rank=4 and sends the hand-counted bytes; its checkpoint refuses to resume at rank 2, naming
    rank, and resumes at rank 4 exactly; `deploy -p uplink` passes the spec through untouched."""
    from fedlab_utils.core import run

    assert parse_parameters([["uplink", POWERSGD]]) == {"uplink": POWERSGD}
    config = DeploymentConfig(**{**STATEFUL, "rounds": 1, "save_payloads": False})
    clients, test, init = build_task(config)
    path = tmp_path / "powersgd.ckpt"

    def go(spec, rounds):
        return run(init, clients, test, rounds=rounds, uplink=spec, seed=config.seed, progress=False,
                   checkpoint=path, resume=True)

    first = go(POWERSGD, 1)
    assert first.config["uplink"] == "PowerSGD-like rank 4"
    assert first.records[0].bytes_up == 2 * _powersgd_bytes(config, 4)
    with pytest.raises(ValueError, match="rank"):
        go(f"{PARTS_MODULE}:PowerSGDLike(rank=2)", 2)
    resumed = go(POWERSGD, 2)
    path.unlink()
    straight = go(POWERSGD, 2)
    assert resumed.accuracy == straight.accuracy and resumed.loss == straight.loss


def test_a_stateful_part_without_state_dict_is_refused_before_launch(half):
    with pytest.raises(ValueError, match=r"uplink=.*ResetOnly.*no state_dict\(\).*state_dict\(\)/load_state_dict\(\)"):
        DeploymentConfig(num_clients=2, uplink=f"{PARTS_MODULE}:ResetOnly")


def test_course_codec_payload_survives_flower_byte_for_byte(deployed, reference):
    result = deployed.results["q8"]
    _, sent = reference
    expected = {(1 + i // 2, cid): payload for i, (cid, payload) in enumerate(sent)}
    assert len(expected) == 4
    folder = result.out_dir / PAYLOAD_DIR
    for (round_idx, cid), payload in expected.items():
        received = (folder / f"round{round_idx}-client{cid}.bin").read_bytes()
        assert received == payload, f"round {round_idx} client {cid}: payload changed in transit"
    # Flower's message carries the payload plus its own framing: strictly more bytes
    for record in result.records:
        assert record["flower_bytes_up"] > record["ledger_bytes_up"] > 0
        assert record["ledger_bytes_up"] == sum(len(expected[(record["round"], c)]) for c in (0, 1))


def test_no_process_left_after_a_successful_run(deployed):
    pids = deployed.pids
    assert pids, "the federation started no process?"
    leftover = [p for p in flower_processes() if p["pid"] in pids]
    assert leftover == []


# ----------------------------------------------------------------------------- only our own devices get in
def test_the_shared_federation_runs_tls_and_supernode_auth(deployed):
    superlink = deployed.commands["superlink"]
    assert "--ssl-certfile" in superlink and "--enable-supernode-auth" in superlink and "--insecure" not in superlink
    for i in (0, 1):
        node = deployed.commands[f"supernode-{i}"]
        assert node[node.index("--root-certificates") + 1] == str(deployed.pki.ca_cert)
        assert node[node.index("--auth-supernode-private-key") + 1] == str(deployed.pki.supernode_keys[i])
    assert all(r["replied"] == [0, 1] and not r["errors"] for res in deployed.results.values() for r in res.records
               if len(r["selected"]) == 2)


def test_unregistered_supernode_is_refused(deployed):
    """A SuperNode with the right CA but a key nobody registered gets no work: with --max-retries 0
    it exits with Flower's 'Failed to activate SuperNode', while the registered nodes finish the runs."""
    rogue = deployed.intruders["unregistered"]
    assert rogue.returncode not in (None, 0), f"the unregistered SuperNode was not refused: {rogue.log[-600:]}"
    assert "Failed to activate SuperNode" in rogue.log
    assert all(r["replied"] == r["selected"] and len(r["replied"]) == len(set(r["replied"]))
               for res in deployed.results.values() for r in res.records)


def test_unregistered_key_after_unregister(deployed):
    """flwr supernode unregister removes a member: its SuperNode stops, and started again with the
    same key it is refused like a stranger."""
    scenario = deployed.unregister
    assert scenario["before"] == "online" and deployed.nodes[scenario["node_id"]] == "unregistered"
    assert scenario["member"].returncode is not None, "the unregistered member kept running"
    again = scenario["again"]
    assert again.returncode not in (None, 0), f"the unregistered key got in again: {again.log[-600:]}"
    assert "Failed to activate SuperNode" in again.log
    assert all(r["replied"] == r["selected"] for res in deployed.results.values() for r in res.records)


def test_wrong_ca_is_refused(deployed):
    """A SuperNode that trusts another CA (with a registered key) cannot even open TLS to the SuperLink."""
    rogue = deployed.intruders["wrong-ca"]
    assert rogue.returncode not in (None, 0), f"the SuperNode trusting another CA connected: {rogue.log[-600:]}"
    assert "CERTIFICATE_VERIFY_FAILED" in rogue.log and "SuperNode ID" not in rogue.log
    assert deployed.nodes.get(deployed.spare) not in ("online", "offline")  # its key never logged in


def test_plaintext_client_is_refused(deployed):
    """An --insecure (plain HTTP) SuperNode against the TLS SuperLink cannot connect: the SuperLink
    speaks only TLS (the node gives up with Flower's connection-failure exit code)."""
    rogue = deployed.intruders["plaintext"]
    assert rogue.returncode not in (None, 0), f"the plain-HTTP SuperNode connected: {rogue.log[-600:]}"
    assert "Exit Code: 30" in rogue.log and "SuperNode ID" not in rogue.log
    assert "TLS is not enabled" not in rogue.log  # refused by the SuperLink, not by its own key check


def test_private_keys_are_0600_and_outside_the_repo(deployed):
    repo = Path(__file__).resolve().parents[1]
    for path in deployed.pki.private_files():
        assert repo not in path.resolve().parents
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_real_machine_commands_are_the_commands_that_ran(deployed):
    """real_machine_commands() renders machine_steps(); with the local addresses, those steps are
    exactly the argv the shared federation ran (SuperLink, each SuperNode, each registration)."""
    from fedlab_utils.deploy import machine_steps

    ran = {name: [Path(cmd[0]).name, *cmd[1:]] for name, cmd in deployed.commands.items()}
    node_ports = [int(ran[f"supernode-{i}"][-1]) for i in (0, 1)]
    steps = machine_steps(2, "127.0.0.1", deployed.port, deployed.pki.folder, bind="127.0.0.1", node_ports=node_ports)
    by_role = {"server": [s for s in steps if s.background and s.where == "server"],
               "register": [s for s in steps if s.argv[:3] == ("flwr", "supernode", "register")],
               "device": [s for s in steps if s.where.startswith("device")]}
    assert [list(s.argv) for s in by_role["server"]] == [ran["superlink"]]
    assert [list(s.argv) for s in by_role["register"]] == [ran["register-0"], ran["register-1"]]
    assert [list(s.argv) for s in by_role["device"]] == [ran["supernode-0"], ran["supernode-1"]]
    real = machine_steps(2, "203.0.113.5", 9092, "fedlab-pki")
    assert real_machine_commands(2, server="203.0.113.5").count("\n") > len(real)
    for here, there in zip(steps, real):  # real machines: the same argv, only addresses, ports and folders differ
        if here.argv[0] in ("flower-superlink", "flower-supernode", "flwr") and here.argv[1] != "run":
            assert _without_addresses(here.argv, deployed.pki.folder) == _without_addresses(there.argv, "fedlab-pki")
            assert there.shell() in real_machine_commands(2, server="203.0.113.5")


def _without_addresses(argv, pki_dir) -> list[str]:
    import re

    out, skip = [], False
    for token in argv:
        if skip:
            out.append("PORT" if token.isdigit() else "HOST")
            skip = False
            continue
        token = token.replace(str(pki_dir), "PKI")
        token = re.sub(r"^(\d{1,3}(\.\d{1,3}){3}|localhost)(:\d+)?$", "ADDRESS", token)
        out.append(token)
        skip = token in ("--port", "--host")
    return out


def _printed_paths(text: str) -> list[Path]:
    """Every absolute path a command printed."""
    import re

    return [Path(match.rstrip(".:")) for match in re.findall(r"(?<![\w.])(/[^\s,;()'\"]+)", text)]


def _kept_logs_are_where_it_said(out: str) -> None:
    """deploy --keep-logs (issue 30 D9): the log folder it names outlives the run, with every Flower
    process's log, and the PKI folder it names keeps only public parts."""
    named = {path.name: path for path in _printed_paths(out)}
    assert "logs" in named and "pki" in named, out[-1500:]
    logs = {p.name for p in named["logs"].iterdir()}
    assert {"superlink.log", "supernode-0.log", "supernode-1.log"} <= logs, logs
    assert any(name.startswith("run-") for name in logs), logs
    left = sorted(p.name for p in named["pki"].iterdir())
    assert left and not any(n.endswith(".key") or (n.startswith("supernode-") and not n.endswith(".pub"))
                            for n in left), left
    assert all(path.exists() for path in _printed_paths(out)), out[-1500:]


@pytest.mark.slow  # a federation of its own: make slow-check (CI)
def test_deploy_cli_watched_from_outside(tmp_path):
    """``deploy --supernodes 2 -p rounds 1 --keep-logs`` as a user types it: the SuperLink carries
    --ssl-certfile and --enable-supernode-auth and no --insecure, every SuperNode --root-certificates
    and --auth-supernode-private-key; it exits 0, leaves no process, and the log folder it named is
    there with every process's log (D9)."""
    import psutil

    env = {**os.environ, "FEDLAB_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    cli = subprocess.Popen([sys.executable, "-m", "fedlab_utils", "deploy", "--supernodes", "2", "-p", "rounds", "1",
                            "--out", str(tmp_path / "out"), "--keep-logs"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env, text=True)
    seen: dict[int, list[str]] = {}
    born: dict[int, float] = {}  # pid -> creation time: a pid the OS reuses later is another process
    deadline = time.monotonic() + 240
    try:
        while cli.poll() is None and time.monotonic() < deadline:
            for child in psutil.Process(cli.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    command = child.cmdline()  # a child shows its parent's until it execs,
                    if command:                # and a finished (zombie) one shows nothing: keep the latest real one
                        seen[child.pid] = command
                    born.setdefault(child.pid, child.create_time())
            time.sleep(0.1)
        out, err = cli.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 0, err[-800:]
    assert "insecure" not in out.lower() and "TLS + SuperNode authentication" in out, out[-1500:]
    _kept_logs_are_where_it_said(out)
    links = [c for c in seen.values() if any(Path(a).name == "flower-superlink" for a in c[:2])]
    nodes = [c for c in seen.values() if any(Path(a).name == "flower-supernode" for a in c[:2])]
    assert len(links) == 1 and len(nodes) == 2, {pid: " ".join(c)[:160] for pid, c in seen.items()}
    assert "--ssl-certfile" in links[0] and "--enable-supernode-auth" in links[0] and "--insecure" not in links[0]
    assert all("--root-certificates" in c and "--auth-supernode-private-key" in c and "--insecure" not in c
               for c in nodes)
    def alive(pid: int) -> bool:
        try:
            proc = psutil.Process(pid)
            return proc.create_time() == born.get(pid) and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    left = [p for p in seen if alive(p)]
    assert left == [], [seen[p] for p in left]


@pytest.mark.slow  # a federation of its own: make slow-check (CI)
def test_teardown_after_an_exception_mid_run(tmp_path):
    seen, started = [], {}

    class Boom(RuntimeError):
        pass

    def explode(record):
        seen.append(record["event"])
        if record["event"] == "round-start":
            started.update(pids=federation.pids(), names=dict(federation.commands))
            raise Boom("raised mid-run")

    with pytest.raises(Boom):
        with local_federation(2, workdir=tmp_path / "fed", announce=None, insecure=True) as federation:
            submit(federation, DeploymentConfig(num_clients=2, rounds=3), tmp_path / "out", on_round=explode)
    assert "round-start" in seen
    assert {"superlink", "supernode-0", "supernode-1"} <= set(started["names"])
    assert len(started["pids"]) >= 4  # superlink + 2 supernodes + flwr run (+ their SuperExecs)
    still = [p for p in flower_processes() if p["pid"] in started["pids"] or str(federation.port) in p["cmdline"]]
    assert still == [], f"processes left behind: {still}"
    assert all(proc.poll() is not None for proc in federation.processes.values())


# ----------------------------------------------------------------------------- fast checks
def test_port_in_use_is_one_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(DeploymentError, match=f"port {port} is already in use"):
            with local_federation(1, workdir=tmp_path, port=port, announce=None):
                pass


def test_missing_flower_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DeploymentError, match="Flower is not installed") as err:
        with local_federation(1, workdir=tmp_path, announce=None):
            pass
    assert "\n" not in str(err.value)


def test_cli_errors_are_one_line(capsys):
    assert deploy_cli.main(0, None, None) == 2
    assert deploy_cli.main(2, [["uplink", "zip"]], None) == 2
    assert deploy_cli.main(2, [["rounds", "two"]], None) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("deploy: error:") for line in err)
    assert "--supernodes=0" in err[0] and "uplink='zip'" in err[1] and "rounds='two'" in err[2]


def test_parse_parameters_types_and_rejects_unknown():
    assert parse_parameters([["rounds", "3"], ["lr", "0.1"], ["uplink", "q8"], ["save_payloads", "true"]]) == {
        "rounds": 3, "lr": 0.1, "uplink": "q8", "save_payloads": True}
    with pytest.raises(ValueError, match="num_clients"):
        parse_parameters([["num_clients", "3"]])


def test_run_config_round_trip():
    config = DeploymentConfig(num_clients=3, partition="dirichlet", alpha=0.3, uplink="topk:0.05", server="fedavgm",
                              save_payloads=True, out_dir="/tmp/x")
    as_flower = {k: (str(v) if isinstance(v, str) else v) for k, v in config.to_run_config().items()}
    assert DeploymentConfig.from_run_config(as_flower) == config


@pytest.mark.parametrize("spec, name", [("fp32", "fp32"), ("q8", "q8"), ("q4", "q4"), ("topk:0.1", "top"),
                                        ("sign", "sign"), ("ef:topk:0.1", "EF(top")])
def test_make_codec_round_trips(spec, name):
    update = {"w": torch.randn(5, 7), "b": torch.randn(7)}
    codec = make_codec(spec)
    assert name in codec.name
    decoded = codec.decode(codec.encode(update), update)
    assert set(decoded) == {"w", "b"} and decoded["w"].shape == (5, 7)
    if spec == "fp32":
        assert all(torch.equal(decoded[k], update[k]) for k in update)


@pytest.mark.parametrize("spec", ["q0", "q17", "topk:2", "topk:x", "gzip", "", "ef:", "ef:gzip", "ef:ef:q8"])
def test_make_codec_rejects_bad_specs(spec):
    with pytest.raises(ValueError):
        make_codec(spec)


def test_message_bytes_counts_payload_plus_overhead():
    from flwr.app import ConfigRecord, RecordDict

    payload = os.urandom(10_000)
    content = RecordDict({"fedlab": ConfigRecord({"payload": payload})})
    size = message_bytes(content)
    assert 10_000 < size < 10_000 + 1_000
    bigger = RecordDict({"fedlab": ConfigRecord({"payload": payload * 2})})
    assert message_bytes(bigger) - size == pytest.approx(10_000, abs=8)
    restored = ConfigRecord.inflate(content["fedlab"].deflate())  # Flower's own (de)serialization
    assert bytes(restored["payload"]) == payload


def test_real_machine_commands_use_tls_and_auth():
    text = real_machine_commands(2)
    assert "--insecure" not in text
    assert "--ssl-certfile" in text and "--root-certificates" in text and "--auth-supernode-private-key" in text
    assert text.count("flower-supernode") == 2 and "partition-id=1 num-partitions=2" in text


def test_kill_supernode_signal_is_real(tmp_path):
    """kill_supernode stops the SuperNode and its children for good (used by notebook 07's pitfall)."""
    with local_federation(1, workdir=tmp_path, announce=None, insecure=True) as federation:
        proc = federation.processes["supernode-0"]
        federation.kill_supernode(0)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    assert Path(tmp_path / "logs" / "supernode-0.log").exists()


# ----------------------------------------------------------------------------- notebook 07's exercise checks
def _replies_fedavg(replies):
    from fedlab_utils.core import weighted_average

    arrived = [(c, n, u) for c, n, u in replies if u is not None]
    return None if not arrived else weighted_average([u for *_, u in arrived], [n for _, n, _ in arrived])


def test_check_aggregate_replies_accepts_the_right_answer():
    from fedlab_utils.checks import deployment

    deployment.check_aggregate_replies(_replies_fedavg)
    deployment.check_aggregate_replies(_replies_fedavg, seed=1)


@pytest.mark.parametrize("wrong", [
    # divides by everyone's samples, the missing clients included
    lambda replies: None if all(u is None for *_, u in replies) else {
        k: sum(n / sum(m for _, m, _ in replies) * u[k] for _, n, u in replies if u is not None)
        for k in next(u for *_, u in replies if u is not None)},
    # plain mean of the replies
    lambda replies: None if all(u is None for *_, u in replies) else {
        k: sum(u[k] for *_, u in replies if u is not None) / sum(u is not None for *_, u in replies)
        for k in next(u for *_, u in replies if u is not None)},
    # crashes (or returns zeros) when nobody replied
    lambda replies: _replies_fedavg(replies) if any(u is not None for *_, u in replies) else {},
    # treats a missing reply as a zero update
    lambda replies: _replies_fedavg([(c, n, u if u is not None else {k: torch.zeros_like(v) for k, v in
                                                                    next(x for *_, x in replies if x is not None).items()})
                                     for c, n, u in replies]) if any(u is not None for *_, u in replies) else None,
])
def test_check_aggregate_replies_rejects_wrong_answers(wrong):
    from fedlab_utils.checks import deployment

    with pytest.raises(AssertionError):
        deployment.check_aggregate_replies(wrong)


@pytest.mark.slow  # a federation of its own: make slow-check (CI)
def test_ctrl_c_on_the_deploy_cli_stops_every_process(tmp_path):
    """SIGINT (what Ctrl-C sends) to ``python -m fedlab_utils deploy`` mid-run: exit 130, one line
    on stderr, and every process it started -- SuperLink, SuperNodes, ``flwr run`` and what they
    spawned, each in its own session so the terminal's Ctrl-C never reaches them -- is gone."""
    import subprocess
    import time

    import psutil

    out = tmp_path / "out"
    env = {**os.environ, "FEDLAB_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    # pytest-xdist workers ignore SIGINT, and an ignored signal stays ignored in a child: give the CLI
    # the default disposition, as in a terminal, so Python turns SIGINT into KeyboardInterrupt
    cli = subprocess.Popen([sys.executable, "-m", "fedlab_utils", "deploy", "--supernodes", "2", "-p", "rounds", "5",
                            "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        progress, seen = out / "progress.jsonl", set()
        deadline = time.monotonic() + 240
        while not (progress.exists() and '"round-start"' in progress.read_text()):
            assert cli.poll() is None, f"deploy exited early: {cli.communicate()}"
            assert time.monotonic() < deadline, "no round started within 240 s"
            seen |= {c.pid for c in psutil.Process(cli.pid).children(recursive=True)}
            time.sleep(0.2)
        seen |= {c.pid for c in psutil.Process(cli.pid).children(recursive=True)}
        cli.send_signal(signal.SIGINT)
        printed, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 130
    assert err.strip().splitlines()[-1] == "deploy: interrupted; every Flower process was stopped"
    # without --keep-logs the temporary folder is removed, so nothing printed names a path in it (D9)
    assert "--keep-logs keeps them" in printed
    assert [p for p in _printed_paths(printed) if not p.exists()] == [], printed
    assert len(seen) >= 4  # superlink + 2 supernodes + flwr run (+ what they spawned)

    def alive(pid):
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    assert [pid for pid in seen if alive(pid)] == []


def test_deployment_config_at_parity_with_run_data_dir_natural_clients_every_model(tmp_path):
    """deploy takes what run() takes: a data folder, the dataset's own clients, every model."""
    import numpy as np

    from fedlab_utils.models import MODELS

    for name in MODELS:
        assert DeploymentConfig(model=name).model == name
    with pytest.raises(ValueError, match=r"partition='natural' needs a dataset with its own clients.*'mnist5k'"):
        DeploymentConfig(partition="natural")
    natural = DeploymentConfig(dataset="synthetic", partition="natural", num_clients=3)
    clients, _, _ = build_task(natural)
    assert len(clients) == 3 and sum(len(c) for c in clients) > 0
    (tmp_path / "mnist5k.npz").write_bytes(b"not an npz")  # a data_dir is read, not ignored
    with pytest.raises(Exception):
        build_task(DeploymentConfig(data_dir=str(tmp_path)))
    assert np.isfinite(len(build_task(DeploymentConfig())[0][0]))
