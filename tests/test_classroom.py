"""The course as an nbgrader course, with nbgrader's real pipeline and SQLite gradebook (no mocks).

The slow test autogrades notebook 00 three times (the solutions, the untouched release, one wrong
exercise) with small parameters set in each submission's ``parameters`` cell, as a student may;
``make classroom-check`` does all notebooks with their defaults.
"""
import copy
import os
import sqlite3
import stat

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from fedlab_utils.course import (
    NOTEBOOK_DIR,
    ROOT,
    ClassroomError,
    classroom,
    exercises,
    grading,
    locked_metadata,
    normalize_notebook,
    solution_metadata,
    validate_notebook,
)


def grader_metadata(grade_id: str, points: int) -> dict:
    """nbgrader metadata of a locked autograder-test cell (the fixtures' notebooks)."""
    return {"grade": True, "grade_id": grade_id, "locked": True, "points": points,
            "schema_version": classroom.SCHEMA_VERSION, "solution": False, "task": False}


NOTEBOOKS = classroom.find_notebooks()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _exercise(n: int, points: int = 1):
    return [new_markdown_cell(f"### Exercise {n}", id=f"prompt-{n}"),
            new_code_cell(f"def f{n}(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION", id=f"sol-{n}",
                          metadata={"nbgrader": solution_metadata(f"ex{n}")}),
            new_code_cell(f"checks.check_thing(f{n})", id=f"test-{n}",
                          metadata={"nbgrader": grader_metadata(f"ex{n}-test", points)})]


def _toy_notebook():
    cells = [new_markdown_cell("# Title", id="title"),
             new_code_cell("seed = 0", id="params", metadata={"tags": ["parameters"]}),
             new_code_cell("import torch", id="setup")]
    for n in (1, 2, 3):
        cells += _exercise(n, points=n)
    return new_notebook(cells=cells)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_is_a_valid_nbgrader_source(path):
    nb = nbformat.read(path, as_version=4)
    assert validate_notebook(nb, path.name) == []
    assert normalize_notebook(copy.deepcopy(nb)) == [], "not normalised: run python -m fedlab_utils classroom --lock-source"
    found = exercises(nb)
    assert len(found) >= 3 and all(e.points > 0 for e in found)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and cell.cell_type == "markdown":  # a discussion answer, graded by hand
            assert meta.get("solution") and not meta.get("locked") and meta.get("points", 0) > 0
        elif meta.get("grade"):
            assert meta["locked"] and "check_" in cell.source
        elif not meta.get("solution"):
            assert meta.get("locked") or "parameters" in cell.metadata.get("tags", [])
    assert any("Run All stops at the first unanswered exercise" in c.source for c in nb.cells[:4])


def test_normaliser_locks_with_stable_ids_and_is_idempotent():
    nb = _toy_notebook()
    changed = normalize_notebook(nb)
    assert changed == ["cell-title", "cell-setup", "cell-prompt-1", "cell-prompt-2", "cell-prompt-3"]
    assert nb.cells[0].metadata.nbgrader == locked_metadata("cell-title")
    assert "nbgrader" not in nb.cells[1].metadata  # students may edit parameters
    assert nb.cells[4].metadata.nbgrader == solution_metadata("ex1")  # exercises untouched
    before = nbformat.writes(nb)
    assert normalize_notebook(nb) == [] and nbformat.writes(nb) == before
    assert validate_notebook(nb) == []
    assert [(e.solution_id, e.test_id, e.points) for e in exercises(nb)] == [
        ("ex1", "ex1-test", 1), ("ex2", "ex2-test", 2), ("ex3", "ex3-test", 3)]


