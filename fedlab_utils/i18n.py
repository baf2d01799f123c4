"""Runtime messages in the student's language, through Python's :mod:`gettext`.

What a student reads while a notebook runs — exercise-check hints and failure messages, the
claims table's headers, explorer labels, device notices — is written in English in the code and
wrapped in :func:`_`::

    from .i18n import _
    raise AssertionError(_("{what}: expected a number, got {kind}.").format(what=..., kind=...))

The language is the ``lang`` argument, else the ``FEDLAB_LANG`` environment variable (``zh``,
``zh_CN`` or ``zh-CN`` for Chinese; ``en`` or unset for English).  ``python -m fedlab_utils run
--lang zh`` and ``classroom --lang zh`` set it for the kernels they start.

The Chinese catalog is ``fedlab_utils/locale/zh_CN/LC_MESSAGES/fedlab_utils.po`` (shipped as
package data); it is compiled to ``.mo`` in memory with polib on first use, so no build step is
needed.  Fuzzy and untranslated entries fall back to the English text (gettext's rule).
``tests/test_i18n.py`` checks that every ``_("…")`` message in the package has a current
translation with the same ``{placeholders}``.  A placeholder holds a value, never an English word:
a case that changes the words is its own whole message.  Chinese text in figures needs the CJK
font that :mod:`fedlab_utils.viz.fonts` registers.
"""
from __future__ import annotations

import functools
import gettext as _gettext
import io
import os
from pathlib import Path

__all__ = ["LANG_ENV", "LANGUAGES", "N_", "catalog_path", "gettext", "language", "translations", "_"]

LANG_ENV = "FEDLAB_LANG"
DOMAIN = "fedlab_utils"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
#: language code -> gettext locale of its catalog (``None``: the English source text)
LANGUAGES: dict[str, str | None] = {"en": None, "zh": "zh_CN"}
_ALIASES = {"": "en", "en": "en", "en_us": "en", "en_gb": "en", "c": "en",
            "zh": "zh", "zh_cn": "zh", "zh_hans": "zh", "cn": "zh", "chinese": "zh"}


def language(lang: str | None = None) -> str:
    """The language code (``"en"`` or ``"zh"``) for ``lang``, else ``$FEDLAB_LANG``, else English.

    Raises ``ValueError`` naming the bad value and the valid ones."""
    source = "lang" if lang is not None else LANG_ENV
    value = lang if lang is not None else os.environ.get(LANG_ENV, "")
    key = value.strip().lower().replace("-", "_").split(".")[0]
    if key not in _ALIASES:
        raise ValueError(f"{source}={value!r} is not a supported language; use 'en' or 'zh' "
                         f"(also accepted: {sorted(k for k in _ALIASES if k)})")
    return _ALIASES[key]


def catalog_path(lang: str) -> Path:
    """The ``.po`` catalog of a language code (``zh`` -> ``locale/zh_CN/LC_MESSAGES/fedlab_utils.po``)."""
    locale = LANGUAGES[language(lang)]
    if locale is None:
        raise ValueError(f"lang={lang!r} is the source language; it has no catalog")
    return LOCALE_DIR / locale / "LC_MESSAGES" / f"{DOMAIN}.po"


@functools.cache
def translations(lang: str) -> _gettext.NullTranslations:
    """The gettext translations of a language code, compiled from its ``.po`` with polib (cached)."""
    code = language(lang)
    if LANGUAGES[code] is None:
        return _gettext.NullTranslations()
    import polib

    return _gettext.GNUTranslations(io.BytesIO(polib.pofile(str(catalog_path(code))).to_binary()))


def gettext(message: str, lang: str | None = None) -> str:
    """``message`` in the selected language (the English ``message`` itself when untranslated)."""
    return translations(language(lang)).gettext(message)


_ = gettext


def N_(message: str) -> str:
    """Mark a module-level constant as a message (gettext's ``gettext_noop``): it is collected into
    the catalog but translated only where it is used, ``gettext(CONSTANT)``, so that the language
    is read when the text is shown, not at import."""
    return message
