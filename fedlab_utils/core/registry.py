"""One registry of named parts: a short string for every codec, server, aggregator, transform and trainer.

``run(..., uplink="ef:topk:0.01", server="fedadam:0.1", aggregate="median")``, a sweep's
``-p uplink q8`` and a deployment's ``-p server fedyogi`` all go through the resolvers here, one
per kind.  Each takes a part (returned as it is, after a check of its kind), ``None`` (the
default part), or a spec string:

==============  ==========================================================================
kind            specs
==============  ==========================================================================
codec           ``fp32``; ``q<bits>`` (1..16, e.g. ``q8``); ``topk:<fraction>``;
                ``randk:<fraction>``; ``sign``; ``sparse`` (lossless nonzeros, for masked
                updates); ``ef:<codec>`` (error feedback around it)
server          ``fedavg``, ``fedavgm``, ``fedadam``, ``fedyogi``, ``fedadagrad``, each with an
                optional ``:<lr>`` (``fedadam:0.1``)
aggregate       ``mean`` (FedAvg, weighted by samples), ``median``, ``trimmed_mean:<beta>``
transform       ``none``, ``fedprox:<mu>``
trainer         ``sequential``, ``vmap``, ``auto`` (vmap where it supports the setup)
==============  ==========================================================================

Any part may also be an import path ``package.module:name`` naming a part, a class or a
zero-argument factory, so a researcher's own codec runs without editing the package.  A spec of
the wrong kind or an unknown name raises ``ValueError``, and an object of the wrong kind
``TypeError``, each naming the argument and listing the valid names.

:func:`spec_of` gives a part's full configuration (type and settings, never its state), which is
what a checkpoint's identity compares: a codec at rank 2 never resumes as the same codec at rank 16.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import types
from collections.abc import Callable

import torch
from torch import nn

from fedlab_utils.compression.wire import Fp32Codec
from fedlab_utils.core.aggregators.fedavg import fedavg_aggregate
from fedlab_utils.core.aggregators.median import Median
from fedlab_utils.core.aggregators.trimmed_mean import TrimmedMean
from fedlab_utils.core.servers.fedavg import FedAvgServer
from fedlab_utils.core.servers.fedavgm import FedAvgM
from fedlab_utils.core.servers.fedopt import FedAdagrad, FedAdam, FedYogi
from fedlab_utils.core.training import ClientTransform, FedProx, LocalTraining, SequentialTrainer
from fedlab_utils.validation import check_choice, check_fraction, check_int, check_real

__all__ = ["SERVERS", "make_server", "TRAINERS", "make_trainer", "KINDS", "SPECS", "resolve_codec", "resolve_server", "resolve_aggregate", "resolve_transform",
           "resolve_trainer", "resolve", "spec_of"]

#: The server optimizers by name.
SERVERS = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad")


def make_server(name: str, lr: float | None = None, **kwargs):
    """A fresh server optimizer by name (``SERVERS``); ``lr=None`` takes the class default."""
    check_choice("server", name, SERVERS)
    factory = {"fedavg": FedAvgServer, "fedavgm": FedAvgM, "fedadam": FedAdam, "fedyogi": FedYogi,
               "fedadagrad": FedAdagrad}[name]
    return factory(**({} if lr is None else {"lr": lr}), **kwargs)


#: The client trainers by name (``run(trainer=...)`` also takes ``"auto"``).
TRAINERS = ("sequential", "vmap")


def make_trainer(trainer: str = "sequential"):
    """A fresh client trainer by name: ``'sequential'`` (any option) or ``'vmap'`` (SGD, fp32)."""
    from fedlab_utils.core.vmap_trainer import VmapTrainer

    check_choice("trainer", trainer, TRAINERS)
    return SequentialTrainer() if trainer == "sequential" else VmapTrainer()


#: The spec forms of every kind, as error messages list them.
SPECS = {
    "codec": ("fp32", "q<bits> (1..16, e.g. q8)", "topk:<fraction>", "randk:<fraction>", "sign", "sparse",
              "ef:<codec>"),
    "server": tuple(f"{name}[:<lr>]" for name in SERVERS),
    "aggregate": ("mean", "median", "trimmed_mean:<beta in [0, 0.5)>"),
    "transform": ("none", "fedprox:<mu>"),
    "trainer": (*TRAINERS, "auto"),
}
KINDS = tuple(SPECS)
_IMPORT_PATH = "or an import path package.module:name"


def _invalid(argument: str, spec: object, kind: str, why: str = "") -> ValueError:
    return ValueError(f"{argument}={spec!r} is not a {kind} spec{': ' + why if why else ''}; "
                      f"valid: {', '.join(SPECS[kind])}, {_IMPORT_PATH}")


def _number(text: str, argument: str, spec: str, kind: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise _invalid(argument, spec, kind, f"{text!r} is not a number") from None


def _is_kind(kind: str, part: object) -> bool:
    if kind == "codec":
        return callable(getattr(part, "encode", None)) and callable(getattr(part, "decode", None))
    if kind == "server":
        return callable(getattr(part, "step", None))
    if kind == "transform":
        return all(callable(getattr(part, m, None)) for m in ("on_receive", "regularizer", "after_step", "on_update"))
    return callable(part) and not isinstance(part, type)  # aggregate, trainer


def _checked(kind: str, part: object, argument: str) -> object:
    if not _is_kind(kind, part):
        raise TypeError(f"{argument}={part!r} is not a {kind}: {_DUTY[kind]}; or pass a spec: {', '.join(SPECS[kind])}")
    return part


_DUTY = {"codec": "it needs encode(update, client_id) and decode(payload, template)",
         "server": "it needs step(global_state, update)",
         "aggregate": "it must be callable as aggregate(results, global_model, round_idx)",
         "transform": "it needs on_receive, regularizer, after_step and on_update (subclass ClientTransform)",
         "trainer": "it must be callable as trainer(model, received, clients, local, round_idx, seed, transform)"}


def _takes_no_arguments(fn: Callable) -> bool:
    try:
        return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                   for p in inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False


def _imported(spec: str, kind: str, argument: str) -> object | None:
    """The part an import path ``package.module:name`` names (a class or zero-argument factory is
    called); ``None`` when ``spec`` is not an import path that can be imported."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute or not all(p.isidentifier() for p in module_name.split(".")):
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    obj = module
    for name in attribute.split("."):
        if not hasattr(obj, name):
            raise ValueError(f"{argument}={spec!r}: module {module_name!r} has no {attribute!r}")
        obj = getattr(obj, name)
    if isinstance(obj, type) or (callable(obj) and not _is_kind(kind, obj)) or (
            isinstance(obj, types.FunctionType) and kind in ("aggregate", "trainer") and _takes_no_arguments(obj)):
        if not _takes_no_arguments(obj):
            raise ValueError(f"{argument}={spec!r}: {attribute} needs arguments; name a {kind}, a class or a "
                             "factory that takes none")
        obj = obj()
    return _checked(kind, obj, argument)


