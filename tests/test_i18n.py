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
    message = "joules of one client-round"
    monkeypatch.delenv(i18n.LANG_ENV, raising=False)
    assert i18n._(message) == message
    assert i18n._(message, lang="zh") == "一个客户端轮次的焦耳数"
    monkeypatch.setenv(i18n.LANG_ENV, "zh")
    assert i18n._(message) == "一个客户端轮次的焦耳数"
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


# -- Package figures, tables and check labels in the reader's language -------------------------------------

def _tiny_history(label: str):
    from fedlab_utils.core import History, RoundRecord
    from fedlab_utils.ledger import Energy

    records = [RoundRecord(r, [0, 1], 0.5 + 0.1 * r, 1.0, 1.0, 1000 * r, 1000 * r, 10, 0.0,
                           Energy(compute=1.0, uplink=2.0, downlink=0.5, radio_fixed=3.0)) for r in range(1, 4)]
    return History(label, records)


def _figure_texts(fig) -> list[str]:
    texts = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
    return [t for t in texts if t]


def _missing_glyph_warnings(fig) -> list[str]:
    import logging
    import warnings

    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Collect()
    logging.getLogger("matplotlib").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fig.savefig(io.BytesIO(), format="png")
    finally:
        logging.getLogger("matplotlib").removeHandler(handler)
    return [m for m in records + [str(w.message) for w in caught] if "missing from" in m and "Glyph" in m]


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_package_plots_draw_their_labels_in_the_readers_language(monkeypatch, lang):
    """plot_accuracy and plot_energy, the package's own figures: in the zh edition (with the CJK
    font) title, axes and legend are the catalog's Chinese and render without a missing glyph; in
    English they stay English."""
    import matplotlib as mpl
    import matplotlib.pyplot as plt

    from fedlab_utils.viz import fonts, plotting

    monkeypatch.delenv(fonts.FONT_ENV, raising=False)
    monkeypatch.setenv(i18n.LANG_ENV, lang)
    runs = {"FedAvg": _tiny_history("FedAvg")}
    with mpl.rc_context():
        fig, ax = plotting.plot_accuracy(runs, target=0.6)
        fig2, ax2 = plotting.plot_energy(runs)
        texts = _figure_texts(fig) + _figure_texts(fig2)
        if lang == "zh":
            assert ax.get_title() == "每轮的测试准确率" and ax.get_xlabel() == "轮次"
            assert ax.get_ylabel() == "测试准确率（%）"
            assert "目标 60%" in texts and "无线固定开销" in texts and "计算" in texts
            assert ax2.get_title() == "能耗的去向（phone-wifi）" or ax2.get_title().startswith("能耗的去向")
            assert _missing_glyph_warnings(fig) == [] and _missing_glyph_warnings(fig2) == []
        else:
            assert ax.get_title() == "Test accuracy per round" and ax.get_xlabel() == "round"
            assert "target 60%" in texts and "radio fixed" in texts
            assert not any(translate_cjk(t) for t in texts)
        plt.close(fig)
        plt.close(fig2)


def translate_cjk(text: str) -> bool:
    return bool(tr.CJK.search(text))


def test_package_plot_labels_fall_back_to_english_without_the_cjk_font(monkeypatch, tmp_path):
    """No CJK font: the zh edition's package figures keep their English labels (never boxes)."""
    import matplotlib as mpl
    import matplotlib.pyplot as plt

    from fedlab_utils.viz import fonts, plotting

    monkeypatch.setenv(fonts.FONT_ENV, str(tmp_path / "no-such-font.ttc"))
    monkeypatch.setenv(i18n.LANG_ENV, "zh")
    fonts.register_cjk_font.cache_clear()
    try:
        with mpl.rc_context({"font.family": ["sans-serif"]}):
            fig, ax = plotting.plot_accuracy({"FedAvg": _tiny_history("FedAvg")})
            assert ax.get_title() == "Test accuracy per round" and ax.get_ylabel() == "test accuracy (%)"
            assert _missing_glyph_warnings(fig) == []
            plt.close(fig)
    finally:
        fonts.register_cjk_font.cache_clear()


