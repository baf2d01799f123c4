"""The Chinese edition's machinery (fedlab_utils.course.translate): catalogs, protected tokens, build, check."""
from __future__ import annotations

import json

import nbformat
import polib
import pytest

from fedlab_utils.course import translate as tr
from fedlab_utils.course import translation_catalogs
from fedlab_utils.course.glossary import GLOSSARY_PATH, Term, load_glossary, lost_tokens, protected_tokens, term_text
from fedlab_utils.course.translation_catalogs import (
    CODE_CONTEXT,
    TRANSLATE_CODE,
    ExtractReport,
    catalog_path,
    check_runtime,
    code_texts,
    code_translations,
    english_notebooks,
    extract,
    load_catalog,
    markdown_cells,
    merge_catalog,
    merge_code_entries,
    new_catalog,
    save_catalog,
    translate_code,
    translates_code,
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

def test_extract_new_fuzzy_obsolete_roundtrip(tmp_path, markdown_only):
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
            if en_cell["cell_type"] == "code" and not translates_code(load_catalog(catalog_path(notebook))):
                assert zh_cell == en_cell, f"{notebook.name}: code cell {en_cell['id']}"
            elif en_cell["cell_type"] == "code":  # comments and owned strings may be translated
                owned = code_translations(load_catalog(catalog_path(notebook)))
                assert tr.code_differences("".join(en_cell["source"]), "".join(zh_cell["source"]), owned) == []


def test_relative_links_are_relocated_for_the_zh_folder():
    text = ("[next](01_pruning.ipynb) [sec](02_compression.ipynb#ex) [readme](../README.md) "
            "![fig](figures/a.png) [web](https://a.b/c) [here](#top)")
    assert tr.relocate_links(text) == ("[next](01_pruning.ipynb) [sec](02_compression.ipynb#ex) "
                                       "[readme](../../README.md) ![fig](../figures/a.png) [web](https://a.b/c) "
                                       "[here](#top)")


# -- check ---------------------------------------------------------------------------------------

def test_check_names_the_edited_cell_then_the_fuzzy_entry(tmp_path, markdown_only):
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


# -- numbers written the Chinese way, prose inside a code span (issue 31) -----------------------------

@pytest.mark.parametrize("english, translation", [
    ("a 500k-parameter model", "一个 50 万参数的模型"),
    ("1.6M parameters", "160 万个参数"),
    ("60,000 digits", "6 万张数字图片"),
    ("4× fewer bytes", "字节数降到 1/4"),
    ("7x less compute", "客户端计算量降到了 1/7"),
    ("60,000 digits", "60000 张数字图片"),
])
def test_a_number_written_the_chinese_way_with_the_same_value_is_kept(english, translation):
    assert lost_tokens(english, translation) == []


@pytest.mark.parametrize("english, translation, lost", [
    ("a 500k-parameter model", "一个 5 万参数的模型", ("number", "500")),
    ("1.6M parameters", "16 万个参数", ("number", "1.6")),
    ("4× fewer bytes", "字节数降到 1/5", ("number", "4")),
    ("4 clients", "客户端数降到 1/5", ("number", "4")),  # 1/5 is not a count of 4
    ("500k now, 500 later", "现在 50 万，以后再说", ("number", "500")),  # every occurrence is accounted for
])
def test_a_number_with_another_value_is_still_lost(english, translation, lost):
    assert lost_tokens(english, translation) == [lost]


HINT = 'Call `F.kl_div(input=log-probabilities of the student, target=probabilities of the teacher, reduction="batchmean")`.'


def test_prose_arguments_inside_a_code_span_may_be_translated():
    zh = '调用 `F.kl_div(input=学生的对数概率, target=教师的概率, reduction="batchmean")`。'
    assert lost_tokens(HINT, zh) == []


@pytest.mark.parametrize("zh", [
    '调用 `F.kl_div(input=学生的对数概率, target=教师的概率, reduction="sum")`。',  # a real argument changed
    '调用 `F.kl(input=学生的对数概率, target=教师的概率, reduction="batchmean")`。',  # the function renamed
    '调用 `F.kl_div(学生的对数概率, target=教师的概率, reduction="batchmean")`。',  # a keyword dropped
])
def test_the_code_around_prose_arguments_stays_protected(zh):
    assert [kind for kind, _ in lost_tokens(HINT, zh)] == ["code"]


def test_code_spans_without_prose_arguments_stay_verbatim():
    assert lost_tokens("`NotAnswered: … not implemented yet`", "`NotAnswered: … 尚未实现`") == [
        ("code", "`NotAnswered: … not implemented yet`")]
    assert lost_tokens("`velocity is None`", "`velocity 为 None`") == [("code", "`velocity is None`")]


# -- editorial rules: ratio wording, quotes, pinned terms (switchable) -------------------------------

PINNED = [Term("能耗配置", "(device energy) profile", "00", "profiles?", ("能耗配置",), ("设备配置", "设备画像")),
          Term("无线模块", "radio", "00", "radios?(?! sessions?)", ("无线模块", "无线"), ("无线电", "射频")),
          Term("最终准确率", "final accuracy", "00", "final accuracy", ("最终准确率",)),
          Term("末段准确率", "end accuracy", "06", "end accuracy", ("末段准确率",), ("最终准确率",))]


@pytest.mark.parametrize("zh, rule", [
    ("字节少 7 倍。", "ratio wording"), ("少多少倍？", "ratio wording"), ("模型小了 4 倍。", "ratio wording"),
    ("快三倍。", "ratio wording"), ("是基线的 7 倍（7×）。", "ratio wording"),
    ('所谓"暗知识"。', "ASCII quotes"),
])
def test_each_editorial_rule_fires(zh, rule):
    assert [v.rule for v in tr.editorial_violations("c", "Some text.", zh, PINNED)] == [rule]


@pytest.mark.parametrize("zh", ["至少 3 倍。", "降到基线的 1/7。", "是基线的 7 倍。", "模型大小是原来的 2 倍。",
                                '设置 `label="FedAvg"`。', "所谓“暗知识”。", "所谓「暗知识」。", 'The "x" value.'])
def test_good_wording_passes_the_editorial_rules(zh):
    assert tr.editorial_violations("c", "Some text.", zh, PINNED) == []


def test_an_unpinned_variant_counts_only_where_the_english_uses_the_term():
    english = "Each profile prices the radio."
    found = tr.editorial_violations("c", english, "每个设备配置都给无线电定价。", PINNED)
    assert sorted(v.text.split(" ")[0] for v in found) == ["无线电", "设备配置"]
    assert tr.editorial_violations("c", english, "每个能耗配置都给无线模块定价。", PINNED) == []
    assert tr.editorial_violations("c", "Each device trains.", "每个设备配置都不同。", PINNED) == []
    # 最终准确率 is refused for "end accuracy", but not in a cell that also speaks of the final accuracy
    assert [v.rule for v in tr.editorial_violations("c", "The end accuracy.", "最终准确率。", PINNED)] == ["unpinned term"]
    assert tr.editorial_violations("c", "The end accuracy and the final accuracy.", "末段准确率和最终准确率。", PINNED) == []


def test_the_editorial_switch_decides_whether_violations_fail(tmp_path, markdown_only):
    nb_path = make_notebook(tmp_path / "00_demo.ipynb")
    locale = tmp_path / "locale"
    path = catalog_path(nb_path, locale)
    path.parent.mkdir(parents=True)
    zh = dict(ZH, intro=ZH["intro"] + '通信量少 7 倍，即所谓"省流量"。')
    save_catalog(translated_catalog(nb_path, zh), path)
    tr.build(nb_path, locale_dir=locale, terms=TERMS)
    listed = tr.check_notebook(nb_path, TERMS, locale, editorial=False)
    assert listed.problems == [] and sorted(v.rule for v in listed.editorial) == ["ASCII quotes", "ratio wording"]
    enforced = tr.check_notebook(nb_path, TERMS, locale, editorial=True)
    assert len(enforced.problems) == 2 and all("cell intro" in p for p in enforced.problems), enforced.problems
    assert tr.EDITORIAL is True  # the course's catalogs are held to the rules


def test_glossary_variants_column_is_loaded_and_validated(tmp_path):
    terms = {t.en: t for t in load_glossary()}
    assert terms["codec"].zh == "编解码器" and "编码器" in terms["codec"].zh_avoid
    assert "软标签" in terms["soft targets (soft labels)"].zh_avoid
    bad = tmp_path / "g.tsv"
    bad.write_text("zh\ten\twhere\ten_match\tzh_match\tzh_avoid\n编解码器\tcodec\t02\tcodecs?\t编解码器\t解码\n",
                   encoding="utf-8")
    with pytest.raises(ValueError, match="part of a pinned rendering"):
        load_glossary(bad)
    bad.write_text("zh\ten\twhere\ten_match\tzh_match\n编解码器\tcodec\t02\tcodecs?\t编解码器\n", encoding="utf-8")
    assert load_glossary(bad)[0].zh_avoid == ()  # the variants column is optional


def test_pinned_variants_count_for_coverage_only_while_the_rules_are_off():
    term = PINNED[0]
    assert term.rendered_in("设备配置", variants=True) and not term.rendered_in("设备配置")


# -- code cells: comments and student-read strings owned by the catalog (switchable) --------------

CODE = ('seed = 0  # any int\n'
        '# the pooled step:\n'
        '# one full batch\n'
        'gap = 0.5\n'
        'print(f"gap {gap:.2f} after "\n'
        '      "one round", gap)\n'
        'claims.check(f"The gap is below {gap + 1}", gap < 1, gap=gap)\n'
        'label = "not for students"  # noqa: E501\n'
        '### BEGIN SOLUTION\n'
        'x = 1\n'
        '### END SOLUTION')
CODE_ZH = {'# any int': '# 任意整数',
           '# the pooled step:\n# one full batch': '# 合并数据上的一步：\n# 一个完整批次',
           'f"gap {gap:.2f} after "\n      "one round"': 'f"一轮之后差距为 {gap:.2f}"',
           'f"The gap is below {gap + 1}"': 'f"差距小于 {gap + 1}"'}


def test_code_texts_are_comments_prints_and_claims():
    texts = code_texts(CODE)
    assert [(t.kind, t.text) for t in texts] == [
        ("comment", "# any int"), ("comment", "# the pooled step:\n# one full batch"),
        ("string", 'f"gap {gap:.2f} after "\n      "one round"'), ("string", 'f"The gap is below {gap + 1}"')]
    assert all(CODE[t.start:t.end] == t.text for t in texts)
    assert code_texts("%matplotlib inline\nx = 1  # a comment") == []  # not plain Python: left alone


def test_translated_code_differs_only_in_comments_and_owned_strings():
    zh = translate_code(CODE, CODE_ZH)
    assert "# 任意整数" in zh and 'print(f"一轮之后差距为 {gap:.2f}", gap)' in zh and "### BEGIN SOLUTION" in zh
    assert 'label = "not for students"' in zh
    assert tr.code_differences(CODE, zh, CODE_ZH) == []
    assert tr.code_differences(CODE, CODE, {}) == []
    changed = zh.replace("gap = 0.5", "gap = 0.7")
    assert any("the code differs" in p for p in tr.code_differences(CODE, changed, CODE_ZH))
    unowned = zh.replace('"not for students"', '"不给学生看"')
    assert any("not for students" in p for p in tr.code_differences(CODE, unowned, CODE_ZH))
    assert any("does not tokenize" in p for p in tr.code_differences(CODE, zh + '\nprint("', CODE_ZH))


def _code_fixture(tmp_path):
    nb_path = make_notebook(tmp_path / "00_demo.ipynb")
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells.insert(2, nbformat.v4.new_code_cell(CODE, id="code1"))
    nbformat.write(nb, nb_path)
    locale = tmp_path / "locale"
    path = catalog_path(nb_path, locale)
    path.parent.mkdir(parents=True)
    save_catalog(translated_catalog(nb_path), path)
    return nb_path, locale, path


@pytest.fixture
def markdown_only(monkeypatch):
    """TRANSLATE_CODE off: the test is about the markdown cells (a catalog may still opt in)."""
    monkeypatch.setattr(translation_catalogs, "TRANSLATE_CODE", False)


def test_code_translation_off_leaves_catalogs_and_code_alone(tmp_path):
    nb_path, locale, path = _code_fixture(tmp_path)
    assert TRANSLATE_CODE is True  # the course translates its code cells' comments and strings
    report = extract(nb_path, locale_dir=locale, code=False)
    assert not report.new and not [e for e in load_catalog(path) if e.msgctxt == CODE_CONTEXT]
    tr.build(nb_path, locale_dir=locale, terms=TERMS, code=False)
    zh = nbformat.read(zh_path(nb_path), as_version=4)
    assert zh.cells[2].source == CODE
    assert tr.check_notebook(nb_path, TERMS, locale, code=False).problems == []
    # on by default: the same catalog now wants the code entries
    assert extract(nb_path, locale_dir=locale).new


def test_code_translation_extract_build_check_roundtrip(tmp_path):
    nb_path, locale, path = _code_fixture(tmp_path)
    report = extract(nb_path, locale_dir=locale, code=True)
    assert len([n for n in report.new if n.startswith("code: ")]) == 4  # "# any int" is in two cells: one entry
    po = load_catalog(path)
    code_entries = [e for e in po if e.msgctxt == CODE_CONTEXT]
    assert {e.msgid for e in code_entries} == set(CODE_ZH) and all(not e.msgstr for e in code_entries)
    tr.build(nb_path, locale_dir=locale, terms=TERMS, code=True)
    problems = tr.check_notebook(nb_path, TERMS, locale, code=True).problems
    assert len([p for p in problems if "no current translation" in p]) == 4, problems

    for entry in code_entries:
        entry.msgstr = CODE_ZH[entry.msgid]
    save_catalog(po, path)
    tr.build(nb_path, locale_dir=locale, terms=TERMS, code=True)
    zh = nbformat.read(zh_path(nb_path), as_version=4)
    assert zh.cells[1].source == "seed = 0  # 任意整数" and 'f"差距小于 {gap + 1}"' in zh.cells[2].source
    assert zh.cells[2].metadata == nbformat.read(nb_path, as_version=4).cells[2].metadata
    assert tr.check_notebook(nb_path, TERMS, locale, code=True).problems == []
    # markdown entries still merge as before, and the code entries survive a markdown-only extract
    assert not extract(nb_path, locale_dir=locale).obsolete
    assert len([e for e in load_catalog(path) if e.msgctxt == CODE_CONTEXT and not e.obsolete]) == 4

    # a translation that changes the code, or a string's {fields}, is refused
    po = load_catalog(path)
    po.find('# any int', by="msgid", msgctxt=CODE_CONTEXT).msgstr = "# 任意整数\nseed = 1"
    po.find('f"The gap is below {gap + 1}"', by="msgid", msgctxt=CODE_CONTEXT).msgstr = 'f"差距小于 {gap}"'
    save_catalog(po, path)
    tr.build(nb_path, locale_dir=locale, terms=TERMS, code=True)
    problems = tr.check_notebook(nb_path, TERMS, locale, code=True).problems
    assert any("not a comment" in p for p in problems), problems
    assert any("with the fields ['gap + 1']" in p for p in problems), problems
    assert any("the code differs" in p for p in problems), problems


def test_a_catalog_with_code_entries_opts_its_notebook_in(tmp_path, markdown_only):
    nb_path, locale, path = _code_fixture(tmp_path)
    extract(nb_path, locale_dir=locale, code=True)
    po = load_catalog(path)
    assert translates_code(po) and not translates_code(po, code=False)
    problems = tr.check_notebook(nb_path, TERMS, locale).problems  # default: on for this notebook
    assert len([p for p in problems if "no current translation" in p]) == 4, problems
    for entry in po:
        if entry.msgctxt == CODE_CONTEXT:
            entry.msgstr = CODE_ZH[entry.msgid]
    save_catalog(po, path)
    tr.build(nb_path, locale_dir=locale, terms=TERMS)
    assert nbformat.read(zh_path(nb_path), as_version=4).cells[1].source == "seed = 0  # 任意整数"
    assert not translates_code(new_catalog(nb_path))


def test_editorial_report_counts_each_rule_per_notebook(capsys, monkeypatch):
    monkeypatch.setattr(tr, "EDITORIAL", False)
    results = [tr.NotebookCheck("00_demo", editorial=[tr.Violation("ratio wording", "a", "少 7 倍"),
                                                      tr.Violation("ratio wording", "b", "快三倍"),
                                                      tr.Violation("ASCII quotes", "a", '"暗知识"')]),
               tr.NotebookCheck("01_demo")]
    tr._print_editorial(results)
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(("00_", "01_", "total"))}
    assert rows == {"00_demo": ["2", "1", "0"], "01_demo": ["0", "0", "0"], "total": ["2", "1", "0"]}
    assert "00_demo: cell b: ratio wording: 快三倍" in out and "not enforced" in out
    monkeypatch.setattr(tr, "EDITORIAL", True)
    tr._print_editorial(results)
    assert "enforced (EDITORIAL = True)" in capsys.readouterr().out


