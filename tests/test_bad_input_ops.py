"""Bad input to the ops, the registry and the mixtures: every case raises a clear error.

Each case asserts the exception type and that the message names the argument (or the
layer) and the value. Batch 0 is part of the contract: feature ops and mixtures of them
return an empty batch.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nos_ops.mixed import MixedHeteroOp
from nos_ops.ops import ChannelAttention, DynamicConv2d, SpatialAttention, registry
from nos_ops.ops.dynamic import dynamic_depthwise_conv2d
from nos_ops.ops.feature import DilConv, FactorizedReduce, ReLUConvBN, SepConv, Zero
from nos_ops.ops.registry import create_op, get_op, list_ops, register_op, unregister_op

pytestmark = pytest.mark.usefixtures("single_thread")

BUILTIN = [
    "none",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "avg_pool_3x3",
    "max_pool_3x3",
    "identity",
    "spatial_attention",
    "channel_attention",
    "dynamic_conv_3x3",
    "dynamic_conv_5x5",
    "dil_dynamic_conv_3x3",
    "dil_dynamic_conv_5x5",
]
# ops whose layers know their channels (pools in the affine form and identity do not)
WITH_CHANNELS = [
    ("sep_conv_3x3", 1, True),
    ("sep_conv_5x5", 2, True),
    ("dil_conv_3x3", 1, True),
    ("dil_conv_5x5", 2, False),
    ("avg_pool_3x3", 1, False),
    ("max_pool_3x3", 2, False),
    ("identity", 2, True),
]


@pytest.fixture
def scratch_registry(monkeypatch):
    """A private copy of the registry, so registrations made by a test do not leak."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


# --------------------------------------------------------------------------- create_op

BAD_CREATE = [
    ({"channels": 0}, ValueError, r"channels=0 is not valid"),
    ({"channels": -4}, ValueError, r"channels=-4 is not valid"),
    ({"channels": 2.5}, ValueError, r"channels=2.5 is not valid"),
    ({"channels": True}, ValueError, r"channels=True is not valid"),
    ({"channels": "8"}, ValueError, r"channels='8' is not valid"),
    ({"stride": 0}, ValueError, r"stride=0 is not valid"),
    ({"stride": 1.5}, ValueError, r"stride=1.5 is not valid"),
    ({"affine": "no"}, TypeError, r"affine='no' is not valid; expected True or False"),
]


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("change, error, match", BAD_CREATE, ids=lambda v: repr(v)[:20])
def test_create_op_rejects_bad_arguments(name, change, error, match):
    args = {"channels": 4, "stride": 1, "affine": True} | change
    with pytest.raises(error, match=match):
        create_op(name, **args)


def test_identity_stride_three_is_refused():
    with pytest.raises(ValueError, match=r"stride=3 is not valid for identity; expected 1 or 2"):
        create_op("identity", 4, 3)


# ----------------------------------------------------------------------- constructors

CONSTRUCTORS = {
    "sep in_channels 0": (lambda: SepConv(0, 8, 3, 1, 1), ValueError, "in_channels=0"),
    "sep out_channels -1": (lambda: SepConv(8, -1, 3, 1, 1), ValueError, "out_channels=-1"),
    "sep even kernel": (lambda: SepConv(8, 8, 4, 1, 1), ValueError, "kernel_size=4.*odd"),
    "sep kernel 0": (lambda: SepConv(8, 8, 0, 1, 0), ValueError, "kernel_size=0"),
    "sep float kernel": (lambda: SepConv(8, 8, 3.0, 1, 1), ValueError, "kernel_size=3.0"),
    "sep stride 0": (lambda: SepConv(8, 8, 3, 0, 1), ValueError, "stride=0"),
    "sep padding -1": (lambda: SepConv(8, 8, 3, 1, -1), ValueError, "padding=-1"),
    "sep padding not same": (lambda: SepConv(8, 8, 3, 1, 2), ValueError, "padding=2.*expected 1"),
    "sep affine str": (lambda: SepConv(8, 8, 3, 1, 1, "yes"), TypeError, "affine='yes'"),
    "dil dilation 0": (lambda: DilConv(8, 8, 3, 1, 0, 0), ValueError, "dilation=0"),
    "dil dilation 1.5": (lambda: DilConv(8, 8, 3, 1, 1, 1.5), ValueError, "dilation=1.5"),
    "dil padding not same": (lambda: DilConv(8, 8, 3, 1, 1, 2), ValueError, "padding=1.*expect"),
    "dil even kernel": (lambda: DilConv(8, 8, 2, 1, 1, 2), ValueError, "kernel_size=2"),
    "dil stride -2": (lambda: DilConv(8, 8, 3, -2, 2, 2), ValueError, "stride=-2"),
    "dil channels bool": (lambda: DilConv(True, 8, 3, 1, 2, 2), ValueError, "in_channels=True"),
    "rcb in 0": (lambda: ReLUConvBN(0, 8, 1), ValueError, "in_channels=0"),
    "rcb out 0": (lambda: ReLUConvBN(8, 0, 1), ValueError, "out_channels=0"),
    "rcb kernel 0": (lambda: ReLUConvBN(8, 8, 0), ValueError, "kernel_size=0"),
    "rcb stride 0": (lambda: ReLUConvBN(8, 8, 1, 0), ValueError, "stride=0"),
    "rcb padding -1": (lambda: ReLUConvBN(8, 8, 1, 1, -1), ValueError, "padding=-1"),
    "rcb affine 1": (lambda: ReLUConvBN(8, 8, 1, 1, 0, 1), TypeError, "affine=1"),
    "fr in 0": (lambda: FactorizedReduce(0, 8), ValueError, "in_channels=0"),
    "fr out odd": (lambda: FactorizedReduce(8, 7), ValueError, "out_channels=7 must be even"),
    "fr out 0": (lambda: FactorizedReduce(8, 0), ValueError, "out_channels=0"),
    "fr affine None": (lambda: FactorizedReduce(8, 8, None), TypeError, "affine=None"),
    "zero stride 0": (lambda: Zero(0), ValueError, "stride=0"),
    "zero stride bool": (lambda: Zero(True), ValueError, "stride=True"),
    "zero stride float": (lambda: Zero(2.0), ValueError, "stride=2.0"),
}