def test_lesson_tables_are_keyed_in_english_and_shown_in_the_readers_language(monkeypatch):
    """layer_report: notebooks index its columns by their English keys in both editions; the zh
    edition's display (HTML and text) shows the Chinese labels, and the labels survive pandas operations."""
    from torch import nn

    from fedlab_utils.lessons.pruning import layer_report

    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    for lang, shown, hidden in (("zh", "稀疏度 %", "sparsity %"), ("en", "sparsity %", "稀疏度 %")):
        monkeypatch.setenv(i18n.LANG_ENV, lang)
        report = layer_report(model)
        assert list(report.columns) == ["shape", "params", "nonzero", "sparsity %"]
        assert float(report["sparsity %"].sum()) == 0.0  # indexed by the English key
        for table in (report, report.round({"sparsity %": 1}), report[["params", "sparsity %"]]):
            html, text = table._repr_html_(), repr(table)
            assert shown in html and shown in text and hidden not in html and hidden not in text
        if lang == "zh":
            assert "<th>层</th>" in report._repr_html_() and "参数量" in repr(report)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_check_messages_hold_no_english_fragments(monkeypatch, lang):
    """A wrong answer's message names the case in the student's language: the labels a check passes
    into its messages ('your kd loss', 'global masks', 'cut after layer 2', 'after round 1') are
    runtime messages too."""
    import torch

    from fedlab_utils.checks import acceleration, distillation, parallel, pruning

    monkeypatch.setenv(i18n.LANG_ENV, lang)

    def not_done(*args):
        raise NotImplementedError

    def wrong_fedavgm(state, update, velocity, lr, momentum):
        return {k: v + 2 * lr * update[k] for k, v in state.items()}, dict(update)

    def wrong_split(client_part, server_part, x, y, send_up, send_down):
        return torch.tensor(0.0)

    cases = [(lambda: distillation.check_kd_loss(not_done), "your kd loss", "你的 kd_loss"),
             (lambda: pruning.check_global_masks(not_done), "global masks", "全局掩码"),
             (lambda: acceleration.check_fedavgm_step(wrong_fedavgm), "after round 1", "第 1 轮之后"),
             (lambda: parallel.check_split_step(wrong_split), "cut after layer", "层之后切分")]
    for call, english, chinese in cases:
        with pytest.raises(AssertionError) as failure:
            call()
        message = str(failure.value)
        if lang == "zh":
            assert chinese in message and english not in message, message
        else:
            assert english in message and chinese not in message, message


def test_a_line_mixing_a_formula_and_chinese_falls_back_to_english(monkeypatch):
    """Matplotlib draws a line holding ``$…$`` with its mathtext fonts, which have no CJK glyphs (boxes,
    and no warning): figure_text refuses such a Chinese label, and no runtime message has one."""
    import matplotlib as mpl

    from fedlab_utils.course.translation_catalogs import RUNTIME_CATALOG
    from fedlab_utils.viz import fonts, plotting

    assert fonts.mixes_math_and_cjk("服务器：全局模型 $w_t$")
    assert not fonts.mixes_math_and_cjk("服务器：全局模型\n$w_t$") and not fonts.mixes_math_and_cjk("price \\$5 每个")
    monkeypatch.delenv(fonts.FONT_ENV, raising=False)
    monkeypatch.setenv(i18n.LANG_ENV, "zh")
    with mpl.rc_context():
        plotting.use_style()
        assert fonts.figure_text("global model $w_t$", "全局模型 $w_t$") == "global model $w_t$"
        assert fonts.figure_text("global model $w_t$", "全局模型\n$w_t$") == "全局模型\n$w_t$"
    mixed = [e.msgid for e in load_catalog(RUNTIME_CATALOG) if not e.obsolete and fonts.mixes_math_and_cjk(e.msgstr)]
    assert mixed == []


