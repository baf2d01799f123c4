"""``python -m fedlab_utils sweep``: grid parsing and refusal before any kernel, one tiny real sweep, resume."""
import csv
import json
from pathlib import Path

import nbformat
import pytest

from fedlab_utils.__main__ import main
from fedlab_utils.course import CourseError, expand_grid, parse_grid, parse_values, point_slug


def _tiny_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 1  # any int\nseed = 0\nlabel = 'a'\nresults_path = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "from fedlab_utils.course import Claims, record_results\nclaims = Claims()\n"
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


# ----------------------------------------------------------------------------- per-round results and figures
from fedlab_utils.course import sweep_results as SR
from fedlab_utils.seeds import confidence_band


def _record(parameters, accuracies, up=1_000_000, status="ok"):
    rounds = list(range(1, len(accuracies) + 1))
    series = {"profile": "phone-lte", "round": rounds, "accuracy": accuracies, "bytes_up": [up] * len(rounds),
              "bytes_down": [2 * up] * len(rounds), "joules": [1.5] * len(rounds), "sim_time_s": [None] * len(rounds)}
    results = {"claims": [], "metrics": {"acc": accuracies[-1], "latency_ms": 3.0, "runs": {"a": {"sim_time_s": 1.0}}},
               "histories": {"FedAvg": series, "FedProx": {**series, "accuracy": [None if a is None else a / 2 for a in accuracies]}}}
    return {"notebook": "nb", "parameters": parameters, "status": status, "error": None, "seconds": 1.0,
            "results": results if status == "ok" else None}


def test_rounds_csv_is_the_long_form_of_every_run_of_every_completed_point(tmp_path):
    records = [_record({"x": 1, "seed": 0}, [0.5, 0.6]), _record({"x": 1, "seed": 1}, [0.7, None]),
               _record({"x": 2, "seed": 0}, [0.1, 0.2], status="failed")]
    rows = SR.round_rows(records, ["x", "seed"], point_slug)
    assert len(rows) == 2 * 2 * 2, "2 completed points x 2 runs x 2 rounds; the failed point has none"
    assert rows[0] == {"point": "x=1,seed=0", "x": 1, "seed": 0, "run": "FedAvg", "round": 1, "accuracy": 0.5,
                       "bytes_up": 1_000_000, "bytes_down": 2_000_000, "joules": 1.5, "sim_time_s": None}
    assert [r["accuracy"] for r in rows if r["run"] == "FedProx"] == [0.25, 0.3, 0.35, None]
    SR.write_csv(rows, tmp_path / "rounds.csv")
    with open(tmp_path / "rounds.csv") as fh:
        header = next(csv.reader(fh))
    assert header == ["point", "x", "seed", "run", "round", "accuracy", "bytes_up", "bytes_down", "joules",
                      "sim_time_s"]
    SR.write_csv([], tmp_path / "empty.csv", columns=["point", "run"])
    assert (tmp_path / "empty.csv").read_text().strip() == "point,run"


def test_confidence_band_is_the_student_t_interval_by_hand():
    mean, half, n = confidence_band([0.5, 0.7])
    # s = 0.1414, t(0.975, 1) = 12.7062: half = 12.7062 * 0.1414 / sqrt(2) = 1.27062
    assert (mean, n) == (pytest.approx(0.6), 2) and half == pytest.approx(12.7062 * 0.1, rel=1e-4)
    mean, half, n = confidence_band([1.0, 2.0, 3.0, None, float("nan")])
    assert (mean, n) == (2.0, 3) and half == pytest.approx(4.3027 * 1.0 / 3 ** 0.5, rel=1e-4)
    assert confidence_band([0.4])[1] != confidence_band([0.4])[1], "one seed: no band (NaN)"


