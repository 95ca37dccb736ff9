"""nos_ops: Neural Operator Search (Li, Gong, Zhu, Pattern Recognition 2023) in PyTorch.

Drop-in self-calibration layers (``DynamicConv2d``, ``SpatialAttention``,
``ChannelAttention``), the heterogeneous search space built from them, and the search
and evaluation networks.
"""

from .block import HeterogeneousResidualBlock, SearchResidualBlock, calibrate
from .cell import Cell, SearchCell
from .genotype import DARTS_V1, DARTS_V2, BlockGene, CellGene, Genotype, derive, get_genotype
from .hetero import HeteroOutput
from .mixed import MixedHeteroOp
from .models import (
    NetworkCIFAR,
    NetworkImageNet,
    NOSNetCIFAR,
    NOSNetImageNet,
    SearchNetwork,
    create_model,
    list_models,
)
from .ops import (
    ChannelAttention,
    DynamicConv2d,
    Family,
    SpatialAttention,
    create_op,
    dynamic_depthwise_conv2d,
    list_ops,
    register_op,
)
from .pretrained import from_pretrained, save_pretrained
from .space import SPACES, SearchSpace, get_space

__version__ = "0.1.0"

__all__ = [
    "DARTS_V1",
    "DARTS_V2",
    "SPACES",
    "BlockGene",
    "Cell",
    "CellGene",
    "ChannelAttention",
    "DynamicConv2d",
    "Family",
    "Genotype",
    "HeteroOutput",
    "HeterogeneousResidualBlock",
    "MixedHeteroOp",
    "NOSNetCIFAR",
    "NOSNetImageNet",
    "NetworkCIFAR",
    "NetworkImageNet",
    "SearchCell",
    "SearchNetwork",
    "SearchResidualBlock",
    "SearchSpace",
    "SpatialAttention",
    "__version__",
    "calibrate",
    "create_model",
    "create_op",
    "derive",
    "dynamic_depthwise_conv2d",
    "from_pretrained",
    "get_genotype",
    "get_space",
    "list_models",
    "list_ops",
    "register_op",
    "save_pretrained",
]