@pytest.mark.parametrize("case", sorted(CONSTRUCTORS))
def test_constructors_reject_bad_arguments(case):
    build, error, match = CONSTRUCTORS[case]
    with pytest.raises(error, match=match):
        build()


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize("name, stride, affine", WITH_CHANNELS)
@pytest.mark.parametrize("given", [1, 4, 16])
def test_forward_rejects_wrong_channels(name, stride, affine, given):
    """An 8-channel op given other channel counts raises (it used to return 8 channels)."""
    op = create_op(name, 8, stride, affine)
    with pytest.raises(ValueError, match=rf"x has {given} channels .*built for channels=8"):
        op(torch.randn(2, given, 6, 6))


@pytest.mark.parametrize("name", BUILTIN[:7])  # identity passes its input through as it is
@pytest.mark.parametrize("shape", [(8, 6, 6), (1, 1, 8, 6, 6), (8,)])
def test_forward_rejects_wrong_rank(name, shape):
    op = create_op(name, 8, 1, False)
    with pytest.raises(ValueError, match=r"x must be a 4-d tensor B x C x H x W, got shape"):
        op(torch.randn(shape))


def test_forward_three_d_input_suggests_unsqueeze():
    with pytest.raises(ValueError, match=r"SepConv.*x.unsqueeze\(0\)"):
        create_op("sep_conv_3x3", 8)(torch.randn(8, 6, 6))


