"""``MixedHeteroOp``: one relaxed edge of the heterogeneous cell (Eq. 11).

All candidate ops of the edge share one softmax over the edge's architecture weights;
the edge returns a :class:`~nos_ops.hetero.HeteroOutput` whose features, attention and
kernels are the weighted sums of what the ops of each family produce.

Ops are known by their family and the capabilities they declare (``is_zero``,
``shares_relu``, ``batched_kernels``; see :mod:`nos_ops.ops.registry`), never by their class,
so a registered op that declares a capability takes the same fused path as the built-ins.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .hetero import HeteroOutput, NodeSums, kernel_extent
from .ops.dynamic import generate_kernels, spread_kernels
from .ops.helpers import check_bool, check_features, check_positive
from .ops.registry import Family, create_op, declares
from .space import SearchSpace, get_space

__all__ = ["MixedHeteroOp", "channel_shuffle"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` channel groups (ShuffleNet): B x C x ... -> B x C x ...."""
    if groups == 1:
        return x
    b, c = x.shape[:2]
    return x.reshape(b, groups, c // groups, *x.shape[2:]).transpose(1, 2).reshape(x.shape)


class MixedHeteroOp(nn.Module):
    """A softmax-weighted mixture of every op of ``space`` on one edge (Eq. 11).

    Args:
        channels: C, input and output channels.
        stride: 2 for the edges leaving a reduction cell's inputs, else 1.
        space: a :class:`~nos_ops.space.SearchSpace` or preset name.
        residual: self-calibration ops also pass their input on as features, weighted
            by their own weights. This is the second-tier edge (Eqs. 6-9): at a one-hot
            weight on an attention op it gives ``x + x * A``, the derived cell's residual
            form. First-tier edges (Eqs. 2-4) use ``residual=False``.
        affine: affine BatchNorm inside the ops (DARTS searches without).
        partial_channels: K of PC-DARTS: the ops see only C/K channels; the others bypass
            the edge (max-pooled on stride 2) and the result is channel-shuffled. Bypassed
            channels get no attention and identity kernels. 1 (default) is the full edge.

    ``forward(x, weights)``: x is B x C x H x W, ``weights`` the edge's softmax weights
    (``len(space.ops)``). Returns features B x C x H' x W', attention broadcastable to
    them, and kernels B x C x K x K (K the largest dynamic extent of the space).
    """

    def __init__(
        self,
        channels: int,
        stride: int = 1,
        space: SearchSpace | str = "nos",
        residual: bool = False,
        affine: bool = False,
        partial_channels: int = 1,
    ) -> None:
        super().__init__()
        check_positive("channels", channels)
        check_positive("stride", stride)
        check_bool("residual", residual)
        check_bool("affine", affine)
        check_positive("partial_channels", partial_channels)
        self.space = get_space(space)
        if residual and stride != 1:
            raise ValueError(f"stride={stride} is not valid with residual=True; expected 1")
        if partial_channels < 1 or channels % partial_channels:
            raise ValueError(
                f"partial_channels={partial_channels} is not valid; expected a divisor of "
                f"channels={channels}"
            )
        self.channels = channels
        self.residual = residual
        self.stride = stride
        self.partial_channels = partial_channels
        active = channels // partial_channels
        self.ops = nn.ModuleList(create_op(n, active, stride, affine) for n in self.space.ops)
        self.families = tuple(self.space.family(n) for n in self.space.ops)
        self._active = tuple(
            i for i, op in enumerate(self.ops) if not declares(op, "is_zero")
        )  # "none" contributes zeros: skipped, its weight still counts in the softmax
        families = tuple(enumerate(self.families))
        self._calibration = tuple(i for i, f in families if f is not Family.FEATURE)
        extents = [kernel_extent(self.ops[i]) for i, f in families if f is Family.DYNAMIC]
        self.kernel_size = max(extents, default=0)
        # DARTS's four convs start with a ReLU: ops sharing an input share it (time, memory)
        self._after_relu = tuple(
            f is Family.FEATURE and declares(op, "shares_relu")
            for op, f in zip(self.ops, self.families)
        )
        # dynamic ops with the Fig. 1 structure generate their kernels together (one matmul
        # reads x once)
        self._generated = tuple(
            i
            for i in self._active
            if self.families[i] is Family.DYNAMIC and declares(self.ops[i], "batched_kernels")
        )

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> HeteroOutput:
        self._check(x, weights)
        if self.partial_channels > 1:
            selected = x.shape[1] // self.partial_channels
            return self._partial(self._mix(x[:, :selected], weights), x[:, selected:])
        sums = NodeSums()
        self._mix_into(sums, x, weights)
        return sums.output()

    def _add_to(
        self,
        sums: NodeSums,
        x: torch.Tensor,
        weights: torch.Tensor,
        scale: torch.Tensor | None = None,
    ) -> None:
        """Add ``forward(x, weights)``, times ``scale`` if given, to ``sums`` in place: the
        block's path, which never materialises the edge's own output."""
        self._check(x, weights)
        if self.partial_channels > 1:
            out = self.forward(x, weights)
            sums.add(out if scale is None else out.scale(scale))
        else:
            self._mix_into(sums, x, weights if scale is None else weights * scale)

    def _check(self, x: torch.Tensor, weights: torch.Tensor) -> None:
        check_features(x, self.channels, layer=self)
        if not isinstance(weights, torch.Tensor):
            raise TypeError(
                f"weights must be a tensor of shape ({len(self.ops)},), got "
                f"{type(weights).__name__}"
            )
        if weights.shape != (len(self.ops),):
            raise ValueError(
                f"weights has shape {tuple(weights.shape)}; expected ({len(self.ops)},) "
                f"for the ops {self.space.ops}"
            )

    def _mix(self, x: torch.Tensor, weights: torch.Tensor) -> HeteroOutput:
        sums = NodeSums()
        self._mix_into(sums, x, weights)
        return sums.output()

    def _mix_into(self, sums: NodeSums, x: torch.Tensor, weights: torch.Tensor) -> None:
        relu = None
        generated = {}
        if self._generated:
            ops = [self.ops[i] for i in self._generated]
            # the search keeps every edge's maps for backward: recompute them instead
            generated = dict(zip(self._generated, generate_kernels(ops, x, recompute=True)))
        for i in self._active:
            op, family, weight = self.ops[i], self.families[i], weights[i]
            if family is Family.FEATURE:
                if not self._after_relu[i]:
                    sums.add_features(op(x), weight)
                    continue
                if relu is None:
                    relu = F.relu(x)
                sums.add_features(op.forward_after_relu(relu), weight)
            elif family is Family.ATTENTION:
                sums.add_attention(op.attention(x), weight)
            else:
                kernels = generated[i] if i in generated else op.kernels(x)
                sums.add_kernels(spread_kernels(kernels, op.dilation, self.kernel_size), weight)
        if self.residual and self._calibration:
            sums.add_features(x, weights[list(self._calibration)].sum())

    def _partial(self, out: HeteroOutput, bypass: torch.Tensor) -> HeteroOutput:
        if self.stride > 1:
            bypass = F.max_pool2d(bypass, 3, self.stride, 1)
        k = self.partial_channels
        features = channel_shuffle(torch.cat([out.features, bypass], dim=1), k)
        attention = kernels = None
        if out.attention is not None:
            attention = out.attention.expand(-1, out.features.shape[1], -1, -1)
            zeros = attention.new_zeros(attention.shape[0], bypass.shape[1], *attention.shape[2:])
            attention = channel_shuffle(torch.cat([attention, zeros], dim=1), k)
        if out.kernels is not None:
            zeros = out.kernels.new_zeros(bypass.shape[0], bypass.shape[1], *out.kernels.shape[2:])
            kernels = channel_shuffle(torch.cat([out.kernels, zeros], dim=1), k)
        return HeteroOutput(features, attention, kernels)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, stride={self.stride}, space={self.space.name!r}, "
            f"residual={self.residual}, "
            f"partial_channels={self.partial_channels}"
        )
