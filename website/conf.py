"""Sphinx configuration of the course website, one edition per build.

``website/build_site.py`` stages each edition (landing page, executed notebooks, glossary, docs)
into its own source folder and runs ``sphinx-build -c website -D language=en|zh_CN`` on it; this
file is shared by both.  The staged folder holds ``_edition.json`` (this edition, the other one
and the other edition's pages), which drives the language switch on every page.  Launch buttons
come from ``website/site.toml``, the one place where their URLs are set.

Nothing is executed here (``nb_execution_mode = "off"``): the pages show the outputs that
``make course`` saved.  Nothing is fetched either: MathJax is served from the site itself.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import tomllib
from sphinx.search.zh import SearchChinese

WEBSITE = Path(__file__).resolve().parent
SETTINGS = tomllib.loads((WEBSITE / "site.toml").read_text(encoding="utf-8"))["launch"]

project = "Efficient Federated Learning"
author = "The Efficient Federated Learning course"
copyright = "the course's authors"
language = "en"

extensions = ["myst_nb"]
nb_execution_mode = "off"  # show the outputs `make course` saved; never run a notebook again
nb_ipywidgets_js = {}  # headless runs save static views, no widget state: load no widget JS from a CDN
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]  # a notebook may start its sections at ### (a lesson, not a book)
exclude_patterns = ["_build", "**.ipynb_checkpoints", "_student/**", "_downloads/**"]
templates_path = [str(WEBSITE / "templates")]
html_static_path = [str(WEBSITE / "static")]
html_css_files = ["fedlab.css"]
html_favicon = str(WEBSITE / "static" / "favicon.svg")  # else browsers ask for /favicon.ico, which a static host may lack
html_theme = "sphinx_book_theme"
html_copy_source = True
html_context = {"default_mode": "light"}  # an explicit colour mode: the theme logs an error when none is set
html_last_updated_fmt = None
# MathJax 3 (sphinx-mathjax-offline's copy), staged by the builder into _static/mathjax: no CDN.
# myst-parser sets its options (typeset only elements of class "math", never code or outputs).
mathjax_path = "mathjax/tex-chtml.js"

LABELS = {
    "en": {"title": "Efficient Federated Learning", "switch": "中文", "switch_title": "这一页的中文版"},
    "zh": {"title": "高效联邦学习", "switch": "English", "switch_title": "This page in English"},
}


def launch_options(edition: str) -> dict:
    """sphinx-book-theme's repository and launch-button options from ``site.toml`` (none when empty)."""
    repository = SETTINGS.get("repository_url", "").rstrip("/")
    if not repository:
        return {}
    launch = {"notebook_interface": "jupyterlab"}
    if "github.com" in repository:
        launch["colab_url"] = "https://colab.research.google.com"
    if SETTINGS.get("jupyterhub_url"):
        launch["jupyterhub_url"] = SETTINGS["jupyterhub_url"].rstrip("/")
    return {"repository_url": repository, "repository_branch": SETTINGS.get("branch") or "main",
            "path_to_docs": "notebooks" if edition == "en" else f"notebooks/{edition}",
            "launch_buttons": launch, "use_repository_button": True}


def edition_of(language_code: str | None) -> str:
    """``en`` or ``zh`` from Sphinx's ``language`` (``zh_CN`` is the Chinese edition)."""
    return "zh" if (language_code or "en").lower().startswith("zh") else "en"


def configure_edition(app, config) -> None:
    """Title, theme options, search options and language switch for the edition being built."""
    edition = edition_of(config.language)
    labels = LABELS[edition]
    config.html_title = labels["title"]
    config.html_theme_options = {
        "article_header_end": ["lang-switch.html", "article-header-buttons.html"],
        "home_page_in_toc": True, "show_navbar_depth": 1, "use_download_button": True,
        "use_fullscreen_button": False, **launch_options(edition)}
    if os.environ.get("FEDLAB_SITE_STATIC"):  # the builder's staged MathJax -> _static/mathjax
        config.html_static_path = [*config.html_static_path, os.environ["FEDLAB_SITE_STATIC"]]
    dictionary = Path(app.srcdir) / "_search_terms.txt"
    if edition == "zh" and dictionary.is_file():
        # jieba splits Chinese text into words; the glossary's terms (误差反馈, ...) are added to
        # its dictionary so that each is also indexed as one word and a search for it finds it.
        config.html_search_options = {"dict": str(dictionary)}


def twin_url(pagename: str, other: str, other_pages: set[str]) -> str:
    """The relative URL of ``pagename``'s twin in the ``other`` edition (its landing page if it has none)."""
    up = "../" * (pagename.count("/") + 1)
    target = pagename if pagename in other_pages else "index"
    return f"{up}{other}/{target}.html"


def add_language_switch(app, pagename, templatename, context, doctree) -> None:
    """Give every page's template the URL of the same page in the other edition."""
    info = json.loads((Path(app.srcdir) / "_edition.json").read_text(encoding="utf-8"))
    other_pages = set(info["other_pages"]) | {"search", "genindex"}
    context["fedlab_twin_url"] = twin_url(pagename, info["other"], other_pages)
    context["fedlab_twin_lang"] = "zh-CN" if info["other"] == "zh" else "en"
    context["fedlab_switch_label"] = LABELS[info["edition"]]["switch"]
    context["fedlab_switch_title"] = LABELS[info["edition"]]["switch_title"]


class ChineseSearch(SearchChinese):
    """Sphinx's Chinese search, whose JavaScript stemmer is named after the code it ships.

    Sphinx 9.0 gives the zh search the English stemmer's code (``EnglishStemmer``) but writes
    ``window.Stemmer = ChineseStemmer`` into language_data.js, an error on every page.
    """

    language_name = "English"


def setup(app):
    app.add_search_language(ChineseSearch)
    app.connect("config-inited", configure_edition)
    app.connect("html-page-context", add_language_switch)
    return {"parallel_read_safe": True}
