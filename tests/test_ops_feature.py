"""Feature-transformation ops O_f (Sec. 3.1): the DARTS operation set.

Structure and parameter counts as in DARTS (affine and search forms), FactorizedReduce on odd
and even sizes, the dilated receptive fields, pooling semantics, and eval-mode gradcheck.
The shape/finite/gradient/train-mode gradcheck contract of every op is in test_ops_registry.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from nos_ops.ops import (
    DilConv,
    FactorizedReduce,
    ReLUConvBN,
    SepConv,
    Zero,
    create_op,
    list_ops,
)

FEATURE_OPS = list_ops("feature")
EVEN_CHANNELS = st.integers(1, 8).map(lambda n: 2 * n)  # 2, 4, ..., 16
SEEDS = st.integers(0, 2**31 - 1)

pytestmark = pytest.mark.usefixtures("single_thread")


def darts_params(name: str, c: int, stride: int, affine: bool) -> int:
    """Parameter count of DARTS's op ``name`` for ``c`` channels."""
    bn = 2 * c if affine else 0
    dil = {"dil_conv_3x3": 9, "dil_conv_5x5": 25}
    sep = {"sep_conv_3x3": 9, "sep_conv_5x5": 25}
    if name in dil:
        return dil[name] * c + c * c + bn
    if name in sep:
        return 2 * (sep[name] * c + c * c + bn)
    if name == "identity" and stride == 2:  # FactorizedReduce
        return 2 * (c * c // 2) + bn
    return 0  # none, pools, identity


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("name", FEATURE_OPS)
def test_parameter_counts_match_darts(name, affine, stride):
    if name not in {
        "none",
        "sep_conv_3x3",
        "sep_conv_5x5",
        "dil_conv_3x3",
        "dil_conv_5x5",
        "avg_pool_3x3",
        "max_pool_3x3",
        "identity",
    }:
        pytest.skip(f"{name} is not a DARTS op; no reference count")
    op = create_op(name, 16, stride, affine)
    assert sum(p.numel() for p in op.parameters()) == darts_params(name, 16, stride, affine)
    for bn in (m for m in op.modules() if isinstance(m, nn.BatchNorm2d)):
        assert bn.affine is affine


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", FEATURE_OPS)
@given(
    batch=st.integers(1, 3),
    channels=EVEN_CHANNELS,
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    affine=st.booleans(),
)
def test_output_size_odd_and_even_inputs(name, stride, batch, channels, height, width, affine):
    """B x C x H x W -> B x C x ceil(H/stride) x ceil(W/stride), even and odd sizes alike."""
    op = create_op(name, channels, stride, affine).eval()
    with torch.no_grad():
        out = op(torch.randn(batch, channels, height, width))
    assert out.shape == (batch, channels, math.ceil(height / stride), math.ceil(width / stride))


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", FEATURE_OPS)
def test_eval_mode_gradcheck(name, stride):
    """float64 gradcheck with BatchNorm in eval mode, using non-trivial running statistics."""
    op = create_op(name, 2, stride, True).double()
    with torch.no_grad():
        op.train()(torch.randn(4, 2, 5, 5, dtype=torch.float64) * 3 + 1)  # update running stats
    op.eval()
    values = torch.randperm(50, dtype=torch.float64) - 24.5  # distinct, far from 0: no ties/kinks
    x = (values / 10).reshape(2, 1, 5, 5).repeat(1, 2, 1, 1)
    x[:, 1] = x[:, 1].flip(-1) + 0.03
    assert torch.autograd.gradcheck(op, (x.requires_grad_(),))


# --------------------------------------------------------------------------- structure


def test_sep_conv_strides_only_in_its_first_half():
    op = create_op("sep_conv_5x5", 8, 2, True)
    assert isinstance(op, SepConv)
    first, second = op[0][1], op[1][1]
    assert first.stride == (2, 2) and second.stride == (1, 1)
    assert first.kernel_size == (5, 5) and first.groups == 8
    assert isinstance(op[0][0], nn.ReLU) and isinstance(op[0][-1], nn.BatchNorm2d)


@pytest.mark.parametrize(("name", "kernel_size"), [("dil_conv_3x3", 3), ("dil_conv_5x5", 5)])
def test_dilated_conv_receptive_field(name, kernel_size):
    """An output pixel sees exactly the k x k dilation-2 grid around it."""
    op = create_op(name, 3, 1, True).eval()
    assert isinstance(op, DilConv) and op[1].dilation == (2, 2)
    x = (torch.rand(1, 3, 13, 13) + 0.1).requires_grad_()  # positive: the leading ReLU passes
    op(x)[0, :, 6, 6].sum().backward()
    support = x.grad.abs().sum(dim=(0, 1)) > 0
    expected = torch.zeros(13, 13, dtype=torch.bool)
    reach = kernel_size - 1  # (k - 1) / 2 taps of dilation 2 on each side
    expected[6 - reach : 6 + reach + 1 : 2, 6 - reach : 6 + reach + 1 : 2] = True
    assert torch.equal(support, expected)


@pytest.mark.parametrize("affine", [True, False])
def test_identity_is_identity_or_factorized_reduce(affine):
    x = torch.randn(2, 4, 5, 5)
    same = create_op("identity", 4, 1, affine)
    assert same(x) is x
    reduce = create_op("identity", 4, 2, affine)
    assert isinstance(reduce, FactorizedReduce)
    assert reduce(x).shape == (2, 4, 3, 3)


@pytest.mark.parametrize("stride", [1, 2])
def test_zero_is_zero_at_the_output_resolution(stride):
    op = create_op("none", 4, stride, True)
    assert isinstance(op, Zero)
    x = torch.randn(2, 4, 7, 6, requires_grad=True)
    out = op(x)
    assert out.shape == (2, 4, math.ceil(7 / stride), math.ceil(6 / stride))
    assert (out == 0).all()
    out.sum().backward()
    assert (x.grad == 0).all()


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("name", ["avg_pool_3x3", "max_pool_3x3"])
def test_pooling_search_form_adds_a_non_affine_batch_norm(name, affine):
    op = create_op(name, 4, 2, affine)
    if affine:
        assert isinstance(op, (nn.AvgPool2d, nn.MaxPool2d))
    else:
        assert isinstance(op, nn.Sequential) and isinstance(op[1], nn.BatchNorm2d)
        assert not op[1].affine and op[1].num_features == 4


@pytest.mark.parametrize("stride", [1, 2])
@given(height=st.integers(1, 11), width=st.integers(1, 11), value=st.floats(-5, 5), seed=SEEDS)
def test_pooling_semantics(stride, height, width, value, seed):
    """avg_pool excludes the padding (a constant stays constant at the borders); max_pool is
    the window maximum, so at stride 1 it never falls below its centre."""
    torch.manual_seed(seed)
    avg = create_op("avg_pool_3x3", 2, stride, True)
    constant = torch.full((1, 2, height, width), value)
    torch.testing.assert_close(avg(constant), subsampled(constant, stride))
    mx = create_op("max_pool_3x3", 2, stride, True)
    x = torch.randn(2, 2, height, width)
    out = mx(x)
    assert (out >= subsampled(x, stride)).all()
    padded = F.pad(x, (1, 1, 1, 1), value=-math.inf)
    windows = padded.unfold(2, 3, stride).unfold(3, 3, stride)
    torch.testing.assert_close(out, windows.amax(dim=(-2, -1)))


def subsampled(x: torch.Tensor, stride: int) -> torch.Tensor:
    return x[:, :, ::stride, ::stride]


# --------------------------------------------------------------------------- FactorizedReduce


@given(
    batch=st.integers(1, 3),
    in_channels=st.integers(1, 6),
    out_channels=EVEN_CHANNELS,
    height=st.integers(1, 6).map(lambda n: 2 * n),
    width=st.integers(1, 6).map(lambda n: 2 * n),
    affine=st.booleans(),
    seed=SEEDS,
)
def test_factorized_reduce_matches_darts_on_even_sizes(
    batch, in_channels, out_channels, height, width, affine, seed
):
    torch.manual_seed(seed)
    op = FactorizedReduce(in_channels, out_channels, affine).eval()
    with torch.no_grad():
        op.bn.running_mean.uniform_(-1, 1)
        op.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(batch, in_channels, height, width)
    r = x.relu()
    expected = op.bn(torch.cat([op.conv_1(r), op.conv_2(r[:, :, 1:, 1:])], dim=1))
    out = op(x)
    assert out.shape == (batch, out_channels, height // 2, width // 2)
    torch.testing.assert_close(out, expected)


def test_factorized_reduce_pads_odd_sizes_bottom_right():
    op = FactorizedReduce(2, 4).eval()
    x = torch.randn(1, 2, 5, 7)
    r = x.relu()
    shifted = F.pad(r[:, :, 1:, 1:], (0, 1, 0, 1))
    expected = op.bn(torch.cat([op.conv_1(r), op.conv_2(shifted)], dim=1))
    torch.testing.assert_close(op(x), expected)
    assert op(x).shape == (1, 4, 3, 4)


@pytest.mark.parametrize("out_channels", [1, 3, 7])
def test_factorized_reduce_rejects_odd_out_channels(out_channels):
    with pytest.raises(ValueError, match=rf"out_channels={out_channels} must be even"):
        FactorizedReduce(4, out_channels)


def test_relu_conv_bn():
    op = ReLUConvBN(3, 6, 3, stride=2, padding=1, affine=False)
    assert [type(m) for m in op] == [nn.ReLU, nn.Conv2d, nn.BatchNorm2d]
    assert op[1].bias is None and not op[2].affine
    assert op(torch.randn(2, 3, 9, 8)).shape == (2, 6, 5, 4)
