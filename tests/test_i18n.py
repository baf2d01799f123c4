"""Runtime messages through gettext (fedlab_utils.i18n) and the runtime catalog's consistency."""
from __future__ import annotations

import io

import pytest

from fedlab_utils import i18n
from fedlab_utils.course import ROOT
from fedlab_utils.course import translate as tr
from fedlab_utils.course.translation_catalogs import (
    check_runtime,
    extract_runtime,
    load_catalog,
    placeholders,
    runtime_messages,
    save_catalog,
)


@pytest.mark.parametrize("value, code", [("zh", "zh"), ("zh_CN", "zh"), ("zh-CN", "zh"), ("ZH_cn.UTF-8", "zh"),
                                         ("en", "en"), ("", "en")])
def test_language_codes(value, code):
    assert i18n.language(value) == code


def test_bad_language_names_the_value_and_the_valid_ones(monkeypatch):
    with pytest.raises(ValueError, match=r"lang='fr'.*'en' or 'zh'"):
        i18n.language("fr")
    monkeypatch.setenv(i18n.LANG_ENV, "klingon")
    with pytest.raises(ValueError, match=r"FEDLAB_LANG='klingon'"):
        i18n.language()


def test_lang_argument_and_environment_select_the_catalog(monkeypatch):
    message = "uplink bytes of one round"
    monkeypatch.delenv(i18n.LANG_ENV, raising=False)
    assert i18n._(message) == message
    assert i18n._(message, lang="zh") == "一轮的上行字节数"
    monkeypatch.setenv(i18n.LANG_ENV, "zh")
    assert i18n._(message) == "一轮的上行字节数"
    assert i18n._(message, lang="en") == message
    assert i18n._("a message nobody translated") == "a message nobody translated"  # gettext's fallback


def test_fuzzy_entries_are_not_used(tmp_path, monkeypatch):
    import polib

    po = polib.POFile()
    po.metadata = {"Content-Type": "text/plain; charset=UTF-8"}
    po.append(polib.POEntry(msgid="done", msgstr="完成"))
    po.append(polib.POEntry(msgid="stale", msgstr="过时", flags=["fuzzy"]))
    path = tmp_path / "zh_CN" / "LC_MESSAGES" / "fedlab_utils.po"
    path.parent.mkdir(parents=True)
    po.save(str(path))
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    i18n.translations.cache_clear()
    try:
        assert i18n._("done", lang="zh") == "完成" and i18n._("stale", lang="zh") == "stale"
    finally:
        i18n.translations.cache_clear()


def test_every_runtime_message_has_a_current_translation_with_the_same_placeholders():
    messages = runtime_messages()
    assert "✓ {name}: correct" in messages  # the scanner finds the checks' messages
    assert check_runtime() == []


def test_check_runtime_fails_on_a_missing_or_mismatched_translation(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "m.py").write_text('from x import _\nprint(_("{n} rounds"))\nprint(_("new message"))\n')
    catalog = tmp_path / "m.po"
    extract_runtime(catalog, package)
    po = load_catalog(catalog)
    po.find("{n} rounds").msgstr = "{count} 轮"
    save_catalog(po, catalog)
    problems = check_runtime(catalog, package)
    assert any("placeholders ['count'] differ from ['n']" in p for p in problems), problems
    assert any("'new message': no current translation" in p for p in problems), problems
    (package / "m.py").write_text('from x import _\nprint(_("new message"))\n')
    report = extract_runtime(catalog, package)
    assert report.obsolete == ["{n} rounds"]


def test_placeholders():
    assert placeholders("{a} {b:.2f} {{literal}} {} {c!r}") == {"a", "b", "c", ""}


def test_package_data_ships_the_runtime_catalog():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"locale/*/LC_MESSAGES/*.po"' in text
    assert i18n.catalog_path("zh").exists()



def test_exercise_hints_and_confirmations_follow_the_language(monkeypatch, capsys):
    from fedlab_utils.checks import baseline

    def unweighted(updates, num_samples):
        return {k: sum(u[k] for u in updates) / len(updates) for k in updates[0]}

    def weighted(updates, num_samples):
        return {k: sum(n * u[k] for n, u in zip(num_samples, updates)) / sum(num_samples) for k in updates[0]}

    for lang, hint, done in (("en", "plain (unweighted) mean", "✓ weighted_average: correct"),
                             ("zh", "普通的（不加权）平均", "✓ weighted_average（按样本加权平均）：正确")):
        monkeypatch.setenv(i18n.LANG_ENV, lang)
        with pytest.raises(AssertionError, match=hint.replace("(", r"\(").replace(")", r"\)")):
            baseline.check_weighted_average(unweighted)
        baseline.check_weighted_average(weighted)
        assert capsys.readouterr().out.strip() == done


# -- Chinese text in figures (fedlab_utils.viz.fonts) ----------------------------------------------------

