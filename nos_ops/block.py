"""The heterogeneous residual block (Sec. 3.2, Eqs. 2-9) and its calibration step.

For one inner node k, tier 1 gathers features, attention maps and dynamic kernels from
every earlier node (Eqs. 2-4) and calibrates the summed features into the surrogate node
k' (Eq. 5); tier 2 does the same once more from k' (Eqs. 6-9).

Two forms: :class:`SearchResidualBlock` relaxes every edge into a
:class:`~nos_ops.mixed.MixedHeteroOp`; :class:`HeterogeneousResidualBlock` is a derived
block built from a :class:`~nos_ops.genotype.BlockGene`.
"""

from __future__ import annotations

import torch
from torch import nn

from .genotype import BlockGene
from .hetero import HeteroOutput, NodeSums, hetero_output
from .mixed import MixedHeteroOp
from .ops.dynamic import dynamic_depthwise_conv2d, identity_kernel
from .ops.helpers import check_bool, check_int, check_positive, check_probability
from .ops.registry import Family, create_op, op_family
from .space import SearchSpace, get_space

__all__ = ["calibrate", "drop_path", "SearchResidualBlock", "HeterogeneousResidualBlock"]


def calibrate(out: HeteroOutput) -> torch.Tensor:
    """Eq. 5 / Eq. 9: ``F + F * A + F (x) D`` for the summed outputs of one node.

    All kernels were summed beforehand, and the identity is folded into them,
    ``F + F (x) D = F (x) (delta + D)``: one per-sample depthwise conv per node, however
    many dynamic ops feed it. Returns B x C x H x W.
    """
    if not isinstance(out, HeteroOutput):
        raise TypeError(f"out is a {type(out).__name__}; expected a HeteroOutput")
    attention = [] if out.attention is None else [out.attention]
    return _calibrate(out.features, attention, out.kernels)


def _calibrate(
    features: torch.Tensor | None, attention: list[torch.Tensor], kernels: torch.Tensor | None
) -> torch.Tensor:
    """:func:`calibrate` with the attention maps as separate, broadcastable terms."""
    if features is None:
        raise ValueError("calibrate needs features: a node must receive at least one feature op")
    result = features
    if kernels is not None:
        kernels = kernels + identity_kernel(kernels.shape[-1], kernels)
        result = dynamic_depthwise_conv2d(features, kernels)
    for maps in attention:
        result = torch.addcmul(result, features, maps)
    return result


def _calibrate_sums(sums: NodeSums) -> torch.Tensor:
    return _calibrate(sums.features, sums.attention, sums.kernels)


def _check_drop_prob(drop_prob: float) -> None:
    if not (isinstance(drop_prob, (float, int)) and 0.0 <= drop_prob < 1.0):
        check_probability("drop_prob", drop_prob)  # 1.0 would divide by zero: NaN


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples with probability ``drop_prob`` in [0, 1) and rescale the rest
    (FractalNet)."""
    _check_drop_prob(drop_prob)
    return _drop_path(x, drop_prob)


def _drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """:func:`drop_path` for a ``drop_prob`` checked already."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * mask / keep


