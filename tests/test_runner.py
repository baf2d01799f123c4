"""The papermill runner and the notebooks' contract (parameters, template, no outputs, student versions)."""
import ast
import json
from pathlib import Path

import nbformat
import papermill
import pytest

from fedlab_utils.__main__ import NOTEBOOK_DIR, main

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


RECORD = ("from fedlab_utils.results import record_results\nrecord_results(results_path, 'tiny', {'x': x})\n"
          "import matplotlib.pyplot as plt\nplt.plot([0, x])")


def test_run_collects_results_and_renders_html(tmp_path, capsys):
    nb = _tiny_notebook(tmp_path / "10_tiny.ipynb", RECORD)
    out = tmp_path / "build"
    assert main(["run", str(nb), "-p", "x", "3", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["10_tiny"]["metrics"] == {"x": 3}
    assert (out / "html" / "10_tiny.html").read_text().count("<html") == 1
    executed = nbformat.read(out / "notebooks" / "10_tiny.ipynb", as_version=4)
    assert any("image/png" in o.get("data", {}) for c in executed.cells for o in c.get("outputs", [])), \
        "figures must reach the executed notebook (inline backend, not Agg)"
    assert (out / "notebooks" / "10_tiny.ipynb").exists()
    assert "10_tiny" in capsys.readouterr().out


def test_failing_notebook_exits_nonzero_names_the_cell_and_writes_no_results(tmp_path, capsys):
    good = _tiny_notebook(tmp_path / "10_good.ipynb", RECORD)
    bad = _tiny_notebook(tmp_path / "11_bad.ipynb", "raise ValueError('x=1 is out of range')")
    out = tmp_path / "build"
    assert main(["run", str(good), str(bad), "--out", str(out), "--no-html"]) == 1
    err = capsys.readouterr().err
    assert "11_bad.ipynb failed in cell" in err and "ValueError: x=1 is out of range" in err
    assert not (out / "results.json").exists()
    assert (out / "notebooks" / "11_bad.failed.ipynb").exists()
    assert not list((out / "notebooks").glob(".*partial*"))


def test_bad_parameter_value_fails_in_the_setup_cell_with_a_clear_error(tmp_path, capsys):
    assert main(["run", "00", "-p", "alpha", "-1", "--out", str(tmp_path), "--no-html"]) == 1
    err = capsys.readouterr().err
    assert "alpha=-1" in err and "out of range" in err
    assert not (tmp_path / "results.json").exists()


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
