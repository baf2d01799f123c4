"""The first code cell of every notebook: install the course's package where it is missing.

A notebook copied out of the repository (posted on a learning platform, opened on a JupyterHub
or in Colab) stops at ``import fedlab_utils``.  Its first code cell, right after the title,
installs the package when it cannot be imported, saying so; inside the repository (or wherever
the package is installed) it does nothing.  It installs from one source: the
``FEDLAB_INSTALL_SOURCE`` environment variable when set, else the default written into the cell
(:func:`default_source`: ``[install] source`` in ``website/site.toml``, else the repository of
``[launch] repository_url`` as ``fedlab-utils @ git+URL@branch``, else none).  A source is anything
``pip install`` takes: a wheel's path or URL, the package's name on the index pip is configured
for, or a ``git+`` URL.  The package is not on PyPI, so with no source the cell stops with a
message saying how to give one, instead of a failing ``pip install``.

The extras a notebook needs (``fedlab-utils[deploy]`` for Flower, :data:`EXTRAS`) are read from
its imports and installed with the source in the same ``pip install``: pip takes the package
from the source and the extras' dependencies from the index.

This file holds the cell's text (:func:`cell_source`); run it to insert or update the cell, in
place and idempotently, as the first code cell (after the title cell) of the given notebooks.
In a Chinese notebook (``notebooks/zh/``) the cell's comments and message are translated from
the notebook's catalog, as ``python -m fedlab_utils translate build`` does; only that cell of
each file changes::

    python website/bootstrap_cell.py                      # notebooks/NN_*.ipynb and notebooks/zh/NN_*.ipynb
    python website/bootstrap_cell.py path/to/copy.ipynb   # just these
    python website/bootstrap_cell.py --check              # exit 1 if a notebook lacks the current cell
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat
import tomllib

WEBSITE = Path(__file__).resolve().parent
ROOT = WEBSITE.parent
CELL_ID = "fedlab-bootstrap"
SOURCE_ENV = "FEDLAB_INSTALL_SOURCE"
PACKAGE = "fedlab-utils"
# extra -> what a notebook's code imports when it needs that extra
EXTRAS = {"deploy": re.compile(r"^\s*(?:from|import)\s+(?:fedlab_utils\.deploy|flwr)\b", re.MULTILINE)}

TEMPLATE = '''\
# 课程软件包：在课程仓库之外（Colab、JupyterHub、单独复制的笔记本）运行时，先安装 fedlab_utils。
# The course's package: installed first when this notebook runs outside the course's repository.
import importlib, importlib.util, os, subprocess, sys
if importlib.util.find_spec("fedlab_utils") is None:
    source, extras = os.environ.get("{env}", "{default}"), [{extras}]
    if not source:
        raise RuntimeError("没有课程软件包的安装来源：请把环境变量 {env} 设为它的 wheel"
                           "（路径或 URL）、软件包索引上的包名或 git+ URL（向任课老师询问）。"
                           " No install source for the course's package: set {env} to its wheel "
                           "(path or URL), its name on your package index, or a git+ URL (ask your instructor).")
    print(f"安装课程软件包 Installing the course's package: pip install {{source}}", *extras)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", source, *extras], check=True)
    importlib.invalidate_caches()'''


def default_source(settings: dict | None = None) -> str:
    """The install source the cell falls back to ("" when none is set: the cell then asks for one).

    ``[install] source`` in ``website/site.toml`` when set; else, when ``[launch] repository_url``
    names the course's public repository, ``fedlab-utils @ git+<repository_url>@<branch>``.
    """
    if settings is None:
        settings = tomllib.loads((WEBSITE / "site.toml").read_text(encoding="utf-8"))
    source = settings.get("install", {}).get("source", "").strip()
    repository = settings.get("launch", {}).get("repository_url", "").strip().rstrip("/")
    if not source and repository:
        source = f"{PACKAGE} @ git+{repository}@{settings['launch'].get('branch') or 'main'}"
    if any(ch in source for ch in "\"\\\n"):
        raise ValueError(f"website/site.toml [install] source={source!r} is not valid: give a pip requirement, "
                         "URL or wheel path without quotes or backslashes")
    return source


def notebook_extras(nb: nbformat.NotebookNode) -> list[str]:
    """The package's extras that the notebook's code imports (``["deploy"]`` for Flower), sorted."""
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code" and c.get("id") != CELL_ID)
    return sorted(extra for extra, imports in EXTRAS.items() if imports.search(code))


def cell_source(default: str | None = None, extras: list[str] | tuple[str, ...] = ()) -> str:
    """The text of the bootstrap cell: one template, the notebook's extras filled in."""
    source = default_source() if default is None else default
    names = f'"{PACKAGE}[{",".join(extras)}]"' if extras else ""
    return TEMPLATE.format(env=SOURCE_ENV, default=source, extras=names)


