"""The lazy facade that every package ``__init__`` of :mod:`fedlab_utils` is built on (PEP 562).

A package lists its public names in ``_EXPORTS`` (name -> the module that defines it) and gets
``__getattr__`` and ``__dir__`` from :func:`lazy_exports`: a name's module is imported on first
use only, so ``import fedlab_utils`` stays light and a facade never imports its own optional
extras (flwr, papermill, …) before they are asked for.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str], namespace: dict[str, Any],
                 submodules: Iterable[str] = ()) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for the package ``package`` whose globals are ``namespace``:
    a name in ``exports`` is loaded from its module and cached in ``namespace``; a name in
    ``submodules`` is the subpackage ``package.name``; anything else is an ``AttributeError``."""
    subpackages = frozenset(submodules)

    def __getattr__(name: str) -> Any:
        if name in subpackages:
            return import_module(f"{package}.{name}")
        try:
            module = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *namespace.get("__all__", ())})

    return __getattr__, __dir__
