"""Dynamic convolution ops O_d (Sec. 3.1, Fig. 1) and the per-sample depthwise conv.

``DynamicConv2d`` generates one depthwise k x k kernel per sample and channel from the
input itself (bottleneck, kernel transform, kernel decode) and applies it in the
residual form of Eq. 5: ``x + x (x) D``. The identity term is folded into the kernel
(``x + x (x) D = x (x) (delta + D)``), so the whole op is one per-sample depthwise conv.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from .helpers import (
    check_dtype,
    check_features,
    check_finite,
    check_odd_kernel,
    check_positive,
    reduced_channels,
)
from .registry import Family, register_op

__all__ = [
    "DynamicConv2d",
    "depthwise_conv2d",
    "depthwise_conv2d_backward",
    "dynamic_depthwise_conv2d",
    "generate_kernels",
    "identity_kernel",
    "rms_normalize",
    "spread_kernels",
]

ConvImpl = Literal["auto", "grouped", "shifted", "unfold"]
_IMPLS = ("auto", "grouped", "shifted", "unfold")


def _grouped(x: torch.Tensor, kernels: torch.Tensor, stride: int, dilation: int) -> torch.Tensor:
    batch, channels = x.shape[:2]
    padding = dilation * (kernels.shape[-1] - 1) // 2
    out = depthwise_conv2d(
        rearrange(x, "b c h w -> 1 (b c) h w"),
        rearrange(kernels, "b c kh kw -> (b c) 1 kh kw"),
        stride,
        padding,
        dilation,
    )
    return rearrange(out, "1 (b c) h w -> b c h w", b=batch)


def _same_geometry(x: torch.Tensor, k: int, stride: int, dilation: int) -> tuple[int, int, int]:
    """Padding and output height, width of a "same" k x k conv of x at stride, dilation."""
    height, width = x.shape[-2:]
    return dilation * (k - 1) // 2, (height - 1) // stride + 1, (width - 1) // stride + 1


def _shifted(x: torch.Tensor, kernels: torch.Tensor, stride: int, dilation: int) -> torch.Tensor:
    k = kernels.shape[-1]
    padding, out_h, out_w = _same_geometry(x, k, stride, dilation)
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


def _unfold(x: torch.Tensor, kernels: torch.Tensor, stride: int, dilation: int) -> torch.Tensor:
    batch, channels = x.shape[:2]
    k = kernels.shape[-1]
    padding, out_h, out_w = _same_geometry(x, k, stride, dilation)
    columns = F.unfold(x, k, dilation, padding, stride)  # B x (C k k) x out_h out_w
    columns = columns.view(batch, channels, k * k, out_h * out_w)
    out = (columns * kernels.reshape(batch, channels, k * k, 1)).sum(2)
    return out.view(batch, channels, out_h, out_w)


_CONVS = {"grouped": _grouped, "shifted": _shifted, "unfold": _unfold}


def _auto_impl() -> str:
    if torch.compiler.is_exporting():
        return "unfold"
    return "shifted" if torch.compiler.is_compiling() else "grouped"


# Widest kernel for which oneDNN's depthwise weight gradient is fast on CPU; wider or dilated
# kernels take a slow path there (10-30x a forward conv), see benchmarks/NOTES.md.
_FAST_WIDTH = 3
# Inputs smaller than this (elements) keep aten's backward: its slow path is still cheap
# there and the fast path's extra calls cost more (measured crossovers, benchmarks/NOTES.md).
# Strided convs with dilation 1 split into stride**2 phases and pay off only when larger.
_MIN_NUMEL = 2**14
_MIN_NUMEL_PHASES = 2**18


def _convolution_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: int,
    padding: int,
    dilation: int,
    groups: int,
    mask: tuple[bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """aten's depthwise conv backward for the gradients selected by ``mask`` (x, weight)."""
    grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
        grad,
        x,
        weight,
        None,
        [stride] * 2,
        [padding] * 2,
        [dilation] * 2,
        False,
        [0, 0],
        groups,
        [mask[0], mask[1], False],
    )
    return grad_x, grad_w


