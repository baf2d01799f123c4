"""Every notebook is a lesson a student can find their way through (static checks, no kernel).

For each ``notebooks/NN_*.ipynb`` (top level; the translated editions are checked by their own
tests):

* student prose holds only the lesson: no ``make``, ``benchmarks/``, ``tests/``, ``pytest`` or
  pull-request numbers in markdown, and no ``noqa`` in any cell;
* it opens with a study time and prerequisites;
* its last markdown cell links the previous and the next notebook **by file name**, and both
  files exist.  The first notebook has no previous one and says ``Previous: none``; the last has
  no next one and says ``Next: none`` (the convention is in ``docs/notebook_template.md``);
* it has at least one ``NN-predict-…`` exercise (a solution cell followed by a locked test cell
  with points) and one ``NN-discuss-…`` question (nbgrader's manually graded markdown answer
  cell with points and a model answer between the solution markers);
* the README's notebook table names every notebook file.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NAMES = [p.name for p in NOTEBOOKS]

def _make_targets() -> list[str]:
    """The Makefile's targets (``course``, ``test``, ``bench`` ...): "make <target>" is maintainer talk,
    "make the model smaller" is not."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return sorted(set(re.findall(r"^([a-z][a-z0-9_-]*):", text, re.MULTILINE)) | {"all", "install"})


#: Maintainer material that does not belong in a student's prose (pattern, what it is).
MAINTAINER_PATTERNS = [
    (re.compile(r"\bmake\s+(?:" + "|".join(map(re.escape, _make_targets())) + r")\b(?![ \t]+(?:a|an|the)\b)"),
     "a make target"),
    (re.compile(r"`make\b"), "a make command"),
    (re.compile(r"benchmarks/"), "a benchmarks/ path"),
    (re.compile(r"(?<![\w.])tests/"), "a tests/ path"),
    (re.compile(r"\bpytest\b"), "pytest"),
    (re.compile(r"\bPR\s*#\s*\d+|\bpull request\s*#?\d+", re.IGNORECASE), "a pull-request number"),
    (re.compile(r"(?<![\w&/])#\d{2,}\b"), "an issue or PR number like #1234"),
]
STUDY_TIME = re.compile(r"Study time", re.IGNORECASE)
PREREQUISITES = re.compile(r"Prerequisites", re.IGNORECASE)


def _nb(path: Path):
    return nbformat.read(path, as_version=4)


def _meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def _markdown(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "markdown"]


def _without_code(text: str) -> str:
    """Markdown prose without URLs (a link may legitimately contain ``#123`` anchors)."""
    return re.sub(r"https?://\S+", "", text)


def maintainer_material(text: str) -> list[str]:
    """What of ``text`` (markdown) is maintainer material: ``[(what, excerpt), ...]`` as strings."""
    found = []
    prose = _without_code(text)
    for pattern, what in MAINTAINER_PATTERNS:
        for m in pattern.finditer(prose):
            found.append(f"{what}: ...{prose[max(0, m.start() - 30):m.end() + 30]!r}...")
    return found


def neighbour_links(text: str) -> dict[str, str | None]:
    """The file names after ``Previous`` and ``Next`` in ``text`` (``None`` when it says "none")."""
    links = {}
    for word in ("Previous", "Next"):
        for m in re.finditer(rf"{word}\b(.*?)(?=\bPrevious\b|\bNext\b|\n|$)", text):  # the last one counts
            line = m.group(1)
            name = re.search(r"(\d\d_[A-Za-z0-9_]+\.ipynb)", line)
            if name:
                links[word] = name.group(1)
            elif re.search(r"\bnone\b", line, re.IGNORECASE):
                links[word] = None
    return links


# ----------------------------------------------------------------------------- the helpers themselves
def test_maintainer_patterns_catch_what_they_should_and_nothing_else():
    assert maintainer_material("run `make bench` first")
    assert maintainer_material("see benchmarks/results/claims.json")
    assert maintainer_material("checked by tests/test_federated.py")
    assert maintainer_material("as in upstream PR #1234")
    assert maintainer_material("fixed in #4521")
    assert maintainer_material("run pytest")
    assert maintainer_material("the claims were checked with `make test`")
    assert not maintainer_material("we make the model smaller; the pitfall makes a point")
    assert not maintainer_material("client #3 and round 2; see https://github.com/x/y/pull/1234")
    assert not maintainer_material("a 10-class label carries log2 10 bits; the heading ## 1 Setup")


def test_neighbour_links_are_read_by_file_name():
    text = "**Previous:** [`00_a.ipynb`](00_a.ipynb) · **Next:** [`02_c.ipynb`](02_c.ipynb)"
    assert neighbour_links(text) == {"Previous": "00_a.ipynb", "Next": "02_c.ipynb"}
    assert neighbour_links("Previous: none (this is the first notebook)\nNext: `01_b.ipynb`") == {
        "Previous": None, "Next": "01_b.ipynb"}
    assert neighbour_links("Next: back to 00") == {}  # a number is not a file name
    one_line = "**Previous:** none, this is the first notebook · **Next:** [`01_b.ipynb`](01_b.ipynb): pruning"
    assert neighbour_links(one_line) == {"Previous": None, "Next": "01_b.ipynb"}
    prose = "Next, we prune.\n\n**Previous:** [`00_a.ipynb`](00_a.ipynb) · **Next:** [`02_c.ipynb`](02_c.ipynb)"
    assert neighbour_links(prose) == {"Previous": "00_a.ipynb", "Next": "02_c.ipynb"}


def test_there_are_eight_notebooks_in_order():
    assert [n[:2] for n in NAMES] == [f"{i:02d}" for i in range(len(NAMES))] and len(NAMES) >= 8


