"""One registry of named parts: a short string for every codec, server, aggregator, transform and trainer.

``run(..., uplink="ef:topk:0.01", server="fedadam:0.1", aggregate="median")``, a sweep's
``-p uplink q8`` and a deployment's ``-p server fedyogi`` all go through :func:`resolve`.  It takes
a part (returned as it is, after a check of its kind), ``None`` (the default part), or a spec
string, split by one parser (:func:`parse_spec`, ``name[:arg]``) and looked up in one table of
:func:`register` entries:

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
zero-argument factory, or ``package.module:Name(rank=4)`` with literal arguments (read with
``ast.literal_eval``, never ``eval``), so a researcher's own codec runs without editing the package.
A spec of the wrong kind or an unknown name raises ``ValueError``, and an object of the wrong kind
(a class where an instance belongs, say) ``TypeError``, each naming the argument and what is valid;
a module that cannot be imported shows its own ``ImportError``.

:func:`spec_of` gives a part's full configuration (type and settings, never its state), which is
what a checkpoint's identity compares: a codec at rank 2 never resumes as the same codec at rank 16.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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

__all__ = ["SERVERS", "make_server", "TRAINERS", "make_trainer", "KINDS", "SPECS", "Entry", "register", "parse_spec",
           "resolve", "resolve_codec", "resolve_server", "resolve_aggregate", "resolve_transform", "resolve_trainer",
           "spec_of"]

#: The server optimizers by name.
SERVERS = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad")


def make_server(name: str, lr: float | None = None, **kwargs):
    """A fresh server optimizer by name (``SERVERS``); ``lr=None`` takes the class default."""
    check_choice("server", name, SERVERS)
    factories: dict[str, Callable[..., object]] = {"fedavg": FedAvgServer, "fedavgm": FedAvgM, "fedadam": FedAdam,
                                                   "fedyogi": FedYogi, "fedadagrad": FedAdagrad}
    factory = factories[name]
    return factory(**({} if lr is None else {"lr": lr}), **kwargs)


#: The client trainers by name (``run(trainer=...)`` also takes ``"auto"``).
TRAINERS = ("sequential", "vmap")


def make_trainer(trainer: str = "sequential"):
    """A fresh client trainer by name: ``'sequential'`` (any option) or ``'vmap'`` (SGD, fp32)."""
    from fedlab_utils.core.vmap_trainer import VmapTrainer

    check_choice("trainer", trainer, TRAINERS)
    return SequentialTrainer() if trainer == "sequential" else VmapTrainer()


# ----------------------------------------------------------------------------- the table
KINDS = ("codec", "server", "aggregate", "transform", "trainer")
_ARTICLE = {"aggregate": "an"}
_IMPORT_PATH = "or an import path package.module:name (optionally with arguments: package.module:Name(rank=4))"


@dataclass(frozen=True)
class Entry:
    """One named part: ``build(arg, argument, context)`` makes it; ``arg`` is the text after ``:``
    (``None`` without one); ``form`` is how error messages list it."""

    kind: str
    name: str
    build: Callable[..., object]
    form: str


_TABLE: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}


def register(kind: str, name: str, form: str | None = None):
    """Decorator: ``build(arg, argument, **context)`` becomes the part named ``name`` of ``kind``."""
    if kind not in _TABLE:
        raise ValueError(f"kind={kind!r} is not valid; choose one of {list(KINDS)}")

    def add(build: Callable[..., object]) -> Callable[..., object]:
        _TABLE[kind][name] = Entry(kind, name, build, form or name)
        return build

    return add


def forms(kind: str) -> tuple[str, ...]:
    """The spec forms of ``kind``, as error messages list them."""
    return tuple(entry.form for entry in _TABLE[kind].values())


def parse_spec(text: str) -> tuple[str, str | None]:
    """``'name[:arg]'`` -> ``(name, arg)``, the name lower-cased; ``q8`` is ``('q', '8')``."""
    name, colon, arg = text.strip().partition(":")
    name = name.strip().lower()
    if not colon and len(name) > 1 and name[0] == "q" and name[1:].isdigit():
        return "q", name[1:]
    return name, (arg.strip() if colon else None)


def _a(kind: str) -> str:
    return f"{_ARTICLE.get(kind, 'a')} {kind}"


def _invalid(argument: str, spec: object, kind: str, why: str = "") -> ValueError:
    return ValueError(f"{argument}={spec!r} is not {_a(kind)} spec{': ' + why if why else ''}; "
                      f"valid: {', '.join(forms(kind))}, {_IMPORT_PATH}")


def _number(text: str | None, argument: str, spec: str, kind: str, default: float | None = None) -> float:
    if text is None:
        if default is None:
            raise _invalid(argument, spec, kind, "it needs a number after ':'")
        return default
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


_DUTY = {"codec": "it needs encode(update, client_id) and decode(payload, template)",
         "server": "it needs step(global_state, update)",
         "aggregate": "it must be callable as aggregate(results, global_model, round_idx)",
         "transform": "it needs on_receive, regularizer, after_step and on_update (subclass ClientTransform)",
         "trainer": "it must be callable as trainer(model, received, clients, local, round_idx, seed, transform)"}


def _checked(kind: str, part: object, argument: str) -> object:
    if isinstance(part, type):
        where = f"{part.__module__}:{part.__qualname__}"
        raise TypeError(f"{argument}={part.__qualname__} is a class, not {_a(kind)}; pass an instance, "
                        f"`{part.__qualname__}()`, or its import path `'{where}'`")
    if not _is_kind(kind, part):
        raise TypeError(f"{argument}={part!r} is not {_a(kind)}: {_DUTY[kind]}; or pass a spec: "
                        f"{', '.join(forms(kind))}")
    return part


def _takes_no_arguments(fn: Callable) -> bool:
    try:
        return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                   for p in inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False


def _call_arguments(text: str, argument: str, spec: str) -> tuple[str, tuple, dict] | None:
    """``Name(1, rank=4)`` -> ``('Name', (1,), {'rank': 4})``, literals only (``ast.literal_eval``,
    never ``eval``); ``None`` when ``text`` has no call."""
    if "(" not in text:
        return None
    try:
        call = ast.parse(text, mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"{argument}={spec!r}: {text!r} is not a name with arguments ({exc.msg})") from None
    if not isinstance(call, ast.Call) or any(isinstance(a, ast.Starred) for a in call.args) or any(
            k.arg is None for k in call.keywords):
        raise ValueError(f"{argument}={spec!r}: write the arguments as Name(value, key=value)")
    try:
        args = tuple(ast.literal_eval(a) for a in call.args)
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except ValueError:
        raise ValueError(f"{argument}={spec!r}: arguments must be literals (numbers, strings, tuples, lists, "
                         "dicts, True/False/None)") from None
    return ast.unparse(call.func), args, kwargs


def _imported(spec: str, kind: str, argument: str) -> object | None:
    """The part an import path ``package.module:name`` or ``package.module:Name(args)`` names (a class
    or zero-argument factory is called); ``None`` when ``spec`` is not an import path."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute or not all(p.isidentifier() for p in module_name.split(".")):
        return None
    called = _call_arguments(attribute, argument, spec)
    path = called[0] if called else attribute
    if not all(p.isidentifier() for p in path.split(".")):
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{argument}={spec!r}: module {module_name!r} cannot be imported: {exc}") from exc
    obj: Any = module
    for name in path.split("."):
        if not hasattr(obj, name):
            raise ValueError(f"{argument}={spec!r}: module {module_name!r} has no {path!r}")
        obj = getattr(obj, name)
    if called:
        try:
            obj = obj(*called[1], **called[2])
        except TypeError as exc:
            raise ValueError(f"{argument}={spec!r}: {path}{called[1] or ''} cannot be built: {exc}") from None
    elif isinstance(obj, type) or (callable(obj) and not _is_kind(kind, obj)) or (
            isinstance(obj, types.FunctionType) and kind in ("aggregate", "trainer") and _takes_no_arguments(obj)):
        if not _takes_no_arguments(obj):
            raise ValueError(f"{argument}={spec!r}: {attribute} needs arguments; give them in the path "
                             f"({module_name}:{attribute}(name=value)), or name {_a(kind)}, a class or a factory "
                             "that takes none")
        obj = obj()
    return _checked(kind, obj, argument)


