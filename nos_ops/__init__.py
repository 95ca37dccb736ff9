"""nos_ops: Neural Operator Search (Li, Gong, Zhu, Pattern Recognition 2023) in PyTorch."""

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

__version__ = "0.1.0"

__all__ = [
    "ChannelAttention",
    "DynamicConv2d",
    "Family",
    "SpatialAttention",
    "__version__",
    "create_op",
    "dynamic_depthwise_conv2d",
    "list_ops",
    "register_op",
]