def test_normaliser_refuses_an_unmarked_solution_region():
    nb = _toy_notebook()
    nb.cells.append(new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", id="stray"))
    with pytest.raises(ClassroomError, match="stray.*no nbgrader solution metadata"):
        normalize_notebook(nb)


def test_validator_names_each_problem():
    nb = _toy_notebook()
    normalize_notebook(nb)
    nb.cells.pop()                                       # exercise 3 loses its test cell
    nb.cells[5].metadata.nbgrader["locked"] = False      # exercise 1's test cell is editable
    nb.cells[8].metadata.nbgrader["grade_id"] = "ex1"    # a repeated grade id
    nb.cells.append(new_code_cell("x = 1", id="late"))   # not locked
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="hi")]
    problems = "\n".join(validate_notebook(nb, "toy"))
    for expected in ("ex3' is not followed by an autograder-test cell", "test cell 'ex1-test' must be locked",
                     "grade_id 'ex1' repeats", "late) : not locked".replace(" :", ":"), "has outputs",
                     "2 graded exercise(s)"):
        assert expected in problems, expected


def test_every_notebook_passes_generate_assignment(tmp_path):
    names = classroom.build_course(tmp_path / "course")
    root = tmp_path / "course"
    assert names == [p.stem for p in NOTEBOOKS]
    config = (root / "nbgrader_config.py").read_text()
    assert "c.CourseDirectory.db_url" in config and "sqlite:///" in config
    assert (root / "data").resolve() == ROOT / "data" and (root / "data" / "mnist5k.npz").exists()
    expected_mode = 0o666 & ~_umask()
    assert stat.S_IMODE((root / "nbgrader_config.py").stat().st_mode) == expected_mode
    for name in names:
        source = nbformat.read(root / "source" / name / f"{name}.ipynb", as_version=4)
        assert stat.S_IMODE((root / "source" / name / f"{name}.ipynb").stat().st_mode) == expected_mode
        release = nbformat.read(root / "release" / name / f"{name}.ipynb", as_version=4)
        text = nbformat.writes(release)
        assert "### BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
        assert text.count("raise NotImplementedError()") >= len(exercises(source))
        assert [e.test_id for e in exercises(release)] == [e.test_id for e in exercises(source)]
        locked = [c for c in release.cells if c.metadata.get("nbgrader", {}).get("locked")]
        assert locked and all(c.metadata.get("editable") is False for c in locked)
    with sqlite3.connect(root / "gradebook.db") as db:
        assert sorted(r[0] for r in db.execute("select name from assignment")) == names


@pytest.mark.slow  # nbgrader autogrades three executed notebooks: make slow-check (CI)
def test_autograde_three_submissions_of_notebook_00(tmp_path):
    """classroom -> generate_assignment -> three submissions -> autograde -> feedback, in SQLite."""
    # quick: small parameters in each submission's parameters cell (every graded check still runs on
    # the notebook's real objects), so that autograding takes seconds per submission
    results = grading.grade_check(tmp_path / "course", ["00"], quick=True)
    [r] = results
    wrong_id, _ = grading.PLAUSIBLE_WRONG_ANSWERS["00_federated_baseline"]
    points = {e.solution_id: e.points for e in exercises(nbformat.read(NOTEBOOKS[0], as_version=4))}
    assert r.max_score == sum(points.values())
    assert r.scores["solutions"] == r.max_score
    assert r.scores["untouched"] == 0
    assert r.wrong_exercise == wrong_id and r.wrong_points == points[wrong_id]
    assert r.scores["one-wrong"] == r.max_score - points[wrong_id]
    assert r.manual_cells and all("-discuss-" in gid for gid in r.manual_cells)
    assert r.waiting["solutions"] == sorted(r.manual_cells) and r.waiting["untouched"] == [], \
        "answered discussion cells wait for a grader in nbgrader's gradebook; the released stub scores 0"
    assert r.as_expected
    for student, html in r.feedback.items():
        body = html.read_text()
        assert html.suffix == ".html" and "00_federated_baseline" in body, student
    assert "AssertionError" in r.feedback["one-wrong"].read_text()  # the hint reaches the student
    assert "not implemented yet" in r.feedback["untouched"].read_text()
    # nbgrader restored the hidden tests (absent from the release) and ran them
    graded = nbformat.read(tmp_path / "course" / "autograded" / "solutions" / r.assignment / f"{r.assignment}.ipynb",
                           as_version=4)
    hidden = [c for c in graded.cells if "### BEGIN HIDDEN TESTS" in c.source]
    assert hidden and all(c.metadata.nbgrader.get("grade") for c in hidden)
    assert all("seed=1" in c.source and not any(o.output_type == "error" for o in c.outputs) for c in hidden)
    # The gradebook is nbgrader's SQLite database: per-cell autograded scores.
    with sqlite3.connect(tmp_path / "course" / "gradebook.db") as db:
        rows = db.execute("""select submitted_assignment.student_id, base_cell.name, grade.auto_score from grade
                             join base_cell on grade.cell_id = base_cell.id
                             join submitted_notebook on grade.notebook_id = submitted_notebook.id
                             join submitted_assignment on submitted_notebook.assignment_id = submitted_assignment.id
                             """).fetchall()
    one_wrong = {cell: score for student, cell, score in rows if student == "one-wrong"}
    assert one_wrong[f"{wrong_id}-test"] == 0
    assert all(score == points[cell[:-len("-test")]] for cell, score in one_wrong.items()
               if cell != f"{wrong_id}-test" and cell.endswith("-test"))  # discussion answers: graded by hand