_DEFAULTS: dict[str, Callable[..., object]] = {}


def resolve(kind: str, spec: object, argument: str | None = None, **context) -> object:
    """The part of ``kind`` for ``spec``: a part as it is (after a check of its kind), ``None`` for
    the default, a registered ``name[:arg]`` or an import path; ``argument`` names it in errors.
    ``context`` (``model``, ``local``, ``transform``) is what ``trainer='auto'`` decides on."""
    if kind not in _TABLE:
        raise ValueError(f"kind={kind!r} is not valid; choose one of {list(KINDS)}")
    argument = argument or kind
    if spec is None:
        return _DEFAULTS[kind]()
    if not isinstance(spec, str):
        return _checked(kind, spec, argument)
    name, arg = parse_spec(spec)
    entry = _TABLE[kind].get(name)
    if entry is not None:
        return entry.build(arg, argument, spec, **context)
    part = _imported(spec.strip(), kind, argument)
    if part is None:
        raise _invalid(argument, spec, kind)
    return part


def resolve_codec(spec, argument: str = "uplink"):
    return resolve("codec", spec, argument)


def resolve_server(spec, argument: str = "server"):
    return resolve("server", spec, argument)


def resolve_aggregate(spec, argument: str = "aggregate"):
    return resolve("aggregate", spec, argument)


def resolve_transform(spec, argument: str = "transform"):
    return resolve("transform", spec, argument)