def _dense_weight_grad(
    x: torch.Tensor, grad: torch.Tensor, kh: int, kw: int, groups: int
) -> torch.Tensor:
    """Depthwise weight gradient at stride 1, dilation 1, no padding, in blocks at most
    ``_FAST_WIDTH`` wide: x is B x G x (H + kh - 1) x (W + kw - 1), grad B x G x H x W."""
    height, width = grad.shape[-2:]
    x = x[..., : height + kh - 1, : width + kw - 1]
    blocks = []
    for start in range(0, kw, _FAST_WIDTH):
        block = min(_FAST_WIDTH, kw - start)
        window = x[..., start : start + width + block - 1].contiguous()
        weight = grad.new_empty(groups, 1, kh, block)
        mask = (False, True)
        blocks.append(_convolution_backward(grad, window, weight, 1, 0, 1, groups, mask)[1])
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=-1)


def _phases(t: torch.Tensor, step: int) -> torch.Tensor:
    """B x G x (h * step) x (w * step) -> (step * step * B) x G x h x w, one phase per offset."""
    return torch.cat([t[..., r::step, c::step] for r in range(step) for c in range(step)])


def _dilated_weight_grad(
    x: torch.Tensor, grad: torch.Tensor, k: int, dilation: int, groups: int
) -> torch.Tensor:
    """Stride-1 weight gradient with ``dilation``: x (padded) has H + dilation * (k - 1) rows.

    The output positions split into dilation x dilation phases; in each phase the dilated
    kernel touches a dense sub-grid of x, so all phases stacked on the batch make one
    dense problem."""
    if dilation == 1:
        return _dense_weight_grad(x, grad, k, k, groups)
    height, width = grad.shape[-2:]
    rows, cols = -(-height // dilation), -(-width // dilation)
    extra_h, extra_w = rows * dilation - height, cols * dilation - width
    span = dilation * (k - 1)
    x = F.pad(x[..., : height + span, : width + span], (0, extra_w, 0, extra_h))
    grad = F.pad(grad, (0, extra_w, 0, extra_h))
    return _dense_weight_grad(_phases(x, dilation), _phases(grad, dilation), k, k, groups)


def _depthwise_weight_grad(
    x: torch.Tensor, grad: torch.Tensor, k: int, stride: int, padding: int, dilation: int
) -> torch.Tensor:
    groups = x.shape[1]
    if padding:
        x = F.pad(x, (padding,) * 4)
    if stride == 1:
        return _dilated_weight_grad(x, grad, k, dilation, groups)
    if dilation % stride == 0:  # every tap lands on the stride's sub-grid of x
        return _dilated_weight_grad(x[..., ::stride, ::stride], grad, k, dilation // stride, groups)
    if dilation == 1:  # taps i = r + stride * i' read the sub-grid starting at r
        out = grad.new_empty(groups, 1, k, k)
        for r in range(stride):
            for c in range(stride):
                sub = x[..., r::stride, c::stride]
                kh, kw = len(range(r, k, stride)), len(range(c, k, stride))
                out[..., r::stride, c::stride] = _dense_weight_grad(sub, grad, kh, kw, groups)
        return out
    weight = grad.new_empty(groups, 1, k, k)
    return _convolution_backward(grad, x, weight, stride, 0, dilation, groups, (False, True))[1]


def _depthwise_input_grad(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: int,
    padding: int,
    dilation: int,
) -> torch.Tensor:
    groups, k = weight.shape[0], weight.shape[-1]
    flipped = weight.flip(-2, -1)
    if stride == 1:  # the transposed conv is a conv with the flipped kernel
        return F.conv2d(grad, flipped, None, 1, dilation * (k - 1) - padding, dilation, groups)
    height, width = x.shape[-2:]
    if dilation % stride == 0:  # only the stride's sub-grid of x receives gradient
        step = dilation // stride
        sub = F.conv2d(grad, flipped, None, 1, step * (k - 1), step, groups)
        full = grad.new_zeros(*x.shape[:2], height + 2 * padding, width + 2 * padding)
        full[..., ::stride, ::stride][..., : sub.shape[-2], : sub.shape[-1]] = sub
        return full[..., padding : padding + height, padding : padding + width]
    mask = (True, False)
    return _convolution_backward(grad, x, weight, stride, padding, dilation, groups, mask)[0]


def _grad_edge(t: torch.Tensor) -> torch.Tensor:
    """``t``, as a view when it is a leaf that requires grad: its ``grad_fn`` then tells
    :func:`_needed` whether the running backward wants its gradient."""
    return t.view_as(t) if t.is_leaf and t.requires_grad else t


def _needed(node: torch.autograd.graph.Node | None, requires_grad: bool) -> bool:
    """Whether the running backward uses the gradient flowing into ``node``: a custom
    Function's ``needs_input_grad`` only says an input requires grad, and computing, say, a
    weight gradient that ``torch.autograd.grad(loss, arch_params)`` then drops is waste."""
    if not requires_grad:
        return False
    if node is None:
        return True
    try:
        return bool(torch._C._will_engine_execute_node(node))
    except (AttributeError, RuntimeError):  # private API: when unavailable, compute
        return True


class _DepthwiseConv2d(torch.autograd.Function):
    """``F.conv2d(x, weight, groups=C)`` whose backward avoids oneDNN's slow depthwise paths
    (kernels wider than 3, dilation, stride) by reducing them to dense stride-1 problems
    of width <= 3. The backward is made of differentiable ops, so double backward works."""

    @staticmethod
    def forward(
        x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int, dilation: int
    ) -> torch.Tensor:
        return F.conv2d(x, weight, None, stride, padding, dilation, x.shape[1])

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, weight, ctx.stride, ctx.padding, ctx.dilation = inputs
        ctx.save_for_backward(x, weight)
        ctx.nodes = (x.grad_fn, weight.grad_fn)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        needs = (
            _needed(ctx.nodes[0], ctx.needs_input_grad[0]),
            _needed(ctx.nodes[1], ctx.needs_input_grad[1]),
        )
        grad_x, grad_w = depthwise_conv2d_backward(
            grad, x, weight, ctx.stride, ctx.padding, ctx.dilation, needs
        )
        return grad_x, grad_w, None, None, None


def _fast_backward(
    x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int, dilation: int
) -> bool:
    """Whether :func:`depthwise_conv2d_backward` gains over aten's backward on CPU here:
    kernels wider than 3 or dilated, on inputs large enough (measured crossovers)."""
    k = weight.shape[-1]
    return (
        x.device.type == "cpu"
        and (k > _FAST_WIDTH or dilation > 1)
        and x.numel() >= (_MIN_NUMEL if dilation % stride == 0 else _MIN_NUMEL_PHASES)
        and weight.shape[-2] == k
        and weight.shape[0] == x.shape[1]
        and padding <= dilation * (k - 1)
    )


def depthwise_conv2d_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: int,
    padding: int,
    dilation: int,
    needs: tuple[bool, bool] = (True, True),
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients (x, weight) of a depthwise conv, those selected by ``needs``: the fast
    paths where :func:`_fast_backward` says so, else aten's backward."""
    if not _fast_backward(x, weight, stride, padding, dilation):
        groups = x.shape[1]
        return _convolution_backward(grad, x, weight, stride, padding, dilation, groups, needs)
    grad_x = grad_w = None
    if needs[0]:
        grad_x = _depthwise_input_grad(grad, x, weight, stride, padding, dilation)
    if needs[1]:
        grad_w = _depthwise_weight_grad(x, grad, weight.shape[-1], stride, padding, dilation)
    return grad_x, grad_w


def depthwise_conv2d(
    x: torch.Tensor, weight: torch.Tensor, stride: int = 1, padding: int = 0, dilation: int = 1
) -> torch.Tensor:
    """Depthwise conv, ``F.conv2d(x, weight, None, stride, padding, dilation, groups=C)``.

    x is B x C x H x W and weight C x 1 x k x k. On CPU, while autograd records, kernels
    wider than 3 or dilated take :class:`_DepthwiseConv2d` on inputs large enough to gain,
    whose backward is several times faster than the default there; elsewhere (CUDA,
    inference, small inputs, compiling, tracing) this is exactly ``F.conv2d``.
    """
    if (
        torch.is_grad_enabled()
        and (x.requires_grad or weight.requires_grad)
        and _fast_backward(x, weight, stride, padding, dilation)
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
    ):
        return _DepthwiseConv2d.apply(_grad_edge(x), _grad_edge(weight), stride, padding, dilation)
    return F.conv2d(x, weight, None, stride, padding, dilation, x.shape[1])


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
        stride: as in ``F.conv2d``.
        dilation: as in ``F.conv2d``.
        impl: ``"grouped"`` folds the batch into the groups of one ``F.conv2d`` (fastest
            eager path); ``"shifted"`` sums k*k shifted multiply-adds and ``"unfold"``
            multiplies the k*k patches of ``F.unfold`` (k*k times the memory of x): both
            trace with a dynamic batch, the first fusing well under ``torch.compile``, the
            second a graph k*k times smaller under ``torch.export``/ONNX. ``"auto"`` picks
            ``"unfold"`` while exporting, ``"shifted"`` while compiling and ``"grouped"``
            otherwise.

    Returns:
        B x C x ceil(H / stride) x ceil(W / stride), ``channels_last`` when ``x`` is.
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
    if kernels.dtype != x.dtype:
        check_dtype(x, kernels, layer="dynamic_depthwise_conv2d (kernels)")
    if impl == "auto":
        impl = _auto_impl()
    if impl != "shifted" and x.shape[0] == 0:  # groups = B * C = 0, unfold of nothing
        impl = "shifted"
    out = _CONVS[impl](x, kernels, stride, dilation)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)  # keep the input's layout
    return out


def identity_kernel(kernel_size: int, like: torch.Tensor) -> torch.Tensor:
    """The k x k delta kernel (1 at the centre): ``x (x) delta == x``."""
    return F.pad(like.new_ones(1, 1), (kernel_size // 2,) * 4)


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
    return F.pad(kernels, (pad, pad, pad, pad)) if pad else kernels


class DynamicConv2d(nn.Module):
    """Per-sample depthwise convolution with kernels generated from the input (Fig. 1).

    Three modules: a bottleneck 1x1 conv C -> C/r; a kernel-transform 1x1 conv C -> k*k
    whose maps are softmaxed over the H*W positions and multiplied with the bottleneck
    features into a C/r x k*k latent kernel; a kernel-decode 1x1 conv C/r -> C that reads
    out B x C x k x k depthwise kernels ``D``.

    ``forward(x)`` returns ``x + x (x) D`` (Eq. 5 with one dynamic op), B x C x H' x W'
    with H' = ceil(H / stride); ``kernels(x)`` returns ``D`` for the heterogeneous block.

    Two choices where Fig. 1 is silent keep the layer stable when stacked: the generator
    reads ``x`` divided by its per-sample RMS (:func:`rms_normalize`), so ``D`` does not
    depend on the input's scale and ``op(s * x) == s * op(x)`` for ``s > 0`` (a kernel made
    linearly from the features it is applied to makes ``x (x) D`` quadratic in ``x``, and
    stacked layers diverge); and every tap is bounded, ``D = tanh(decode(...)) / k^2``, so
    ``sum |D| < 1`` and the layer's gain is at most 2 whatever its weights, as the attention
    ops' ``1 + A`` is. The decode weights start at N(0, ``decode_init_std``^2): ``D``
    starts near zero and the layer near the identity.

    Declares the ``batched_kernels`` capability (:mod:`nos_ops.ops.registry`): mixtures
    generate the kernels of several such ops in one pass (:func:`generate_kernels`).
    Batch 0 works (an empty batch).
    """

    batched_kernels = True  # capability: bottleneck, transform, decode (Fig. 1)

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
        check_finite("decode_init_std", decode_init_std)
        if decode_init_std < 0:
            raise ValueError(f"decode_init_std={decode_init_std!r} is not valid; expected >= 0")
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
        check_features(x, self.channels, layer=self, like=self.bottleneck.weight)
        return generate_kernels([self], x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernels = self.kernels(x) + identity_kernel(self.kernel_size, x)
        return dynamic_depthwise_conv2d(x, kernels, self.stride, self.dilation, self.impl)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"dilation={self.dilation}, impl={self.impl!r}"
        )


def generate_kernels(
    ops: Sequence[DynamicConv2d], x: torch.Tensor, recompute: bool = False
) -> list[torch.Tensor]:
    """``[op.kernels(x) for op in ops]`` for dynamic convs sharing the input ``x``.

    ``x`` is divided by its per-sample RMS once for all ``ops`` (see
    :class:`DynamicConv2d`). The 1x1 convs of Fig. 1 are batched matmuls on B x C x HW, the
    bottleneck convs of all ``ops`` one matmul with their weights stacked, the
    kernel-transform convs another: small 1x1 convs cost several times less this way on
    CPU. With ``recompute`` (while autograd records) the maps in between (softmax weights
    and contexts, B x (k*k + C/r) x HW per op: more than x itself for small C) are
    recomputed in backward instead of being kept (``torch.utils.checkpoint``): less memory
    for about a quarter more time (not while ``torch.compile`` traces: dynamo cannot take
    the checkpoint there). Returns one B x C x k x k tensor per op.
    """
    if torch.compiler.is_exporting():
        return [_generate_for_export(op, x) for op in ops]
    weights = [w for op in ops for w in (op.bottleneck.weight, op.transform.weight)]
    weights += [op.decode.weight for op in ops]
    shapes = tuple((op.channels, op.kernel_size) for op in ops)
    recompute = recompute and not torch.compiler.is_compiling()  # dynamo fails on it
    if recompute and torch.is_grad_enabled() and any(t.requires_grad for t in (x, *weights)):
        return list(checkpoint(_generate, shapes, x, *weights, use_reentrant=False))
    return list(_generate(shapes, x, *weights))


def rms_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """B x C x H x W ``x`` divided by its root mean square over C x H x W, per sample.

    Scale-free: ``rms_normalize(s * x) == rms_normalize(x)`` for ``s > 0`` while the mean
    square stays well above ``eps``; computed in float32 at least, so that half-precision
    inputs neither underflow nor overflow."""
    wide = x if x.dtype in (torch.float32, torch.float64) else x.float()
    if wide is x and hasattr(F, "rms_norm"):  # torch >= 2.4: one node under export
        return F.rms_norm(x, x.shape[1:], eps=eps)
    scale = torch.rsqrt(wide.pow(2).mean(dim=(1, 2, 3), keepdim=True) + eps)
    return x * (scale if scale.dtype == x.dtype else scale.to(x.dtype))


def _generate(
    shapes: tuple[tuple[int, int], ...], x: torch.Tensor, *weights: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """:func:`generate_kernels` from the weights: bottleneck and transform of each op, then
    the decode weights; ``shapes`` holds (channels, kernel size) per op."""
    batch, count = x.shape[0], len(shapes)
    flat = rms_normalize(x).flatten(2)  # B x C x HW

    def conv1x1(stack: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        mats = [w.flatten(1) for w in stack]
        if len(mats) == 1:
            return (torch.bmm(mats[0].expand(batch, -1, -1), flat),)
        out = torch.bmm(torch.cat(mats).expand(batch, -1, -1), flat)
        return out.split([m.shape[0] for m in mats], 1)

    contexts = conv1x1(weights[0 : 2 * count : 2])  # B x C/r x HW per op
    logits = conv1x1(weights[1 : 2 * count : 2])  # B x k*k x HW per op
    decodes = weights[2 * count :]  # C x C/r (x 1 x 1) per op
    kernels = []
    for (channels, k), context, logit, decode in zip(shapes, contexts, logits, decodes):
        decode = decode.flatten(1).expand(batch, -1, -1)
        raw = torch.bmm(decode, _latent(context, logit)).view(batch, channels, k, k)
        kernels.append(_bounded(raw))
    return tuple(kernels)


def _latent(context: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """B x C/r x HW contexts pooled by the softmax over HW of B x k*k x HW logits:
    the B x C/r x k*k latent kernels."""
    return torch.bmm(context, logits.softmax(dim=-1).transpose(1, 2))


def _bounded(raw: torch.Tensor) -> torch.Tensor:
    """``tanh(raw) / k^2`` of B x C x k x k decoded kernels: every |tap| < 1 / k^2, so
    sum |D| < 1."""
    k = raw.shape[-1]
    return torch.tanh(raw) / (k * k)


def _generate_for_export(op: DynamicConv2d, x: torch.Tensor) -> torch.Tensor:
    """``op.kernels(x)`` in 12 graph nodes where :func:`_generate` traces 21 (no
    batch-expanded weights): the bottleneck and transform as ``F.conv2d``, the decode as a
    1x1 conv over the B x C/r x k x k latent. The same products, summed in another order."""
    batch, k = x.shape[0], op.kernel_size
    normalized = rms_normalize(x)
    context = F.conv2d(normalized, op.bottleneck.weight).flatten(2)  # B x C/r x HW
    logits = F.conv2d(normalized, op.transform.weight).flatten(2)  # B x k*k x HW
    latent = _latent(context, logits).view(batch, -1, k, k)  # B x C/r x k x k
    return _bounded(F.conv2d(latent, op.decode.weight))  # B x C x k x k


def _dynamic(kernel_size: int, dilation: int):
    return lambda c, s, a: DynamicConv2d(c, kernel_size, stride=s, dilation=dilation)


register_op("dynamic_conv_3x3", Family.DYNAMIC, _dynamic(3, 1))
register_op("dynamic_conv_5x5", Family.DYNAMIC, _dynamic(5, 1))
register_op("dil_dynamic_conv_3x3", Family.DYNAMIC, _dynamic(3, 2))
register_op("dil_dynamic_conv_5x5", Family.DYNAMIC, _dynamic(5, 2))