# -- English left in a zh notebook's outputs ---------------------------------------------------------

def test_scan_outputs_finds_english_runs_but_not_code_values_tracebacks_or_warnings(tmp_path):
    cell = nbformat.v4.new_code_cell("print(x)", id="c1")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="一轮之后：FedAvg IID 92.1%，phone-lte 12.6 J\n"
                                                            "the unweighted mean does not converge\n"),
        nbformat.v4.new_output("stream", name="stderr", text=(
            "/x/site-packages/torch/a.py:12: UserWarning: this overload of nonzero is deprecated\n"
            "  return torch.nonzero(x)\n")),
        nbformat.v4.new_output("error", ename="ValueError", evalue="rounds must be a positive int",
                               traceback=["ValueError: rounds must be a positive int here"]),
        nbformat.v4.new_output("execute_result", data={
            "text/html": "<table><tr><th>最终准确率 %</th><th>MB up</th></tr><tr><td>Noto Sans CJK SC</td></tr></table>",
            "text/plain": "final acc % MB up"}, execution_count=1),
    ]
    nb = nbformat.v4.new_notebook(cells=[cell])
    path = tmp_path / "00_demo.ipynb"
    nbformat.write(nb, path)
    assert tr.scan_outputs(path, allowed=["Noto Sans CJK SC"]) == [
        "00_demo: cell c1 (stdout): the unweighted mean does not converge"]
    assert len(tr.scan_outputs(path)) == 2  # the font name is four English words unless allowed
    assert tr.english_runs("fedlab_utils.run(rounds=5) phone_lte -> 12.6 J, FedAvg non-IID") == []
    assert tr.main(["scan-outputs", str(path), "--allow", "Noto Sans CJK SC"]) == 1
    assert tr.main(["scan-outputs", str(path), "--allow", "Noto Sans CJK SC", "--report-only"]) == 0
    allow = tmp_path / "allow.txt"
    allow.write_text("# third-party\n\nNoto Sans CJK SC\n", encoding="utf-8")
    assert tr.allowed_texts(allow) == ["Noto Sans CJK SC"]
    assert tr.main(["scan-outputs", str(path), "--allow-file", str(allow)]) == 1  # the stdout run is left
    allow.write_text("Noto Sans CJK SC\nthe unweighted mean does not converge\n", encoding="utf-8")
    assert tr.main(["scan-outputs", str(path), "--allow-file", str(allow)]) == 0


