"""Notebook 06's exercises, each check tested both ways: the notebook's own model answers pass,
and wrong answers of the kind students give fail with a hint that names the mistake."""
from __future__ import annotations

import nbformat
import numpy as np
import pytest

from fedlab_utils.checks import capstone
from fedlab_utils.compression import ErrorFeedback, QuantizeCodec, SparseQuantizeCodec, TopKCodec
from fedlab_utils.core import FedAvgM
from fedlab_utils.course import NOTEBOOK_DIR
from fedlab_utils.lessons import capstone as cap
from fedlab_utils.lessons.pruning import FederatedPruning, PruningSchedule

NOTEBOOK = NOTEBOOK_DIR / "06_capstone.ipynb"


def _solution(grade_id: str) -> str:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    [cell] = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    return cell.source


# ----------------------------------------------------------------------------- build: the recipe's parts
def _parts(config, model, *, swap=False, no_transform=False, no_feedback=False, no_momentum=False,
           no_pruning=False):
    """The recipe's parts, or one plausible mistake."""
    server = FedAvgM(lr=1.0, momentum=config.server_momentum)
    top_k = TopKCodec(config.topk_fraction, values=QuantizeCodec(config.value_bits))
    schedule = PruningSchedule(config.sparsity, "cubic", every=1, end=max(1, config.rounds // 2))
    hooks = FederatedPruning(model, schedule).hooks(inner=None if no_momentum else server)
    parts = {"uplink": top_k if no_feedback else ErrorFeedback(top_k),
             "downlink": SparseQuantizeCodec(config.downlink_bits), **hooks}
    if swap:
        parts["uplink"], parts["downlink"] = parts["downlink"], parts["uplink"]
    if no_transform:
        del parts["transform"]
    if no_pruning:
        del parts["transform"]
        parts["server"] = server
    return parts


def test_the_notebooks_recipe_passes_on_the_visible_and_a_hidden_case():
    namespace = {"FedAvgM": FedAvgM, "PruningSchedule": PruningSchedule, "FederatedPruning": FederatedPruning,
                 "ErrorFeedback": ErrorFeedback, "TopKCodec": TopKCodec, "QuantizeCodec": QuantizeCodec,
                 "SparseQuantizeCodec": SparseQuantizeCodec}
    exec(_solution("06-build-recipe"), namespace)
    capstone.check_recipe_parts(namespace["my_recipe_parts"])
    capstone.check_recipe_parts(namespace["my_recipe_parts"], seed=1)
    capstone.check_recipe_parts(cap.recipe_parts)


@pytest.mark.parametrize("mistake, message", [
    ({"swap": True}, "top-k codec is on the downlink"),
    ({"no_transform": True}, "mask is not applied before top-k"),
    ({"no_feedback": True}, "no error feedback"),
    ({"no_momentum": True}, "server optimizer is missing"),
    ({"no_pruning": True}, "Federated pruning is missing"),
])
def test_plausible_wrong_recipes_fail_with_a_hint(mistake, message):
    with pytest.raises(AssertionError, match=message):
        capstone.check_recipe_parts(lambda config, model: _parts(config, model, **mistake))


def test_recipe_answers_of_the_wrong_shape_fail_clearly():
    with pytest.raises(AssertionError, match="must return a dict"):
        capstone.check_recipe_parts(lambda config, model: [ErrorFeedback(TopKCodec(0.05))])
    with pytest.raises(AssertionError, match="does not take as parts: \\['codec'\\]"):
        capstone.check_recipe_parts(lambda config, model: {"codec": TopKCodec(0.05)})
    with pytest.raises(NotImplementedError, match="not implemented yet"):
        capstone.check_recipe_parts(lambda config, model: (_ for _ in ()).throw(NotImplementedError()))


def test_the_package_recipe_switches_pieces_off():
    configs = cap.recipe_configs(4, 1, recipe_rounds=2, recipe_epochs=2, sparsity=0.5)
    model = __import__("fedlab_utils.models", fromlist=["make_model"]).make_model("mlp", (1, 8, 8), 10)
    assert cap.recipe_parts(configs["FedAvg"], model) == {}
    assert set(cap.recipe_parts(configs["full recipe"], model)) == {"uplink", "downlink", "transform", "server"}
    assert set(cap.recipe_parts(configs["- federated pruning"], model)) == {"uplink", "downlink", "server"}
    assert isinstance(cap.recipe_parts(configs["- federated pruning"], model)["downlink"], QuantizeCodec)
    assert "uplink" not in cap.recipe_parts(configs["- uplink top-k + EF"], model)


# ----------------------------------------------------------------------------- predict: pruning + top-k
BYTES = {"fp32 (FedAvg)": 100_000, "pruning alone (sparse payload)": 33_000, "top-k alone": 2_500,
         "pruning + top-k": 2_500}


def test_pruned_topk_prediction_both_ways(capsys):
    namespace = {"s_topk": 1 - BYTES["top-k alone"] / BYTES["fp32 (FedAvg)"]}
    exec(_solution("06-predict-pruned-topk"), namespace)
    for right in (namespace["my_pruned_topk_factor"], 40.0, 33.0, 49.0, np.float64(45.0)):
        capstone.check_pruned_topk_prediction(right, BYTES)
    assert "top-k alone 40.0x" in capsys.readouterr().out
    product = BYTES["fp32 (FedAvg)"] ** 2 / (BYTES["pruning alone (sparse payload)"] * BYTES["top-k alone"])
    for wrong in (product,  # independent savings
                  40.0 * 100 / 33 + 40.0,  # the two factors added
                  3.03,  # pruning alone
                  0, -1, None, True, "40", float("nan")):
        with pytest.raises(AssertionError):
            capstone.check_pruned_topk_prediction(wrong, BYTES)
    with pytest.raises(AssertionError, match="independent savings would give 121x"):
        capstone.check_pruned_topk_prediction(product, BYTES)


# ----------------------------------------------------------------------------- the notebook
def test_the_notebook_has_its_build_predict_and_discussion_cells():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    meta = [c.metadata.get("nbgrader", {}) for c in nb.cells]
    ids = [m.get("grade_id", "") for m in meta]
    assert "06-build-recipe" in ids and "06-build-recipe-check" in ids
    assert ids.index("06-build-recipe") < ids.index("cell-recipe-source")  # the student builds before the package shows
    assert any(m.get("grade") and m["grade_id"].startswith("06-predict-") and m["points"] > 0 for m in meta)
    discussions = [(c, m) for c, m in zip(nb.cells, meta) if m.get("grade_id", "").startswith("06-discuss-")]
    assert len(discussions) == 2 and all(c.cell_type == "markdown" and m["grade"] and m["solution"]
                                         and m["points"] > 0 and "### BEGIN SOLUTION" in c.source
                                         for c, m in discussions)
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for false_statement in ("the article would say", "adds them up", "lists each technique's saving",
                            "the way the article adds", "adds radio sessions", "paper-vs-ours table"):
        assert false_statement not in prose.lower()


# ----------------------------------------------------------------------------- predict: the downlink
def test_downlink_prediction_both_ways(capsys):
    namespace = {"rounds": 20, "recipe_rounds": 14, "sparsity": 0.7, "downlink_bits": 8, "np": np}
    exec(_solution("06-predict-downlink"), namespace)
    assert namespace["my_downlink_factor"] == pytest.approx(10.6, abs=0.05)
    fedavg, recipe = 81_420_000, 7_850_000  # 10.37x, as a 20-round FedAvg vs a 14-round recipe measures it
    capstone.check_downlink_prediction(namespace["my_downlink_factor"], fedavg, recipe)
    assert "measured 10.37x" in capsys.readouterr().out
    for wrong in (20 / 14 * 4 / (1 / 8 + 0.3),  # the final sparsity from the first round (13.4x)
                  20 / 14 * 4 / 0.414,  # no bitmap
                  4 / (1 / 8 + 0.414),  # per round, forgetting the fewer rounds
                  20 / 14 * 32 / 8,  # quantization and rounds only
                  0, None, True, "10", float("inf")):
        with pytest.raises(AssertionError):
            capstone.check_downlink_prediction(wrong, fedavg, recipe)
    with pytest.raises(AssertionError, match="nothing to compare"):
        capstone.check_downlink_prediction(10.0, fedavg, 0)
