"""The Chinese edition's machinery (fedlab_utils.course.translate): catalogs, protected tokens, build, check."""
from __future__ import annotations

import json

import nbformat
import polib
import pytest

from fedlab_utils.course import translate as tr
from fedlab_utils.course.glossary import GLOSSARY_PATH, Term, load_glossary, lost_tokens, protected_tokens, term_text
from fedlab_utils.course.translation_catalogs import (
    catalog_path,
    check_runtime,
    english_notebooks,
    extract,
    load_catalog,
    markdown_cells,
    merge_catalog,
    new_catalog,
    save_catalog,
    zh_path,
)

TERMS = [Term("客户端", "client", "00", "clients?", ("客户端",)),
         Term("服务器", "server", "00", "servers?", ("服务器",))]
GRADER = {"grade": False, "grade_id": "cell-x", "locked": True, "schema_version": 3, "solution": False, "task": False}


def make_notebook(path, intro="# Title\nThe server sends $w_t$ to 10 clients.", extra=None):
    """A small notebook: markdown, a parameters cell, an nbgrader solution cell, more markdown."""
    cells = [nbformat.v4.new_markdown_cell(intro, id="intro", metadata={"nbgrader": dict(GRADER, grade_id="cell-intro")}),
             nbformat.v4.new_code_cell("seed = 0  # any int", id="params", metadata={"tags": ["parameters"]}),
             nbformat.v4.new_code_cell("def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION", id="ex1",
                                       metadata={"nbgrader": dict(GRADER, grade_id="ex1", locked=False, solution=True)}),
             nbformat.v4.new_markdown_cell("Call `f(3)`; see [docs](https://example.org/a).", id="outro")]
    if extra:
        cells.append(nbformat.v4.new_markdown_cell(extra, id="extra"))
    nb = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                         "language": "python"}})
    nbformat.write(nb, path)
    return path


ZH = {"intro": "# 标题\n服务器把全局模型的权重 $w_t$ 发送给参与本轮训练的 10 个客户端，客户端在本地数据上训练之后再把更新发回服务器。",
      "outro": "调用 `f(3)`；参见[文档](https://example.org/a)。"}


def translated_catalog(notebook, translations=ZH):
    po = new_catalog(notebook)
    merge_catalog(markdown_cells(nbformat.read(notebook, as_version=4)), po)
    for entry in po:
        entry.msgstr = translations.get(entry.msgctxt, "")
    return po


# -- extract: new, fuzzy with the previous msgid, obsolete --------------------------------------

def test_extract_new_fuzzy_obsolete_roundtrip(tmp_path):
    nb_path = make_notebook(tmp_path / "00_demo.ipynb", extra="More text.")
    report = extract(nb_path, locale_dir=tmp_path / "locale")
    assert report.new == ["intro", "outro", "extra"] and not report.fuzzy and not report.obsolete
    path = catalog_path(nb_path, tmp_path / "locale")
    po = load_catalog(path)
    assert [(e.msgctxt, e.msgstr) for e in po] == [("intro", ""), ("outro", ""), ("extra", "")]
    assert po.find("outro", by="msgctxt").msgid == "Call `f(3)`; see [docs](https://example.org/a)."
    for entry in po:
        entry.msgstr = ZH.get(entry.msgctxt, "更多文字。")
    save_catalog(po, path)

    old_intro = po.find("intro", by="msgctxt").msgid
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells[0].source = "# Title\nThe server sends $w_t$ to 20 clients."
    del nb.cells[4]  # the "extra" cell
    nbformat.write(nb, nb_path)
    report = extract(nb_path, locale_dir=tmp_path / "locale")
    assert report.fuzzy == ["intro"] and report.obsolete == ["extra"] and not report.new

    po = load_catalog(path)  # written and read back by polib: flags and #| msgid survive
    intro = po.find("intro", by="msgctxt")
    assert "fuzzy" in intro.flags and intro.previous_msgid == old_intro
    assert intro.msgid == nb.cells[0].source and intro.msgstr == ZH["intro"]
    assert "#| msgid" in path.read_text(encoding="utf-8")
    assert [e.msgctxt for e in po if e.obsolete] == ["extra"]
    assert "fuzzy" not in po.find("outro", by="msgctxt").flags

    # A second change keeps the msgid the translation was made from.
    nb.cells[0].source = "# Title\nThe server sends $w_t$ to 30 clients."
    nbformat.write(nb, nb_path)
    extract(nb_path, locale_dir=tmp_path / "locale")
    assert load_catalog(path).find("intro", by="msgctxt").previous_msgid == old_intro


def test_removed_then_restored_cell_is_no_longer_obsolete():
    po = polib.POFile()
    merge_catalog([("a", "A"), ("b", "B")], po)
    merge_catalog([("a", "A")], po)
    assert [e.msgctxt for e in po if e.obsolete] == ["b"]
    report = merge_catalog([("b", "B"), ("a", "A")], po)
    assert not report.new and [e.msgctxt for e in po] == ["b", "a"] and not any(e.obsolete for e in po)