def test_runtime_messages_are_held_to_the_editorial_rules(tmp_path, monkeypatch):
    monkeypatch.setattr(tr, "EDITORIAL", False)  # listed, not failed
    po = polib.POFile()
    po.metadata = {"Content-Type": "text/plain; charset=UTF-8"}
    po.append(polib.POEntry(msgid="{what}: how many times fewer bytes?", msgstr="{what}：字节少多少倍？"))
    po.append(polib.POEntry(msgid="The codec sends {n} bytes.", msgstr="编码器发送 {n} 字节。"))
    po.append(polib.POEntry(msgid="Fine.", msgstr="很好。"))
    path = tmp_path / "fedlab_utils.po"
    po.save(str(path))
    result = tr.runtime_editorial(path, terms=[Term("编解码器", "codec", "02", "codecs?", ("编解码器",), ("编码器",))])
    assert sorted(v.rule for v in result.editorial) == ["ratio wording", "unpinned term"] and result.problems == []


def test_an_edited_comment_keeps_its_old_translation_as_fuzzy():
    po = polib.POFile()
    report = ExtractReport()
    merge_code_entries(["x = 1  # the number of clients per round\nprint('done and dusted today')"], po, report)
    for entry in po:
        entry.msgstr = "# 每轮的客户端数" if entry.msgid.startswith("#") else "'今天全部完成'"
    report = ExtractReport()
    merge_code_entries(["x = 1  # the number of sampled clients per round\nprint('something else entirely')"], po, report)
    comment = po.find("# the number of sampled clients per round", by="msgid", msgctxt=CODE_CONTEXT)
    assert "fuzzy" in comment.flags and comment.msgstr == "# 每轮的客户端数"
    assert comment.previous_msgid == "# the number of clients per round"
    assert len(report.fuzzy) == 1 and len(report.new) == 1  # the print label changed too much: new
    assert [e.msgid for e in po if e.obsolete] == ["'done and dusted today'"]


