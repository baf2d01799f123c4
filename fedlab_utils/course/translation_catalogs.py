"""The gettext catalogs of the Chinese edition (:mod:`fedlab_utils.course.translate`): where they live,
one per English notebook (``notebooks/locale/zh_CN/LC_MESSAGES/<NN_slug>.po``, one entry per
markdown cell, ``msgctxt`` the cell id and ``msgid`` the English source), how ``extract`` merges
them as ``msgmerge`` would, which translation of a cell is current, and the catalog of the
package's runtime messages (collected like xgettext)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import polib

from fedlab_utils.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
LOCALE_DIR = NOTEBOOK_DIR / "locale"
LANGUAGE = "zh_CN"


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
    by_context = {entry.msgctxt: entry for entry in po if entry.msgctxt != CODE_CONTEXT}
    code = [entry for entry in po if entry.msgctxt == CODE_CONTEXT]  # kept: merge_code_entries' business
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
    po[:] = ordered + code
    return report


def extract(notebook: Path, locale_dir: Path = LOCALE_DIR, code: bool | None = None) -> ExtractReport:
    """Create or update the catalog of one notebook (with ``code``, default :data:`TRANSLATE_CODE`,
    also the entries of its code cells' comments and student-read strings)."""
    path = catalog_path(notebook, locale_dir)
    po = load_catalog(path) if path.exists() else new_catalog(notebook)
    nb = nbformat.read(notebook, as_version=4)
    report = merge_catalog(markdown_cells(nb), po)
    if translates_code(po, code):
        merge_code_entries([c.source for c in nb.cells if c.cell_type == "code"], po, report)
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
# Code cells: the comments and the strings students read, owned by the notebook's catalog

#: ``True``: ``extract`` adds the comments and student-read strings of the code cells to each
#: notebook's catalog (``msgctxt "code"``), ``build`` puts their translations into the zh code
#: cells and ``check`` wants each translated (``code=False`` leaves the code cells alone).
TRANSLATE_CODE = True
CODE_CONTEXT = "code"


def translates_code(po: polib.POFile, code: bool | None = None) -> bool:
    """Whether a notebook's code cells are translated: ``code`` when given, else
    :data:`TRANSLATE_CODE`, else whether its catalog already holds code entries (a notebook
    opts in once with ``translate extract --code NN``)."""
    if code is not None:
        return code
    return TRANSLATE_CODE or any(entry.msgctxt == CODE_CONTEXT and not entry.obsolete for entry in po)
#: calls whose string arguments a student reads: ``print(...)`` (every string argument, also the
#: parts of a ``+`` chain and the strings inside containers and f-strings nested in them) and the
#: claims table's statements, ``claims.check("…", …)`` / ``claims.observe("…", …)`` (the first)
CODE_CALLS = {"print": None, "claims.check": 1, "claims.observe": 1}
#: constructors of the tables a student reads: the string keys and values of the dict and list
#: literals passed to them are column labels, row labels and cells
TABLE_CALLS = ("DataFrame", "Series", "DataFrame.from_dict", "DataFrame.from_records", "Index")
#: keyword arguments, of any call, whose strings a student reads in a table or plot
DISPLAY_KEYWORDS = ("columns", "index", "name", "label", "title")
_NOT_PROSE = re.compile(r"^#+\s*(?:(?:BEGIN|END) (?:SOLUTION|HIDDEN TESTS)\b|noqa\b|type:|pragma\b|fmt:|pylint:)")


@dataclass(frozen=True)
class CodeText:
    """A translatable stretch of a code cell: ``source[start:end] == text``.  ``kind`` is
    ``"comment"`` (a trailing comment, or a block of whole-line comments one under the other)
    or ``"string"`` (a string literal argument, implicit concatenation included)."""
    kind: str
    start: int
    end: int
    text: str


def _offsets(source: str) -> list[int]:
    """Character offset of the start of each line (1-based rows, as tokenize and ast count)."""
    starts, total = [0, 0], 0
    for line in source.splitlines(keepends=True):
        total += len(line)
        starts.append(total)
    return starts


def code_tokens(source: str) -> list[tuple[int, str, int, int]]:
    """``(type, text, start, end)`` of every token of ``source`` (character offsets), an f-string
    as one ``STRING`` token also on Python >= 3.12.  Raises ``tokenize.TokenError`` or
    ``SyntaxError`` when ``source`` does not tokenize."""
    import io
    import tokenize

    rows = _offsets(source)
    at = lambda pos: rows[pos[0]] + pos[1]  # noqa: E731
    start_type, end_type = getattr(tokenize, "FSTRING_START", None), getattr(tokenize, "FSTRING_END", None)
    tokens, depth, opened = [], 0, 0
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if start_type is not None and tok.type == start_type:
            if depth == 0:
                opened = at(tok.start)
            depth += 1
            continue
        if depth:
            if tok.type == end_type:
                depth -= 1
                if depth == 0:
                    tokens.append((tokenize.STRING, source[opened:at(tok.end)], opened, at(tok.end)))
            continue
        tokens.append((tok.type, tok.string, at(tok.start), at(tok.end)))
    return tokens


def _call_name(func) -> str | None:
    """The dotted name of a called function (``pd.DataFrame.from_dict``), ``None`` for another callee."""
    import ast

    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        owner = _call_name(func.value)
        return f"{owner}.{func.attr}" if owner else None
    return None


def _string_nodes(node, keys: bool = True) -> list:
    """The string literals (constants and f-strings) a student reads in ``node``: ``node`` itself,
    every part of a ``+`` chain, both branches of ``a if c else b``, the items of list, tuple and
    set literals, the keys (with ``keys``) and values of dict literals, the elements of
    comprehensions and the body of a ``lambda``; not the arguments of other calls."""
    import ast

    if isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return [node]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _string_nodes(node.left, keys) + _string_nodes(node.right, keys)
    if isinstance(node, ast.IfExp):
        return _string_nodes(node.body, keys) + _string_nodes(node.orelse, keys)
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [found for item in node.elts for found in _string_nodes(item, keys)]
    if isinstance(node, ast.Dict):
        return ([found for key in node.keys if keys and key is not None for found in _string_nodes(key, keys)]
                + [found for value in node.values for found in _string_nodes(value, keys)])
    if isinstance(node, ast.DictComp):
        return (_string_nodes(node.key, keys) if keys else []) + _string_nodes(node.value, keys)
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp)):
        return _string_nodes(node.elt, keys)
    if isinstance(node, ast.Lambda):
        return _string_nodes(node.body, keys)
    if isinstance(node, ast.Starred):
        return _string_nodes(node.value, keys)
    return []


