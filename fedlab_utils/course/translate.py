"""The Chinese edition, built from one source: ``python -m fedlab_utils translate extract|build|check``.

The English notebooks in ``notebooks/`` hold every code cell, once.  The translation of each
notebook's markdown lives in a standard gettext catalog,
``notebooks/locale/zh_CN/LC_MESSAGES/<NN_slug>.po``, read and written with polib: one entry per
markdown cell, ``msgctxt`` the cell id and ``msgid`` the English source.

- ``extract`` updates the catalogs from the notebooks, as ``msgmerge`` would: a new cell becomes
  an untranslated entry, a changed cell keeps its old translation marked ``fuzzy`` with the
  previous msgid (``#| msgid``), a removed cell becomes obsolete (``#~``).
- ``build`` writes ``notebooks/zh/<NN_slug>.ipynb``: the English notebook with only its markdown
  replaced (code cells and all cell metadata are copied unchanged) and a last cell listing the
  glossary rows the notebook uses.  It also regenerates the glossary tables of ``README.md`` and
  ``README.zh-CN.md`` (the block between the ``glossary:begin``/``glossary:end`` comments) from
  ``notebooks/locale/glossary.tsv``.
- ``check`` fails, naming the notebook and the cell id, when a markdown cell has no current
  translation (missing, empty, fuzzy, or its English changed since ``extract``), when a
  translation loses a protected token of its English cell (every ``$…$``/``$$…$$`` span,
  code span or fenced block, link target, image reference and number), when ``notebooks/zh/``
  or a README glossary differs from what ``build`` writes, when the glossary coverage of a
  notebook is below 90 % or when less than 40 % of a zh notebook's markdown is CJK.

Which notebooks are checked: every English notebook; one without a catalog fails (every lesson
has a zh edition).  ``--allow-untranslated`` lists such notebooks instead of failing, for the
time between adding a notebook and translating it.  A zh notebook or a catalog without its
English notebook always fails.

Terminology coverage: a glossary row (``glossary.tsv``: ``zh``, ``en``, ``where``, ``en_match``
— a regular expression, matched case-insensitively on word boundaries in the English prose with
code and maths removed — and ``zh_match`` — ``|``-separated Chinese renderings) counts once per
markdown cell whose English prose matches it; it is covered when the translation contains one of
its Chinese renderings.  Names of algorithms (FedAvg, FedSGD, …) are not glossary terms: they
stay as they are in both languages.

The code: :mod:`fedlab_utils.course.translation_catalogs` (paths, catalogs, ``extract``, runtime
messages), :mod:`fedlab_utils.course.glossary` (protected tokens, the glossary and its tables), and
this module (``build``, ``check`` and the command line), which re-exports the names of both.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import polib

from fedlab_utils.course.classroom import find_notebooks
from fedlab_utils.course.glossary import (
    README_PATHS,
    Term,
    glossary_cell_source,
    load_glossary,
    lost_tokens,
    term_text,
    terms_used,
    with_readme_block,
)
from fedlab_utils.course.runner import CourseError
from fedlab_utils.course.translation_catalogs import (
    LANGUAGE,
    LOCALE_DIR,
    NOTEBOOK_DIR,
    ROOT,
    RUNTIME_CATALOG,
    catalog_path,
    check_runtime,
    current_translation,
    english_notebooks,
    extract,
    extract_runtime,
    load_catalog,
    markdown_cells,
    zh_path,
)
from fedlab_utils.files import atomic_write_text

MIN_COVERAGE = 0.90
MIN_CJK_RATIO = 0.40
GLOSSARY_CELL_ID = "zh-glossary"

__all__ = ["MIN_COVERAGE", "MIN_CJK_RATIO", "GLOSSARY_CELL_ID", "SIBLING_NOTEBOOK", "LINK_TARGET",
           "relocate_links", "build_notebook", "build", "build_readmes", "CJK", "cjk_ratio",
           "Coverage", "coverage", "NotebookCheck", "check_notebook", "check", "parser", "main"]


# --------------------------------------------------------------------------------------------
# Build

SIBLING_NOTEBOOK = re.compile(r"^\d\d_[^/]*\.ipynb(?:#.*)?$")
LINK_TARGET = re.compile(r"(!?\[[^\]]*\]\(\s*<?)([^)\s>]+)")


def relocate_links(markdown: str) -> str:
    """Relative link and image targets as seen from ``notebooks/zh/``: a sibling notebook
    (``01_pruning.ipynb``) stays, since ``zh/`` holds the same file names; any other relative
    path (``../README.md``, ``figures/x.png``) gets one more ``../``.  Absolute URLs and ``#anchors``
    stay.  (The catalog keeps the English targets, so ``check`` compares like with like.)"""
    def fix(match: re.Match) -> str:
        target = match.group(2)
        if re.match(r"^(?:[a-z][a-z0-9+.-]*:|#|/)", target, re.I) or SIBLING_NOTEBOOK.match(target):
            return match.group(0)
        return match.group(1) + "../" + target
    return LINK_TARGET.sub(fix, markdown)


def build_notebook(notebook: Path, po: polib.POFile, terms: list[Term]) -> str:
    """The zh notebook's file text: ``notebook`` with each markdown cell's current translation
    (the English where there is none, which ``check`` reports) and a last glossary cell.  Code
    cells, every cell's metadata and the notebook's metadata are copied unchanged."""
    nb = nbformat.read(notebook, as_version=4)
    by_context = {entry.msgctxt: entry for entry in po if not entry.obsolete}
    cells = markdown_cells(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            translation = current_translation(by_context.get(cell.id), cell.source)
            cell.source = relocate_links(translation if translation is not None else cell.source)
    # The glossary cell is locked like the lesson's other markdown when nbgrader metadata is used.
    # (never copied from a neighbour: that could be a manually graded answer cell).
    uses_nbgrader = any("nbgrader" in c.metadata for c in nb.cells)
    metadata = {"nbgrader": {"grade": False, "grade_id": f"cell-{GLOSSARY_CELL_ID}", "locked": True,
                             "schema_version": 3, "solution": False, "task": False}} if uses_nbgrader else {}
    glossary = nbformat.v4.new_markdown_cell(glossary_cell_source(terms_used(cells, terms)),
                                             id=GLOSSARY_CELL_ID, metadata=metadata)
    nb.cells.append(glossary)
    return nbformat.writes(nb) + "\n"


def build(notebook: Path, locale_dir: Path = LOCALE_DIR, terms: list[Term] | None = None) -> Path:
    """Write ``notebooks/zh/<name>.ipynb`` from the English notebook and its catalog."""
    terms = load_glossary() if terms is None else terms
    out = zh_path(notebook)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, build_notebook(notebook, load_catalog(catalog_path(notebook, locale_dir)), terms))
    return out


def build_readmes(terms: list[Term], paths: Iterable[Path] = README_PATHS) -> list[Path]:
    written = []
    for path in paths:
        if path.exists():
            text = path.read_text(encoding="utf-8")
            new = with_readme_block(text, terms, path)
            if new != text:
                atomic_write_text(path, new)
                written.append(path)
    return written


# --------------------------------------------------------------------------------------------
# Check

CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")


def cjk_ratio(markdown: str) -> float:
    """CJK characters (ideographs and full-width punctuation) / non-whitespace characters."""
    chars = re.sub(r"\s", "", markdown)
    return len(CJK.findall(chars)) / len(chars) if chars else 0.0


@dataclass
class Coverage:
    used: int = 0
    rendered: int = 0
    missing: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.rendered / self.used if self.used else 1.0


def coverage(cells: list[tuple[str, str]], translations: dict[str, str], terms: list[Term]) -> Coverage:
    """Glossary coverage of a notebook: one count per (term, cell) whose English prose uses it."""
    result = Coverage()
    for cell_id, source in cells:
        if cell_id not in translations:
            continue
        text = term_text(source)
        for term in terms:
            if term.used_in(text):
                result.used += 1
                if term.rendered_in(translations[cell_id]):
                    result.rendered += 1
                else:
                    result.missing.append(f"{cell_id}: {term.en} -> {term.zh}")
    return result


@dataclass
class NotebookCheck:
    name: str
    problems: list[str] = field(default_factory=list)
    coverage: Coverage | None = None
    cjk: float | None = None


def check_notebook(notebook: Path, terms: list[Term], locale_dir: Path = LOCALE_DIR) -> NotebookCheck:
    """Every problem of one notebook's translation (see the module docstring)."""
    result = NotebookCheck(notebook.stem)
    po = load_catalog(catalog_path(notebook, locale_dir))
    by_context = {entry.msgctxt: entry for entry in po if not entry.obsolete}
    cells = markdown_cells(nbformat.read(notebook, as_version=4))
    translations = {}
    for cell_id, source in cells:
        entry = by_context.get(cell_id)
        where = f"{notebook.stem}: cell {cell_id}"
        if entry is None:
            result.problems.append(f"{where}: no catalog entry (run `translate extract`)")
        elif entry.msgid != source:
            result.problems.append(f"{where}: the English changed since the catalog was extracted "
                                   "(run `translate extract`, then update the fuzzy translation)")
        elif "fuzzy" in entry.flags:
            result.problems.append(f"{where}: translation is fuzzy (the English changed; update it, drop the flag)")
        elif not entry.msgstr.strip():
            result.problems.append(f"{where}: not translated (empty msgstr)")
        else:
            translations[cell_id] = entry.msgstr
            lost = lost_tokens(source, entry.msgstr)
            if lost:
                shown = "; ".join(f"{kind} {text!r}" for kind, text in lost)
                result.problems.append(f"{where}: the translation loses protected tokens: {shown}")
    result.coverage = coverage(cells, translations, terms)
    if result.coverage.ratio < MIN_COVERAGE:
        result.problems.append(
            f"{notebook.stem}: glossary coverage {100 * result.coverage.ratio:.1f} % < {100 * MIN_COVERAGE:.0f} % "
            f"({result.coverage.rendered}/{result.coverage.used}); missing: " + "; ".join(result.coverage.missing))
    expected = build_notebook(notebook, po, terms)
    target = zh_path(notebook)
    if not target.exists():
        result.problems.append(f"{notebook.stem}: zh/{target.name} is missing (run `translate build`)")
    else:
        actual = target.read_text(encoding="utf-8")
        if actual != expected:
            result.problems.append(f"{notebook.stem}: notebooks/zh/{target.name} differs from what `translate build` "
                                   f"writes{_differing_cells(actual, expected)} (run `translate build`)")
    zh_markdown = "\n".join(c.source for c in nbformat.reads(expected, as_version=4).cells if c.cell_type == "markdown")
    result.cjk = cjk_ratio(zh_markdown)
    if result.cjk < MIN_CJK_RATIO:
        result.problems.append(f"{notebook.stem}: only {100 * result.cjk:.1f} % of the zh markdown is CJK "
                               f"(at least {100 * MIN_CJK_RATIO:.0f} % needed)")
    return result


