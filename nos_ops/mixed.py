"""``MixedHeteroOp``: one relaxed edge of the heterogeneous cell (Eq. 11).

All candidate ops of the edge share one softmax over the edge's architecture weights;
the edge returns a :class:`~nos_ops.hetero.HeteroOutput` whose features, attention and
kernels are the weighted sums of what the ops of each family produce.
"""

from __future__ import annotations

import torch
from torch import nn

from .hetero import HeteroOutput, hetero_output, kernel_extent
from .ops.feature import Zero
from .ops.registry import Family, create_op
from .space import SearchSpace, get_space

__all__ = ["MixedHeteroOp"]


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
    ) -> None:
        super().__init__()
        self.space = get_space(space)
        if residual and stride != 1:
            raise ValueError(f"stride={stride} is not valid with residual=True; expected 1")
        self.residual = residual
        self.ops = nn.ModuleList(create_op(n, channels, stride, affine) for n in self.space.ops)
        self.families = tuple(self.space.family(n) for n in self.space.ops)
        self._active = tuple(
            i for i, op in enumerate(self.ops) if not isinstance(op, Zero)
        )  # "none" contributes zeros: skipped, its weight still counts in the softmax
        families = tuple(enumerate(self.families))
        self._calibration = tuple(i for i, f in families if f is not Family.FEATURE)
        extents = [kernel_extent(self.ops[i]) for i, f in families if f is Family.DYNAMIC]
        self.kernel_size = max(extents, default=0)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> HeteroOutput:
        if weights.shape != (len(self.ops),):
            raise ValueError(
                f"weights has shape {tuple(weights.shape)}; expected ({len(self.ops)},) "
                f"for the ops {self.space.ops}"
            )
        out = HeteroOutput()
        for i in self._active:
            op, family = self.ops[i], self.families[i]
            out = out + hetero_output(op, family, x, weights[i], self.kernel_size)
        if self.residual and self._calibration:
            out = out + HeteroOutput(features=weights[list(self._calibration)].sum() * x)
        return out

    def extra_repr(self) -> str:
        return f"space={self.space.name!r}, residual={self.residual}"
