"""Notebook 07's predict-then-check exercises: each check tested both ways, and the notebook's own
model answers pass them on realistic numbers."""
from __future__ import annotations

import math
from types import SimpleNamespace

import nbformat
import pytest
import torch

from fedlab_utils.checks import deployment
from fedlab_utils.compression import Fp32Codec, QuantizeCodec
from fedlab_utils.course import NOTEBOOK_DIR
from fedlab_utils.models import make_model

ENVELOPE = 778  # bytes Flower adds per uplink message (measured on flwr 1.x; the checks only need "fixed")


def _solution(grade_id: str) -> str:
    nb = nbformat.read(NOTEBOOK_DIR / "07_deployment.ipynb", as_version=4)
    [cell] = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    return cell.source


def _records(payload: int, clients: int = 2, rounds: int = 2) -> list[dict]:
    return [{"flower_bytes_up": clients * (payload + ENVELOPE), "ledger_bytes_up": clients * payload,
             "replied": list(range(clients))} for _ in range(rounds)]


def test_envelope_prediction_both_ways(capsys):
    records = _records(50_922)  # measured share: 778 / 50,922 = 1.528 %
    for right in (1.528, 1.1, 1.98, 1.9):
        deployment.check_envelope_prediction(right, records)
    assert "measured 1.53%" in capsys.readouterr().out
    wrong = [(0.38, "Too small"),  # the fp32 share carried over: the envelope was assumed to scale
             (1.05, "Too small"),
             (25.0, "Too large"),  # "a quarter of the payload"
             (2.0 + 1.53, "Too large"),
             (0, "positive"), (-1.5, "positive"),
             (None, "expected a number"), (True, "expected a number"), ("1.5", "expected a number"),
             (float("nan"), "expected a number")]
    for answer, message in wrong:
        with pytest.raises(AssertionError, match=message):
            deployment.check_envelope_prediction(answer, records)


def test_envelope_prediction_band_is_relative_and_stated():
    assert deployment.ENVELOPE_BAND == 0.3
    records = _records(10_000)  # 7.78 %
    deployment.check_envelope_prediction(7.78 * 1.29, records)
    with pytest.raises(AssertionError, match="band is 5.45% to 10.11%"):
        deployment.check_envelope_prediction(7.78 * 1.31, records)
    with pytest.raises(AssertionError, match="no uplink message"):
        deployment.check_envelope_prediction(1.0, [{"flower_bytes_up": 0, "ledger_bytes_up": 0, "replied": []}])


def test_the_notebooks_envelope_answer_passes_on_the_real_payload_sizes():
    update = {k: torch.zeros_like(v) for k, v in make_model("mlp", (1, 28, 28), 10).state_dict().items()}
    fp32 = len(Fp32Codec().encode(update))
    for bits in (8, 4):
        namespace = {"pitfall": SimpleNamespace(records=_records(fp32, rounds=1)), "update": update,
                     "uplink_bits": bits, "math": math}
        exec(_solution("07-predict-envelope-share"), namespace)
        q_payload = len(QuantizeCodec(bits).encode(update))
        deployment.check_envelope_prediction(namespace["my_envelope_percent"], _records(q_payload))
        # the same envelope share as the fp32 run is the tempting wrong answer, and it fails
        with pytest.raises(AssertionError, match="Too small"):
            deployment.check_envelope_prediction(100 * ENVELOPE / fp32, _records(q_payload))


def test_accuracy_gap_prediction_both_ways(capsys):
    same = [0.749, 0.826, 0.319, 0.609]
    for right in (0, 0.0, 0.5, 1.0, torch.tensor(0.2)):
        deployment.check_accuracy_gap_prediction(right, same, list(same))
    assert "measured 0.00" in capsys.readouterr().out
    for answer, message in [(2.0, "measured 0.00"), (10, "band is ±1"), (-0.5, "cannot be negative"),
                            (None, "expected a number"), (False, "expected a number")]:
        with pytest.raises(AssertionError, match=message):
            deployment.check_accuracy_gap_prediction(answer, same, list(same))
    off = [0.749, 0.836, 0.319, 0.609]  # one round 1 point apart
    deployment.check_accuracy_gap_prediction(1.5, same, off)
    with pytest.raises(AssertionError, match="measured 1.00"):
        deployment.check_accuracy_gap_prediction(2.5, same, off)
    with pytest.raises(AssertionError, match="rounds"):
        deployment.check_accuracy_gap_prediction(0, same, same[:2])


