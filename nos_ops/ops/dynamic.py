"""Dynamic convolution ops O_d (Sec. 3.1, Fig. 1) and the per-sample depthwise conv.

``DynamicConv2d`` generates one depthwise k x k kernel per sample and channel from the
input itself (bottleneck, kernel transform, kernel decode) and applies it in the
residual form of Eq. 5: ``x + x (x) D``. The identity term is folded into the kernel
(``x + x (x) D = x (x) (delta + D)``), so the whole op is one per-sample depthwise conv.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .helpers import check_features, check_odd_kernel, check_positive, reduced_channels
from .registry import Family, register_op

__all__ = [
    "DynamicConv2d",
    "dynamic_depthwise_conv2d",
    "identity_kernel",
    "spread_kernels",
]

ConvImpl = Literal["auto", "grouped", "shifted"]
_IMPLS = ("auto", "grouped", "shifted")


def _grouped(x: torch.Tensor, kernels: torch.Tensor, stride: int, dilation: int) -> torch.Tensor:
    batch, channels = x.shape[:2]
    padding = dilation * (kernels.shape[-1] - 1) // 2
    out = F.conv2d(
        rearrange(x, "b c h w -> 1 (b c) h w"),
        rearrange(kernels, "b c kh kw -> (b c) 1 kh kw"),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=batch * channels,
    )
    return rearrange(out, "1 (b c) h w -> b c h w", b=batch)


def _shifted(x: torch.Tensor, kernels: torch.Tensor, stride: int, dilation: int) -> torch.Tensor:
    k = kernels.shape[-1]
    padding = dilation * (k - 1) // 2
    height, width = x.shape[-2:]
    out_h = (height - 1) // stride + 1
    out_w = (width - 1) // stride + 1
    padded = F.pad(x, (padding, padding, padding, padding))
    span_h = stride * (out_h - 1) + 1
    span_w = stride * (out_w - 1) + 1
    out = None
    for i in range(k):
        for j in range(k):
            window = padded[
                :,
                :,
                i * dilation : i * dilation + span_h : stride,
                j * dilation : j * dilation + span_w : stride,
            ]
            term = window * kernels[:, :, i, j, None, None]
            out = term if out is None else out + term
    return out


def dynamic_depthwise_conv2d(
    x: torch.Tensor,
    kernels: torch.Tensor,
    stride: int = 1,
    dilation: int = 1,
    impl: ConvImpl = "auto",
) -> torch.Tensor:
    """Convolve each sample with its own depthwise kernels, "same" padding.

    Args:
        x: features, B x C x H x W.
        kernels: per-sample depthwise kernels, B x C x k x k with k odd.
        stride, dilation: as in ``F.conv2d``.
        impl: ``"grouped"`` folds the batch into the groups of one ``F.conv2d`` (fastest
            eager path); ``"shifted"`` sums k*k shifted multiply-adds, which traces with a
            dynamic batch under ``torch.export``/``torch.compile``/ONNX; ``"auto"`` picks
            ``"shifted"`` while compiling or exporting and ``"grouped"`` otherwise.

    Returns:
        B x C x ceil(H / stride) x ceil(W / stride).
    """
    if impl not in _IMPLS:
        raise ValueError(f"impl={impl!r} is not valid; expected one of {_IMPLS}")
    check_positive("stride", stride)
    check_positive("dilation", dilation)
    if x.dim() != 4 or kernels.dim() != 4:
        raise ValueError(
            f"x and kernels must be 4-d (B x C x H x W and B x C x k x k), "
            f"got x {tuple(x.shape)} and kernels {tuple(kernels.shape)}"
        )
    if kernels.shape[:2] != x.shape[:2]:
        raise ValueError(
            f"kernels {tuple(kernels.shape)} must match x {tuple(x.shape)} in batch and channels"
        )
    if kernels.shape[-1] != kernels.shape[-2] or kernels.shape[-1] % 2 == 0:
        raise ValueError(f"kernels must be square with an odd size, got {tuple(kernels.shape)}")
    if impl == "auto":
        impl = "shifted" if torch.compiler.is_compiling() else "grouped"
    if impl == "grouped":
        return _grouped(x, kernels, stride, dilation)
    return _shifted(x, kernels, stride, dilation)


def identity_kernel(kernel_size: int, like: torch.Tensor) -> torch.Tensor:
    """The k x k delta kernel (1 at the centre): ``x (x) delta == x``."""
    delta = torch.zeros(kernel_size, kernel_size, dtype=like.dtype, device=like.device)
    delta[kernel_size // 2, kernel_size // 2] = 1
    return delta


def spread_kernels(kernels: torch.Tensor, dilation: int, size: int) -> torch.Tensor:
    """Place B x C x k x k kernels of ``dilation`` on a dense, centred ``size`` x ``size`` grid.

    Convolving with the result at dilation 1 equals convolving with ``kernels`` at
    ``dilation``; this is how kernels of different sizes reaching one node are summed.
    """
    if dilation > 1:
        k = kernels.shape[-1]
        gap = dilation - 1
        kernels = F.pad(kernels.unsqueeze(-1), (0, gap)).flatten(-2)[..., : (k - 1) * dilation + 1]
        kernels = F.pad(kernels.unsqueeze(-2), (0, 0, 0, gap)).flatten(-3, -2)
        kernels = kernels[..., : (k - 1) * dilation + 1, :]
    extent = kernels.shape[-1]
    if size < extent or (size - extent) % 2:
        raise ValueError(f"size={size} cannot centre a kernel of extent {extent}")
    pad = (size - extent) // 2
    return F.pad(kernels, (pad, pad, pad, pad))


class DynamicConv2d(nn.Module):
    """Per-sample depthwise convolution with kernels generated from the input (Fig. 1).

    Three modules: a bottleneck 1x1 conv C -> C/r; a kernel-transform 1x1 conv C -> k*k
    whose maps are softmaxed over the H*W positions and multiplied with the bottleneck
    features into a C/r x k*k latent kernel; a kernel-decode 1x1 conv C/r -> C that reads
    out B x C x k x k depthwise kernels ``D``.

    ``forward(x)`` returns ``x + x (x) D`` (Eq. 5 with one dynamic op), B x C x H' x W'
    with H' = ceil(H / stride); ``kernels(x)`` returns ``D`` for the heterogeneous block.
    The decode weights start at N(0, ``decode_init_std``^2), so ``D`` starts near zero and
    the layer near the identity: with a default init, D grows with the input's scale and
    networks that stack several of these layers fail to train.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        reduction: int = 8,
        impl: ConvImpl = "auto",
        decode_init_std: float = 1e-3,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive("channels", channels)
        check_odd_kernel(kernel_size)
        check_positive("stride", stride)
        check_positive("dilation", dilation)
        if impl not in _IMPLS:
            raise ValueError(f"impl={impl!r} is not valid; expected one of {_IMPLS}")
        factory = {"device": device, "dtype": dtype}
        hidden = reduced_channels(channels, reduction)
        self.channels = channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilation = dilation
        self.impl = impl
        self.bottleneck = nn.Conv2d(channels, hidden, 1, bias=False, **factory)
        self.transform = nn.Conv2d(channels, kernel_size * kernel_size, 1, bias=False, **factory)
        self.decode = nn.Conv2d(hidden, channels, 1, bias=False, **factory)
        # D starts near zero, so the layer starts near the identity (like zero-init of a
        # residual branch); a zero init would leave the other modules without gradient.
        nn.init.normal_(self.decode.weight, std=decode_init_std)

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample depthwise kernels ``D``: B x C x H x W -> B x C x k x k."""
        check_features(x, self.channels)
        context = self.bottleneck(x).flatten(2)  # B x C/r x HW
        weights = self.transform(x).flatten(2).softmax(dim=-1)  # B x k*k x HW
        latent = torch.bmm(context, weights.transpose(1, 2))  # B x C/r x k*k
        latent = rearrange(latent, "b c (kh kw) -> b c kh kw", kh=self.kernel_size)
        return self.decode(latent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernels = self.kernels(x) + identity_kernel(self.kernel_size, x)
        return dynamic_depthwise_conv2d(x, kernels, self.stride, self.dilation, self.impl)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"dilation={self.dilation}, impl={self.impl!r}"
        )


def _dynamic(kernel_size: int, dilation: int):
    return lambda c, s, a: DynamicConv2d(c, kernel_size, stride=s, dilation=dilation)


register_op("dynamic_conv_3x3", Family.DYNAMIC, _dynamic(3, 1))
register_op("dynamic_conv_5x5", Family.DYNAMIC, _dynamic(5, 1))
register_op("dil_dynamic_conv_3x3", Family.DYNAMIC, _dynamic(3, 2))
register_op("dil_dynamic_conv_5x5", Family.DYNAMIC, _dynamic(5, 2))