def test_untranslated_change_is_not_fuzzy():
    po = polib.POFile()
    merge_catalog([("a", "A")], po)
    report = merge_catalog([("a", "A2")], po)
    assert not report.fuzzy and po[0].msgid == "A2" and not po[0].flags


# -- protected tokens, both ways ------------------------------------------------------------

ENGLISH = ("Send $w_t$ and $$\\sum_k n_k$$ with `fedavg_aggregate` (see [the docs](https://a.b/c) and "
           "![plot](fig.png)): 60,000 digits, 99% after 626 rounds, in fp32.\n```\nserver w_t -> client\n```")
FAITHFUL = ("发送 $w_t$ 和 $$\\sum_k n_k$$，使用 `fedavg_aggregate`（见[文档](https://a.b/c)和 ![图](fig.png)）："
            "60,000 张数字，626 轮后达到 99%，使用 fp32。\n```\nserver w_t -> client\n```")


def test_faithful_translation_keeps_every_token():
    tokens = protected_tokens(ENGLISH)
    assert {("math", "$w_t$"), ("math", "$$\\sum_k n_k$$"), ("code", "`fedavg_aggregate`"), ("link", "https://a.b/c"),
            ("image", "fig.png"), ("number", "60,000"), ("number", "99"), ("number", "626")} <= tokens
    assert ("number", "32") not in tokens  # part of a word, not a number
    assert any(kind == "code block" for kind, _ in tokens)
    assert lost_tokens(ENGLISH, FAITHFUL) == []


@pytest.mark.parametrize("kept, lost, expected", [
    ("$w_t$", "$w_{t}$", ("math", "$w_t$")),
    ("$$\\sum_k n_k$$", "求和", ("math", "$$\\sum_k n_k$$")),
    ("`fedavg_aggregate`", "fedavg_aggregate", ("code", "`fedavg_aggregate`")),
    ("(https://a.b/c)", "(https://a.b/d)", ("link", "https://a.b/c")),
    ("(fig.png)", "(fig2.png)", ("image", "fig.png")),
    ("60,000", "六万", ("number", "60,000")),
    ("626 轮", "六百多轮", ("number", "626")),
])
def test_each_lost_token_is_reported(kept, lost, expected):
    assert kept in FAITHFUL
    assert lost_tokens(ENGLISH, FAITHFUL.replace(kept, lost, 1)) == [expected]


def test_nbgrader_markers_of_a_manually_graded_answer_are_protected():
    english = "### BEGIN SOLUTION\nThe radio session dominates.\n### END SOLUTION"
    assert lost_tokens(english, "### BEGIN SOLUTION\n无线电会话占主导。\n### END SOLUTION") == []
    assert lost_tokens(english, "### 开始答案\n无线电会话占主导。\n### END SOLUTION") == [
        ("nbgrader marker", "### BEGIN SOLUTION")]


def test_numbers_inside_code_or_maths_are_not_prose_numbers():
    assert protected_tokens("`x = 5` and $E=1$") == {("code", "`x = 5`"), ("math", "$E=1$")}
    assert ("number", "20") in protected_tokens("共20轮")  # CJK next to a digit is still a boundary
    assert protected_tokens("costs $5 and $6") == {("number", "5"), ("number", "6")}  # not maths


# -- build: only markdown changes ---------------------------------------------------------------

def test_build_changes_only_markdown(tmp_path):
    nb_path = make_notebook(tmp_path / "00_demo.ipynb")
    text = tr.build_notebook(nb_path, translated_catalog(nb_path), TERMS)
    english = json.loads(nb_path.read_text(encoding="utf-8"))
    zh = json.loads(text)
    assert zh["metadata"] == english["metadata"]
    assert len(zh["cells"]) == len(english["cells"]) + 1
    for en_cell, zh_cell in zip(english["cells"], zh["cells"]):
        assert zh_cell["metadata"] == en_cell["metadata"] and zh_cell["id"] == en_cell["id"]
        if en_cell["cell_type"] == "code":
            assert json.dumps(zh_cell, sort_keys=True) == json.dumps(en_cell, sort_keys=True)
    assert "".join(zh["cells"][0]["source"]) == ZH["intro"]
    glossary = zh["cells"][-1]
    assert glossary["id"] == tr.GLOSSARY_CELL_ID and glossary["metadata"]["nbgrader"]["grade_id"] == "cell-zh-glossary"
    assert "| 客户端 | client |" in "".join(glossary["source"]) and "服务器" in "".join(glossary["source"])
    for en_cell in english["cells"]:  # the code cells' serialized bytes appear unchanged in the zh file
        if en_cell["cell_type"] == "code":
            assert "".join(en_cell["source"]).splitlines()[0].replace('"', '\\"') in text


