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

``check`` also compares each zh code cell with its English cell through :mod:`tokenize`: only
comments and the string literals the catalog owns may differ (``TRANSLATE_CODE``, see
:mod:`fedlab_utils.course.translation_catalogs`).  Two relaxations only accept more: a number written the
Chinese way with the same value (``50 万`` for ``500k``, ``1/4`` for ``4×``) and a prose argument
inside a code span (:mod:`fedlab_utils.course.glossary`).  The editorial rules (ratio wording, straight
quotes around Chinese, refused variants of a pinned glossary term, :func:`editorial_violations`)
are listed by ``check --editorial`` and fail the check only with :data:`EDITORIAL`.

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
this module (``build``, ``check`` and the command line).
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

from fedlab_utils.course import translation_catalogs
from fedlab_utils.course.glossary import (
    README_PATHS,
    Term,
    glossary_cell_source,
    load_glossary,
    lost_tokens,
    prose,
    term_text,
    terms_used,
    with_readme_block,
)
from fedlab_utils.course.runner import CourseError, find_notebooks
from fedlab_utils.course.translation_catalogs import (
    CODE_CONTEXT,
    LANGUAGE,
    LOCALE_DIR,
    NOTEBOOK_DIR,
    ROOT,
    RUNTIME_CATALOG,
    catalog_path,
    check_runtime,
    code_texts,
    code_tokens,
    code_translations,
    current_translation,
    english_notebooks,
    extract,
    extract_runtime,
    load_catalog,
    markdown_cells,
    translate_code,
    zh_path,
)
from fedlab_utils.files import atomic_write_text

MIN_COVERAGE = 0.90
MIN_CJK_RATIO = 0.40
GLOSSARY_CELL_ID = "zh-glossary"

__all__ = ["MIN_COVERAGE", "MIN_CJK_RATIO", "GLOSSARY_CELL_ID", "SIBLING_NOTEBOOK", "LINK_TARGET",
           "relocate_links", "build_notebook", "build", "build_readmes", "CJK", "cjk_ratio",
           "Coverage", "coverage", "NotebookCheck", "check_notebook", "check", "parser", "main",
           "code_differences", "code_entry_problems", "EDITORIAL", "RATIO_WORDING", "ASCII_QUOTES",
           "EDITORIAL_RULES", "Violation", "editorial_violations", "ENGLISH_RUN", "english_runs",
           "scan_outputs", "runtime_editorial", "allowed_texts"]


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


def build_notebook(notebook: Path, po: polib.POFile, terms: list[Term], code: bool | None = None) -> str:
    """The zh notebook's file text: ``notebook`` with each markdown cell's current translation
    (the English where there is none, which ``check`` reports) and a last glossary cell.  Every
    cell's metadata and the notebook's metadata are copied unchanged; so are the code cells,
    except, with ``code`` (default :data:`TRANSLATE_CODE`), their comments and student-read
    strings that the catalog translates (``msgctxt "code"``)."""
    nb = nbformat.read(notebook, as_version=4)
    by_context = {entry.msgctxt: entry for entry in po if not entry.obsolete and entry.msgctxt != CODE_CONTEXT}
    code_zh = code_translations(po) if translation_catalogs.translates_code(po, code) else {}
    cells = markdown_cells(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            translation = current_translation(by_context.get(cell.id), cell.source)
            cell.source = relocate_links(translation if translation is not None else cell.source)
        elif cell.cell_type == "code" and code_zh:
            cell.source = translate_code(cell.source, code_zh)
    # The glossary cell is locked like the lesson's other markdown when nbgrader metadata is used.
    # (never copied from a neighbour: that could be a manually graded answer cell).
    uses_nbgrader = any("nbgrader" in c.metadata for c in nb.cells)
    metadata = {"nbgrader": {"grade": False, "grade_id": f"cell-{GLOSSARY_CELL_ID}", "locked": True,
                             "schema_version": 3, "solution": False, "task": False}} if uses_nbgrader else {}
    glossary = nbformat.v4.new_markdown_cell(glossary_cell_source(terms_used(cells, terms)),
                                             id=GLOSSARY_CELL_ID, metadata=metadata)
    nb.cells.append(glossary)
    return nbformat.writes(nb) + "\n"


def build(notebook: Path, locale_dir: Path = LOCALE_DIR, terms: list[Term] | None = None,
          code: bool | None = None) -> Path:
    """Write ``notebooks/zh/<name>.ipynb`` from the English notebook and its catalog."""
    terms = load_glossary() if terms is None else terms
    out = zh_path(notebook)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, build_notebook(notebook, load_catalog(catalog_path(notebook, locale_dir)), terms, code))
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


