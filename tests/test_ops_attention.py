"""Attention ops O_a (Sec. 3.1, Eq. 5): spatial and channel self-calibration.

Map shapes and range, the drop-in form ``x * (1 + A)`` (subsampled at stride 2), batch
independence, memory formats, autocast, ``torch.export`` with a dynamic batch, argument errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from nos_ops.ops import ChannelAttention, SpatialAttention, create_op, list_ops

ATTENTION_OPS = list_ops("attention")
ODD_SIZES = st.integers(1, 5).map(lambda n: 2 * n + 1)  # 3, 5, ..., 11
SEEDS = st.integers(0, 2**31 - 1)

pytestmark = pytest.mark.usefixtures("single_thread")


def subsample(x: torch.Tensor, stride: int) -> torch.Tensor:
    return x[:, :, ::stride, ::stride]


@pytest.mark.parametrize("stride", [1, 2])
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 16),
    height=ODD_SIZES,
    width=ODD_SIZES,
    kernel_size=st.sampled_from([1, 3, 5, 7]),
    reduction=st.integers(1, 16),
    seed=SEEDS,
)
def test_spatial_attention_map_and_drop_in_form(
    stride, batch, channels, height, width, kernel_size, reduction, seed
):
    torch.manual_seed(seed)
    op = SpatialAttention(channels, kernel_size, stride, reduction)
    x = torch.randn(batch, channels, height, width)
    a = op.attention(x)
    out_h, out_w = math.ceil(height / stride), math.ceil(width / stride)
    assert a.shape == (batch, 1, out_h, out_w)
    assert ((a > 0) & (a < 1)).all()
    out = op(x)
    assert out.shape == (batch, channels, out_h, out_w)
    torch.testing.assert_close(out, subsample(x, stride) * (1 + a))


@pytest.mark.parametrize("stride", [1, 2])
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 16),
    height=ODD_SIZES,
    width=ODD_SIZES,
    reduction=st.integers(1, 16),
    seed=SEEDS,
)
def test_channel_attention_map_and_drop_in_form(
    stride, batch, channels, height, width, reduction, seed
):
    torch.manual_seed(seed)
    op = ChannelAttention(channels, stride, reduction)
    x = torch.randn(batch, channels, height, width)
    a = op.attention(x)
    assert a.shape == (batch, channels, 1, 1)
    assert ((a > 0) & (a < 1)).all()
    out = op(x)
    assert out.shape == (batch, channels, math.ceil(height / stride), math.ceil(width / stride))
    torch.testing.assert_close(out, subsample(x, stride) * (1 + a))


def test_channel_attention_is_squeeze_excitation_of_the_global_mean():
    """A depends on x only through its per-channel spatial mean."""
    op = ChannelAttention(8, reduction=2)
    x = torch.randn(2, 8, 7, 5)
    shuffled = x.flatten(2)[:, :, torch.randperm(35)].reshape(x.shape)
    torch.testing.assert_close(op.attention(shuffled), op.attention(x))
    constant = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    torch.testing.assert_close(op.attention(constant), op.attention(x))


def test_registered_attention_ops_are_configured_as_named():
    assert set(ATTENTION_OPS) >= {"spatial_attention", "channel_attention"}
    for stride in (1, 2):
        for affine in (True, False):
            spatial = create_op("spatial_attention", 8, stride, affine)
            channel = create_op("channel_attention", 8, stride, affine)
            assert isinstance(spatial, SpatialAttention) and spatial.stride == stride
            assert isinstance(channel, ChannelAttention) and channel.stride == stride


def test_custom_layers_dtype_and_reduction_floor():
    op = SpatialAttention(
        32, reduction=4, act_layer=nn.GELU, gate_layer=nn.Hardsigmoid, dtype=torch.float64
    )
    assert isinstance(op.act1, nn.GELU) and isinstance(op.gate, nn.Hardsigmoid)
    assert op.reduce.out_channels == 8
    assert all(p.dtype == torch.float64 for p in op.parameters())
    a = op.attention(torch.randn(2, 32, 5, 5, dtype=torch.float64))
    assert a.dtype == torch.float64 and ((a >= 0) & (a <= 1)).all()
    # the bottleneck never drops below 4 channels
    assert SpatialAttention(8, reduction=16).reduce.out_channels == 4
    assert ChannelAttention(8, reduction=16).fc1.out_channels == 4
    assert ChannelAttention(64, reduction=16).fc1.out_channels == 4
    assert ChannelAttention(128, reduction=16).fc1.out_channels == 8


def test_channel_attention_rd_ratio_sets_the_hidden_width() -> None:
    """timm's naming: hidden = round(C * rd_ratio), no floor of 4; rd_ratio=1 is the
    no-bottleneck reading of Table 1 (+0.173 M params after ResNet-18 stages 1-3)."""
    assert ChannelAttention(64, rd_ratio=1.0).fc1.out_channels == 64
    assert ChannelAttention(64, rd_ratio=1 / 16).fc1.out_channels == 4
    assert ChannelAttention(8, rd_ratio=1 / 16).fc1.out_channels == 1
    assert "hidden=64" in repr(ChannelAttention(64, rd_ratio=1.0))
    params = sum(
        sum(p.numel() for p in ChannelAttention(c, rd_ratio=1.0).parameters())
        for c in (64, 128, 256)
    )
    assert params == 172_928
    for bad in (0, -0.5, 17, True):
        with pytest.raises(ValueError, match=rf"rd_ratio={bad!r} is not valid"):
            ChannelAttention(8, rd_ratio=bad)


# --------------------------------------------------------------------------- batch independence


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", ATTENTION_OPS)
@given(batch=st.integers(2, 4), channels=st.integers(1, 8), size=ODD_SIZES, seed=SEEDS)
def test_batch_independence(name, stride, batch, channels, size, seed):
    """Sample i's output (and attention map) depends only on sample i (eval mode)."""
    torch.manual_seed(seed)
    op = create_op(name, channels, stride).eval()
    x = torch.randn(batch, channels, size, size)
    with torch.no_grad():
        out, a = op(x), op.attention(x)
        torch.testing.assert_close(out, torch.cat([op(x[i : i + 1]) for i in range(batch)]))
        torch.testing.assert_close(a, torch.cat([op.attention(x[i : i + 1]) for i in range(batch)]))
        j = seed % batch
        x2 = x.clone()
        x2[j] += torch.randn_like(x2[j])
        out2 = op(x2)
    others = [i for i in range(batch) if i != j]
    torch.testing.assert_close(out2[others], out[others])
    assert not torch.allclose(out2[j], out[j])


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", ATTENTION_OPS)
def test_jacobian_is_block_diagonal_over_the_batch(name, stride):
    op = create_op(name, 2, stride).double().eval()
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    for fn in (op, op.attention):
        jac = torch.autograd.functional.jacobian(fn, x)  # B x ... x B x C x H x W
        for i in range(3):
            for j in range(3):
                assert (jac[i, :, :, :, j].abs().sum() > 0) == (i == j)


