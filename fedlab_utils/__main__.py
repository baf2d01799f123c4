"""Course runner: ``python -m fedlab_utils run|sweep|student|params``.

``run`` executes notebooks with papermill, validating ``-p NAME VALUE`` against each
notebook's ``parameters`` cell, then renders HTML and merges every notebook's results JSON
into ``<out>/results.json`` (atomically: a run updates only its own notebooks' entries and
removes the entry of a notebook that failed) and prints a summary.  ``sweep`` runs a grid of
parameters (see :mod:`fedlab_utils.sweep`).  ``classroom`` builds an nbgrader course and
``student`` writes the student versions (nbgrader's release; see :mod:`fedlab_utils.classroom`).
``params`` lists a notebook's parameters.

Kernels started here get ``FEDLAB_PROGRESS=0`` (no progress-bar remnants in executed notebooks),
``FEDLAB_CHANGED_PARAMETERS`` (the parameters that differ from the notebook's defaults) and
``FEDLAB_CLAIMS`` (``--strict``), which :class:`fedlab_utils.results.Claims` reads to decide
whether a failing claim raises or is recorded.

Subcommands are registered in :data:`SUBCOMMANDS` (name -> function adding its parser); a new
one adds a ``add_NAME_parser(sub)`` function and one entry there.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .results import CHANGED_ENV, POLICY_ENV, atomic_write_text

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


def changed_parameters(path: Path, params: dict) -> list[str]:
    """Names in ``params`` whose value differs from the notebook's default (unparsable defaults count as changed)."""
    known = notebook_parameters(path)
    changed = []
    for name, value in params.items():
        default = known.get(name, {}).get("default")
        try:
            default_value = ast.literal_eval(default) if default is not None else object()
        except (ValueError, SyntaxError):
            default_value = object()
        same = default_value == value and isinstance(default_value, bool) == isinstance(value, bool)
        if not same:
            changed.append(name)
    return sorted(changed)


def check_out_dir(out: Path) -> Path:
    """``--out`` must be a folder (or not exist yet)."""
    if out.exists() and not out.is_dir():
        raise CourseError(f"--out {out} is a file, not a folder; give a folder for the executed notebooks and results")
    return out


@contextlib.contextmanager
def restored_environment(names) -> Iterator[None]:
    """Restore the environment variables ``names`` on exit, whatever the block set or removed."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def kernel_environment(changed: list[str], claims_policy: str) -> Iterator[None]:
    """Environment inherited by the kernels papermill starts, restored afterwards.

    A headless ``MPLBACKEND=Agg`` would drop every figure from the executed notebooks and HTML,
    so kernels get the inline backend, which needs no display.  Progress bars are off (they leave
    ``0%|`` remnants in saved notebooks), explorers draw their default view instead of building
    ipywidgets (see :mod:`fedlab_utils.widgets`), and ``Claims`` learns the changed parameters and
    policy.
    """
    settings = {"MPLBACKEND": "module://matplotlib_inline.backend_inline", "FEDLAB_PROGRESS": "0",
                "FEDLAB_WIDGETS": "0",  # no ipywidgets headless: nbclient can block on them (fedlab_utils.widgets)
                "TQDM_DISABLE": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
                CHANGED_ENV: ",".join(changed), POLICY_ENV: claims_policy}
    with restored_environment(settings):
        os.environ.update(settings)
        yield


#: Kernel start-up arguments: quiet the kernel's own log (its "running over TCP without encryption"
#: warning is noise for a local, single-user run); errors are still shown.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]


def execute(path: Path, params: dict, out: Path, html: bool, claims_policy: str = "auto") -> Path | None:
    """Run one notebook; returns the path of its results JSON (or None if it records none)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    known = notebook_parameters(path)
    results = out / "results" / f"{path.stem}.json"
    changed = changed_parameters(path, params)
    params = dict(params)
    if "results_path" in known and "results_path" not in params:
        params["results_path"] = str(results.resolve())
    executed = out / "notebooks" / path.name
    partial = executed.with_name(f".{path.stem}.partial.ipynb")
    partial.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        with kernel_environment(changed, claims_policy):
            papermill.execute_notebook(str(path), str(partial), parameters=params, kernel_name="python3",
                                       progress_bar=False, cwd=str(path.parent), extra_arguments=KERNEL_ARGUMENTS)
    except PapermillExecutionError as exc:
        failed = executed.with_name(f"{path.stem}.failed.ipynb")
        partial.replace(failed)
        executed.unlink(missing_ok=True)  # an older successful run's notebook and HTML are now stale
        (out / "html" / f"{path.stem}.html").unlink(missing_ok=True)
        raise CourseError(f"{path.name} failed in cell {exc.cell_index} (execution count {exc.exec_count}): "
                          f"{exc.ename}: {exc.evalue}\n  executed notebook kept at {failed}", status=1) from exc
    partial.replace(executed)
    executed.with_name(f"{path.stem}.failed.ipynb").unlink(missing_ok=True)
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
        lines += [f"{'':<34}{'✗':>12}  {c['claim']}" for c in claims if not c["holds"]]
    return "\n".join(lines)


