"""Claims under the parameter-aware policy, margins and observations; results written atomically and merged."""
import json
import os
import stat

import pytest
import torch

from fedlab_utils.course import Claims, claim_policy, merge_results, record_results, to_jsonable
from fedlab_utils.course.claims import CHANGED_ENV, POLICY_ENV
from fedlab_utils.files import atomic_write_text


@pytest.fixture(autouse=True)
def _no_runner_environment(monkeypatch):
    """Tests start from a plain kernel: no policy or changed parameters set by a runner."""
    monkeypatch.delenv(POLICY_ENV, raising=False)
    monkeypatch.delenv(CHANGED_ENV, raising=False)


def test_claims_raise_when_false_and_record_numbers():
    claims = Claims()
    assert claims.policy == "raise"
    claims.check("two is more than one", 2 > 1, a=2, b=1)
    with pytest.raises(AssertionError, match="does not hold.*a=1"):
        claims.check("one is more than two", 1 > 2, a=1, b=2)
    assert [c["holds"] for c in claims.to_list()] == [True, False]
    assert "1/2 claims hold" in repr(claims)


@pytest.mark.parametrize("changed", ["seed", "seed,device,results_path", ""])
def test_seed_device_and_results_path_still_count_as_defaults(monkeypatch, changed):
    monkeypatch.setenv(CHANGED_ENV, changed)
    claims = Claims()
    assert claims.policy == "raise" and claims.changed == []
    with pytest.raises(AssertionError, match="does not hold"):
        claims.check("false on this seed", False, acc=0.5)


def test_other_changed_parameters_record_failing_claims_and_summarise_them(monkeypatch, capsys):
    monkeypatch.setenv(CHANGED_ENV, "rounds,seed,num_clients")
    claims = Claims()
    assert claims.policy == "record" and claims.changed == ["num_clients", "rounds"]
    assert claims.check("holds", True, x=1) is True
    assert claims.check("student within 3 points of teacher", False, margin=-4.5, gap=7.5) is False
    claims.check("another that holds", True)
    out = capsys.readouterr().out
    assert "holds" not in out and "✗" not in out, "claims are shown once, in the table at the end"
    assert [c["holds"] for c in claims.to_list()] == [True, False, True]
    summary = repr(claims)
    assert summary.startswith("2/3 claims hold (changed parameters: num_clients, rounds)")
    assert "policy" not in summary and "policy" not in claims._repr_markdown_(), "the policy is not the lesson"
    assert "  ✗ student within 3 points of teacher  [gap=7.5, margin=-4.5]  -- does not hold" in summary
    assert "  ✓ another that holds  []" in summary and summary.count("✓") == 2
    markdown = claims._repr_markdown_()
    assert markdown.count("does not hold") == 1 and markdown.count("| ✓ |") == 2
    assert markdown.count("student within 3 points") == 1 and "margin=-4.5" in markdown


def test_strict_raises_whatever_the_parameters(monkeypatch):
    monkeypatch.setenv(CHANGED_ENV, "rounds")
    monkeypatch.setenv(POLICY_ENV, "strict")
    with pytest.raises(AssertionError, match="within 3 points"):
        Claims().check("within 3 points", False, gap=7.5)


def test_record_policy_never_raises_even_with_defaults(monkeypatch):
    monkeypatch.setenv(POLICY_ENV, "record")
    claims = Claims()
    claims.check("false", False)
    assert claims.failed == claims.to_list() and len(claims) == 1


def test_explicit_arguments_win_and_bad_policy_names_the_value(monkeypatch):
    monkeypatch.setenv(POLICY_ENV, "record")
    assert claim_policy("raise") == ("raise", [])
    assert claim_policy("auto", ["lr"]) == ("record", ["lr"])
    monkeypatch.setenv(POLICY_ENV, "loose")
    with pytest.raises(ValueError, match="'loose'.*auto"):
        Claims()


