"""The papermill runner and the notebooks' contract (parameters, template, no outputs, student versions)."""
import ast
import json
import os
import re
import stat
from pathlib import Path

import nbformat
import papermill
import pytest

from fedlab_utils.__main__ import main
from fedlab_utils.course import (
    NOTEBOOK_DIR,
    ROOT,
    CourseError,
    changed_parameters,
    find_notebooks,
    html_links,
    parse_parameters,
    parse_value,
    write_html,
)

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


RECORD = ("from fedlab_utils.course import Claims, record_results\n"
          "from fedlab_utils.core import progress_enabled\nfrom tqdm.auto import tqdm\n"
          "for _ in tqdm(range(3), disable=not progress_enabled(None)):\n    pass\n"
          "claims = Claims()\nclaims.check('x is one', x == 1, x=x)\n"
          "record_results(results_path, 'tiny', {'x': x}, claims)\n"
          "from IPython.display import display\ndisplay(claims)\n"
          "import matplotlib.pyplot as plt\nplt.plot([0, x])\n"
          "from fedlab_utils.viz import slider_explorer\n"
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
    assert text.count("x is one") == 2 and "✗ **does not hold** | x is one" in text, \
        "the failing claim is shown once, in the table (markdown and its plain-text form)"
    assert "%|" not in text, "no progress-bar remnants"
    assert "widget-view" not in text, "headless kernels draw an explorer's default view, no ipywidget"
    assert stat.S_IMODE((out / "results.json").stat().st_mode) == 0o666 & ~_umask()
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert 'results_path = "results/10_tiny.json"' in injected[0].source, "relative to the kernel's folder, out"
    for copy in (out / "notebooks" / "10_tiny.ipynb", out / "html" / "10_tiny.html"):
        written = copy.read_text()
        assert str(tmp_path) not in written and str(ROOT) not in written, f"{copy.name} names a builder's path"
    assert "written to" not in text
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
    source_nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    locked = [c.source.split("### BEGIN HIDDEN TESTS")[0].strip() for c in source_nb.cells
              if c.metadata.get("nbgrader", {}).get("grade") and not c.metadata["nbgrader"].get("solution")]
    assert locked and all(cell in source for cell in locked)  # the visible checks stay for the student
    assert "BEGIN HIDDEN TESTS" not in source
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_params_lists_defaults(capsys):
    assert main(["params", "00"]) == 0
    assert "seed = 0" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the shared runner module


@pytest.mark.parametrize("text, value", [("0.5", 0.5), ("3", 3), ("None", None), ("True", True), ("'x'", "x"),
                                         ("[1, 2]", [1, 2]), ("q8", "q8"), ("ef:topk:0.01", "ef:topk:0.01"),
                                         ("1e-3", 1e-3), ("a b", "a b")])
def test_parse_value_reads_literals_or_keeps_the_string(text, value):
    assert parse_value(text) == value and type(parse_value(text)) is type(value)


@pytest.mark.parametrize("text, kind, value", [("3", int, 3), ("3", "int", 3), ("1_000", int, 1000),
                                               ("3", float, 3.0), ("1e-3", "float", 1e-3), ("yes", bool, True),
                                               ("False", "bool", False), ("0", bool, False), ("q8", str, "q8"),
                                               ("'q8'", "str", "'q8'"), ("None", "float | None", None),
                                               ("0.5", "float | None", 0.5), ("[1, 2]", "list[int]", [1, 2])])
def test_parse_value_with_a_kind_converts_like_a_typed_field(text, kind, value):
    parsed = parse_value(text, kind, "x")
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("text, kind, valid", [("two", int, "an int"), ("0.5", "int", "an int"),
                                               ("fast", float, "a float"), ("maybe", bool, "'yes'")])
def test_parse_value_refuses_a_value_of_the_wrong_kind_naming_parameter_value_and_valid(text, kind, valid):
    with pytest.raises(ValueError) as info:
        parse_value(text, kind, "rounds")
    assert f"rounds={text!r}" in str(info.value) and valid in str(info.value)


def test_parse_parameters_types_by_kinds_and_refuses_unknown_names():
    kinds = {"rounds": "int", "lr": "float", "uplink": "str", "save_payloads": "bool"}
    pairs = [["rounds", "3"], ["lr", "0.1"], ["uplink", "q8"], ["save_payloads", "true"], ["rounds", "4"]]
    assert parse_parameters(pairs, kinds) == {"rounds": 4, "lr": 0.1, "uplink": "q8", "save_payloads": True}
    assert parse_parameters([["alpha", "0.3"], ["name", "x"]]) == {"alpha": 0.3, "name": "x"}
    assert parse_parameters(None) == {}
    with pytest.raises(ValueError, match=r"parameter 'roundz' is not valid; valid: \['lr', 'rounds'"):
        parse_parameters([["roundz", "3"]], kinds)
    with pytest.raises(ValueError, match="'seed' is not valid; valid: \\['alpha'\\]"):
        parse_parameters([["seed", "3"]], valid=["alpha"])


def test_no_module_of_the_package_imports_the_entry_point():
    package = Path(__file__).resolve().parent.parent / "fedlab_utils"
    offenders = []
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            if isinstance(node, ast.ImportFrom) and node.level and (node.module or "") == "__main__":
                offenders.append(path.name)
            if any(n == "fedlab_utils.__main__" or n.endswith(".__main__") for n in names):
                offenders.append(path.name)
    assert offenders == []


def test_python_dash_m_prints_a_course_error_raised_in_sweep_as_one_line(tmp_path):
    """A CourseError raised in another module (sweep) is the class the entry point catches."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "fedlab_utils", "sweep", "00", "--out", str(tmp_path / "s")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip() == \
        "error: give at least one -p NAME VALUES to sweep (e.g. -p seed 0:3)"


def test_running_the_package_as_a_script_does_not_import_it_a_second_time(monkeypatch, capsys):
    """What ``python -m fedlab_utils`` does (runpy, as ``__main__``) leaves no second copy named
    ``fedlab_utils.__main__`` (the old workaround imported one to share CourseError)."""
    import runpy
    import sys

    monkeypatch.delitem(sys.modules, "fedlab_utils.__main__", raising=False)
    monkeypatch.setattr(sys, "argv", ["fedlab_utils", "sweep", "00", "--out", "unused"])
    with pytest.raises(SystemExit) as done:
        runpy.run_module("fedlab_utils", run_name="__main__", alter_sys=True)
    assert done.value.code == 2 and "give at least one -p" in capsys.readouterr().err
    assert "fedlab_utils.__main__" not in sys.modules


def test_translate_dispatches_to_its_module_or_says_it_is_missing(monkeypatch, capsys):
    import importlib
    import sys
    import types

    from fedlab_utils import __main__ as entry

    calls = []
    fake = types.ModuleType("fedlab_utils.course.translate")
    fake.main = lambda argv: calls.append(argv) or 3
    monkeypatch.setitem(sys.modules, "fedlab_utils.course.translate", fake)
    assert entry.main(["translate", "check", "--lang", "zh"]) == 3 and calls == [["check", "--lang", "zh"]]
    monkeypatch.setitem(sys.modules, "fedlab_utils.course.translate", None)  # as if the file did not exist
    assert entry.main(["translate", "check"]) == 2
    assert "'translate' command is not available" in capsys.readouterr().err
    assert "translate" in entry.build_parser().format_help()
    importlib.invalidate_caches()


def test_find_notebooks_looks_in_the_edition_and_refuses_unknown_languages(tmp_path, monkeypatch):
    import fedlab_utils.course.runner as runner

    (tmp_path / "zh").mkdir()
    for folder in (tmp_path, tmp_path / "zh"):
        (folder / "00_intro.ipynb").write_text("{}")
    monkeypatch.setattr(runner, "NOTEBOOK_DIR", tmp_path)
    assert find_notebooks(["00"], "zh") == [tmp_path / "zh" / "00_intro.ipynb"]
    assert find_notebooks([], "en") == [tmp_path / "00_intro.ipynb"]
    with pytest.raises(CourseError, match="--lang 'fr' is not valid; choose one of \\['en', 'zh'\\]"):
        find_notebooks([], "fr")


def test_run_lang_zh_writes_into_out_zh_and_tells_the_kernel_its_language(tmp_path, monkeypatch):
    body = ("import os\nfrom fedlab_utils.course.claims import record_results\n"
            "record_results(results_path, 'tiny', {'lang': os.environ.get('FEDLAB_LANG', 'unset')})")
    nb = _tiny_notebook(tmp_path / "10_tiny.ipynb", body)
    out = tmp_path / "build"
    assert main(["run", str(nb), "--lang", "zh", "--out", str(out), "--no-html"]) == 0
    assert json.loads((out / "zh" / "results.json").read_text())["10_tiny"]["metrics"] == {"lang": "zh"}
    assert (out / "zh" / "notebooks" / "10_tiny.ipynb").exists() and not (out / "results.json").exists()
    monkeypatch.setenv("FEDLAB_LANG", "zh")  # a Chinese shell: an English run still runs in English
    from fedlab_utils.course import kernel_environment

    with kernel_environment([], "auto", "en"):
        assert "FEDLAB_LANG" not in os.environ
    assert os.environ["FEDLAB_LANG"] == "zh", "the runner restores the caller's environment"


# ----------------------------------------------------------------------------- HTML pages that link to each other
def test_html_links_point_at_pages_that_exist_in_build_html():
    text = ("[next](01_pruning.ipynb), [there](./02_compression.ipynb#exercises), [map](../README.md), "
            "[地图](../../README.zh-CN.md), [model](../docs/energy_model.md), [web](https://x.org/a.ipynb), "
            "[up](#top), ![figure](img.png) and [t](03_distillation.ipynb \"title\")")
    assert html_links(text) == ("[next](01_pruning.html), [there](02_compression.html#exercises), [map](index.html), "
                                "[地图](index.html), model, [web](https://x.org/a.ipynb), [up](#top), "
                                "![figure](img.png) and [t](03_distillation.html \"title\")")


def test_html_pages_link_to_each_other_and_to_an_index(tmp_path):
    pages = tmp_path / "html"
    for stem, body in (("00_first", "# 00 · 第一课 First\n\n**Next:** [01](01_second.ipynb) · [map](../README.md)"),
                       ("01_second", "# 01 · 第二课 Second\n\nBack to [00](00_first.ipynb)")):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_markdown_cell(body)]
        nbformat.write(nb, tmp_path / f"{stem}.ipynb")
        write_html(tmp_path / f"{stem}.ipynb", pages)
    first = (pages / "00_first.html").read_text()
    assert 'href="01_second.html"' in first and 'href="index.html"' in first and ".ipynb" not in first
    assert "<title>00 · 第一课 First</title>" in first
    index = (pages / "index.html").read_text()
    assert '<a href="00_first.html">00 · 第一课 First</a>' in index and '<a href="01_second.html">' in index
    linked = {href for page in pages.glob("*.html") for href in re.findall(r'href="([^"#:]+)', page.read_text())}
    assert linked and all((pages / href).is_file() for href in linked), "every local link lands on a page"
