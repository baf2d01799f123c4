"""Build the course website (``make site``): both editions, from the notebooks ``make course`` ran.

Run from the repository root::

    python website/build_site.py [--build build] [--out build/site]

Each edition is staged into ``<stage>/<edition>/`` (default ``build/site-src/``) and built with
Sphinx, myst-nb and sphinx-book-theme (``website/conf.py``) into ``<out>/en/`` and ``<out>/zh/``:

* ``index``: the landing page, taken from README.md / README.zh-CN.md (what the course is, the
  notebook table with study times and prerequisites, the article map), so it never drifts;
* one page per executed notebook (``build/notebooks/``, ``build/zh/notebooks/``) with its saved
  outputs, and download links to the executed notebook and, where ``make student`` made one,
  the student version;
* ``glossary``: generated from ``notebooks/locale/glossary.tsv``;
* ``docs/*``: the lasting docs (energy model, extending, datasets, deployment, architecture); the
  zh edition shows their Chinese twins, ``docs/zh/*.md``, and warns (on the page and in the build's
  output) where the English page changed after its twin was translated (``doc_translations.py``).

Nothing is executed and nothing is fetched: the build works offline.  Links that point into the
repository but not to a page of the site become links to the repository when ``site.toml`` names
one, and plain text otherwise, so the site has no broken link.
"""
from __future__ import annotations

import argparse
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import doc_translations  # website/doc_translations.py, beside this script
import nbformat

from fedlab_utils.course import ROOT, find_notebooks
from fedlab_utils.course.glossary import load_glossary

WEBSITE = Path(__file__).resolve().parent
EDITIONS = ("en", "zh")
SPHINX_LANGUAGE = {"en": "en", "zh": "zh_CN"}
DOCS = doc_translations.DOCS
README = {"en": ROOT / "README.md", "zh": ROOT / "README.zh-CN.md"}

TEXT = {
    "en": {
        "notebooks": "Notebooks", "reference": "Reference",
        "glossary_title": "Glossary · 中英术语表",
        "glossary_intro": "The course's terms in Chinese and English, and the notebook that introduces each "
                          "(generated from `notebooks/locale/glossary.tsv`).",
        "glossary_header": "| 中文 | English | notebook |",
        "all": "all",
        "download": "**Download:** {executed}",
        "executed": "this notebook, executed: {name}",
        "student": "the student version, exercises to do: {name}",
        "editions": "The course in Chinese: use the **中文** switch at the top of any page.",
        "reference_intro": "Reference pages: the [glossary](glossary.md), and the package's lasting docs: {docs}.",
    },
    "zh": {
        "notebooks": "笔记本", "reference": "参考资料",
        "glossary_title": "中英术语表 Glossary",
        "glossary_intro": "课程中的术语及其英文对照，以及引入每个术语的笔记本（由 `notebooks/locale/glossary.tsv` 生成）。",
        "glossary_header": "| 中文 | English | 笔记本 |",
        "all": "全部",
        "download": "**下载：**{executed}",
        "executed": "本笔记本（已执行）：{name}",
        "student": "学生版（练习待完成）：{name}",
        "editions": "英文版：点击任意页面顶部的 **English** 切换。",
        "reference_intro": "参考资料：[中英术语表](glossary.md)，以及课程软件包的参考文档：{docs}。",
    },
}


DOC_LABELS = {"en": {}, "zh": {"energy_model": "能耗模型", "extending": "扩展训练循环", "datasets": "数据集",
                             "deployment": "部署", "architecture": "架构"}}  # how the landing page names the docs


class SiteError(Exception):
    """A user-facing build error (missing executed notebooks, a failed Sphinx build)."""


# ----------------------------------------------------------------------------- markdown helpers
@dataclass(frozen=True)
class LinkContext:
    """Where a piece of markdown came from (``source``, repo-relative) and where it is staged (``staged``)."""

    source: str
    staged: str
    pages: dict[str, str]  # repo-relative path -> staged path, for everything that is a page of the site
    repository: str  # "" when site.toml names no repository
    branch: str


