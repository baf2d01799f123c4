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
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import polib

from .results import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
LOCALE_DIR = NOTEBOOK_DIR / "locale"
LANGUAGE = "zh_CN"
GLOSSARY_PATH = LOCALE_DIR / "glossary.tsv"
README_PATHS = (ROOT / "README.md", ROOT / "README.zh-CN.md")
MIN_COVERAGE = 0.90
MIN_CJK_RATIO = 0.40
GLOSSARY_CELL_ID = "zh-glossary"
GLOSSARY_BEGIN = "<!-- glossary:begin (generated from notebooks/locale/glossary.tsv by `python -m fedlab_utils translate build`; edit the TSV, not this table) -->"
GLOSSARY_END = "<!-- glossary:end -->"
GLOSSARY_FIELDS = ("zh", "en", "where", "en_match", "zh_match")


# --------------------------------------------------------------------------------------------
# Paths

def english_notebooks(root: Path = NOTEBOOK_DIR) -> list[Path]:
    """The English notebooks, in course order."""
    return sorted(root.glob("[0-9][0-9]_*.ipynb"))


def catalog_path(notebook: Path, locale_dir: Path = LOCALE_DIR) -> Path:
    """``locale/zh_CN/LC_MESSAGES/<NN_slug>.po`` for an English notebook."""
    return locale_dir / LANGUAGE / "LC_MESSAGES" / f"{notebook.stem}.po"


def zh_path(notebook: Path) -> Path:
    """``notebooks/zh/<NN_slug>.ipynb`` for an English notebook (same file name, so links between
    notebooks by file name keep working inside ``zh/``)."""
    return notebook.parent / "zh" / notebook.name


def resolve_notebooks(names: Iterable[str], root: Path = NOTEBOOK_DIR) -> list[Path]:
    """Notebook names (``00``, ``00_federated_baseline``, a file name or a path) to paths."""
    available = english_notebooks(root)
    found = []
    for name in names:
        path = Path(name)
        if path.suffix == ".ipynb" and path.exists():
            found.append(path.resolve())
            continue
        matches = [p for p in available if name in (p.name, p.stem) or p.name.startswith(f"{name}_")]
        if len(matches) != 1:
            raise ValueError(f"notebook {name!r} not found; valid: {[p.stem for p in available]}")
        found.append(matches[0])
    return found


# --------------------------------------------------------------------------------------------
# Protected tokens

NBGRADER_MARKER = re.compile(r"^[ \t]*###? (?:BEGIN|END) (?:SOLUTION|HIDDEN TESTS)[ \t]*$", re.M)
FENCE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n.*?^[ \t]*\1[ \t]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)", re.S)
DISPLAY_MATH = re.compile(r"\$\$.+?\$\$", re.S)
INLINE_MATH = re.compile(r"(?<![\\$])\$(?![\s$])[^$\n]*?[^\s\\$]\$(?!\d)|(?<![\\$])\$[^\s$\\]\$(?!\d)")
IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)[^)]*\)")
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)[^)]*\)")
HTML_SRC = re.compile(r"""<img\b[^>]*?\bsrc\s*=\s*["']([^"']+)["'][^>]*>""", re.I)
HTML_HREF = re.compile(r"""<a\b[^>]*?\bhref\s*=\s*["']([^"']+)["'][^>]*>""", re.I)
AUTOLINK = re.compile(r"<((?:https?|mailto|ftp):[^>\s]+)>")
URL = re.compile(r"https?://[^\s)<>\]]+")
NUMBER = re.compile(r"(?<![A-Za-z0-9_.])\d+(?:[.,]\d+)*")


def _take(pattern: re.Pattern, text: str, kind: str, tokens: set, group: int = 0) -> str:
    """Record every match of ``pattern`` as a ``(kind, text)`` token and blank it out of ``text``."""
    def keep(match: re.Match) -> str:
        tokens.add((kind, match.group(group).strip() if group == 0 and kind in ("code block", "nbgrader marker")
                    else match.group(group)))
        return " "
    return pattern.sub(keep, text)


