"""Chinese text in figures: the CJK font the zh edition draws with.

The font is Noto Sans CJK SC from the PyPI package ``noto-cjk-sans-otc`` (SIL Open Font License
1.1; one OpenType collection, ``NotoSansCJK-Regular.ttc``, no other font), a dependency of the
package.  :func:`use_language_fonts` (called by :func:`fedlab_utils.viz.plotting.use_style`) registers
it with matplotlib by path when the runtime language is Chinese (``FEDLAB_LANG=zh``), so titles,
axis labels and legends may be Chinese.  ``FEDLAB_CJK_FONT`` names another font file instead.

Where no CJK font can be found, nothing is registered and :func:`figure_text` gives the English
text: a figure never shows boxes for missing glyphs, and the Chinese caption in the notebook's
markdown says what is drawn.
"""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from fedlab_utils.i18n import gettext, language

__all__ = ["FONT_ENV", "CJK_FAMILY", "cjk_font_path", "register_cjk_font", "use_language_fonts", "cjk_font_active",
           "figure_text", "figure_label", "mixes_math_and_cjk"]

FONT_ENV = "FEDLAB_CJK_FONT"
#: the family matplotlib lists first for sans-serif text once the font is registered (the
#: collection also holds the JP/KR/TC/HK faces; SC draws simplified Chinese glyph forms)
CJK_FAMILY = "Noto Sans CJK SC"


def cjk_font_path() -> Path | None:
    """The CJK font file: ``$FEDLAB_CJK_FONT`` if set, else the one ``noto-cjk-sans-otc`` ships;
    ``None`` when neither exists."""
    named = os.environ.get(FONT_ENV, "").strip()
    if named:
        path = Path(named).expanduser()
        return path if path.is_file() else None
    try:
        import noto_cjk_sans_otc
    except ImportError:
        return None
    path = Path(str(noto_cjk_sans_otc.FONT_PATH))
    return path if path.is_file() else None


@functools.cache
def register_cjk_font(path: Path | None = None) -> str | None:
    """Register the CJK font file with matplotlib (once per path) and return the family to use,
    ``None`` if there is no font file or matplotlib cannot read it."""
    from matplotlib import font_manager

    path = cjk_font_path() if path is None else path
    if path is None:
        return None
    try:
        font_manager.fontManager.addfont(str(path))
    except (OSError, RuntimeError, ValueError):
        return None
    names = {entry.name for entry in font_manager.fontManager.ttflist if Path(entry.fname) == Path(path)}
    if CJK_FAMILY in names:
        return CJK_FAMILY
    return sorted(names)[0] if names else None


def use_language_fonts(lang: str | None = None) -> bool:
    """In the Chinese edition, draw text with the current Latin font and the CJK font after it
    (``font.family = [latin, "Noto Sans CJK SC"]``: matplotlib takes each glyph from the first
    font of the list that has it, so Latin text, digits and symbols such as ✗ look as in the
    English edition and Chinese characters come from Noto) and return ``True``; in English, or
    with no CJK font, change nothing and return ``False``."""
    import matplotlib as mpl
    from matplotlib import font_manager

    if language(lang) != "zh":
        return False
    family = register_cjk_font()
    if family is None:
        return False
    current = [name for name in mpl.rcParams["font.family"] if name != family] or ["sans-serif"]
    latin = font_manager.FontProperties(
        fname=font_manager.findfont(font_manager.FontProperties(family=current))).get_name()
    mpl.rcParams["font.family"] = [latin, family] if latin != family else [family]
    return True


def cjk_font_active() -> bool:
    """Whether matplotlib draws text with a registered CJK font among its families."""
    import matplotlib as mpl

    family = register_cjk_font()
    return family is not None and family in mpl.rcParams["font.family"]


#: a line that matplotlib hands to mathtext: it holds a ``$…$`` span (unescaped dollars)
MATH_LINE = re.compile(r"(?<!\\)\$.*?(?<!\\)\$")
#: CJK ideographs and full-width punctuation
CJK_CHAR = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")


def mixes_math_and_cjk(text: str) -> bool:
    """Whether a line of ``text`` holds both a ``$…$`` formula and Chinese characters.  Matplotlib
    draws such a whole line with its mathtext fonts, which have no CJK glyphs: it shows boxes, and
    without a "missing glyph" warning.  A Chinese label keeps each formula on a line of its own."""
    return any(MATH_LINE.search(line) and CJK_CHAR.search(line) for line in text.splitlines())


def figure_text(english: str, chinese: str, lang: str | None = None) -> str:
    """The text of a title, axis label or legend entry: ``chinese`` in the Chinese edition when a
    CJK font draws it, else ``english`` (never boxes for missing glyphs: also English when a line of
    ``chinese`` mixes a ``$…$`` formula with Chinese characters, see :func:`mixes_math_and_cjk`)."""
    if language(lang) == "zh" and cjk_font_active() and not mixes_math_and_cjk(chinese):
        return chinese
    return english


def figure_label(message: str, lang: str | None = None) -> str:
    """A package figure's title, axis label or legend entry from the runtime catalog: the
    translation of ``message`` in the Chinese edition when a CJK font draws it, else ``message``.
    Mark the literal where it is written, ``figure_label(N_("test accuracy (%)"))``, so that
    ``translate extract`` collects it; a template is formatted after: ``figure_label(N_("{n} rounds")).format(n=…)``."""
    return figure_text(message, gettext(message, lang), lang)