LINK = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]+)((?:\s+\"[^\"]*\")?)\)")


def rewrite_links(markdown: str, where: LinkContext) -> str:
    """Point each relative link at its page of the site, the repository, or drop it (keeping its text)."""

    def replace(match: re.Match) -> str:
        bang, text, target, title = match.groups()
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            return match.group(0)
        path, _, anchor = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(posixpath.dirname(where.source), path))
        staged_dir = posixpath.dirname(where.staged) or "."
        if repo_path in where.pages:
            page = where.pages[repo_path]
            if page == "index.md" and "glossary" in anchor.lower():
                page, anchor = "glossary.md", ""
            elif page == "index.md":
                anchor = ""
            new = posixpath.relpath(page, staged_dir) + (f"#{anchor}" if anchor else "")
            return f"{bang}[{text}]({new}{title})"
        if bang and repo_path.startswith("docs/img/") and (ROOT / repo_path).is_file():  # staged in docs/img/
            return f"{bang}[{text}]({posixpath.relpath(repo_path, staged_dir)}{title})"
        if bang and (ROOT / repo_path).is_file():  # an image of the repository: staged beside the page
            return match.group(0)
        if where.repository and (ROOT / repo_path).exists():
            kind = "tree" if (ROOT / repo_path).is_dir() else "blob"
            return f"{bang}[{text}]({where.repository}/{kind}/{where.branch}/{repo_path}{title})"
        return text

    return LINK.sub(replace, markdown)


def markdown_sections(text: str) -> list[tuple[int, str, int, int]]:
    """``(level, title, start, end)`` of each ATX heading outside code fences (line numbers)."""
    lines = text.splitlines()
    headings, fenced = [], False
    for number, line in enumerate(lines):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and (match := re.match(r"^(#{1,6})\s+(.*)$", line)):
            headings.append((len(match.group(1)), match.group(2).strip(), number))
    sections = []
    for index, (level, title, start) in enumerate(headings):
        end = next((s for lvl, _, s in headings[index + 1:] if lvl <= level), len(lines))
        sections.append((level, title, start, end))
    return sections


def readme_section(text: str, heading: str, level: int | None = None) -> str | None:
    """The block under the first heading that starts with ``heading`` (heading line included), or None."""
    lines = text.splitlines()
    for lvl, title, start, end in markdown_sections(text):
        if title.startswith(heading) and (level is None or lvl == level):
            return "\n".join(lines[start:end]).strip() + "\n"
    return None


def readme_intro(text: str) -> str:
    """What the course is: the README's paragraphs before its first ``##`` section, minus the edition links."""
    lines = text.splitlines()
    first = next(start for lvl, _, start, _ in markdown_sections(text) if lvl == 2)
    body = [line for line in lines[1:first] if "README" not in line]
    return "\n".join(body).strip() + "\n"


def link_notebook_names(markdown: str, stems: list[str], folder: str) -> str:
    """`` `NN_slug.ipynb` `` in a README table becomes a link to that notebook (``folder``: its repo folder)."""
    for stem in stems:
        markdown = markdown.replace(f"`{stem}.ipynb`", f"[`{stem}`]({folder}/{stem}.ipynb)")
    return markdown


# ----------------------------------------------------------------------------- staging
def executed_notebooks(build: Path, edition: str) -> list[Path]:
    """The executed notebook of every notebook of ``edition``; a clear error naming the missing ones."""
    folder = build / "notebooks" if edition == "en" else build / edition / "notebooks"
    sources = find_notebooks([], edition)
    missing = [p.name for p in sources if not (folder / p.name).is_file()]
    if missing:
        command = "make course" if edition == "en" else f"make course LANG={edition}"
        raise SiteError(f"the {edition} edition needs its executed notebooks in {folder}/; missing: "
                        f"{', '.join(missing)}. Run `{command}` first (make site never executes a notebook).")
    return [folder / p.name for p in sources]


def student_folder(build: Path, edition: str) -> Path:
    return build / "student" if edition == "en" else build / edition / "student"