def _skeleton(source: str) -> tuple[list[tuple[int, str]], list[tuple[str, str]]]:
    """A code cell's tokens with comments and strings masked, and the masked stretches.

    The skeleton is every token but ``NL`` (a line break that ends no statement) with each run of
    comments, and each run of adjacent string literals (implicit concatenation), replaced by one
    marker; the stretches are ``(kind, source text)`` of those runs, in order, so a translation may
    reflow a comment block or a long string over other lines without changing the code."""
    import tokenize

    skeleton: list[tuple[int, str]] = []
    stretches: list[tuple[str, str]] = []
    run: list = []

    def close():
        if run:
            kind = "comment" if run[0][0] == tokenize.COMMENT else "string"
            skeleton.append((-1, kind))
            stretches.append((kind, source[run[0][2]:run[-1][3]]))
            run.clear()

    for tok in code_tokens(source):
        kind = tok[0]
        if kind == tokenize.NL:
            continue
        if kind in (tokenize.COMMENT, tokenize.STRING):
            if run and run[0][0] != kind:
                close()
            run.append(tok)
            continue
        close()
        skeleton.append((kind, tok[1]))
    close()
    return skeleton, stretches


def code_differences(english: str, zh: str, translations: dict[str, str]) -> list[str]:
    """How a zh code cell differs from its English cell in more than the catalog allows: compared
    with :mod:`tokenize`, only comments and the string literals the catalog translates
    (``translations``: English text -> zh, see :func:`code_translations`) may differ, each to
    its translation.  ``[]`` when the code is the same."""
    import tokenize

    if english == zh:
        return []
    try:
        en_skeleton, en_texts = _skeleton(english)
    except (SyntaxError, tokenize.TokenError, ValueError):
        return ["the English cell does not tokenize, so its zh copy must be identical"]
    try:
        zh_skeleton, zh_texts = _skeleton(zh)
    except (SyntaxError, tokenize.TokenError, ValueError) as error:
        return [f"the zh cell does not tokenize: {error}"]
    if en_skeleton != zh_skeleton:
        diff = next((i for i, (a, b) in enumerate(zip(en_skeleton, zh_skeleton)) if a != b),
                    min(len(en_skeleton), len(zh_skeleton)))
        shown = lambda tokens: " ".join(t for _, t in tokens[max(0, diff - 3):diff + 3])  # noqa: E731
        return [f"the code differs, not only comments and strings: {shown(en_skeleton)!r} -> {shown(zh_skeleton)!r}"]
    try:
        _, expected = _skeleton(translate_code(english, translations))
    except (SyntaxError, tokenize.TokenError, ValueError):
        expected = en_texts
    return [f"the {kind} {en_text[:60]!r} differs and is not the catalog's translation of it"
            for (kind, en_text), (_, zh_text), (_, wanted) in zip(en_texts, zh_texts, expected) if zh_text != wanted]