def _differing_cells(actual: str, expected: str) -> str:
    try:
        a = nbformat.reads(actual, as_version=4).cells
    except Exception:  # noqa: BLE001 - an unreadable file is reported as a whole
        return " (not a readable notebook)"
    e = nbformat.reads(expected, as_version=4).cells
    ids_a = {c.get("id"): c for c in a}
    differ = [c.get("id") for c in e if c.get("id") not in ids_a or dict(ids_a[c.get("id")]) != dict(c)]
    extra = [cid for cid in ids_a if cid not in {c.get("id") for c in e}]
    parts = ([f"cells {differ}"] if differ else []) + ([f"extra cells {extra}"] if extra else [])
    return f" ({'; '.join(parts)})" if parts else " (formatting)"


def check(notebooks: list[Path] | None = None, require_all: bool = True, locale_dir: Path = LOCALE_DIR,
          readmes: Iterable[Path] = README_PATHS) -> tuple[list[NotebookCheck], list[str]]:
    """Check ``notebooks`` (default: all); without ``require_all`` a notebook with no catalog is
    skipped instead of failing.  Returns the per-notebook results and the problems outside any one
    notebook."""
    terms = load_glossary(locale_dir / "glossary.tsv")
    everything = english_notebooks()
    selected = everything if notebooks is None else notebooks
    problems: list[str] = []
    results = []
    for notebook in selected:
        if catalog_path(notebook, locale_dir).exists():
            results.append(check_notebook(notebook, terms, locale_dir))
        elif require_all:
            problems.append(f"{notebook.stem}: no catalog {catalog_path(notebook, locale_dir).name} "
                            "(run `translate extract`, translate, `translate build`)")
    if notebooks is None:
        stems = {p.stem for p in everything}
        for po_file in sorted((locale_dir / LANGUAGE / "LC_MESSAGES").glob("*.po")):
            if po_file.stem not in stems:
                problems.append(f"{po_file.name}: a catalog with no English notebook")
        for zh_file in sorted((NOTEBOOK_DIR / "zh").glob("*.ipynb")):
            if zh_file.stem not in stems:
                problems.append(f"zh/{zh_file.name}: a zh notebook with no English notebook")
            elif not catalog_path(NOTEBOOK_DIR / zh_file.name, locale_dir).exists():
                problems.append(f"zh/{zh_file.name}: a zh notebook with no catalog")
        for path in readmes:
            if path.exists():
                text = path.read_text(encoding="utf-8")
                try:
                    if with_readme_block(text, terms, path) != text:
                        problems.append(f"{path.name}: the glossary table differs from glossary.tsv (run `translate build`)")
                except ValueError as error:
                    problems.append(str(error))
    return results, problems


