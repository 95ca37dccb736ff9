"""Feature-transformation ops O_f (Sec. 3.1): the DARTS operation set.

The structure follows DARTS exactly (ReLU -> conv -> BN, separable convs applied twice)
so that the "darts" space rebuilds DARTS's networks parameter for parameter. With
``affine=False`` (search form) BN layers carry no affine parameters and pooling ops are
followed by a non-affine BN, as in DARTS's ``MixedOp``.
All ops map B x C x H x W to B x C x ceil(H / stride) x ceil(W / stride).

Constructors check their arguments; ``forward`` checks the input's rank, channels and dtype
(a few comparisons) and raises naming the layer. Batch 0 works (an empty output). The
capabilities ``is_zero`` (:class:`Zero`) and ``shares_relu`` (:class:`DilConv`,
:class:`SepConv`) let mixtures take their fused paths (see :mod:`nos_ops.ops.registry`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dynamic import _grad_edge, _needed, depthwise_conv2d, depthwise_conv2d_backward
from .helpers import (
    check_bool,
    check_dtype,
    check_features,
    check_non_negative,
    check_odd_kernel,
    check_positive,
)
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
        check_positive("in_channels", in_channels)
        check_positive("out_channels", out_channels)
        check_positive("kernel_size", kernel_size)
        check_positive("stride", stride)
        check_non_negative("padding", padding)
        check_bool("affine", affine)
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False),
            nn.BatchNorm2d(out_channels, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self[1]
        check_features(x, conv.in_channels, layer=self, like=conv.weight)
        return super().forward(x)


class _DepthwiseConv2d(nn.Conv2d):
    """Bias-free depthwise ``nn.Conv2d`` (groups = channels) on :func:`depthwise_conv2d`,
    whose CPU backward is several times faster for 5x5 and dilated kernels."""

    def __init__(
        self, channels: int, kernel_size: int, stride: int, padding: int, dilation: int
    ) -> None:
        super().__init__(
            channels, channels, kernel_size, stride, padding, dilation, groups=channels, bias=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv2d(x, self.weight, self.stride[0], self.padding[0], self.dilation[0])


class _SeparableConv2d(torch.autograd.Function):
    """``pointwise(depthwise(x))`` that saves only x: the depthwise output, which autograd
    would keep for the pointwise weight gradient, is recomputed in backward (one cheap
    depthwise conv) instead. One activation less per conv pair in memory."""

    @staticmethod
    def forward(
        x: torch.Tensor,
        depthwise: torch.Tensor,
        pointwise: torch.Tensor,
        stride: int,
        padding: int,
        dilation: int,
    ) -> torch.Tensor:
        hidden = F.conv2d(x, depthwise, None, stride, padding, dilation, x.shape[1])
        return F.conv2d(hidden, pointwise)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, depthwise, pointwise, ctx.stride, ctx.padding, ctx.dilation = inputs
        ctx.save_for_backward(x, depthwise, pointwise)
        ctx.nodes = (x.grad_fn, depthwise.grad_fn, pointwise.grad_fn)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, depthwise, pointwise = ctx.saved_tensors
        s, p, d = ctx.stride, ctx.padding, ctx.dilation
        needs = [_needed(n, r) for n, r in zip(ctx.nodes, ctx.needs_input_grad)]
        if needs[2]:  # only the pointwise weight gradient reads the depthwise output
            hidden = F.conv2d(x, depthwise, None, s, p, d, x.shape[1])
        else:
            hidden = grad.new_empty(grad.shape[0], x.shape[1], *grad.shape[2:])
        mask = [needs[0] or needs[1], needs[2], False]
        grad_hidden, grad_pointwise, _ = torch.ops.aten.convolution_backward(
            grad, hidden, pointwise, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask
        )
        grad_x = grad_depthwise = None
        if mask[0]:
            grad_x, grad_depthwise = depthwise_conv2d_backward(
                grad_hidden, x, depthwise, s, p, d, (needs[0], needs[1])
            )
        return grad_x, grad_depthwise, grad_pointwise, None, None, None


class DilConv(nn.Sequential):
    """ReLU -> dilated depthwise conv -> pointwise conv -> BN (DARTS ``dil_conv``).

    On CPU, while autograd records, the two convs run as one function that keeps only their
    input for backward (the depthwise output is recomputed); the same values and gradients.
    ``padding`` must be the "same" padding ``dilation * (kernel_size - 1) // 2``.
    """

    shares_relu = True  # capability: forward_after_relu (nos_ops.ops.registry)

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
        _check_conv_args(in_channels, out_channels, kernel_size, stride, padding, dilation, affine)
        super().__init__(
            nn.ReLU(inplace=False),
            _DepthwiseConv2d(in_channels, kernel_size, stride, padding, dilation),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_after_relu(self[0](x))

    def forward_after_relu(self, x: torch.Tensor) -> torch.Tensor:
        """The op on an input that has been through its leading ReLU already (ops that share
        an input share that ReLU, see :class:`~nos_ops.mixed.MixedHeteroOp`)."""
        depthwise, pointwise, bn = self[1], self[2], self[3]
        check_features(x, depthwise.in_channels, layer=self, like=depthwise.weight)
        if (
            x.device.type == "cpu"
            and torch.is_grad_enabled()
            and any(t.requires_grad for t in (x, depthwise.weight, pointwise.weight))
            and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing()
        ):
            out = _SeparableConv2d.apply(
                _grad_edge(x),
                _grad_edge(depthwise.weight),
                _grad_edge(pointwise.weight),
                depthwise.stride[0],
                depthwise.padding[0],
                depthwise.dilation[0],
            )
        else:
            out = pointwise(depthwise(x))
        return bn(out)

    def extra_repr(self) -> str:
        d, p = self[1], self[2]
        return (
            f"{d.in_channels}, {p.out_channels}, kernel_size={d.kernel_size[0]}, "
            f"stride={d.stride[0]}, dilation={d.dilation[0]}"
        )


class SepConv(nn.Sequential):
    """Two stacked ``DilConv`` with dilation 1; only the first strides (DARTS ``sep_conv``).

    ``padding`` must be the "same" padding ``(kernel_size - 1) // 2``."""

    shares_relu = True  # capability: forward_after_relu (nos_ops.ops.registry)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        padding: int,
        affine: bool = True,
    ) -> None:
        _check_conv_args(in_channels, out_channels, kernel_size, stride, padding, 1, affine)
        super().__init__(
            DilConv(in_channels, in_channels, kernel_size, stride, padding, 1, affine),
            DilConv(in_channels, out_channels, kernel_size, 1, padding, 1, affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self[0][1]
        check_features(x, first.in_channels, layer=self, like=first.weight)
        return self[1](self[0](x))

    def forward_after_relu(self, x: torch.Tensor) -> torch.Tensor:
        """The op on an input that has been through its leading ReLU already."""
        first = self[0][1]
        check_features(x, first.in_channels, layer=self, like=first.weight)
        return self[1](self[0].forward_after_relu(x))

    def extra_repr(self) -> str:
        d = self[0][1]
        return (
            f"{d.in_channels}, {self[1][2].out_channels}, kernel_size={d.kernel_size[0]}, "
            f"stride={d.stride[0]}"
        )


def _check_conv_args(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int,
    padding: int,
    dilation: int,
    affine: bool,
) -> None:
    check_positive("in_channels", in_channels)
    check_positive("out_channels", out_channels)
    check_odd_kernel(kernel_size)
    check_positive("stride", stride)
    check_positive("dilation", dilation)
    check_non_negative("padding", padding)
    check_bool("affine", affine)
    same = dilation * (kernel_size - 1) // 2
    if padding != same:
        raise ValueError(
            f"padding={padding} is not valid for kernel_size={kernel_size}, "
            f"dilation={dilation}; expected {same} (the op keeps H x W at stride 1)"
        )


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset 1x1 stride-2 convs, concatenated.

    B x C_in x H x W -> B x C_out x ceil(H/2) x ceil(W/2); odd sizes are padded on the
    bottom/right before the one-pixel shift so both halves have the same size.
    """

    def __init__(self, in_channels: int, out_channels: int, affine: bool = True) -> None:
        super().__init__()
        check_positive("in_channels", in_channels)
        check_positive("out_channels", out_channels)
        check_bool("affine", affine)
        if out_channels % 2:
            raise ValueError(f"out_channels={out_channels} must be even for FactorizedReduce")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(in_channels, out_channels // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(in_channels, out_channels // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_features(x, self.conv_1.in_channels, layer=self, like=self.conv_1.weight)
        x = self.relu(x)
        shifted = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))

    def extra_repr(self) -> str:
        return f"{self.conv_1.in_channels}, {self.bn.num_features}"


class Zero(nn.Module):
    """The ``none`` op of the DARTS space: zeros at the output resolution."""

    is_zero = True  # capability: mixtures skip it (nos_ops.ops.registry)

    def __init__(self, stride: int = 1) -> None:
        super().__init__()
        check_positive("stride", stride)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_features(x, None, layer=self)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)

    def extra_repr(self) -> str:
        return f"stride={self.stride}"


Identity = nn.Identity


class _AvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d(k, stride, k // 2, count_include_pad=False)`` computed as a depthwise
    box-sum conv times 1 / (window size inside the image): the same values up to float
    rounding, several times faster than the NCHW pooling kernel on CPU."""

    def __init__(self, kernel_size: int, stride: int) -> None:
        check_odd_kernel(kernel_size)
        check_positive("stride", stride)
        super().__init__(kernel_size, stride, kernel_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_features(x, None, layer=self)
        if torch.compiler.is_exporting():  # one pooling node in the graph, not four
            return super().forward(x)
        k, s, p = self.kernel_size, self.stride, self.padding
        box = x.new_ones(x.shape[1], 1, k, k)
        count = F.conv2d(x.new_ones(1, 1, *x.shape[-2:]), box[:1], None, s, p)
        return F.conv2d(x, box, None, s, p, 1, x.shape[1]) * count.reciprocal()


class _ChannelsLastMaxPool(torch.autograd.Function):
    """Max pooling of an NCHW tensor by the channels_last CPU kernel. Saves only the
    indices (autograd on a channels_last copy would also keep the copy)."""

    @staticmethod
    def forward(x: torch.Tensor, kernel_size: int, stride: int) -> torch.Tensor:
        return _max_pool_channels_last(x, kernel_size, stride)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, ctx.kernel_size, ctx.stride = inputs
        ctx.shape = x.shape
        ctx.save_for_backward(output[1])
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, grad: torch.Tensor | None, _):
        if grad is None:
            return None, None, None
        (indices,) = ctx.saved_tensors
        k, s = ctx.kernel_size, ctx.stride
        like = grad.new_empty(ctx.shape).contiguous(memory_format=torch.channels_last)
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward(
            grad.contiguous(memory_format=torch.channels_last),
            like,
            [k, k],
            [s, s],
            [k // 2, k // 2],
            [1, 1],
            False,
            indices,
        )
        return grad_x.contiguous(), None, None


def _max_pool_channels_last(
    x: torch.Tensor, kernel_size: int, stride: int
) -> tuple[torch.Tensor, torch.Tensor]:
    out, indices = torch.ops.aten.max_pool2d_with_indices(
        x.contiguous(memory_format=torch.channels_last),
        [kernel_size] * 2,
        [stride] * 2,
        [kernel_size // 2] * 2,
    )
    return out.contiguous(), indices


class _MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d(k, stride, k // 2)``; on CPU an NCHW input is pooled by the channels_last
    kernel (vectorised over channels) and returned NCHW: the same values and gradients
    (indices), a few times faster than the NCHW kernel."""

    def __init__(self, kernel_size: int, stride: int) -> None:
        check_odd_kernel(kernel_size)
        check_positive("stride", stride)
        super().__init__(kernel_size, stride, kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_features(x, None, layer=self)
        if (
            x.device.type != "cpu"
            or x.dim() != 4
            or not x.is_contiguous()
            or x.is_contiguous(memory_format=torch.channels_last)
            or torch.compiler.is_compiling()
            or torch.jit.is_tracing()
        ):
            return super().forward(x)
        if torch.is_grad_enabled() and x.requires_grad:
            return _ChannelsLastMaxPool.apply(x, self.kernel_size, self.stride)[0]
        return _max_pool_channels_last(x, self.kernel_size, self.stride)[0]


class _PoolBN(nn.Sequential):
    """Pooling followed by a non-affine BatchNorm (the search form of DARTS's pools)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self[1]
        check_features(x, bn.num_features, layer=self)
        if x.dtype != bn.running_mean.dtype:
            check_dtype(x, bn.running_mean, layer=self)
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"{type(self[0]).__name__.lstrip('_')}, channels={self[1].num_features}"


def _pool(pool: type[nn.Module]):
    def factory(channels: int, stride: int, affine: bool) -> nn.Module:
        layer = pool(3, stride)
        if affine:
            return layer
        return _PoolBN(layer, nn.BatchNorm2d(channels, affine=False))

    return factory


def _identity(channels: int, stride: int, affine: bool) -> nn.Module:
    if stride not in (1, 2):
        raise ValueError(
            f"stride={stride!r} is not valid for identity; expected 1 or 2 "
            "(FactorizedReduce halves the resolution)"
        )
    return Identity() if stride == 1 else FactorizedReduce(channels, channels, affine)


register_op("none", Family.FEATURE, lambda c, s, a: Zero(s))
register_op("sep_conv_3x3", Family.FEATURE, lambda c, s, a: SepConv(c, c, 3, s, 1, a))
register_op("sep_conv_5x5", Family.FEATURE, lambda c, s, a: SepConv(c, c, 5, s, 2, a))
register_op("dil_conv_3x3", Family.FEATURE, lambda c, s, a: DilConv(c, c, 3, s, 2, 2, a))
register_op("dil_conv_5x5", Family.FEATURE, lambda c, s, a: DilConv(c, c, 5, s, 4, 2, a))
register_op("avg_pool_3x3", Family.FEATURE, _pool(_AvgPool2d))
register_op("max_pool_3x3", Family.FEATURE, _pool(_MaxPool2d))
register_op("identity", Family.FEATURE, _identity)


# The two ops of the DARTS reference's operations.py that only NASNet and AmoebaNet use
# (quark0/darts, cnn/operations.py): not in the "darts" search space, registered so every
# genotype of its genotypes.py builds (see nos_ops.zoo).
def _conv_7x1_1x7(channels: int, stride: int, affine: bool) -> nn.Module:
    """ReLU -> 1x7 conv (stride (1, s)) -> 7x1 conv (stride (s, 1)) -> BN, as DARTS builds it."""
    return nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(channels, channels, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
        nn.Conv2d(channels, channels, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
        nn.BatchNorm2d(channels, affine=affine),
    )


register_op("sep_conv_7x7", Family.FEATURE, lambda c, s, a: SepConv(c, c, 7, s, 3, a))
register_op("conv_7x1_1x7", Family.FEATURE, _conv_7x1_1x7)