def test_margin_is_recorded_and_must_agree_with_holds():
    claims = Claims()
    claims.check("ratio at least 100", 132 >= 100, margin=132 / 100 - 1, ratio=132)
    assert claims.to_list()[0]["margin"] == pytest.approx(0.32)
    claims.check("no margin given", True)
    assert "margin" not in claims.to_list()[1]
    claims.check("on the threshold", True, margin=0.0)
    with pytest.raises(ValueError, match="contradicts"):
        claims.check("holds but margin negative", True, margin=-0.1)
    with pytest.raises(ValueError, match="contradicts"):
        Claims(policy="record").check("fails but margin positive", False, margin=0.1)


def test_observations_are_recorded_never_asserted(tmp_path, capsys):
    claims = Claims()
    claims.observe("FedAvgM ends ahead of FedAvg on this seed", fedavgm=0.91, fedavg=0.90)
    assert capsys.readouterr().out == ""
    assert "| observation | FedAvgM ends ahead of FedAvg on this seed | fedavgm=0.91, fedavg=0.9 |" \
        in claims._repr_markdown_()
    record = record_results(tmp_path / "r.json", "nb", {}, claims)
    assert record["observations"] == [{"observation": "FedAvgM ends ahead of FedAvg on this seed",
                                       "measured": {"fedavgm": 0.91, "fedavg": 0.90}}]
    assert record["claims"] == [] and record["claim_policy"] == {"policy": "raise", "changed_parameters": []}


def test_record_results_is_atomic_json_and_lists_failed_claims(tmp_path, capsys):
    path = tmp_path / "sub" / "r.json"
    claims = Claims(policy="record")
    claims.check("ok", True, x=torch.tensor(1.5).item())
    claims.check("not ok", False, x=2)
    record = record_results(path, "nb", {"acc": torch.tensor(0.5), "nan": float("nan")}, claims, {"seed": 0})
    on_disk = json.loads(path.read_text())
    assert on_disk == record and on_disk["metrics"] == {"acc": 0.5, "nan": None}
    assert [c["holds"] for c in on_disk["claims"]] == [True, False]
    assert "✗" not in capsys.readouterr().out, "the Claims table shows it; not listed again"
    record_results(None, "nb", {}, on_disk["claims"])  # a plain list has no table: listed here
    assert "1 claim(s) did NOT hold on this run:\n  ✗ not ok" in capsys.readouterr().out
    assert record_results(None, "nb", {"a": 1})["metrics"] == {"a": 1}
    assert not list(path.parent.glob(".*tmp"))


