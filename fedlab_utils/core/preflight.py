"""What :func:`fedlab_utils.core.loop.run` checks before round 1, so a wrong setup is reported as
a wrong *argument* (``clients``, ``test``, ``local``, ``trainer``, ``model``), never as a client
that failed in round 1.

* :func:`check_clients`: a non-empty sequence of clients, each a ``ClientData(x, y)`` (anything
  with tensors ``x`` and ``y`` of the same length);
* :func:`check_test`: ``(x_test, y_test)``, two tensors of the same, non-zero length;
* :func:`check_local`: a :class:`~fedlab_utils.core.training.LocalTraining`, or a dict of its fields;
* :func:`check_trainer`: a trainer that can say what it cannot train (``check_supported(model,
  local, transform)``, as :class:`~fedlab_utils.core.vmap_trainer.VmapTrainer` does) is asked first;
* :func:`probe_model`: one forward pass, in eval mode and without gradients, on one sample of the
  first client that has data and one sample of ``test``: a model built for another input shape
  fails here, naming the shapes; a model with fewer outputs than the labels need fails too, and
  so do labels the loss cannot take (float class indices, ``int32``, a column of labels): each
  distinct label dtype and shape among the clients, and the test's, goes through the loss once.

Every error is a ``ValueError`` whose message starts with the argument's name.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import nn

from fedlab_utils.core.training import ClientTransform, LocalTraining

__all__ = ["check_clients", "check_test", "check_local", "check_trainer", "probe_model"]

_WHAT_A_CLIENT_IS = ("a client is ClientData(x, y) (fedlab_utils.data.ClientData; "
                     "fedlab_utils.data.client_data(dataset, partition(...)) builds the list)")


def _describe(value: object) -> str:
    """A short description of a wrong value: its type, and its shape where it has one."""
    shape = getattr(value, "shape", None)
    return type(value).__name__ + (f" of shape {tuple(shape)}" if shape is not None else "")


def check_clients(clients: object) -> Sequence:
    """``clients`` as given, after checking it is a non-empty sequence of ``ClientData(x, y)``."""
    if isinstance(clients, (torch.Tensor, str, bytes, dict)) or not isinstance(clients, Sequence):
        raise ValueError(f"clients is a {_describe(clients)}, not a list of clients; {_WHAT_A_CLIENT_IS}")
    if len(clients) == 0:
        raise ValueError("clients is empty; partition the data into at least one client "
                         f"({_WHAT_A_CLIENT_IS})")
    for i, client in enumerate(clients):
        x, y = getattr(client, "x", None), getattr(client, "y", None)
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise ValueError(f"clients[{i}] is a {_describe(client)}, not a client; {_WHAT_A_CLIENT_IS}")
        if len(x) != len(y):
            raise ValueError(f"clients[{i}] has {len(x)} inputs but {len(y)} labels; x and y of a client "
                             "need one row per sample")
    return clients


def check_test(test: object) -> tuple[torch.Tensor, torch.Tensor]:
    """``test`` as a tuple ``(x_test, y_test)``: two tensors of the same, non-zero length."""
    if isinstance(test, torch.Tensor) or not isinstance(test, (tuple, list)) or len(test) != 2:
        got = (f"a {type(test).__name__} of {len(test)} items" if isinstance(test, (tuple, list))
               else f"a {_describe(test)}")
        raise ValueError(f"test is {got}; pass test=(x_test, y_test), two tensors "
                         "(e.g. (dataset.x_test, dataset.y_test))")
    x, y = test
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError(f"test=({_describe(x)}, {_describe(y)}) is not valid; pass test=(x_test, y_test), "
                         "two tensors")
    if len(x) != len(y) or len(y) == 0:
        raise ValueError(f"test has {len(x)} inputs and {len(y)} labels; it needs the same number of each, "
                         "at least one")
    return x, y


def check_local(local: object) -> LocalTraining:
    """``local`` as a :class:`LocalTraining`: one as it is, or a dict of its fields
    (``{"epochs": 2, "lr": 0.1}`` is ``LocalTraining(epochs=2, lr=0.1)``)."""
    if isinstance(local, LocalTraining):
        return local
    valid = [f.name for f in dataclasses.fields(LocalTraining)]
    if not isinstance(local, dict):
        raise ValueError(f"local={local!r} is not valid; pass LocalTraining(...) or a dict of its fields "
                         f"({', '.join(valid)})")
    unknown = sorted(map(str, set(local) - set(valid)))
    if unknown:
        raise ValueError(f"local={local!r} has no field {', '.join(unknown)}; valid fields: {', '.join(valid)}")
    try:
        return LocalTraining(**local)
    except ValueError as exc:
        raise ValueError(f"local={local!r}: {exc}") from None


def check_trainer(trainer: object, model: nn.Module, local: LocalTraining, transform: ClientTransform) -> None:
    """Ask a trainer that offers ``check_supported(model, local, transform)`` whether it can train
    this setup; its ``ValueError`` is the run's, naming ``trainer``."""
    check = getattr(trainer, "check_supported", None)
    if not callable(check):
        return
    try:
        check(model, local, transform)
    except ValueError as exc:
        message = str(exc)
        if not message.startswith("trainer"):
            message = f"trainer={trainer!r} cannot train this setup: {message}"
        raise ValueError(message) from None


