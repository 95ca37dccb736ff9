"""Networks: the search supernet, evaluation networks, ResNets and teachers."""

from ._registry import (
    NOSNetCIFAR,
    NOSNetImageNet,
    create_model,
    list_models,
    register_model,
    register_with_timm_on_import,
)
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
    "NOSNetCIFAR",
    "NOSNetImageNet",
    "NetworkCIFAR",
    "NetworkImageNet",
    "PyramidBasicBlock",
    "PyramidBottleneck",
    "PyramidNet",
    "ResNetCIFAR",
    "SearchNetwork",
    "add_self_calibration",
    "create_model",
    "create_teacher",
    "list_models",
    "pyramidnet",
    "reduction_layers",
    "register_model",
    "resnet18_cifar",
]

# timm sees nos_cifar / nos_imagenet as soon as both are imported (timm is never imported here)
register_with_timm_on_import()