def test_written_files_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "r.json", "{}")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o077)
        assert stat.S_IMODE(atomic_write_text(tmp_path / "s.json", "{}").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    atomic_write_text(path, "old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


def test_results_json_merge_updates_only_this_runs_notebooks(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_text(path, json.dumps({"00_a": {"v": 0}, "01_b": {"v": 1}, "02_c": {"v": 2}}))
    merged = merge_results(path, {"01_b": {"v": 11}, "03_d": {"v": 3}}, failed=["02_c"])
    assert merged == {"00_a": {"v": 0}, "01_b": {"v": 11}, "03_d": {"v": 3}}
    assert json.loads(path.read_text()) == merged
    atomic_write_text(path, "{not json")
    assert merge_results(path, {"00_a": {"v": 5}}, failed=[]) == {"00_a": {"v": 5}}


@pytest.mark.parametrize("value, text", [(203560, "203,560"), (5084.055570068908, "5,084"), (0.72641, "0.7264"),
                                         (1.2e-05, "1.2e-05"), (0.0, "0"), (2.5e10, "2.5e+10"), (True, "True"),
                                         ("q8", "q8"), (float("nan"), "nan"), ([0.12345, 7], "[0.1235, 7]")])
def test_numbers_are_rounded_for_reading(value, text):
    from fedlab_utils.course import readable

    assert readable(value) == text


def _history(label, accuracies, up=100, sim=None):
    from fedlab_utils.core import History, RoundRecord
    from fedlab_utils.ledger import Energy

    records = [RoundRecord(round=i + 1, clients=[0, 1], accuracy=a, loss=0.0, train_loss=0.0, bytes_up=up * (i + 1),
                           bytes_down=2 * up, client_flops=10, wall_time_s=0.5,
                           energy=Energy(compute=1.0, uplink=0.25 * (i + 1), radio_fixed=2.0), sim_time_s=sim)
               for i, a in enumerate(accuracies)]
    return History(label, records)


def test_history_series_gives_each_rounds_accuracy_bytes_joules_and_simulated_time():
    from fedlab_utils.course import history_series

    series = history_series(_history("FedAvg", [0.5, float("nan"), 0.75], sim=1.5))
    assert series["round"] == [1, 2, 3] and series["bytes_up"] == [100, 200, 300] and series["bytes_down"] == [200] * 3
    assert series["joules"] == [3.25, 3.5, 3.75], "compute 1 + uplink 0.25 r + radio fixed 2, by hand"
    assert series["sim_time_s"] == [1.5] * 3 and series["profile"] == "phone-lte"
    assert to_jsonable(series)["accuracy"] == [0.5, None, 0.75], "a round not evaluated is null, not repeated"
    assert history_series(_history("no faults", [0.5]))["sim_time_s"] == [None]


def test_record_results_collects_the_notebooks_histories_by_dict_key_or_label(tmp_path):
    """A notebook needs no edit: the runs bound in its namespace are recorded round by round."""
    from fedlab_utils.course import collect_histories

    fedavg, fedsgd, other = _history("FedAvg", [0.5, 0.6]), _history("FedSGD", [0.4]), _history("FedAvg", [0.1])
    namespace = {"runs": {"FedAvg IID": fedavg, "FedSGD IID": fedsgd}, "avg_iid": fedavg, "extra": other,
                 "pair": (fedsgd,), "_": _history("cache", [0.9]), "Out": {1: _history("out", [0.9])},
                 "sweep": {"a": 1}, "x": 3}
    collected = collect_histories(namespace)
    assert list(collected) == ["FedAvg IID", "FedSGD IID", "FedAvg"]
    assert collected["FedAvg IID"] is fedavg and collected["FedAvg"] is other
    assert list(collect_histories({"a": other, "b": _history("FedAvg", [0.2])})) == ["FedAvg", "FedAvg (b)"]
    path = tmp_path / "r.json"
    exec("record = record_results(path, 'nb', {})",
         {"record_results": record_results, "path": path, "runs": {"FedAvg IID": fedavg}})
    on_disk = json.loads(path.read_text())["histories"]
    assert list(on_disk) == ["FedAvg IID"] and on_disk["FedAvg IID"]["accuracy"] == [0.5, 0.6]
    assert record_results(None, "nb", {}, histories={})["histories"] == {}
    given = record_results(None, "nb", {}, histories={"mine": fedsgd})["histories"]
    assert given == {"mine": {"profile": "phone-lte", "round": [1], "accuracy": [0.4], "bytes_up": [100],
                              "bytes_down": [200], "joules": [3.25], "sim_time_s": [None]}}


def test_the_claims_table_speaks_the_students_language(monkeypatch):
    """FEDLAB_LANG=zh (set by run --lang zh): the table's words come from the runtime catalog; claims stay as written."""
    monkeypatch.setenv("FEDLAB_LANG", "zh")
    claims = Claims(policy="record")
    claims.check("x is one", False, x=3)
    claims.observe("seen on this seed", v=0.5)
    markdown = claims._repr_markdown_()
    assert "claim |" not in markdown and "x is one" in markdown and "seen on this seed" in markdown
    assert "0/1" in markdown and "does not hold" not in markdown and "observation |" not in markdown
    with pytest.raises(AssertionError, match="x=2") as raised:
        Claims(policy="raise").check("y", False, x=2)
    assert "Claim does not hold" not in str(raised.value)
    monkeypatch.setenv("FEDLAB_LANG", "en")
    assert "| | claim | measured |" in claims._repr_markdown_()
