"""Grading the course with nbgrader's real pipeline: three submissions per notebook, autograded.

:func:`grade_check` (``python -m fedlab_utils classroom --grade-check``) builds the course
(:func:`fedlab_utils.course.classroom.build_course`) and autogrades, per notebook, the instructor's
solutions, the untouched release and the solutions with one exercise answered wrongly
(:data:`PLAUSIBLE_WRONG_ANSWERS`), with nbgrader's ``autograde`` and SQLite gradebook.  Discussion
answers (nbgrader's manually graded answer cells) are not autograded: the gradebook marks the
answered ones as waiting for manual grading (formgrader), and an answer left as released scores 0.
:func:`format_scores` prints the table.
"""
from __future__ import annotations

import copy
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from fedlab_utils.course.classroom import (
    ClassroomError,
    _api,
    _is_manual_answer,
    _is_parameters,
    _meta,
    _require,
    _tools_on_path,
    build_course,
    exercises,
)
from fedlab_utils.course.runner import LANG_ENV, restored_environment

__all__ = ["PLAUSIBLE_WRONG_ANSWERS", "QUICK_PARAMETERS", "NotebookScores", "grade_check", "format_scores"]

#: One plausible wrong answer per notebook, for its FIRST exercise (so that the later exercises,
#: which must not depend on it, still score): ``{notebook stem: (solution grade_id, cell source)}``.
PLAUSIBLE_WRONG_ANSWERS: dict[str, tuple[str, str]] = {
    "00_federated_baseline": ("00-build-fedavg-round",
                              "def my_fedavg_round(global_model, clients, fraction, local, round_idx, seed):\n"
                              "    chosen = sample_clients(len(clients), fraction, np.random.default_rng([seed, round_idx]))\n"
                              "    global_state = model_state(global_model)\n"
                              "    updates = []\n"
                              "    for cid in chosen:\n"
                              "        model = copy.deepcopy(global_model)\n"
                              "        optimizer = torch.optim.SGD(model.parameters(), lr=local.lr)\n"
                              "        shuffle = client_generator(seed, round_idx, cid)\n"
                              "        for _ in range(local.epochs):\n"
                              "            for idx in minibatches(len(clients[cid]), local.batch_size, shuffle):\n"
                              "                optimizer.zero_grad()\n"
                              "                loss = torch.nn.functional.cross_entropy(model(clients[cid].x[idx]), clients[cid].y[idx])\n"
                              "                loss.backward()\n"
                              "                optimizer.step()\n"
                              "        updates.append({k: v - global_state[k] for k, v in model_state(model).items()})\n"
                              "    return {k: global_state[k] + sum(u[k] for u in updates) / len(updates) for k in global_state}\n"),
    "01_pruning": ("01-build-global-mask", "def my_global_masks(weights, sparsity):\n"
                   "    return {name: (w.abs() > w.abs().flatten().kthvalue(max(1, round(sparsity * w.numel())))"
                   ".values) for name, w in weights.items()}\n"),
    "02_compression": ("02-build-quantize", "def my_quantize(x, bits):\n    lo, hi = float(x.min()), float(x.max())\n"
                       "    scale = (hi - lo) / 2 ** bits\n"
                       "    return torch.clamp(torch.round((x - lo) / scale), 0, 2 ** bits - 1), lo, scale\n"),
    "03_distillation": ("03-build-kd-loss", "def my_kd_loss(student_logits, teacher_logits, targets, temperature, "
                        "alpha):\n    T = temperature\n    soft = F.kl_div(F.log_softmax(student_logits / T, dim=1), "
                        "F.softmax(teacher_logits / T, dim=1), reduction='batchmean')\n"
                        "    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits, targets)\n"),
    "04_acceleration": ("04-build-server-step", "def server_step(global_state, update, m, v, lr, beta1, beta2, tau, "
                        "variant):\n    if m is None:\n        m = {k: torch.zeros_like(d) for k, d in update.items()}\n"
                        "        v = {k: torch.full_like(d, tau ** 2) for k, d in update.items()}\n"
                        "    m = {k: beta1 * m[k] + (1 - beta1) * update[k] for k in update}\n"
                        "    v = {k: beta2 * v[k] + (1 - beta2) * update[k] ** 2 for k in update}  # Adam's v for both\n"
                        "    return {k: global_state[k] + lr * m[k] / (v[k].sqrt() + tau) for k in global_state}, m, v\n"),
    "05_model_parallelism": ("05-build-split-step", "def split_step(client_part, server_part, x, y, send_up, send_down):\n"
                             "    server_in = send_up(client_part(x)).requires_grad_()  # no gradient goes back\n"
                             "    loss = F.cross_entropy(server_part(server_in), y)\n"
                             "    loss.backward()\n"
                             "    return loss\n"),
    "06_capstone": ("06-build-recipe", "def my_recipe_parts(config, model):\n"
                    "    server = FedAvgM(lr=1.0, momentum=config.server_momentum)\n"
                    "    schedule = PruningSchedule(config.sparsity, 'cubic', every=1, end=max(1, config.rounds // 2))\n"
                    "    top_k = ErrorFeedback(TopKCodec(config.topk_fraction, values=QuantizeCodec(config.value_bits)))\n"
                    "    return {'uplink': SparseQuantizeCodec(config.downlink_bits), 'downlink': top_k,\n"
                    "            **FederatedPruning(model, schedule).hooks(inner=server)}\n"),
    "07_deployment": ("07-build-client-train", "def my_client_train(msg, context):\n"
                      "    config = DeploymentConfig.from_run_config(context.run_config)\n"
                      "    partition_id = int(context.node_config['partition-id'])\n"
                      "    clients, _, model = build_task(config)\n"
                      "    data, codec = clients[partition_id], make_codec(config.uplink)\n"
                      "    sent = msg.content['fedlab']\n"
                      "    received = Fp32Codec().decode(bytes(sent['global']), model_state(model))\n"
                      "    model.load_state_dict(received)\n"
                      "    train_locally(model, data, config.local(),\n"
                      "                  generator=client_generator(config.seed, int(sent['round']), partition_id))\n"
                      "    payload = codec.encode(state_delta(model_state(model), received), partition_id)\n"
                      "    return Message(RecordDict({'fedlab': ConfigRecord({'payload': payload})}), reply_to=msg)\n"),
}


