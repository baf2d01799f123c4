"""The first code cell of every notebook: install the course's package where it is missing.

A notebook copied out of the repository (posted on a learning platform, opened on a JupyterHub
or in Colab) stops at ``import fedlab_utils``.  Its first code cell, right after the title,
installs the package from one source when it cannot be imported, saying so; inside the repository
(or wherever the package is installed) it does nothing.  The source is the ``FEDLAB_INSTALL_SOURCE``
environment variable when set, else the default in ``website/site.toml`` (``[install] source``):
anything ``pip install`` takes, i.e. a package name on the configured index, a URL or a wheel path.

This file holds the cell's text (:func:`cell_source`); run it to insert or update the cell, in
place and idempotently, as the first code cell (after the title cell) of the given notebooks::

    python website/bootstrap_cell.py                      # notebooks/NN_*.ipynb and notebooks/zh/NN_*.ipynb
    python website/bootstrap_cell.py path/to/copy.ipynb   # just these
    python website/bootstrap_cell.py --check              # exit 1 if a notebook lacks the current cell
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
import tomllib

WEBSITE = Path(__file__).resolve().parent
ROOT = WEBSITE.parent
CELL_ID = "fedlab-bootstrap"
SOURCE_ENV = "FEDLAB_INSTALL_SOURCE"

TEMPLATE = '''\
# 课程软件包：在课程仓库之外（Colab、JupyterHub、单独复制的笔记本）运行时，先安装 fedlab_utils。
# The course's package: installed first when this notebook runs outside the course's repository.
import importlib, importlib.util, os, subprocess, sys
if importlib.util.find_spec("fedlab_utils") is None:
    source = os.environ.get("{env}", "{default}")
    print(f"安装课程软件包 Installing the course's package: pip install {{source}}")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", source], check=True)
    importlib.invalidate_caches()'''


def default_source() -> str:
    """The install source the cell falls back to: ``[install] source`` in ``website/site.toml``."""
    settings = tomllib.loads((WEBSITE / "site.toml").read_text(encoding="utf-8"))
    source = settings.get("install", {}).get("source", "").strip()
    if not source or any(ch in source for ch in "\"\\\n"):
        raise ValueError(f"website/site.toml [install] source={source!r} is not valid: give a pip requirement, "
                         "URL or wheel path without quotes or backslashes")
    return source


def cell_source(default: str | None = None) -> str:
    """The text of the bootstrap cell (the same in every notebook and in both editions)."""
    return TEMPLATE.format(env=SOURCE_ENV, default=default or default_source())


def bootstrap_cell(default: str | None = None) -> nbformat.NotebookNode:
    """The cell, locked for nbgrader like the lessons' other set-up cells."""
    cell = nbformat.v4.new_code_cell(cell_source(default), id=CELL_ID)
    cell.metadata = {"tags": [CELL_ID], "nbgrader": {"grade": False, "grade_id": f"cell-{CELL_ID}", "locked": True,
                                                     "schema_version": 3, "solution": False, "task": False}}
    return cell


def _title_index(nb: nbformat.NotebookNode) -> int:
    """Where the cell goes: right after the first markdown cell when the notebook opens with one."""
    cells = [c for c in nb.cells if c.get("id") != CELL_ID]
    return 1 if cells and cells[0].cell_type == "markdown" else 0


def with_bootstrap(nb: nbformat.NotebookNode, default: str | None = None) -> nbformat.NotebookNode:
    """``nb`` with exactly one bootstrap cell, the current one, right after its title cell."""
    cells = [c for c in nb.cells if c.get("id") != CELL_ID]
    position = _title_index(nb)
    nb.cells = cells[:position] + [bootstrap_cell(default)] + cells[position:]
    return nb


def has_current_bootstrap(nb: nbformat.NotebookNode, default: str | None = None) -> bool:
    expected = bootstrap_cell(default)
    position = _title_index(nb)
    return (len(nb.cells) > position and nb.cells[position].get("id") == CELL_ID
            and nb.cells[position].source == expected.source and sum(c.get("id") == CELL_ID for c in nb.cells) == 1)


def insert(path: Path, default: str | None = None) -> bool:
    """Insert or update the cell in ``path``; returns whether the file changed (idempotent)."""
    nb = nbformat.read(path, as_version=4)
    if has_current_bootstrap(nb, default) and nb.cells[_title_index(nb)].metadata == bootstrap_cell(default).metadata:
        return False
    nb.nbformat_minor = max(nb.nbformat_minor, 5)  # the cell is found by its id: ids came with nbformat 4.5
    nbformat.write(with_bootstrap(nb, default), path)
    return True


def course_notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")) + \
        sorted((ROOT / "notebooks" / "zh").glob("[0-9][0-9]_*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Insert or update the bootstrap cell of the course's notebooks.")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/NN_*.ipynb and notebooks/zh/")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook lacks the cell")
    parser.add_argument("--source", default=None, help="the default install source to write into the cell "
                                                        "(default: [install] source in website/site.toml)")
    args = parser.parse_args(argv)
    paths = args.notebooks or course_notebooks()
    missing = []
    for path in paths:
        if args.check:
            if not has_current_bootstrap(nbformat.read(path, as_version=4), args.source):
                missing.append(path)
        elif insert(path, args.source):
            print(f"  bootstrap cell written: {path}")
    for path in missing:
        print(f"{path}: no current bootstrap cell (run python website/bootstrap_cell.py)", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
