"""What a student sees of a run: a History's repr and the run-comparison table, in the reader's
language (``FEDLAB_LANG``), with the table's English column keys unchanged in both."""
import re

import pytest

from fedlab_utils.core import Faults, LocalTraining, run, summary_table
from fedlab_utils.data import client_data, partition
from fedlab_utils.models import make_model


@pytest.fixture(scope="module")
def history(digits):
    clients = client_data(digits, partition(digits.y_train, 4, "iid", seed=0))
    return run(make_model("mlp", digits.input_shape, 10, seed=0), clients, (digits.x_test, digits.y_test), rounds=2,
               seed=0, progress=False, local=LocalTraining(epochs=1, batch_size=8, lr=0.1),
               faults=Faults(dropout=0.3, seed=2), label="FedAvg")


def test_repr_in_english_and_in_chinese(history, monkeypatch):
    monkeypatch.setenv("FEDLAB_LANG", "en")
    english = repr(history)
    assert english.startswith("History('FedAvg': 2 rounds, final acc ") and "J modelled [phone-lte]" in english
    assert re.search(r", \d+ dropped\)$", english), english
    monkeypatch.setenv("FEDLAB_LANG", "zh")
    chinese = repr(history)
    assert chinese.startswith("History('FedAvg'：2 轮，最终准确率 ") and "估算能耗" in chinese, chinese
    assert re.search(r"，掉线 \d+ 次\)$", chinese) and not re.search(r"[A-Za-z]{4,} [A-Za-z]{4,}", chinese), chinese
    numbers = [re.findall(r"\d+\.\d+", text) for text in (english, chinese)]
    assert numbers[0] == numbers[1]  # the same figures in both


def test_summary_table_keeps_english_keys_and_shows_labels_in_the_readers_language(history, monkeypatch):
    monkeypatch.setenv("FEDLAB_LANG", "zh")
    table = summary_table({"FedAvg": history, "again": history})
    assert table.loc["FedAvg", "final acc %"] == pytest.approx(100 * history.final_accuracy)
    html = table._repr_html_()
    assert "final acc %" not in html and "最终准确率" in html
    monkeypatch.setenv("FEDLAB_LANG", "en")
    assert "final acc %" in summary_table({"FedAvg": history})._repr_html_()
    seeds = summary_table({"FedAvg": [history, history]}, target=0.05)
    assert "final acc % ±" in seeds.columns and seeds.loc["FedAvg", "seeds"] == 2