def _fill(release_nb, source_nb, wrong: tuple[str, str] | None = None):
    """The release notebook answered with the source's solutions (and optionally one wrong answer)."""
    solutions = {_meta(c)["grade_id"]: c.source for c in source_nb.cells if _meta(c).get("solution")}
    answered = copy.deepcopy(release_nb)
    for cell in answered.cells:
        gid = _meta(cell).get("grade_id")
        if _meta(cell).get("solution") and gid in solutions:
            cell.source = wrong[1] if wrong and gid == wrong[0] else solutions[gid]
    return answered


@dataclass
class NotebookScores:
    """Autograded scores of the three submissions of one notebook."""

    assignment: str
    max_score: float
    scores: dict[str, float]
    wrong_exercise: str
    wrong_points: float
    feedback: dict[str, Path]
    manual_points: float = 0.0  # discussion answers: not autograded, left for nbgrader's formgrader
    #: the discussion answers' grade ids, and per submission those nbgrader's gradebook marks
    #: ``needs_manual_grade`` (an answered cell; an untouched one is scored 0 automatically)
    manual_cells: list[str] = field(default_factory=list)
    waiting: dict[str, list[str]] = field(default_factory=dict)

    @property
    def as_expected(self) -> bool:
        """Autograded points: full, 0, and full minus the wrong exercise's; every answered discussion
        cell waits for a grader, and an untouched one does not (nbgrader gives an unchanged answer 0)."""
        waiting_ok = (not self.manual_cells or (sorted(self.waiting.get("solutions", [])) == sorted(self.manual_cells)
                                                and self.waiting.get("untouched") == []))
        return (self.scores["solutions"] == self.max_score and self.scores["untouched"] == 0
                and self.scores["one-wrong"] == self.max_score - self.wrong_points and waiting_ok)


