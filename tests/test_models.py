"""CIFAR ResNet-18 (Table 1), add_self_calibration and the PyramidNet teacher."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nos_ops.models import (
    BasicBlock,
    PyramidNet,
    ResNetCIFAR,
    add_self_calibration,
    create_teacher,
    pyramidnet,
    resnet18_cifar,
)
from nos_ops.profile import count_macs, count_params

CALIBRATION_OPS = [
    "dynamic_conv_3x3",
    "dynamic_conv_5x5",
    "dil_dynamic_conv_3x3",
    "dil_dynamic_conv_5x5",
    "spatial_attention",
    "channel_attention",
]


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(1, 3, 32, 32)


@pytest.fixture(scope="module")
def baseline(image: torch.Tensor) -> tuple[int, int]:
    model = resnet18_cifar()
    return count_params(model), count_macs(model, image)


class Bottleneck(nn.Module):
    """A torchvision-style bottleneck (conv1..conv3, bn1..bn3, downsample)."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        out = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = nn.Sequential(
            nn.Conv2d(in_channels, out, 1, stride, bias=False), nn.BatchNorm2d(out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        return torch.relu(self.bn3(self.conv3(y)) + self.downsample(x))


class TinyTorchvisionResNet(nn.Module):
    """conv1, bn1, relu, maxpool, layer1..layer4 of Bottlenecks, avgpool, fc."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(Bottleneck(8, 4), Bottleneck(16, 4))
        self.layer2 = nn.Sequential(Bottleneck(16, 8, 2))
        self.layer3 = nn.Sequential(Bottleneck(32, 8, 2))
        self.layer4 = nn.Sequential(Bottleneck(32, 16, 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def test_resnet18_matches_table1(baseline: tuple[int, int]) -> None:
    assert baseline == (11_173_962, 555_422_720)


def test_resnet18_layout_and_shapes(image: torch.Tensor) -> None:
    model = resnet18_cifar(num_classes=100)
    for name in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "linear"):
        assert hasattr(model, name)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    assert model.conv1.stride == (1, 1) and model.conv1.kernel_size == (3, 3)
    model.eval()
    assert model(image).shape == (1, 100)
    stages = model.stages(image)
    assert [tuple(s.shape[1:]) for s in stages] == [
        (64, 32, 32),
        (128, 16, 16),
        (256, 8, 8),
        (512, 4, 4),
    ]
    features = model.stage_features(image)
    assert len(features) == 3
    for f, s in zip(features, stages):
        torch.testing.assert_close(f, s)


def test_resnet_rejects_bad_blocks() -> None:
    with pytest.raises(ValueError, match="num_blocks"):
        ResNetCIFAR((2, 2, 2))


@pytest.mark.parametrize("op_name", CALIBRATION_OPS)
def test_add_self_calibration_each_op(
    op_name: str, image: torch.Tensor, baseline: tuple[int, int]
) -> None:
    model = add_self_calibration(resnet18_cifar(), op_name).eval()
    for i, channels in [(1, 64), (2, 128), (3, 256)]:
        stage = getattr(model, f"layer{i}")
        assert isinstance(stage[0][-1], BasicBlock) and stage[1].channels == channels
    assert isinstance(model.layer4[-1], BasicBlock)
    assert [f.shape[1:] for f in model.stages(image)] == [
        (64, 32, 32),
        (128, 16, 16),
        (256, 8, 8),
        (512, 4, 4),
    ]
    assert count_params(model) > baseline[0]


def test_dynamic_conv_3x3_cost_matches_table1(
    image: torch.Tensor, baseline: tuple[int, int]
) -> None:
    model = add_self_calibration(resnet18_cifar(), "dynamic_conv_3x3", stages=(1, 2, 3))
    assert count_params(model) - baseline[0] == 25_536  # Table 1: +0.03 M
    assert count_macs(model, image) - baseline[1] == 3_863_040  # Table 1: +3.85 M


@pytest.mark.parametrize("op_name", ["dynamic_conv_3x3", "spatial_attention"])
def test_add_self_calibration_torchvision_style(op_name: str) -> None:
    model = TinyTorchvisionResNet().eval()
    x = torch.randn(2, 3, 32, 32)
    before = count_params(model)
    assert add_self_calibration(model, op_name, stages=(1, 2, 3, 4)) is model
    channels = [getattr(model, f"layer{i}")[1].channels for i in range(1, 5)]
    assert channels == [16, 32, 32, 64]  # read from bn3 of each stage's last block
    assert model(x).shape == (2, 5)
    assert count_params(model) > before


def test_add_self_calibration_falls_back_to_last_conv() -> None:
    model = TinyTorchvisionResNet()
    model.layer2 = nn.Sequential(nn.Conv2d(16, 24, 3, 2, 1), nn.ReLU())
    model.layer3 = nn.Sequential(nn.Conv2d(24, 32, 3, 2, 1))
    add_self_calibration(model, "channel_attention", stages=2)
    assert model.layer2[1].channels == 24
    assert model.layer3(model.layer2(torch.randn(1, 16, 8, 8))).shape == (1, 32, 2, 2)


def test_add_self_calibration_only_chosen_stages() -> None:
    model = add_self_calibration(resnet18_cifar(), "channel_attention", stages=(4,))
    assert len(model.layer4) == 2 and model.layer4[1].channels == 512
    assert isinstance(model.layer1[1], BasicBlock)


def test_add_self_calibration_errors() -> None:
    model = resnet18_cifar()
    with pytest.raises(ValueError, match="sep_conv_3x3.*feature op.*dynamic_conv_3x3"):
        add_self_calibration(model, "sep_conv_3x3")
    with pytest.raises(KeyError, match="nope.*spatial_attention"):
        add_self_calibration(model, "nope")
    for stages in [(0,), (5,), (1, 1), (), (1.0,)]:
        with pytest.raises(ValueError, match=r"stages=.*\(1, 2, 3, 4\)"):
            add_self_calibration(model, "channel_attention", stages=stages)
    with pytest.raises(ValueError, match="layer4"):
        add_self_calibration(pyramidnet(20, 12, bottleneck=False), "channel_attention", (4,))
    assert all(isinstance(getattr(model, f"layer{i}")[-1], BasicBlock) for i in range(1, 5))


def test_pyramidnet110_teacher_shapes() -> None:
    model = create_teacher("pyramidnet110").eval()
    assert isinstance(model, PyramidNet)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 4)] == [12, 12, 12]
    assert count_params(model) == 2_528_712
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (2, 10)
        stages = model.stage_features(x)
    assert [tuple(s.shape) for s in stages] == [
        (2, 176, 32, 32),
        (2, 288, 16, 16),
        (2, 400, 8, 8),
    ]


@pytest.mark.parametrize(
    ("depth", "alpha", "bottleneck", "params"),
    [(110, 48, False, 1_772_706), (20, 12, False, None), (29, 24, True, None)],
)
def test_pyramidnet_variants(depth: int, alpha: int, bottleneck: bool, params: int | None) -> None:
    model = pyramidnet(depth, alpha, 10, bottleneck)
    if params is not None:
        assert count_params(model) == params  # Han et al.: 1.7 M
        return
    final = (16 + alpha) * (4 if bottleneck else 1)
    assert model.fc.in_features == final
    model.train()
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 10)
    assert [s.shape[-1] for s in model.stage_features(x)] == [32, 16, 8]


def test_pyramidnet_errors() -> None:
    with pytest.raises(ValueError, match="depth=111"):
        pyramidnet(111)
    with pytest.raises(ValueError, match="alpha=-1"):
        pyramidnet(110, -1)
    with pytest.raises(KeyError, match="pyramidnet110, resnet18"):
        create_teacher("wrn")


def test_resnet18_teacher() -> None:
    model = create_teacher("resnet18", num_classes=100)
    assert isinstance(model, ResNetCIFAR) and model.linear.out_features == 100