def merge_results(path: Path, succeeded: dict[str, dict], failed: list[str]) -> dict[str, dict]:
    """Update ``path`` (results.json) with this run's notebooks only; drop the entries of failed ones.

    Entries of notebooks this run did not execute are kept as they were.  An unreadable old file is
    replaced rather than merged.  Written atomically.
    """
    merged: dict[str, dict] = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            merged = old if isinstance(old, dict) else {}
        except (OSError, ValueError):
            print(f"warning: {path} was not valid JSON; writing a fresh one", file=sys.stderr)
    for name in failed:
        merged.pop(name, None)
    merged.update(succeeded)
    merged = dict(sorted(merged.items()))
    atomic_write_text(path, json.dumps(merged, indent=2))
    return merged


def claims_policy_from_args(args) -> str:
    return "strict" if getattr(args, "strict", False) else getattr(args, "claims", None) or "auto"


def cmd_run(args) -> int:
    notebooks = find_notebooks(args.notebooks)
    if not notebooks:
        raise CourseError(f"no notebooks found in {NOTEBOOK_DIR}")
    params = {name: parse_value(value) for name, value in (args.parameter or [])}
    for path in notebooks:  # validate everything before running anything
        validate_parameters(path, params)
    out = check_out_dir(Path(args.out))
    policy = claims_policy_from_args(args)
    # Stale per-notebook results must not be collected as if this run produced them.
    for path in notebooks:
        (out / "results" / f"{path.stem}.json").unlink(missing_ok=True)
    print(f"Running {len(notebooks)} notebook(s) -> {out}/")
    collected: dict[str, dict] = {}
    failures: dict[str, CourseError] = {}
    for path in notebooks:
        try:
            result = execute(path, params, out, html=not args.no_html, claims_policy=policy)
        except CourseError as exc:
            failures[path.stem] = exc
            if not args.keep_going:
                break
            print(f"error: {exc}", file=sys.stderr)
            continue
        if result is not None:
            collected[path.stem] = json.loads(result.read_text())
    merged = merge_results(out / "results.json", collected, list(failures))
    print(f"\nResults: {out / 'results.json'} ({len(collected)} updated, {len(failures)} failed, "
          f"{len(merged)} in total)\n" + summarize(collected))
    if failures:
        last = list(failures.values())[-1]
        if len(failures) > 1:
            raise CourseError(f"{len(failures)} notebooks failed: {', '.join(failures)}; last: {last}", status=1)
        raise last
    return 0


def cmd_params(args) -> int:
    for path in find_notebooks(args.notebooks):
        print(path.name)
        for name, info in notebook_parameters(path).items():
            print(f"  {name} = {info['default']}  # {info.get('help', '')}")
    return 0


def add_run_parser(sub) -> None:
    run = sub.add_parser("run", help="execute notebooks with papermill, render HTML, collect results")
    run.add_argument("notebooks", nargs="*", help="paths, names or prefixes (e.g. 00); default: all")
    run.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="set a parameter (repeatable); VALUE is a Python literal or a string")
    run.add_argument("--out", default="build", help="output folder (default: build)")
    run.add_argument("--no-html", action="store_true", help="skip the HTML rendering")
    run.add_argument("--keep-going", action="store_true",
                     help="after a failed notebook, run the remaining ones (the exit status is still non-zero)")
    add_claims_arguments(run)
    run.set_defaults(func=cmd_run)


def add_claims_arguments(parser: argparse.ArgumentParser) -> None:
    """``--strict`` / ``--claims``: how a claim that does not hold is treated (fedlab_utils.results)."""
    parser.add_argument("--strict", action="store_true",
                        help="every claim that does not hold raises, whatever the parameters")
    parser.add_argument("--claims", choices=("auto", "strict", "record"), default="auto",
                        help="claim policy: auto (default: raise with default parameters, record with others), "
                             "strict (always raise), record (never raise; measure every claim)")


def add_student_parser(sub) -> None:
    from .classroom import add_student_parser as add

    add(sub)


def add_classroom_parser(sub) -> None:
    from .classroom import add_parser

    add_parser(sub)


def add_params_parser(sub) -> None:
    params = sub.add_parser("params", help="list each notebook's parameters and defaults")
    params.add_argument("notebooks", nargs="*")
    params.set_defaults(func=cmd_params)


def add_sweep_parser(sub) -> None:
    from .sweep import add_parser

    add_parser(sub)


def add_deploy_parser(sub) -> None:
    from .deploy import add_parser

    add_parser(sub)


#: name -> function that adds the subcommand's parser (with ``set_defaults(func=...)``), in help order.
SUBCOMMANDS: dict[str, Callable[[object], None]] = {
    "run": add_run_parser,
    "sweep": add_sweep_parser,
    "student": add_student_parser,
    "classroom": add_classroom_parser,
    "params": add_params_parser,
    "deploy": add_deploy_parser,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fedlab_utils", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CourseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status


if __name__ == "__main__":
    # Run the importable copy (fedlab_utils.__main__), so that modules importing from it, such as
    # fedlab_utils.sweep, share its classes (CourseError) with the code that catches them.
    from fedlab_utils.__main__ import main as _main

    sys.exit(_main())
