"""The proxy search network (Sec. 4.2, Fig. 4): a supernet of :class:`SearchCell`.

8 cells by default, reduction cells at 1/3 and 2/3 of the depth, C = 16. Architecture
weights A (Eq. 11) are registered parameters, one matrix per cell type, kept apart from
the network weights so optimisers and DDP see them cleanly. The outputs of the last
cell of each of the three resolution stages are exposed for attention transfer (Eq. 10).
"""

from __future__ import annotations

import torch
from torch import nn

from ..cell import SearchCell
from ..genotype import Genotype, derive
from ..ops.helpers import check_bool, check_features, check_finite, check_positive
from ..space import SearchSpace, get_space

__all__ = ["SearchNetwork", "reduction_layers"]


def reduction_layers(layers: int) -> tuple[int, int]:
    """Indices of the two reduction cells: 1/3 and 2/3 of the depth, as in DARTS.

    ``layers`` must be >= 3: fewer cells would put both reductions on one cell or none
    between them."""
    check_positive("layers", layers)
    if layers < 3:
        raise ValueError(f"layers={layers} is not valid; expected >= 3 (two reduction cells)")
    return layers // 3, 2 * layers // 3


class SearchNetwork(nn.Module):
    """Supernet over ``space``: B x 3 x H x W -> logits B x num_classes.

    Args:
        channels: initial cell channels C (16 in the paper's proxy).
        num_classes: output classes.
        layers: cells (8 in the paper's proxy); must be >= 3.
        space: a :class:`~nos_ops.space.SearchSpace` or preset name ("nos", "darts", ...).
        stem_multiplier: the stem has ``stem_multiplier * C`` channels.
        arch_init_std: std of the normal initialisation of the architecture weights.
        partial_channels: K of PC-DARTS, the memory-lean option: edges see C/K channels.
        edge_normalization: learn PC-DARTS edge weights (``betas_*``, one per tier-1 edge);
            defaults to ``partial_channels > 1``.
    """

    def __init__(
        self,
        channels: int = 16,
        num_classes: int = 10,
        layers: int = 8,
        space: SearchSpace | str = "nos",
        stem_multiplier: int = 3,
        arch_init_std: float = 1e-3,
        partial_channels: int = 1,
        edge_normalization: bool | None = None,
    ) -> None:
        super().__init__()
        check_positive("channels", channels)
        check_positive("num_classes", num_classes)
        check_positive("layers", layers)
        if layers < 3:
            raise ValueError(f"layers={layers} is not valid; expected >= 3 (two reduction cells)")
        check_positive("stem_multiplier", stem_multiplier)
        check_finite("arch_init_std", arch_init_std)
        if arch_init_std < 0:
            raise ValueError(f"arch_init_std={arch_init_std!r} is not valid; expected >= 0")
        check_positive("partial_channels", partial_channels)
        if edge_normalization is not None:
            check_bool("edge_normalization", edge_normalization)
        self.space = get_space(space)
        self.layers = layers
        stem = stem_multiplier * channels
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem)
        )
        reductions = reduction_layers(layers)
        self.stage_ends = (reductions[0] - 1, reductions[1] - 1, layers - 1)
        prev_prev, prev, current = stem, stem, channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in reductions
            current = current * 2 if reduction else current
            cell = SearchCell(
                self.space, prev_prev, prev, current, reduction, reduction_prev, partial_channels
            )
            self.cells.append(cell)
            reduction_prev = reduction
            prev_prev, prev = prev, cell.out_channels
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(prev, num_classes)
        shape = (self.space.num_edges, self.space.num_ops)
        self.alphas_normal = nn.Parameter(arch_init_std * torch.randn(shape))
        self.alphas_reduce = nn.Parameter(arch_init_std * torch.randn(shape))
        if edge_normalization is None:
            edge_normalization = partial_channels > 1
        self.betas_normal = self.betas_reduce = None
        if edge_normalization:
            edges = self.space.tier1_edges
            self.betas_normal = nn.Parameter(arch_init_std * torch.randn(edges))
            self.betas_reduce = nn.Parameter(arch_init_std * torch.randn(edges))

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture weights: ``alphas_normal``, ``alphas_reduce`` (A of Eq. 11) and,
        with edge normalisation, ``betas_normal``, ``betas_reduce``."""
        params = [self.alphas_normal, self.alphas_reduce, self.betas_normal, self.betas_reduce]
        return [p for p in params if p is not None]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the architecture weights (Theta in Eq. 12)."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the three stage outputs (for attention transfer, Eq. 10)."""
        stem = self.stem[0]
        check_features(x, stem.in_channels, layer="SearchNetwork", like=stem.weight)
        normal = self.alphas_normal.softmax(dim=-1)
        reduce = self.alphas_reduce.softmax(dim=-1)
        s0 = s1 = self.stem(x)
        stages = []
        for i, cell in enumerate(self.cells):
            if cell.reduction:
                s0, s1 = s1, cell(s0, s1, reduce, self.betas_reduce)
            else:
                s0, s1 = s1, cell(s0, s1, normal, self.betas_normal)
            if i in self.stage_ends:
                stages.append(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return logits, stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[0]

    def genotype(self) -> Genotype:
        """The derived architecture (Sec. 3.3, "Search Outcome")."""
        return derive(
            self.alphas_normal,
            self.alphas_reduce,
            self.space,
            self.betas_normal,
            self.betas_reduce,
        )