def page_map(edition: str, stems: list[str]) -> dict[str, str]:
    """Repo-relative path -> staged page, for the links of ``edition``."""
    folder = "notebooks" if edition == "en" else f"notebooks/{edition}"
    pages = {f"{folder}/{stem}.ipynb": f"{stem}.ipynb" for stem in stems}
    pages[posixpath.relpath(README[edition], ROOT)] = "index.md"
    pages["notebooks/locale/glossary.tsv"] = "glossary.md"
    pages.update({f"docs/{name}.md": f"docs/{name}.md" for name in DOCS})
    if edition != "en":  # the docs' twins, docs/zh/NAME.md, are the edition's docs/NAME pages
        pages.update({f"docs/{edition}/{name}.md": f"docs/{name}.md" for name in DOCS})
    return pages


def landing_page(edition: str, stems: list[str], context: LinkContext) -> str:
    """The landing page: title, intro, notebook table and article map from the edition's README."""
    text = README[edition].read_text(encoding="utf-8")
    english = README["en"].read_text(encoding="utf-8")
    title = text.splitlines()[0].lstrip("# ").strip()
    if edition == "en":
        notebooks = readme_section(text, "The notebooks", 2)
    else:
        notebooks = readme_section(text, "笔记本", 2)
        article = readme_section(text, "原文", 3) or readme_section(text, "原文", 2)
        if article is None:  # README.zh-CN.md has no article map yet: show the English one, saying so
            english_map = readme_section(english, "The article, section by section", 3) or ""
            article = ("### 原文逐节对照（英文）\n\n" + "\n".join(english_map.splitlines()[1:]))
        if article.strip() not in notebooks:  # README.zh-CN.md keeps its article map under 笔记本, as README.md does
            notebooks = notebooks.rstrip() + "\n\n" + article
    if notebooks is None:
        raise SiteError(f"{README[edition].name} has no notebook section; the landing page takes its table from it")
    words = TEXT[edition]
    docs = ("、" if edition == "zh" else ", ").join(f"[{DOC_LABELS[edition].get(name, name.replace('_', ' '))}](docs/{name}.md)" for name in DOCS)
    body = "\n\n".join([f"# {title}", readme_intro(text), words["editions"],
                        link_notebook_names(notebooks, stems, "notebooks" if edition == "en" else f"notebooks/{edition}"), f"## {words['reference']}",
                        words["reference_intro"].format(docs=docs)])
    toc_notebooks = "\n".join(stems)
    toc_reference = "\n".join(["glossary", *[f"docs/{name}" for name in DOCS]])
    body += (f"\n\n```{{toctree}}\n:hidden:\n:caption: {words['notebooks']}\n\n{toc_notebooks}\n```\n"
             f"\n```{{toctree}}\n:hidden:\n:caption: {words['reference']}\n\n{toc_reference}\n```\n")
    return rewrite_links(body, context)


def glossary_page(edition: str, stems: list[str]) -> str:
    """The glossary from ``notebooks/locale/glossary.tsv``, each term linked to the notebook that introduces it."""
    words = TEXT[edition]
    by_number = {stem[:2]: stem for stem in stems}

    def where(value: str) -> str:
        links = [f"[{n}]({by_number[n]}.ipynb)" if n in by_number else n for n in re.findall(r"\d\d", value)]
        return ", ".join(links) if links else words["all"] if value.strip() == "all" else value

    rows = [f"| {t.zh} | {t.en} | {where(t.where)} |" for t in load_glossary()]
    return "\n".join([f"# {words['glossary_title']}", "", words["glossary_intro"], "",
                      words["glossary_header"], "|---|---|---|", *rows, ""])


def search_terms(path: Path) -> None:
    """jieba's user dictionary: every Chinese glossary term, so each is indexed as one word too."""
    terms = sorted({zh for t in load_glossary() for zh in (t.zh, *t.zh_match) if zh and not re.search(r"\s", zh)})
    path.write_text("".join(f"{term} 200000\n" for term in terms), encoding="utf-8")


def stage_notebook(executed: Path, target: Path, student: Path | None, context: LinkContext, edition: str) -> None:
    """The executed notebook with its links pointed at the site, and a download cell after its title."""
    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = rewrite_links(cell.source, context)
    words = TEXT[edition]
    links = f"{{download}}`{words['executed'].format(name=executed.name)} <{executed.name}>`"
    if student is not None:
        links += f" · {{download}}`{words['student'].format(name=student.name)} <_student/{student.name}>`"
    download = nbformat.v4.new_markdown_cell(words["download"].format(executed=links))
    download.metadata["tags"] = ["fedlab-site-downloads"]
    if nb.nbformat_minor < 5:  # cell ids came with nbformat 4.5
        download.pop("id", None)
    first_markdown = 1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0
    nb.cells.insert(first_markdown, download)
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)


