"""Runtime messages through gettext (fedlab_utils.i18n) and the runtime catalog's consistency."""
from __future__ import annotations

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
    assert "uplink bytes of one round" in messages  # the scanner finds the checks' messages
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