def resolve_trainer(spec, argument: str = "trainer", *, model: nn.Module | None = None,
                    local: LocalTraining | None = None, transform: ClientTransform | None = None):
    return resolve("trainer", spec, argument, model=model, local=local, transform=transform)


# ----------------------------------------------------------------------------- the built-in parts
def _no_arg(kind: str, name: str, make: Callable[[], object]) -> None:
    @register(kind, name)
    def build(arg, argument, spec, **_):
        if arg is not None:
            raise _invalid(argument, spec, kind, f"{name!r} takes no ':' argument")
        return make()


def _codecs():
    from fedlab_utils.compression import codecs
    return codecs


_DEFAULTS["codec"] = Fp32Codec
_no_arg("codec", "fp32", Fp32Codec)


@register("codec", "q", "q<bits> (1..16, e.g. q8)")
def _quantize(arg, argument, spec, **_):
    if arg is None or not arg.isdigit():
        raise _invalid(argument, spec, "codec", "q needs a number of bits, e.g. q8")
    try:
        return _codecs().QuantizeCodec(bits=check_int(f"{argument} bits", int(arg), 1, 16))
    except ValueError as exc:
        raise _invalid(argument, spec, "codec", str(exc)) from None


def _fraction_codec(name: str, cls: str) -> None:
    @register("codec", name, f"{name}:<fraction>")
    def build(arg, argument, spec, **_):
        fraction = _number(arg, argument, spec, "codec")
        try:
            check_fraction(f"{argument} {name} fraction", fraction)
        except ValueError as exc:
            raise _invalid(argument, spec, "codec", str(exc)) from None
        return getattr(_codecs(), cls)(fraction)


_fraction_codec("topk", "TopKCodec")
_fraction_codec("randk", "RandomKCodec")
_no_arg("codec", "sign", lambda: _codecs().SignCodec())
_no_arg("codec", "sparse", lambda: _codecs().SparseCodec())


@register("codec", "ef", "ef:<codec>")
def _error_feedback(arg, argument, spec, **_):
    if not arg:
        raise _invalid(argument, spec, "codec", "'ef:' needs a codec after it")
    inner = resolve("codec", spec.strip()[spec.strip().index(":") + 1:], argument)
    if isinstance(inner, _codecs().ErrorFeedback):
        raise _invalid(argument, spec, "codec", "error feedback around error feedback; use one 'ef:'")
    return _codecs().ErrorFeedback(inner)


_DEFAULTS["server"] = FedAvgServer


def _server(name: str) -> None:
    @register("server", name, f"{name}[:<lr>]")
    def build(arg, argument, spec, **_):
        if arg is None:
            return make_server(name)
        rate = _number(arg, argument, spec, "server")
        try:
            return make_server(name, lr=check_real(f"{argument} lr", rate, 0.0, low_inclusive=False))
        except ValueError as exc:
            raise _invalid(argument, spec, "server", str(exc)) from None


for _name in SERVERS:
    _server(_name)

_DEFAULTS["aggregate"] = lambda: fedavg_aggregate
_no_arg("aggregate", "mean", lambda: fedavg_aggregate)
_no_arg("aggregate", "median", Median)


def _one_number(kind: str, factory, default: float):
    """A ``name[:number]`` builder: ``factory(number)``, its ``ValueError`` reported as an
    invalid ``kind`` spec naming the argument (unless it already names it)."""
    def build(arg, argument, spec, **_):
        try:
            return factory(_number(arg, argument, spec, kind, default=default))
        except ValueError as exc:
            if str(exc).startswith(f"{argument}="):
                raise
            raise _invalid(argument, spec, kind, str(exc)) from None
    return build


register("aggregate", "trimmed_mean", "trimmed_mean:<beta in [0, 0.5)>")(_one_number("aggregate", TrimmedMean, 0.2))


_DEFAULTS["transform"] = ClientTransform
_no_arg("transform", "none", ClientTransform)


register("transform", "fedprox", "fedprox:<mu>")(_one_number("transform", FedProx, 0.01))


_DEFAULTS["trainer"] = SequentialTrainer
for _name in TRAINERS:
    _no_arg("trainer", _name, functools.partial(make_trainer, _name))


@register("trainer", "auto")
def _auto(arg, argument, spec, *, model=None, local=None, transform=None, **_):
    """The vmap trainer when it supports ``model``, ``local`` and ``transform`` (plain SGD, fp32, no
    transform or FedProx, no BatchNorm or dropout), the sequential one otherwise or without a model.
    The run's ``History.config['trainer']`` says which ran."""
    from fedlab_utils.core.vmap_trainer import VmapTrainer

    if arg is not None:
        raise _invalid(argument, spec, "trainer", "'auto' takes no ':' argument")
    if model is None:
        return SequentialTrainer()
    try:
        VmapTrainer.check_supported(model, local or LocalTraining(), transform or ClientTransform())
    except ValueError:
        return SequentialTrainer()
    return VmapTrainer()


#: The spec forms of every kind, as error messages list them.
SPECS = {kind: forms(kind) for kind in KINDS}

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
