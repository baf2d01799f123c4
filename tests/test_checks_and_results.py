"""Exercise checks raise with a hint on wrong answers; results are written atomically."""
import json

import pytest
import torch

from fedlab_utils.checks import baseline
from fedlab_utils.federated import weighted_average
from fedlab_utils.models import make_model
from fedlab_utils.results import Claims, atomic_write_text, record_results


def test_weighted_average_check_accepts_right_and_rejects_wrong():
    baseline.check_weighted_average(weighted_average)
    with pytest.raises(AssertionError, match="unweighted"):
        baseline.check_weighted_average(lambda ups, ns: {k: sum(u[k] for u in ups) / len(ups) for k in ups[0]})
    with pytest.raises(AssertionError):
        baseline.check_weighted_average(lambda ups, ns: {k: ups[0][k] for k in ups[0]})
    with pytest.raises(AssertionError, match="not implemented"):
        baseline.check_weighted_average(lambda ups, ns: (_ for _ in ()).throw(NotImplementedError()))
    with pytest.raises(AssertionError, match="dict"):
        baseline.check_weighted_average(lambda ups, ns: 0.0)


def test_uplink_bytes_check_catches_the_usual_mistakes():
    model = make_model("mlp", (1, 8, 8), 10, hidden=(16,))
    params = sum(p.numel() for p in model.parameters())
    baseline.check_round_uplink_bytes(4 * params * 3, model, 3)
    with pytest.raises(AssertionError, match="parameters, not bytes"):
        baseline.check_round_uplink_bytes(params * 3, model, 3)
    with pytest.raises(AssertionError, match="bits"):
        baseline.check_round_uplink_bytes(32 * params * 3, model, 3)
    with pytest.raises(AssertionError):
        baseline.check_round_uplink_bytes(4 * params, model, 3)
    with pytest.raises(AssertionError, match="ledger measured"):
        baseline.check_round_uplink_bytes(4 * params * 3, model, 3, measured_bytes_up=1)


def test_claims_raise_when_false_and_record_numbers():
    claims = Claims()
    claims.check("two is more than one", 2 > 1, a=2, b=1)
    with pytest.raises(AssertionError, match="does not hold.*a=1"):
        claims.check("one is more than two", 1 > 2, a=1, b=2)
    assert [c["holds"] for c in claims.to_list()] == [True, False]
    assert "1/2" in repr(claims)


def test_record_results_is_atomic_and_json(tmp_path):
    path = tmp_path / "sub" / "r.json"
    claims = Claims()
    claims.check("ok", True, x=torch.tensor(1.5).item())
    record = record_results(path, "nb", {"acc": torch.tensor(0.5), "nan": float("nan")}, claims, {"seed": 0})
    on_disk = json.loads(path.read_text())
    assert on_disk == record and on_disk["metrics"] == {"acc": 0.5, "nan": None}
    assert record_results(None, "nb", {"a": 1})["metrics"] == {"a": 1}
    assert not list(path.parent.glob(".*tmp"))


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    atomic_write_text(path, "old")
    import os

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and len(list(tmp_path.iterdir())) == 1