@pytest.mark.parametrize(
    "name, affine",
    [
        ("sep_conv_3x3", True),
        ("sep_conv_5x5", False),
        ("dil_conv_3x3", True),
        ("dil_conv_5x5", False),
        ("avg_pool_3x3", False),
        ("max_pool_3x3", False),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_forward_rejects_a_dtype_other_than_the_parameters(name, affine, dtype):
    op = create_op(name, 8, 1, affine)
    with pytest.raises(TypeError, match=r"float32 parameters but x is .*double\(\).*autocast"):
        op(torch.randn(2, 8, 6, 6).to(dtype))


@pytest.mark.parametrize("name", ["sep_conv_3x3", "dil_conv_5x5"])
def test_forward_rejects_integer_images(name):
    with pytest.raises(TypeError, match=r"takes floating-point inputs but x is torch.uint8"):
        create_op(name, 3)(torch.zeros(1, 3, 6, 6, dtype=torch.uint8))


def test_factorized_reduce_rejects_wrong_channels_and_dtype():
    op = create_op("identity", 8, 2)
    with pytest.raises(ValueError, match="FactorizedReduce.*x has 4 channels"):
        op(torch.randn(1, 4, 6, 6))
    with pytest.raises(TypeError, match="FactorizedReduce.*float64"):
        op(torch.randn(1, 8, 6, 6, dtype=torch.float64))


def test_forward_rejects_non_tensors():
    with pytest.raises(TypeError, match=r"x must be a tensor B x C x H x W, got list"):
        create_op("sep_conv_3x3", 4)([[1.0]])


@pytest.mark.parametrize("name", ["sep_conv_3x3", "dil_conv_3x3", "identity", "max_pool_3x3"])
@pytest.mark.parametrize("stride", [1, 2])
def test_autocast_keeps_working(name, stride):
    """Under autocast float32 weights take bfloat16 inputs: the dtype check stands aside."""
    op = create_op(name, 8, stride, True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = op(torch.randn(2, 8, 6, 6).bfloat16())
    assert y.shape == (2, 8, 6 // stride, 6 // stride)


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("train", [True, False])
def test_every_op_takes_batch_zero(name, stride, train):
    """Batch 0 works for every built-in op: an empty batch of the right shape."""
    op = create_op(name, 8, stride, False).train(train)
    y = op(torch.randn(0, 8, 6, 6))
    assert y.shape == (0, 8, 6 // stride, 6 // stride)


# ---------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name", ["", " ", "my op", "tab\tname", "trailing ", None, 3, b"x"])
def test_register_op_rejects_bad_names(scratch_registry, name):
    with pytest.raises(ValueError, match=r"op name=.* is not valid; expected a non-empty string"):
        register_op(name, "feature", lambda c, s, a: nn.Identity())


@pytest.mark.parametrize("family", ["features", "", 3, None, "Attention"])
def test_register_op_rejects_bad_families(scratch_registry, family):
    with pytest.raises(ValueError, match=r"family=.* is not valid; expected one of"):
        register_op("fam", family, lambda c, s, a: nn.Identity())


@pytest.mark.parametrize("factory", [3, "sep_conv_3x3", [nn.Identity]])
def test_register_op_rejects_non_callable_factories(scratch_registry, factory):
    with pytest.raises(TypeError, match=r"factory=.* for op name='bad' is not callable"):
        register_op("bad", "feature", factory)


def test_register_op_rejects_a_non_bool_overwrite(scratch_registry):
    with pytest.raises(TypeError, match="overwrite='yes'"):
        register_op("ow", "feature", lambda c, s, a: nn.Identity(), overwrite="yes")


class _NotAModule:
    def __init__(self, *args) -> None:
        pass


@pytest.mark.parametrize(
    "family, cls, match",
    [
        ("attention", nn.Identity, r"attention op but Identity has no attention\(x\)"),
        ("dynamic", nn.Identity, r"dynamic op but Identity has no kernels\(x\)"),
        ("feature", _NotAModule, r"_NotAModule for op name='cls' is not an nn.Module"),
    ],
)
def test_register_op_checks_class_factories_now(scratch_registry, family, cls, match):
    with pytest.raises(TypeError, match=match):
        register_op("cls", family, cls)
    assert "cls" not in list_ops()


class _Kernels(nn.Module):
    def __init__(self, kernel_size=3, dilation=1) -> None:
        super().__init__()
        self.kernel_size, self.dilation = kernel_size, dilation

    def kernels(self, x):
        return x.new_zeros(x.shape[0], x.shape[1], 3, 3)


class _Declares(nn.Identity):
    def __init__(self, **capabilities) -> None:
        super().__init__()
        for key, value in capabilities.items():
            setattr(self, key, value)


PRODUCTS = {
    "attention without attention()": (
        "attention",
        lambda c, s, a: nn.Identity(),
        r"'gate' \(attention\) built a Identity without an",
    ),
    "dynamic without kernels()": ("dynamic", lambda c, s, a: nn.Identity(), r"kernels\(x\)"),
    "dynamic kernel_size 2.5": ("dynamic", lambda c, s, a: _Kernels(2.5), r"kernel_size=2.5"),
    "dynamic dilation 0": ("dynamic", lambda c, s, a: _Kernels(3, 0), r"dilation=0"),
    "dynamic dilation missing": ("dynamic", lambda c, s, a: _Kernels(3, None), r"dilation=None"),
    "returns None": ("feature", lambda c, s, a: None, r"returned NoneType; expected an nn.Module"),
    "returns a tensor": ("feature", lambda c, s, a: torch.zeros(1), r"returned Tensor"),
    "feature declares batched_kernels": (
        "feature",
        lambda c, s, a: _Declares(batched_kernels=True),
        r"batched_kernels=True, a capability of dynamic ops",
    ),
    "shares_relu without forward_after_relu": (
        "feature",
        lambda c, s, a: _Declares(shares_relu=True),
        r"shares_relu=True without \['forward_after_relu'\]",
    ),
    "attention declares is_zero": (
        "attention",
        lambda c, s, a: type("G", (_Declares,), {"attention": lambda self, x: x})(is_zero=True),
        r"is_zero=True, a capability of feature ops",
    ),
}


def _real_devices_only(factory):
    """``factory``, failing on the meta device: the registration sample is skipped."""

    def build(c, s, a):
        if torch.empty(0).is_meta:
            raise RuntimeError("this factory builds on real devices only")
        return factory(c, s, a)

    return build


@pytest.mark.parametrize("case", sorted(PRODUCTS))
def test_register_op_checks_a_sample_product(scratch_registry, case):
    family, factory, match = PRODUCTS[case]
    with pytest.raises(TypeError, match=match):
        register_op("gate", family, factory)
    assert "gate" not in list_ops()


@pytest.mark.parametrize("case", sorted(PRODUCTS))
def test_create_op_checks_what_the_factory_built(scratch_registry, case):
    family, factory, match = PRODUCTS[case]
    register_op("gate", family, _real_devices_only(factory))
    with pytest.raises(TypeError, match=match):
        create_op("gate", 4)
    with pytest.raises(TypeError, match=match):  # a mixture over it too
        from nos_ops.space import SearchSpace

        MixedHeteroOp(4, 1, SearchSpace("s", ("identity", "gate")))


@pytest.mark.parametrize("lookup", [get_op, unregister_op, lambda n: create_op(n, 4)])
@pytest.mark.parametrize("name", ["sep_conv_9x9", "", "skip_connect"])
def test_unknown_names_list_the_registered_ops(scratch_registry, lookup, name):
    with pytest.raises(
        KeyError, match=rf"unknown op name={name!r}; registered ops: .*sep_conv_3x3"
    ):
        lookup(name)


# ---------------------------------------------------------------------------- mixtures

MIXED = {
    "channels 0": ({"channels": 0}, ValueError, "channels=0"),
    "channels float": ({"channels": 8.0}, ValueError, "channels=8.0"),
    "stride 0": ({"stride": 0}, ValueError, "stride=0"),
    "residual str": ({"residual": "yes"}, TypeError, "residual='yes'"),
    "residual with stride": ({"residual": True, "stride": 2}, ValueError, "stride=2 .*residual"),
    "affine int": ({"affine": 0}, TypeError, "affine=0"),
    "partial 0": ({"partial_channels": 0}, ValueError, "partial_channels=0"),
    "partial not a divisor": ({"partial_channels": 3}, ValueError, "partial_channels=3 .*divisor"),
    "unknown space": ({"space": "nas"}, KeyError, "unknown space='nas'"),
    "space int": ({"space": 3}, TypeError, "space=3 is not valid"),
}


@pytest.mark.parametrize("case", sorted(MIXED))
def test_mixed_op_rejects_bad_arguments(case):
    change, error, match = MIXED[case]
    args = {"channels": 8, "stride": 1, "space": "darts"} | change
    with pytest.raises(error, match=match):
        MixedHeteroOp(**args)


def test_mixed_op_forward_checks():
    edge = MixedHeteroOp(8, 1, "darts")
    x = torch.randn(2, 8, 5, 5)
    with pytest.raises(ValueError, match=r"MixedHeteroOp.*x has 4 channels"):
        edge(torch.randn(2, 4, 5, 5), torch.rand(8))
    with pytest.raises(ValueError, match=r"x must be a 4-d tensor"):
        edge(torch.randn(8, 5, 5), torch.rand(8))
    with pytest.raises(TypeError, match=r"weights must be a tensor of shape \(8,\), got list"):
        edge(x, [0.125] * 8)
    with pytest.raises(ValueError, match=r"weights has shape \(7,\); expected \(8,\)"):
        edge(x, torch.rand(7))


@pytest.mark.parametrize("stride", [1, 2])
def test_darts_mixture_takes_batch_zero(stride):
    edge = MixedHeteroOp(8, stride, "darts")
    out = edge(torch.randn(0, 8, 6, 6), torch.rand(8).softmax(-1))
    assert out.features.shape == (0, 8, 6 // stride, 6 // stride)


# ------------------------------------------------------------ self-calibration ops

CALIBRATION = BUILTIN[8:]


@pytest.mark.parametrize("name", CALIBRATION)
@pytest.mark.parametrize("given", [1, 4, 16])
def test_self_calibration_ops_reject_wrong_channels(name, given):
    op = create_op(name, 8)
    layer = type(op).__name__
    with pytest.raises(ValueError, match=rf"{layer}\(8, .*x has {given} channels"):
        op(torch.randn(2, given, 6, 6))
    produce = op.attention if hasattr(op, "attention") else op.kernels
    with pytest.raises(ValueError, match=rf"x has {given} channels .*channels=8"):
        produce(torch.randn(2, given, 6, 6))


@pytest.mark.parametrize("name", CALIBRATION)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.int64])
def test_self_calibration_ops_reject_other_dtypes(name, dtype):
    op = create_op(name, 8)
    with pytest.raises(TypeError, match=rf"{type(op).__name__}\(8, .*{dtype}"):
        op(torch.randn(2, 8, 6, 6).to(dtype))


@pytest.mark.parametrize("name", CALIBRATION)
def test_self_calibration_ops_under_autocast(name):
    op = create_op(name, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert op(torch.randn(2, 8, 6, 6)).shape == (2, 8, 6, 6)
        assert op(torch.randn(2, 8, 6, 6).bfloat16()).shape == (2, 8, 6, 6)


def test_self_calibration_ops_run_in_float64_once_converted():
    for name in CALIBRATION:
        op = create_op(name, 8).double()
        assert op(torch.randn(2, 8, 6, 6, dtype=torch.float64)).dtype == torch.float64


SELF_CALIBRATION = {
    "dynamic channels 0": (lambda: DynamicConv2d(0), ValueError, "channels=0"),
    "dynamic kernel 4": (lambda: DynamicConv2d(8, 4), ValueError, "kernel_size=4"),
    "dynamic dilation 0": (lambda: DynamicConv2d(8, dilation=0), ValueError, "dilation=0"),
    "dynamic reduction 0": (lambda: DynamicConv2d(8, reduction=0), ValueError, "reduction=0"),
    "dynamic impl": (lambda: DynamicConv2d(8, impl="loop"), ValueError, "impl='loop'"),
    "dynamic init nan": (
        lambda: DynamicConv2d(8, decode_init_std=float("nan")),
        ValueError,
        "decode_init_std=nan",
    ),
    "dynamic init -1": (
        lambda: DynamicConv2d(8, decode_init_std=-1.0),
        ValueError,
        "decode_init_std=-1.0",
    ),
    "spatial channels 2.0": (lambda: SpatialAttention(2.0), ValueError, "channels=2.0"),
    "spatial kernel 2": (lambda: SpatialAttention(8, 2), ValueError, "kernel_size=2"),
    "spatial stride 0": (lambda: SpatialAttention(8, stride=0), ValueError, "stride=0"),
    "spatial reduction -1": (lambda: SpatialAttention(8, reduction=-1), ValueError, "reduction"),
    "spatial act str": (lambda: SpatialAttention(8, act_layer="relu"), TypeError, "act_layer="),
    "channel gate None": (lambda: ChannelAttention(8, gate_layer=None), TypeError, "gate_layer"),
    "channel stride 1.0": (lambda: ChannelAttention(8, stride=1.0), ValueError, "stride=1.0"),
    "channel reduction 0": (lambda: ChannelAttention(8, reduction=0), ValueError, "reduction=0"),
}


@pytest.mark.parametrize("case", sorted(SELF_CALIBRATION))
def test_self_calibration_constructors(case):
    build, error, match = SELF_CALIBRATION[case]
    with pytest.raises(error, match=match):
        build()


def test_dynamic_depthwise_conv2d_checks_kernels():
    x = torch.randn(2, 4, 6, 6)
    with pytest.raises(TypeError, match=r"kernels\) has torch.float64 parameters but x is"):
        dynamic_depthwise_conv2d(x, torch.randn(2, 4, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"kernels \(2, 3, 3, 3\) must match x"):
        dynamic_depthwise_conv2d(x, torch.randn(2, 3, 3, 3))
    with pytest.raises(ValueError, match=r"square with an odd size"):
        dynamic_depthwise_conv2d(x, torch.randn(2, 4, 2, 2))
    with pytest.raises(ValueError, match=r"stride=0"):
        dynamic_depthwise_conv2d(x, torch.randn(2, 4, 3, 3), stride=0)
    empty = dynamic_depthwise_conv2d(x[:0], torch.randn(0, 4, 3, 3), stride=2)
    assert empty.shape == (0, 4, 3, 3)


@pytest.mark.parametrize(
    "factory, match",
    [
        (lambda c: nn.Identity(), "too many positional arguments"),
        (lambda c, s, a, extra: nn.Identity(), "missing a required argument: 'extra'"),
        (nn.ReLU, "too many positional arguments"),
    ],
)
def test_register_op_checks_the_factory_signature(scratch_registry, factory, match):
    with pytest.raises(TypeError, match=rf"op name='sig' does not take \(channels, .*{match}"):
        register_op("sig", "feature", factory)