def _is_class_index(y: torch.Tensor) -> bool:
    """Whether ``y`` holds class indices (1-D integers, at least one)."""
    return y.ndim == 1 and len(y) > 0 and not (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool)


def _largest_label(labels: list[torch.Tensor]) -> int | None:
    """The largest class index among ``labels`` (tensors of class indices; others are left out),
    read with one device synchronisation; ``None`` when there is none."""
    tops = [y.max() for y in labels if _is_class_index(y)]
    if not tops:
        return None
    return int(torch.stack([t.to(tops[0].device) for t in tops]).max())


_VALID_LABELS = "class indices, one per sample, as torch.int64 (convert with y.long())"


def _label_samples(clients: Sequence, test: tuple[torch.Tensor, torch.Tensor]) -> list[tuple[str, torch.Tensor,
                                                                                               torch.Tensor]]:
    """``(where, one input, its label)`` for the first client with data, for the first client of
    every other label dtype or label shape, and for ``test``: what :func:`probe_model` runs."""
    samples: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    kinds = set()
    for i, client in enumerate(clients):
        kind = (client.y.dtype, tuple(client.y.shape[1:]))
        if len(client) > 0 and (not samples or kind not in kinds):
            kinds.add(kind)
            samples.append((f"clients[{i}]", client.x[:1], client.y[:1]))
    samples.append(("test", test[0][:1], test[1][:1]))
    return samples


def _check_loss_takes(loss_fn: Callable, out: object, y: torch.Tensor, where: str) -> None:
    """Raise ``ValueError`` naming ``where``'s labels (dtype, shape) when ``loss_fn`` cannot take
    ``out`` with them; a model whose output is not one tensor is left to the round."""
    if not isinstance(out, torch.Tensor):
        return
    try:
        loss_fn(out.float(), y.to(out.device))
    except Exception as exc:  # noqa: BLE001 -- any failure of the loss on these labels is a setup error
        owner = f"{where}.y" if where != "test" else "test's labels (test[1])"
        loss = getattr(loss_fn, "__name__", repr(loss_fn))
        raise ValueError(
            f"{where} has labels the loss cannot take: {owner} is {y.dtype} of shape {tuple(y.shape[1:])} per sample, "
            f"and {loss}(output of shape {tuple(out.shape[1:])}, labels) raised {type(exc).__name__}: {exc}; "
            f"valid labels: {_VALID_LABELS}") from None


def probe_model(model: nn.Module, clients: Sequence, test: tuple[torch.Tensor, torch.Tensor],
                loss_fn: Callable = nn.functional.cross_entropy) -> None:
    """One forward pass of ``model`` on one sample of the first client with data and on one sample
    of ``test``, in eval mode and without gradients (no random draw, no BatchNorm statistics
    changed; each module's train/eval mode is restored).  Raises ``ValueError`` naming ``model``
    when the forward pass raises, or when the model has fewer outputs than the labels need; and
    naming ``clients[i]`` or ``test`` when ``loss_fn`` (the loss local training uses) cannot take
    their labels, so float or ``int32`` labels fail here, not in round 1.  A client whose labels
    differ in dtype or shape from the first client's is probed too."""
    samples = _label_samples(clients, test)
    top = _largest_label([test[1]] + [c.y for c in clients])
    device = next((p.device for p in model.parameters()), None)
    modes = [m.training for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            for where, x, y in samples:
                try:
                    out = model(x if device is None else x.to(device))
                except Exception as exc:  # noqa: BLE001 -- any failure of the forward pass is a setup error
                    raise ValueError(
                        f"model does not fit the data: a forward pass on one sample of {where} (input shape "
                        f"{tuple(x.shape[1:])}, {x.dtype}) raised {type(exc).__name__}: {exc}; build the model "
                        "for the data's input shape, e.g. make_model(name, dataset.input_shape, "
                        "dataset.num_classes)") from None
                classes = out.shape[-1] if isinstance(out, torch.Tensor) and out.ndim == 2 else None
                if classes is not None and top is not None and top >= classes:
                    raise ValueError(
                        f"model gives {classes} outputs per sample (shape {tuple(out.shape[1:])} on {where}), but "
                        f"the labels go up to {top}; build the model with num_classes={top + 1} or more")
                _check_loss_takes(loss_fn, out, y, where)
    finally:
        for module, mode in zip(model.modules(), modes):
            module.training = mode
