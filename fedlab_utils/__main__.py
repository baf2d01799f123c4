"""Course commands: ``python -m fedlab_utils run|sweep|student|classroom|params|deploy|translate``.

``run`` executes notebooks with papermill, validating ``-p NAME VALUE`` against each notebook's
``parameters`` cell, renders HTML and merges every notebook's results JSON into
``<out>/results.json``; ``params`` lists a notebook's parameters (both in
:mod:`fedlab_utils.course.runner`, which holds what every command shares).  ``sweep`` runs a grid of
parameters (:mod:`fedlab_utils.course.sweep`).  ``classroom`` builds an nbgrader course and ``student``
writes the student versions (:mod:`fedlab_utils.course.classroom_cli`).  ``deploy`` runs a task on Flower's
deployment engine (:mod:`fedlab_utils.deploy.cli`).  ``translate`` keeps the Chinese edition in step
with the English notebooks (:mod:`fedlab_utils.course.translate`).

This file only dispatches: each subcommand's module is imported when that subcommand is named,
and nothing imports this module.  A new subcommand adds one entry to :data:`SUBCOMMANDS`.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from fedlab_utils.course.runner import CourseError

DESCRIPTION = ("The course's commands: run notebooks, sweep parameters, build the nbgrader course, deploy on "
               "Flower, keep the Chinese edition in step. Each subcommand has its own --help.")
#: name -> ``(module, function)`` that adds the subcommand's parser (with ``set_defaults(func=...)``), in help order.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("fedlab_utils.course.runner", "add_run_parser"),
    "sweep": ("fedlab_utils.course.sweep", "add_parser"),
    "student": ("fedlab_utils.course.classroom_cli", "add_student_parser"),
    "classroom": ("fedlab_utils.course.classroom_cli", "add_parser"),
    "params": ("fedlab_utils.course.runner", "add_params_parser"),
    "deploy": ("fedlab_utils.deploy.cli", "add_parser"),
}
#: Subcommands that read their own arguments: ``name -> (module, main)``, called as ``main(argv)``.
PASS_THROUGH: dict[str, tuple[str, str]] = {
    "translate": ("fedlab_utils.course.translate", "main"),
}
PASS_THROUGH_HELP = {"translate": "extract/build/check the Chinese edition's gettext catalogs and notebooks "
                                  "(python -m fedlab_utils translate --help)"}


def _adder(module: str, function: str) -> Callable[[object], None]:
    return getattr(importlib.import_module(module), function)


def build_parser() -> argparse.ArgumentParser:
    """The command line: every subcommand in :data:`SUBCOMMANDS` and :data:`PASS_THROUGH`."""
    parser = argparse.ArgumentParser(prog="python -m fedlab_utils", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for module, function in SUBCOMMANDS.values():
        _adder(module, function)(sub)
    for name in PASS_THROUGH:
        listed = sub.add_parser(name, help=PASS_THROUGH_HELP.get(name), add_help=False)
        listed.add_argument("argv", nargs=argparse.REMAINDER)
    return parser


def pass_through(name: str, argv: list[str]) -> int:
    """Call the ``main(argv)`` of a subcommand that parses its own arguments (imported only now)."""
    module, function = PASS_THROUGH[name]
    try:
        entry = getattr(importlib.import_module(module), function)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        raise CourseError(f"the {name!r} command is not available: its module {module} is not installed "
                          f"in this copy of the course (expected {module.replace('.', '/')}.py)") from None
    except AttributeError:
        raise CourseError(f"the {name!r} command is not available: {module} has no {function}(argv)") from None
    status = entry(argv)
    return int(status or 0)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line), run the subcommand, turn a CourseError into one line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in PASS_THROUGH:
            return pass_through(argv[0], argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except CourseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status


if __name__ == "__main__":
    sys.exit(main())
