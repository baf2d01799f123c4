"""History and its readers: rounds that were not evaluated are NaN (and said to be), runs are
labelled by the keys of the dict they come in."""
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

from fedlab_utils.data import ClientData
from fedlab_utils.core import LocalTraining, run
from fedlab_utils.core import History, joules_to_target, rounds_to_target, summary_table
from fedlab_utils.viz import plot_accuracy, plot_accuracy_vs_mb, plot_energy

DIM = 6


def tiny_clients(sizes=(12, 20, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [ClientData(torch.randn(n, DIM, generator=g), torch.randint(0, 3, (n,), generator=g)) for n in sizes]


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(DIM, 5), nn.ReLU(), nn.Linear(5, 3))


def run_tiny(**kw):
    clients = tiny_clients()
    test = (torch.cat([c.x for c in clients]), torch.cat([c.y for c in clients]))
    return run(tiny_model(), clients, test, local=LocalTraining(lr=0.3, batch_size=8), progress=False,
               **{"rounds": 5, **kw})


@pytest.fixture(scope="module")
def every_round():
    return run_tiny(eval_every=1)


@pytest.fixture(scope="module")
def every_third():
    return run_tiny(eval_every=3)


def test_a_round_that_was_not_evaluated_is_nan_and_said_to_be(every_round, every_third):
    assert every_third.evaluated_rounds == [3, 5]  # every third round, and the last
    assert [r.evaluated for r in every_third.records] == [False, False, True, False, True]
    acc = every_third.accuracy
    assert [math.isnan(a) for a in acc] == [True, True, False, True, False]
    assert all(math.isnan(r.loss) for r in every_third.records if not r.evaluated)
    # evaluation does not change training: the evaluated rounds measure what an every-round run measures
    assert acc[2] == every_round.accuracy[2] and acc[4] == every_round.accuracy[4]
    assert every_round.evaluated_rounds == [1, 2, 3, 4, 5]
    assert not any(math.isnan(a) for a in every_round.accuracy)


def test_readers_of_accuracy_use_the_evaluated_rounds(every_round, every_third):
    assert every_third.final_accuracy == every_third.records[-1].accuracy == every_round.final_accuracy
    assert every_third.best_accuracy() == max(every_third.accuracy[2], every_third.accuracy[4])
    low = min(every_round.accuracy[2], every_round.accuracy[4])
    # the first evaluated round to reach it: round 1 and 2 are NaN and skipped
    assert rounds_to_target(every_third, low) in (3, 5)
    assert rounds_to_target(every_third, low) == next(r for r in (3, 5) if every_round.accuracy[r - 1] >= low)
    assert rounds_to_target(every_third, 1.01) is None
    r = rounds_to_target(every_third, low)
    assert joules_to_target(every_third, low) == pytest.approx(sum(e.total for e in every_third.round_energy()[:r]))
    row = summary_table([every_third], target=low).iloc[0]
    assert row["final acc %"] == pytest.approx(100 * every_third.final_accuracy)
    assert "nan" not in repr(every_third)


def test_final_accuracy_skips_trailing_unevaluated_records(every_third):
    cut = History.from_dict(every_third.to_dict())
    cut.records = cut.records[:4]  # a history that stops after an unevaluated round (e.g. a cut checkpoint)
    assert cut.final_accuracy == every_third.accuracy[2]
    assert math.isnan(History("empty").final_accuracy) and math.isnan(History("empty").best_accuracy())


def test_evaluated_survives_the_json_round_trip(every_third):
    again = History.from_dict(every_third.to_dict())
    assert again.evaluated_rounds == [3, 5]
    assert [math.isnan(a) for a in again.accuracy] == [math.isnan(a) for a in every_third.accuracy]
    old = every_third.to_dict()
    for record in old["records"]:
        del record["evaluated"]  # written before the field existed: every round was evaluated
    assert History.from_dict(old).evaluated_rounds == [1, 2, 3, 4, 5]


def test_a_resumed_run_keeps_its_nan_rounds(tmp_path, every_round, every_third):
    path = tmp_path / "ck.pt"
    run_tiny(eval_every=3, rounds=4, checkpoint=path)  # its last round, 4, is evaluated
    resumed = run_tiny(eval_every=3, checkpoint=path, resume=True)
    assert resumed.evaluated_rounds == [3, 4, 5]
    assert [math.isnan(a) for a in resumed.accuracy] == [True, True, False, False, False]
    assert resumed.accuracy[3] == every_round.accuracy[3] and resumed.accuracy[4] == every_third.accuracy[4]


def test_summary_table_labels_runs_by_the_dict_keys(every_round, every_third):
    table = summary_table({"fedavg": every_round, "lowrank": every_third})
    assert list(table.index) == ["fedavg", "lowrank"]
    assert every_round.label == every_third.label == "FedAvg"  # the runs' own labels are not used
    assert list(summary_table([every_round, every_third]).index) == ["FedAvg", "FedAvg"]  # a list keeps them


def test_plots_label_runs_by_the_dict_keys_and_draw_evaluated_rounds_only(every_round, every_third):
    runs = {"every round": every_round, "every third": every_third}
    fig, ax = plot_accuracy(runs)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"every round", "every third"}
    assert list(lines["every third"].get_xdata()) == [3, 5]
    np.testing.assert_allclose(lines["every third"].get_ydata(), [100 * every_third.accuracy[i] for i in (2, 4)])
    assert list(lines["every round"].get_xdata()) == [1, 2, 3, 4, 5]
    plt.close(fig)
    fig, ax = plot_accuracy_vs_mb(runs)
    lines = {line.get_label(): line for line in ax.get_lines()}
    mb = every_third.cumulative("bytes_up") / 1e6
    np.testing.assert_allclose(lines["every third"].get_xdata(), mb[[2, 4]])
    plt.close(fig)
    fig, ax = plot_energy(runs)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["every round", "every third"]
    plt.close(fig)
