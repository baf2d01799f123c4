"""Parameter checks with errors that name the parameter, the value and what is valid.

Notebooks call these in their setup cell, so a papermill run with a bad parameter fails
at once with a message a student can act on, instead of deep inside training.

Numbers are checked by kind, not by Python type: any ``numbers.Integral`` is an integer
(``numpy.int64`` from an array, a ``range`` or a sweep included) and any ``numbers.Real`` a real
number (``numpy.float32``), returned as a plain ``int``/``float``.  ``bool`` is refused for both,
though Python counts it as an int: ``rounds=True`` is a mistake, not 1.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from functools import partial
from numbers import Integral, Real

__all__ = ["check_choice", "check_int", "check_real", "check_fraction", "check_optional_path",
           "Rule", "integer", "real", "fraction", "choice", "optional_path", "check_parameters"]


def check_choice(name: str, value: object, choices: Collection) -> object:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {sorted(map(str, choices))}")
    return value


def check_int(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    """Raise ``ValueError`` unless ``value`` is an integer (any ``numbers.Integral``, not bool) in ``[low, high]``.

    Returns it as a plain ``int``."""
    if not isinstance(value, Integral) or isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not valid; it must be an integer")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name}={value!r} is out of range; valid: {_interval(low, high, True, True)}")
    return value


def check_real(name: str, value: object, low: float | None = None, high: float | None = None,
               low_inclusive: bool = True, high_inclusive: bool = True) -> float:
    """Raise ``ValueError`` unless ``value`` is a real number (any ``numbers.Real``, not bool) in the interval.

    Returns it as a plain ``float``."""
    if not isinstance(value, Real) or isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not valid; it must be a number")
    if value != value:  # NaN compares false with every bound, so it would slip through them
        raise ValueError(f"{name}={value!r} is not valid; it must be a number, not NaN")
    value = value if isinstance(value, (int, float)) else float(value)  # numpy scalars: name them as plain numbers
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        raise ValueError(f"{name}={value!r} is out of range; valid: "
                         f"{_interval(low, high, low_inclusive, high_inclusive)}")
    return float(value)


def check_fraction(name: str, value: object) -> float:
    """A fraction in ``(0, 1]``, e.g. the share of clients sampled per round."""
    return check_real(name, value, 0.0, 1.0, low_inclusive=False)


def check_optional_path(name: str, value: object) -> str | None:
    """``None`` or a non-empty string path."""
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"{name}={value!r} is not valid; use None or a file path string")
    return value


def _interval(low, high, low_inclusive, high_inclusive) -> str:
    left = ("[" if low_inclusive else "(") + ("-inf" if low is None else str(low))
    right = ("inf" if high is None else str(high)) + ("]" if high_inclusive else ")")
    return f"{left}, {right}"


# One call per notebook: a lesson declares a table ``{parameter: rule}`` (and cross-parameter
# relations) beside its code, and the notebook's setup cell validates all of its parameters with
# ``check_parameters(globals(), RULES)`` instead of a dozen ``check_*`` lines.

Rule = Callable[[str, object], object]
"""Checks one parameter: called as ``rule(name, value)``, returns the value normalised, raises ``ValueError``."""


def integer(low: int | None = None, high: int | None = None) -> Rule:
    """Rule: an integer in ``[low, high]`` (see ``check_int``)."""
    return partial(_call_check, check_int, low=low, high=high)


def real(low: float | None = None, high: float | None = None, *, low_inclusive: bool = True,
         high_inclusive: bool = True) -> Rule:
    """Rule: a real number in the interval (see ``check_real``)."""
    return partial(_call_check, check_real, low=low, high=high, low_inclusive=low_inclusive,
                   high_inclusive=high_inclusive)


def fraction() -> Rule:
    """Rule: a fraction in ``(0, 1]`` (see ``check_fraction``)."""
    return partial(_call_check, check_fraction)


def choice(choices: Collection) -> Rule:
    """Rule: one of ``choices`` (see ``check_choice``)."""
    return partial(_call_check, check_choice, choices=choices)


def optional_path() -> Rule:
    """Rule: ``None`` or a non-empty path string (see ``check_optional_path``)."""
    return partial(_call_check, check_optional_path)


def check_parameters(values: Mapping[str, object], rules: Mapping[str, Rule],
                     relations: Sequence[Callable[[dict[str, object]], None]] = ()) -> dict[str, object]:
    """Validate a notebook's parameters in one call, before any work, and return them normalised.

    ``values`` is usually the notebook's ``globals()``; only the names in ``rules`` are read, in the
    table's order, so the first bad parameter is the one reported. Each relation receives the
    normalised values and raises ``ValueError`` naming every parameter involved (for example
    ``prune_every`` larger than ``rounds``). A parameter missing from ``values`` is a ``NameError``
    naming it, since the notebook's parameters cell must define every parameter its rules name.
    """
    checked: dict[str, object] = {}
    for name, rule in rules.items():
        if name not in values:
            raise NameError(f"parameter {name!r} is not defined; the parameters cell must set it")
        checked[name] = rule(name, values[name])
    for relation in relations:
        relation(checked)
    return checked


def _call_check(check: Callable[..., object], name: str, value: object, **bounds: object) -> object:
    return check(name, value, **bounds)