def _fields(literal: str) -> list[str] | None:
    """The replacement fields of a string literal (``f"{a:.1f} b"`` -> ``["a:.1f"]``); ``None`` if
    ``literal`` is not a string literal."""
    import ast

    try:
        node = ast.parse(f"(\n{literal.strip()}\n)", mode="eval").body  # implicit concatenation over lines
    except SyntaxError:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return []
    if not isinstance(node, ast.JoinedStr):
        return None
    def field_text(value: ast.FormattedValue) -> str:
        text = ast.unparse(value.value) + (f"!{chr(value.conversion)}" if value.conversion != -1 else "")
        if value.format_spec is not None:
            text += ":" + "".join(c.value if isinstance(c, ast.Constant) else "{…}" for c in value.format_spec.values)
        return text

    return sorted(field_text(v) for v in node.values if isinstance(v, ast.FormattedValue))


def code_entry_problems(po: polib.POFile, notebook: str) -> list[str]:
    """Problems of the ``msgctxt "code"`` entries: untranslated or fuzzy, a comment translated into
    something that is not a comment, a string into something that is not a string literal with the
    same ``{fields}``."""
    problems = []
    for entry in po:
        if entry.msgctxt != CODE_CONTEXT or entry.obsolete:
            continue
        where = f"{notebook}: code text {entry.msgid.splitlines()[0][:60]!r}"
        if not entry.msgstr.strip() or "fuzzy" in entry.flags:
            problems.append(f"{where}: no current translation")
        elif entry.msgid.lstrip().startswith("#"):
            if any(line.strip() and not line.lstrip().startswith("#") for line in entry.msgstr.splitlines()):
                problems.append(f"{where}: the translation has a line that is not a comment")
        elif _fields(entry.msgstr) != _fields(entry.msgid):
            problems.append(f"{where}: the translation is not a string literal with the fields {_fields(entry.msgid)}")
    return problems


def field_keys(sources: list[str]) -> set[str]:
    """The string constants read inside f-string fields of code cells (``f"{fwd['separable CNN']}"``
    -> ``"separable CNN"``): an f-string's field is code, which the translation of a label does not reach."""
    import ast

    keys = set()
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FormattedValue):
                keys |= {c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    return keys


def field_key_problems(po: polib.POFile, sources: list[str], notebook: str) -> list[str]:
    """A label translated in the catalog that an f-string's field of the notebook also reads: the
    zh run would look up the English key in a table built with the Chinese one.  Such a label is
    left alone (msgstr = msgid)."""
    import ast

    keys = field_keys(sources)
    problems = []
    for entry in po:
        if entry.msgctxt != CODE_CONTEXT or entry.obsolete or entry.msgstr == entry.msgid or entry.msgid.startswith("#"):
            continue
        try:
            value = ast.literal_eval(entry.msgid)
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, str) and value in keys:
            problems.append(f"{notebook}: code text {entry.msgid!r} is read as a key inside an f-string's field, "
                            "which keeps it English: leave it untranslated (msgstr = msgid)")
    return problems


@dataclass
class Coverage:
    used: int = 0
    rendered: int = 0
    missing: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.rendered / self.used if self.used else 1.0


def coverage(cells: list[tuple[str, str]], translations: dict[str, str], terms: list[Term],
             variants: bool = False) -> Coverage:
    """Glossary coverage of a notebook: one count per (term, cell) whose English prose uses it
    (with ``variants``, a refused variant of the term counts as rendering it: the editorial rules
    are off)."""
    result = Coverage()
    for cell_id, source in cells:
        if cell_id not in translations:
            continue
        text = term_text(source)
        for term in terms:
            if term.used_in(text):
                result.used += 1
                if term.rendered_in(translations[cell_id], variants):
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
    #: every editorial violation (:func:`editorial_violations`), problems only with ``EDITORIAL``
    editorial: list[Violation] = field(default_factory=list)


