"""Teachers for attention-guided search (Sec. 3.3, Eq. 10): PyramidNet and ResNet-18.

The paper's teacher is PyramidNet-110 (bottleneck, alpha = 84) of Han et al., "Deep
Pyramidal Residual Networks" (CVPR 2017), built here as in the authors' code: widths
grow additively by ``alpha / (3 n)`` per block; bottleneck blocks are
BN-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1-BN (no ReLU before the first conv nor after
the addition); the shortcut is parameter-free (2x2 average pool on downsampling,
zero-padded channels). Every teacher exposes ``stage_features(x)``: three stage outputs
at 32, 16, 8 pixels for 32 x 32 inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.helpers import check_features
from .resnet import resnet18_cifar

__all__ = ["PyramidBasicBlock", "PyramidBottleneck", "PyramidNet", "pyramidnet", "create_teacher"]


def _pad_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Zero-pad B x C x H x W to B x ``channels`` x H x W (the parameter-free shortcut)."""
    return F.pad(x, (0, 0, 0, 0, 0, channels - x.shape[1]))


class PyramidBasicBlock(nn.Module):
    """BN-conv3x3-BN-ReLU-conv3x3-BN + shortcut: C_in x H x W -> C x H/stride x W/stride."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)
        self.shortcut = nn.AvgPool2d(2, 2, ceil_mode=True) if stride != 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.bn1(x))
        out = self.bn3(self.conv2(F.relu(self.bn2(out))))
        return out + _pad_channels(self.shortcut(x), out.shape[1])


class PyramidBottleneck(nn.Module):
    """BN-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1-BN + shortcut.

    C_in x H x W -> 4C x H/stride x W/stride; the 3x3 conv strides.
    """

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels * self.expansion, 1, bias=False)
        self.bn4 = nn.BatchNorm2d(channels * self.expansion)
        self.shortcut = nn.AvgPool2d(2, 2, ceil_mode=True) if stride != 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.bn4(self.conv3(F.relu(self.bn3(out))))
        return out + _pad_channels(self.shortcut(x), out.shape[1])


class PyramidNet(nn.Module):
    """CIFAR PyramidNet: B x 3 x H x W -> logits B x num_classes.

    3x3 stem conv 16 + BN, three stages of n blocks (n = (depth - 2) / 9 bottleneck or
    (depth - 2) / 6 basic; stages 2 and 3 stride 2), block k of 3n has
    ``round(16 + k * alpha / (3n))`` channels (times 4 for bottlenecks), then BN, ReLU,
    global average pool and ``fc``.

    Args:
        depth: 9n + 2 with bottlenecks (110: n = 12), 6n + 2 without.
        alpha: total widening over the network (the paper's teacher: 84).
        num_classes: output classes.
        bottleneck: bottleneck blocks (the paper's teacher) or basic blocks.
    """

    def __init__(
        self, depth: int = 110, alpha: float = 84, num_classes: int = 10, bottleneck: bool = True
    ) -> None:
        super().__init__()
        block = PyramidBottleneck if bottleneck else PyramidBasicBlock
        per_block = 9 if bottleneck else 6
        if depth < per_block + 2 or (depth - 2) % per_block:
            raise ValueError(
                f"depth={depth} is not valid for bottleneck={bottleneck}; expected "
                f"{per_block}n + 2 with n >= 1, e.g. 110"
            )
        if alpha < 0:
            raise ValueError(f"alpha={alpha} is not valid; expected a widening >= 0")
        n = (depth - 2) // per_block
        add_rate = alpha / (3 * n)
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_channels, width = 16, 16.0
        stages = []
        for stage_stride in (1, 2, 2):
            blocks = []
            for i in range(n):
                width += add_rate
                channels = round(width)
                blocks.append(block(in_channels, channels, stage_stride if i == 0 else 1))
                in_channels = channels * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn_final = nn.BatchNorm2d(in_channels)
        self.fc = nn.Linear(in_channels, num_classes)

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of layer1..layer3 (Eq. 10's stages): spatial H, H/2, H/4."""
        check_features(x, self.conv1.in_channels, layer=self, like=self.conv1.weight)
        out = self.bn1(self.conv1(x))
        outs = []
        for layer in (self.layer1, self.layer2, self.layer3):
            out = layer(out)
            outs.append(out)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn_final(self.stage_features(x)[-1]))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def pyramidnet(
    depth: int = 110, alpha: float = 84, num_classes: int = 10, bottleneck: bool = True
) -> PyramidNet:
    """PyramidNet for CIFAR; the defaults are the paper's teacher (Sec. 4.2).

    Measured with :mod:`nos_ops.profile` at 1 x 3 x 32 x 32, 10 classes:

    ========================  ==========  ===========
    depth, alpha, block       params      MACs
    ========================  ==========  ===========
    110, 84, bottleneck       2,528,712   506,852,896
    110, 48, basic            1,772,706   403,813,504
    164, 270, bottleneck      27,216,021  4.57 G
    ========================  ==========  ===========

    The first row is the paper's teacher (2.5 M in its Table 2); the other two match Han
    et al.'s 1.7 M and 27.0 M.
    """
    return PyramidNet(depth, alpha, num_classes, bottleneck)


_TEACHERS: dict[str, Callable[[int], nn.Module]] = {
    "pyramidnet110": lambda num_classes: pyramidnet(110, 84, num_classes, True),
    "resnet18": resnet18_cifar,
}


def create_teacher(name: str, num_classes: int = 10) -> nn.Module:
    """An untrained teacher by name: ``"pyramidnet110"`` (the paper's) or ``"resnet18"``."""
    try:
        factory = _TEACHERS[name]
    except KeyError:
        raise KeyError(
            f"unknown teacher name={name!r}; valid names: {', '.join(_TEACHERS)}"
        ) from None
    return factory(num_classes)
