"""Op registry (Sec. 3.1) and the contract every registered op honours.

Every name in ``list_ops()`` is built through ``create_op`` with ``affine`` True and False and
stride 1 and 2, and must map B x C x H x W to B x C x ceil(H/stride) x ceil(W/stride), stay
finite, give every parameter a gradient, and pass a float64 ``gradcheck``.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call

from nos_ops.ops import registry
from nos_ops.ops.registry import (
    Family,
    OpSpec,
    create_op,
    get_op,
    list_ops,
    op_family,
    register_op,
)

ALL_OPS = list_ops()
BUILTIN_OPS = {
    "none": Family.FEATURE,
    "sep_conv_3x3": Family.FEATURE,
    "sep_conv_5x5": Family.FEATURE,
    "dil_conv_3x3": Family.FEATURE,
    "dil_conv_5x5": Family.FEATURE,
    "avg_pool_3x3": Family.FEATURE,
    "max_pool_3x3": Family.FEATURE,
    "identity": Family.FEATURE,
    "spatial_attention": Family.ATTENTION,
    "channel_attention": Family.ATTENTION,
    "dynamic_conv_3x3": Family.DYNAMIC,
    "dynamic_conv_5x5": Family.DYNAMIC,
    "dil_dynamic_conv_3x3": Family.DYNAMIC,
    "dil_dynamic_conv_5x5": Family.DYNAMIC,
}

ODD_SIZES = st.integers(1, 5).map(lambda n: 2 * n + 1)  # 3, 5, ..., 11
EVEN_CHANNELS = st.integers(1, 8).map(lambda n: 2 * n)  # 2, 4, ..., 16 (FactorizedReduce)
SEEDS = st.integers(0, 2**31 - 1)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def scratch_registry(monkeypatch):
    """A private copy of the registry, so registrations made by a test do not leak."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def spaced_input(*shape: int) -> torch.Tensor:
    """float64 input with distinct values spaced far beyond gradcheck's eps and none near 0.

    Avoids ties inside max-pool windows and inputs sitting on a ReLU kink, where the ops are
    only piecewise differentiable and finite differences would disagree with autograd.
    """
    n = math.prod(shape)
    values = (torch.randperm(n, dtype=torch.float64) - (n - 1) / 2) * (4.0 / n)
    return values.reshape(shape)


