"""The course's small reference models, sized so a federation trains in seconds on a CPU.

Both are ``nn.Sequential`` so that later lessons can prune whole neurons, split the model
into pipeline stages, or cut it between client and server without rewriting it.

The CNN can also be built from depthwise separable convolutions (MobileNet's structural
compression, notebook 02): :class:`SeparableConv2d`, ``make_model("cnn", ..., separable=True)``
and :func:`to_separable` to convert any model's standard ``Conv2d`` layers for comparison.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from numbers import Integral

import torch
from torch import nn

from .validation import check_choice

__all__ = ["MLP", "CNN", "CifarCNN", "CharLSTM", "SeparableConv2d", "make_model", "to_separable",
           "count_parameters", "conv_parameters", "MODELS"]

MODELS = ("mlp", "cnn", "cnn_cifar", "char_lstm")


def _check_widths(name: str, widths: Sequence[int], allow_empty: bool) -> tuple[int, ...]:
    """Layer widths as a tuple of ints >= 1; ``name`` is the argument the caller passed."""
    try:
        widths = tuple(widths)
    except TypeError:
        raise ValueError(f"{name}={widths!r} is not valid; use a sequence of layer widths, e.g. (64,)") from None
    if not widths and not allow_empty:
        raise ValueError(f"{name}=() is not valid; give at least one layer width, e.g. (8, 16)")
    for width in widths:
        if isinstance(width, bool) or not isinstance(width, Integral) or width < 1:
            raise ValueError(f"{name}={widths!r} is not valid; every width must be an integer >= 1, got {width!r}")
    return tuple(int(w) for w in widths)


class MLP(nn.Sequential):
    """Flatten → (Linear → ReLU) × len(hidden) → Linear."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (64,)):
        hidden = _check_widths("hidden", hidden, allow_empty=True)  # () is logistic regression
        _check_widths("num_classes", (num_classes,), allow_empty=False)
        in_features = int(torch.tensor(input_shape).prod())
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            layers += [nn.Linear(in_features, width), nn.ReLU()]
            in_features = width
        layers.append(nn.Linear(in_features, num_classes))
        super().__init__(*layers)


class SeparableConv2d(nn.Sequential):
    """A depthwise separable convolution: depthwise k×k (``groups=C_in``), then pointwise 1×1.

    A drop-in for ``nn.Conv2d(C_in, C_out, k, ...)`` with the same output shape.  The
    depthwise conv filters each input channel on its own (k²·C_in weights); the pointwise
    conv mixes channels (C_in·C_out weights).  Per output pixel that is k²·C_in + C_in·C_out
    multiply-adds instead of k²·C_in·C_out: a ratio of 1/C_out + 1/k² (MobileNet, Howard et
    al. 2017).  As in Xception there is no nonlinearity between the two, so the block is a
    factorised *linear* conv and the caller's activation follows it as before.  Only the
    pointwise conv has a bias: a depthwise bias would pass through the pointwise conv as a
    constant, duplicating the pointwise bias.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 3,
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, bias: bool = True, padding_mode: str = "zeros"):
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} is not valid; it must be an integer ≥ 1")
        super().__init__(OrderedDict(
            depthwise=nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, dilation,
                                groups=in_channels, bias=False, padding_mode=padding_mode),
            pointwise=nn.Conv2d(in_channels, out_channels, 1, bias=bias)))
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = self.depthwise.kernel_size

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "SeparableConv2d":
        """A freshly initialised separable block with ``conv``'s channels, kernel, stride and padding.

        The weights are new (the layer is re-trained, not factorised from ``conv``'s weights).
        """
        if conv.groups != 1:
            raise ValueError(f"conv.groups={conv.groups} is not valid; only standard convolutions (groups=1) "
                             "can be made separable")
        block = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode)
        return block.to(device=conv.weight.device, dtype=conv.weight.dtype)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"


def _convertible(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.groups == 1
            and any(k > 1 for k in conv.kernel_size))  # a 1×1 conv is already pointwise


def to_separable(model: nn.Module, keep_first: bool = True) -> nn.Module:
    """A copy of ``model`` with each standard k×k ``nn.Conv2d`` replaced by :class:`SeparableConv2d`.

    Input and output shapes are unchanged.  ``keep_first=True`` leaves the first conv
    standard, as MobileNet does: it sees only the image's few channels, where a depthwise
    filter per channel followed by a 1×1 mix would make every output channel a scaled copy of
    one filtered image (for a grayscale input).  1×1 and grouped convs are left as they are.
    The replacements are freshly initialised; ``model`` itself is not modified.
    """
    converted = copy.deepcopy(model)
    targets = [(name, module) for name, module in converted.named_modules() if _convertible(module)]
    if not targets:
        raise ValueError(f"{type(model).__name__} has no standard k×k nn.Conv2d layer to make separable")
    for name, conv in targets[1:] if keep_first else targets:
        parent_name, _, child = name.rpartition(".")
        parent = converted.get_submodule(parent_name) if parent_name else converted
        setattr(parent, child, SeparableConv2d.from_conv(conv))
    return converted


def conv_parameters(model: nn.Module) -> int:
    """Parameters held by convolutions (standard, grouped, or inside separable blocks)."""
    return sum(p.numel() for m in model.modules() if isinstance(m, nn.Conv2d) for p in m.parameters(recurse=False))


class CNN(nn.Sequential):
    """(Conv3×3 → ReLU → MaxPool2) × len(channels) → Flatten → Linear.

    For 1×28×28 inputs and channels (8, 16) it has about 9k parameters, most of them in the
    final Linear layer.  ``separable=True`` builds every conv after the first as a
    :class:`SeparableConv2d` (the first stays standard, as in MobileNet).
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (8, 16),
                 separable: bool = False):
        if len(input_shape) != 3:
            raise ValueError(f"input_shape={tuple(input_shape)} is not an image shape; the CNN needs (C, H, W), "
                             "use model='mlp' for flat inputs")
        if not isinstance(separable, bool):
            raise ValueError(f"separable={separable!r} is not valid; use True or False")
        channels = _check_widths("channels", channels, allow_empty=False)
        _check_widths("num_classes", (num_classes,), allow_empty=False)
        layers: list[nn.Module] = []
        in_ch = input_shape[0]
        for i, out_ch in enumerate(channels):
            conv = SeparableConv2d(in_ch, out_ch, 3, padding=1) if separable and i > 0 else \
                nn.Conv2d(in_ch, out_ch, 3, padding=1)
            layers += [conv, nn.ReLU(), nn.MaxPool2d(2)]
            in_ch = out_ch
        layers.append(nn.Flatten())
        with torch.no_grad():
            flat = nn.Sequential(*layers)(torch.zeros(1, *input_shape)).shape[1]
        layers.append(nn.Linear(flat, num_classes))
        super().__init__(*layers)