def split_protected(markdown: str) -> tuple[set[tuple[str, str]], str]:
    """The protected tokens of a markdown cell and its prose with them blanked out.

    Tokens are ``(kind, text)`` pairs: ``nbgrader marker`` (``### BEGIN SOLUTION`` … in a manually
    graded answer cell), ``code block``, ``code``, ``math``, ``image``, ``link``, ``url`` and ``number``.  Code comes out first (a ``$`` in code is not maths), then maths, image
    references, link targets and URLs; numbers are read from what is left (so the digits of a
    formula or a URL count once, as part of it)."""
    tokens: set[tuple[str, str]] = set()
    text = _take(NBGRADER_MARKER, markdown, "nbgrader marker", tokens)
    text = _take(FENCE, text, "code block", tokens)
    text = _take(CODE_SPAN, text, "code", tokens)
    text = _take(DISPLAY_MATH, text, "math", tokens)
    text = _take(INLINE_MATH, text, "math", tokens)
    text = _take(IMAGE, text, "image", tokens, group=1)
    text = _take(HTML_SRC, text, "image", tokens, group=1)
    # A link keeps its text (prose, translated); only its target is a token.
    text = LINK.sub(lambda m: (tokens.add(("link", m.group(1))), m.group(0)[1:m.group(0).index("](")])[1], text)
    text = _take(HTML_HREF, text, "link", tokens, group=1)
    text = _take(AUTOLINK, text, "link", tokens, group=1)
    text = _take(URL, text, "url", tokens)
    for match in NUMBER.finditer(text):
        tokens.add(("number", match.group(0)))
    return tokens, text


def protected_tokens(markdown: str) -> set[tuple[str, str]]:
    """Every protected ``(kind, text)`` token of a markdown cell (see :func:`split_protected`)."""
    return split_protected(markdown)[0]


def prose(markdown: str) -> str:
    """The markdown with code, maths, link targets and URLs blanked out (numbers stay)."""
    return split_protected(markdown)[1]


def lost_tokens(english: str, translation: str) -> list[tuple[str, str]]:
    """The protected tokens of ``english`` that ``translation`` lacks (sorted); ``[]`` if none."""
    kept = protected_tokens(translation)
    lost = protected_tokens(english) - kept
    # A URL written as a link target in one language and bare in the other is still kept.
    kept_targets = {text for kind, text in kept if kind in ("link", "url")}
    return sorted(t for t in lost if not (t[0] in ("link", "url") and t[1] in kept_targets))


# --------------------------------------------------------------------------------------------
# Catalogs

def markdown_cells(nb) -> list[tuple[str, str]]:
    """``(cell id, source)`` of every markdown cell, in order."""
    cells = [(cell.get("id"), cell.source) for cell in nb.cells if cell.cell_type == "markdown"]
    missing = [i for i, (cid, _) in enumerate(cells) if not cid]
    if missing:
        raise ValueError(f"markdown cells {missing} have no cell id (nbformat >= 4.5 needed); "
                         "run nbformat.validator.normalize on the notebook")
    return cells


def new_catalog(notebook: Path) -> polib.POFile:
    """An empty catalog with the usual gettext header."""
    po = polib.POFile(wrapwidth=0)
    po.metadata = {
        "Project-Id-Version": f"Efficient Federated Learning · {notebook.stem}",
        "Language": LANGUAGE,
        "MIME-Version": "1.0",
        "Content-Type": "text/plain; charset=UTF-8",
        "Content-Transfer-Encoding": "8bit",
        "Plural-Forms": "nplurals=1; plural=0;",
    }
    po.header = (f"Chinese (zh_CN) translation of notebooks/{notebook.name}.\n"
                 "One entry per markdown cell: msgctxt is the cell id, msgid the English source.\n"
                 "Update with `python -m fedlab_utils translate extract`.")
    return po


def load_catalog(path: Path) -> polib.POFile:
    """Read a catalog with polib (no wrapping when it is written back)."""
    po = polib.pofile(str(path), wrapwidth=0)
    po.wrapwidth = 0
    return po


def save_catalog(po: polib.POFile, path: Path) -> None:
    """Write a catalog atomically."""
    atomic_write_text(path, str(po))


@dataclass
class ExtractReport:
    new: list[str] = field(default_factory=list)
    fuzzy: list[str] = field(default_factory=list)
    obsolete: list[str] = field(default_factory=list)


