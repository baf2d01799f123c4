"""Flower deployment (fedlab_utils.flower / fedlab_utils.deploy) on real Flower processes.

One federation (a SuperLink and 2 SuperNodes) serves two runs at once (``submit_many``): 2 rounds
of 8-bit uplink + FedAdam, and 2 rounds of FedAvg that samples one of the two clients per round
(``fraction=0.5``).  The checks that need them: each run's accuracy equals the in-process
``run()``; every course payload the ServerApp received is byte for byte the one the in-process
loop encodes.  Two more deployments stop in the middle of a run, by an exception and by Ctrl-C
(SIGINT) on the ``deploy`` CLI, and check that no Flower process is left.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fedlab_utils import deploy as deploy_mod
from fedlab_utils.deploy import (DeploymentError, flower_processes, local_federation, parse_parameters,
                                 real_machine_commands, submit, submit_many)
from fedlab_utils.flower import PAYLOAD_DIR, DeploymentConfig, make_codec, message_bytes, simulate

CONFIG = DeploymentConfig(num_clients=2, rounds=2, uplink="q8", server="fedadam", server_lr=0.01,
                          round_timeout=300.0, save_payloads=True)
HALF = DeploymentConfig(num_clients=2, rounds=2, fraction=0.5, seed=3, round_timeout=300.0)
EF = DeploymentConfig(num_clients=2, rounds=2, uplink="ef:topk:0.05", seed=1, round_timeout=300.0)


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


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    work = tmp_path_factory.mktemp("flower")
    with local_federation(2, workdir=work / "fed", announce=None) as federation:
        results = submit_many(federation, {"q8": CONFIG, "half": HALF, "ef": EF}, work / "out")
        pids = federation.pids()
    return results, pids


@pytest.fixture(scope="module")
def reference():
    """The in-process run() of the same config, recording every uplink payload.  Torch runs with
    1 thread, as each Flower process does (the launcher's default): a different thread count
    splits the matmul sums differently and changes the last bits of the weights."""
    import fedlab_utils.flower as flower

    recorder, threads = RecordingCodec(make_codec(CONFIG.uplink)), torch.get_num_threads()
    original, flower.make_codec = flower.make_codec, lambda spec: recorder
    torch.set_num_threads(1)
    try:
        history = simulate(CONFIG)
    finally:
        flower.make_codec = original
        torch.set_num_threads(threads)
    return history, recorder.sent


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
    result = deployed[0]["q8"]
    reference, _ = reference
    assert [r["round"] for r in result.records] == [1, 2]
    assert all(r["replied"] == [0, 1] and not r["errors"] for r in result.records)
    assert result.accuracy == reference.accuracy  # same seed, same payloads, same order: identical
    assert [r["loss"] for r in result.records] == pytest.approx(reference.loss, rel=0, abs=1e-9)
    assert result.totals()["ledger_bytes_up"] == reference.totals()["bytes_up"]


def test_a_sampled_fraction_on_flower_equals_the_in_process_run(deployed):
    """fraction=0.5 of 2 clients: the ServerApp samples one SuperNode per round, as run() does."""
    result = deployed[0]["half"]
    reference = _simulate_one_thread(HALF)
    assert [len(r["selected"]) for r in result.records] == [1, 1]
    assert [sorted(r["selected"]) for r in result.records] == [sorted(r.clients) for r in reference.records]
    assert all(r["replied"] == r["selected"] for r in result.records)
    assert result.accuracy == reference.accuracy
    assert result.totals()["ledger_bytes_up"] == reference.totals()["bytes_up"]


def test_error_feedback_residual_survives_between_clientapp_calls(deployed):
    """Each ClientApp call is a fresh process; EF's residual lives in Flower's context.state, so
    round 2 sends top-k of (update + round 1's residual), exactly as run()'s ErrorFeedback does."""
    result = deployed[0]["ef"]
    reference = _simulate_one_thread(EF)
    assert result.accuracy == reference.accuracy
    assert result.totals()["ledger_bytes_up"] == reference.totals()["bytes_up"]
    without_memory = _simulate_one_thread(replace(EF, uplink="topk:0.05"))
    assert without_memory.accuracy[0] == reference.accuracy[0]  # round 1: no residual yet
    assert without_memory.accuracy[1] != reference.accuracy[1]  # round 2: the residual matters


def test_course_codec_payload_survives_flower_byte_for_byte(deployed, reference):
    result = deployed[0]["q8"]
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
    _, pids = deployed
    assert pids, "the federation started no process?"
    leftover = [p for p in flower_processes() if p["pid"] in pids]
    assert leftover == []


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
        with local_federation(2, workdir=tmp_path / "fed", announce=None) as federation:
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
    assert deploy_mod.main(0, None, None) == 2
    assert deploy_mod.main(2, [["uplink", "zip"]], None) == 2
    assert deploy_mod.main(2, [["rounds", "two"]], None) == 2
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
    with local_federation(1, workdir=tmp_path, announce=None) as federation:
        proc = federation.processes["supernode-0"]
        federation.kill_supernode(0)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    assert Path(tmp_path / "logs" / "supernode-0.log").exists()


# ----------------------------------------------------------------------------- notebook 07's exercise checks
def _replies_fedavg(replies):
    from fedlab_utils.federated import weighted_average

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


def test_check_q8_payload_bytes_both_ways():
    from fedlab_utils.checks import deployment
    from fedlab_utils.models import make_model

    update = {k: torch.zeros_like(v) for k, v in make_model("mlp", (1, 28, 28), 10).state_dict().items()}
    values = sum(t.numel() for t in update.values())
    deployment.check_q8_payload_bytes(values + 8 * len(update), update)
    deployment.check_q8_payload_bytes(float(values + 8 * len(update)), update)
    for wrong in (4 * values, values, values + 8, values + 4 * len(update), 3.5, "51000"):
        with pytest.raises(AssertionError):
            deployment.check_q8_payload_bytes(wrong, update)


def test_check_overhead_per_message_both_ways():
    from fedlab_utils.checks import deployment

    records = [{"flower_bytes_up": 10_900, "ledger_bytes_up": 10_000, "replied": [0, 1]},
               {"flower_bytes_up": 5_440, "ledger_bytes_up": 5_000, "replied": [0]}]
    deployment.check_overhead_per_message((900 + 440) / 3, records)
    for wrong in (900 + 440, (900 + 440) / 2, (10_900 + 5_440) / 3, 0.0, float("nan"), None):
        with pytest.raises(AssertionError):
            deployment.check_overhead_per_message(wrong, records)


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
        _, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 130
    assert err.strip().splitlines()[-1] == "deploy: interrupted; every Flower process was stopped"
    assert len(seen) >= 4  # superlink + 2 supernodes + flwr run (+ what they spawned)

    def alive(pid):
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    assert [pid for pid in seen if alive(pid)] == []