#: Small parameters per notebook for a quick ``--grade-check --quick`` (every graded check still runs
#: on the notebook's real objects; the lesson's claims are recorded, not asserted, with them).
QUICK_PARAMETERS: dict[str, dict] = {
    "00_federated_baseline": {"dataset": "digits", "num_clients": 6, "rounds": 2, "fedsgd_rounds": 2,
                              "local_epochs": 1},
    "01_pruning": {"dataset": "digits", "num_clients": 4, "rounds": 4, "finetune_rounds": 1},
    "02_compression": {"dataset": "digits", "num_clients": 4, "rounds": 2, "cnn_rounds": 2},
    "03_distillation": {"dataset": "digits", "num_clients": 4, "rounds": 2, "local_epochs": 1, "proxy_size": 200,
                        "distill_epochs": 2},
    "04_acceleration": {"num_clients": 6, "rounds": 5, "local_epochs": 1},
    "05_model_parallelism": {"dataset": "digits", "num_clients": 4, "rounds": 1, "pipeline_batch": 16,
                             "micro_batches": 2},
    "06_capstone": {"dataset": "digits", "num_clients": 4, "rounds": 2, "recipe_rounds": 2, "local_epochs": 1,
                    "recipe_epochs": 1},
    "07_deployment": {"dataset": "digits", "rounds": 1, "kill_round": 2},
}


def _wrong_answer(name: str, nb) -> tuple[str, str]:
    found = exercises(nb)
    if not found:
        raise ClassroomError(f"{name} has no exercises to grade")
    registered = PLAUSIBLE_WRONG_ANSWERS.get(name)
    if registered and any(e.solution_id == registered[0] for e in found):  # a predict exercise may come first
        return registered
    # No registered wrong answer: leave the first exercise unanswered (nbgrader's stub).
    return found[0].solution_id, "# YOUR CODE HERE\nraise NotImplementedError()\n"


def grade_check(out: Path | str, names: Sequence[str] = (), parameters: dict | None = None,
                feedback: bool = True, quick: bool = False, lang: str | None = None) -> list[NotebookScores]:
    """Build the course at ``out`` and autograde three submissions of every notebook with nbgrader.

    Students ``solutions`` (the instructor's answers pasted into the release), ``untouched`` (the
    release as handed out) and ``one-wrong`` (the solutions with the first exercise answered
    wrongly).  ``parameters`` are appended to each submission's ``parameters`` cell -- what a
    student may edit -- e.g. ``{"rounds": 2}``; ``quick`` adds :data:`QUICK_PARAMETERS` per notebook.
    The kernels learn which parameters changed (``FEDLAB_CHANGED_PARAMETERS``), so the lesson's
    claims are recorded rather than raised, as with ``python -m fedlab_utils run -p``.
    ``lang="zh"`` grades the Chinese edition, with ``FEDLAB_LANG=zh`` in the kernels.
    Generates HTML feedback.
    """
    import warnings

    from sqlalchemy.exc import SAWarning

    with restored_environment(("FEDLAB_CHANGED_PARAMETERS", "FEDLAB_PROGRESS", "FEDLAB_WIDGETS", LANG_ENV)):
        if lang and lang != "en":
            os.environ[LANG_ENV] = lang  # the kernels print the checks' hints in that language
        else:
            os.environ.pop(LANG_ENV, None)
        os.environ.setdefault("FEDLAB_PROGRESS", "0")
        os.environ.setdefault("FEDLAB_WIDGETS", "0")  # nbgrader runs kernels through nbclient: no ipywidgets
        with _tools_on_path(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=SAWarning)  # nbgrader's own session warnings
            return _grade_check(Path(out).resolve(), names, parameters or {}, feedback, quick, lang)