def owned_literals(tree) -> list:
    """The string literal nodes of a cell's syntax tree that the catalog owns: the arguments of
    :data:`CODE_CALLS`, the tables' labels and cells (the literals passed to :data:`TABLE_CALLS`),
    the :data:`DISPLAY_KEYWORDS` arguments of any call, the new names of ``.rename(...)``
    (the values of its mappings, or its string argument; the keys name existing labels) and the
    new text of ``.replace(old, "a label")``."""
    import ast

    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _call_name(node.func) or ""
        if name in CODE_CALLS:
            for arg in node.args[:CODE_CALLS[name]]:
                found += _string_nodes(arg)
            continue
        if name.split(".", 1)[-1] in TABLE_CALLS or name in TABLE_CALLS:
            found += [s for arg in node.args for s in _string_nodes(arg)]
            found += [s for kw in node.keywords if kw.arg in ("data", "columns", "index", "name")
                      for s in _string_nodes(kw.value)]
            continue
        if isinstance(node.func, ast.Attribute) and node.func.attr == "replace" and len(node.args) >= 2:
            found += [s for s in _string_nodes(node.args[1]) if _is_label(s)]  # the new text of a label
            continue
        if isinstance(node.func, ast.Attribute) and node.func.attr == "rename":
            found += [s for arg in node.args for s in _string_nodes(arg, keys=False)]
            found += [s for kw in node.keywords for s in _string_nodes(kw.value, keys=False)]
            continue
        found += [s for kw in node.keywords if kw.arg in DISPLAY_KEYWORDS for s in _string_nodes(kw.value)]
    return found + [s for s in _label_literals(tree, found) if _is_label(s)]