def test_curves_draw_one_line_per_swept_value_with_a_band_over_seeds():
    records = [_record({"x": x, "seed": s}, [0.1 * x + 0.01 * s, 0.2 * x + 0.01 * s]) for x in (1, 2) for s in (0, 1)]
    fig = SR.curves_figure(SR.round_rows(records, ["x", "seed"], point_slug), ["x", "seed"], "nb")
    assert len(fig.axes) == 4, "two runs x (by round, by uplink MB)"
    by_round, by_bytes = fig.axes[:2]
    assert [line.get_label() for line in by_round.lines] == ["x=1", "x=2"]
    assert list(by_round.lines[1].get_ydata()) == pytest.approx([20.5, 40.5]), "mean over seeds, in %"
    assert list(by_bytes.lines[0].get_xdata()) == pytest.approx([1.0, 2.0]), "cumulative uplink MB"
    assert len(by_round.collections) == 2, "a 95% band per line"
    assert all(ax.get_legend() is not None for ax in fig.axes)
    assert "95% Student-t band over seeds [0, 1]" in fig._suptitle.get_text()


def test_sweep_png_leaves_out_wall_times_has_legends_everywhere_and_plain_ticks(tmp_path):
    assert SR.is_wall_time("latency_ms") and SR.is_wall_time("runs.a.wall_time_s") and SR.is_wall_time("startup_s")
    assert SR.is_wall_time("vmap_speedup_measured")
    assert not SR.is_wall_time("runs.a.sim_time_s") and not SR.is_wall_time("deadline_s")
    assert not SR.is_wall_time("fedavg_final_acc") and not SR.is_wall_time("bytes_per_update")
    records = [_record({"x": x, "seed": s}, [629.6 + 1e-4 * x + 1e-5 * s]) for x in (1, 2, 3) for s in (0, 1)]
    rows = SR.sweep_rows(records, ["x", "seed"])
    fig = SR.sweep_figure(rows, ["x", "seed"])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["acc", "runs.a.sim_time_s"], "every numeric metric but the wall time latency_ms"
    assert all(ax.get_legend() is not None for ax in fig.axes)
    fig.canvas.draw()
    assert fig.axes[0].yaxis.get_major_formatter().get_offset() == "", "no offset notation (+6.296e2)"
    assert [ax.get_title() for ax in SR.sweep_figure(rows, ["x", "seed"], metrics=["latency_ms"]).axes] == ["latency_ms"]
    with pytest.raises(ValueError, match=r"--metrics nope: not a numeric metric of this sweep; valid: \['acc'"):
        SR.sweep_figure(rows, ["x", "seed"], metrics=["nope"])


def _tiny_history_notebook(path: Path) -> Path:
    """A notebook whose two runs are History objects built by hand (no training): fast and exact."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("seed = 0\nrounds = 3\nresults_path = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "from fedlab_utils.core import History, RoundRecord\nfrom fedlab_utils.ledger import Energy\n"
        "from fedlab_utils.course import Claims, record_results\n"
        "def history(label, gain):\n"
        "    return History(label, [RoundRecord(r, [0], gain * r + 0.01 * seed, 0.0, 0.0, 1000 * r, 2000, 10, 0.1,\n"
        "                                       Energy(compute=0.5)) for r in range(1, rounds + 1)])\n"
        "runs = {'FedAvg': history('a', 0.1), 'FedProx': history('b', 0.2)}\n"
        "claims = Claims()\n"
        "record_results(results_path, 'tiny', {'final': runs['FedAvg'].final_accuracy}, claims)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_a_seed_sweep_writes_rounds_csv_and_curves_png(tmp_path):
    nb = _tiny_history_notebook(tmp_path / "10_tiny.ipynb")
    out = tmp_path / "sweep"
    assert main(["sweep", str(nb), "-p", "seed", "0,1", "-p", "rounds", "2", "--jobs", "2", "--out", str(out)]) == 0
    with open(out / "rounds.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 2 * 2, "2 seeds x 2 runs x 2 rounds"
    first = rows[0]
    assert (first["point"], first["seed"], first["rounds"], first["run"], first["round"]) == \
        ("seed=0,rounds=2", "0", "2", "FedAvg", "1")
    assert float(first["accuracy"]) == pytest.approx(0.1) and first["bytes_up"] == "1000" and first["joules"] == "0.5"
    seed1 = [r for r in rows if r["seed"] == "1" and r["run"] == "FedProx"]
    assert [float(r["accuracy"]) for r in seed1] == pytest.approx([0.21, 0.41])
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG" and (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["sweep", str(nb), "-p", "seed", "0,1", "-p", "rounds", "2", "--out", str(out),
                 "--metrics", "nope"]) == 2, "bad --metrics: a clear error; the complete points are kept"


# ----------------------------------------------------------------------------- sweep.png draws what varied (D7)
def _metrics_record(parameters: dict, metrics: dict) -> dict:
    return {"notebook": "nb", "parameters": parameters, "status": "ok", "error": None, "seconds": 1.0,
            "results": {"claims": [], "metrics": metrics}}


def _pixels(fig) -> tuple[float, float]:
    """The saved figure's size in pixels (``_save`` writes at 110 dpi)."""
    width, height = fig.get_size_inches()
    return width * 110, height * 110


