"""Evaluation networks built from a genotype (Sec. 4.3): CIFAR and ImageNet-mobile.

The same construction as DARTS's ``NetworkCIFAR``/``NetworkImageNet`` (stems, cell
stacking, reduction at 1/3 and 2/3 of the depth, auxiliary head after the second
reduction, drop path), with heterogeneous cells. With a DARTS genotype they are DARTS's
networks parameter for parameter.
"""

from __future__ import annotations

import torch
from torch import nn

from ..cell import Cell
from ..genotype import Genotype, get_genotype
from ..ops.helpers import check_bool, check_features, check_positive, check_probability
from .search import reduction_layers

__all__ = ["NetworkCIFAR", "NetworkImageNet", "AuxiliaryHeadCIFAR", "AuxiliaryHeadImageNet"]


class _AuxiliaryHead(nn.Module):
    """DARTS's auxiliary classifier: ReLU, 5x5 average pool, 1x1 conv to 128, 2x2 conv to
    768, linear; it expects the features after the second reduction cell."""

    def __init__(self, channels: int, num_classes: int, pool_stride: int, final_norm: bool) -> None:
        super().__init__()
        check_positive("channels", channels)
        check_positive("num_classes", num_classes)
        self.pool_stride = pool_stride
        layers = [
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=pool_stride, padding=0, count_include_pad=False),
            nn.Conv2d(channels, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
        ]
        layers += [nn.BatchNorm2d(768)] if final_norm else []
        self.features = nn.Sequential(*layers, nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_features(x, self.features[2].in_channels, layer=type(self).__name__)
        # the 5x5 pool must leave 2x2 for the 2x2 conv: 1x1 x 768 features for the linear
        s = self.pool_stride
        if not all(5 + s <= n <= 4 + 2 * s for n in x.shape[-2:]):
            name = type(self).__name__
            image = "32x32" if s == 3 else "224x224"
            raise ValueError(
                f"{name} got {x.shape[-2]}x{x.shape[-1]} features; it takes the features "
                f"after the second reduction cell of a {image} input ({5 + s}x{5 + s} to "
                f"{4 + 2 * s}x{4 + 2 * s}). Build the network with auxiliary=False for other "
                "input sizes"
            )
        return self.classifier(self.features(x).flatten(1))


class AuxiliaryHeadCIFAR(_AuxiliaryHead):
    """Auxiliary classifier on the 8x8 features after the second reduction (DARTS)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__(channels, num_classes, pool_stride=3, final_norm=True)


class AuxiliaryHeadImageNet(_AuxiliaryHead):
    """Auxiliary classifier on the 14x14 features after the second reduction (DARTS; no BN
    after the 2x2 conv, as in DARTS's code)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__(channels, num_classes, pool_stride=2, final_norm=False)


class _Network(nn.Module):
    """Cells stacked after a stem; subclasses build the stem and the head."""

    @property
    def drop_path_prob(self) -> float:
        """Drop-path probability of the cells' feature edges, in [0, 1) (set per epoch)."""
        return self._drop_path_prob

    @drop_path_prob.setter
    def drop_path_prob(self, value: float) -> None:
        check_probability("drop_path_prob", value)
        self._drop_path_prob = float(value)

    def _check_args(self, channels: int, num_classes: int, layers: int, auxiliary: bool) -> None:
        check_positive("channels", channels)
        check_positive("num_classes", num_classes)
        check_positive("layers", layers)
        check_bool("auxiliary", auxiliary)
        if layers < 3:
            raise ValueError(
                f"layers={layers} is not valid; expected >= 3 (two reduction cells at 1/3 and "
                "2/3 of the depth and a normal cell)"
            )

    def _check_input(self, x: torch.Tensor, stem: nn.Conv2d) -> None:
        check_features(x, stem.in_channels, layer=type(self).__name__, like=stem.weight)

    def _build_cells(
        self, genotype: Genotype, channels: int, layers: int, stem_out: int, reduction_prev: bool
    ) -> int:
        reductions = reduction_layers(layers)
        self.aux_layer = reductions[1]
        prev_prev, prev, current = stem_out, stem_out, channels
        self.cells = nn.ModuleList()
        aux_channels = prev
        for i in range(layers):
            reduction = i in reductions
            current = current * 2 if reduction else current
            gene = genotype.reduce if reduction else genotype.normal
            cell = Cell(gene, prev_prev, prev, current, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            prev_prev, prev = prev, cell.out_channels
            if i == self.aux_layer:
                aux_channels = prev
        return prev, aux_channels

    def _run_cells(
        self, s0: torch.Tensor, s1: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        aux_logits = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_layer and self.auxiliary_head is not None and self.training:
                aux_logits = self.auxiliary_head(s1)
        return s1, aux_logits


class NetworkCIFAR(_Network):
    """Evaluation network for 32x32 inputs: B x 3 x 32 x 32 -> logits B x num_classes.

    In training mode with ``auxiliary=True`` ``forward`` returns ``(logits, aux_logits)``;
    otherwise ``(logits, None)``. The trainer sets ``drop_path_prob`` per epoch and the
    auxiliary loss weight (0.4 in the paper).
    """

    def __init__(
        self,
        channels: int = 36,
        num_classes: int = 10,
        layers: int = 20,
        genotype: Genotype | str = "DARTS_V2",
        auxiliary: bool = True,
        stem_multiplier: int = 3,
        drop_path_prob: float = 0.0,
    ) -> None:
        super().__init__()
        self._check_args(channels, num_classes, layers, auxiliary)
        check_positive("stem_multiplier", stem_multiplier)
        genotype = get_genotype(genotype)
        self.genotype = genotype
        self.drop_path_prob = drop_path_prob
        stem = stem_multiplier * channels
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem)
        )

        out, aux = self._build_cells(genotype, channels, layers, stem, reduction_prev=False)
        self.auxiliary_head = AuxiliaryHeadCIFAR(aux, num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(out, num_classes)

    def stems(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two inputs of the first cell (both the stem's output), from checked ``x``."""
        self._check_input(x, self.stem[0])
        s = self.stem(x)
        return s, s

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out, aux_logits = self._run_cells(*self.stems(x))
        return self.classifier(self.global_pooling(out).flatten(1)), aux_logits


class NetworkImageNet(_Network):
    """ImageNet-mobile network (14 cells, 48 channels in the paper) for 224x224 inputs."""

    def __init__(
        self,
        channels: int = 48,
        num_classes: int = 1000,
        layers: int = 14,
        genotype: Genotype | str = "DARTS_V2",
        auxiliary: bool = True,
        drop_path_prob: float = 0.0,
    ) -> None:
        super().__init__()
        self._check_args(channels, num_classes, layers, auxiliary)
        if channels < 2:
            raise ValueError(f"channels={channels} is not valid; expected an integer >= 2")
        genotype = get_genotype(genotype)
        self.genotype = genotype
        self.drop_path_prob = drop_path_prob
        self.stem0 = nn.Sequential(
            nn.Conv2d(3, channels // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // 2, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        out, aux = self._build_cells(genotype, channels, layers, channels, reduction_prev=True)
        self.auxiliary_head = AuxiliaryHeadImageNet(aux, num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(out, num_classes)

    def stems(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two inputs of the first cell (stem 0's and stem 1's outputs), from checked
        ``x``."""
        self._check_input(x, self.stem0[0])
        s0 = self.stem0(x)
        return s0, self.stem1(s0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out, aux_logits = self._run_cells(*self.stems(x))
        return self.classifier(self.global_pooling(out).flatten(1)), aux_logits
