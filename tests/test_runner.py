"""The papermill runner and the notebooks' contract (parameters, template, no outputs, student versions)."""
import ast
import json
import os
import stat
from pathlib import Path

import nbformat
import papermill
import pytest

from fedlab_utils.__main__ import NOTEBOOK_DIR, changed_parameters, main

NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
TEMPLATE_PARAMETERS = {"seed", "dataset", "num_clients", "rounds", "device", "results_path"}


def parameters_cell(nb):
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "exactly one cell must be tagged 'parameters'"
    return cells[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_follows_the_contract(path):
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(f"# {path.stem[:2]} ·")
    assigned = {t.id for node in ast.parse(parameters_cell(nb).source).body if isinstance(node, ast.Assign)
                for t in node.targets}
    parsed = set(papermill.inspect_notebook(str(path)))
    assert assigned == parsed, f"papermill cannot parse {sorted(assigned - parsed)} (no '=' in comments)"
    assert TEMPLATE_PARAMETERS <= parsed
    source = "\n".join(c.source for c in nb.cells)
    assert "### BEGIN SOLUTION" in source and "### END SOLUTION" in source and "checks" in source
    assert "record_results(results_path" in source and "claims.check(" in source.lower().replace("claims", "claims")


def test_unknown_parameter_is_refused_with_the_valid_names(capsys):
    assert main(["run", "00", "-p", "sparsity_typo", "0.5", "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert "unknown parameter(s) ['sparsity_typo']" in err and "'alpha'" in err and "'seed'" in err


def test_unknown_notebook_is_refused(capsys):
    assert main(["run", "99_nope", "--out", "unused"]) == 2
    assert "not found" in capsys.readouterr().err


def _tiny_notebook(path: Path, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 1  # any int\nresults_path = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


RECORD = ("from fedlab_utils.results import Claims, record_results\n"
          "from fedlab_utils.federated import progress_enabled\nfrom tqdm.auto import tqdm\n"
          "for _ in tqdm(range(3), disable=not progress_enabled(None)):\n    pass\n"
          "claims = Claims()\nclaims.check('x is one', x == 1, x=x)\n"
          "record_results(results_path, 'tiny', {'x': x}, claims)\n"
          "import matplotlib.pyplot as plt\nplt.plot([0, x])\n"
          "from fedlab_utils.widgets import slider_explorer\n"
          "slider_explorer({1: 1, 2: 2, 3: 3}, lambda v, ax: ax.plot([0, v]), 'v')")


def test_run_records_failing_claims_with_changed_parameters_and_leaves_no_progress_bars(
        tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("FEDLAB_PROGRESS", "1")  # as in a student's shell: the runner must switch bars off itself
    nb = _tiny_notebook(tmp_path / "10_tiny.ipynb", RECORD)
    out = tmp_path / "build"
    assert main(["run", str(nb), "-p", "x", "3", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["10_tiny"]["metrics"] == {"x": 3}
    assert results["10_tiny"]["claims"] == [{"claim": "x is one", "holds": False, "measured": {"x": 3}}]
    assert results["10_tiny"]["claim_policy"] == {"policy": "record", "changed_parameters": ["x"]}
    assert (out / "html" / "10_tiny.html").read_text().count("<html") == 1
    executed = nbformat.read(out / "notebooks" / "10_tiny.ipynb", as_version=4)
    outputs = [o for c in executed.cells for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs), \
        "figures must reach the executed notebook (inline backend, not Agg)"
    text = json.dumps(outputs, ensure_ascii=False)
    assert "✗ x is one" in text and "%|" not in text, "failing claim shown; no progress-bar remnants"
    assert "widget-view" not in text, "headless kernels draw an explorer's default view, no ipywidget"
    assert stat.S_IMODE((out / "results.json").stat().st_mode) == 0o666 & ~_umask()
    captured = capfd.readouterr()
    assert "10_tiny" in captured.out and "✗" in captured.out
    assert "without encryption" not in captured.err + captured.out


def test_strict_makes_a_failing_claim_fail_the_run_and_names_it(tmp_path, capsys):
    nb = _tiny_notebook(tmp_path / "10_tiny.ipynb", RECORD)
    assert main(["run", str(nb), "-p", "x", "3", "--strict", "--out", str(tmp_path / "b"), "--no-html"]) == 1
    assert "Claim does not hold on this run: x is one (x=3)" in capsys.readouterr().err


def test_failed_notebook_merges_results_and_keep_going_runs_the_rest(tmp_path, capsys):
    bad = _tiny_notebook(tmp_path / "10_bad.ipynb", "raise ValueError('x=1 is out of range')")
    good = _tiny_notebook(tmp_path / "11_good.ipynb", RECORD)
    out = tmp_path / "build"
    (out / "notebooks").mkdir(parents=True)
    (out / "notebooks" / "10_bad.ipynb").write_text("{}")  # an older successful run's executed notebook
    (out / "results.json").write_text(json.dumps({"10_bad": {"stale": True}, "05_other": {"kept": True}}))
    assert main(["run", str(bad), str(good), "--out", str(out), "--no-html", "--keep-going"]) == 1
    err = capsys.readouterr().err
    assert "10_bad.ipynb failed in cell" in err and "ValueError: x=1 is out of range" in err
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"05_other", "11_good"}, "failed entry removed, others kept, this run's added"
    assert (out / "notebooks" / "10_bad.failed.ipynb").exists()
    assert not (out / "notebooks" / "10_bad.ipynb").exists(), "a stale executed notebook must not survive"
    assert not list((out / "notebooks").glob(".*partial*"))


def test_without_keep_going_the_run_stops_at_the_first_failure(tmp_path, capsys):
    bad = _tiny_notebook(tmp_path / "10_bad.ipynb", "raise ValueError('boom')")
    never = _tiny_notebook(tmp_path / "11_never.ipynb", RECORD)
    out = tmp_path / "build"
    assert main(["run", str(bad), str(never), "--out", str(out), "--no-html"]) == 1
    assert json.loads((out / "results.json").read_text()) == {}
    assert not (out / "notebooks" / "11_never.ipynb").exists()


def test_out_naming_a_file_is_a_one_line_error(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert main(["run", "00", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file" in err and str(target) in err


def test_changed_parameters_compares_values_with_the_defaults(tmp_path):
    nb = _tiny_notebook(tmp_path / "10_tiny.ipynb", "pass")
    assert changed_parameters(nb, {"x": 1, "results_path": None}) == []
    assert changed_parameters(nb, {"x": 2}) == ["x"]
    assert changed_parameters(nb, {"x": True}) == ["x"], "True == 1 in Python, but it is another value"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_bad_parameter_value_fails_in_the_setup_cell_with_a_clear_error(tmp_path, capsys):
    assert main(["run", "00", "-p", "alpha", "-1", "--out", str(tmp_path), "--no-html"]) == 1
    err = capsys.readouterr().err
    assert "alpha=-1" in err and "out of range" in err
    assert json.loads((tmp_path / "results.json").read_text()) == {}, "no entry for a failed notebook"


def test_student_version_strips_solutions(tmp_path):
    assert main(["student", "00", "--out", str(tmp_path)]) == 0
    nb = nbformat.read(tmp_path / NOTEBOOKS[0].name, as_version=4)
    source = "\n".join(c.source for c in nb.cells)
    assert "BEGIN SOLUTION" not in source and "raise NotImplementedError()" in source
    assert "check_weighted_average(my_weighted_average)" in source  # the checks stay for the student
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_params_lists_defaults(capsys):
    assert main(["params", "00"]) == 0
    assert "seed = 0" in capsys.readouterr().out