def check_notebook(notebook: Path, terms: list[Term], locale_dir: Path = LOCALE_DIR, editorial: bool | None = None,
                   code: bool | None = None) -> NotebookCheck:
    """Every problem of one notebook's translation (see the module docstring).  ``editorial``
    (default :data:`EDITORIAL`) makes the editorial violations problems; ``code`` (default
    :data:`TRANSLATE_CODE`) wants every comment and student-read string of the code cells translated."""
    editorial = EDITORIAL if editorial is None else editorial
    result = NotebookCheck(notebook.stem)
    po = load_catalog(catalog_path(notebook, locale_dir))
    code = translation_catalogs.translates_code(po, code)
    by_context = {entry.msgctxt: entry for entry in po if not entry.obsolete and entry.msgctxt != CODE_CONTEXT}
    english_nb = nbformat.read(notebook, as_version=4)
    cells = markdown_cells(english_nb)
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
            result.editorial += editorial_violations(cell_id, source, entry.msgstr, terms)
    if editorial:
        result.problems += [f"{notebook.stem}: {violation}" for violation in result.editorial]
    result.coverage = coverage(cells, translations, terms, variants=not editorial)
    if result.coverage.ratio < MIN_COVERAGE:
        result.problems.append(
            f"{notebook.stem}: glossary coverage {100 * result.coverage.ratio:.1f} % < {100 * MIN_COVERAGE:.0f} % "
            f"({result.coverage.rendered}/{result.coverage.used}); missing: " + "; ".join(result.coverage.missing))
    if code:
        po_texts = {e.msgid for e in po if e.msgctxt == CODE_CONTEXT and not e.obsolete}
        missing = sorted({t.text for c in english_nb.cells if c.cell_type == "code"
                          for t in code_texts(c.source)} - po_texts)
        result.problems += [f"{notebook.stem}: code text {m.splitlines()[0][:60]!r} is not in the catalog "
                            "(run `translate extract`)" for m in missing]
        result.problems += code_entry_problems(po, notebook.stem)
        result.problems += field_key_problems(po, [c.source for c in english_nb.cells if c.cell_type == "code"],
                                              notebook.stem)
    expected = build_notebook(notebook, po, terms, code)
    target = zh_path(notebook)
    if not target.exists():
        result.problems.append(f"{notebook.stem}: zh/{target.name} is missing (run `translate build`)")
    else:
        actual = target.read_text(encoding="utf-8")
        if actual != expected:
            result.problems.append(f"{notebook.stem}: notebooks/zh/{target.name} differs from what `translate build` "
                                   f"writes{_differing_cells(actual, expected)} (run `translate build`)")
        result.problems += _code_cell_problems(english_nb, actual, code_translations(po) if code else {}, notebook.stem)
    zh_markdown = "\n".join(c.source for c in nbformat.reads(expected, as_version=4).cells if c.cell_type == "markdown")
    result.cjk = cjk_ratio(zh_markdown)
    if result.cjk < MIN_CJK_RATIO:
        result.problems.append(f"{notebook.stem}: only {100 * result.cjk:.1f} % of the zh markdown is CJK "
                               f"(at least {100 * MIN_CJK_RATIO:.0f} % needed)")
    return result


def _code_cell_problems(english_nb, zh_text: str, translations: dict[str, str], name: str) -> list[str]:
    """The zh notebook's code cells against the English ones (:func:`code_differences`)."""
    try:
        zh_cells = {c.get("id"): c for c in nbformat.reads(zh_text, as_version=4).cells}
    except Exception:  # noqa: BLE001 - an unreadable file is reported by the build comparison
        return []
    problems = []
    for cell in english_nb.cells:
        if cell.cell_type != "code":
            continue
        zh_cell = zh_cells.get(cell.get("id"))
        if zh_cell is None or zh_cell.cell_type != "code":
            problems.append(f"{name}: code cell {cell.get('id')} is missing from the zh notebook")
            continue
        problems += [f"{name}: code cell {cell.get('id')}: {d}"
                     for d in code_differences(cell.source, zh_cell.source, translations)]
    return problems


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
          readmes: Iterable[Path] = README_PATHS, editorial: bool | None = None,
          code: bool | None = None) -> tuple[list[NotebookCheck], list[str]]:
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
            results.append(check_notebook(notebook, terms, locale_dir, editorial, code))
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
# Editorial rules: ratio wording, quotes, pinned terms

#: ``True``: ``translate check`` fails on every editorial violation (:func:`editorial_violations`);
#: ``False`` only lists them (``translate check --editorial``), for a catalog being rewritten.
EDITORIAL = True