_PHRASE = re.compile(r"[A-Za-z]{2,} [A-Za-z]{2,} [A-Za-z]{2,}")  # three words: text, not a setting


def _is_label(node) -> bool:
    """Whether a string literal reads as a label (``"x fewer J"``, ``"acc %"``), not as a key a
    program reads (``"deadline_s"``, ``"round"``): an f-string, or a string that is not one identifier."""
    import ast

    return isinstance(node, ast.JoinedStr) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", node.value)


def _label_literals(tree, owned: list) -> list:
    """The labels a cell builds its tables from outside a constructor call: the string keys of
    dict literals and dict comprehensions that have a label key (and their string values), the
    new column of ``table["…"] = …``, the strings assigned to ``.columns`` / ``.index`` / ``.name``,
    and the strings assigned to a name that an owned f-string prints (``verdict = "about the
    same as"`` … ``print(f"{verdict} …")``)."""
    import ast

    found: list = []
    printed = {n.id for literal in owned if isinstance(literal, ast.JoinedStr)
               for n in ast.walk(literal) if isinstance(n, ast.Name)}
    renames = {id(d) for call in ast.walk(tree) if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
               and call.func.attr == "rename" for arg in [*call.args, *(kw.value for kw in call.keywords)]
               for d in ast.walk(arg) if isinstance(d, ast.Dict)}  # their keys are existing labels
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict) and id(node) not in renames:
            keys = [s for key in node.keys if key is not None for s in _string_nodes(key)]
            values = [s for value in node.values for s in _string_nodes(value)]
            if any(_is_label(k) for k in keys):
                found += keys + values
            else:  # a dict of settings: only its values that read as words (a description)
                found += [v for v in values if isinstance(v, ast.Constant) and _PHRASE.search(v.value)]
        elif isinstance(node, ast.DictComp):
            found += _string_nodes(node.key)
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Subscript):
                    found += _string_nodes(target.slice)
                elif isinstance(target, ast.Attribute) and target.attr in ("columns", "index", "name"):
                    found += _string_nodes(node.value)
                elif isinstance(target, ast.Name) and target.id in printed and node.value is not None:
                    found += _string_nodes(node.value)
    return found


def code_texts(source: str) -> list[CodeText]:
    """The comments and the student-read string literals (:data:`CODE_CALLS`) of a code cell, in
    order.  nbgrader markers, ``noqa``/``type:`` pragmas and comments without words are left out;
    so is a cell that is not plain Python (a magic, a syntax error): it stays as it is."""
    import ast
    import tokenize

    try:
        tokens = code_tokens(source)
        tree = ast.parse(source)
    except (SyntaxError, tokenize.TokenError, ValueError):
        return []
    texts: list[CodeText] = []
    block: list[tuple[int, int]] = []  # (start, end) of whole-line comments one under the other
    rows = _offsets(source)

    def flush():
        if block:
            texts.append(CodeText("comment", block[0][0], block[-1][1], source[block[0][0]:block[-1][1]]))
            block.clear()

    for kind, text, start, end in tokens:
        if kind != tokenize.COMMENT:
            if kind not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
                flush()
            continue
        if _NOT_PROSE.match(text) or len(re.findall(r"[A-Za-z]{2,}", text)) < 1:
            flush()
            continue
        line_start = max(r for r in rows if r <= start)
        whole_line = not source[line_start:start].strip()
        column = start - line_start
        if not whole_line:
            flush()
            texts.append(CodeText("comment", start, end, text))
            continue
        if block:
            previous_line = max(r for r in rows if r <= block[-1][0])
            if column != block[-1][0] - previous_line or source[block[-1][1]:start].count("\n") != 1:
                flush()
        block.append((start, end))
    flush()

    def char(row: int, byte_col: int) -> int:
        line = source[rows[row]:rows[row + 1]] if row + 1 < len(rows) else source[rows[row]:]
        return rows[row] + len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))

    for literal in owned_literals(tree):
        start, end = char(literal.lineno, literal.col_offset), char(literal.end_lineno, literal.end_col_offset)
        if re.search(r"[A-Za-z]{2,}", source[start:end]):
            texts.append(CodeText("string", start, end, source[start:end]))
    return sorted(set(texts), key=lambda t: t.start)