# --------------------------------------------------------------------------------------------
# CLI

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fedlab_utils translate",
                                description="The Chinese edition: gettext catalogs per notebook -> notebooks/zh/.")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("extract", help="create/update notebooks/locale/zh_CN/LC_MESSAGES/<NN_slug>.po")
    e.add_argument("notebooks", nargs="*", help="notebooks (e.g. 00 03); default: those that have a catalog "
                                                "(name a notebook to create its catalog), and the runtime "
                                                "messages' catalog fedlab_utils/locale/zh_CN/LC_MESSAGES/fedlab_utils.po")
    b = sub.add_parser("build", help="write notebooks/zh/<NN_slug>.ipynb and the README glossary tables")
    b.add_argument("notebooks", nargs="*", help="notebooks; default: those that have a catalog")
    c = sub.add_parser("check", help="fail on missing/fuzzy/stale translations, lost tokens, stale zh notebooks")
    c.add_argument("notebooks", nargs="*", help="notebooks; default: every notebook")
    c.add_argument("--allow-untranslated", action="store_false", dest="require_all",
                   help="list notebooks without a catalog instead of failing")
    c.add_argument("--json", type=Path, default=None, help="also write the per-notebook figures to this file")
    return p


def _selected(names: list[str]) -> list[Path]:
    if names:
        return find_notebooks(names)
    return [nb for nb in english_notebooks() if catalog_path(nb).exists()]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "extract":
            for notebook in _selected(args.notebooks):
                report = extract(notebook)
                print(f"{notebook.stem}: {len(report.new)} new, {len(report.fuzzy)} fuzzy, "
                      f"{len(report.obsolete)} obsolete"
                      + "".join(f"\n  {kind}: {ids}" for kind, ids in
                                (("new", report.new), ("fuzzy", report.fuzzy), ("obsolete", report.obsolete)) if ids))
            if not args.notebooks:
                report = extract_runtime()
                print(f"{RUNTIME_CATALOG.name}: {len(report.new)} new, {len(report.obsolete)} obsolete runtime messages")
            return 0
        if args.command == "build":
            terms = load_glossary()
            for notebook in _selected(args.notebooks):
                print(f"wrote {build(notebook, terms=terms).relative_to(ROOT)}")
            for path in build_readmes(terms):
                print(f"updated the glossary table of {path.name}")
            return 0
        results, problems = check(find_notebooks(args.notebooks) if args.notebooks else None,
                                  require_all=args.require_all)
        if not args.notebooks:
            problems.extend(check_runtime())
    except (ValueError, OSError, CourseError) as error:
        print(f"translate: {error}", file=sys.stderr)
        return 2
    for result in results:
        cov = result.coverage
        print(f"{result.name}: {'ok' if not result.problems else 'FAILED'}; glossary coverage "
              f"{100 * cov.ratio:.1f} % ({cov.rendered}/{cov.used}); CJK {100 * (result.cjk or 0):.1f} % of the markdown")
        problems.extend(result.problems)
    untranslated = [nb.stem for nb in english_notebooks() if not catalog_path(nb).exists()]
    if untranslated and not args.notebooks:
        print(f"not translated yet (no catalog): {', '.join(untranslated)}")
    if args.json is not None:
        atomic_write_text(args.json, json.dumps({r.name: {"ok": not r.problems, "coverage": r.coverage.ratio,
                                                          "cjk_ratio": r.cjk} for r in results}, indent=2))
    for problem in problems:
        print(f"✗ {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
