"""The glossary of the Chinese edition and the text it is matched in (:mod:`fedlab_utils.course.translate`).

Protected tokens: what a translation must keep from its English cell (maths, code, link targets,
image references, URLs, numbers), and the prose left when they are blanked out.  The glossary
(``notebooks/locale/glossary.tsv``): its rows, the markdown tables generated from it (the README
block, each zh notebook's last cell) and the prose in which its English terms are looked for."""
from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fedlab_utils.course.runner import ROOT
from fedlab_utils.course.translation_catalogs import LOCALE_DIR

GLOSSARY_PATH = LOCALE_DIR / "glossary.tsv"
README_PATHS = (ROOT / "README.md", ROOT / "README.zh-CN.md")
GLOSSARY_BEGIN = "<!-- glossary:begin (generated from notebooks/locale/glossary.tsv by `python -m fedlab_utils translate build`; edit the TSV, not this table) -->"
GLOSSARY_END = "<!-- glossary:end -->"
GLOSSARY_FIELDS = ("zh", "en", "where", "en_match", "zh_match")
#: the optional last column: ``|``-separated renderings a translation must not use for the term
#: (the drifting variants of a pinned term); refused by ``translate check`` with the editorial rules
GLOSSARY_AVOID = "zh_avoid"


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
    """The protected tokens of ``english`` that ``translation`` lacks (sorted); ``[]`` if none.

    Two relaxations only accept more: a number written the Chinese way with the same value is kept
    (:func:`number_kept`: ``500k`` as ``50 万``, ``1.6M`` as ``160 万``, ``4×`` as ``1/4``), and a
    code span whose prose placeholders are translated is kept (:func:`code_span_kept`)."""
    kept = protected_tokens(translation)
    lost = protected_tokens(english) - kept
    # A URL written as a link target in one language and bare in the other is still kept.
    kept_targets = {text for kind, text in kept if kind in ("link", "url")}
    kept_code = [text for kind, text in kept if kind == "code"]
    values = None
    result = []
    for kind, text in sorted(lost):
        if kind in ("link", "url") and text in kept_targets:
            continue
        if kind == "number":
            values = chinese_values(prose(translation)) if values is None else values
            if number_kept(text, prose(english), values):
                continue
        if kind == "code" and code_span_kept(text, kept_code):
            continue
        result.append((kind, text))
    return result


# Numbers written the Chinese way --------------------------------------------------------------

#: multipliers of an English number's suffix (``500k``, ``1.6M``, ``2B``)
EN_SUFFIX = {"k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9}
#: multipliers of a Chinese number's unit (``50 万``, ``1.2 亿``)
ZH_UNIT = {"千": 1e3, "万": 1e4, "亿": 1e8}
ZH_NUMBER = re.compile(r"(?<![A-Za-z0-9_.])(\d+(?:[.,]\d+)*)(?:\s*([千万亿]))?")
RECIPROCAL = re.compile(r"(?<![\d./])1\s*/\s*(\d+(?:\.\d+)?)(?![\d./])")
FACTOR_AFTER = re.compile(r"^\s*(?:×|x\b|X\b|times\b|-fold\b)")


def _value(digits: str) -> float | None:
    try:
        return float(digits.replace(",", ""))
    except ValueError:  # 1.2.3 (a version), not a value
        return None


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1.0)


@dataclass(frozen=True)
class ChineseValues:
    """The values a translation states: every number with its unit (``50 万`` = 500000, ``60,000``
    = 60000), and the denominators of its unit fractions (``1/4`` states a factor of 4)."""
    amounts: tuple[float, ...]
    reciprocals: tuple[float, ...]


def chinese_values(text: str) -> ChineseValues:
    amounts = []
    reciprocals = [v for v in (_value(m.group(1)) for m in RECIPROCAL.finditer(text)) if v]
    text = re.sub(r"\d+(?:\.\d+)?\s*/\s*\d+(?:\.\d+)?", " ", text)  # a fraction is not two amounts
    for match in ZH_NUMBER.finditer(text):
        value = _value(match.group(1))
        if value is not None:
            amounts.append(value * ZH_UNIT.get(match.group(2) or "", 1.0))
    return ChineseValues(tuple(amounts), tuple(reciprocals))


def number_kept(number: str, english_prose: str, values: ChineseValues) -> bool:
    """Whether a translation states the value of ``number`` wherever the English prose writes it:
    ``500k`` as 500000 (``50 万``), ``1.6M`` as ``160 万``, ``60,000`` as ``6 万``, and a factor
    ``4×`` (``4x``, ``4 times``) as ``1/4``.  Each occurrence of ``number`` must be accounted for
    by one of these readings; an occurrence without a suffix needs its plain value."""
    occurrences = [m for m in re.finditer(rf"(?<![A-Za-z0-9_.]){re.escape(number)}(?![\d])", english_prose)]
    base = _value(number)
    if base is None or not occurrences:
        return False
    for match in occurrences:
        after = english_prose[match.end():]
        suffix = after[:1]
        readings = [base]
        if suffix in EN_SUFFIX and not re.match(r"^.[A-Za-z]", after):  # 500k, not 5 Kbit
            readings.append(base * EN_SUFFIX[suffix])
        factor = bool(FACTOR_AFTER.match(after))
        if not (any(_same(r, v) for r in readings for v in values.amounts)
                or (factor and any(_same(base, d) for d in values.reciprocals))):
            return False
    return True