def code_translations(po: polib.POFile) -> dict[str, str]:
    """English code text -> its current translation (``msgctxt "code"``, translated, not fuzzy)."""
    return {e.msgid: e.msgstr for e in po if e.msgctxt == CODE_CONTEXT and not e.obsolete
            and e.msgstr.strip() and "fuzzy" not in e.flags}


def translate_code(source: str, translations: dict[str, str]) -> str:
    """``source`` with each of its :func:`code_texts` that has a translation replaced by it, and
    every other string literal identical to a translated one too: a label the catalog owns is the
    same label wherever the cell names it (``table["x fewer J"]`` finds its translated column).
    A string the catalog must leave alone (a column a package function builds) has its msgid as
    its msgstr."""
    import tokenize

    spans = {(t.start, t.end): t.text for t in code_texts(source) if t.text in translations}
    try:
        tokens = code_tokens(source)
    except (SyntaxError, tokenize.TokenError, ValueError):
        tokens = []
    for kind, text, start, end in tokens:
        if kind == tokenize.STRING and text in translations and not any(a < end and start < b for a, b in spans):
            spans[(start, end)] = text
    for start, end in sorted(spans, reverse=True):
        source = source[:start] + translations[spans[(start, end)]] + source[end:]
    return source


#: how alike (difflib ratio) a changed comment or string must be to a vanished one to inherit its
#: translation as ``fuzzy`` (msgmerge's fuzzy matching, for code texts, which have no cell id)
FUZZY_CODE_MATCH = 0.75


def merge_code_entries(sources: list[str], po: polib.POFile, report: ExtractReport) -> None:
    """Bring the ``msgctxt "code"`` entries of ``po`` in line with the code cells (in place): one
    entry per distinct comment or string; a new one inherits, marked ``fuzzy`` with the previous
    msgid, the translation of the most alike vanished one (an edited comment or label), else it
    is untranslated; vanished ones become obsolete."""
    import difflib

    wanted: dict[str, str] = {}
    for source in sources:
        for text in code_texts(source):
            wanted.setdefault(text.text, text.kind)
    existing = {e.msgid: e for e in po if e.msgctxt == CODE_CONTEXT}
    vanished = {msgid: e for msgid, e in existing.items() if msgid not in wanted and e.msgstr.strip()}
    for msgid, kind in wanted.items():
        entry = existing.pop(msgid, None)
        if entry is None:
            entry = polib.POEntry(msgctxt=CODE_CONTEXT, msgid=msgid, msgstr="", comment=kind)
            alike = max(vanished, key=lambda old: difflib.SequenceMatcher(None, old, msgid).ratio(), default=None)
            if alike is not None and difflib.SequenceMatcher(None, alike, msgid).ratio() >= FUZZY_CODE_MATCH:
                old = vanished.pop(alike)
                existing.pop(alike)
                po.remove(old)  # replaced by its edited successor, as msgmerge does
                entry.msgstr, entry.previous_msgid, entry.flags = old.msgstr, old.previous_msgid or alike, ["fuzzy"]
                report.fuzzy.append(f"{CODE_CONTEXT}: {msgid.splitlines()[0][:60]}")
            else:
                report.new.append(f"{CODE_CONTEXT}: {msgid.splitlines()[0][:60]}")
            po.append(entry)
        entry.obsolete = False
    for entry in existing.values():
        if not entry.obsolete:
            report.obsolete.append(f"{CODE_CONTEXT}: {entry.msgid.splitlines()[0][:60]}")
        entry.obsolete = True
