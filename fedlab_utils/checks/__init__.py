"""Exercise checks.  A check **raises** ``AssertionError`` with a hint when an answer is wrong
and returns quietly (after printing a short confirmation) when it is right.  It never just
prints "failed".

Each lesson's checks live in a submodule named after it (``checks.baseline``,
``checks.pruning``, ...), imported below so that ``from fedlab_utils import checks`` gives them
all; the helpers here are what they are built from.

In an nbgrader assignment each exercise is a solution cell followed by a locked test cell that
calls one ``check_*`` function (see ``fedlab_utils.classroom``).  Checks that take a function
also take ``seed``: ``None`` (the default) runs the visible, hand-made cases; an int draws other
random inputs, which the test cells use as nbgrader *hidden tests*.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch

__all__ = ["NotAnswered", "call_safely", "expect", "expect_close", "expect_percent", "expect_tensors_close",
           "expect_whole_number", "passed"]


class NotAnswered(AssertionError, NotImplementedError):
    """An exercise still holds nbgrader's ``raise NotImplementedError()``.

    Both an ``AssertionError`` (a failed check, 0 points) and a ``NotImplementedError`` (what a
    student's "Run All" stops at on a fresh release)."""


def passed(name: str) -> None:
    """Print the one-line confirmation a student sees when a check passes."""
    print(f"✓ {name}: correct")


def expect(condition: bool, hint: str) -> None:
    """Raise ``AssertionError(hint)`` unless ``condition`` holds."""
    if not condition:
        raise AssertionError(hint)


def expect_close(actual, expected: float, what: str, rel: float = 1e-6, abs_: float = 0.0, hint: str = "") -> None:
    """``actual`` must be a number within the tolerance of ``expected``."""
    if isinstance(actual, torch.Tensor):
        actual = actual.item() if actual.numel() == 1 else actual
    expect(isinstance(actual, (int, float)) and not isinstance(actual, bool),
           f"{what}: expected a number, got {type(actual).__name__}. {hint}".strip())
    expect(math.isclose(actual, expected, rel_tol=rel, abs_tol=abs_),
           f"{what}: got {actual!r}, expected {expected!r}. {hint}".strip())


def expect_tensors_close(actual: dict | torch.Tensor, expected: dict | torch.Tensor, what: str,
                         atol: float = 1e-6, hint: str = "") -> None:
    """Tensors (or dicts of them, same keys) must match within ``atol``."""
    if isinstance(expected, dict):
        expect(isinstance(actual, dict) and set(actual) == set(expected),
               f"{what}: expected a dict with keys {sorted(expected)}, got "
               f"{sorted(actual) if isinstance(actual, dict) else type(actual).__name__}. {hint}".strip())
        for key in expected:
            expect_tensors_close(actual[key], expected[key], f"{what}[{key!r}]", atol, hint)
        return
    expect(isinstance(actual, torch.Tensor), f"{what}: expected a tensor, got {type(actual).__name__}. {hint}".strip())
    expect(actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}. {hint}".strip())
    err = (actual.detach().float().cpu() - expected.detach().float().cpu()).abs().max().item()
    expect(err <= atol, f"{what}: off by up to {err:.3g} (tolerance {atol}). {hint}".strip())


def call_safely(fn: Callable, *args, what: str):
    """Call a student's function; turn a crash (or a leftover NotImplementedError) into a hint."""
    try:
        return fn(*args)
    except NotAnswered:
        raise
    except NotImplementedError as exc:
        raise NotAnswered(f"{what}: not implemented yet -- replace `raise NotImplementedError()` "
                          "with your code") from exc


def expect_whole_number(actual, what: str, hint: str = "") -> int:
    """``actual`` must be a whole number (an int, or a float/0-d tensor with an integer value).

    Returns it as an ``int``; a bool, a fraction or a non-number raises with ``hint``."""
    if isinstance(actual, torch.Tensor) and actual.numel() == 1:
        actual = actual.item()
    ok = (isinstance(actual, numbers.Integral) and not isinstance(actual, bool)) or (
        isinstance(actual, numbers.Real) and not isinstance(actual, bool) and math.isfinite(actual)
        and float(actual).is_integer())
    expect(ok, f"{what}: expected a whole number, got {actual!r} ({type(actual).__name__}). {hint}".strip())
    return int(actual)


def expect_percent(predicted, what: str, measured_percent: float, band: float, example: str) -> float:
    """A prediction given in percent: a number in [0, 100], and not a fraction where percent was asked.

    ``example`` shows the expected form (e.g. ``"25 for 25 %"``).  A value below 1 while the
    measured share is above ``1 + band`` percent is taken for a fraction and refused with a hint.
    """
    expect(isinstance(predicted, numbers.Real) and not isinstance(predicted, bool),
           f"{what}: expected a number in percent (e.g. {example}), got {type(predicted).__name__}")
    expect(0 <= predicted <= 100, f"{what}={predicted!r} is not a share in percent (0 to 100).")
    expect(not (0 < predicted < 1 and measured_percent > 1 + band),
           f"{what}={predicted!r} looks like a fraction; give percent (e.g. {example}).")
    return float(predicted)


# Every lesson's checks, so that ``checks.<lesson>`` works after ``from fedlab_utils import checks``.
# (Imported last: they are built from the helpers above.)
from . import (acceleration, baseline, capstone, compression, deployment, distillation, parallel,  # noqa: E402
               pruning)