def doc_source(edition: str, name: str) -> tuple[str, str]:
    """The repo path and text of doc ``name`` in ``edition``: the zh edition's twin, with a note when stale.

    A twin that is missing or older than its English page is reported on stderr; a stale twin is
    shown with a warning above it, and a missing one falls back to the English page, saying so.
    """
    if edition == "en":
        return f"docs/{name}.md", (ROOT / "docs" / f"{name}.md").read_text(encoding="utf-8")
    state = doc_translations.twin_state(name)
    if state.status == "missing":
        print(f"  warning: {state.detail}; the {edition} edition shows the English page", file=sys.stderr)
        return f"docs/{name}.md", (":::{note}\n本页尚无中文译文，以下是英文原文。\n:::\n\n"
                                   + (ROOT / "docs" / f"{name}.md").read_text(encoding="utf-8"))
    text = doc_translations.twin_body(name)
    if state.status == "stale":
        print(f"  warning: stale translation: {state.detail}", file=sys.stderr)
        title, _, body = text.partition("\n")  # the note goes under the page's title
        text = f"{title}\n\n{doc_translations.stale_note(name)}{body}" if title.startswith("# ") else \
            doc_translations.stale_note(name) + text
    return f"docs/{edition}/{name}.md", text


def stage_edition(edition: str, build: Path, stage: Path, settings: dict) -> list[str]:
    """Write the source folder of one edition; returns its page names (Sphinx docnames)."""
    notebooks = executed_notebooks(build, edition)
    stems = [p.stem for p in notebooks]
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    pages = page_map(edition, stems)
    repository, branch = settings.get("repository_url", "").rstrip("/"), settings.get("branch") or "main"

    def context(source: str, staged: str) -> LinkContext:
        return LinkContext(source, staged, pages, repository, branch)

    readme = posixpath.relpath(README[edition], ROOT)
    (stage / "index.md").write_text(landing_page(edition, stems, context(readme, "index.md")), encoding="utf-8")
    (stage / "glossary.md").write_text(glossary_page(edition, stems), encoding="utf-8")
    (stage / "docs").mkdir(exist_ok=True)
    for name in DOCS:
        source, text = doc_source(edition, name)
        (stage / "docs" / f"{name}.md").write_text(rewrite_links(text, context(source, f"docs/{name}.md")),
                                                   encoding="utf-8")
    for image in sorted((ROOT / "docs" / "img").glob("*")):  # images the docs show, beside them
        if image.is_file():
            (stage / "docs" / "img").mkdir(parents=True, exist_ok=True)
            shutil.copy2(image, stage / "docs" / "img" / image.name)
    students = student_folder(build, edition)
    folder = "notebooks" if edition == "en" else f"notebooks/{edition}"
    for executed in notebooks:
        student = students / executed.name
        if student.is_file():
            (stage / "_student").mkdir(exist_ok=True)
            shutil.copy2(student, stage / "_student" / student.name)
        stage_notebook(executed, stage / executed.name, student if student.is_file() else None,
                       context(f"{folder}/{executed.name}", executed.name), edition)
    if edition == "zh":
        search_terms(stage / "_search_terms.txt")
    return ["index", "glossary", *[f"docs/{name}" for name in DOCS], *stems]


MATHJAX_PACKAGE = "sphinx-mathjax-offline"  # MathJax 3 on PyPI (the [site] extra), under this import name
MATHJAX_ENTRY = "tex-chtml.js"  # TeX in, HTML+CSS out: the one combined bundle the pages load
# What tex-chtml.js loads on demand: its web fonts, TeX extensions (autoload), the menu's renderers and
# accessibility parts.  The other combined bundles (SVG, MathML input, node) are never loaded.
MATHJAX_PARTS = (MATHJAX_ENTRY, "input", "output", "ui", "a11y", "sre", "adaptors")


