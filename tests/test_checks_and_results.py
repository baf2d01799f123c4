"""Results are written atomically; claims raise when false.  (Exercise checks: tests/test_checks.py.)"""
import json

import pytest
import torch

from fedlab_utils.results import Claims, atomic_write_text, record_results


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
