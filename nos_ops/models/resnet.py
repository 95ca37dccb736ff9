"""CIFAR ResNet-18 (Table 1 baseline) and self-calibration ops inserted into ResNets (Sec. 4.1).

``ResNetCIFAR`` is the CIFAR ResNet of kuangliu/pytorch-cifar (3x3 stem, no max-pool,
BasicBlock [2, 2, 2, 2]) with the same attribute names, so its checkpoints load:
11,173,962 parameters and 555,422,720 multiply-adds at 1 x 3 x 32 x 32 for 10 classes.
:func:`add_self_calibration` appends one self-calibration op after chosen stages of it or
of any torchvision-style ResNet, the "+ Dynamic" / "+ Attention" rows of Table 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.helpers import check_features
from ..ops.registry import Family, create_op, list_ops, op_family

__all__ = ["BasicBlock", "ResNetCIFAR", "resnet18_cifar", "add_self_calibration"]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN with a residual: B x C_in x H x W -> B x C x H/stride x W/stride."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCIFAR(nn.Module):
    """ResNet for 32 x 32 inputs: B x 3 x H x W -> logits B x num_classes.

    Stem 3x3 conv 64 (stride 1) + BN + ReLU, four stages of ``num_blocks`` BasicBlocks with
    64, 128, 256, 512 channels (stages 2-4 stride 2), global average pool, ``linear``.
    """

    def __init__(self, num_blocks: Sequence[int] = (2, 2, 2, 2), num_classes: int = 10) -> None:
        super().__init__()
        if len(num_blocks) != 4 or any(n < 1 for n in num_blocks):
            raise ValueError(
                f"num_blocks={tuple(num_blocks)} is not valid; expected 4 integers >= 1"
            )
        self.in_channels = 64
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, num_blocks[0], 1)
        self.layer2 = self._make_layer(128, num_blocks[1], 2)
        self.layer3 = self._make_layer(256, num_blocks[2], 2)
        self.layer4 = self._make_layer(512, num_blocks[3], 2)
        self.linear = nn.Linear(512 * BasicBlock.expansion, num_classes)

    def _make_layer(self, channels: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self.in_channels, channels, s))
            self.in_channels = channels * BasicBlock.expansion
        return nn.Sequential(*layers)

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of layer1..layer4: 64 x H, 128 x H/2, 256 x H/4, 512 x H/8 (spatially)."""
        check_features(x, self.conv1.in_channels, layer=self, like=self.conv1.weight)
        out = F.relu(self.bn1(self.conv1(x)))
        outs = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            out = layer(out)
            outs.append(out)
        return outs

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The three stage outputs used for attention transfer (Eq. 10): layer1..layer3.

        At 32 x 32 input: B x 64 x 32 x 32, B x 128 x 16 x 16, B x 256 x 8 x 8. Layer 4
        is not run.
        """
        check_features(x, self.conv1.in_channels, layer=self, like=self.conv1.weight)
        out = F.relu(self.bn1(self.conv1(x)))
        outs = []
        for layer in (self.layer1, self.layer2, self.layer3):
            out = layer(out)
            outs.append(out)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stages(x)[-1]
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def resnet18_cifar(num_classes: int = 10) -> ResNetCIFAR:
    """CIFAR ResNet-18 of Table 1: 11,173,962 params, 555.42 M MACs at 32 x 32 (10 classes)."""
    return ResNetCIFAR((2, 2, 2, 2), num_classes)


def _stage_channels(stage: nn.Module) -> int:
    """Output channels of a ResNet stage, read from its last block."""
    last = stage[-1] if isinstance(stage, nn.Sequential) and len(stage) else stage
    for name in ("bn3", "conv3", "bn2", "conv2"):
        module = getattr(last, name, None)
        if isinstance(module, nn.BatchNorm2d):
            return module.num_features
        if isinstance(module, nn.Conv2d):
            return module.out_channels
    channels = None
    for module in stage.modules():
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
        elif isinstance(module, nn.Conv2d):
            channels = module.out_channels
    if channels is None:
        raise ValueError(f"cannot infer the output channels of stage {type(stage).__name__}")
    return channels


def add_self_calibration(
    model: nn.Module, op_name: str, stages: Sequence[int] = (1, 2, 3)
) -> nn.Module:
    """Append the self-calibration op ``op_name`` after ResNet stages (Table 1), in place.

    Each chosen ``layer{i}`` becomes ``nn.Sequential(layer{i}, create_op(op_name, C))``,
    where C is the stage's output channels (read from the last block's ``bn3``/``conv3``,
    else ``bn2``/``conv2``, else the last BatchNorm2d/Conv2d in the stage). Works for
    :class:`ResNetCIFAR`, torchvision-style ResNets and timm's ResNets (``resnet18``,
    ``resnet50``, ``resnet26d``, ...: ``layer1``..``layer4`` of BasicBlock/Bottleneck).

    Args:
        model: the ResNet; modified in place and returned.
        op_name: a registered attention or dynamic op, e.g. ``"dynamic_conv_3x3"``.
        stages: 1-based stage numbers in 1..4, distinct (or one int).

    Returns:
        ``model``. The ops run at the stage's resolution and keep its shape, so the output
        shape is unchanged.
    """
    calibration_ops = list_ops(Family.ATTENTION) + list_ops(Family.DYNAMIC)
    try:
        family = op_family(op_name)
    except KeyError:
        raise KeyError(
            f"unknown op_name={op_name!r}; self-calibration ops: {', '.join(calibration_ops)}"
        ) from None
    if family is Family.FEATURE:
        raise ValueError(
            f"op_name={op_name!r} is a feature op; expected a self-calibration op: "
            f"{', '.join(calibration_ops)}"
        )
    stages = (stages,) if isinstance(stages, int) else tuple(stages)
    bad = [s for s in stages if not isinstance(s, int) or isinstance(s, bool) or not 1 <= s <= 4]
    if bad or not stages or len(set(stages)) != len(stages):
        raise ValueError(
            f"stages={stages!r} is not valid; expected distinct stage numbers from (1, 2, 3, 4)"
        )
    missing = [s for s in stages if not isinstance(getattr(model, f"layer{s}", None), nn.Module)]
    if missing:
        raise ValueError(
            f"stages={stages!r} is not valid for {type(model).__name__}: it has no "
            f"{', '.join(f'layer{s}' for s in missing)}"
        )
    for s in stages:
        stage = getattr(model, f"layer{s}")
        op = create_op(op_name, _stage_channels(stage))
        reference = next(stage.parameters(), None)
        if reference is not None:
            op.to(device=reference.device, dtype=reference.dtype)
        setattr(model, f"layer{s}", nn.Sequential(stage, op))
    return model
