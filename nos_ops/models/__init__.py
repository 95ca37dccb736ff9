"""Networks: the search supernet, evaluation networks, ResNets and teachers."""

from .eval import AuxiliaryHeadCIFAR, AuxiliaryHeadImageNet, NetworkCIFAR, NetworkImageNet
from .resnet import BasicBlock, ResNetCIFAR, add_self_calibration, resnet18_cifar
from .search import SearchNetwork, reduction_layers
from .teachers import (
    PyramidBasicBlock,
    PyramidBottleneck,
    PyramidNet,
    create_teacher,
    pyramidnet,
)

__all__ = [
    "AuxiliaryHeadCIFAR",
    "AuxiliaryHeadImageNet",
    "BasicBlock",
    "NetworkCIFAR",
    "NetworkImageNet",
    "PyramidBasicBlock",
    "PyramidBottleneck",
    "PyramidNet",
    "ResNetCIFAR",
    "SearchNetwork",
    "add_self_calibration",
    "create_teacher",
    "pyramidnet",
    "reduction_layers",
    "resnet18_cifar",
]