def resolve(kind: str, spec: object, argument: str | None = None, **context) -> object:
    """The part of ``kind`` for ``spec`` (see the module's table); ``argument`` names it in errors."""
    if kind not in _RESOLVERS:
        raise ValueError(f"kind={kind!r} is not valid; choose one of {list(KINDS)}")
    return _RESOLVERS[kind](spec, argument or kind, **context)


def resolve_codec(spec, argument: str = "uplink"):
    """A codec: an object with ``encode``/``decode`` as it is, ``None`` as :class:`Fp32Codec`, or a spec."""
    if spec is None:
        return Fp32Codec()
    if not isinstance(spec, str):
        return _checked("codec", spec, argument)
    from fedlab_utils import compression

    text = spec.strip().lower()
    if text.startswith("ef:"):
        inner = resolve_codec(spec.strip()[3:], argument) if text[3:] else None
        if inner is None:
            raise _invalid(argument, spec, "codec", "'ef:' needs a codec after it")
        if isinstance(inner, compression.ErrorFeedback):
            raise _invalid(argument, spec, "codec", "error feedback around error feedback; use one 'ef:'")
        return compression.ErrorFeedback(inner)
    if text == "fp32":
        return Fp32Codec()
    if text == "sign":
        return compression.SignCodec()
    if text == "sparse":
        return compression.SparseCodec()
    if text.startswith("q") and text[1:].isdigit():
        try:
            return compression.QuantizeCodec(bits=check_int(f"{argument} bits", int(text[1:]), 1, 16))
        except ValueError as exc:
            raise _invalid(argument, spec, "codec", str(exc)) from None
    head, _, rest = text.partition(":")
    if head in ("topk", "randk"):
        fraction = _number(rest, argument, spec, "codec")
        try:
            check_fraction(f"{argument} {head} fraction", fraction)
        except ValueError as exc:
            raise _invalid(argument, spec, "codec", str(exc)) from None
        return compression.TopKCodec(fraction) if head == "topk" else compression.RandomKCodec(fraction)
    part = _imported(spec.strip(), "codec", argument)
    if part is None:
        raise _invalid(argument, spec, "codec")
    return part


def resolve_server(spec, argument: str = "server"):
    """A server optimizer: an object with ``step`` as it is, ``None`` as FedAvg, or ``name[:lr]``."""
    if spec is None:
        return FedAvgServer()
    if not isinstance(spec, str):
        return _checked("server", spec, argument)
    name, colon, lr = spec.strip().lower().partition(":")
    if name in SERVERS:
        if not colon:
            return make_server(name)
        rate = _number(lr, argument, spec, "server")
        try:
            return make_server(name, lr=check_real(f"{argument} lr", rate, 0.0, low_inclusive=False))
        except ValueError as exc:
            raise _invalid(argument, spec, "server", str(exc)) from None
    part = _imported(spec.strip(), "server", argument)
    if part is None:
        raise _invalid(argument, spec, "server")
    return part