def _render_and_collect_missing_glyphs(title: str) -> list[str]:
    """Draw one figure with ``title`` and Chinese axis labels and legend; the "missing glyph"
    warnings matplotlib gives while rendering it (as warnings or log records)."""
    import logging
    import warnings

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Collect()
    logging.getLogger("matplotlib").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fig, ax = plt.subplots()
            ax.plot([1, 2, 3], [3, 1, 2], label="联邦平均（FedAvg）")
            ax.set(title=title, xlabel="通信轮次", ylabel="上行字节数（MB）")
            ax.legend()
            fig.savefig(io.BytesIO(), format="png")
            plt.close(fig)
    finally:
        logging.getLogger("matplotlib").removeHandler(handler)
    return [m for m in records + [str(w.message) for w in caught] if "missing from" in m and "Glyph" in m]


def test_zh_figure_draws_every_chinese_glyph(monkeypatch):
    """With FEDLAB_LANG=zh, use_style registers Noto Sans CJK SC (noto-cjk-sans-otc) and a figure
    with a Chinese title, axis labels and legend renders without one missing glyph."""
    import matplotlib as mpl
    from matplotlib import font_manager

    from fedlab_utils.viz import fonts, plotting

    monkeypatch.delenv(fonts.FONT_ENV, raising=False)
    monkeypatch.setenv(i18n.LANG_ENV, "zh")
    path = fonts.cjk_font_path()
    assert path is not None and path.name == "NotoSansCJK-Regular.ttc", "noto-cjk-sans-otc is a dependency"
    with mpl.rc_context():
        plotting.use_style()
        assert fonts.cjk_font_active() and mpl.rcParams["font.family"] == ["DejaVu Sans", fonts.CJK_FAMILY]
        assert font_manager.findfont(font_manager.FontProperties(family=[fonts.CJK_FAMILY])) == str(path)
        # Chinese from Noto; Latin text, the minus sign and ✓/✗ from DejaVu Sans, as in English
        assert _render_and_collect_missing_glyphs("每轮客户端的能耗（焦耳）：−1.5 J，✓ ✗ ≥ ±") == []
        plotting.use_style()  # twice: still [latin, CJK]
        assert mpl.rcParams["font.family"] == ["DejaVu Sans", fonts.CJK_FAMILY]
        assert fonts.figure_text("uplink bytes", "上行字节数") == "上行字节数"
        assert fonts.figure_text("uplink bytes", "上行字节数", lang="en") == "uplink bytes"


def test_the_glyph_check_fails_without_the_cjk_font():
    """The check above can fail: DejaVu Sans alone has no Chinese glyphs."""
    import matplotlib as mpl

    with mpl.rc_context({"font.family": ["DejaVu Sans"]}):
        assert _render_and_collect_missing_glyphs("每轮客户端的能耗")


def test_no_cjk_font_falls_back_to_english_labels(monkeypatch, tmp_path):
    """No font file: nothing is registered, English stays English, and labels are English (the
    notebook's Chinese caption says what is drawn), so no boxes are drawn."""
    import matplotlib as mpl

    from fedlab_utils.viz import fonts

    monkeypatch.setenv(fonts.FONT_ENV, str(tmp_path / "no-such-font.ttc"))
    monkeypatch.setenv(i18n.LANG_ENV, "zh")
    fonts.register_cjk_font.cache_clear()
    try:
        with mpl.rc_context({"font.family": ["sans-serif"]}):
            assert fonts.cjk_font_path() is None and fonts.use_language_fonts() is False
            assert mpl.rcParams["font.family"] == ["sans-serif"] and not fonts.cjk_font_active()
            assert fonts.figure_text("uplink bytes", "上行字节数") == "uplink bytes"
            assert fonts.use_language_fonts("en") is False
    finally:
        fonts.register_cjk_font.cache_clear()


def test_sweep_lang_zh_runs_the_kernels_in_chinese(tmp_path):
    """``sweep --lang zh`` is ``run --lang zh`` per point: the kernel gets FEDLAB_LANG=zh."""
    import json

    import nbformat

    from fedlab_utils.__main__ import main

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 1\nseed = 0\nresults_path = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "import os\nfrom fedlab_utils.course.claims import Claims, record_results\nclaims = Claims()\n"
        "record_results(results_path, 'tiny', {'lang': os.environ.get('FEDLAB_LANG', 'en'), 'x': x}, claims)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "10_tiny.ipynb"
    nbformat.write(nb, path)
    out = tmp_path / "sweep"
    assert main(["sweep", str(path), "-p", "x", "1", "--lang", "zh", "--out", str(out)]) == 0
    record = json.loads((out / "points" / "x=1" / "point.json").read_text())
    assert record["lang"] == "zh" and record["results"]["metrics"] == {"lang": "zh", "x": 1}
    # the completed zh point is not a completed English point (resume compares the edition too)
    from fedlab_utils.course import Point

    folder = out / "points" / "x=1"
    assert Point(path, {"x": 1}, folder, lang="zh").load_complete() == record
    assert Point(path, {"x": 1}, folder).load_complete() is None
