"""Feature-transformation ops O_f (Sec. 3.1): the DARTS operation set.

The structure follows DARTS exactly (ReLU -> conv -> BN, separable convs applied twice)
so that the "darts" space rebuilds DARTS's networks parameter for parameter. With
``affine=False`` (search form) BN layers carry no affine parameters and pooling ops are
followed by a non-affine BN, as in DARTS's ``MixedOp``.
All ops map B x C x H x W to B x C x ceil(H / stride) x ceil(W / stride).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import Family, register_op

__all__ = ["ReLUConvBN", "DilConv", "SepConv", "FactorizedReduce", "Zero", "Identity"]


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv2d -> BatchNorm: B x C_in x H x W -> B x C_out x H' x W'."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        affine: bool = True,
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False),
            nn.BatchNorm2d(out_channels, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU -> dilated depthwise conv -> pointwise conv -> BN (DARTS ``dil_conv``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        padding: int,
        dilation: int,
        affine: bool = True,
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(
                in_channels,
                in_channels,
                kernel_size,
                stride,
                padding,
                dilation=dilation,
                groups=in_channels,
                bias=False,
            ),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked ``DilConv`` with dilation 1; only the first strides (DARTS ``sep_conv``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        padding: int,
        affine: bool = True,
    ) -> None:
        super().__init__(
            DilConv(in_channels, in_channels, kernel_size, stride, padding, 1, affine),
            DilConv(in_channels, out_channels, kernel_size, 1, padding, 1, affine),
        )


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset 1x1 stride-2 convs, concatenated.

    B x C_in x H x W -> B x C_out x ceil(H/2) x ceil(W/2); odd sizes are padded on the
    bottom/right before the one-pixel shift so both halves have the same size.
    """

    def __init__(self, in_channels: int, out_channels: int, affine: bool = True) -> None:
        super().__init__()
        if out_channels % 2:
            raise ValueError(f"out_channels={out_channels} must be even for FactorizedReduce")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(in_channels, out_channels // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(in_channels, out_channels // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class Zero(nn.Module):
    """The ``none`` op of the DARTS space: zeros at the output resolution."""

    def __init__(self, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


Identity = nn.Identity


def _pool(pool: type[nn.Module], **kwargs):
    def factory(channels: int, stride: int, affine: bool) -> nn.Module:
        layer = pool(3, stride=stride, padding=1, **kwargs)
        if affine:
            return layer
        return nn.Sequential(layer, nn.BatchNorm2d(channels, affine=False))

    return factory


def _identity(channels: int, stride: int, affine: bool) -> nn.Module:
    return Identity() if stride == 1 else FactorizedReduce(channels, channels, affine)


register_op("none", Family.FEATURE, lambda c, s, a: Zero(s))
register_op("sep_conv_3x3", Family.FEATURE, lambda c, s, a: SepConv(c, c, 3, s, 1, a))
register_op("sep_conv_5x5", Family.FEATURE, lambda c, s, a: SepConv(c, c, 5, s, 2, a))
register_op("dil_conv_3x3", Family.FEATURE, lambda c, s, a: DilConv(c, c, 3, s, 2, 2, a))
register_op("dil_conv_5x5", Family.FEATURE, lambda c, s, a: DilConv(c, c, 5, s, 4, 2, a))
register_op("avg_pool_3x3", Family.FEATURE, _pool(nn.AvgPool2d, count_include_pad=False))
register_op("max_pool_3x3", Family.FEATURE, _pool(nn.MaxPool2d))
register_op("identity", Family.FEATURE, _identity)
