"""Parameter sweeps: run one notebook over a grid of parameters, in parallel, resumable.

    python -m fedlab_utils sweep 02 -p bits 2,4,8 -p seed 0:3 --jobs 2 --out sweeps/bits

* ``-p NAME V1,V2,...`` lists values (Python literals, or plain strings); ``-p NAME a:b`` is the
  half-open integer range ``range(a, b)`` (``a:b:step`` too), as in Python.  The grid is the
  product of all ``-p`` options, in the order given.
* Unknown names and values that cannot be a valid value (a word where the default is a number,
  an empty item, a bad range) are refused before any kernel starts, naming them.
* Each point runs through the course runner (papermill) in its own process, ``--jobs`` at a
  time, with ``OMP_NUM_THREADS`` set so the points share the cores instead of oversubscribing
  them.  A failed point is recorded with its error and its executed notebook is kept
  (``DIR/points/<point>/notebooks/NN_*.failed.ipynb``); the sweep goes on.
* ``--lang zh`` sweeps the Chinese edition (``notebooks/zh/``) with ``FEDLAB_LANG=zh``, as ``run
  --lang zh`` does: the same code, the claims table and check messages in Chinese.
* Per point: ``DIR/points/<point>/point.json`` = ``{notebook, parameters, status ("ok" or
  "failed"), error, seconds, results}`` where ``results`` is the notebook's results record
  (``fedlab_utils.course.claims.record_results``).  It is written last and atomically, so a point with
  ``status: "ok"`` is complete; rerunning the same command skips those points (resume) unless
  the notebook file changed since (``notebook_sha256``).
* ``DIR/sweep.csv``: one row per point with the parameters, ``status``, ``seconds``,
  ``claims_held``/``claims_total``, ``error`` and every numeric or text metric flattened to
  ``metrics.a.b`` columns.
* ``DIR/rounds.csv``: every run's per-round curve in long form (``point``, the swept parameters,
  ``run``, ``round``, ``accuracy``, ``bytes_up``, ``bytes_down``, ``joules``, ``sim_time_s``).
* ``DIR/curves.png``: accuracy against round and against cumulative uplink MB for each run, one
  line per value of the swept parameters other than ``seed``, mean and 95 % Student-t band over seeds.
* ``DIR/sweep.png``: each numeric metric (``--metrics a,b,...`` picks them; by default every one
  except wall times) against the first swept parameter other than ``seed`` that took more than
  one value (``seed`` itself if only seeds vary), one line per combination of the other varied
  parameters, mean ± std over seeds when seeds are swept; plain tick numbers and a legend on every
  panel.  A parameter with one value is named in the title, never an axis or a panel; at most 12
  panels and 10 lines are drawn, and the title says what was left out.
  (Tables and figures: :mod:`fedlab_utils.course.sweep_results`.)

Claims follow the notebook's claim policy (:mod:`fedlab_utils.course.claims`): points that change
parameters other than the seed record failing claims instead of raising; ``--strict`` makes
every failing claim fail its point.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from fedlab_utils.course.claims import ROUND_FIELDS
from fedlab_utils.course.runner import (
    CourseError,
    add_claims_arguments,
    add_lang_argument,
    check_out_dir,
    claims_policy_from_args,
    find_notebooks,
    notebook_parameters,
    parse_value,
    validate_parameters,
)
from fedlab_utils.course.sweep_results import plot_curves, plot_sweep, point_slug, round_rows, sweep_rows, write_csv
from fedlab_utils.files import atomic_write_text

__all__ = ["parse_values", "parse_grid", "expand_grid", "Point", "run_points", "sweep",
           "write_outputs", "add_parser", "cmd_sweep"]

RANGE = re.compile(r"^\s*(-?\d+)\s*:\s*(-?\d+)\s*(?::\s*(-?\d+)\s*)?$")


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets or quotes (``[1, 2],3`` -> two items)."""
    items, depth, quote, current = [], 0, None, []
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    items.append("".join(current))
    return items


def parse_values(name: str, text: str) -> list:
    """The values of one ``-p NAME TEXT`` option (see the module docstring); raises ``ValueError``.

    Each item is read by the runner's one value parser, :func:`fedlab_utils.course.runner.parse_value`."""
    match = RANGE.match(text)
    if match:
        start, stop, step = int(match[1]), int(match[2]), int(match[3] or 1)
        if step == 0:
            raise ValueError(f"-p {name} {text}: a range step cannot be 0")
        values = list(range(start, stop, step))
        if not values:
            raise ValueError(f"-p {name} {text}: the half-open range {start}:{stop} is empty (like range({start}, {stop}))")
        return values
    items = _split_top_level(text)
    if any(not item.strip() for item in items):
        raise ValueError(f"-p {name} {text!r}: empty value in the list; write V1,V2,... or a:b")
    return [parse_value(item.strip()) for item in items]