# --------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("name", ALL_OPS)
@settings(max_examples=10)
@given(
    batch=st.integers(1, 3),
    channels=EVEN_CHANNELS,
    height=ODD_SIZES,
    width=ODD_SIZES,
    seed=SEEDS,
)
def test_op_shape_finite_and_gradients(name, affine, stride, batch, channels, height, width, seed):
    torch.manual_seed(seed)
    op = create_op(name, channels, stride, affine)
    assert isinstance(op, nn.Module)
    op.train()
    x = torch.randn(batch, channels, height, width, requires_grad=True)
    y = op(x)
    assert y.shape == (batch, channels, math.ceil(height / stride), math.ceil(width / stride))
    assert y.dtype == x.dtype
    assert torch.isfinite(y).all()
    # A random projection: a plain sum would give BatchNorm outputs an exactly-zero gradient.
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for pname, p in op.named_parameters():
        assert p.grad is not None, f"{name}: parameter {pname} received no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: parameter {pname} has a non-finite grad"


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("name", ALL_OPS)
def test_op_gradcheck_float64(name, affine, stride):
    """Input and parameter gradients, BatchNorm in train mode (batch 2, float64)."""
    op = create_op(name, 2, stride, affine).double().train()
    names = [n for n, _ in op.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for _, p in op.named_parameters())
    x = spaced_input(2, 2, 5, 3).requires_grad_()

    def fn(x, *params):
        return functional_call(op, dict(zip(names, params, strict=True)), (x,))

    assert torch.autograd.gradcheck(fn, (x, *params), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("name", ALL_OPS)
def test_op_interface_matches_family(name):
    op = create_op(name, 4, 1, True)
    family = op_family(name)
    x = torch.randn(2, 4, 5, 5)
    if family is Family.ATTENTION:
        a = op.attention(x)
        assert a.shape in {(2, 1, 5, 5), (2, 4, 1, 1)}
    elif family is Family.DYNAMIC:
        d = op.kernels(x)
        assert d.shape[:2] == (2, 4) and d.shape[-1] == d.shape[-2]
        assert isinstance(op.dilation, int) and op.dilation >= 1
    else:
        assert family is Family.FEATURE
        assert not hasattr(op, "attention") and not hasattr(op, "kernels")


# --------------------------------------------------------------------------- the registry


def test_builtin_ops_and_families():
    for name, family in BUILTIN_OPS.items():
        assert name in ALL_OPS
        assert op_family(name) is family
        spec = get_op(name)
        assert isinstance(spec, OpSpec) and spec.name == name and spec.family is family
    by_family = [n for f in Family for n in list_ops(f)]
    assert sorted(by_family) == sorted(ALL_OPS)  # the families partition the registry
    assert list_ops("attention") == list_ops(Family.ATTENTION)
    assert set(list_ops("attention")) == {"spatial_attention", "channel_attention"}


@pytest.mark.parametrize("lookup", [get_op, op_family, lambda n: create_op(n, 4)])
def test_unknown_name_raises_key_error_listing_valid_names(lookup):
    with pytest.raises(KeyError, match=r"unknown op name='sep_conv_9x9'; registered ops: ") as info:
        lookup("sep_conv_9x9")
    assert all(name in str(info.value) for name in ALL_OPS)


def test_register_custom_op(scratch_registry):
    calls = []

    def factory(channels: int, stride: int, affine: bool) -> nn.Module:
        calls.append((channels, stride, affine))
        return nn.AvgPool2d(1, stride)

    returned = register_op("my_pool", "feature", factory)
    assert returned is factory
    assert "my_pool" in list_ops("feature") and "my_pool" in list_ops()
    assert "my_pool" not in list_ops("attention")
    assert list_ops()[-1] == "my_pool"  # registration order
    assert op_family("my_pool") is Family.FEATURE
    op = create_op("my_pool", 6, stride=2, affine=False)
    assert calls == [(8, 1, True), (6, 2, False)]  # a sample on the meta device, then ours
    assert op(torch.randn(1, 6, 5, 5)).shape == (1, 6, 3, 3)
    assert isinstance(get_op("my_pool")(6), nn.AvgPool2d)


class _Gate(nn.Identity):
    def attention(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x.mean(dim=(2, 3), keepdim=True))


def test_register_custom_op_as_decorator(scratch_registry):
    @register_op("my_gate", Family.ATTENTION)
    def my_gate(channels: int, stride: int, affine: bool) -> nn.Module:
        return _Gate()

    assert callable(my_gate) and my_gate(4, 1, True).__class__ is _Gate
    assert list_ops(Family.ATTENTION)[-1] == "my_gate"
    assert get_op("my_gate").factory is my_gate


def test_duplicate_registration_raises(scratch_registry):
    register_op("twice", "attention", lambda c, s, a: _Gate())
    with pytest.raises(ValueError, match=r"name='twice' is already registered.*overwrite=True"):
        register_op("twice", "attention", lambda c, s, a: _Gate())
    with pytest.raises(ValueError, match="already registered"):
        register_op("sep_conv_3x3", "feature", lambda c, s, a: nn.Identity())
    register_op("twice", "feature", lambda c, s, a: nn.ReLU(), overwrite=True)
    assert op_family("twice") is Family.FEATURE
    assert "twice" not in list_ops("attention")
    assert isinstance(create_op("twice", 4), nn.ReLU)


def test_function_factory_product_is_checked_at_registration(scratch_registry):
    with pytest.raises(TypeError, match=r"name='no_gate'.*attention"):
        register_op("no_gate", "attention", lambda c, s, a: nn.Identity())
    assert "no_gate" not in list_ops()


@pytest.mark.parametrize("family", ["features", "Feature", "", 3])
def test_invalid_family_raises_value_error(scratch_registry, family):
    pattern = r"family=.* is not valid; expected one of: feature, attention, dynamic"
    with pytest.raises(ValueError, match=pattern):
        register_op("bad_family", family, lambda c, s, a: nn.Identity())
    assert "bad_family" not in list_ops()
    with pytest.raises(ValueError, match=pattern):
        list_ops(family)
