"""Course tooling: the notebook runner, claims and results files, sweeps, the nbgrader classroom
and its grading, and the Chinese edition's translation and glossary.  Needs the ``[course]``
extra (papermill, nbformat, nbconvert, nbgrader, polib) for the commands, not for :class:`Claims`.

Names load lazily from their modules on first use (:data:`_EXPORTS`).
"""
from importlib import import_module

#: public name -> the module that defines it
_EXPORTS = {
    "Claims": "fedlab_utils.course.claims",
    "POLICIES": "fedlab_utils.course.claims",
    "ROUND_FIELDS": "fedlab_utils.course.claims",
    "SEED_LIKE": "fedlab_utils.course.claims",
    "claim_policy": "fedlab_utils.course.claims",
    "collect_histories": "fedlab_utils.course.claims",
    "history_series": "fedlab_utils.course.claims",
    "readable": "fedlab_utils.course.claims",
    "record_results": "fedlab_utils.course.claims",
    "to_jsonable": "fedlab_utils.course.claims",
    "ClassroomError": "fedlab_utils.course.classroom",
    "Exercise": "fedlab_utils.course.classroom",
    "build_course": "fedlab_utils.course.classroom",
    "exercises": "fedlab_utils.course.classroom",
    "grader_metadata": "fedlab_utils.course.classroom",
    "lock_source": "fedlab_utils.course.classroom",
    "locked_metadata": "fedlab_utils.course.classroom",
    "normalize_notebook": "fedlab_utils.course.classroom",
    "solution_metadata": "fedlab_utils.course.classroom",
    "student_versions": "fedlab_utils.course.classroom",
    "validate_notebook": "fedlab_utils.course.classroom",
    "add_student_parser": "fedlab_utils.course.classroom_cli",
    "cmd_classroom": "fedlab_utils.course.classroom_cli",
    "cmd_student": "fedlab_utils.course.classroom_cli",
    "NotebookScores": "fedlab_utils.course.grading",
    "PLAUSIBLE_WRONG_ANSWERS": "fedlab_utils.course.grading",
    "QUICK_PARAMETERS": "fedlab_utils.course.grading",
    "format_scores": "fedlab_utils.course.grading",
    "grade_check": "fedlab_utils.course.grading",
    "CourseError": "fedlab_utils.course.runner",
    "LANGUAGES": "fedlab_utils.course.runner",
    "LANG_ENV": "fedlab_utils.course.runner",
    "NOTEBOOK_DIR": "fedlab_utils.course.runner",
    "ROOT": "fedlab_utils.course.runner",
    "add_claims_arguments": "fedlab_utils.course.runner",
    "add_lang_argument": "fedlab_utils.course.runner",
    "add_params_parser": "fedlab_utils.course.runner",
    "add_run_parser": "fedlab_utils.course.runner",
    "changed_parameters": "fedlab_utils.course.runner",
    "check_out_dir": "fedlab_utils.course.runner",
    "claims_policy_from_args": "fedlab_utils.course.runner",
    "cmd_params": "fedlab_utils.course.runner",
    "cmd_run": "fedlab_utils.course.runner",
    "execute": "fedlab_utils.course.runner",
    "find_notebooks": "fedlab_utils.course.runner",
    "kernel_environment": "fedlab_utils.course.runner",
    "merge_results": "fedlab_utils.course.runner",
    "notebook_dir": "fedlab_utils.course.runner",
    "notebook_parameters": "fedlab_utils.course.runner",
    "parse_parameters": "fedlab_utils.course.runner",
    "parse_value": "fedlab_utils.course.runner",
    "restored_environment": "fedlab_utils.course.runner",
    "summarize": "fedlab_utils.course.runner",
    "validate_parameters": "fedlab_utils.course.runner",
    "Point": "fedlab_utils.course.sweep",
    "cmd_sweep": "fedlab_utils.course.sweep",
    "expand_grid": "fedlab_utils.course.sweep",
    "parse_grid": "fedlab_utils.course.sweep",
    "parse_values": "fedlab_utils.course.sweep",
    "run_points": "fedlab_utils.course.sweep",
    "sweep": "fedlab_utils.course.sweep",
    "write_outputs": "fedlab_utils.course.sweep",
    "curves_figure": "fedlab_utils.course.sweep_results",
    "is_wall_time": "fedlab_utils.course.sweep_results",
    "numeric_metrics": "fedlab_utils.course.sweep_results",
    "plot_curves": "fedlab_utils.course.sweep_results",
    "plot_sweep": "fedlab_utils.course.sweep_results",
    "point_slug": "fedlab_utils.course.sweep_results",
    "round_rows": "fedlab_utils.course.sweep_results",
    "sweep_figure": "fedlab_utils.course.sweep_results",
    "sweep_rows": "fedlab_utils.course.sweep_results",
    "write_csv": "fedlab_utils.course.sweep_results",
    "CJK": "fedlab_utils.course.translate",
    "Coverage": "fedlab_utils.course.translate",
    "GLOSSARY_CELL_ID": "fedlab_utils.course.translate",
    "LINK_TARGET": "fedlab_utils.course.translate",
    "MIN_CJK_RATIO": "fedlab_utils.course.translate",
    "MIN_COVERAGE": "fedlab_utils.course.translate",
    "NotebookCheck": "fedlab_utils.course.translate",
    "SIBLING_NOTEBOOK": "fedlab_utils.course.translate",
    "build": "fedlab_utils.course.translate",
    "build_notebook": "fedlab_utils.course.translate",
    "build_readmes": "fedlab_utils.course.translate",
    "check": "fedlab_utils.course.translate",
    "check_notebook": "fedlab_utils.course.translate",
    "cjk_ratio": "fedlab_utils.course.translate",
    "coverage": "fedlab_utils.course.translate",
    "parser": "fedlab_utils.course.translate",
    "relocate_links": "fedlab_utils.course.translate",
}
__all__ = ["CJK", "Claims", "ClassroomError", "CourseError", "Coverage", "Exercise",
           "GLOSSARY_CELL_ID", "LANGUAGES", "LANG_ENV", "LINK_TARGET", "MIN_CJK_RATIO",
           "MIN_COVERAGE", "NOTEBOOK_DIR", "NotebookCheck", "NotebookScores",
           "PLAUSIBLE_WRONG_ANSWERS", "POLICIES", "Point", "QUICK_PARAMETERS", "ROOT",
           "ROUND_FIELDS", "SEED_LIKE", "SIBLING_NOTEBOOK", "add_claims_arguments",
           "add_lang_argument", "add_params_parser", "add_run_parser", "add_student_parser",
           "build", "build_course", "build_notebook", "build_readmes", "changed_parameters",
           "check", "check_notebook", "check_out_dir", "cjk_ratio", "claim_policy",
           "claims_policy_from_args", "cmd_classroom", "cmd_params", "cmd_run", "cmd_student",
           "cmd_sweep", "collect_histories", "coverage", "curves_figure", "execute", "exercises",
           "expand_grid", "find_notebooks", "format_scores", "grade_check", "grader_metadata",
           "history_series", "is_wall_time", "kernel_environment", "lock_source", "locked_metadata",
           "merge_results", "normalize_notebook", "notebook_dir", "notebook_parameters",
           "numeric_metrics", "parse_grid", "parse_parameters", "parse_value", "parse_values",
           "parser", "plot_curves", "plot_sweep", "point_slug", "readable", "record_results",
           "relocate_links", "restored_environment", "round_rows", "run_points",
           "solution_metadata", "student_versions", "summarize", "sweep", "sweep_figure",
           "sweep_rows", "to_jsonable", "validate_notebook", "validate_parameters", "write_csv",
           "write_outputs"]


def __getattr__(name: str):
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
