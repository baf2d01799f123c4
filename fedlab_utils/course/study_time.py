"""How long a notebook takes a student: the course's one documented method for its study times.

A notebook states its study time in its opening cell and the README's table repeats it; both come
from :func:`study_minutes`, so the figure is a measurement of the notebook, not a guess:

* **prose** at :data:`WORDS_PER_MINUTE` (150) words a minute, the pace of careful reading of
  technical text.  Counted: the markdown a student reads -- not the model answers of discussion
  cells (the student writes that part), not link targets, image paths or HTML tags.  In the
  English edition the Chinese half of a bilingual heading repeats the English one and is not
  counted; in the Chinese edition a CJK character counts as half a word (about 300 characters
  a minute, the usual rate for Chinese technical prose), and English words as words;
* **code** at :data:`CODE_LINES_PER_MINUTE` (6) non-blank lines a minute: reading a cell, running
  it and reading its output -- a table, a figure, a claim -- which is where most of a lesson's
  numbers are.  Solutions and hidden tests are not counted (the student writes those; they are in
  the exercise allowance);
* **exercises** by kind (:data:`EXERCISE_MINUTES`), from their nbgrader ids: a ``NN-build-*``
  cell, where the student writes the lesson's core piece (about 30 lines, with a check to pass),
  20 min; another coding exercise (``NN-ex*``) 10 min; a prediction (``NN-predict-*``: read the
  setup, reason, commit to a number) 5 min; a discussion answer (``NN-discuss-*``: a few
  sentences of argument) 8 min.

The rates are calibrated on the one timed reading the course has, of the notebooks as they were
at commit 29c4c93.  On those notebooks the method gives 00: 102, 01: 129, 02: 144,
04: 134 and 06: 98 minutes, where the tried reading found 100-120, 110-130, 150+, 140+ and about
90 (the notebooks then stated 75, 80, 90, 80 and 70).  Prose alone at 150 words a minute gives
14-23 minutes for those notebooks: most of a lesson's time is its code, outputs and exercises.

**Core** is everything before the first ``## 选学 Optional`` heading; the optional minutes are the
rest.  The course keeps each core path within :data:`CORE_LIMIT_MINUTES`.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat

__all__ = ["WORDS_PER_MINUTE", "CODE_LINES_PER_MINUTE", "EXERCISE_MINUTES", "CORE_LIMIT_MINUTES", "OPTIONAL_HEADING",
           "study_minutes", "exercise_kind", "prose_words", "stated_minutes"]

WORDS_PER_MINUTE = 150
CODE_LINES_PER_MINUTE = 6
#: Minutes per exercise, by kind (the ``NN-<kind>-...`` part of its nbgrader id).
EXERCISE_MINUTES = {"build": 20, "ex": 10, "predict": 5, "discuss": 8}
CORE_LIMIT_MINUTES = 95
#: The heading that opens a notebook's optional part (``## 选学 Optional: ...``).
OPTIONAL_HEADING = re.compile(r"^##\s*选学", re.MULTILINE)

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[A-Za-z0-9]+(?:['’.-][A-Za-z0-9]+)*")
_SOLUTION = re.compile(r"### BEGIN SOLUTION.*?### END SOLUTION", re.DOTALL)
_HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", re.DOTALL)


def exercise_kind(grade_id: str) -> str | None:
    """``build``, ``ex``, ``predict`` or ``discuss`` for a solution cell's nbgrader id (``01-build-mask``,
    ``03-ex2``, ``00-predict-lte``, ``05-discuss-cut``); None for anything else (e.g. a test cell)."""
    found = re.match(r"^\d\d-(build|ex|predict|discuss)(?:\d*)(?:-|$)", grade_id)
    return None if found is None or grade_id.endswith("-test") else found.group(1)


def prose_words(markdown: str, cjk: bool = False) -> float:
    """Words a student reads in ``markdown``: English words, plus half a word per CJK character when
    ``cjk`` (the Chinese edition); link targets, image paths, HTML tags and solutions left out."""
    text = _SOLUTION.sub(" ", markdown)
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", text)         # images
    text = re.sub(r"\]\([^)]*\)", "] ", text)                  # link targets (the link text stays)
    text = re.sub(r"<[^>]+>", " ", text)                       # HTML tags
    words = len(_WORD.findall(_CJK.sub(" ", text)))
    return words + (len(_CJK.findall(text)) / 2 if cjk else 0)


def _code_lines(source: str) -> int:
    visible = _HIDDEN.sub("", _SOLUTION.sub("", source))
    return sum(1 for line in visible.splitlines() if line.strip())


def _minutes(words: float, code_lines: int, exercises: dict[str, int]) -> dict:
    prose = words / WORDS_PER_MINUTE
    code = code_lines / CODE_LINES_PER_MINUTE
    work = sum(EXERCISE_MINUTES[kind] * n for kind, n in exercises.items())
    return {"minutes": prose + code + work, "prose_minutes": prose, "code_minutes": code, "exercise_minutes": work,
            "words": round(words), "code_lines": code_lines, "exercises": dict(exercises)}


BOOTSTRAP_TAG = "fedlab-bootstrap"  # the first code cell of every notebook (website/bootstrap_cell.py)


def study_minutes(notebook_path: str | Path) -> dict:
    """The study time of one notebook by the course's method (module docstring).

    Returns ``core_minutes`` and ``optional_minutes`` (floats), the totals ``words``, ``code_lines``
    and ``exercises`` (a count), and ``core`` / ``optional``: each part's ``minutes``, its
    ``prose_minutes``, ``code_minutes`` and ``exercise_minutes``, its ``words``, ``code_lines`` and
    ``exercises`` by kind.  A notebook under ``notebooks/zh/`` (or any path with a ``zh`` folder)
    counts CJK characters as half words."""
    path = Path(notebook_path)
    nb = nbformat.read(path, as_version=4)
    cjk = "zh" in path.parent.parts
    parts = {"core": [0.0, 0, {}], "optional": [0.0, 0, {}]}
    part = "core"
    for cell in nb.cells:
        if BOOTSTRAP_TAG in cell.metadata.get("tags", []):
            continue  # installs the package outside the repository: set-up, not the lesson
        if cell.cell_type == "markdown" and OPTIONAL_HEADING.search(cell.source):
            part = "optional"
        counts = parts[part]
        if cell.cell_type == "markdown":
            counts[0] += prose_words(cell.source, cjk)
        elif cell.cell_type == "code":
            counts[1] += _code_lines(cell.source)
        meta = cell.metadata.get("nbgrader", {})
        kind = exercise_kind(meta.get("grade_id", "")) if meta.get("solution") else None
        if kind:
            counts[2][kind] = counts[2].get(kind, 0) + 1
    core, optional = (_minutes(*parts[name]) for name in ("core", "optional"))
    return {"core_minutes": core["minutes"], "optional_minutes": optional["minutes"],
            "words": core["words"] + optional["words"], "code_lines": core["code_lines"] + optional["code_lines"],
            "exercises": sum(core["exercises"].values()) + sum(optional["exercises"].values()),
            "core": core, "optional": optional}


_STATED = re.compile(r"(?:Study time|学习时间)\W*(?:[^\n\d]{0,40}?)(\d+)\s*(?:min|minutes)\b", re.IGNORECASE)


def stated_minutes(notebook_path: str | Path) -> int | None:
    """The study time a notebook states in its opening cells (the first number of minutes after
    "Study time"), or None when it states none."""
    nb = nbformat.read(Path(notebook_path), as_version=4)
    opening = "\n".join(c.source for c in nb.cells[:5] if c.cell_type == "markdown")
    found = _STATED.search(opening)
    return int(found.group(1)) if found else None


def main(argv: list[str] | None = None) -> int:
    """``python -m fedlab_utils.course.study_time [NN ...]``: each notebook's study time by the method, and
    what it states."""
    import sys

    from fedlab_utils.course.runner import find_notebooks

    print(f"{'notebook':<28}{'core':>6}{'optional':>10}{'stated':>8}  words  code  exercises (core)")
    for path in find_notebooks(sys.argv[1:] if argv is None else argv):
        m = study_minutes(path)
        print(f"{path.stem:<28}{m['core_minutes']:>6.0f}{m['optional_minutes']:>10.0f}{stated_minutes(path) or '-':>8}"
              f"  {m['words']:>5}  {m['code_lines']:>4}  {m['core']['exercises']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
