"""Heterogeneous operator cells (Sec. 3.2, Fig. 4): normal and reduction, search and fixed.

A cell has two input nodes (the outputs of the two previous cells, preprocessed to C
channels as in DARTS), ``steps`` inner nodes each computed by a heterogeneous residual
block, and an output node concatenating the inner nodes. A reduction cell halves the
resolution on the edges that leave its inputs.
"""

from __future__ import annotations

import torch
from torch import nn

from .block import HeterogeneousResidualBlock, SearchResidualBlock
from .genotype import CellGene
from .ops.feature import FactorizedReduce, ReLUConvBN
from .ops.helpers import check_bool, check_positive, check_probability
from .space import SearchSpace, get_space

__all__ = ["SearchCell", "Cell"]


def _check_cell_args(
    prev_prev: int, prev: int, channels: int, reduction: bool, reduction_prev: bool
) -> None:
    check_positive("prev_prev", prev_prev)
    check_positive("prev", prev)
    check_positive("channels", channels)
    check_bool("reduction", reduction)
    check_bool("reduction_prev", reduction_prev)
    if reduction_prev and channels % 2:
        raise ValueError(
            f"channels={channels} is not valid after a reduction cell (reduction_prev=True); "
            "expected an even number (FactorizedReduce concatenates two halves)"
        )


def _check_states(cell: nn.Module, states: list[torch.Tensor]) -> None:
    """The two preprocessed inputs must meet at one resolution (s0 is twice s1's size after
    a reduction cell, ``reduction_prev=True``)."""
    if states[0].shape[-2:] != states[1].shape[-2:]:
        twice = "twice the size of" if cell.reduction_prev else "the size of"
        raise ValueError(
            f"{type(cell).__name__}: s0 and s1 give {tuple(states[0].shape[-2:])} and "
            f"{tuple(states[1].shape[-2:])} after preprocessing; with "
            f"reduction_prev={cell.reduction_prev} s0 must be {twice} s1"
        )


def _preprocess(
    prev_prev: int, prev: int, channels: int, reduction_prev: bool, affine: bool
) -> tuple[nn.Module, nn.Module]:
    first = (
        FactorizedReduce(prev_prev, channels, affine)
        if reduction_prev
        else ReLUConvBN(prev_prev, channels, 1, 1, 0, affine)
    )
    return first, ReLUConvBN(prev, channels, 1, 1, 0, affine)


class SearchCell(nn.Module):
    """A cell whose every edge is a mixture over ``space`` (the supernet's cell).

    ``forward(s0, s1, weights)``: s0, s1 are the two previous cells' outputs (B x C_pp x
    2H x 2W after a reduction cell, else B x C_pp x H x W; and B x C_p x H x W), and
    ``weights`` the softmax architecture weights, ``space.num_edges`` x |O| (tier-1 rows in
    DARTS order, then one tier-2 row per block). ``edge_weights`` (PC-DARTS edge
    normalisation, optional) holds one raw weight per tier-1 edge, softmaxed over the
    inputs of each node. Returns B x (steps * C) x H' x W'.
    """

    def __init__(
        self,
        space: SearchSpace | str,
        prev_prev: int,
        prev: int,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
        partial_channels: int = 1,
    ) -> None:
        super().__init__()
        _check_cell_args(prev_prev, prev, channels, reduction, reduction_prev)
        self.space = get_space(space)
        self.reduction = reduction
        self.reduction_prev = reduction_prev
        self.preprocess0, self.preprocess1 = _preprocess(
            prev_prev, prev, channels, reduction_prev, affine=False
        )
        self.blocks = nn.ModuleList(
            SearchResidualBlock(channels, 2 + i, reduction, self.space, partial_channels)
            for i in range(self.space.steps)
        )
        self.out_channels = channels * self.space.steps

    def forward(
        self,
        s0: torch.Tensor,
        s1: torch.Tensor,
        weights: torch.Tensor,
        edge_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        _check_states(self, states)
        offset = 0
        tier2_row = self.space.tier1_edges
        for i, block in enumerate(self.blocks):
            rows = slice(offset, offset + len(states))
            tier2 = weights[tier2_row + i] if self.space.two_tier else None
            edges = None if edge_weights is None else edge_weights[rows].softmax(dim=-1)
            states.append(block(states, weights[rows], tier2, edges))
            offset += len(states) - 1
        return torch.cat(states[2:], dim=1)


class Cell(nn.Module):
    """A derived cell built from a :class:`~nos_ops.genotype.CellGene` (evaluation networks).

    ``forward(s0, s1, drop_prob)`` returns B x (len(gene.concat) * C) x H' x W'.
    """

    def __init__(
        self,
        gene: CellGene,
        prev_prev: int,
        prev: int,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        if not isinstance(gene, CellGene):
            raise TypeError(f"gene={gene!r} is not valid; expected a CellGene")
        _check_cell_args(prev_prev, prev, channels, reduction, reduction_prev)
        self.reduction = reduction
        self.reduction_prev = reduction_prev
        self.concat = gene.concat
        self.preprocess0, self.preprocess1 = _preprocess(
            prev_prev, prev, channels, reduction_prev, affine=True
        )
        self.blocks = nn.ModuleList(
            HeterogeneousResidualBlock(channels, block, reduction) for block in gene.blocks
        )
        self.out_channels = channels * len(gene.concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        if not (isinstance(drop_prob, (float, int)) and 0.0 <= drop_prob < 1.0):
            check_probability("drop_prob", drop_prob)  # 1.0 would zero samples, divide by 0
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        _check_states(self, states)
        for block in self.blocks:
            states.append(block(states, drop_prob))
        return torch.cat([states[i] for i in self.concat], dim=1)