def resolve_aggregate(spec, argument: str = "aggregate"):
    """An aggregator: a callable as it is, ``None``/``'mean'`` as FedAvg's weighted mean, ``'median'``
    or ``'trimmed_mean:<beta>'`` (Flower's FedMedian and FedTrimmedAvg)."""
    if spec is None:
        return fedavg_aggregate
    if not isinstance(spec, str):
        return _checked("aggregate", spec, argument)
    name, colon, value = spec.strip().lower().partition(":")
    if name == "mean" and not colon:
        return fedavg_aggregate
    if name == "median" and not colon:
        return Median()
    if name == "trimmed_mean":
        beta = _number(value, argument, spec, "aggregate") if colon else 0.2
        try:
            return TrimmedMean(beta)
        except ValueError as exc:
            raise _invalid(argument, spec, "aggregate", str(exc)) from None
    part = _imported(spec.strip(), "aggregate", argument)
    if part is None:
        raise _invalid(argument, spec, "aggregate")
    return part


def resolve_transform(spec, argument: str = "transform"):
    """A client transform: a :class:`ClientTransform` as it is, ``None``/``'none'`` for none, or ``'fedprox:<mu>'``."""
    if spec is None:
        return ClientTransform()
    if not isinstance(spec, str):
        return _checked("transform", spec, argument)
    name, colon, value = spec.strip().lower().partition(":")
    if name == "none" and not colon:
        return ClientTransform()
    if name == "fedprox":
        mu = _number(value, argument, spec, "transform") if colon else 0.01
        try:
            return FedProx(mu)
        except ValueError as exc:
            raise _invalid(argument, spec, "transform", str(exc)) from None
    part = _imported(spec.strip(), "transform", argument)
    if part is None:
        raise _invalid(argument, spec, "transform")
    return part


def resolve_trainer(spec, argument: str = "trainer", *, model: nn.Module | None = None,
                    local: LocalTraining | None = None, transform: ClientTransform | None = None):
    """A client trainer: an object as it is, ``None``/``'sequential'``, ``'vmap'``, or ``'auto'``.

    ``'auto'`` picks the vmap trainer when it supports ``model``, ``local`` and ``transform`` (plain
    SGD, fp32, no transform or FedProx, no BatchNorm or dropout) and the sequential trainer otherwise;
    without a model it is the sequential one.  The run's ``History.config['trainer']`` says which ran.
    """
    if spec is None:
        return SequentialTrainer()
    if not isinstance(spec, str):
        return _checked("trainer", spec, argument)
    from fedlab_utils.core.vmap_trainer import VmapTrainer

    name = spec.strip().lower()
    if name in ("sequential", "vmap"):
        return make_trainer(name)
    if name == "auto":
        if model is None:
            return SequentialTrainer()
        try:
            VmapTrainer.check_supported(model, local or LocalTraining(), transform or ClientTransform())
        except ValueError:
            return SequentialTrainer()
        return VmapTrainer()
    part = _imported(spec.strip(), "trainer", argument)
    if part is None:
        raise _invalid(argument, spec, "trainer")
    return part


_RESOLVERS = {"codec": resolve_codec, "server": resolve_server, "aggregate": resolve_aggregate,
              "transform": resolve_transform, "trainer": resolve_trainer}

_SETTING_TYPES = (bool, int, float, str, type(None))


def spec_of(part: object, _depth: int = 0) -> object:
    """A part's full configuration as JSON: ``{"type": "module.Class", <setting>: <value>, ...}``.

    Settings are the part's public attributes that are plain values (numbers, strings, ``None``,
    tuples of them) or parts themselves (an error-feedback codec's inner codec, up to four levels
    deep); state such as tensors, residuals or momentum buffers is left out, and so are private
    attributes.  A function is ``"module:qualname"``.  Two parts with equal specs are configured
    alike, whatever their ``name``.
    """
    if isinstance(part, _SETTING_TYPES):
        return part
    if isinstance(part, (tuple, list)):
        return [spec_of(p, _depth + 1) for p in part]
    if isinstance(part, (types.FunctionType, types.BuiltinFunctionType, type)):
        return f"{part.__module__}:{part.__qualname__}"
    spec: dict = {"type": f"{type(part).__module__}.{type(part).__qualname__}"}
    if _depth >= 4:
        return spec
    settings = ({f.name: getattr(part, f.name) for f in dataclasses.fields(part) if f.repr}
                if dataclasses.is_dataclass(part) else getattr(part, "__dict__", {}))
    for key, value in sorted(settings.items()):
        if key.startswith("_") or isinstance(value, (torch.Tensor, dict, torch.Generator, nn.Module)):
            continue
        if isinstance(value, (tuple, list)) and all(isinstance(v, _SETTING_TYPES) for v in value):
            spec[key] = list(value)
        elif isinstance(value, _SETTING_TYPES):
            spec[key] = value
        elif hasattr(value, "__dict__") and not isinstance(value, types.ModuleType):
            spec[key] = spec_of(value, _depth + 1)
    return spec
