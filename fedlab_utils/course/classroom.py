"""The course as an nbgrader course: source notebooks, release, autograding, gradebook.

The committed notebooks *are* nbgrader source notebooks (schema 3):

- each exercise is a **solution cell** (``solution: true``, ``### BEGIN SOLUTION`` / ``### END
  SOLUTION``) followed by a locked **autograder-test cell** (``grade: true``, ``points``) that
  calls a ``fedlab_utils.checks`` function, often with ``### BEGIN HIDDEN TESTS``;
- every other cell is **locked** (read-only) with a stable ``grade_id`` derived from its cell id,
  except the papermill ``parameters`` cell, which students may edit to explore.

:func:`normalize_notebook` (``python -m fedlab_utils classroom --lock-source``) adds the locked
metadata and validates everything; it is idempotent and deterministic.  :func:`build_course`
(``--out DIR``) writes a complete course directory and runs nbgrader's own
``generate_assignment``; :func:`fedlab_utils.course.grading.grade_check` (``--grade-check``) autogrades
three submissions per notebook (the solutions, the untouched release, one wrong exercise) with
nbgrader's real pipeline and SQLite gradebook.  A discussion question's answer is nbgrader's
manually graded answer cell (a markdown cell that is both ``solution`` and ``grade``, with points,
its model answer between the solution markers).  Nothing here re-implements nbgrader's converters.
"""
from __future__ import annotations

import contextlib
import copy
import fcntl
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from fedlab_utils.course.runner import ROOT, CourseError
from fedlab_utils.course.runner import find_notebooks as find_course_notebooks

SCHEMA_VERSION = 3
MIN_EXERCISES = 3
COURSE_ID = "efficient-federated-learning"
STUDENTS = ("solutions", "untouched", "one-wrong")
_GRADE_ID = re.compile(r"^[A-Za-z0-9_-]+$")
KERNEL_ARGUMENTS = ["--HistoryManager.hist_file=:memory:", "--IPKernelApp.log_level=ERROR"]

__all__ = ["solution_metadata", "locked_metadata", "Exercise", "exercises", "normalize_notebook",
           "validate_notebook", "lock_source", "build_course", "student_versions", "ClassroomError"]


class ClassroomError(Exception):
    """A notebook or course directory that nbgrader would not accept, with what to fix."""


# ----------------------------------------------------------------------------- the metadata format
def solution_metadata(grade_id: str) -> dict:
    """nbgrader metadata of an exercise's editable solution cell (schema 3)."""
    return {"grade": False, "grade_id": grade_id, "locked": False, "schema_version": SCHEMA_VERSION,
            "solution": True, "task": False}


def locked_metadata(grade_id: str) -> dict:
    """nbgrader metadata of a read-only prose or setup cell."""
    return {"grade": False, "grade_id": grade_id, "locked": True, "schema_version": SCHEMA_VERSION,
            "solution": False, "task": False}


def _meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _is_parameters(cell) -> bool:
    return "parameters" in cell.get("metadata", {}).get("tags", [])


@dataclass
class Exercise:
    """One graded exercise: its solution cell's and test cell's grade ids and its points."""

    solution_id: str
    test_id: str
    points: float
    source: str = field(repr=False, default="")


def exercises(nb) -> list[Exercise]:
    """The notebook's exercises in order (a solution cell and the grade cell right after it)."""
    found = []
    for cell, following in zip(nb.cells, nb.cells[1:]):
        if (_meta(cell).get("solution") and _meta(following).get("grade")
                and not _is_manual_answer(cell) and not _is_manual_answer(following)):
            found.append(Exercise(_meta(cell)["grade_id"], _meta(following)["grade_id"],
                                  _meta(following)["points"], cell.source))
    return found


# ----------------------------------------------------------------------------- normalise and validate
def _locked_id(cell) -> str:
    cell_id = cell.get("id") or ""
    if not _GRADE_ID.match(cell_id):
        raise ClassroomError(f"cell {cell_id!r} has no usable cell id (nbformat >= 4.5 ids: letters, digits, - _)"
                             "; re-save the notebook with nbformat to give every cell an id")
    return f"cell-{cell_id}"


def normalize_notebook(nb) -> list[str]:
    """Lock every cell that is not an exercise (or the ``parameters`` cell) with a stable grade id.

    Idempotent and deterministic: the id is ``cell-<cell id>``, so re-running changes nothing.
    Exercise cells must already carry their metadata (see :func:`solution_metadata`); a cell
    with ``### BEGIN SOLUTION`` and no solution metadata is an error, not something to guess.
    Returns the grade ids it added or changed.
    """
    changed = []
    for cell in nb.cells:
        meta = _meta(cell)
        if meta.get("solution") or meta.get("grade") or meta.get("task"):
            continue
        if _is_parameters(cell):
            if "nbgrader" in cell.metadata:  # students may edit parameters: no nbgrader lock
                del cell.metadata["nbgrader"]
                changed.append("parameters (unlocked)")
            continue
        if "### BEGIN SOLUTION" in cell.source:
            raise ClassroomError(f"cell {cell.get('id')!r} has a solution region but no nbgrader solution metadata: "
                                 f"give it solution_metadata(<grade id>) and follow it with a test cell")
        wanted = locked_metadata(meta.get("grade_id") if meta.get("locked") and meta.get("grade_id")
                                 else _locked_id(cell))
        if meta != wanted:
            cell.metadata["nbgrader"] = wanted
            changed.append(wanted["grade_id"])
    return changed


