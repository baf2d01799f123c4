"""Course runner: ``python -m fedlab_utils run|student|params``.

``run`` executes notebooks with papermill, validating ``-p NAME VALUE`` against each
notebook's ``parameters`` cell, then renders HTML, collects every notebook's results JSON
into ``<out>/results.json`` (atomically, only when every notebook succeeded) and prints a
summary.  ``student`` writes nbgrader-style student versions (solutions replaced by
``raise NotImplementedError()``, outputs cleared).  ``params`` lists a notebook's parameters.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
from pathlib import Path

from .results import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"


class CourseError(Exception):
    """A user-facing error: printed as one clear line, exit status 2 (or 1 for a failed notebook)."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


def find_notebooks(names: list[str]) -> list[Path]:
    """Resolve notebook names (path, file name, or prefix like ``00``) to paths."""
    available = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if not names:
        return available
    found = []
    for name in names:
        path = Path(name)
        if path.suffix == ".ipynb" and path.exists():
            found.append(path.resolve())
            continue
        matches = [p for p in available if p.name == name or p.stem == name or p.name.startswith(f"{name}_")]
        if len(matches) != 1:
            raise CourseError(f"notebook {name!r} not found; available: {[p.stem for p in available]}")
        found.append(matches[0])
    return found


def parse_value(text: str):
    """``-p`` values: Python literals (``0.5``, ``None``, ``'x'``, ``[1, 2]``) or else a plain string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def notebook_parameters(path: Path) -> dict:
    """The names and defaults of a notebook's ``parameters`` cell (papermill's inspection)."""
    import papermill

    return papermill.inspect_notebook(str(path))


def validate_parameters(path: Path, params: dict) -> None:
    known = notebook_parameters(path)
    if not known:
        raise CourseError(f"{path.name} has no cell tagged 'parameters'")
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise CourseError(f"unknown parameter(s) {unknown} for {path.name}; valid: {sorted(known)}")


def execute(path: Path, params: dict, out: Path, html: bool) -> Path | None:
    """Run one notebook; returns the path of its results JSON (or None if it records none)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    known = notebook_parameters(path)
    results = out / "results" / f"{path.stem}.json"
    params = dict(params)
    if "results_path" in known and "results_path" not in params:
        params["results_path"] = str(results.resolve())
    executed = out / "notebooks" / path.name
    partial = executed.with_name(f".{path.stem}.partial.ipynb")
    partial.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(path), str(partial), parameters=params, kernel_name="python3",
                                   progress_bar=False, cwd=str(path.parent))
    except PapermillExecutionError as exc:
        failed = executed.with_name(f"{path.stem}.failed.ipynb")
        partial.replace(failed)
        raise CourseError(f"{path.name} failed in cell {exc.cell_index} (execution count {exc.exec_count}): "
                          f"{exc.ename}: {exc.evalue}\n  executed notebook kept at {failed}", status=1) from exc
    partial.replace(executed)
    print(f"  {path.name}: ran in {time.perf_counter() - start:.1f} s -> {executed}")
    if html:
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter().from_filename(str(executed))
        atomic_write_text(out / "html" / f"{path.stem}.html", body)
    return results if results.exists() else None


def summarize(records: dict[str, dict]) -> str:
    lines = [f"{'notebook':<34}{'claims held':>12}  key metrics"]
    for name, record in records.items():
        claims = record.get("claims", [])
        held = f"{sum(c['holds'] for c in claims)}/{len(claims)}"
        metrics = record.get("metrics", {})
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in list(metrics.items())[:4] if not isinstance(v, (dict, list)))
        lines.append(f"{name:<34}{held:>12}  {shown}")
    return "\n".join(lines)


def cmd_run(args) -> int:
    notebooks = find_notebooks(args.notebooks)
    if not notebooks:
        raise CourseError(f"no notebooks found in {NOTEBOOK_DIR}")
    params = {name: parse_value(value) for name, value in (args.parameter or [])}
    for path in notebooks:  # validate everything before running anything
        validate_parameters(path, params)
    out = Path(args.out)
    # Stale per-notebook results must not be collected as if this run produced them.
    for path in notebooks:
        (out / "results" / f"{path.stem}.json").unlink(missing_ok=True)
    print(f"Running {len(notebooks)} notebook(s) -> {out}/")
    collected = {}
    # Kernels inherit our environment: a headless MPLBACKEND=Agg would drop every figure from the
    # executed notebooks and HTML, so kernels get the inline backend, which needs no display.
    saved = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        for path in notebooks:
            result = execute(path, params, out, html=not args.no_html)
            if result is not None:
                collected[path.stem] = json.loads(result.read_text())
    finally:
        if saved is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = saved
    atomic_write_text(out / "results.json", json.dumps(collected, indent=2))
    print(f"\nResults: {out / 'results.json'}\n" + summarize(collected))
    return 0


def mark_solution_cells(nb) -> int:
    """Give every cell holding ``### BEGIN SOLUTION`` nbgrader's solution metadata (schema 3).

    nbgrader only clears regions in cells marked as solution cells; marking them here keeps the
    committed notebooks clean while ``nbgrader generate_assignment`` and ``student`` both work.
    """
    marked = 0
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "### BEGIN SOLUTION" in cell.source:
            cell.metadata.setdefault("nbgrader", {}).update(
                {"solution": True, "grade": False, "locked": False, "schema_version": 3,
                 "grade_id": cell.metadata.get("nbgrader", {}).get("grade_id", f"exercise-cell-{index}")})
            marked += 1
    return marked


def cmd_student(args) -> int:
    import nbformat
    from nbgrader.preprocessors import ClearSolutions

    out = Path(args.out)
    for path in find_notebooks(args.notebooks):
        nb = nbformat.read(path, as_version=4)
        if not mark_solution_cells(nb):
            raise CourseError(f"{path.name} has no '### BEGIN SOLUTION' region to clear")
        nb, _ = ClearSolutions().preprocess(nb, {})
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        atomic_write_text(out / path.name, nbformat.writes(nb))
        print(f"  student version: {out / path.name}")
    return 0


def cmd_params(args) -> int:
    for path in find_notebooks(args.notebooks):
        print(path.name)
        for name, info in notebook_parameters(path).items():
            print(f"  {name} = {info['default']}  # {info.get('help', '')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fedlab_utils", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute notebooks with papermill, render HTML, collect results")
    run.add_argument("notebooks", nargs="*", help="paths, names or prefixes (e.g. 00); default: all")
    run.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="set a parameter (repeatable); VALUE is a Python literal or a string")
    run.add_argument("--out", default="build", help="output folder (default: build)")
    run.add_argument("--no-html", action="store_true", help="skip the HTML rendering")
    run.set_defaults(func=cmd_run)
    student = sub.add_parser("student", help="write nbgrader-style student versions without solutions")
    student.add_argument("notebooks", nargs="*")
    student.add_argument("--out", default="build/student")
    student.set_defaults(func=cmd_student)
    params = sub.add_parser("params", help="list each notebook's parameters and defaults")
    params.add_argument("notebooks", nargs="*")
    params.set_defaults(func=cmd_params)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CourseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status


if __name__ == "__main__":
    sys.exit(main())
