"""Small argument and shape checks shared by the self-calibration ops."""

from __future__ import annotations

import torch

__all__ = ["reduced_channels", "check_features", "check_positive", "check_odd_kernel"]


def reduced_channels(channels: int, reduction: int, minimum: int = 1) -> int:
    """Bottleneck width ``max(minimum, channels // reduction)``."""
    check_positive("reduction", reduction)
    return max(minimum, channels // reduction)


def check_positive(name: str, value: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an int >= 1."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} is not valid; expected an integer >= 1")


def check_odd_kernel(kernel_size: int) -> None:
    """Raise ``ValueError`` unless ``kernel_size`` is a positive odd int (same padding)."""
    check_positive("kernel_size", kernel_size)
    if kernel_size % 2 == 0:
        raise ValueError(
            f"kernel_size={kernel_size} is not valid; expected an odd size such as 1, 3, 5, 7"
        )


def check_features(x: torch.Tensor, channels: int, name: str = "x") -> None:
    """Raise ``ValueError`` unless ``x`` is B x ``channels`` x H x W."""
    if x.dim() != 4:
        raise ValueError(
            f"{name} must be a 4-d tensor B x C x H x W, got shape {tuple(x.shape)}"
        )
    if x.shape[1] != channels:
        raise ValueError(
            f"{name} has {x.shape[1]} channels (shape {tuple(x.shape)}); "
            f"this layer was built for channels={channels}"
        )
