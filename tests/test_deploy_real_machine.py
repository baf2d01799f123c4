"""The commands real_machine_commands() prints for a server and its devices, run as a shell script
on 127.0.0.1: only the addresses differ from a real deployment (tests/test_multihost.py runs them
across network namespaces).

The script makes the PKI with the course's command, starts the SuperLink with TLS and SuperNode
authentication, registers each device's key, starts the SuperNodes, writes the app and submits
one round with ``flwr run``; every process it started is stopped afterwards.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fedlab_utils.core import History
from fedlab_utils.deploy import FLOWER_PROCESS_NAMES, real_machine_commands
from fedlab_utils.devices import free_port


def _processes_of(home: Path) -> list[psutil.Process]:
    """Every Flower process running with ``$FLWR_HOME`` = ``home`` (the script's, and what they detached)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(name in " ".join(proc.info.get("cmdline") or []) for name in FLOWER_PROCESS_NAMES):
            with contextlib.suppress(psutil.Error):
                if proc.environ().get("FLWR_HOME") == str(home) and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
    return found


@pytest.mark.slow  # a whole deployment from a shell script: make slow-check (CI)
def test_real_machine_commands_run_on_localhost(tmp_path):
    home, pki = tmp_path / "flwr-home", tmp_path / "fedlab-pki"
    port = free_port()
    script = real_machine_commands(2, server="127.0.0.1", port=port, pki_dir=str(pki), rounds=1,
                                   node_ports=[free_port(), free_port()])
    assert "--insecure" not in script and script.count("flwr supernode register") == 2
    env = {**os.environ, "FLWR_HOME": str(home), "FEDLAB_PROGRESS": "0", "OMP_NUM_THREADS": "1",
           "FLWR_TELEMETRY_ENABLED": "0", "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    log = tmp_path / "script.log"  # a file, not a pipe: the background processes keep their stdout open
    with open(log, "wb") as sink:
        shell = subprocess.Popen(["bash", "-euc", script], cwd=tmp_path, env=env, stdout=sink,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        shell.wait(timeout=300)
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()
        for proc in _processes_of(home):
            with contextlib.suppress(psutil.Error):
                proc.kill()
        deadline = time.monotonic() + 10
        while _processes_of(home) and time.monotonic() < deadline:
            time.sleep(0.1)
    out = log.read_text(errors="replace")
    assert shell.returncode == 0, out[-2000:]
    assert out.count('"node-id"') == 2, out[-2000:]
    rounds = json.loads((tmp_path / "fedlab-results" / "flower_rounds.json").read_text())
    assert [r["replied"] for r in rounds["records"]] == [[0, 1]]
    history = History.from_dict(json.loads((tmp_path / "fedlab-results" / "history.json").read_text()))
    assert history.records[0].energy.compute > 0 and history.records[0].clients == [0, 1]
    for name in ("ca.key", "server.key", "supernode-0", "supernode-1"):
        assert (pki / name).stat().st_mode & 0o777 == 0o600
    assert _processes_of(home) == []


def test_docs_give_the_commands_the_test_runs():
    """docs/deployment.md holds real_machine_commands()'s default output verbatim."""
    docs = (Path(__file__).resolve().parents[1] / "docs" / "deployment.md").read_text(encoding="utf-8")
    assert real_machine_commands() in docs
    said = " ".join(docs.replace("*", "").lower().split())
    assert "across separate network hosts" in said and "not tried: nat" in said