# -- the editorial rules switched on: notebooks and the runtime catalog (issue 31) --------------------

def test_with_the_rules_on_check_fails_on_an_unpinned_variant_and_passes_the_pinned_term(tmp_path, markdown_only):
    terms = TERMS[:1] + [Term("服务器", "server", "00", "servers?", ("服务器",), ("服务端",))]
    nb_path = make_notebook(tmp_path / "00_demo.ipynb")
    locale = tmp_path / "locale"
    path = catalog_path(nb_path, locale)
    path.parent.mkdir(parents=True)
    for zh, problems in ((ZH["intro"].replace("服务器把", "服务端（服务器）把"), 1), (ZH["intro"], 0)):
        save_catalog(translated_catalog(nb_path, dict(ZH, intro=zh)), path)
        tr.build(nb_path, locale_dir=locale, terms=terms)
        enforced = tr.check_notebook(nb_path, terms, locale, editorial=True)
        assert len(enforced.problems) == problems, enforced.problems
        assert all("unpinned term: 服务端 (pinned: 服务器 for server)" in p for p in enforced.problems)
        assert tr.check_notebook(nb_path, terms, locale, editorial=False).problems == []


@pytest.mark.parametrize("zh, rule", [("大了 1000 倍（1000x）。", "ratio wording"), ("是原来的 4 倍（4X）。", "ratio wording")])
def test_a_factor_repeated_with_an_ascii_x_is_refused_too(zh, rule):
    assert [v.rule for v in tr.editorial_violations("c", "Some text.", zh, PINNED)] == [rule]
    assert tr.editorial_violations("c", "Some text.", zh.split("（")[0] + "。", PINNED) == []