#: ratio wording refused in the zh markdown: 「少 N 倍」「小 N 倍」「快 N 倍」 (and 「少多少倍」) say
#: "N times less", which Chinese readers take as an increase; 「N 倍（N×）」 says the factor twice.
#: Write 「为…的 1/N」 or 「是…的 N 倍」 (factor = baseline ÷ new).  The issue's patterns
#: (「少\S{0,4}倍」 …), also with the spaces of 「少 7 倍」; 「至少 3 倍」 and 「大小…倍」 are fine.
RATIO_WORDING = {
    "少…倍": re.compile(r"(?<!至)少(?:\s?\S){0,4}?\s?倍"),
    "小…倍": re.compile(r"(?<!大)小(?:\s?\S){0,4}?\s?倍"),
    "快…倍": re.compile(r"快(?:\s?\S){0,4}?\s?倍"),
    "倍（N×）": re.compile(r"倍\s?（\S+[×xX]）"),
}
#: straight ASCII double quotes around text with Chinese in it: write 「…」 or “…”
ASCII_QUOTES = re.compile(r'"([^"\n]*)"')
EDITORIAL_RULES = ("ratio wording", "ASCII quotes", "unpinned term")


@dataclass(frozen=True)
class Violation:
    rule: str
    cell: str
    text: str

    def __str__(self) -> str:
        return f"cell {self.cell}: {self.rule}: {self.text}"


def editorial_violations(cell_id: str, english: str, translation: str, terms: list[Term]) -> list[Violation]:
    """The editorial problems of one translated markdown cell: refused ratio wording, straight
    quotes around Chinese text, and a refused variant of a glossary term the English cell uses
    (a variant inside the pinned form of another term of the cell does not count).  Code, maths
    and link targets are not looked at."""
    text = prose(translation)
    found = [Violation("ratio wording", cell_id, m.group(0))
             for pattern in RATIO_WORDING.values() for m in pattern.finditer(text)]
    found += [Violation("ASCII quotes", cell_id, m.group(0)) for m in ASCII_QUOTES.finditer(text)
              if CJK.search(m.group(1))]
    english_text = term_text(english)
    used = [term for term in terms if term.used_in(english_text)]
    allowed = [zh for term in used for zh in term.zh_match]
    for term in used:
        found += [Violation("unpinned term", cell_id, f"{variant} (pinned: {term.zh} for {term.en})")
                  for variant in term.variants_in(text, allowed)]
    return found


def runtime_editorial(path: Path = RUNTIME_CATALOG, terms: list[Term] | None = None) -> NotebookCheck:
    """The editorial violations of the runtime messages' translations (check hints, claims table,
    explorer labels), as one pseudo-notebook ``fedlab_utils.po`` whose "cells" are the messages."""
    terms = load_glossary() if terms is None else terms
    result = NotebookCheck(path.name)
    for entry in load_catalog(path):
        if not entry.obsolete and entry.msgstr.strip():
            label = entry.msgid if len(entry.msgid) <= 40 else entry.msgid[:37] + "…"
            result.editorial += editorial_violations(repr(label), entry.msgid, entry.msgstr, terms)
    if EDITORIAL:
        result.problems = [f"{path.name}: {v}" for v in result.editorial]
    return result


# --------------------------------------------------------------------------------------------
# English left in what a zh notebook prints

#: four or more English words in a row (a word: letters, with inner ``'`` or ``-``), separated by
#: spaces or light punctuation; identifiers (``phone_lte``, ``fedlab_utils.run``), numbers and
#: paths break a run, so code and values do not count
ENGLISH_RUN = re.compile(r"(?<![\w.$/\\-])[A-Za-z][A-Za-z'’-]*(?:[ \t]*[,;:]?[ \t]+[A-Za-z][A-Za-z'’-]*(?![\w.(/\\])){3,}")
#: a Python warning line (``…/site-packages/x.py:12: UserWarning: …``) and the source line it quotes
WARNING_LINE = re.compile(r"^\S+\.py:\d+: \w*Warning\b")
HTML_TAG = re.compile(r"<[^>]+>")


