"""The course website's tooling (website/): the link check fails on a missing file, pages are
staged from the READMEs and the glossary, the language switch points at the twin page, Chinese
search terms are indexed whole, and the bootstrap cell is inserted once and is a no-op in the repo.

The full build and browser check run in ``make site`` / ``make site-check``; the notebook that runs
on its own in ``make standalone-check`` (both slow, run by CI)."""
from __future__ import annotations

import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("sphinx", reason="the website's tests need the [site] extra; make site-check installs it "
                                      "and runs them")

ROOT = Path(__file__).resolve().parent.parent
WEBSITE = ROOT / "website"


def load(name: str):
    """A module of website/ (scripts run from the repository root, not an installed package)."""
    spec = importlib.util.spec_from_file_location(f"website_{name}", WEBSITE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


check_site = load("check_site")
doc_translations = sys.modules["doc_translations"] = load("doc_translations")  # build_site imports it by name
build_site = load("build_site")
bootstrap = load("bootstrap_cell")
conf = load("conf")


def fake_site(root: Path, broken: bool) -> Path:
    """Two editions of one page each, linking to each other, an image and an anchor; optionally a missing file."""
    for edition, other in (("en", "zh"), ("zh", "en")):
        folder = root / edition
        (folder / "_images").mkdir(parents=True)
        shutil.copy(ROOT / "docs" / "img" / "sweep_00_rounds_seed.png", folder / "_images" / "plot.png")
        link = '<a href="missing.html">gone</a>' if broken and edition == "en" else ""
        (folder / "index.html").write_text(
            f'<!DOCTYPE html><html lang="{edition}"><head><meta charset="utf-8"><title>t</title></head><body>'
            f'<h1 id="top">Course</h1><a href="#top">top</a> <a href="../{other}/index.html#top">switch</a> '
            f'<a href="https://example.org/x">external</a> <img src="_images/plot.png" alt="plot"> {link}'
            f'</body></html>', encoding="utf-8")
    return root


def test_link_check_fails_when_a_page_links_to_a_missing_file(tmp_path):
    problems = check_site.link_problems(fake_site(tmp_path, broken=True))
    assert len(problems) == 1 and "en/index.html" in problems[0] and "missing.html" in problems[0], problems


def test_link_check_passes_a_site_whose_links_all_resolve(tmp_path):
    assert check_site.link_problems(fake_site(tmp_path, broken=False)) == []


def test_link_check_catches_a_missing_image_and_a_missing_anchor(tmp_path):
    site = fake_site(tmp_path, broken=False)
    page = site / "zh" / "index.html"
    page.write_text(page.read_text().replace("_images/plot.png", "_images/none.png").replace("#top\">switch",
                                                                                           "#nowhere\">switch"))
    problems = check_site.link_problems(site)
    assert any("none.png" in p for p in problems) and any("#nowhere" in p for p in problems), problems


def test_the_command_line_check_exits_1_on_a_missing_file(tmp_path):
    site = fake_site(tmp_path, broken=True)
    result = subprocess.run([sys.executable, str(WEBSITE / "check_site.py"), "--site", str(site), "--links-only"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1 and "missing.html" in result.stdout, result.stdout + result.stderr


@pytest.mark.skipif(not check_site.CHROMIUM.is_file(),
                    reason="/usr/bin/chromium is absent (make site-check installs it with apt-get)")
def test_the_browser_check_reports_the_failed_request_of_a_missing_image(tmp_path):
    pytest.importorskip("playwright", reason="playwright comes with the [site] extra (make site-check)")
    site = fake_site(tmp_path, broken=False)
    page = site / "en" / "index.html"
    page.write_text(page.read_text().replace("_images/plot.png", "_images/none.png"))
    with check_site.serve(site) as base, check_site.chromium() as browser:
        loaded, problems = check_site.page_problems(browser, base, site)
    assert loaded == 2
    assert any("failed request" in p and "none.png" in p and "404" in p for p in problems), problems
    assert any("image does not load" in p and "none.png" in p for p in problems), problems
    assert not any("zh/index.html" in p for p in problems), problems  # the intact page is clean


def math_site(root: Path, with_mathjax: bool) -> Path:
    """One page with an inline and a displayed formula, as Sphinx writes them; MathJax staged or not."""
    folder = root / "en"
    folder.mkdir(parents=True)
    script = ""
    if with_mathjax:
        build_site.mathjax_folder(root / "stage")
        shutil.copytree(root / "stage" / "_mathjax" / "mathjax", folder / "_static" / "mathjax")
        script = ('<script>window.MathJax = {"options": {"processHtmlClass": "math"}}</script>'
                  '<script defer src="_static/mathjax/tex-chtml.js"></script>')
    (folder / "00_federated_baseline.html").write_text(
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>t</title>'
        f'<link rel="icon" href="data:,">{script}</head><body class="tex2jax_ignore"><p>Clients hold '
        r'<span class="math notranslate nohighlight">\(n_k\)</span> samples.</p>'
        r'<div class="math notranslate nohighlight">\[w_{t+1} = \sum_k \frac{n_k}{n} w_k\]</div>'
        '<p>多个**能耗配置（profile）**下</p></body></html>', encoding="utf-8")  # emphasis CommonMark left open
    return root


@pytest.mark.skipif(not check_site.CHROMIUM.is_file(),
                    reason="/usr/bin/chromium is absent (make site-check installs it with apt-get)")
@pytest.mark.parametrize("with_mathjax", [True, False])
def test_the_browser_check_sees_whether_mathjax_typeset_the_formulas(tmp_path, with_mathjax):
    pytest.importorskip("playwright", reason="playwright comes with the [site] extra (make site-check)")
    site = math_site(tmp_path, with_mathjax)
    math = check_site.MathCount()
    with check_site.serve(site) as base, check_site.chromium() as browser:
        loaded, problems = check_site.page_problems(browser, base, site, math)
    assert loaded == 1
    if with_mathjax:
        assert problems == [] and math.formulas == 2 and math.displayed == 1, (problems, math)
        assert len(math.markdown_left) == 1 and "**能耗配置" in math.markdown_left[0]  # a warning, not a problem
    else:
        assert math.formulas == 0
        assert any("MathJax did not load" in p for p in problems), problems
        assert sum("not typeset" in p for p in problems) == 2, problems
        assert any("TeX source visible" in p and "\\frac" in p for p in problems), problems


@pytest.mark.skipif(not check_site.CHROMIUM.is_file(),
                    reason="/usr/bin/chromium is absent (make site-check installs it with apt-get)")
def test_the_browser_check_reports_a_request_that_leaves_127_0_0_1(tmp_path):
    pytest.importorskip("playwright", reason="playwright comes with the [site] extra (make site-check)")
    site = fake_site(tmp_path, broken=False)
    page = site / "en" / "index.html"
    page.write_text(page.read_text().replace("</body>", '<script src="https://cdn.example.org/m.js"></script></body>'))
    with check_site.serve(site) as base, check_site.chromium() as browser:
        _, problems = check_site.page_problems(browser, base, site)
    assert any("off-site request" in p and "cdn.example.org" in p for p in problems), problems
    assert not any("zh/index.html" in p for p in problems), problems


def test_is_local_accepts_only_this_machine():
    assert check_site.is_local("http://127.0.0.1:8000/en/index.html") and check_site.is_local("data:,")
    assert not check_site.is_local("https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js")
    assert not check_site.is_local("http://localhost.example.org/x")


def test_the_language_switch_points_at_the_same_page_in_the_other_edition():
    pages = {"index", "02_compression", "docs/energy_model"}
    assert conf.twin_url("02_compression", "zh", pages) == "../zh/02_compression.html"
    assert conf.twin_url("docs/energy_model", "en", pages) == "../../en/docs/energy_model.html"
    assert conf.twin_url("08_missing", "zh", pages) == "../zh/index.html"  # no twin: the other landing page


def test_launch_buttons_are_off_until_site_toml_names_a_repository():
    assert conf.SETTINGS["repository_url"] == "" and conf.launch_options("en") == {}
    conf.SETTINGS.update(repository_url="https://github.com/org/course", jupyterhub_url="https://hub.example.edu")
    try:
        options = conf.launch_options("zh")
    finally:
        conf.SETTINGS.update(repository_url="", jupyterhub_url="")
    assert options["path_to_docs"] == "notebooks/zh"
    assert options["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert options["launch_buttons"]["jupyterhub_url"] == "https://hub.example.edu"


def test_links_point_at_site_pages_the_repository_or_become_text():
    pages = build_site.page_map("zh", ["00_federated_baseline", "02_compression"])
    where = build_site.LinkContext("notebooks/zh/00_federated_baseline.ipynb", "00_federated_baseline.ipynb",
                                   pages, "", "main")
    text = ("[next](02_compression.ipynb) [home](../../README.zh-CN.md#笔记本) "
            "[terms](../../README.zh-CN.md#中英术语表-glossary) [model](../../docs/energy_model.md#x) "
            "[tests](../../tests/test_data.py) [web](https://flower.ai/docs)")
    assert build_site.rewrite_links(text, where) == (
        "[next](02_compression.ipynb) [home](index.md) [terms](glossary.md) "
        "[model](docs/energy_model.md#x) tests [web](https://flower.ai/docs)")
    with_repo = build_site.LinkContext(where.source, where.staged, pages, "https://github.com/org/course", "main")
    assert build_site.rewrite_links("[tests](../../tests/test_data.py)", with_repo) == \
        "[tests](https://github.com/org/course/blob/main/tests/test_data.py)"


def test_the_landing_pages_take_their_tables_from_the_readmes():
    stems = [p.stem for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))]
    for edition, words in (("en", ("study time", "prerequisites", "The article, section by section")),
                           ("zh", ("学习时间", "先修", "原文"))):
        readme = build_site.README[edition]
        context = build_site.LinkContext(readme.name, "index.md", build_site.page_map(edition, stems), "", "main")
        page = build_site.landing_page(edition, stems, context)
        assert all(word in page for word in words), (edition, page[:500])
        article = {"en": "The article, section by section", "zh": "原文逐节对照"}[edition]
        assert page.count(article) == 1, (edition, "the article map appears once")
        assert all(f"]({stem}.ipynb)" in page for stem in stems)  # every notebook linked from its table row
        assert "{toctree}" in page


def test_the_glossary_page_lists_every_term_with_its_notebook():
    from fedlab_utils.course.glossary import load_glossary

    stems = [p.stem for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))]
    page = build_site.glossary_page("zh", stems)
    assert all(f"| {term.zh} | {term.en} |" in page for term in load_glossary())
    assert "| 误差反馈 | error feedback | [02](02_compression.ipynb) |" in page