def test_the_runtime_catalog_passes_the_editorial_rules_when_they_are_on(monkeypatch, tmp_path):
    """The runtime messages' catalog has no editorial violation, so switching EDITORIAL on adds no
    problem for it; a catalog with one fails then, and only then."""
    assert tr.runtime_editorial().editorial == []
    po = polib.POFile()
    po.metadata = {"Content-Type": "text/plain; charset=UTF-8"}
    po.append(polib.POEntry(msgid="{what}: how many times fewer bytes?", msgstr="{what}：字节少多少倍？"))
    bad = tmp_path / "fedlab_utils.po"
    po.save(str(bad))
    monkeypatch.setattr(tr, "EDITORIAL", False)
    assert tr.runtime_editorial(bad).problems == []
    monkeypatch.setattr(tr, "EDITORIAL", True)
    assert tr.runtime_editorial().problems == []
    assert [p.split(": ", 1)[0] for p in tr.runtime_editorial(bad).problems] == ["fedlab_utils.po"]


TABLE_CODE = '''import pandas as pd
import inspect
rows = {"x fewer J": 3.0, "deadline_s": 2}
deployed = {"fp32": (model, "the trained global model"), "int8": (model, "int8 dynamic")}
table = pd.DataFrame({"dense": {"J pruned": 1.0, "mean rounds": 2}}, index=["one row", "two rows"])
table["x fewer J"] = 2.0
summary = summary_table(runs).rename(columns={"final acc %": "acc % at the end"})
print("one round costs " + ", ".join(parts) + " in all")
print({p: f"{v:.1f} KB each way" for p, v in sizes.items()})
verdict = "about the same as" if gap < 1 else "fewer than"
print(f"{verdict} the baseline")
ax.plot(x, y, label=f"run {k}", color="black")
names = {n: n.replace("- ", "recipe without ") for n in configs}
use(table["x fewer J"], summary["final acc %"], cfg["deadline_s"], "not a label here")
'''