def merge_catalog(cells: list[tuple[str, str]], po: polib.POFile) -> ExtractReport:
    """Bring ``po`` in line with the markdown ``cells`` (in place), as ``msgmerge`` would.

    A new cell id gets an untranslated entry; an entry whose English changed gets the new msgid,
    keeps its translation and becomes ``fuzzy`` with the previous msgid (when it was already fuzzy
    the older previous msgid is kept: that is the English its translation was made from); an
    entry whose cell is gone becomes obsolete.  Entries are reordered to follow the notebook."""
    report = ExtractReport()
    by_context = {entry.msgctxt: entry for entry in po}
    ordered = []
    for cell_id, source in cells:
        entry = by_context.pop(cell_id, None)
        if entry is None:
            entry = polib.POEntry(msgctxt=cell_id, msgid=source, msgstr="")
            report.new.append(cell_id)
        else:
            entry.obsolete = False
            if entry.msgid != source:
                if entry.msgstr:
                    if "fuzzy" not in entry.flags or not entry.previous_msgid:
                        entry.previous_msgid = entry.msgid
                    if "fuzzy" not in entry.flags:
                        entry.flags.append("fuzzy")
                    report.fuzzy.append(cell_id)
                entry.msgid = source
        ordered.append(entry)
    for entry in by_context.values():
        if not entry.obsolete:
            report.obsolete.append(entry.msgctxt)
        entry.obsolete = True
        ordered.append(entry)
    po[:] = ordered
    return report


def extract(notebook: Path, locale_dir: Path = LOCALE_DIR) -> ExtractReport:
    """Create or update the catalog of one notebook."""
    path = catalog_path(notebook, locale_dir)
    po = load_catalog(path) if path.exists() else new_catalog(notebook)
    report = merge_catalog(markdown_cells(nbformat.read(notebook, as_version=4)), po)
    save_catalog(po, path)
    return report


def current_translation(entry: polib.POEntry | None, source: str) -> str | None:
    """The translation to use for ``source``: ``None`` if missing, empty, fuzzy or stale."""
    if entry is None or entry.obsolete or not entry.msgstr.strip() or "fuzzy" in entry.flags:
        return None
    if entry.msgid != source:
        return None
    return entry.msgstr


# --------------------------------------------------------------------------------------------
# Glossary

@dataclass(frozen=True)
class Term:
    zh: str
    en: str
    where: str
    en_match: str
    zh_match: tuple[str, ...]

    @property
    def pattern(self) -> re.Pattern:
        return re.compile(rf"\b(?:{self.en_match})\b", re.I)

    def used_in(self, english_prose: str) -> bool:
        return bool(self.pattern.search(english_prose))

    def rendered_in(self, translation: str) -> bool:
        return any(zh in translation for zh in self.zh_match)


def load_glossary(path: Path = GLOSSARY_PATH) -> list[Term]:
    """The glossary rows (tab-separated, header ``zh en where en_match zh_match``)."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    terms = []
    for number, row in enumerate(rows, start=2):
        if tuple(row) != GLOSSARY_FIELDS or any(not (row[k] or "").strip() for k in GLOSSARY_FIELDS):
            raise ValueError(f"{path}:{number}: a row needs the non-empty fields {GLOSSARY_FIELDS}, got {row}")
        try:
            re.compile(row["en_match"])
        except re.error as error:
            raise ValueError(f"{path}:{number}: en_match {row['en_match']!r} is not a valid regex: {error}") from None
        terms.append(Term(row["zh"], row["en"], row["where"], row["en_match"],
                          tuple(s.strip() for s in row["zh_match"].split("|") if s.strip())))
    return terms


def glossary_table(terms: Iterable[Term], where: bool = True) -> str:
    """A markdown table of glossary rows."""
    lines = ["| 中文 | English | 笔记本 notebook |", "|---|---|---|"] if where else ["| 中文 | English |", "|---|---|"]
    for term in terms:
        cells = [term.zh, term.en] + ([term.where] if where else [])
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def readme_block(terms: list[Term]) -> str:
    return f"{GLOSSARY_BEGIN}\n{glossary_table(terms)}\n{GLOSSARY_END}"


def with_readme_block(text: str, terms: list[Term], path: Path) -> str:
    """``text`` with its generated glossary block replaced by the current one."""
    start, end = text.find(GLOSSARY_BEGIN), text.find(GLOSSARY_END)
    if start < 0 or end < start:
        raise ValueError(f"{path} has no glossary block ({GLOSSARY_BEGIN!r} … {GLOSSARY_END!r})")
    return text[:start] + readme_block(terms) + text[end + len(GLOSSARY_END):]


# --------------------------------------------------------------------------------------------
# Build

TITLE = re.compile(r"(?<![*\w])\*(?!\*)([^*]+?)\*(?![*\w])")


def term_text(markdown: str) -> str:
    """The prose in which glossary terms are looked for: :func:`prose` without cited titles
    (an emphasised span of four or more words, ``*Communication-Efficient Learning of …*``), which
    stay in English in both editions."""
    return TITLE.sub(lambda m: " " if len(m.group(1).split()) >= 4 else m.group(0), prose(markdown))


def terms_used(english_cells: list[tuple[str, str]], terms: list[Term]) -> list[Term]:
    """The glossary rows whose English term occurs in a notebook's markdown prose."""
    text = "\n".join(term_text(source) for _, source in english_cells)
    return [term for term in terms if term.used_in(text)]