def _is_manual_answer(cell) -> bool:
    """nbgrader's "manually graded answer": an unlocked markdown cell that is both solution and
    grade (a discussion question's answer; the model answer sits between the solution markers)."""
    meta = _meta(cell)
    return cell.cell_type == "markdown" and bool(meta.get("solution")) and bool(meta.get("grade"))


def validate_notebook(nb, name: str = "notebook") -> list[str]:
    """Everything nbgrader and the course require of a source notebook; returns the problems.

    nbgrader's own ``MetadataValidator`` first, then: unique grade ids; solution cells hold a
    BEGIN/END SOLUTION region and are followed by a locked test cell with points > 0 that calls
    a ``check_*`` function; at least :data:`MIN_EXERCISES` exercises; every other cell locked;
    no outputs.
    """
    from nbgrader.nbgraderformat import MetadataValidator, ValidationError

    problems = []
    try:
        MetadataValidator().validate_nb(copy.deepcopy(nb))
    except ValidationError as exc:
        problems.append(f"{name}: nbgrader metadata: {exc}")
    seen: dict[str, int] = {}
    for index, cell in enumerate(nb.cells):
        meta = _meta(cell)
        where = f"{name} cell {index} ({cell.get('id')})"
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count")):
            problems.append(f"{where}: has outputs; commit notebooks without outputs")
        gid = meta.get("grade_id")
        if gid is not None:
            if not _GRADE_ID.match(gid):
                problems.append(f"{where}: grade_id {gid!r} may only use letters, digits, - and _")
            if gid in seen:
                problems.append(f"{where}: grade_id {gid!r} repeats cell {seen[gid]}'s")
            seen[gid] = index
        if meta.get("solution"):
            if "### BEGIN SOLUTION" not in cell.source or "### END SOLUTION" not in cell.source:
                problems.append(f"{where}: solution cell without ### BEGIN SOLUTION / ### END SOLUTION")
            following = nb.cells[index + 1] if index + 1 < len(nb.cells) else None
            if _is_manual_answer(cell):  # a discussion answer: graded by hand, its own grade cell
                pass
            elif following is None or not _meta(following).get("grade"):
                problems.append(f"{where}: solution cell {gid!r} is not followed by an autograder-test cell")
        elif "### BEGIN SOLUTION" in cell.source:
            problems.append(f"{where}: solution region in a non-solution cell")
        if _is_manual_answer(cell):
            if not meta.get("points", 0) > 0:
                problems.append(f"{where}: discussion answer cell {gid!r} needs points > 0")
        elif meta.get("grade"):
            if not meta.get("locked"):
                problems.append(f"{where}: test cell {gid!r} must be locked")
            if not meta.get("points", 0) > 0:
                problems.append(f"{where}: test cell {gid!r} needs points > 0")
            if cell.cell_type != "code" or "check_" not in cell.source:
                problems.append(f"{where}: test cell {gid!r} must call a fedlab_utils.checks check_* function")
        elif not meta.get("solution") and not meta.get("locked") and not _is_parameters(cell):
            problems.append(f"{where}: not locked (run `python -m fedlab_utils classroom --lock-source`)")
    count = len(exercises(nb))
    if count < MIN_EXERCISES:
        problems.append(f"{name}: {count} graded exercise(s); the course asks for at least {MIN_EXERCISES}")
    return problems


@contextlib.contextmanager
def _notebook_lock(path: Path) -> Iterator[None]:
    """The team's per-notebook lock (``/tmp/nb-NN.lock``), so a load-change-save never races another."""
    lock = Path(tempfile.gettempdir()) / f"nb-{path.name[:2]}.lock"
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def find_notebooks(names: Sequence[str] = (), lang: str | None = None) -> list[Path]:
    """Committed notebooks by prefix (``00``), stem or path; all of them when ``names`` is empty.

    ``lang="zh"`` looks in the Chinese edition, ``notebooks/zh/``.
    The course runner's own lookup, so that ``classroom`` and ``run`` accept the same names.
    """
    try:
        return find_course_notebooks(list(names), lang)
    except CourseError as exc:
        raise ClassroomError(str(exc)) from None