def test_chinese_glossary_terms_are_indexed_as_whole_words(tmp_path):
    pytest.importorskip("jieba", reason="jieba comes with the [site] extra (make site)")
    from sphinx.search.zh import SearchChinese

    dictionary = tmp_path / "terms.txt"
    build_site.search_terms(dictionary)
    assert "误差反馈 " in dictionary.read_text(encoding="utf-8")
    words = SearchChinese({"dict": str(dictionary)}).split("压缩时使用误差反馈可以弥补量化误差")
    assert "误差反馈" in words, words


def course_notebook(tmp_path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 00 · Title"), nbformat.v4.new_code_cell("x = 1")]
    path = tmp_path / "00_lesson.ipynb"
    nbformat.write(nb, path)
    return path


def test_the_bootstrap_cell_is_inserted_once_after_the_title(tmp_path):
    path = course_notebook(tmp_path)
    assert bootstrap.insert(path, "fedlab-utils") is True
    first = path.read_bytes()
    assert bootstrap.insert(path, "fedlab-utils") is False and path.read_bytes() == first  # idempotent
    cells = nbformat.read(path, as_version=4).cells
    assert [c.cell_type for c in cells] == ["markdown", "code", "code"]
    assert cells[1].id == bootstrap.CELL_ID and cells[1].metadata["nbgrader"]["locked"]
    assert bootstrap.insert(path, "https://example.org/fedlab_utils-0.1.0-py3-none-any.whl") is True  # updated
    cells = nbformat.read(path, as_version=4).cells
    assert sum(c.get("id") == bootstrap.CELL_ID for c in cells) == 1
    assert "fedlab_utils-0.1.0-py3-none-any.whl" in cells[1].source
    assert subprocess.run([sys.executable, str(WEBSITE / "bootstrap_cell.py"), "--check", str(path)]).returncode == 1


def test_the_bootstrap_cell_does_nothing_where_the_package_is_installed():
    source = bootstrap.cell_source()
    assert len(source.splitlines()) <= 13 and "FEDLAB_INSTALL_SOURCE" in source
    output = io.StringIO()
    env = os.environ.pop("FEDLAB_INSTALL_SOURCE", None)
    try:
        with redirect_stdout(output):
            exec(compile(source, "bootstrap", "exec"), {})  # fedlab_utils imports here: no pip, no output
    finally:
        if env is not None:
            os.environ["FEDLAB_INSTALL_SOURCE"] = env
    assert output.getvalue() == ""


def test_the_default_dataset_is_read_from_the_package_outside_the_repository(tmp_path):
    from fedlab_utils.data import PACKAGE_DATA_DIR, load_dataset, mnist5k_folder

    assert (PACKAGE_DATA_DIR / "mnist5k.npz").is_file()
    assert mnist5k_folder(tmp_path) == PACKAGE_DATA_DIR  # an empty data folder: the package's copy
    outside = load_dataset("mnist5k", seed=3, data_dir=tmp_path)
    inside = load_dataset("mnist5k", seed=3)
    assert len(outside.y_train) == 4000 and bool((outside.x_train == inside.x_train).all())


def test_a_staged_notebook_links_its_executed_and_student_versions(tmp_path):
    executed, student = course_notebook(tmp_path), tmp_path / "student.ipynb"
    nb = nbformat.read(executed, as_version=4)
    nb.cells[0].source += "\n\nNext: [01](01_next.ipynb) · home: [README](../README.md)"
    nbformat.write(nb, executed)
    shutil.copy(executed, student)
    pages = build_site.page_map("en", ["00_lesson", "01_next"])
    where = build_site.LinkContext("notebooks/00_lesson.ipynb", "00_lesson.ipynb", pages, "", "main")
    target = tmp_path / "stage" / "00_lesson.ipynb"
    build_site.stage_notebook(executed, target, student, where, "en")
    cells = nbformat.read(target, as_version=4).cells
    assert "[01](01_next.ipynb)" in cells[0].source and "[README](index.md)" in cells[0].source
    assert cells[1].metadata["tags"] == ["fedlab-site-downloads"]
    assert "<00_lesson.ipynb>" in cells[1].source and "<_student/student.ipynb>" in cells[1].source
    assert [c.source for c in cells[2:]] == ["x = 1"]


def test_without_an_install_source_the_bootstrap_cell_says_how_to_give_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FEDLAB_INSTALL_SOURCE"}
    # -S: no site-packages, so fedlab_utils cannot be imported (as in a fresh environment); no pip runs
    result = subprocess.run([sys.executable, "-S", "-c", bootstrap.cell_source("")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1 and "RuntimeError" in result.stderr, result.stderr
    assert "FEDLAB_INSTALL_SOURCE" in result.stderr and "wheel" in result.stderr and "pip install" not in result.stdout


def test_the_default_install_source_is_site_toml_then_the_repository_then_none():
    assert bootstrap.default_source({"install": {"source": ""}, "launch": {"repository_url": ""}}) == ""
    repository = {"install": {"source": ""}, "launch": {"repository_url": "https://github.com/org/course/",
                                                        "branch": "spring"}}
    assert bootstrap.default_source(repository) == "fedlab-utils @ git+https://github.com/org/course@spring"
    wheel = "https://course.example.edu/fedlab_utils-0.1.0-py3-none-any.whl"
    assert bootstrap.default_source({"install": {"source": wheel}, **{"launch": repository["launch"]}}) == wheel
    with pytest.raises(ValueError, match="not valid"):
        bootstrap.default_source({"install": {"source": 'a"b'}})


def test_the_bootstrap_cell_installs_the_extras_the_notebook_imports():
    flower = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("from fedlab_utils.deploy import apps")])
    plain = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("from fedlab_utils.core import run")])
    assert bootstrap.notebook_extras(flower) == ["deploy"] and bootstrap.notebook_extras(plain) == []
    assert '["fedlab-utils[deploy]"]' in bootstrap.cell_source("x", ["deploy"])
    assert "extras = os.environ.get(\"FEDLAB_INSTALL_SOURCE\", \"x\"), []" in bootstrap.cell_source("x", [])
    deployment = ROOT / "notebooks" / "07_deployment.ipynb"
    assert bootstrap.notebook_extras(nbformat.read(deployment, as_version=4)) == ["deploy"]
    baseline = ROOT / "notebooks" / "00_federated_baseline.ipynb"
    assert bootstrap.notebook_extras(nbformat.read(baseline, as_version=4)) == []