def _kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def check_against_defaults(notebook: Path, grid: dict[str, list]) -> None:
    """Refuse unknown names, and values of the wrong kind where the default is a number or a bool."""
    import ast

    validate_parameters(notebook, dict.fromkeys(grid))
    known = notebook_parameters(notebook)
    for name, values in grid.items():
        try:
            default = ast.literal_eval(known[name]["default"])
        except (ValueError, SyntaxError):
            continue
        if _kind(default) not in ("bool", "number"):
            continue
        wrong = [v for v in values if _kind(v) != _kind(default)]
        if wrong:
            raise CourseError(f"-p {name}: value(s) {wrong} are not valid for {notebook.name}: "
                              f"expected a {_kind(default)} like the default {default!r}")


def parse_grid(notebook: Path, options: list[tuple[str, str]]) -> dict[str, list]:
    """``-p`` options to ``{name: [values]}``, validated against the notebook before anything runs."""
    grid: dict[str, list] = {}
    for name, text in options:
        if name in grid:
            raise CourseError(f"-p {name} is given twice; list all its values in one option (V1,V2,...)")
        try:
            grid[name] = parse_values(name, text)
        except ValueError as exc:
            raise CourseError(str(exc)) from None
    check_against_defaults(notebook, grid)
    return grid


def expand_grid(grid: dict[str, list]) -> list[dict]:
    """The product of the grid's values, first option varying slowest."""
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


@dataclass
class Point:
    """One notebook run of a sweep: where it lives and what it sets."""

    notebook: Path
    parameters: dict
    folder: Path
    record: dict = field(default_factory=dict)
    #: the edition (``en``, ``zh``): ``run --lang`` writes a translation's outputs under ``<folder>/<lang>/``
    lang: str = "en"

    @property
    def run_folder(self) -> Path:
        return self.folder if self.lang == "en" else self.folder / self.lang

    @property
    def record_path(self) -> Path:
        return self.folder / "point.json"

    def load_complete(self) -> dict | None:
        """The stored record if this point already completed with the same parameters, else None."""
        try:
            stored = json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return None
        same = (stored.get("parameters") == json.loads(json.dumps(self.parameters))
                and stored.get("lang", "en") == self.lang)
        fresh = stored.get("notebook_sha256") == notebook_digest(self.notebook)
        return stored if same and fresh and stored.get("status") == "ok" else None


def notebook_digest(path: Path) -> str:
    """SHA-256 of the notebook file: a point run on an older version of the notebook is not complete."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _worker_environment(jobs: int) -> dict:
    env = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _error_from(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("error:")]
    if errors:
        return "\n".join(lines[errors[-1]:])[:2000]
    return "\n".join(lines[-5:])[:2000] or "no error output"


def run_point(point: Point, claims_policy: str, jobs: int, timeout: float | None = None) -> dict:
    """Run one point through ``python -m fedlab_utils run`` in a fresh process; write and return its record."""
    command = [sys.executable, "-m", "fedlab_utils", "run", str(point.notebook), "--out", str(point.folder),
               "--no-html", "--claims", claims_policy, "--lang", point.lang]
    for name, value in point.parameters.items():
        command += ["-p", name, repr(value)]
    digest = notebook_digest(point.notebook)
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, env=_worker_environment(jobs),
                              timeout=timeout)
        status = "ok" if proc.returncode == 0 else "failed"
        error = None if status == "ok" else _error_from(proc.stderr)
    except subprocess.TimeoutExpired:
        status, error = "failed", f"timed out after {timeout} s"
    seconds = time.perf_counter() - start
    results = None
    if status == "ok":
        try:
            results = json.loads((point.run_folder / "results.json").read_text()).get(point.notebook.stem)
        except (OSError, ValueError):
            results = None
    record = {"notebook": point.notebook.stem, "lang": point.lang, "parameters": point.parameters, "status": status,
              "error": error,
              "seconds": round(seconds, 2), "notebook_sha256": digest, "results": results}
    atomic_write_text(point.record_path, json.dumps(record, indent=2, default=str))
    point.record = record
    return record


def run_points(points: list[Point], jobs: int = 1, claims_policy: str = "auto", timeout: float | None = None,
               progress: bool = True) -> list[dict]:
    """Run every incomplete point, ``jobs`` at a time; completed points are loaded, not rerun.

    Returns the records in the order of ``points``.  Failures are recorded, never raised.
    """
    from tqdm.auto import tqdm

    todo = []
    for point in points:
        stored = point.load_complete()
        if stored is not None:
            point.record = stored
        else:
            todo.append(point)
    skipped = len(points) - len(todo)
    if skipped:
        print(f"resuming: {skipped} of {len(points)} point(s) already complete, skipped")
    bar = tqdm(total=len(points), initial=skipped, desc="sweep", unit="point", file=sys.stderr,
               disable=not progress)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(run_point, p, claims_policy, jobs, timeout): p for p in todo}
        for future in as_completed(futures):
            point = futures[future]
            record = future.result()
            bar.update(1)
            label = f"{point.notebook.stem} {point_slug(point.parameters)}"
            if record["status"] != "ok":
                bar.write(f"  ✗ {label}: {record['error'].splitlines()[0]}")
            elif not progress:
                print(f"  ✓ {label} ({record['seconds']:.0f} s)", flush=True)
    bar.close()
    return [p.record for p in points]


def write_outputs(records: list[dict], names: list[str], out: Path, title: str = "",
                  metrics: list[str] | None = None) -> None:
    """``sweep.csv``, ``rounds.csv``, ``curves.png`` and ``sweep.png`` from the points' records.

    The tables and curves are written first, so a ``--metrics`` name that is not a metric of this
    sweep (``ValueError``) leaves them on disk."""
    rows = sweep_rows(records, names)
    write_csv(rows, out / "sweep.csv")
    curves = round_rows(records, names, point_slug)
    write_csv(curves, out / "rounds.csv", columns=["point", *names, "run", *ROUND_FIELDS])
    plot_curves(curves, names, out / "curves.png", title=title)
    plot_sweep(rows, names, out / "sweep.png", title=title, metrics=metrics)


def sweep(notebook: Path, grid: dict[str, list], out: Path, jobs: int = 1, claims_policy: str = "auto",
          timeout: float | None = None, progress: bool = True, metrics: list[str] | None = None,
          lang: str = "en") -> list[dict]:
    """Run the grid on one notebook (of the edition ``lang``); write the per-point records and
    :func:`write_outputs`'s files."""
    points = [Point(notebook, params, out / "points" / point_slug(params), lang=lang) for params in expand_grid(grid)]
    records = run_points(points, jobs=jobs, claims_policy=claims_policy, timeout=timeout, progress=progress)
    write_outputs(records, list(grid), out, title=notebook.stem, metrics=metrics)
    return records


