"""The primitive operations of the heterogeneous search space (Sec. 3.1)."""

from .attention import ChannelAttention, SpatialAttention
from .dynamic import DynamicConv2d, dynamic_depthwise_conv2d, identity_kernel, spread_kernels
from .feature import DilConv, FactorizedReduce, Identity, ReLUConvBN, SepConv, Zero
from .registry import Family, OpSpec, create_op, get_op, list_ops, op_family, register_op

__all__ = [
    "ChannelAttention",
    "DilConv",
    "DynamicConv2d",
    "FactorizedReduce",
    "Family",
    "Identity",
    "OpSpec",
    "ReLUConvBN",
    "SepConv",
    "SpatialAttention",
    "Zero",
    "create_op",
    "dynamic_depthwise_conv2d",
    "get_op",
    "identity_kernel",
    "list_ops",
    "op_family",
    "register_op",
    "spread_kernels",
]