def glossary_cell_source(terms: list[Term]) -> str:
    return ("## 本节术语 Glossary\n"
            "本笔记本用到的中英术语（全课程的术语表见 [README.zh-CN.md](../../README.zh-CN.md)）：\n\n" + glossary_table(terms, where=False))


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
# Runtime messages (fedlab_utils.i18n): collected from the package source like xgettext

PACKAGE_DIR = ROOT / "fedlab_utils"
RUNTIME_CATALOG = PACKAGE_DIR / "locale" / LANGUAGE / "LC_MESSAGES" / "fedlab_utils.po"
#: calls whose first literal argument is a runtime message: ``_("…")``, ``gettext("…")``, ``N_("…")``
#: (a constant translated where it is used), and the
#: check confirmations ``passed("…")`` (translated inside :func:`fedlab_utils.checks.passed`)
MESSAGE_CALLS = ("_", "gettext", "N_", "passed")
PLACEHOLDER = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)?(?:[:!][^{}]*)?\}(?!\})")


def runtime_messages(package: Path = PACKAGE_DIR) -> dict[str, list[tuple[str, str]]]:
    """Every runtime message of the package: msgid -> ``[(file, line), …]``."""
    import ast

    found: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)):
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
                if name in MESSAGE_CALLS:
                    found.setdefault(node.args[0].value, []).append(
                        (path.relative_to(package.parent).as_posix(), str(node.lineno)))
    return found


def placeholders(message: str) -> set[str]:
    """The ``str.format`` field names of a message (``{}`` counted as ``""``)."""
    return {m.group(1) or "" for m in PLACEHOLDER.finditer(message)}


def extract_runtime(path: Path = RUNTIME_CATALOG, package: Path = PACKAGE_DIR) -> ExtractReport:
    """Create or update the runtime catalog: new messages untranslated, vanished ones obsolete."""
    messages = runtime_messages(package)
    if path.exists():
        po = load_catalog(path)
    else:
        po = new_catalog(Path("fedlab_utils.py"))
        po.header = ("Chinese (zh_CN) runtime messages of fedlab_utils (checks, claims table, explorers, device notices).\n"
                     "Update with `python -m fedlab_utils translate extract`; see fedlab_utils/i18n.py.")
        po.metadata["Project-Id-Version"] = "Efficient Federated Learning · fedlab_utils"
    report = ExtractReport()
    by_id = {entry.msgid: entry for entry in po}
    ordered = []
    for msgid, places in messages.items():
        entry = by_id.pop(msgid, None)
        if entry is None:
            entry = polib.POEntry(msgid=msgid, msgstr="")
            report.new.append(msgid)
        entry.obsolete = False
        entry.occurrences = [(file, "") for file in sorted({file for file, _ in places})]  # no line numbers: less churn
        ordered.append(entry)
    for entry in by_id.values():
        if not entry.obsolete:
            report.obsolete.append(entry.msgid)
        entry.obsolete = True
        entry.occurrences = []
        ordered.append(entry)
    po[:] = ordered
    save_catalog(po, path)
    return report


def check_runtime(path: Path = RUNTIME_CATALOG, package: Path = PACKAGE_DIR) -> list[str]:
    """Problems of the runtime catalog: a message without a current translation, or with other placeholders."""
    if not path.exists():
        return [f"{path.name}: missing (run `translate extract`)"]
    by_id = {entry.msgid: entry for entry in load_catalog(path) if not entry.obsolete}
    problems = []
    for msgid, places in runtime_messages(package).items():
        where = f"runtime message at {places[0][0]}:{places[0][1]} {msgid!r}"
        entry = by_id.get(msgid)
        if entry is None:
            problems.append(f"{where}: not in {path.name} (run `translate extract`)")
        elif not entry.msgstr.strip() or "fuzzy" in entry.flags:
            problems.append(f"{where}: no current translation")
        elif placeholders(entry.msgstr) != placeholders(msgid):
            problems.append(f"{where}: the translation's placeholders {sorted(placeholders(entry.msgstr))} "
                            f"differ from {sorted(placeholders(msgid))}")
    return problems


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
        return resolve_notebooks(names)
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
        results, problems = check(resolve_notebooks(args.notebooks) if args.notebooks else None,
                                  require_all=args.require_all)
        if not args.notebooks:
            problems.extend(check_runtime())
    except (ValueError, OSError) as error:
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
