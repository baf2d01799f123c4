"""Does every notebook run with small parameters, or refuse them at once naming the parameter set?

Runs each notebook (``notebooks/[0-9][0-9]_*.ipynb`` by default) one at a time with
``python -m fedlab_utils run NN -p rounds 2 -p num_clients 3`` (or the ``-p`` pairs given) and
sorts it into one of three outcomes:

- ``finished``: the run ended; its claims were recorded, not raised (``claim_policy.policy`` in its
  results is ``record``, because parameters other than seed/device changed).
- ``refused``: the run stopped in the notebook's setup cell (the one that validates ``rounds``)
  with a ``ValueError`` whose message names one of the parameters the user set (``rounds=...``).
- ``failed``: anything else -- an error in a later cell, an error of another type, a refusal that
  blames a parameter the user did not set (e.g. a derived default), a timeout, or a finished run
  whose claims were raised rather than recorded.

Prints a table, writes ``<out>/small_params.json`` and exits 1 if any notebook failed.  Slow (a
few minutes per notebook on a small CPU), so it is a separate target (``make small-params``),
not part of ``make test``.

    python benchmarks/small_params.py                         # every notebook, rounds 2, 3 clients
    python benchmarks/small_params.py 04 06 --out /tmp/small  # some notebooks
    python benchmarks/small_params.py -p rounds 1 -p num_clients 2
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
DEFAULT_PARAMETERS = [("rounds", "2"), ("num_clients", "3")]


def find_notebooks(selection: list[str]) -> list[Path]:
    """The English notebooks whose names start with one of ``selection`` (all of them when empty)."""
    every = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if not selection:
        return every
    chosen = [path for path in every if any(path.name.startswith(prefix) for prefix in selection)]
    unknown = [prefix for prefix in selection if not any(p.name.startswith(prefix) for p in every)]
    if unknown:
        raise SystemExit(f"no notebook matches {unknown}; valid: {[p.name[:2] for p in every]}")
    return chosen


def validation_cell(notebook: nbformat.NotebookNode) -> int | None:
    """Index of the cell that validates the parameters: the first code cell calling a check on ``rounds``."""
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and re.search(r"check_int\(\s*[\"']rounds[\"']", cell.source):
            return index
    return None


def first_error(notebook: nbformat.NotebookNode) -> tuple[int, str, str] | None:
    """``(cell index, exception name, message)`` of the first cell whose outputs hold an error."""
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.get("output_type") == "error":
                return index, output.get("ename", ""), output.get("evalue", "")
    return None


def names_a_set_parameter(message: str, names: list[str]) -> bool:
    """Whether ``message`` blames one of ``names`` as ``name=value`` (how the notebooks' checks word it)."""
    return any(re.search(rf"(?<![\w.]){re.escape(name)}=", message) for name in names)


def classify(path: Path, out: Path, returncode: int | None, names: list[str]) -> dict:
    """The outcome of one run from its exit status, its results JSON and, if it failed, its executed notebook."""
    if returncode is None:
        return {"outcome": "failed", "why": "timed out"}
    if returncode == 0:
        results = out / "results" / f"{path.stem}.json"
        if not results.is_file():
            return {"outcome": "finished", "why": "no results JSON (the notebook records none)"}
        record = json.loads(results.read_text())
        policy = record.get("claim_policy", {}).get("policy")
        claims = record.get("claims", [])
        held = sum(bool(c.get("holds")) for c in claims)
        if policy != "record":
            return {"outcome": "failed", "why": f"claims policy was {policy!r}, not 'record', with changed parameters"}
        return {"outcome": "finished", "why": f"{held}/{len(claims)} claims hold (recorded)"}
    failed = out / "notebooks" / f"{path.stem}.failed.ipynb"
    if not failed.is_file():
        return {"outcome": "failed", "why": f"exit status {returncode} and no executed notebook"}
    executed = nbformat.read(failed, as_version=4)
    error = first_error(executed)
    if error is None:
        return {"outcome": "failed", "why": f"exit status {returncode}, no error output in {failed}"}
    cell, ename, evalue = error
    setup = validation_cell(executed)
    why = f"cell {cell}: {ename}: {evalue}"
    if ename == "ValueError" and cell == setup and names_a_set_parameter(evalue, names):
        return {"outcome": "refused", "why": why}
    if cell != setup:
        why += f" (not the setup cell {setup})"
    return {"outcome": "failed", "why": why}


def run_one(path: Path, parameters: list[tuple[str, str]], out: Path, timeout: float) -> dict:
    """Run one notebook with ``parameters`` into ``out`` and classify the outcome; adds ``seconds``."""
    command = [sys.executable, "-m", "fedlab_utils", "run", path.name[:2], "--out", str(out), "--no-html"]
    for name, value in parameters:
        command += ["-p", name, value]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        returncode = proc.returncode
        log = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        returncode, log = None, f"{exc.stdout or ''}{exc.stderr or ''}"
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.log").write_text(log if isinstance(log, str) else log.decode(errors="replace"))
    result = classify(path, out, returncode, [name for name, _ in parameters])
    return {"notebook": path.stem, **result, "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="prefixes, e.g. 04 06 (default: every notebook)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                        help="a parameter to set (repeatable; default: -p rounds 2 -p num_clients 3)")
    parser.add_argument("--out", default="build/small-params", help="output folder (default: build/small-params)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one notebook may run (default: 900)")
    args = parser.parse_args(argv)
    parameters = [tuple(p) for p in args.parameter] if args.parameter else DEFAULT_PARAMETERS
    out = Path(args.out)
    rows = []
    for path in find_notebooks(args.notebooks):
        row = run_one(path, parameters, out / path.stem, args.timeout)
        rows.append(row)
        print(f"{row['notebook']:<26} {row['outcome']:<9} {row['seconds']:>7.1f} s  {row['why']}", flush=True)
    report = {"parameters": dict(parameters), "notebooks": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "small_params.json.tmp").write_text(json.dumps(report, indent=2))
    (out / "small_params.json.tmp").replace(out / "small_params.json")
    failed = [row["notebook"] for row in rows if row["outcome"] == "failed"]
    counts = {kind: sum(row["outcome"] == kind for row in rows) for kind in ("finished", "refused", "failed")}
    print(f"{counts['finished']} finished, {counts['refused']} refused naming a parameter set, "
          f"{counts['failed']} failed{': ' + ', '.join(failed) if failed else ''} -> {out / 'small_params.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