def english_runs(text: str, allowed: Iterable[str] = ()) -> list[str]:
    """The runs of four or more consecutive English words in ``text``, less those in ``allowed``
    (names that stay English in Chinese text, e.g. ``Noto Sans CJK SC``)."""
    for name in allowed:
        text = text.replace(name, " ")
    return [m.group(0) for m in ENGLISH_RUN.finditer(text)]


def _output_texts(cell) -> list[tuple[str, str]]:
    """``(where, text)`` of a code cell's outputs a student reads: streams (without Python warning
    lines and the source line each quotes), ``text/plain`` and ``text/html`` (tags removed).
    Tracebacks (``error`` outputs) are left out."""
    texts = []
    for output in cell.get("outputs", []):
        kind = output.get("output_type")
        if kind == "stream":
            lines, skip = [], False
            for line in "".join(output.get("text", "")).splitlines():
                if WARNING_LINE.match(line):
                    skip = True
                    continue
                if skip and line.startswith((" ", "\t")):
                    continue
                skip = False
                lines.append(line)
            texts.append((output.get("name", "stream"), "\n".join(lines)))
        elif kind in ("execute_result", "display_data"):
            data = output.get("data", {})
            if "text/html" in data:
                texts.append(("text/html", HTML_TAG.sub(" ", "".join(data["text/html"]))))
            elif "text/plain" in data:
                texts.append(("text/plain", "".join(data["text/plain"])))
    return texts


#: a code cell that prints source code (``print(inspect.getsource(fl.fedavg_aggregate))``): its
#: printed stream is code, which stays English
PRINTS_SOURCE = re.compile(r"\binspect\.getsource\(|(?<![\w.])getsource\(")


def prints_source(source: str) -> bool:
    """Whether a code cell prints package source with ``inspect.getsource`` (its stream output is code)."""
    return bool(PRINTS_SOURCE.search(source))


