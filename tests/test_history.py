"""History and its readers: rounds that were not evaluated are NaN (and said to be), runs are
labelled by the keys of the dict they come in."""
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

from fedlab_utils.core import History, LocalTraining, joules_to_target, rounds_to_target, run, summary_table
from fedlab_utils.data import ClientData
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


# ----------------------------------------------------------------------------- the spread over seeds
T_975 = {1: 12.706204736174707, 2: 4.302652729911275}  # Student-t 0.975 quantiles, df 1 and 2 (any table)


def _seed(final: float, reach_round: int | None, rounds: int = 5, seed: int = 0) -> History:
    """A synthetic run whose accuracy climbs to 0.9 at ``reach_round`` (never with None), ending at ``final``."""
    from fedlab_utils.core import RoundRecord
    from fedlab_utils.ledger import Energy

    accuracy = [0.5 + 0.01 * r for r in range(1, rounds + 1)]
    if reach_round is not None:
        accuracy[reach_round - 1:] = [0.9] * (rounds - reach_round + 1)
    accuracy[-1] = final
    records = [RoundRecord(r, [0, 1], accuracy[r - 1], 1.0, 1.0, 1000 * r, 1000, 10 ** 6, 0.1,
                           Energy(compute=1.0, uplink=2.0, downlink=0.5, radio_fixed=seed + 1.0))
               for r in range(1, rounds + 1)]
    return History("FedAvg", records, config={"seed": seed})


def test_summary_table_of_seeds_shows_the_mean_and_the_student_t_half_width():
    seeds = [_seed(0.80, 2, seed=0), _seed(0.82, 3, seed=1), _seed(0.87, 4, seed=2)]
    table = summary_table({"FedAvg": seeds}, target=0.85)
    row = table.loc["FedAvg"]
    assert row["seeds"] == 3
    assert row["final acc %"] == pytest.approx(83.0)
    # s = sqrt(((80-83)^2 + (82-83)^2 + (87-83)^2) / 2) = sqrt(13); half = t(0.975, 2) * s / sqrt(3)
    assert row["final acc % ±"] == pytest.approx(T_975[2] * math.sqrt(13) / math.sqrt(3))
    assert row["final acc % ±"] == pytest.approx(8.9567, abs=1e-4)
    # rounds 2, 3, 4: mean 3, s = 1
    assert row["rounds to 85%"] == pytest.approx(3.0)
    assert row["rounds to 85% ±"] == pytest.approx(T_975[2] / math.sqrt(3))
    assert row["reached 85%"] == "3/3"
    # the other columns are means over the seeds (radio fixed 1, 2, 3 J per round over 5 rounds)
    assert row["J (model)"] == pytest.approx(5 * (3.5 + 2.0))
    columns = list(table.columns)
    assert columns.index("final acc % ±") == columns.index("final acc %") + 1  # the ± beside its mean
    assert columns.index("rounds to 85% ±") == columns.index("rounds to 85%") + 1


def test_seeds_that_never_reach_the_target_are_counted_not_averaged():
    seeds = [_seed(0.80, 2, seed=0), _seed(0.80, None, seed=1), _seed(0.80, 4, seed=2), _seed(0.80, 2, seed=3)]
    row = summary_table({"x": seeds}, target=0.85).loc["x"]
    assert row["reached 85%"] == "3/4"
    assert row["rounds to 85%"] == pytest.approx(8 / 3)  # rounds 2, 4, 2; the seed that never got there left out
    s = math.sqrt(((2 - 8 / 3) ** 2 + (4 - 8 / 3) ** 2 + (2 - 8 / 3) ** 2) / 2)
    assert row["rounds to 85% ±"] == pytest.approx(T_975[2] * s / math.sqrt(3))  # n = 3, not 4
    assert row["final acc % ±"] == pytest.approx(0.0)  # same final accuracy on every seed
    none = summary_table({"x": [_seed(0.8, None), _seed(0.8, None, seed=1)]}, target=0.85).loc["x"]
    assert none["rounds to 85%"] is None or math.isnan(none["rounds to 85%"])
    assert none["reached 85%"] == "0/2"


def test_one_seed_has_no_spread_and_single_runs_keep_their_table(every_round, every_third):
    one = summary_table({"a": [_seed(0.8, 2)]}, target=0.85).loc["a"]
    assert one["final acc %"] == pytest.approx(80.0) and math.isnan(one["final acc % ±"])
    single = summary_table({"fedavg": every_round, "other": every_third}, target=0.5)
    assert not any("±" in c or c.startswith("reached") or c == "seeds" for c in single.columns)
    assert list(single.columns) == list(every_round.summary(0.5))[1:]  # unchanged: History.summary's columns
    mixed = summary_table({"one run": _seed(0.8, 2), "seeds": [_seed(0.8, 2), _seed(0.9, 2, seed=1)]}, target=0.85)
    assert list(mixed["seeds"]) == [1, 2] and math.isnan(mixed.loc["one run", "final acc % ±"])
    assert mixed.loc["seeds", "final acc % ±"] == pytest.approx(T_975[1] * math.sqrt(50) / math.sqrt(2))
    with pytest.raises(TypeError, match="History"):
        summary_table({"bad": [1, 2]})
    assert list(summary_table([[_seed(0.8, 2), _seed(0.9, 2)]]).index) == ["FedAvg"]  # a list of seeds in a list


def test_the_histories_of_a_list_of_seeds_are_recorded_under_their_key():
    from fedlab_utils.course import collect_histories

    seeds = [_seed(0.8, 2, seed=3), _seed(0.9, 2, seed=4)]
    assert list(collect_histories({"runs": {"FedAvg": seeds}})) == ["FedAvg · seed 3", "FedAvg · seed 4"]