def test_the_notebooks_gap_answer_passes_when_the_runs_agree():
    namespace: dict = {}
    exec(_solution("07-predict-accuracy-gap"), namespace)
    deployment.check_accuracy_gap_prediction(namespace["my_gap_points"], [0.9, 0.95], [0.9, 0.95])


def test_the_notebook_has_its_predict_and_discussion_cells():
    nb = nbformat.read(NOTEBOOK_DIR / "07_deployment.ipynb", as_version=4)
    meta = [c.metadata.get("nbgrader", {}) for c in nb.cells]
    predicts = [m for m in meta if m.get("grade") and m["grade_id"].startswith("07-predict-")]
    discussions = [(c, m) for c, m in zip(nb.cells, meta) if m.get("grade_id", "").startswith("07-discuss-")]
    assert len(predicts) == 2 and all(m["points"] > 0 for m in predicts)
    assert discussions and all(c.cell_type == "markdown" and m["grade"] and m["solution"] and m["points"] > 0
                               and "### BEGIN SOLUTION" in c.source for c, m in discussions)


# ----------------------------------------------------------------------------- build: the ClientApp's train
def _client_train_namespace() -> dict:
    """The notebook's imports for the build cell, and its model answer defined in them."""
    from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

    from fedlab_utils.core import client_generator, model_state, state_delta, train_locally
    from fedlab_utils.deploy import DeploymentConfig, build_task, make_codec

    namespace = {"ConfigRecord": ConfigRecord, "Message": Message, "MetricRecord": MetricRecord,
                 "RecordDict": RecordDict, "client_generator": client_generator, "model_state": model_state,
                 "state_delta": state_delta, "train_locally": train_locally, "DeploymentConfig": DeploymentConfig,
                 "build_task": build_task, "make_codec": make_codec, "Fp32Codec": Fp32Codec}
    exec(_solution("07-build-client-train"), namespace)
    return namespace


def _wrong_client_train(mistake: str):
    """The model answer with one plausible mistake."""
    namespace = _client_train_namespace()
    source = _solution("07-build-client-train").replace("my_client_train", "wrong_client_train")
    fixes = {
        "weights": ("state_delta(model_state(model), received)", "model_state(model)"),
        "no loading": ("model.load_state_dict(received)", "received = model_state(model)"),
        "no count": (', "num-examples": len(data)', ""),
        "no reply_to": ("reply_to=msg", "metadata=msg.metadata"),
        "fp32 payload": ("codec.encode(", "Fp32Codec().encode("),
    }
    old, new = fixes[mistake]
    assert old in source
    exec(source.replace(old, new), namespace)
    return namespace["wrong_client_train"]


def test_the_notebooks_client_train_passes_and_matches_the_package():
    from fedlab_utils.deploy.apps import _client_train

    answer = _client_train_namespace()["my_client_train"]
    deployment.check_client_train(answer)
    deployment.check_client_train(answer, seed=1)
    deployment.check_client_train(_client_train, seed=2)


@pytest.mark.parametrize("mistake, message", [
    ("weights", "trained weights, not the update"),
    ("no loading", "BEFORE training"),
    ("no count", "no sample count"),
    ("no reply_to", "does not answer the message"),
    ("fp32 payload", "not in the run's uplink format"),
])
def test_plausible_wrong_client_trains_fail_with_a_hint(mistake, message):
    with pytest.raises(AssertionError, match=message):
        deployment.check_client_train(_wrong_client_train(mistake))


def test_a_client_train_that_returns_the_wrong_thing_fails_clearly():
    with pytest.raises(AssertionError, match="must return a Flower Message"):
        deployment.check_client_train(lambda msg, context: {"payload": b""})


def test_the_build_comes_before_the_package_version_and_the_pki_is_optional_at_the_end():
    nb = nbformat.read(NOTEBOOK_DIR / "07_deployment.ipynb", as_version=4)
    ids = [c.metadata.get("nbgrader", {}).get("grade_id", "") for c in nb.cells]
    assert ids.index("07-build-client-train") < ids.index("cell-client-package-src") < ids.index("cell-88a6f969")
    optional = next(i for i, c in enumerate(nb.cells) if c.source.startswith("## 选学 Optional"))
    assert optional > ids.index("07-discuss-dropout-bias")  # after the core lesson's exercises
    assert ids.index("cell-edc80b79") > optional and ids.index("07-ex-san-solution") > optional
    assert "reproduces the in-process" not in nb.cells[0].source  # the opening does not answer the prediction