def lock_source(paths: Sequence[Path], check_only: bool = False) -> dict[str, list[str]]:
    """Normalise (unless ``check_only``) and validate notebooks in place; returns changes per notebook.

    Raises :class:`ClassroomError` listing every problem found."""
    changes, problems = {}, []
    for path in paths:
        with _notebook_lock(path):
            nb = nbformat.read(path, as_version=4)
            changed = [] if check_only else normalize_notebook(nb)
            problems += validate_notebook(nb, path.name)
            if changed:
                nbformat.write(nb, path)
        changes[path.name] = changed
    if problems:
        raise ClassroomError("\n".join(problems))
    return changes


# ----------------------------------------------------------------------------- the course directory
CONFIG_TEMPLATE = '''"""nbgrader configuration of the Efficient Federated Learning course (written by
`python -m fedlab_utils classroom`).  Run nbgrader commands from this directory."""
import os

c = get_config()  # noqa: F821
here = os.path.dirname(os.path.abspath(__file__))  # the course directory: it can be moved or copied

c.CourseDirectory.course_id = {course_id!r}
c.CourseDirectory.root = here
# The gradebook: nbgrader's default SQLite database in the course directory.
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(here, "gradebook.db")
# A local exchange, so release_assignment / fetch_assignment / submit / collect work without root.
# On a shared JupyterHub set it to the hub's exchange (nbgrader's default: /srv/nbgrader/exchange).
c.Exchange.root = os.path.join(here, "exchange")
# Each notebook trains small models: allow a cell up to 10 minutes when autograding.
c.Execute.timeout = 600
c.Execute.extra_arguments = {kernel_arguments!r}  # quiet kernels (no TCP warning in the feedback)
c.ClearSolutions.code_stub = {{"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}}
'''


@contextlib.contextmanager
def _tools_on_path() -> Iterator[None]:
    """nbgrader runs ``alembic`` (its database migrations) as a command: make this interpreter's
    scripts folder findable even when the virtualenv is not activated (``.venv/bin/python -m ...``)."""
    scripts = str(Path(sys.executable).parent)
    saved = os.environ.get("PATH", "")
    if scripts in saved.split(os.pathsep):
        yield
        return
    os.environ["PATH"] = scripts + os.pathsep + saved
    try:
        yield
    finally:
        os.environ["PATH"] = saved


def _api(root: Path, cell_timeout: int = 600):
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config

    config = Config()
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.course_id = COURSE_ID
    config.CourseDirectory.db_url = f"sqlite:///{root / 'gradebook.db'}"
    config.Exchange.root = str(root / "exchange")
    config.Execute.timeout = cell_timeout
    config.Execute.extra_arguments = KERNEL_ARGUMENTS
    return NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)


def _require(result: dict, what: str) -> None:
    if not result.get("success"):
        raise ClassroomError(f"nbgrader {what} failed:\n{result.get('error') or ''}\n{result.get('log') or ''}")


def build_course(out: Path | str, names: Sequence[str] = (), release: bool = True,
                 lang: str | None = None) -> list[str]:
    """Write an nbgrader course directory at ``out``; returns the assignment names.

    ``out/nbgrader_config.py``; ``out/source/<NN_slug>/<NN_slug>.ipynb`` (the committed notebook,
    validated); ``out/data`` links to the course's data (the notebooks themselves load it through
    the installed ``fedlab_utils``, so nothing else needs copying); and, unless ``release`` is
    False, ``out/release/`` from nbgrader's own ``generate_assignment`` (which also records each
    assignment and its grade cells in ``out/gradebook.db``).  Files follow the umask.  ``lang="zh"``
    builds the course from the Chinese edition (``notebooks/zh/``), with the same assignment names.
    """
    root = Path(out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    (root / "nbgrader_config.py").write_text(CONFIG_TEMPLATE.format(
        course_id=COURSE_ID, kernel_arguments=KERNEL_ARGUMENTS))
    data_link = root / "data"
    if data_link.is_symlink() or data_link.exists():
        if not data_link.is_symlink():
            raise ClassroomError(f"{data_link} exists and is not a link; remove it or pick another --out")
        data_link.unlink()
    data_link.symlink_to(ROOT / "data", target_is_directory=True)
    assignments, problems = [], []
    for path in find_notebooks(names, lang):
        nb = nbformat.read(path, as_version=4)
        normalize_notebook(nb)  # the committed notebook is already normalised: this only guards the copy
        problems += validate_notebook(nb, path.name)
        target = root / "source" / path.stem / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
        assignments.append(path.stem)
    if problems:
        raise ClassroomError("\n".join(problems))
    if release:
        api = _api(root)
        with _tools_on_path():
            for name in assignments:
                _require(api.generate_assignment(name, force=True), f"generate_assignment {name}")
    return assignments


def student_versions(out: Path | str, names: Sequence[str] = (), lang: str | None = None) -> list[Path]:
    """Student copies (nbgrader's release) of the notebooks, written flat into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="fedlab-course-") as tmp:
        for name in build_course(tmp, names, lang=lang):
            released = Path(tmp) / "release" / name / f"{name}.ipynb"
            target = out / released.name
            target.write_bytes(released.read_bytes())
            written.append(target)
    return written