def _grade_check(root: Path, names: Sequence[str], common: dict, feedback: bool,
                 quick: bool, lang: str | None = None) -> list[NotebookScores]:
    from nbgrader.api import Gradebook

    assignments = build_course(root, names, lang=lang)
    # Quick runs have small cells: a cell still silent after 3 minutes is a kernel that lost a message
    # (seen with ipykernel 7 on an overloaded machine), not work; fail it fast and grade again.
    api = _api(root, cell_timeout=180 if quick else 600)
    results = []
    for name in assignments:
        source = nbformat.read(root / "source" / name / f"{name}.ipynb", as_version=4)
        release = nbformat.read(root / "release" / name / f"{name}.ipynb", as_version=4)
        wrong = _wrong_answer(name, source)
        submissions = {"solutions": _fill(release, source), "untouched": copy.deepcopy(release),
                       "one-wrong": _fill(release, source, wrong)}
        parameters = {**(QUICK_PARAMETERS.get(name, {}) if quick else {}), **common}
        os.environ["FEDLAB_CHANGED_PARAMETERS"] = ",".join(sorted(parameters))
        for student, nb in submissions.items():
            if parameters:
                for cell in nb.cells:
                    if _is_parameters(cell):
                        cell.source += "\n" + "\n".join(f"{k} = {v!r}" for k, v in parameters.items()) + "\n"
            target = root / "submitted" / student / name / f"{name}.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, target)
            _autograde(api, root, name, student)
        written = {}
        if feedback:
            for student in submissions:
                _require(api.generate_feedback(name, student, force=True), f"generate_feedback {name} {student}")
                written[student] = root / "feedback" / student / name / f"{name}.html"
        with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
            scores = {s: gradebook.find_submission(name, s).score for s in submissions}
            manual = sum(_meta(c).get("points", 0) for c in source.cells if _is_manual_answer(c))
            max_score = gradebook.find_assignment(name).max_score - manual  # the autograded points
            points = gradebook.find_graded_cell(next(e.test_id for e in exercises(source)
                                                     if e.solution_id == wrong[0]), name, name).max_score
            waiting = {s: sorted(g.name for g in gradebook.find_submission_notebook(name, name, s).grades
                                 if g.needs_manual_grade) for s in submissions}
        manual_cells = [_meta(c)["grade_id"] for c in source.cells if _is_manual_answer(c)]
        results.append(NotebookScores(name, max_score, scores, wrong[0], points, written, manual, manual_cells,
                                      waiting))
    return results


def _timed_out_cells(notebook: Path) -> int:
    nb = nbformat.read(notebook, as_version=4)
    return sum(1 for c in nb.cells for o in c.get("outputs", [])
               if o.get("output_type") == "error" and o.get("ename") == "CellTimeoutError")


def _autograde(api, root: Path, name: str, student: str, attempts: int = 2) -> None:
    """nbgrader autograde; graded again (once) if a cell timed out, i.e. the kernel stopped answering."""
    for attempt in range(1, attempts + 1):
        _require(api.autograde(name, student, force=True, create=True), f"autograde {name} for {student}")
        graded = root / "autograded" / student / name / f"{name}.ipynb"
        timed_out = _timed_out_cells(graded)
        if not timed_out:
            return
        print(f"  {name} / {student}: {timed_out} cell(s) timed out (attempt {attempt} of {attempts})", file=sys.stderr)


def format_scores(results: Sequence[NotebookScores]) -> str:
    """The score table of :func:`grade_check` (Markdown, as in the README)."""
    lines = ["| notebook | solutions | untouched release | one wrong exercise | waiting for manual grading "
             "(solutions) | as expected |", "|---|---|---|---|---|---|"]
    for r in results:
        waiting = r.waiting.get("solutions", [])
        manual = (f"{len(waiting)} discussion answer(s), {r.manual_points:g} points: "
                  + ", ".join(f"`{gid}`" for gid in waiting)) if waiting else "none"
        lines.append(f"| {r.assignment} | {r.scores['solutions']:g} / {r.max_score:g} | "
                     f"{r.scores['untouched']:g} / {r.max_score:g} | {r.scores['one-wrong']:g} / {r.max_score:g} "
                     f"(`{r.wrong_exercise}`: −{r.wrong_points:g}) | {manual} | {'yes' if r.as_expected else 'NO'} |")
    if any(r.manual_cells for r in results):
        lines.append("\nScores are the autograded points. Discussion answers are graded by hand in nbgrader's "
                     "formgrader (run `jupyter lab` in the course directory, then Nbgrader > Formgrader > "
                     "Manual Grading); an answer left as released is scored 0 automatically.")
    return "\n".join(lines)
