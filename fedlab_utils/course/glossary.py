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
