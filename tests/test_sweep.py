"""``python -m fedlab_utils sweep``: grid parsing and refusal before any kernel, one tiny real sweep, resume."""
import csv
import json
from pathlib import Path

import nbformat
import pytest

from fedlab_utils.__main__ import main
from fedlab_utils.runner import CourseError
from fedlab_utils.sweep import expand_grid, parse_grid, parse_values, point_slug


def _tiny_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 1  # any int\nseed = 0\nlabel = 'a'\nresults_path = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "from fedlab_utils.results import Claims, record_results\nclaims = Claims()\n"
        "claims.check('x is one', x == 1, x=x)\n"
        "record_results(results_path, 'tiny', {'x2': 2 * x + seed, 'label': label}, claims)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.mark.parametrize("text, values", [
    ("0:3", [0, 1, 2]), ("2:8:3", [2, 5]), ("-1:1", [-1, 0]), ("4", [4]), ("1,2.5,None", [1, 2.5, None]),
    ("'a b',c", ["a b", "c"]), ("[1, 2],[3]", [[1, 2], [3]]), ("(1, 2)", [(1, 2)])])
def test_values_are_lists_of_literals_or_half_open_ranges(text, values):
    assert parse_values("v", text) == values


@pytest.mark.parametrize("text, message", [("3:3", "empty"), ("1,,2", "empty value"), ("0:4:0", "step")])
def test_bad_values_are_refused_naming_them(text, message):
    with pytest.raises(ValueError, match=message):
        parse_values("rounds", text)


def test_grid_is_validated_against_the_notebook_and_expanded_in_order(tmp_path):
    nb = _tiny_notebook(tmp_path / "10_tiny.ipynb")
    grid = parse_grid(nb, [("x", "1:3"), ("seed", "0,1"), ("label", "a,b")])
    points = expand_grid(grid)
    assert len(points) == 8 and points[0] == {"x": 1, "seed": 0, "label": "a"}
    assert points[1] == {"x": 1, "seed": 0, "label": "b"} and points[-1] == {"x": 2, "seed": 1, "label": "b"}
    with pytest.raises(CourseError, match=r"unknown parameter\(s\) \['y'\].*valid"):
        parse_grid(nb, [("y", "1,2")])
    with pytest.raises(CourseError, match=r"-p x: value\(s\) \['two'\].*number"):
        parse_grid(nb, [("x", "1,two")])
    with pytest.raises(CourseError, match="given twice"):
        parse_grid(nb, [("x", "1"), ("x", "2")])
    assert point_slug({"x": 1, "seed": 0}) == "x=1,seed=0"
    assert point_slug({"label": "a b"}) != point_slug({"label": "a_b"})


def test_refusals_happen_before_any_kernel_starts(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "00", "-p", "rounds", "2,x", "--out", str(out)]) == 2
    assert "-p rounds: value(s) ['x']" in capsys.readouterr().err
    assert main(["sweep", "00", "-p", "roundz", "2,3", "--out", str(out)]) == 2
    assert "unknown parameter(s) ['roundz']" in capsys.readouterr().err
    assert main(["sweep", "00", "-p", "rounds", "2:2", "--out", str(out)]) == 2
    assert not out.exists()


def test_tiny_sweep_records_failures_writes_csv_and_plot_and_resumes(tmp_path, capsys):
    nb = _tiny_notebook(tmp_path / "10_tiny.ipynb")
    out = tmp_path / "sweep"
    # --strict: x=2 makes the claim fail its point; the sweep goes on and records the error.
    assert main(["sweep", str(nb), "-p", "x", "1,2", "--jobs", "2", "--strict", "--out", str(out)]) == 1
    with open(out / "sweep.csv") as fh:
        rows = {row["x"]: row for row in csv.DictReader(fh)}
    assert rows["1"]["status"] == "ok" and rows["1"]["claims_held"] == "1" and rows["1"]["metrics.x2"] == "2"
    assert rows["1"]["metrics.label"] == "a"
    assert rows["2"]["status"] == "failed" and "x is one" in rows["2"]["error"]
    assert (out / "points" / "x=2" / "notebooks" / "10_tiny.failed.ipynb").exists()
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    done = out / "points" / "x=1" / "point.json"
    assert json.loads(done.read_text())["results"]["metrics"] == {"x2": 2, "label": "a"}
    stamp = done.stat().st_mtime_ns
    capsys.readouterr()
    # Rerun the completed point: nothing is executed again.
    assert main(["sweep", str(nb), "-p", "x", "1", "--out", str(out)]) == 0
    assert "1 of 1 point(s) already complete, skipped" in capsys.readouterr().out
    assert done.stat().st_mtime_ns == stamp


def test_bench_claims_summarises_hold_rate_failing_seeds_and_worst_margin():
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_claims.py"
    spec = importlib.util.spec_from_file_location("bench_claims", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def record(seed, holds, margin, status="ok"):
        claims = [{"claim": "a", "holds": holds, "measured": {"x": seed}, "margin": margin},
                  {"claim": "b", "holds": True, "measured": {}}]
        return {"notebook": "nb", "parameters": {"seed": seed}, "status": status,
                "results": {"claims": claims, "observations": [{"observation": "o", "measured": {"v": seed}}]}}

    summary = bench.summarize_claims([record(0, True, 0.5), record(1, False, -0.25), record(2, True, 0.1),
                                      {"notebook": "nb", "parameters": {"seed": 3}, "status": "failed",
                                       "results": None}])
    a, b = summary["claims"]
    assert a["seeds"] == [0, 1, 2] and a["held"] == 2 and a["hold_rate"] == pytest.approx(2 / 3)
    assert a["failing_seeds"] == [1] and a["worst_margin"] == -0.25 and a["worst_margin_seed"] == 1
    assert a["worst_failure"] == {"seed": 1, "measured": {"x": 1}}
    assert b["hold_rate"] == 1.0 and b["worst_margin"] is None
    assert summary["observations"] == [{"observation": "o", "per_seed": [{"seed": s, "v": s} for s in (0, 1, 2)]}]
    assert bench.parse_seeds("0:3") == [0, 1, 2]
