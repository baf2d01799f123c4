"""The ``classroom`` and ``student`` subcommands of ``python -m fedlab_utils``.

``classroom`` writes an nbgrader course (:func:`fedlab_utils.course.classroom.build_course`), locks or
validates the committed notebooks (:func:`fedlab_utils.course.classroom.lock_source`), or autogrades
three submissions per notebook (:func:`fedlab_utils.course.grading.grade_check`); ``student`` writes
nbgrader's release versions (:func:`fedlab_utils.course.classroom.student_versions`).  Only the command
line lives here: it imports :mod:`fedlab_utils.course.classroom` and :mod:`fedlab_utils.course.grading`, and
neither imports it.
"""
from __future__ import annotations

from pathlib import Path

from fedlab_utils.course.classroom import ClassroomError, build_course, find_notebooks, lock_source, student_versions
from fedlab_utils.course.grading import format_scores, grade_check
from fedlab_utils.course.runner import CourseError, add_lang_argument, parse_parameters

__all__ = ["add_parser", "add_student_parser", "cmd_classroom", "cmd_student"]


def _course_error(exc: Exception) -> CourseError:
    return CourseError(str(exc))


def cmd_classroom(args) -> int:
    """``python -m fedlab_utils classroom``: see :func:`add_parser`."""
    try:
        if args.lock_source or args.validate:
            changes = lock_source(find_notebooks(args.notebooks, args.lang), check_only=args.validate)
            for name, changed in changes.items():
                print(f"  {name}: {'valid' if not changed else f'locked {len(changed)} cell(s); valid'}")
            return 0
        if args.grade_check:
            parameters = parse_parameters(args.parameter)
            results = grade_check(args.out, args.notebooks, parameters=parameters or None, quick=args.quick,
                                  lang=args.lang)
            print(format_scores(results))
            print(f"\ncourse directory with gradebook and feedback: {Path(args.out).resolve()}")
            return 0 if all(r.as_expected for r in results) else 1
        names = build_course(args.out, args.notebooks, lang=args.lang)
        root = Path(args.out).resolve()
        print(f"nbgrader course in {root}: {len(names)} assignment(s) in source/ and release/, "
              f"gradebook {root / 'gradebook.db'}")
        return 0
    except ClassroomError as exc:
        raise _course_error(exc) from exc


def cmd_student(args) -> int:
    """``python -m fedlab_utils student``: nbgrader's release versions, flat in one folder."""
    try:
        for path in student_versions(args.out, args.notebooks, lang=args.lang):
            print(f"  student version: {path}")
    except ClassroomError as exc:
        raise _course_error(exc) from exc
    return 0


def add_parser(sub) -> None:
    """The ``classroom`` subcommand."""
    parser = sub.add_parser(
        "classroom", help="build an nbgrader course (source/, release/, gradebook); lock/validate the notebooks; "
                          "autograde three submissions per notebook",
        description="Without options: write an nbgrader course directory to --out and release every "
                    "assignment with nbgrader generate_assignment.")
    parser.add_argument("notebooks", nargs="*", help="names or prefixes (e.g. 00); default: all")
    parser.add_argument("--out", default="build/classroom", help="course directory (default: build/classroom)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--lock-source", action="store_true",
                      help="lock every non-exercise cell of the committed notebooks (stable grade ids) and validate")
    mode.add_argument("--validate", action="store_true", help="only validate the committed notebooks")
    mode.add_argument("--grade-check", action="store_true",
                      help="autograde three submissions per notebook (solutions, untouched release, one wrong "
                           "exercise), write feedback, print the score table; exit 1 unless all are as expected")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                        help="with --grade-check: set a parameter in each submission's parameters cell")
    parser.add_argument("--quick", action="store_true",
                        help="with --grade-check: small per-notebook parameters (QUICK_PARAMETERS) for a fast check")
    add_lang_argument(parser, "zh builds the course from notebooks/zh/")
    parser.set_defaults(func=cmd_classroom)


def add_student_parser(sub) -> None:
    """The ``student`` subcommand (a shortcut: the release notebooks only)."""
    parser = sub.add_parser("student", help="student versions (nbgrader's release of each notebook) in one folder")
    parser.add_argument("notebooks", nargs="*")
    parser.add_argument("--out", default="build/student")
    add_lang_argument(parser, "zh releases notebooks/zh/")
    parser.set_defaults(func=cmd_student)