class SearchResidualBlock(nn.Module):
    """Search form of the block: a mixture on every edge (Eq. 11 applied to Eqs. 2-9).

    Args:
        channels: C of every node.
        num_inputs: earlier nodes feeding this block (2 + block index).
        reduction: the cell halves the resolution; edges from its two inputs stride 2.
        space: the candidate ops.
        partial_channels: K of PC-DARTS (see :class:`~nos_ops.mixed.MixedHeteroOp`).

    ``forward(states, tier1_weights, tier2_weights, edge_weights)``: ``states`` are the
    earlier nodes, ``tier1_weights`` is num_inputs x |O|, ``tier2_weights`` |O| (None for a
    single-tier space) and ``edge_weights`` optional softmax weights over the num_inputs
    tier-1 edges (PC-DARTS edge normalisation). Returns the node, B x C x H x W.
    """

    def __init__(
        self,
        channels: int,
        num_inputs: int,
        reduction: bool,
        space: SearchSpace | str,
        partial_channels: int = 1,
    ) -> None:
        super().__init__()
        check_positive("channels", channels)
        check_int("num_inputs", num_inputs, 2)
        check_bool("reduction", reduction)
        space = get_space(space)
        self.num_ops = space.num_ops
        self.tier1 = nn.ModuleList(
            MixedHeteroOp(
                channels, 2 if reduction and j < 2 else 1, space, partial_channels=partial_channels
            )
            for j in range(num_inputs)
        )
        self.tier2 = (
            MixedHeteroOp(channels, 1, space, residual=True, partial_channels=partial_channels)
            if space.two_tier
            else None
        )

    def forward(
        self,
        states: list[torch.Tensor],
        tier1_weights: torch.Tensor,
        tier2_weights: torch.Tensor | None = None,
        edge_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        n = len(self.tier1)
        if len(states) != n:
            raise ValueError(f"states has {len(states)} tensors; this block takes {n} inputs")
        if tier1_weights.shape != (n, self.num_ops):
            raise ValueError(
                f"tier1_weights has shape {tuple(tier1_weights.shape)}; expected ({n}, "
                f"{self.num_ops})"
            )
        if (tier2_weights is None) != (self.tier2 is None):
            need = "needs" if self.tier2 is not None else "has no second tier and takes no"
            raise ValueError(f"tier2_weights: this block {need} tier2_weights")
        sums = NodeSums()
        for j, (edge, state, weights) in enumerate(zip(self.tier1, states, tier1_weights)):
            edge._add_to(sums, state, weights, None if edge_weights is None else edge_weights[j])
        node = _calibrate_sums(sums)
        if self.tier2 is not None:
            sums = NodeSums()
            self.tier2._add_to(sums, node, tier2_weights)
            node = _calibrate_sums(sums)
        return node


class HeterogeneousResidualBlock(nn.Module):
    """Derived block (Sec. 3.3, "Search Outcome") built from a :class:`BlockGene`.

    Tier 1 applies each gene edge's op to its source node and calibrates (Eq. 5); tier 2,
    when the gene has one, applies its op as a drop-in layer: a feature op transforms,
    a self-calibration op keeps the residual form ``F' + F' * A`` or ``F' (x) (delta + D)``.

    ``forward(states, drop_prob)`` returns the node, B x C x H x W. Drop path (training
    only) acts on the outputs of non-identity first-tier feature ops, as in DARTS, in
    blocks with two feature edges. A block whose other edge is a self-calibration op has
    a single feature input: dropping it would zero the node with probability ``p``
    (a DARTS node: ``p^2``), and everything built on it. Measured on the digits
    (``benchmarks/trainability.py``), such genotypes reached 31-39 % with it, 82 % without.
    """

    def __init__(self, channels: int, gene: BlockGene, reduction: bool) -> None:
        super().__init__()
        check_positive("channels", channels)
        check_bool("reduction", reduction)
        if not isinstance(gene, BlockGene):
            raise TypeError(f"gene={gene!r} is not valid; expected a BlockGene")
        self.sources = tuple(source for _, source in gene.edges)
        self.families = tuple(op_family(name) for name, _ in gene.edges)
        self.edges = nn.ModuleList(
            create_op(name, channels, 2 if reduction and source < 2 else 1, affine=True)
            for name, source in gene.edges
        )
        self.tier2 = create_op(gene.tier2, channels) if gene.tier2 else None
        features = sum(family is Family.FEATURE for family in self.families)
        self.droppable = tuple(
            features > 1 and family is Family.FEATURE and not isinstance(op, nn.Identity)
            for op, family in zip(self.edges, self.families)
        )

    def forward(self, states: list[torch.Tensor], drop_prob: float = 0.0) -> torch.Tensor:
        if len(states) <= max(self.sources):
            raise ValueError(
                f"states has {len(states)} tensors; this block reads node {max(self.sources)}"
            )
        _check_drop_prob(drop_prob)
        out = HeteroOutput()
        for op, family, source, droppable in zip(
            self.edges, self.families, self.sources, self.droppable
        ):
            part = hetero_output(op, family, states[source])
            if self.training and droppable:
                part.features = _drop_path(part.features, drop_prob)
            out = out + part
        node = calibrate(out)
        return node if self.tier2 is None else self.tier2(node)
