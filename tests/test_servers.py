"""Server side by hand: FedAdam and FedYogi on a computed two-round example (they differ only when
Δ² falls below v), FedAvgM, and the robust aggregators against hand computations and Flower's own."""
import math

import numpy as np
import pytest
import torch

from fedlab_utils.core import (
    ClientResult,
    FedAdam,
    FedAvgM,
    FedAvgServer,
    FedYogi,
    Median,
    TrimmedMean,
    fedavg_aggregate,
    make_server,
)


def _steps(server, deltas):
    x = {"w": torch.zeros(1, dtype=torch.float64)}
    path = []
    for d in deltas:
        x = server.step(x, {"w": torch.tensor([d], dtype=torch.float64)})
        path.append(float(x["w"]))
    return path


def test_fedadam_and_fedyogi_differ_on_a_hand_computed_step():
    """β1 = 0.9, β2 = 0.5, τ = 0.1, η = 1; Δ = 2 then Δ = 0.  v starts at τ² = 0.01.
    Round 1: m = 0.2; Adam v = 0.5·0.01 + 0.5·4 = 2.005, Yogi v = 0.01 + 0.5·4 = 2.01 (Δ² > v).
    Round 2: m = 0.18; Adam forgets, v = 0.5·2.005 = 1.0025; Yogi keeps v = 2.01 − 0.5·0 = 2.01."""
    adam = _steps(FedAdam(lr=1.0, beta2=0.5, tau=0.1), [2.0, 0.0])
    yogi = _steps(FedYogi(lr=1.0, beta2=0.5, tau=0.1), [2.0, 0.0])
    assert adam[0] == pytest.approx(0.2 / (math.sqrt(2.005) + 0.1), rel=1e-12)
    assert yogi[0] == pytest.approx(0.2 / (math.sqrt(2.01) + 0.1), rel=1e-12)
    assert adam[1] - adam[0] == pytest.approx(0.18 / (math.sqrt(1.0025) + 0.1), rel=1e-12)
    assert yogi[1] - yogi[0] == pytest.approx(0.18 / (math.sqrt(2.01) + 0.1), rel=1e-12)
    assert (yogi[1] - yogi[0]) / (adam[1] - adam[0]) < 0.75  # Yogi's second step is about 27 % smaller


def test_with_the_papers_beta2_adam_and_yogi_agree_while_updates_grow():
    """β2 = 0.99 and Δ² > v every round: Yogi's v is Adam's plus 1 % of the previous v, so the
    steps agree closely (the setting of lesson 04's first rounds), yet are not equal."""
    deltas = [0.1 * (k + 1) for k in range(5)]
    adam, yogi = _steps(FedAdam(lr=0.1), deltas), _steps(FedYogi(lr=0.1), deltas)
    assert adam != yogi
    assert max(abs(a - y) / abs(a) for a, y in zip(adam, yogi)) < 0.01


def test_fedavgm_is_momentum_and_fedavg_at_zero():
    assert _steps(FedAvgM(lr=1.0, momentum=0.5), [1.0, 1.0]) == pytest.approx([1.0, 2.5])
    assert _steps(FedAvgM(lr=1.0, momentum=0.0), [1.0, 3.0]) == _steps(FedAvgServer(), [1.0, 3.0])
    assert isinstance(make_server("fedavg", lr=0.5), FedAvgServer)
    with pytest.raises(ValueError, match="server="):
        make_server("fedsgd")


def _results(values, samples=None):
    samples = samples or [1] * len(values)
    return [ClientResult(i, n, {"w": torch.tensor(v, dtype=torch.float32)}, 0.0, n, 0)
            for i, (v, n) in enumerate(zip(values, samples))]


def test_median_by_hand_odd_and_even():
    assert Median()(_results([[1.0, -1.0], [5.0, 0.0], [2.0, 7.0]]), None, 1)["w"].tolist() == [2.0, 0.0]
    assert Median()(_results([[1.0], [5.0], [2.0], [10.0]]), None, 1)["w"].tolist() == [3.5]  # (2 + 5) / 2
    # sample counts do not weigh in (unlike FedAvg's mean)
    assert Median()(_results([[1.0], [5.0], [2.0]], [100, 1, 1]), None, 1)["w"].tolist() == [2.0]
    assert fedavg_aggregate(_results([[1.0], [5.0], [2.0]], [100, 1, 1]), None, 1)["w"].item() == pytest.approx(
        (100 * 1 + 5 + 2) / 102)


def test_trimmed_mean_by_hand():
    values = [[1.0], [5.0], [2.0], [10.0], [-3.0]]
    assert TrimmedMean(0.2)(_results(values), None, 1)["w"].item() == pytest.approx(8 / 3)  # drops -3 and 10
    assert TrimmedMean(0.1)(_results(values), None, 1)["w"].item() == pytest.approx(3.0)  # int(0.5) = 0: the mean
    assert TrimmedMean(0.25)(_results(values[:4]), None, 1)["w"].item() == pytest.approx(3.5)
    with pytest.raises(ValueError, match="beta"):
        TrimmedMean(0.5)


@pytest.mark.parametrize("n", [3, 4, 7])
def test_median_and_trimmed_mean_match_flowers_strategies(n):
    aggregate = pytest.importorskip("flwr.server.strategy.aggregate")
    rng = np.random.default_rng(n)
    layers = [rng.normal(size=(n, 3, 4)).astype(np.float32), rng.normal(size=(n, 5)).astype(np.float32)]
    results = [ClientResult(i, 1, {"a": torch.from_numpy(layers[0][i]), "b": torch.from_numpy(layers[1][i])}, 0.0, 1, 0)
               for i in range(n)]
    flower_median = aggregate.aggregate_median([([layers[0][i], layers[1][i]], 1) for i in range(n)])
    ours = Median()(results, None, 1)
    assert np.allclose(ours["a"].numpy(), flower_median[0], atol=1e-6)
    assert np.allclose(ours["b"].numpy(), flower_median[1], atol=1e-6)
    trimmed = TrimmedMean(0.3)(results, None, 1)
    assert np.allclose(trimmed["a"].numpy(), aggregate._trim_mean(layers[0], 0.3), atol=1e-6)
    assert np.allclose(trimmed["b"].numpy(), aggregate._trim_mean(layers[1], 0.3), atol=1e-6)