def bootstrap_cell(default: str | None = None, extras: list[str] | tuple[str, ...] = ()) -> nbformat.NotebookNode:
    """The cell, locked for nbgrader like the lessons' other set-up cells."""
    cell = nbformat.v4.new_code_cell(cell_source(default, extras), id=CELL_ID)
    cell.metadata = {"tags": [CELL_ID], "nbgrader": {"grade": False, "grade_id": f"cell-{CELL_ID}", "locked": True,
                                                     "schema_version": 3, "solution": False, "task": False}}
    return cell


def english_twin(path: Path) -> Path | None:
    """The English notebook a Chinese one is built from (``notebooks/zh/NN.ipynb`` -> ``notebooks/NN.ipynb``)."""
    path = path.resolve()
    if path.parent.name == "zh" and path.parent.parent == (ROOT / "notebooks").resolve():
        return path.parent.parent / path.name
    return None


def expected_cell(path: Path, nb: nbformat.NotebookNode, default: str | None = None) -> nbformat.NotebookNode:
    """The current cell for the notebook at ``path``: its extras; in a zh notebook, translated by its catalog.

    A zh notebook takes its extras from its English twin and its comments and message from the
    twin's catalog (``msgctxt "code"`` entries), exactly as ``translate build`` would write it.
    """
    twin = english_twin(path)
    source_nb = nbformat.read(twin, as_version=4) if twin is not None and twin.is_file() else nb
    cell = bootstrap_cell(default, notebook_extras(source_nb))
    if twin is not None:
        from fedlab_utils.course.translation_catalogs import (
            catalog_path,
            code_translations,
            load_catalog,
            translate_code,
            translates_code,
        )

        catalog = catalog_path(twin)
        if catalog.is_file():
            po = load_catalog(catalog)
            if translates_code(po):
                cell.source = translate_code(cell.source, code_translations(po))
    return cell


def _title_index(nb: nbformat.NotebookNode) -> int:
    """Where the cell goes: right after the first markdown cell when the notebook opens with one."""
    cells = [c for c in nb.cells if c.get("id") != CELL_ID]
    return 1 if cells and cells[0].cell_type == "markdown" else 0


def with_cell(nb: nbformat.NotebookNode, cell: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``nb`` with exactly one bootstrap cell, ``cell``, right after its title cell; no other cell changes."""
    cells = [c for c in nb.cells if c.get("id") != CELL_ID]
    position = _title_index(nb)
    nb.cells = cells[:position] + [cell] + cells[position:]
    return nb


def with_bootstrap(nb: nbformat.NotebookNode, default: str | None = None) -> nbformat.NotebookNode:
    """``nb`` (not one of the zh edition's) with the current bootstrap cell for its imports."""
    return with_cell(nb, bootstrap_cell(default, notebook_extras(nb)))


def has_cell(nb: nbformat.NotebookNode, expected: nbformat.NotebookNode) -> bool:
    position = _title_index(nb)
    return (len(nb.cells) > position and nb.cells[position].get("id") == CELL_ID
            and nb.cells[position].source == expected.source and nb.cells[position].metadata == expected.metadata
            and sum(c.get("id") == CELL_ID for c in nb.cells) == 1)


def has_current_bootstrap(path: Path, default: str | None = None) -> bool:
    nb = nbformat.read(path, as_version=4)
    return has_cell(nb, expected_cell(path, nb, default))


def updated_text(path: Path, text: str, default: str | None = None) -> str:
    """The notebook ``text`` (of ``path``) with its bootstrap cell made current (``text`` itself when it is)."""
    nb = nbformat.reads(text, as_version=4)
    cell = expected_cell(path, nb, default)
    if has_cell(nb, cell):
        return text
    nb.nbformat_minor = max(nb.nbformat_minor, 5)  # the cell is found by its id: ids came with nbformat 4.5
    return nbformat.writes(with_cell(nb, cell)) + "\n"


def insert(path: Path, default: str | None = None) -> bool:
    """Insert or update the cell in ``path``; returns whether the file changed (idempotent)."""
    text = path.read_text(encoding="utf-8")
    new = updated_text(path, text, default)
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
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
            if not has_current_bootstrap(path, args.source):
                missing.append(path)
        elif insert(path, args.source):
            print(f"  bootstrap cell written: {path}")
    for path in missing:
        print(f"{path}: no current bootstrap cell (run python website/bootstrap_cell.py)", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