def test_zh_diagram_is_chinese_and_draws_every_glyph(monkeypatch):
    """draw_federated_round in the zh edition: a Chinese title and labels, each formula on its own
    line, no missing glyph; the English edition keeps its English text."""
    import matplotlib as mpl
    import matplotlib.pyplot as plt

    from fedlab_utils.viz import diagrams, fonts, plotting

    monkeypatch.delenv(fonts.FONT_ENV, raising=False)
    for lang, title in (("zh", "联邦平均（FedAvg）的一轮"), ("en", "One round of federated averaging (FedAvg)")):
        monkeypatch.setenv(i18n.LANG_ENV, lang)
        with mpl.rc_context():
            plotting.use_style()
            fig, ax = diagrams.draw_federated_round(10, num_clients=20, local_epochs=2, batch_size=20,
                                                    bytes_down=203_560, bytes_up=203_560)
            texts = _figure_texts(fig)
            assert ax.get_title() == title
            assert not any(fonts.mixes_math_and_cjk(t) for t in texts)
            if lang == "zh":
                assert "客户端 10：私有数据\n$n_m$\n2 个 epoch，批大小 20\n$w_t \\to w_t^{m}$" in texts
                assert _missing_glyph_warnings(fig) == []
            else:
                assert not any(translate_cjk(t) for t in texts)
            plt.close(fig)


def test_run_comparison_columns_have_display_labels(monkeypatch):
    """run_column_labels names the columns History.summary and summary_table write (with the dynamic
    'rounds to N%', 'reached N%' and '±' ones) in the reader's language, and leaves a notebook's own
    columns alone; labelled() shows them while the table stays keyed in English."""
    from fedlab_utils.core import summary_table
    from fedlab_utils.viz.tables import labelled, run_column_labels

    runs = {"FedAvg": [_tiny_history("a"), _tiny_history("b")], "FedSGD": [_tiny_history("c"), _tiny_history("d")]}
    table = summary_table(runs, target=0.7)
    table["J to target"] = 1.0  # a notebook's own column
    monkeypatch.setenv(i18n.LANG_ENV, "zh")
    labels = run_column_labels(table.columns)
    assert labels["J (model)"] == "估算能耗（J）" and labels["rounds to 70%"] == "达到 70% 的轮数"
    assert labels["final acc % ±"] == "最终准确率 % ±" and labels["reached 70%"] == "达到 70% 的种子数"
    assert "J to target" not in labels
    shown = labelled(table, labels)
    assert shown["rounds to 70%"].tolist() == table["rounds to 70%"].tolist()
    assert "估算能耗（J）" in shown._repr_html_() and "J to target" in shown._repr_html_()
    monkeypatch.setenv(i18n.LANG_ENV, "en")
    assert run_column_labels(table.columns)["J (model)"] == "J (model)"


# -- Device lines, dataset reprs, energy profiles and the radio timeline in the reader's language (issue 31) --