class CifarCNN(nn.Sequential):
    """McMahan et al.'s CIFAR-10 CNN (AISTATS 2017, after TensorFlow's CIFAR-10 tutorial model).

    (Conv5x5, 64 → ReLU → MaxPool2) × 2 → Linear 384 → ReLU → Linear 192 → ReLU → Linear.
    The tutorial's local response normalisation is left out, as most FL re-implementations do.
    """

    def __init__(self, input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10,
                 channels: Sequence[int] = (64, 64), hidden: Sequence[int] = (384, 192)):
        if len(input_shape) != 3:
            raise ValueError(f"input_shape={tuple(input_shape)} is not an image shape; cnn_cifar needs (C, H, W)")
        channels = _check_widths("channels", channels, allow_empty=False)
        hidden = _check_widths("hidden", hidden, allow_empty=True)
        layers: list[nn.Module] = []
        in_ch = input_shape[0]
        for out_ch in channels:
            layers += [nn.Conv2d(in_ch, out_ch, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2)]
            in_ch = out_ch
        layers.append(nn.Flatten())
        with torch.no_grad():
            width = nn.Sequential(*layers)(torch.zeros(1, *input_shape)).shape[1]
        for out in hidden:
            layers += [nn.Linear(width, out), nn.ReLU()]
            width = out
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)


class _LastStep(nn.Module):
    """The LSTM's output at the last time step (``nn.LSTM`` returns a tuple, so it needs a wrapper)."""

    def __init__(self, lstm: nn.LSTM):
        super().__init__()
        self.lstm = lstm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0][:, -1]


class _TokenIds(nn.Module):
    """Cast character indices to ``long`` so the model also accepts float tensors of indices."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.long()


class CharLSTM(nn.Sequential):
    """LEAF's next-character model for Shakespeare: embedding 8 → 2-layer LSTM 256 → Linear.

    Input: a batch of character indices (N × sequence length); output: logits over the
    vocabulary for the character that follows the window.
    """

    def __init__(self, input_shape: Sequence[int] = (80,), num_classes: int = 80, embedding: int = 8,
                 hidden: int = 256, layers: int = 2):
        if len(input_shape) != 1:
            raise ValueError(f"input_shape={tuple(input_shape)} is not valid for char_lstm; it needs "
                             "(sequence length,)")
        embedding, hidden, layers = _check_widths("embedding/hidden/layers", (embedding, hidden, layers),
                                                  allow_empty=False)
        super().__init__(_TokenIds(), nn.Embedding(num_classes, embedding),
                         _LastStep(nn.LSTM(embedding, hidden, num_layers=layers, batch_first=True)),
                         nn.Linear(hidden, num_classes))


_BUILDERS = {"mlp": MLP, "cnn": CNN, "cnn_cifar": CifarCNN, "char_lstm": CharLSTM}


def make_model(name: str, input_shape: Sequence[int], num_classes: int, *, seed: int | None = None,
               **kwargs) -> nn.Module:
    """Build ``'mlp'``, ``'cnn'``, ``'cnn_cifar'`` or ``'char_lstm'`` for a dataset's shape and classes.

    Keyword arguments go to the class: ``hidden=`` for the MLP; ``channels=`` and
    ``separable=True`` (depthwise separable convs) for the CNN; ``channels=``/``hidden=`` for
    ``cnn_cifar``; ``embedding=``/``hidden=``/``layers=`` for ``char_lstm``.

    ``seed``: an int draws the starting weights from torch's CPU generator seeded with it inside
    ``torch.random.fork_rng``, so the same arguments give the same weights whatever ran before,
    and the caller's global RNG state is left as it was; ``None`` draws them from torch's global
    RNG (``torch.manual_seed``), as plain PyTorch does.
    """
    check_choice("model", name, MODELS)
    if name != "cnn" and kwargs.get("separable"):
        raise ValueError(f"separable=True is not valid for model={name!r}; only model='cnn' has separable convs")
    kwargs = {k: v for k, v in kwargs.items() if not (name == "mlp" and k == "separable")}
    if seed is None:
        return _BUILDERS[name](input_shape, num_classes, **kwargs)
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise ValueError(f"seed={seed!r} is not valid; use None or an integer")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return _BUILDERS[name](input_shape, num_classes, **kwargs)


def count_parameters(model: nn.Module, nonzero: bool = False) -> int:
    """Number of trainable parameters (or of those that are nonzero, after pruning)."""
    params = (p for p in model.parameters() if p.requires_grad)
    return int(sum(int(torch.count_nonzero(p)) if nonzero else p.numel() for p in params))