def test_code_texts_own_table_and_plot_labels_and_nested_print_strings():
    owned = [t.text for t in code_texts(TABLE_CODE)]
    for text in ('"x fewer J"', '"J pruned"', '"mean rounds"', '"one row"', '"two rows"', '"acc % at the end"',
                 '"one round costs "', '" in all"', 'f"{v:.1f} KB each way"', '"about the same as"', '"fewer than"',
                 'f"{verdict} the baseline"', 'f"run {k}"', '"recipe without "',
                 '"the trained global model"'):
        assert text in owned, text
    # keys a program reads, rename's old names, other calls' arguments: not owned
    for text in ('"deadline_s"', '"final acc %"', '"black"', '"not a label here"', '"- "', '"fp32"', '"int8 dynamic"'):
        assert text not in owned, text


def test_an_owned_string_is_translated_at_every_occurrence_and_check_wants_it():
    zh_of = {'"x fewer J"': '"能耗降为的几分之一"', '"final acc %"': '"final acc %"'}
    zh = translate_code(TABLE_CODE, zh_of)
    assert zh.count('"能耗降为的几分之一"') == 3 and '"x fewer J"' not in zh  # dict key, new column, lookup
    assert 'summary["final acc %"]' in zh  # opted out: msgstr == msgid keeps a package-built column
    assert tr.code_differences(TABLE_CODE, zh, zh_of) == []
    lookup_left = zh.replace('use(table["能耗降为的几分之一"]', 'use(table["x fewer J"]')
    assert lookup_left != zh
    assert any("x fewer J" in p for p in tr.code_differences(TABLE_CODE, lookup_left, zh_of))