def test_cli_locks_validates_and_refuses_unknown_notebooks(tmp_path, capsys):
    from fedlab_utils.__main__ import main

    path = tmp_path / "toy.ipynb"
    nbformat.write(_toy_notebook(), path)
    assert main(["classroom", "--validate", str(path)]) == 2
    assert "toy.ipynb cell 0 (title): not locked" in capsys.readouterr().err
    assert main(["classroom", "--lock-source", str(path)]) == 0
    assert "toy.ipynb: locked 5 cell(s); valid" in capsys.readouterr().out
    assert main(["classroom", "--lock-source", str(path)]) == 0
    assert "toy.ipynb: valid" in capsys.readouterr().out
    assert main(["classroom", "--validate", "99"]) == 2
    assert "notebook '99' not found" in capsys.readouterr().err


def _notebook_imports(nb) -> str:
    """The notebook's top-level import lines (its setup), to run one exercise's cells without the rest."""
    lines = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            source = cell.source.replace("(\n", "(").replace(",\n", ", ")
            lines += [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    return "\n".join(lines)


def _defined_names(source: str) -> set[str]:
    """Names a piece of code binds at top level (assignments, defs, imports)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):  # a function's own parameters
            names.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def _free_names(source: str) -> set[str]:
    """Names read by ``source`` that it does not bind itself and that are not builtins."""
    import ast
    import builtins

    read = {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return read - _defined_names(source) - set(dir(builtins))


def test_free_names_find_what_a_cell_needs_from_the_lesson():
    assert _free_names("x = rounds / recipe_rounds\nprint(len(x))") == {"rounds", "recipe_rounds"}
    assert _free_names("def f(a):\n    return torch.ones(a)\nf(2)") == {"torch"}
    assert _defined_names("import torch.nn as nn\nfrom x import y\nz = 1") == {"nn", "y", "z"}


@pytest.mark.parametrize("name", sorted(grading.PLAUSIBLE_WRONG_ANSWERS))
def test_classroom_checks_wrong_answer_fails_and_solution_passes(name):
    """What `make classroom-check` submits as 'one wrong exercise' really fails that exercise's test cell
    (with the notebook's own imports), and the instructor's solution passes it."""
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    grade_id, wrong = grading.PLAUSIBLE_WRONG_ANSWERS[name]
    first = next(e for e in exercises(nb) if e.solution_id == grade_id)
    test_source = next(c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == first.test_id)
    lesson_state = _free_names(test_source + "\n" + first.source) - _defined_names(_notebook_imports(nb))
    if lesson_state:  # a predict exercise compares with what the lesson measured: graded in grade-check's real run
        pytest.skip(f"{first.test_id} reads the lesson's results {sorted(lesson_state)}; "
                    "test_autograde_three_submissions and make classroom-check grade it in the real notebook")
    for answer, passes in ((first.source, True), (wrong, False)):
        namespace = {}
        exec(_notebook_imports(nb), namespace)
        exec(answer, namespace)
        if passes:
            exec(test_source, namespace)
        else:
            with pytest.raises(AssertionError):
                exec(test_source, namespace)


@pytest.mark.parametrize("name", sorted(grading.QUICK_PARAMETERS))
def test_quick_parameters_are_the_notebooks_own(name):
    from fedlab_utils.course import notebook_parameters

    known = notebook_parameters(NOTEBOOK_DIR / f"{name}.ipynb")
    assert set(grading.QUICK_PARAMETERS[name]) <= set(known)


def _discussion_notebook():
    """Two autograded exercises and one discussion answer (nbgrader's manually graded markdown cell)."""
    def exercise(n, points):
        return [new_code_cell(f"def f{n}(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION",
                              id=f"sol-{n}", metadata={"nbgrader": solution_metadata(f"99-ex{n}")}),
                new_code_cell(f"def check_identity(f):\n    assert f(2) == 2, 'f(x) must return x'\ncheck_identity(f{n})",
                              id=f"test-{n}", metadata={"nbgrader": grader_metadata(f"99-ex{n}-test", points)})]
    discuss = {"grade": True, "grade_id": "99-discuss-why", "locked": False, "points": 3,
               "schema_version": classroom.SCHEMA_VERSION, "solution": True, "task": False}
    cells = [new_markdown_cell("# 99 · Toy", id="title"),
             new_code_cell("seed = 0", id="params", metadata={"tags": ["parameters"]}),
             *exercise(1, 1), *exercise(2, 2), *exercise(3, 4),
             new_markdown_cell("**Discuss.** Why return x?", id="prompt-d"),
             new_markdown_cell("### BEGIN SOLUTION\nBecause the identity is what the check asks for.\n"
                               "### END SOLUTION", id="answer-d",
                               metadata={"nbgrader": discuss})]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    normalize_notebook(nb)
    return nb


def test_grade_check_reports_discussion_answers_as_waiting_for_manual_grading(tmp_path):
    """nbgrader's real pipeline: the answered discussion cell needs a grader, the released stub scores 0,
    and only the autograded points are compared."""
    path = tmp_path / "99_toy.ipynb"
    nbformat.write(_discussion_notebook(), path)
    assert validate_notebook(nbformat.read(path, as_version=4)) == []
    [r] = grading.grade_check(tmp_path / "course", [str(path)], feedback=False)
    assert r.max_score == 7 and r.manual_points == 3 and r.manual_cells == ["99-discuss-why"]
    assert r.scores == {"solutions": 7, "untouched": 0, "one-wrong": 6}, "ex1 (1 point) left unanswered"
    assert r.waiting == {"solutions": ["99-discuss-why"], "untouched": [], "one-wrong": ["99-discuss-why"]}
    assert r.as_expected
    table = grading.format_scores([r])
    assert "| 99_toy | 7 / 7 | 0 / 7 | 6 / 7 (`99-ex1`: −1) | 1 discussion answer(s), 3 points: `99-discuss-why` | yes |" \
        in table and "formgrader" in table
    release = nbformat.read(tmp_path / "course" / "release" / "99_toy" / "99_toy.ipynb", as_version=4)
    assert "YOUR ANSWER HERE" in release.cells[-1].source, "the model answer stays in the instructor's version"
    r.waiting["untouched"] = ["99-discuss-why"]
    assert not r.as_expected, "an untouched answer waiting for a grader would be a pipeline defect"


def test_classroom_and_student_look_in_the_chinese_edition_with_lang_zh(capsys):
    from fedlab_utils.__main__ import main

    assert main(["classroom", "--lang", "zh", "--validate", "99"]) == 2
    assert "notebook '99' not found in notebooks/zh/" in capsys.readouterr().err
    assert main(["student", "--lang", "zh", "99", "--out", "unused"]) == 2
    assert "notebook '99' not found in notebooks/zh/" in capsys.readouterr().err
    assert classroom.find_notebooks([], "zh") == sorted((NOTEBOOK_DIR / "zh").glob("[0-9][0-9]_*.ipynb"))
