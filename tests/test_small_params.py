"""Small parameters are run or refused up front, naming a parameter the user set.

Each notebook's parameters cell and the code cells up to its validation cell (the one that calls
``check_parameters``) are executed with overridden parameters, in one fresh Python process (the cells seed
RNGs and set torch's threads, which must not leak into other tests).  A combination is either
accepted there or refused with a ``ValueError`` whose message names a parameter that was set, as
``name=value``; a derived default (06's ``recipe_rounds``) follows the parameter it depends on.
The whole notebooks are run with ``-p rounds 2 -p num_clients 3`` by ``make small-params``.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SMALL = {"rounds": 2, "num_clients": 3}
ONE_ROUND = {"rounds": 1, "num_clients": 3}


def setup_cells(path: Path) -> tuple[str, list[str]]:
    """The parameters cell's source and the code cells after it up to the one that validates the
    parameters (its one ``check_parameters(`` call)."""
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    first = next(i for i, cell in enumerate(code) if "parameters" in cell.metadata.get("tags", []))
    last = next(i for i, cell in enumerate(code) if "check_parameters(" in cell.source)
    return code[first].source, [cell.source for cell in code[first + 1:last + 1]]


def execute_setup(path: Path, parameters: dict) -> dict:
    """Run ``path``'s parameters cell, then ``parameters``, then its setup cells; the outcome and final values."""
    source, cells = setup_cells(path)
    namespace: dict = {"__name__": "__main__"}
    exec(compile(source, f"{path.name}:parameters", "exec"), namespace)
    namespace.update(parameters)
    try:
        for index, cell in enumerate(cells):
            exec(compile(cell, f"{path.name}:setup{index}", "exec"), namespace)
    except Exception as exc:  # noqa: BLE001 -- the outcome under test is which exception, if any
        return {"error": type(exc).__name__, "message": str(exc)}
    values = {name: namespace.get(name) for name in ("rounds", "recipe_rounds", "prune_end")}
    return {"error": None, "values": {k: v for k, v in values.items() if isinstance(v, int)}}


@pytest.fixture(scope="module")
def outcomes() -> dict:
    """Every case below, executed in one child process: ``{"<notebook>|<json params>": outcome}``."""
    cases = [(path.name, params) for path in NOTEBOOKS for params in (SMALL, ONE_ROUND)]
    cases += [("06_capstone.ipynb", {**SMALL, "recipe_rounds": 14}), ("04_acceleration.ipynb", {"rounds": 5})]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "FEDLAB_WIDGETS": "0",
               "FEDLAB_PROGRESS": "0", "TMPDIR": tmp}
        proc = subprocess.run([sys.executable, __file__, json.dumps(cases)], cwd=ROOT / "notebooks", env=env,
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def key(name: str, params: dict) -> str:
    return f"{name}|{json.dumps(params, sort_keys=True)}"


def assert_run_or_refused_naming(outcome: dict, params: dict) -> None:
    """Accepted, or a ValueError naming one of ``params`` as ``name=value`` (never only a derived default)."""
    if outcome["error"] is None:
        return
    assert outcome["error"] == "ValueError", outcome
    named = [name for name in params if re.search(rf"(?<![\w.]){re.escape(name)}=", outcome["message"])]
    assert named, f"the refusal names none of the parameters set ({sorted(params)}): {outcome['message']}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem[:2])
@pytest.mark.parametrize("params", [SMALL, ONE_ROUND], ids=["rounds2", "rounds1"])
def test_small_parameters_run_or_are_refused_naming_them(outcomes: dict, path: Path, params: dict) -> None:
    assert_run_or_refused_naming(outcomes[key(path.name, params)], params)


def test_acceleration_needs_five_rounds(outcomes: dict) -> None:
    refused = outcomes[key("04_acceleration.ipynb", SMALL)]
    assert refused["error"] == "ValueError" and "rounds=2" in refused["message"] and "5" in refused["message"]
    assert outcomes[key("04_acceleration.ipynb", {"rounds": 5})]["error"] is None


def test_capstone_recipe_rounds_follows_rounds(outcomes: dict) -> None:
    small = outcomes[key("06_capstone.ipynb", SMALL)]
    assert small["error"] is None, small
    assert small["values"] == {"rounds": 2, "recipe_rounds": 1}  # 70 % of 2 rounds, at least 1
    set_by_user = outcomes[key("06_capstone.ipynb", {**SMALL, "recipe_rounds": 14})]
    assert set_by_user["error"] == "ValueError" and "recipe_rounds=14" in set_by_user["message"], set_by_user


def test_a_refusal_must_name_a_parameter_that_was_set() -> None:
    """The check itself fails on a message blaming only a derived default."""
    with pytest.raises(AssertionError):
        assert_run_or_refused_naming({"error": "ValueError",
                                      "message": "recipe_rounds=14 is out of range; valid: [1, 2]"}, SMALL)
    with pytest.raises(AssertionError):
        assert_run_or_refused_naming({"error": "IndexError", "message": "rounds=2"}, SMALL)
    assert_run_or_refused_naming({"error": "ValueError", "message": "rounds=2 is out of range; valid: [5, 500]"},
                                 SMALL)


if __name__ == "__main__":
    results = {}
    for name, params in json.loads(sys.argv[1]):
        results[key(name, params)] = execute_setup(ROOT / "notebooks" / name, params)
    print(json.dumps(results))