def test_a_parameter_with_one_value_is_never_an_axis_and_panels_are_capped():
    """The FEMNIST case: one dataset, one rounds value, 60 metrics -> at most 12 panels, no 'dataset' axis."""
    metrics = {f"m{i:02d}": float(i) for i in range(60)}
    records = [_metrics_record({"dataset": "femnist", "rounds": 2}, metrics)]
    fig = SR.sweep_figure(SR.sweep_rows(records, ["dataset", "rounds"]), ["dataset", "rounds"], "00_federated")
    assert len(fig.axes) == SR.MAX_SWEEP_PANELS == 12
    assert {ax.get_xlabel() for ax in fig.axes} == {"no parameter varied"}
    assert [t.get_text() for t in fig.axes[5].texts] == ["5"], "the one point's value is written beside it"
    title = fig._suptitle.get_text()
    assert "first 12 of 60 metrics" in title and "sweep.csv" in title
    assert "fixed: dataset='femnist', rounds=2" in title
    width, height = _pixels(fig)
    assert width <= 1600 and height <= 1600, (width, height)


def test_the_axis_is_the_first_parameter_that_varied_and_lines_only_for_varied_ones():
    records = [_metrics_record({"dataset": "femnist", "bits": b, "lr": 0.1, "seed": s}, {"acc": b / 10 + s / 100})
               for b in (2, 4, 8) for s in (0, 1)]
    names = ["dataset", "bits", "lr", "seed"]
    (ax,) = SR.sweep_figure(SR.sweep_rows(records, names), names).axes
    assert ax.get_xlabel() == "bits", "dataset and lr took one value each: not the axis"
    assert [line.get_label() for line in ax.lines] == ["mean over seeds"], "no line per fixed parameter"
    assert list(ax.lines[0].get_xdata()) == [2, 4, 8]
    assert list(ax.lines[0].get_ydata()) == pytest.approx([0.205, 0.405, 0.805])
    # only seeds varied: seed is the axis
    (ax,) = SR.sweep_figure(SR.sweep_rows(records[:2], names), names).axes
    assert ax.get_xlabel() == "seed"


def test_lines_are_capped_and_the_figure_says_how_many_were_left_out():
    names = ["x", "a", "b"]
    records = [_metrics_record({"x": x, "a": a, "b": b}, {"acc": x + a + b}) for x in (1, 2) for a in range(4)
               for b in range(4)]
    fig = SR.sweep_figure(SR.sweep_rows(records, names), names)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "x" and len(ax.lines) == SR.MAX_LINES
    assert f"first {SR.MAX_LINES} of 16 lines" in fig._suptitle.get_text()
    curves = [{"point": f"{x}{a}{b}", "x": x, "a": a, "b": b, "run": "FedAvg", "round": r, "accuracy": 0.5,
               "bytes_up": 10} for x in (1, 2) for a in range(4) for b in range(4) for r in (1, 2)]
    fig = SR.curves_figure(curves, names)
    assert len(fig.axes[0].lines) == SR.MAX_LINES and "of 32 lines" in fig._suptitle.get_text()
