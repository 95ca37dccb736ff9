"""Networks: the search supernet, evaluation networks, ResNets and teachers."""

from .eval import AuxiliaryHeadCIFAR, AuxiliaryHeadImageNet, NetworkCIFAR, NetworkImageNet
from .search import SearchNetwork, reduction_layers

__all__ = [
    "AuxiliaryHeadCIFAR",
    "AuxiliaryHeadImageNet",
    "NetworkCIFAR",
    "NetworkImageNet",
    "SearchNetwork",
    "reduction_layers",
]