# ----------------------------------------------------------------------------- every notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_no_maintainer_material_in_prose(path):
    nb = _nb(path)
    problems = [f"markdown cell {i}: {p}" for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
                for p in maintainer_material(c.source)]
    problems += [f"cell {i}: 'noqa'" for i, c in enumerate(nb.cells) if "noqa" in c.source.lower()]
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_opens_with_study_time_and_prerequisites(path):
    top = "\n".join(_markdown(_nb(path))[:3])
    assert STUDY_TIME.search(top), f"{path.name}: no study time in the first markdown cells"
    assert re.search(r"Study time[^\n]*\d+\s*(min|minutes|h|hours)", top, re.IGNORECASE), (
        f"{path.name}: the study time gives no number of minutes or hours")
    assert PREREQUISITES.search(top), f"{path.name}: no prerequisites in the first markdown cells"


@pytest.mark.parametrize("index", range(len(NOTEBOOKS)), ids=NAMES)
def test_ends_with_previous_and_next_by_file_name(index):
    path = NOTEBOOKS[index]
    last = _markdown(_nb(path))[-1]
    links = neighbour_links(last)
    expected_previous = NAMES[index - 1] if index > 0 else None
    expected_next = NAMES[index + 1] if index + 1 < len(NAMES) else None
    assert "Previous" in links, f"{path.name}: the last markdown cell has no 'Previous:' link (or 'Previous: none')"
    assert "Next" in links, f"{path.name}: the last markdown cell has no 'Next:' link (or 'Next: none')"
    assert links["Previous"] == expected_previous, f"{path.name}: Previous is {links['Previous']}, " \
                                                   f"expected {expected_previous}"
    assert links["Next"] == expected_next, f"{path.name}: Next is {links['Next']}, expected {expected_next}"
    for name in filter(None, links.values()):
        assert (path.parent / name).exists(), f"{path.name} links {name}, which does not exist"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_has_a_predict_exercise_with_points(path):
    nb = _nb(path)
    prefix = f"{path.name[:2]}-predict-"
    found = []
    for cell, following in zip(nb.cells, nb.cells[1:]):
        meta, test = _meta(cell), _meta(following)
        if meta.get("solution") and meta.get("grade_id", "").startswith(prefix) and cell.cell_type == "code":
            assert test.get("grade") and test.get("locked") and test.get("points", 0) > 0, (
                f"{path.name}: {meta['grade_id']} is not followed by a locked test cell with points")
            assert "check_" in following.source, f"{path.name}: {test.get('grade_id')} calls no check_* function"
            found.append(meta["grade_id"])
    assert found, f"{path.name}: no {prefix}… exercise (a solution cell followed by a graded test cell)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_has_a_discussion_question_graded_by_hand(path):
    nb = _nb(path)
    prefix = f"{path.name[:2]}-discuss-"
    cells = [c for c in nb.cells if _meta(c).get("grade_id", "").startswith(prefix)]
    assert cells, f"{path.name}: no {prefix}… discussion answer cell"
    for cell in cells:
        meta = _meta(cell)
        assert cell.cell_type == "markdown", f"{path.name}: {meta['grade_id']} must be a markdown answer cell"
        assert meta.get("grade") and meta.get("solution") and not meta.get("locked"), (
            f"{path.name}: {meta['grade_id']} must be nbgrader's manually graded answer (grade + solution, unlocked)")
        assert meta.get("points", 0) > 0, f"{path.name}: {meta['grade_id']} has no points"
        body = cell.source.split("### BEGIN SOLUTION", 1)[-1].split("### END SOLUTION", 1)[0]
        assert "### BEGIN SOLUTION" in cell.source and len(body.split()) >= 15, (
            f"{path.name}: {meta['grade_id']} needs a model answer between the solution markers")


def test_readme_table_names_every_notebook():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The notebooks", 1)[-1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    missing = [name for name in NAMES if not any(f"`{name}`" in row for row in rows)]
    assert not missing, f"README's notebook table does not name {missing}"
    assert all(re.search(r"\d+\s*min", row) for row in rows if re.match(r"\| \d\d ", row)), \
        "every row of the README's notebook table gives a study time"


def test_discussion_cells_survive_nbgrader_validation():
    """A discussion answer (manually graded markdown cell) is valid for the course's validator,
    and a missing model answer or missing points are refused."""
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    from fedlab_utils.course import exercises, validate_notebook

    def answer(points=2, source="### BEGIN SOLUTION\nBecause the tail dominates.\n### END SOLUTION"):
        return new_markdown_cell(source, id="disc", metadata={"nbgrader": {
            "grade": True, "solution": True, "locked": False, "points": points, "grade_id": "00-discuss-x",
            "schema_version": 3, "task": False}})

    def exercise(n):
        return [new_code_cell(f"x{n} = 1\n### BEGIN SOLUTION\nx{n} = 2\n### END SOLUTION", id=f"s{n}", metadata={
                    "nbgrader": {"grade": False, "solution": True, "locked": False, "grade_id": f"00-ex{n}",
                                 "schema_version": 3, "task": False}}),
                new_code_cell(f"checks.check_x(x{n})", id=f"t{n}", metadata={"nbgrader": {
                    "grade": True, "solution": False, "locked": True, "points": 1, "grade_id": f"00-ex{n}-test",
                    "schema_version": 3, "task": False}})]

    cells = [c for n in (1, 2, 3) for c in exercise(n)]
    good = new_notebook(cells=[*cells, answer()])
    assert validate_notebook(good) == [] and len(exercises(good)) == 3
    assert any("points" in p for p in validate_notebook(new_notebook(cells=[*cells, answer(points=0)])))
    assert any("SOLUTION" in p for p in validate_notebook(new_notebook(cells=[*cells, answer(source="free text")])))
