"""The typed output of a heterogeneous edge: features, attention and kernels (Eqs. 2-4).

Ops of the three families produce three kinds of tensors. :class:`HeteroOutput` keeps
them apart, sums them field by field (Eqs. 2-4: features add, attention maps add,
dynamic kernels of one node are summed on a common dense grid, DESIGN "One kernel
path"), and :func:`hetero_output` reads what one op produces.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .ops.dynamic import spread_kernels
from .ops.registry import Family

__all__ = ["HeteroOutput", "hetero_output", "kernel_extent"]


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _add_kernels(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None or b is None:
        return _add(a, b)
    pad = (a.shape[-1] - b.shape[-1]) // 2
    if pad > 0:
        b = F.pad(b, (pad, pad, pad, pad))
    elif pad < 0:
        a = F.pad(a, (-pad, -pad, -pad, -pad))
    return a + b


@dataclass
class HeteroOutput:
    """What the edges into one node produce.

    Attributes:
        features: B x C x H x W, the sum of feature-op outputs (Eq. 2), or None.
        attention: the sum of attention maps (Eq. 3), broadcastable to ``features``
            (B x 1 x H x W, B x C x 1 x 1, or their sum B x C x H x W), or None.
        kernels: the sum of per-sample depthwise kernels (Eq. 4), B x C x K x K at
            dilation 1 with K odd (3x3 and dilated kernels are spread onto the largest
            grid), or None.
    """

    features: torch.Tensor | None = None
    attention: torch.Tensor | None = None
    kernels: torch.Tensor | None = None

    def scale(self, weight: torch.Tensor | float) -> HeteroOutput:
        """Every field times ``weight`` (edge normalisation of PC-DARTS)."""
        return HeteroOutput(*(None if t is None else weight * t for t in self._fields()))

    def _fields(self) -> tuple[torch.Tensor | None, ...]:
        return self.features, self.attention, self.kernels

    def __add__(self, other: HeteroOutput) -> HeteroOutput:
        return HeteroOutput(
            _add(self.features, other.features),
            _add(self.attention, other.attention),
            _add_kernels(self.kernels, other.kernels),
        )


class NodeSums:
    """Running weighted sums of what the edges into one node produce (Eqs. 2-4), for the
    search block's hot path; :class:`HeteroOutput` is the public, fully summed form.

    Sums are accumulated in place (one fused multiply-add per term; autograd saves no sum).
    Attention maps are summed per shape: adding a B x 1 x H x W spatial map to a B x C x 1 x 1
    channel map would materialise B x C x H x W, whereas :meth:`calibrate` applies each
    group with a broadcast multiply-add. Kernels of different sizes are padded as in
    :class:`HeteroOutput`.
    """

    def __init__(self) -> None:
        self.features: torch.Tensor | None = None
        self.attention: list[torch.Tensor] = []
        self.kernels: torch.Tensor | None = None

    def add_features(self, features: torch.Tensor, weight: torch.Tensor | float) -> None:
        self.features = _accumulate(self.features, features, weight)

    def add_attention(self, attention: torch.Tensor, weight: torch.Tensor | float) -> None:
        for i, total in enumerate(self.attention):
            if total.shape == attention.shape:
                self.attention[i] = _accumulate(total, attention, weight)
                return
        self.attention.append(attention * weight)

    def add_kernels(self, kernels: torch.Tensor, weight: torch.Tensor | float) -> None:
        if self.kernels is not None and self.kernels.shape != kernels.shape:
            self.kernels = _add_kernels(self.kernels, kernels * weight)
        else:
            self.kernels = _accumulate(self.kernels, kernels, weight)

    def add(self, out: HeteroOutput) -> None:
        """Add every field of ``out`` (weight 1)."""
        if out.features is not None:
            self.add_features(out.features, 1.0)
        if out.attention is not None:
            self.add_attention(out.attention, 1.0)
        if out.kernels is not None:
            self.add_kernels(out.kernels, 1.0)

    def output(self) -> HeteroOutput:
        """The sums as a :class:`HeteroOutput` (attention groups added together)."""
        attention = None
        for total in self.attention:
            attention = _add(attention, total)
        return HeteroOutput(self.features, attention, self.kernels)


def _accumulate(
    total: torch.Tensor | None, term: torch.Tensor, weight: torch.Tensor | float
) -> torch.Tensor:
    """``total + weight * term``, in place on ``total`` (a sum this module created)."""
    if total is None:
        return term * weight
    if isinstance(weight, torch.Tensor):
        return total.addcmul_(term, weight)
    return total.add_(term, alpha=weight)


def kernel_extent(op: nn.Module) -> int:
    """The dense size ``(k - 1) * dilation + 1`` of a dynamic op's kernels (the op contract's
    int ``kernel_size`` and ``dilation``, see :mod:`nos_ops.ops.registry`)."""
    k, d = getattr(op, "kernel_size", None), getattr(op, "dilation", None)
    if not isinstance(k, int) or not isinstance(d, int):
        raise TypeError(
            f"{type(op).__name__} has kernel_size={k!r} and dilation={d!r}; a dynamic op "
            "needs int kernel_size and dilation"
        )
    return (k - 1) * d + 1


def hetero_output(
    op: nn.Module,
    family: Family,
    x: torch.Tensor,
    weight: torch.Tensor | float = 1.0,
    extent: int | None = None,
) -> HeteroOutput:
    """What ``op`` of ``family`` produces from ``x``, scaled by ``weight``.

    Dynamic kernels are spread to ``extent`` (default: the op's own extent). ``family`` is a
    :class:`~nos_ops.ops.registry.Family` or its value (``"feature"``...).
    """
    if not isinstance(family, Family):
        family = Family(family)  # ValueError naming the value for anything else
    if family is Family.FEATURE:
        return HeteroOutput(features=weight * op(x))
    if family is Family.ATTENTION:
        return HeteroOutput(attention=weight * op.attention(x))
    kernels = spread_kernels(op.kernels(x), op.dilation, extent or kernel_extent(op))
    return HeteroOutput(kernels=weight * kernels)