@pytest.mark.parametrize("lang", ["zh", "en"])
def test_device_and_dataset_lines_follow_the_language(monkeypatch, capsys, lang):
    """describe_device, get_devices' placements line and the FederatedDataset/ClientData reprs: Chinese
    in the zh edition, the English text unchanged in English."""
    import torch

    from fedlab_utils import devices
    from fedlab_utils.data import ClientData, load_dataset

    monkeypatch.setenv(i18n.LANG_ENV, lang)
    cpu = devices.describe_device(torch.device("cpu"))
    devices.get_devices(1)
    placements = capsys.readouterr().out.strip()
    data = repr(load_dataset("digits", seed=0))
    client = repr(ClientData(torch.zeros(3, 2), torch.tensor([1, 0, 1])))
    if lang == "zh":
        assert cpu.startswith("cpu（") and "个逻辑核心" in cpu and "logical" not in cpu
        assert placements == "设备分配：cpu"
        assert "个类别" in data and "训练" in data and "train" not in data and "classes" not in data
        assert client == "ClientData(3 个样本，标签 [0, 1])"
    else:
        assert cpu.startswith("cpu (") and "logical cores" in cpu and "torch threads" in cpu
        assert placements == "Placements: cpu"
        assert data.endswith("train / 360 test, input 1×8×8, 10 classes)") and not translate_cjk(data)
        assert client == "ClientData(3 samples, labels [0, 1])"


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_energy_profiles_meter_and_parts_follow_the_language(monkeypatch, lang):
    """EnergyProfile.describe(), Energy's repr, the meter's source as shown, and the display names of the
    energy bill's parts follow the language; the numbers and the dict keys the code reads do not change."""
    from fedlab_utils.ledger.energy import PROFILES, Energy, EnergyMeter, energy_part_label

    monkeypatch.setenv(i18n.LANG_ENV, lang)
    line = PROFILES["phone-lte"].describe()
    e = Energy(compute=1.0, uplink=2.0, downlink=3.0, radio_fixed=4.0)
    meter = EnergyMeter("cpu", rapl_zone=__import__("pathlib").Path("/no/such/zone"))
    assert meter.source == "not available"  # recorded by runs: always English
    assert list(e.to_dict()) == ["compute", "uplink", "downlink", "radio_fixed", "total"]
    for number in ("653 nJ/bit", "6.0 Mbps", "151 nJ/bit", "13.0 Mbps", "12.6 J", "LTE"):
        assert number in line, line
    with pytest.raises(ValueError, match="part='radio'"):
        energy_part_label("radio")
    if lang == "zh":
        assert "每次无线会话 12.6 J" in line and "per radio session" not in line and "up " not in line
        assert repr(e) == "Energy(合计 10 J：计算 1，上行 2，下行 3，无线固定开销 4)"
        assert repr(meter) == "EnergyMeter(不可用)" and meter.describe() == "不可用"
        assert [energy_part_label(k) for k in e.to_dict()] == ["计算", "上行", "下行", "无线固定开销", "合计"]
    else:
        assert line == ("phone-lte: 100 pJ/FLOP at 5 GFLOP/s, up 653 nJ/bit @ 6.0 Mbps, down 151 nJ/bit @ 13.0 Mbps "
                        "(LTE; 12.6 J per radio session)")
        assert repr(e) == "Energy(total=10 J: compute 1, uplink 2, downlink 3, radio fixed 4)"
        assert repr(meter) == "EnergyMeter(not available)"
        assert [energy_part_label(k) for k in e.to_dict()] == ["compute", "uplink", "downlink", "radio fixed", "total"]


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_radio_timeline_draws_its_text_in_the_readers_language(monkeypatch, lang):
    """draw_radio_timeline: lanes, axis, title and legend in Chinese (no missing glyph) in the zh edition,
    the English text in English; the phases keep their English gids."""
    import matplotlib as mpl
    import matplotlib.pyplot as plt

    from fedlab_utils.ledger.radio_diagram import draw_radio_timeline
    from fedlab_utils.viz import fonts, plotting

    monkeypatch.delenv(fonts.FONT_ENV, raising=False)
    monkeypatch.setenv(i18n.LANG_ENV, lang)
    with mpl.rc_context():
        plotting.use_style()
        fig, (ax,) = draw_radio_timeline("phone-lte", flops=1e9, bytes_up=200_000, bytes_down=200_000)
        texts = _figure_texts(fig)
        gids = {p.get_gid() for p in ax.patches}
        assert {"promotion", "download", "compute", "upload", "tail"} & gids == gids - {None}
        if lang == "zh":
            assert ax.get_xlabel() == "客户端轮次内的时间（s）" and "无线模块" in texts
            assert ax.get_title().startswith("phone-lte（LTE）：一个客户端轮次") and "提升与拖尾" in ax.get_title()
            legend = [t.get_text() for t in ax.get_legend().get_texts()]
            assert any("拖尾：" in t for t in legend) and any(t.startswith("下载：") for t in legend), legend
            assert not any(w in " ".join(texts) for w in ("radio", "promotion", "tail", "client-round")), texts
            assert _missing_glyph_warnings(fig) == []
        else:
            assert ax.get_xlabel() == "time in the client-round (s)" and "radio" in texts
            assert "promotions + tails" in ax.get_title() and not any(translate_cjk(t) for t in texts)
        plt.close(fig)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_budget_planner_lines_follow_the_language(monkeypatch, capsys, lang):
    """The capstone's budget planner (static view): every line it prints is in the reader's language."""
    from fedlab_utils.lessons.capstone import budget_planner

    monkeypatch.setenv(i18n.LANG_ENV, lang)
    monkeypatch.setenv("FEDLAB_WIDGETS", "0")
    summaries = {"fp32": {"accuracy": [0.5, 0.85], "rounds": 2, "cumulative_joules": {"phone-wifi": [1.0, 2.0]},
                          "radio_floor_joules": {"phone-wifi": 0.5}},
                 "slow": {"accuracy": [0.4, 0.6], "rounds": 2, "cumulative_joules": {"phone-wifi": [0.5, 1.0]},
                          "radio_floor_joules": {"phone-wifi": 0.5}}}
    budget_planner(summaries, ["phone-wifi"], default_target=0.8)
    out = capsys.readouterr().out
    assert "2.00 J" in out
    if lang == "zh":
        assert "最省能耗的是 'fp32'" in out and "J，第 2 轮" in out and "从未达到" in out
        assert not any(w in out for w in ("cheapest", "at round", "never reached", "Static view")), out
    else:
        assert "cheapest on phone-wifi to reach 80%: 'fp32', round 2" in out and "never reached" in out
        assert not translate_cjk(out)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_prediction_hints_state_the_answer_as_the_prompt_defines_it(monkeypatch, capsys, lang):
    """A prediction N = baseline ÷ new reads 「为…的 1/N」 in every zh hint (00's joules, 06's uplink and
    downlink bytes, the shared payload-ratio check): never 「N 倍」 next to 「1/N」; English unchanged."""
    import torch

    from fedlab_utils.checks import baseline, capstone, compression

    monkeypatch.setenv(i18n.LANG_ENV, lang)
    baseline.check_lte_saving_prediction(1.2, measured=1.2)
    passed = capsys.readouterr().out
    with pytest.raises(AssertionError) as too_high:
        baseline.check_lte_saving_prediction(50.0, measured=1.2)
    with pytest.raises(AssertionError) as too_low:
        baseline.check_lte_saving_prediction(0.5, measured=1.2)
    sizes = {"fp32 (FedAvg)": 4000, "pruning alone (sparse payload)": 2000, "top-k alone": 400, "pruning + top-k": 250}
    with pytest.raises(AssertionError) as uplink:
        capstone.check_pruned_topk_prediction(4.0, sizes)
    with pytest.raises(AssertionError) as downlink:
        capstone.check_downlink_prediction(9.0, fedavg_bytes_down=1000, recipe_bytes_down=500)
    update = {"w": torch.arange(1000, dtype=torch.float32)}
    with pytest.raises(AssertionError) as ratio:
        compression.check_topk_ratio_prediction(1.0, update, fraction=0.1)
    failures = [str(e.value) for e in (too_high, too_low, uplink, downlink, ratio)]
    if lang == "zh":
        assert passed.startswith("✓ 预测：你给出能耗降为原来的 1/1.2，账本测得 1/1.2"), passed
        assert failures[0].startswith("你预测能耗降为原来的 1/50；账本测得 1/1.2") and "N 小于 1" in failures[1]
        assert failures[2].startswith("剪枝 + top-k 预测：你给出的是 1/4（") and "字节数为 fp32 的 1/16.0" in failures[2]
        assert failures[3].startswith("下行预测：你给出的是 1/9，测得下行字节数为 FedAvg 的 1/2.00"), failures[3]
        assert "你预测载荷降为原来的 1/1" in failures[4] and "测得载荷为 fp32 的 1/" in failures[4]
        for text in [passed, *failures]:
            assert "倍" not in text and "x " not in text, text
    else:
        assert passed.startswith("✓ prediction: you said 1.2x, the ledger measured 1.2x"), passed
        assert failures[0].startswith("You predicted the joules drop 50x; the ledger measured 1.2x")
        assert failures[2].startswith("pruning + top-k prediction: you said 4x") and "16.0x fewer bytes" in failures[2]
        assert failures[3].startswith("downlink prediction: you said 9x, measured 2.00x fewer downlink bytes")
        assert "The measured ratio is" in failures[4]
        assert not any(translate_cjk(t) for t in [passed, *failures])