def test_an_opted_out_code_entry_passes_the_entry_check():
    po = polib.POFile()
    po.append(polib.POEntry(msgctxt=CODE_CONTEXT, msgid='"final acc %"', msgstr='"final acc %"'))
    po.append(polib.POEntry(msgctxt=CODE_CONTEXT, msgid='f"run {k}"', msgstr='f"运行 {k}"'))
    assert tr.code_entry_problems(po, "00_demo") == []
    po.append(polib.POEntry(msgctxt=CODE_CONTEXT, msgid='f"run {k}"', msgstr='f"运行"'))
    assert tr.code_entry_problems(po, "00_demo") != []


def _source_cell_notebook(tmp_path, source: str):
    cell = nbformat.v4.new_code_cell(source, id="c1")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                           text="def fedavg_aggregate(updates):\n    return the weighted mean of all updates\n")]
    path = tmp_path / "00_demo.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), path)
    return path


def test_scan_outputs_skips_printed_package_source_only(tmp_path):
    assert tr.scan_outputs(_source_cell_notebook(tmp_path, "import inspect\nprint(inspect.getsource(fl.fedavg_aggregate))")) == []
    assert tr.scan_outputs(_source_cell_notebook(tmp_path, "print(explain(fl.fedavg_aggregate))")) == [
        "00_demo: cell c1 (stdout): return the weighted mean of all updates"]
    assert "getsource" in tr.parser()._subparsers._group_actions[0].choices["scan-outputs"].format_help()


def test_a_translated_label_read_inside_an_f_string_field_must_be_left_alone():
    sources = ['runs = {"separable CNN": 1}\nprint(f"ratio {runs[\'separable CNN\'] / 2:.1f}")']
    po = polib.POFile()
    po.append(polib.POEntry(msgctxt=CODE_CONTEXT, msgid='"separable CNN"', msgstr='"可分离 CNN"'))
    assert any("f-string's field" in p for p in tr.field_key_problems(po, sources, "02_demo"))
    po[0].msgstr = po[0].msgid
    assert tr.field_key_problems(po, sources, "02_demo") == []
