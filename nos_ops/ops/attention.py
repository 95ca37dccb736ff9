"""Attention ops O_a (Sec. 3.1): spatial and channel self-calibration.

Each op produces a gate ``A`` in (0, 1) through ``attention(x)`` and, used alone, returns
the residual calibration of Eq. 5, ``x + x * A``. With ``stride=2`` the map is made at
the output resolution of a reduction edge and the features it calibrates are subsampled
to meet it (as a strided identity would). Constructors check their arguments;
``attention(x)`` (and so ``forward``) checks the input's rank, channels and dtype (not under
``torch.autocast``), naming the layer. Batch 0 works.
"""

from __future__ import annotations

import torch
from torch import nn

from .helpers import check_features, check_odd_kernel, check_positive, reduced_channels
from .registry import Family, register_op

__all__ = ["SpatialAttention", "ChannelAttention"]


def _check_layers(**layers: object) -> None:
    for name, layer in layers.items():
        if not callable(layer):
            raise TypeError(
                f"{name}={layer!r} is not valid; expected a module class such as nn.ReLU"
            )


def _subsample(x: torch.Tensor, stride: int) -> torch.Tensor:
    return x if stride == 1 else x[:, :, ::stride, ::stride]


class SpatialAttention(nn.Module):
    """Saliency map over positions: B x C x H x W -> A of B x 1 x H' x W', H' = ceil(H/stride).

    1x1 conv C -> C/r, act, k x k conv (strided), act, 1x1 conv -> 1, gate.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        reduction: int = 16,
        act_layer: type[nn.Module] = nn.ReLU,
        gate_layer: type[nn.Module] = nn.Sigmoid,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive("channels", channels)
        check_odd_kernel(kernel_size)
        check_positive("stride", stride)
        _check_layers(act_layer=act_layer, gate_layer=gate_layer)
        factory = {"device": device, "dtype": dtype}
        hidden = reduced_channels(channels, reduction, minimum=4)
        self.channels = channels
        self.stride = stride
        self.reduce = nn.Conv2d(channels, hidden, 1, **factory)
        self.act1 = act_layer()
        self.conv = nn.Conv2d(hidden, hidden, kernel_size, stride, kernel_size // 2, **factory)
        self.act2 = act_layer()
        self.proj = nn.Conv2d(hidden, 1, 1, **factory)
        self.gate = gate_layer()

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The spatial gate ``A``: B x 1 x H' x W' in (0, 1)."""
        check_features(x, self.channels, layer=self, like=self.reduce.weight)
        return self.gate(self.proj(self.act2(self.conv(self.act1(self.reduce(x))))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _subsample(x, self.stride) * (1 + self.attention(x))

    def extra_repr(self) -> str:
        return f"{self.channels}, stride={self.stride}"


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation gate: B x C x H x W -> A of B x C x 1 x 1.

    Global average pool, 1x1 conv C -> C/r, act, 1x1 conv C/r -> C, gate. The hidden width
    is ``max(4, C // reduction)``, or ``max(1, round(C * rd_ratio))`` when ``rd_ratio`` is
    given (timm's naming; ``rd_ratio=1`` is the no-bottleneck reading closest to the
    paper's Table 1 costs, see ``docs/table1.md``).
    """

    def __init__(
        self,
        channels: int,
        stride: int = 1,
        reduction: int = 16,
        act_layer: type[nn.Module] = nn.ReLU,
        gate_layer: type[nn.Module] = nn.Sigmoid,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        rd_ratio: float | None = None,
    ) -> None:
        super().__init__()
        check_positive("channels", channels)
        check_positive("stride", stride)
        _check_layers(act_layer=act_layer, gate_layer=gate_layer)
        factory = {"device": device, "dtype": dtype}
        if rd_ratio is None:
            hidden = reduced_channels(channels, reduction, minimum=4)
        elif isinstance(rd_ratio, bool) or not 0 < rd_ratio <= 16:
            raise ValueError(
                f"rd_ratio={rd_ratio!r} is not valid; expected a number in (0, 16] "
                "(hidden channels = round(channels * rd_ratio))"
            )
        else:
            hidden = max(1, round(channels * rd_ratio))
        self.channels = channels
        self.stride = stride
        self.fc1 = nn.Conv2d(channels, hidden, 1, **factory)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(hidden, channels, 1, **factory)
        self.gate = gate_layer()

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The channel gate ``A``: B x C x 1 x 1 in (0, 1)."""
        check_features(x, self.channels, layer=self, like=self.fc1.weight)
        return self.gate(self.fc2(self.act(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _subsample(x, self.stride) * (1 + self.attention(x))

    def extra_repr(self) -> str:
        return f"{self.channels}, hidden={self.fc1.out_channels}, stride={self.stride}"


register_op("spatial_attention", Family.ATTENTION, lambda c, s, a: SpatialAttention(c, stride=s))
register_op("channel_attention", Family.ATTENTION, lambda c, s, a: ChannelAttention(c, stride=s))