def test_every_course_notebook_has_the_current_bootstrap_cell_and_zh_takes_its_words_from_the_catalog():
    pytest.importorskip("polib", reason="the zh catalogs need the [course] extra")
    assert subprocess.run([sys.executable, str(WEBSITE / "bootstrap_cell.py"), "--check"], cwd=ROOT).returncode == 0
    zh = ROOT / "notebooks" / "zh" / "07_deployment.ipynb"
    assert '["fedlab-utils[deploy]"]' in bootstrap.expected_cell(zh, nbformat.read(zh, as_version=4)).source
    zh = ROOT / "notebooks" / "zh" / "00_federated_baseline.ipynb"  # its catalog translates the cell's words
    cell = bootstrap.expected_cell(zh, nbformat.read(zh, as_version=4))
    assert "The course's package: installed first" not in cell.source and "安装课程软件包：pip install" in cell.source


# ----------------------------------------------------------------------------- the docs' Chinese twins
FENCE = re.compile(r"^```.*?^```$", re.S | re.M)


def prose(markdown: str) -> str:
    """Markdown without code blocks, inline code, link targets, indented blocks and comments."""
    text = FENCE.sub("", markdown)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"^    .*$", "", text, flags=re.M)
    text = re.sub(r"`[^`]*`", "", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


@pytest.mark.parametrize("name", doc_translations.DOCS)
def test_every_doc_has_a_chinese_twin_in_the_glossary_terms(name):
    from fedlab_utils.course.glossary import load_glossary

    twin = doc_translations.twin_path(name)
    assert twin.is_file(), f"docs/zh/{name}.md is missing"
    assert doc_translations.HEADER.match(twin.read_text(encoding="utf-8")), "no '<!-- 译自 … -->' first line"
    text = prose(doc_translations.twin_body(name))
    letters = [c for c in text if c.isalpha()]
    cjk = sum("\u4e00" <= c <= "\u9fff" for c in letters) / len(letters)
    assert cjk >= 0.5, f"docs/zh/{name}.md: only {cjk:.0%} of its prose letters are Chinese"
    avoided = [(word, term.zh) for term in load_glossary() for word in term.zh_avoid if word and word in text]
    assert not avoided, f"docs/zh/{name}.md uses words the glossary pins otherwise: {avoided}"


@pytest.mark.parametrize("name", ["extending", "deployment"])
def test_a_current_twin_keeps_the_english_pages_code_as_it_is_tested(name):
    if doc_translations.twin_state(name).status != "current":
        pytest.skip(f"docs/zh/{name}.md is stale: make site marks it (test_a_stale_twin_is_reported)")
    english = FENCE.findall((ROOT / "docs" / f"{name}.md").read_text(encoding="utf-8"))
    assert FENCE.findall(doc_translations.twin_body(name)) == english


def test_a_stale_twin_is_reported_and_stamping_makes_it_current(tmp_path):
    (tmp_path / "docs" / "zh").mkdir(parents=True)
    english = tmp_path / "docs" / "guide.md"
    english.write_text("# Guide\n\nOne.\n", encoding="utf-8")
    assert doc_translations.twin_state("guide", tmp_path).status == "missing"
    doc_translations.twin_path("guide", tmp_path).write_text("# 指南\n\n一。\n", encoding="utf-8")
    assert doc_translations.twin_state("guide", tmp_path).status == "stale"  # no header: nothing says what it follows
    doc_translations.stamp("guide", tmp_path)
    assert doc_translations.twin_state("guide", tmp_path).status == "current"
    assert doc_translations.twin_body("guide", tmp_path) == "# 指南\n\n一。\n"
    english.write_text("# Guide\n\nOne. Two.\n", encoding="utf-8")  # the English page moves on
    state = doc_translations.twin_state("guide", tmp_path)
    assert state.status == "stale" and "stamp guide" in state.detail
    assert "过时" in doc_translations.stale_note("guide") and "{warning}" in doc_translations.stale_note("guide")


def test_the_zh_edition_stages_the_twins_and_their_links_point_at_its_pages():
    source, text = build_site.doc_source("zh", "extending")
    assert source == "docs/zh/extending.md" and "扩展训练循环" in text and not text.startswith("<!--")
    assert build_site.doc_source("en", "extending")[0] == "docs/extending.md"
    pages = build_site.page_map("zh", ["00_federated_baseline"])
    where = build_site.LinkContext("docs/zh/extending.md", "docs/extending.md", pages, "", "main")
    assert build_site.rewrite_links("[架构](architecture.md#x) [无](../img/none.png)", where) == \
        "[架构](architecture.md#x) 无"  # a twin's link lands on the zh page; a link to nothing becomes its text
    picture = ROOT / "docs" / "img" / "sweep_00_rounds_seed.png"
    assert picture.is_file()
    assert build_site.rewrite_links("![扫描](../img/sweep_00_rounds_seed.png)", where) == \
        "![扫描](img/sweep_00_rounds_seed.png)"


def test_a_stale_twin_is_shown_with_its_note_under_the_title(monkeypatch):
    stale = doc_translations.TwinState("datasets", "stale", "docs/datasets.md changed")
    monkeypatch.setattr(doc_translations, "twin_state", lambda name: stale)
    source, text = build_site.doc_source("zh", "datasets")
    title, blank, note = text.split("\n")[:3]
    assert source == "docs/zh/datasets.md" and title.startswith("# 数据集") and blank == "" and note == ":::{warning}"
