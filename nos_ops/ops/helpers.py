"""Argument and input checks shared by the ops, mixtures, cells and networks.

Constructors check their arguments once (``check_positive``, ``check_odd_kernel``, ...);
``forward`` calls :func:`check_features`, which costs a few shape and dtype comparisons.
Every message names the argument (or the layer), the value and what would be valid.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "reduced_channels",
    "check_bool",
    "check_dtype",
    "check_features",
    "check_finite",
    "check_int",
    "check_non_negative",
    "check_odd_kernel",
    "check_positive",
    "check_probability",
    "describe",
]


def reduced_channels(channels: int, reduction: int, minimum: int = 1) -> int:
    """Bottleneck width ``max(minimum, channels // reduction)``."""
    check_positive("reduction", reduction)
    return max(minimum, channels // reduction)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value: int, minimum: int | None = None) -> None:
    """Raise ``ValueError`` unless ``value`` is an int (not a bool) >= ``minimum``."""
    if not _is_int(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{name}={value!r} is not valid; expected an integer{bound}")


def check_positive(name: str, value: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an int >= 1."""
    check_int(name, value, 1)


def check_non_negative(name: str, value: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an int >= 0."""
    check_int(name, value, 0)


def check_bool(name: str, value: bool) -> None:
    """Raise ``TypeError`` unless ``value`` is a bool (``affine="no"`` would read as True)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}={value!r} is not valid; expected True or False")


def check_odd_kernel(kernel_size: int, name: str = "kernel_size") -> None:
    """Raise ``ValueError`` unless ``kernel_size`` is a positive odd int (same padding)."""
    check_positive(name, kernel_size)
    if kernel_size % 2 == 0:
        raise ValueError(
            f"{name}={kernel_size} is not valid; expected an odd size such as 1, 3, 5, 7"
        )


def check_finite(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite real number (not a bool or str)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} is not valid; expected a finite number")


def check_probability(name: str, value: float, include_one: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a number in [0, 1) (or [0, 1])."""
    check_finite(name, value)
    if not (0.0 <= value <= 1.0 if include_one else 0.0 <= value < 1.0):
        bound = "[0, 1]" if include_one else "[0, 1)"
        raise ValueError(f"{name}={value!r} is not valid; expected a value in {bound}")


def describe(layer: object) -> str:
    """A short name for a layer in messages: a string as is, a module as
    ``ClassName(extra_repr)``."""
    if layer is None or isinstance(layer, str):
        return layer or "this layer"
    extra = layer.extra_repr() if hasattr(layer, "extra_repr") else ""
    return f"{type(layer).__name__}({extra})" if extra else type(layer).__name__


def check_features(
    x: torch.Tensor,
    channels: int | None,
    name: str = "x",
    layer: object = None,
    like: torch.Tensor | None = None,
) -> None:
    """Raise unless ``x`` is a B x ``channels`` x H x W tensor of ``like``'s dtype.

    ``ValueError`` for the shape, ``TypeError`` for a non-tensor or a dtype that differs from
    the parameter ``like`` outside ``torch.autocast`` (under autocast, float32 weights take
    bfloat16/float16 inputs). ``layer`` (a module or a name) is named in the message; it is
    formatted only when a check fails. Batch 0 passes.
    """
    ok = isinstance(x, torch.Tensor) and x.dim() == 4
    if ok and (channels is None or x.shape[1] == channels):
        if like is not None and x.dtype != like.dtype:
            check_dtype(x, like, name, layer)
        return
    where = f"{describe(layer)}: " if layer is not None else ""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}{name} must be a tensor B x C x H x W, got {type(x).__name__}")
    if x.dim() != 4:
        hint = "; add the batch dimension with x.unsqueeze(0)" if x.dim() == 3 else ""
        raise ValueError(
            f"{where}{name} must be a 4-d tensor B x C x H x W, got shape {tuple(x.shape)}{hint}"
        )
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{where}{name} has {x.shape[1]} channels (shape {tuple(x.shape)}); "
            f"this layer was built for channels={channels}"
        )
    if like is not None and x.dtype != like.dtype:
        check_dtype(x, like, name, layer)


def check_dtype(x: torch.Tensor, like: torch.Tensor, name: str = "x", layer: object = None) -> None:
    """Raise ``TypeError`` if ``x`` and the parameter ``like`` differ in dtype outside
    ``torch.autocast`` (or ``x`` is not floating point)."""
    if x.dtype == like.dtype:
        return
    if x.is_floating_point() and torch.is_autocast_enabled(x.device.type):
        return
    where = describe(layer)
    if not x.is_floating_point():
        raise TypeError(
            f"{where} takes floating-point inputs but {name} is {x.dtype}; convert it with "
            f"{name}.to({like.dtype}) (uint8 images: {name}.float() / 255)"
        )
    raise TypeError(
        f"{where} has {like.dtype} parameters but {name} is {x.dtype}; convert one to the "
        f"other (layer.to({x.dtype}) e.g. layer.double(), or {name}.to({like.dtype})), or run "
        "mixed precision under torch.autocast"
    )