def allowed_texts(path: Path) -> list[str]:
    """The texts of an allow file: one per line, blank lines and ``#`` comments skipped."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def scan_outputs(notebook: Path, allowed: Iterable[str] = ()) -> list[str]:
    """Every run of four or more English words in the outputs of an executed zh notebook, as
    ``"<notebook>: cell <id> (<output>): <run>"``; ``[]`` when a Chinese student meets no English
    outside code, tracebacks and warnings.  The stream output of a cell that prints package source
    (:func:`prints_source`) is code and is not counted."""
    nb = nbformat.read(notebook, as_version=4)
    found = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for where, text in _output_texts(cell):
            if where in ("stdout", "stderr") and prints_source(cell.source):
                continue
            found += [f"{notebook.stem}: cell {cell.get('id')} ({where}): {run}" for run in english_runs(text, allowed)]
    return found


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
    e.add_argument("--code", action="store_true", default=None,
                   help="also extract the code cells' comments and student-read strings (once a catalog has "
                        "them, build and check translate that notebook's code cells)")
    b = sub.add_parser("build", help="write notebooks/zh/<NN_slug>.ipynb and the README glossary tables")
    b.add_argument("notebooks", nargs="*", help="notebooks; default: those that have a catalog")
    c = sub.add_parser("check", help="fail on missing/fuzzy/stale translations, lost tokens, stale zh notebooks")
    c.add_argument("notebooks", nargs="*", help="notebooks; default: every notebook")
    c.add_argument("--allow-untranslated", action="store_false", dest="require_all",
                   help="list notebooks without a catalog instead of failing")
    c.add_argument("--json", type=Path, default=None, help="also write the per-notebook figures to this file")
    c.add_argument("--editorial", action="store_true",
                   help="list the editorial violations (ratio wording, ASCII quotes, unpinned terms) and their "
                        "counts per notebook; they fail the check only when translate.EDITORIAL is True")
    o = sub.add_parser("scan-outputs", help="list runs of 4+ English words in executed zh notebooks' outputs "
                                               "(not tracebacks, warnings, or printed inspect.getsource code)",
                       description="List the runs of four or more English words in the outputs of executed zh "
                                   "notebooks. Not counted: tracebacks, Python warning lines, and the stream output "
                                   "(stdout/stderr) of a cell that prints package source with inspect.getsource "
                                   "(that output is code).")
    o.add_argument("notebooks", nargs="+", type=Path,
                   help="executed zh notebooks, e.g. build/zh/notebooks/*.ipynb (from `run --lang zh`)")
    o.add_argument("--allow", action="append", default=[], metavar="NAME",
                   help="a name that stays English (e.g. a device model); may be repeated")
    o.add_argument("--report-only", action="store_true", help="list them, exit 0")
    o.add_argument("--allow-file", type=Path, default=None, metavar="PATH",
                   help="more allowed texts, one per line ('#' starts a comment): third-party messages a lesson "
                        "shows on purpose, e.g. notebooks/locale/scan_allow.txt")
    return p


def _print_editorial(results: list[NotebookCheck]) -> None:
    """The editorial violations: a table of counts per notebook and rule, then each one."""
    state = "enforced (EDITORIAL = True)" if EDITORIAL else "listed, not enforced (EDITORIAL = False)"
    print(f"\neditorial rules, {state}:")
    width = max([len(r.name) for r in results] + [8])
    print(f"{'notebook':<{width}}  " + "  ".join(f"{rule:>14}" for rule in EDITORIAL_RULES))
    for result in results:
        counts = [sum(v.rule == rule for v in result.editorial) for rule in EDITORIAL_RULES]
        print(f"{result.name:<{width}}  " + "  ".join(f"{n:>14}" for n in counts))
    totals = [sum(v.rule == rule for r in results for v in r.editorial) for rule in EDITORIAL_RULES]
    print(f"{'total':<{width}}  " + "  ".join(f"{n:>14}" for n in totals))
    for result in results:
        for violation in result.editorial:
            print(f"  {result.name}: {violation}")


def _selected(names: list[str]) -> list[Path]:
    if names:
        return find_notebooks(names)
    return [nb for nb in english_notebooks() if catalog_path(nb).exists()]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "extract":
            for notebook in _selected(args.notebooks):
                report = extract(notebook, code=args.code)
                print(f"{notebook.stem}: {len(report.new)} new, {len(report.fuzzy)} fuzzy, "
                      f"{len(report.obsolete)} obsolete"
                      + "".join(f"\n  {kind}: {ids}" for kind, ids in
                                (("new", report.new), ("fuzzy", report.fuzzy), ("obsolete", report.obsolete)) if ids))
            if not args.notebooks:
                report = extract_runtime()
                print(f"{RUNTIME_CATALOG.name}: {len(report.new)} new, {len(report.obsolete)} obsolete runtime messages")
            return 0
        if args.command == "scan-outputs":
            allowed = list(args.allow) + (allowed_texts(args.allow_file) if args.allow_file else [])
            found = [line for notebook in args.notebooks for line in scan_outputs(notebook, allowed)]
            for line in found:
                print(line)
            print(f"{len(found)} run(s) of four or more English words in {len(args.notebooks)} notebook(s)")
            return 1 if found and not args.report_only else 0
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
            runtime = runtime_editorial()
            problems.extend(runtime.problems)
    except (ValueError, OSError, CourseError) as error:
        print(f"translate: {error}", file=sys.stderr)
        return 2
    for result in results:
        cov = result.coverage
        print(f"{result.name}: {'ok' if not result.problems else 'FAILED'}; glossary coverage "
              f"{100 * cov.ratio:.1f} % ({cov.rendered}/{cov.used}); CJK {100 * (result.cjk or 0):.1f} % of the markdown")
        problems.extend(result.problems)
    if args.editorial:
        _print_editorial(results + ([runtime] if not args.notebooks else []))
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