# --------------------------------------------------------------------------- formats, dtypes


def make(kind: str, stride: int) -> nn.Module:
    if kind == "spatial":
        return SpatialAttention(8, 3, stride, reduction=2)
    return ChannelAttention(8, stride, reduction=2)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kind", ["spatial", "channel"])
def test_channels_last_matches_contiguous(kind, stride):
    op = make(kind, stride)
    x = torch.randn(3, 8, 9, 7)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    assert not x_cl.is_contiguous()
    torch.testing.assert_close(op(x_cl), op(x))
    torch.testing.assert_close(op.attention(x_cl), op.attention(x))
    op_cl = make(kind, stride).to(memory_format=torch.channels_last)
    op_cl.load_state_dict(op.state_dict())
    torch.testing.assert_close(op_cl(x_cl), op(x))


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kind", ["spatial", "channel"])
def test_cpu_autocast_bfloat16(kind, stride):
    op = make(kind, stride)
    x = torch.randn(2, 8, 9, 9)
    ref, ref_a = op(x), op.attention(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, a = op(x), op.attention(x)
    for got, want in ((out, ref), (a, ref_a)):
        assert got.dtype in (torch.bfloat16, torch.float32)
        assert got.shape == want.shape and torch.isfinite(got).all()
        torch.testing.assert_close(got.float(), want, atol=0.1, rtol=0.05)
    assert ((a >= 0) & (a <= 1)).all()


@pytest.mark.parametrize("kind", ["spatial", "channel"])
def test_export_with_dynamic_batch(kind):
    op = make(kind, 2).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(op, (torch.randn(3, 8, 9, 7),), dynamic_shapes=({0: batch},))
    exported = program.module()
    for size in (1, 5):
        x = torch.randn(size, 8, 9, 7)
        torch.testing.assert_close(exported(x), op(x))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("cls", "kwargs", "pattern"),
    [
        (SpatialAttention, {"kernel_size": 2}, r"kernel_size=2 is not valid; expected an odd"),
        (SpatialAttention, {"kernel_size": -3}, r"kernel_size=-3 is not valid; expected an int"),
        (SpatialAttention, {"stride": 0}, r"stride=0 is not valid; expected an integer >= 1"),
        (SpatialAttention, {"stride": -2}, r"stride=-2 is not valid; expected an integer >= 1"),
        (SpatialAttention, {"channels": 0}, r"channels=0 is not valid; expected an integer"),
        (SpatialAttention, {"reduction": 0}, r"reduction=0 is not valid; expected an integer"),
        (ChannelAttention, {"stride": 0}, r"stride=0 is not valid; expected an integer >= 1"),
        (ChannelAttention, {"stride": -1}, r"stride=-1 is not valid; expected an integer >= 1"),
        (ChannelAttention, {"channels": -4}, r"channels=-4 is not valid; expected an integer"),
        (ChannelAttention, {"reduction": 0}, r"reduction=0 is not valid; expected an integer"),
    ],
)
def test_constructor_rejects_bad_arguments(cls, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        cls(**{"channels": 4, **kwargs})


@pytest.mark.parametrize("kind", ["spatial", "channel"])
def test_forward_rejects_bad_input(kind):
    op = make(kind, 1)
    for fn in (op, op.attention):
        with pytest.raises(ValueError, match=r"x must be a 4-d tensor B x C x H x W, got shape"):
            fn(torch.randn(8, 5, 5))
        with pytest.raises(ValueError, match=r"x has 6 channels .* built for channels=8"):
            fn(torch.randn(2, 6, 5, 5))
