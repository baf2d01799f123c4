"""Exercise checks.  A check **raises** ``AssertionError`` with a hint when an answer is wrong
and returns quietly (after printing a short confirmation) when it is right.  It never just
prints "failed".

Each lesson's checks live in a submodule named after it (``checks.baseline``,
``checks.pruning``, ...), imported below so that ``from fedlab_utils import checks`` gives them
all; the helpers here are what they are built from.

In an nbgrader assignment each exercise is a solution cell followed by a locked test cell that
calls one ``check_*`` function (see ``fedlab_utils.course.classroom``).  Checks that take a function
also take ``seed``: ``None`` (the default) runs the visible, hand-made cases; an int draws other
random inputs, which the test cells use as nbgrader *hidden tests*.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch

from ..i18n import gettext

__all__ = ["NotAnswered", "call_safely", "expect", "expect_close", "expect_percent", "expect_tensors_close",
           "expect_whole_number", "passed"]


class NotAnswered(AssertionError, NotImplementedError):
    """An exercise still holds nbgrader's ``raise NotImplementedError()``.

    Both an ``AssertionError`` (a failed check, 0 points) and a ``NotImplementedError`` (what a
    student's "Run All" stops at on a fresh release)."""


def passed(name: str) -> None:
    """Print the one-line confirmation a student sees when a check passes."""
    print(gettext('✓ {name}: correct').format(name=gettext(name)))


def expect(condition: bool, hint: str) -> None:
    """Raise ``AssertionError(hint)`` unless ``condition`` holds."""
    if not condition:
        raise AssertionError(hint)


def expect_close(actual, expected: float, what: str, rel: float = 1e-6, abs_: float = 0.0, hint: str = "") -> None:
    """``actual`` must be a number within the tolerance of ``expected``."""
    if isinstance(actual, torch.Tensor):
        actual = actual.item() if actual.numel() == 1 else actual
    expect(isinstance(actual, (int, float)) and not isinstance(actual, bool),
           gettext('{what}: expected a number, got {type_actual_name}. {hint}').format(what=what, type_actual_name=type(actual).__name__, hint=hint).strip())
    expect(math.isclose(actual, expected, rel_tol=rel, abs_tol=abs_),
           gettext('{what}: got {actual!r}, expected {expected!r}. {hint}').format(what=what, actual=actual, expected=expected, hint=hint).strip())


def expect_tensors_close(actual: dict | torch.Tensor, expected: dict | torch.Tensor, what: str,
                         atol: float = 1e-6, hint: str = "") -> None:
    """Tensors (or dicts of them, same keys) must match within ``atol``."""
    if isinstance(expected, dict):
        expect(isinstance(actual, dict) and set(actual) == set(expected),
               gettext('{what}: expected a dict with keys {sorted_expected}, got {sorted_actual_if_isinsta}. {hint}').format(what=what, sorted_expected=sorted(expected), sorted_actual_if_isinsta=sorted(actual) if isinstance(actual, dict) else type(actual).__name__, hint=hint).strip())
        for key in expected:
            expect_tensors_close(actual[key], expected[key], f"{what}[{key!r}]", atol, hint)
        return
    expect(isinstance(actual, torch.Tensor), gettext('{what}: expected a tensor, got {type_actual_name}. {hint}').format(what=what, type_actual_name=type(actual).__name__, hint=hint).strip())
    expect(actual.shape == expected.shape, gettext('{what}: shape {tuple_actual_shape} != {tuple_expected_shape}. {hint}').format(what=what, tuple_actual_shape=tuple(actual.shape), tuple_expected_shape=tuple(expected.shape), hint=hint).strip())
    err = (actual.detach().float().cpu() - expected.detach().float().cpu()).abs().max().item()
    expect(err <= atol, gettext('{what}: off by up to {err:.3g} (tolerance {atol}). {hint}').format(what=what, err=err, atol=atol, hint=hint).strip())


def call_safely(fn: Callable, *args, what: str):
    """Call a student's function; turn a crash (or a leftover NotImplementedError) into a hint."""
    try:
        return fn(*args)
    except NotAnswered:
        raise
    except NotImplementedError as exc:
        raise NotAnswered(gettext('{what}: not implemented yet -- replace `raise NotImplementedError()` with your code').format(what=what)) from exc


def expect_whole_number(actual, what: str, hint: str = "") -> int:
    """``actual`` must be a whole number (an int, or a float/0-d tensor with an integer value).

    Returns it as an ``int``; a bool, a fraction or a non-number raises with ``hint``."""
    if isinstance(actual, torch.Tensor) and actual.numel() == 1:
        actual = actual.item()
    ok = (isinstance(actual, numbers.Integral) and not isinstance(actual, bool)) or (
        isinstance(actual, numbers.Real) and not isinstance(actual, bool) and math.isfinite(actual)
        and float(actual).is_integer())
    expect(ok, gettext('{what}: expected a whole number, got {actual!r} ({type_actual_name}). {hint}').format(what=what, actual=actual, type_actual_name=type(actual).__name__, hint=hint).strip())
    return int(actual)


def expect_ratio_within(prediction: float, measured: float, band: float, what: str, hint: str, *,
                        usual_wrong: float | None = None, usual_wrong_message: str = "", digits: int = 1) -> None:
    """The one rule of the predict-a-ratio checks (lessons 01, 02, 03): a prediction passes within
    ``band`` (relative) of the ``measured`` ratio; the lesson's usual wrong answer (``usual_wrong``,
    within the same band) gets its own message; the confirmation shows ``digits`` decimals."""
    within = abs(prediction - measured) <= band * measured
    if not within and usual_wrong is not None and abs(prediction - usual_wrong) <= band * usual_wrong:
        raise AssertionError(usual_wrong_message)
    expect(within, gettext('{what}: {prediction:g}x is not within {band_percent:.0f}% of the measured ratio. {hint}').format(what=what, prediction=prediction, band_percent=100 * band, hint=hint))
    if digits == 1:
        print(gettext('✓ your prediction {prediction:.3g}x vs measured {measured:.1f}x: within {band_percent:.0f}%').format(prediction=prediction, measured=measured, band_percent=100 * band))
    else:
        print(gettext('✓ your prediction {prediction:.3g}x vs measured {measured:.2f}x: within {band_percent:.0f}%').format(prediction=prediction, measured=measured, band_percent=100 * band))


def expect_percent(predicted, what: str, measured_percent: float, band: float, example: str) -> float:
    """A prediction given in percent: a number in [0, 100], and not a fraction where percent was asked.

    ``example`` shows the expected form (e.g. ``"25 for 25 %"``).  A value below 1 while the
    measured share is above ``1 + band`` percent is taken for a fraction and refused with a hint.
    """
    expect(isinstance(predicted, numbers.Real) and not isinstance(predicted, bool),
           gettext('{what}: expected a number in percent (e.g. {example}), got {type_predicted_name}').format(what=what, example=example, type_predicted_name=type(predicted).__name__))
    expect(0 <= predicted <= 100, gettext('{what}={predicted!r} is not a share in percent (0 to 100).').format(what=what, predicted=predicted))
    expect(not (0 < predicted < 1 and measured_percent > 1 + band),
           gettext('{what}={predicted!r} looks like a fraction; give percent (e.g. {example}).').format(what=what, predicted=predicted, example=example))
    return float(predicted)


# Every lesson's checks, so that ``checks.<lesson>`` works after ``from fedlab_utils import checks``.
# (Imported last: they are built from the helpers above.)
from . import acceleration, baseline, capstone, compression, deployment, distillation, parallel, pruning  # noqa: E402
