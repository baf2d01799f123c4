"""The course's ServerApp and ClientApp on Flower's simulation runtime (Ray), against run().

``python -m fedlab_utils deploy --simulation --supernodes 10 -p rounds 2`` starts a SuperLink with
``--simulation`` and runs the same apps on ten virtual SuperNodes in Ray workers; seeded alike, its
accuracy and payload bytes equal the in-process run()'s, round for round, and a part named by
import path behaves the same.  Slow (Ray starts a cluster of its own) and needs the ``[scale]``
extra, so it runs only with ``FEDLAB_SCALE=1`` (``make scale-check``, which CI runs).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from fedlab_utils.core import History
from fedlab_utils.deploy import DeploymentConfig, simulate

pytestmark = [
    pytest.mark.skipif(os.environ.get("FEDLAB_SCALE") != "1",
                       reason="Flower simulation runtime: slow, run it with `make scale-check` (FEDLAB_SCALE=1)"),
    pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                       reason="Ray is not installed: pip install -e '.[scale]'"),
]


def _one_thread(config: DeploymentConfig):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # each Ray worker trains with one thread
    try:
        return simulate(config)
    finally:
        torch.set_num_threads(threads)


def _deploy_simulation(tmp_path, *args: str) -> tuple[dict, History]:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "fedlab_utils", "deploy", "--simulation", *args, "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "FEDLAB_PROGRESS": "0"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return (json.loads((out / "flower_rounds.json").read_text()),
            History.from_dict(json.loads((out / "history.json").read_text())))


def test_deploy_simulation_ten_supernodes_equals_run(tmp_path):
    rounds, history = _deploy_simulation(tmp_path, "--supernodes", "10", "-p", "rounds", "2")
    reference = _one_thread(DeploymentConfig(num_clients=10, rounds=2))
    records = rounds["records"]
    assert [r["replied"] for r in records] == [list(range(10))] * 2
    assert [r["accuracy"] for r in records] == reference.accuracy
    assert [r["ledger_bytes_up"] for r in records] == [r.bytes_up for r in reference.records]
    assert [r.energy for r in history.records] == [r.energy for r in reference.records]
    assert all(r.energy.total > 0 for r in history.records)


def test_a_part_by_import_path_on_the_simulation_runtime(tmp_path):
    (tmp_path / "halfcodec.py").write_text(textwrap.dedent('''
        from fedlab_utils.compression import QuantizeCodec

        def Q4():
            return QuantizeCodec(4)
    '''))
    rounds, _ = _deploy_simulation(tmp_path, "--supernodes", "3", "-p", "rounds", "2", "-p", "uplink", "halfcodec:Q4",
                                 "-p", "server", "fedadam")
    sys.path.insert(0, str(tmp_path))
    try:
        reference = _one_thread(DeploymentConfig(num_clients=3, rounds=2, uplink="halfcodec:Q4", server="fedadam"))
    finally:
        sys.path.remove(str(tmp_path))
    records = rounds["records"]
    assert [r["accuracy"] for r in records] == reference.accuracy
    assert [r["ledger_bytes_up"] for r in records] == [r.bytes_up for r in reference.records]