def test_repo_zh_notebooks_copy_every_code_cell_and_metadata():
    built = [nb for nb in english_notebooks() if zh_path(nb).exists()]
    assert built, "no zh notebook to compare"
    for notebook in built:
        english = json.loads(notebook.read_text(encoding="utf-8"))
        zh = json.loads(zh_path(notebook).read_text(encoding="utf-8"))
        assert zh["metadata"] == english["metadata"], notebook.name
        for en_cell, zh_cell in zip(english["cells"], zh["cells"]):
            assert (zh_cell["id"], zh_cell["metadata"]) == (en_cell["id"], en_cell["metadata"]), notebook.name
            if en_cell["cell_type"] == "code":
                assert zh_cell == en_cell, f"{notebook.name}: code cell {en_cell['id']}"


def test_relative_links_are_relocated_for_the_zh_folder():
    text = ("[next](01_pruning.ipynb) [sec](02_compression.ipynb#ex) [readme](../README.md) "
            "![fig](figures/a.png) [web](https://a.b/c) [here](#top)")
    assert tr.relocate_links(text) == ("[next](01_pruning.ipynb) [sec](02_compression.ipynb#ex) "
                                       "[readme](../../README.md) ![fig](../figures/a.png) [web](https://a.b/c) "
                                       "[here](#top)")


# -- check ---------------------------------------------------------------------------------------

def test_check_names_the_edited_cell_then_the_fuzzy_entry(tmp_path):
    nb_path = make_notebook(tmp_path / "00_demo.ipynb")
    locale = tmp_path / "locale"
    path = catalog_path(nb_path, locale)
    path.parent.mkdir(parents=True)
    save_catalog(translated_catalog(nb_path), path)
    tr.build(nb_path, locale_dir=locale, terms=TERMS)
    result = tr.check_notebook(nb_path, TERMS, locale)
    assert result.problems == [] and result.coverage.ratio == 1.0 and result.cjk >= tr.MIN_CJK_RATIO

    nb = nbformat.read(nb_path, as_version=4)
    nb.cells[3].source = "Call `f(4)`; see [docs](https://example.org/a)."
    nbformat.write(nb, nb_path)
    problems = tr.check_notebook(nb_path, TERMS, locale).problems
    assert any("cell outro" in p and "English changed" in p for p in problems), problems
    assert any("zh/00_demo.ipynb differs" in p for p in problems), problems

    extract(nb_path, locale_dir=locale)
    entry = load_catalog(path).find("outro", by="msgctxt")
    assert "fuzzy" in entry.flags and entry.previous_msgid == "Call `f(3)`; see [docs](https://example.org/a)."
    problems = tr.check_notebook(nb_path, TERMS, locale).problems
    assert any("cell outro" in p and "fuzzy" in p for p in problems), problems


def test_check_reports_lost_tokens_empty_entries_and_low_coverage(tmp_path):
    nb_path = make_notebook(tmp_path / "00_demo.ipynb")
    locale = tmp_path / "locale"
    path = catalog_path(nb_path, locale)
    path.parent.mkdir(parents=True)
    save_catalog(translated_catalog(nb_path, {"intro": "# 标题\n服务端把权重发给 10 个设备。"}), path)
    tr.build(nb_path, locale_dir=locale, terms=TERMS)
    problems = tr.check_notebook(nb_path, TERMS, locale).problems
    assert any("cell intro" in p and "'$w_t$'" in p for p in problems), problems
    assert any("cell outro" in p and "not translated" in p for p in problems), problems
    assert any("glossary coverage 0.0 %" in p for p in problems), problems


def test_cited_titles_are_not_glossary_text():
    text = "McMahan et al., *Communication-Efficient Learning of Deep Networks*: the *client* trains."
    assert "Communication" not in term_text(text) and "*client*" in term_text(text)


def test_cjk_ratio():
    assert tr.cjk_ratio("联邦 ab") == pytest.approx(0.5)
    assert tr.cjk_ratio("") == 0.0


def test_glossary_rows_are_valid_and_readme_tables_in_sync():
    terms = load_glossary()
    assert len({t.zh for t in terms}) == len(terms)
    for term in terms:
        assert term.used_in(term.en.split(" (")[0]) or term.en_match, term


def test_translate_check_passes_on_the_repo():
    """`translate check` as `make test` runs it: every notebook has a catalog and is fully translated,
    token-faithful, built, covered and mostly CJK; the runtime messages all have a current translation."""
    results, problems = tr.check()
    problems += [p for r in results for p in r.problems] + check_runtime()
    assert {r.name for r in results} == {nb.stem for nb in english_notebooks()}
    assert problems == []
    assert all(r.cjk >= tr.MIN_CJK_RATIO and r.coverage.ratio >= tr.MIN_COVERAGE for r in results)


def test_check_fails_for_a_notebook_without_catalog(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "glossary.tsv").write_text(GLOSSARY_PATH.read_text(encoding="utf-8"), encoding="utf-8")
    results, problems = tr.check(english_notebooks()[:1], locale_dir=tmp_path / "empty", readmes=())
    assert results == [] and len(problems) == 1 and "no catalog" in problems[0]
    assert tr.check(english_notebooks()[:1], require_all=False, locale_dir=tmp_path / "empty", readmes=()) == ([], [])