# Prose inside a code span ---------------------------------------------------------------------

#: three or more plain words standing as one argument of a call (after ``(``, ``=`` or ``,``, up to
#: the next ``,`` or ``)``): a placeholder the reader fills in (``input=log-probabilities of the
#: student``), so prose, not code
PROSE_ARGUMENT = re.compile(r"(?<=[(=,])(\s*)([A-Za-z][A-Za-z'-]*(?: +[A-Za-z][A-Za-z'-]*){2,})(?=\s*[,)])")


def code_span_pattern(span: str) -> re.Pattern | None:
    """A pattern matching ``span`` with each prose argument (:data:`PROSE_ARGUMENT`) replaced by
    any text without backticks, commas or parentheses; ``None`` if the span has no prose argument.
    Everything else in the span (names, ``=``, punctuation, strings) must stay as written."""
    parts, last = [], 0
    for match in PROSE_ARGUMENT.finditer(span):
        parts.append(re.escape(span[last:match.start(2)]))
        parts.append(r"[^`,()]+?")
        last = match.end(2)
    if not parts:
        return None
    parts.append(re.escape(span[last:]))
    return re.compile("".join(parts), re.S)


def code_span_kept(span: str, translated_spans: Iterable[str]) -> bool:
    """Whether a translation keeps ``span`` with only its prose arguments translated."""
    pattern = code_span_pattern(span)
    return pattern is not None and any(pattern.fullmatch(t) for t in translated_spans)


# --------------------------------------------------------------------------------------------
# Glossary

@dataclass(frozen=True)
class Term:
    zh: str
    en: str
    where: str
    en_match: str
    zh_match: tuple[str, ...]
    zh_avoid: tuple[str, ...] = ()

    @property
    def pattern(self) -> re.Pattern:
        return re.compile(rf"\b(?:{self.en_match})\b", re.I)

    def used_in(self, english_prose: str) -> bool:
        return bool(self.pattern.search(english_prose))

    def rendered_in(self, translation: str, variants: bool = False) -> bool:
        """One of the term's renderings is in ``translation`` (``variants``: its refused variants count too)."""
        return any(zh in translation for zh in self.zh_match + (self.zh_avoid if variants else ()))

    def variants_in(self, translation: str, allowed: Iterable[str] = ()) -> list[str]:
        """The refused variants of this term that ``translation`` uses, not counting text inside an
        ``allowed`` rendering (the pinned form of another term the same English cell uses)."""
        found = []
        for variant in self.zh_avoid:
            text = translation
            # a rendering shorter than the variant and inside it (无线 in 无线电) hides nothing
            for rendering in sorted((a for a in allowed if a and not (a in variant and a != variant)),
                                    key=len, reverse=True):
                text = text.replace(rendering, "\0")
            if variant in text:
                found.append(variant)
        return found


def load_glossary(path: Path = GLOSSARY_PATH) -> list[Term]:
    """The glossary rows (tab-separated, header ``zh en where en_match zh_match [zh_avoid]``)."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    terms = []
    for number, row in enumerate(rows, start=2):
        header = tuple(row)
        if (header not in (GLOSSARY_FIELDS, GLOSSARY_FIELDS + (GLOSSARY_AVOID,))
                or any(not (row[k] or "").strip() for k in GLOSSARY_FIELDS)):
            raise ValueError(f"{path}:{number}: a row needs the non-empty fields {GLOSSARY_FIELDS} "
                             f"(and optionally {GLOSSARY_AVOID!r}), got {row}")
        try:
            re.compile(row["en_match"])
        except re.error as error:
            raise ValueError(f"{path}:{number}: en_match {row['en_match']!r} is not a valid regex: {error}") from None
        split = lambda value: tuple(s.strip() for s in (value or "").split("|") if s.strip())  # noqa: E731
        zh_match, zh_avoid = split(row["zh_match"]), split(row.get(GLOSSARY_AVOID))
        clash = [v for v in zh_avoid if any(v in zh for zh in zh_match)]
        if clash:
            raise ValueError(f"{path}:{number}: {GLOSSARY_AVOID} {clash} is part of a pinned rendering {zh_match}")
        terms.append(Term(row["zh"], row["en"], row["where"], row["en_match"], zh_match, zh_avoid))
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