def cmd_sweep(args) -> int:
    lang = getattr(args, "lang", None) or "en"
    notebooks = find_notebooks([args.notebook], lang)
    if not args.parameter:
        raise CourseError("give at least one -p NAME VALUES to sweep (e.g. -p seed 0:3)")
    if args.jobs < 1:
        raise CourseError(f"--jobs {args.jobs} is not valid; use 1 or more")
    grid = parse_grid(notebooks[0], [tuple(p) for p in args.parameter])
    out = check_out_dir(Path(args.out))
    size = len(expand_grid(grid))
    print(f"Sweeping {notebooks[0].name} over {size} point(s) ({' x '.join(f'{n}: {len(v)}' for n, v in grid.items())})"
          f", {args.jobs} at a time -> {out}/")
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    try:
        records = sweep(notebooks[0], grid, out, jobs=args.jobs, claims_policy=claims_policy_from_args(args),
                        timeout=args.timeout, progress=True, metrics=metrics, lang=lang)
    except ValueError as exc:  # --metrics naming no metric of this sweep; the points are complete and kept
        raise CourseError(f"{exc}\n  the points, sweep.csv, rounds.csv and curves.png are written; rerun with "
                          f"valid --metrics to redraw sweep.png (completed points are not run again)") from None
    failed = [r for r in records if r["status"] != "ok"]
    print(f"{len(records) - len(failed)}/{len(records)} point(s) ok -> {out / 'sweep.csv'}, {out / 'rounds.csv'}, "
          f"{out / 'curves.png'}, {out / 'sweep.png'}")
    for record in failed:
        print(f"  failed: {point_slug(record['parameters'])}: {(record['error'] or '').splitlines()[0]}")
    return 1 if failed else 0


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``sweep`` on the runner's subparsers (called by ``fedlab_utils.__main__``)."""
    parser = sub.add_parser("sweep", help="run one notebook over a grid of parameters (parallel, resumable)")
    parser.add_argument("notebook", help="path, name or prefix (e.g. 02)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUES"),
                        help="values to sweep: V1,V2,... (Python literals) or an integer range a:b (half-open)")
    parser.add_argument("--jobs", type=int, default=1, help="points run at the same time (default 1)")
    parser.add_argument("--out", required=True, help="output folder (points/, sweep.csv, sweep.png)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds before a point is stopped (default: none)")
    parser.add_argument("--metrics", default=None, metavar="A,B,...",
                        help="metrics drawn in sweep.png, as in sweep.csv without 'metrics.' "
                             "(default: every numeric metric except wall times)")
    add_claims_arguments(parser)
    add_lang_argument(parser, "zh sweeps notebooks/zh/ with FEDLAB_LANG=zh (claims table and messages in Chinese)")
    parser.set_defaults(func=cmd_sweep)
    return parser