def mathjax_source() -> Path:
    """The MathJax 3 files that sphinx-mathjax-offline ships (a clear error when the extra is missing)."""
    import importlib.util

    spec = importlib.util.find_spec(MATHJAX_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SiteError(f"the {MATHJAX_PACKAGE} package is not installed: `make site` installs the [site] extra "
                        "(pip install -e '.[site]'), which brings MathJax for the pages' formulas")
    source = Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax"
    if not (source / MATHJAX_ENTRY).is_file():
        raise SiteError(f"{source}/{MATHJAX_ENTRY} is missing: reinstall {MATHJAX_PACKAGE}")
    return source


def mathjax_folder(stage_root: Path) -> Path:
    """MathJax 3 staged once as ``<stage_root>/_mathjax/mathjax`` (Sphinx copies it into ``_static/``)."""
    source, target = mathjax_source(), stage_root / "_mathjax"
    if not (target / "mathjax" / MATHJAX_ENTRY).is_file():
        shutil.rmtree(target, ignore_errors=True)
        (target / "mathjax").mkdir(parents=True)
        for part in MATHJAX_PARTS:
            if (source / part).is_dir():
                shutil.copytree(source / part, target / "mathjax" / part)
            elif (source / part).is_file():
                shutil.copy2(source / part, target / "mathjax" / part)
    return target


def sphinx_build(edition: str, stage: Path, out: Path, static: Path) -> None:
    """One Sphinx build of a staged edition into ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-c", str(WEBSITE),
               "-D", f"language={SPHINX_LANGUAGE[edition]}", "-d", str(stage.parent / f".doctrees-{edition}"),
               str(stage), str(out)]
    env = {**os.environ, "FEDLAB_SITE_STATIC": str(static.resolve())}  # Sphinx reads it from website/
    result = subprocess.run(command, env=env, cwd=ROOT)
    if result.returncode != 0:
        raise SiteError(f"sphinx-build failed for the {edition} edition (exit {result.returncode}); see above")
    if not (out / "_static" / "mathjax" / MATHJAX_ENTRY).is_file():
        raise SiteError(f"{out}/_static/mathjax/{MATHJAX_ENTRY} is missing: the pages' formulas would not render offline")


def build_site(build: Path, out: Path, stage_root: Path, editions: tuple[str, ...] = EDITIONS) -> dict[str, list[str]]:
    """Stage and build every edition; returns each edition's page names."""
    import tomllib

    settings = tomllib.loads((WEBSITE / "site.toml").read_text(encoding="utf-8"))["launch"]
    for edition in editions:  # check every edition before building any
        executed_notebooks(build, edition)
    static = mathjax_folder(stage_root)
    pages = {}
    for edition in editions:
        pages[edition] = stage_edition(edition, build, stage_root / edition, settings)
    for edition in editions:
        other = next(e for e in EDITIONS if e != edition)
        info = {"edition": edition, "other": other, "other_pages": pages.get(other, [])}
        (stage_root / edition / "_edition.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
        start = time.perf_counter()
        sphinx_build(edition, stage_root / edition, out / edition, static)
        print(f"  {edition}: {len(pages[edition])} pages -> {out / edition}/ ({time.perf_counter() - start:.1f} s)")
    index = out / "index.html"  # the site's root sends a reader to the English edition
    index.write_text('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                     '<meta http-equiv="refresh" content="0; url=en/index.html">'
                     '<link rel="icon" href="data:,">'  # it redirects at once: no icon to fetch
                     '<title>Efficient Federated Learning · 高效联邦学习</title></head>\n'
                     '<body><p><a href="en/index.html">Efficient Federated Learning (English)</a> · '
                     '<a href="zh/index.html" lang="zh-CN">高效联邦学习（中文）</a></p></body></html>\n',
                     encoding="utf-8")
    return pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", default="build", help="where `make course` wrote its output (default: build)")
    parser.add_argument("--out", default="build/site", help="the website (default: build/site)")
    parser.add_argument("--stage", default="build/site-src", help="staged Sphinx sources (default: build/site-src)")
    parser.add_argument("--editions", nargs="+", choices=EDITIONS, default=list(EDITIONS),
                        help="editions to build (default: en zh)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        build_site(Path(args.build), Path(args.out), Path(args.stage), tuple(args.editions))
    except SiteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Website in {args.out}/ ({time.perf_counter() - start:.0f} s): open {args.out}/en/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
