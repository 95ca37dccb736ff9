"""Dynamic convolution O_d (Sec. 3.1, Fig. 1, Eq. 5) and the per-sample depthwise conv.

Fast paths (``grouped``, ``shifted``, ``unfold``) against a plain per-sample loop of
``F.conv2d``; kernel spreading; the residual form ``x + x (x) D``; batch independence;
memory formats, autocast, ``torch.export`` and ``torch.compile`` with a dynamic batch;
argument errors.
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from nos_ops.ops import (
    DynamicConv2d,
    create_op,
    dynamic_depthwise_conv2d,
    identity_kernel,
    list_ops,
    spread_kernels,
)

DYNAMIC_OPS = list_ops("dynamic")
SIZES = st.integers(3, 11)
ODD_SIZES = st.integers(1, 5).map(lambda n: 2 * n + 1)  # 3, 5, ..., 11
SEEDS = st.integers(0, 2**31 - 1)

pytestmark = pytest.mark.usefixtures("single_thread")


def loop_reference(x, kernels, stride=1, dilation=1):
    """The plain per-sample depthwise conv the fast paths must reproduce."""
    channels, k = x.shape[1], kernels.shape[-1]
    padding = dilation * (k - 1) // 2
    return torch.cat(
        [
            F.conv2d(
                x[i : i + 1],
                kernels[i].unsqueeze(1),
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=channels,
            )
            for i in range(x.shape[0])
        ]
    )


def out_size(size: int, stride: int) -> int:
    return math.ceil(size / stride)


# --------------------------------------------------------------------------- functional conv


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("dilation", [1, 2, 3])
@pytest.mark.parametrize("stride", [1, 2])
@given(
    batch=st.integers(1, 4),
    channels=st.integers(1, 6),
    height=SIZES,
    width=SIZES,
    seed=SEEDS,
)
def test_every_impl_equals_the_loop(
    stride, dilation, kernel_size, batch, channels, height, width, seed
):
    torch.manual_seed(seed)
    x = torch.randn(batch, channels, height, width, requires_grad=True)
    k = torch.randn(batch, channels, kernel_size, kernel_size, requires_grad=True)
    ref = loop_reference(x, k, stride, dilation)
    assert ref.shape == (batch, channels, out_size(height, stride), out_size(width, stride))
    weight = torch.randn_like(ref)
    ref_grads = torch.autograd.grad((ref * weight).sum(), (x, k))
    for impl in ("grouped", "shifted", "unfold", "auto"):
        out = dynamic_depthwise_conv2d(x, k, stride, dilation, impl=impl)
        torch.testing.assert_close(out, ref)
        grads = torch.autograd.grad((out * weight).sum(), (x, k))
        torch.testing.assert_close(grads, ref_grads)


@pytest.mark.parametrize("impl", ["grouped", "shifted", "unfold", "auto"])
def test_empty_batch(impl):
    x, k = torch.randn(0, 3, 7, 5), torch.randn(0, 3, 3, 3)
    assert dynamic_depthwise_conv2d(x, k, 2, 2, impl=impl).shape == (0, 3, 4, 3)


@pytest.mark.parametrize("impl", ["grouped", "shifted", "unfold"])
@pytest.mark.parametrize(("stride", "dilation", "kernel_size"), [(1, 1, 3), (2, 2, 3), (2, 1, 5)])
def test_functional_gradcheck(impl, stride, dilation, kernel_size):
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, kernel_size, kernel_size, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, k: dynamic_depthwise_conv2d(x, k, stride, dilation, impl=impl), (x, k)
    )


@pytest.mark.parametrize("impl", ["grouped", "shifted", "unfold"])
@pytest.mark.parametrize("stride", [1, 2])
def test_functional_jacobian_is_block_diagonal_over_the_batch(impl, stride):
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    k = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    jx, jk = torch.autograd.functional.jacobian(
        lambda x, k: dynamic_depthwise_conv2d(x, k, stride, 2, impl=impl), (x, k)
    )
    for jac in (jx, jk):  # B x C x H' x W' x B x ...
        for i in range(3):
            for j in range(3):
                block = jac[i, :, :, :, j]
                assert (block.abs().sum() > 0) == (i == j)


@pytest.mark.parametrize("dilation", [1, 2, 3])
@pytest.mark.parametrize("stride", [1, 2])
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 4),
    height=SIZES,
    width=SIZES,
    kernel_size=st.sampled_from([1, 3, 5]),
    impl=st.sampled_from(["grouped", "shifted", "unfold"]),
)
def test_identity_kernel_subsamples(
    stride, dilation, batch, channels, height, width, kernel_size, impl
):
    x = torch.randn(batch, channels, height, width)
    delta = identity_kernel(kernel_size, x).expand(batch, channels, -1, -1)
    out = dynamic_depthwise_conv2d(x, delta, stride, dilation, impl=impl)
    torch.testing.assert_close(out, x[:, :, ::stride, ::stride], rtol=0, atol=0)


def test_identity_kernel_is_a_centred_delta():
    like = torch.zeros(1, dtype=torch.float64)
    delta = identity_kernel(5, like)
    assert delta.shape == (5, 5) and delta.dtype == torch.float64
    assert delta[2, 2] == 1 and delta.sum() == 1


# --------------------------------------------------------------------------- spread kernels


@given(
    kernel_size=st.sampled_from([1, 3, 5]),
    dilation=st.integers(1, 3),
    extra=st.integers(0, 2),
    stride=st.integers(1, 2),
    height=SIZES,
    width=SIZES,
    seed=SEEDS,
)
def test_spread_kernel_dense_conv_equals_dilated_conv(
    kernel_size, dilation, extra, stride, height, width, seed
):
    torch.manual_seed(seed)
    x = torch.randn(2, 3, height, width)
    k = torch.randn(2, 3, kernel_size, kernel_size)
    extent = (kernel_size - 1) * dilation + 1
    spread = spread_kernels(k, dilation, extent + 2 * extra)
    assert spread.shape == (2, 3, extent + 2 * extra, extent + 2 * extra)
    # the taps land on the dilated grid, everything else is zero
    grid = spread[..., extra : extra + extent : dilation, extra : extra + extent : dilation]
    torch.testing.assert_close(grid, k, rtol=0, atol=0)
    assert spread.abs().sum() == pytest.approx(k.abs().sum().item(), rel=1e-6)
    dense = dynamic_depthwise_conv2d(x, spread, stride, 1)
    torch.testing.assert_close(dense, dynamic_depthwise_conv2d(x, k, stride, dilation))
    torch.testing.assert_close(dense, loop_reference(x, k, stride, dilation))


def test_3x3_padded_into_5x5_equals_3x3_conv():
    x = torch.randn(2, 4, 7, 9)
    k3 = torch.randn(2, 4, 3, 3)
    k5 = spread_kernels(k3, 1, 5)
    assert k5.shape == (2, 4, 5, 5)
    torch.testing.assert_close(k5[..., 1:4, 1:4], k3, rtol=0, atol=0)
    assert k5[..., 0, :].abs().sum() == 0 and k5[..., :, 4].abs().sum() == 0
    torch.testing.assert_close(dynamic_depthwise_conv2d(x, k5), dynamic_depthwise_conv2d(x, k3))
    # kernels that reach one node can be summed: x (x) D1 + x (x) D2 == x (x) (D1 + D2)
    k5b = torch.randn(2, 4, 5, 5)
    dil3 = torch.randn(2, 4, 3, 3)
    summed = k5 + k5b + spread_kernels(dil3, 2, 5)
    expected = (
        dynamic_depthwise_conv2d(x, k3)
        + dynamic_depthwise_conv2d(x, k5b)
        + dynamic_depthwise_conv2d(x, dil3, dilation=2)
    )
    torch.testing.assert_close(dynamic_depthwise_conv2d(x, summed), expected)


@pytest.mark.parametrize(("kernel_size", "dilation", "size"), [(3, 1, 1), (3, 2, 3), (3, 1, 4)])
def test_spread_kernels_rejects_sizes_that_cannot_centre(kernel_size, dilation, size):
    k = torch.randn(1, 2, kernel_size, kernel_size)
    with pytest.raises(ValueError, match=rf"size={size} cannot centre a kernel of extent"):
        spread_kernels(k, dilation, size)


# --------------------------------------------------------------------------- DynamicConv2d


@pytest.mark.parametrize("stride", [1, 2])
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 12),
    height=ODD_SIZES,
    width=ODD_SIZES,
    kernel_size=st.sampled_from([1, 3, 5, 7]),
    dilation=st.integers(1, 3),
    reduction=st.integers(1, 8),
    seed=SEEDS,
)
def test_forward_is_residual_dynamic_conv(
    stride, batch, channels, height, width, kernel_size, dilation, reduction, seed
):
    """forward(x) == x + x (x) kernels(x)  (Eq. 5 with one dynamic op)."""
    torch.manual_seed(seed)
    op = DynamicConv2d(channels, kernel_size, stride, dilation, reduction)
    x = torch.randn(batch, channels, height, width)
    d = op.kernels(x)
    assert d.shape == (batch, channels, kernel_size, kernel_size)
    out = op(x)
    assert out.shape == (batch, channels, out_size(height, stride), out_size(width, stride))
    expected = x[:, :, ::stride, ::stride] + dynamic_depthwise_conv2d(x, d, stride, dilation)
    torch.testing.assert_close(out, expected)
    assert torch.isfinite(out).all()


def test_registered_dynamic_ops_are_configured_as_named():
    expected = {
        "dynamic_conv_3x3": (3, 1),
        "dynamic_conv_5x5": (5, 1),
        "dil_dynamic_conv_3x3": (3, 2),
        "dil_dynamic_conv_5x5": (5, 2),
    }
    assert set(DYNAMIC_OPS) >= set(expected)
    for name, (kernel_size, dilation) in expected.items():
        for stride in (1, 2):
            op = create_op(name, 8, stride)
            assert isinstance(op, DynamicConv2d)
            assert (op.kernel_size, op.dilation, op.stride) == (kernel_size, dilation, stride)
            assert op.kernels(torch.randn(2, 8, 5, 5)).shape == (2, 8, kernel_size, kernel_size)


@pytest.mark.parametrize("stride", [1, 2])
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 8),
    height=ODD_SIZES,
    width=ODD_SIZES,
    kernel_size=st.sampled_from([1, 3, 5]),
    dilation=st.integers(1, 3),
    seed=SEEDS,
)
def test_shifted_equals_grouped_with_gradients(
    stride, batch, channels, height, width, kernel_size, dilation, seed
):
    torch.manual_seed(seed)
    grouped = DynamicConv2d(channels, kernel_size, stride, dilation, impl="grouped")
    shifted = DynamicConv2d(channels, kernel_size, stride, dilation, impl="shifted")
    shifted.load_state_dict(grouped.state_dict())
    x = torch.randn(batch, channels, height, width)
    outs, grads = [], []
    for op in (grouped, shifted):
        xi = x.clone().requires_grad_()
        out = op(xi)
        weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
        grads.append(torch.autograd.grad((out * weight).sum(), (xi, *op.parameters())))
        outs.append(out)
    torch.testing.assert_close(outs[1], outs[0])
    torch.testing.assert_close(grads[1], grads[0])


@pytest.mark.parametrize("stride", [1, 2])
def test_shifted_module_gradcheck(stride):
    op = DynamicConv2d(4, 3, stride, dilation=2, reduction=2, impl="shifted").double()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op, (x,))


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", DYNAMIC_OPS)
@given(batch=st.integers(2, 4), channels=st.integers(1, 8), size=ODD_SIZES, seed=SEEDS)
def test_batch_independence(name, stride, batch, channels, size, seed):
    """Sample i's output depends only on sample i (eval mode)."""
    torch.manual_seed(seed)
    op = create_op(name, channels, stride).eval()
    x = torch.randn(batch, channels, size, size)
    with torch.no_grad():
        out = op(x)
        torch.testing.assert_close(out, torch.cat([op(x[i : i + 1]) for i in range(batch)]))
        j = seed % batch
        x2 = x.clone()
        x2[j] += torch.randn_like(x2[j])
        out2 = op(x2)
    others = [i for i in range(batch) if i != j]
    torch.testing.assert_close(out2[others], out[others])
    assert not torch.allclose(out2[j], out[j])


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", DYNAMIC_OPS)
def test_jacobian_is_block_diagonal_over_the_batch(name, stride):
    op = create_op(name, 2, stride).double().eval()
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(op, x)  # B x C x H' x W' x B x C x H x W
    for i in range(3):
        for j in range(3):
            assert (jac[i, :, :, :, j].abs().sum() > 0) == (i == j)


# --------------------------------------------------------------------------- formats, dtypes


@pytest.mark.parametrize("impl", ["grouped", "shifted", "unfold"])
@pytest.mark.parametrize("stride", [1, 2])
def test_channels_last_matches_contiguous(impl, stride):
    op = DynamicConv2d(8, 5, stride, dilation=2, impl=impl)
    x = torch.randn(3, 8, 9, 7)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    assert x_cl.is_contiguous(memory_format=torch.channels_last) and not x_cl.is_contiguous()
    torch.testing.assert_close(op(x_cl), op(x))
    assert op(x_cl).is_contiguous(memory_format=torch.channels_last)  # the layout is kept
    k = torch.randn(3, 8, 3, 3)
    k_cl = k.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(
        dynamic_depthwise_conv2d(x_cl, k_cl, stride, 2, impl=impl),
        dynamic_depthwise_conv2d(x, k, stride, 2, impl=impl),
    )
    op_cl = DynamicConv2d(8, 5, stride, dilation=2, impl=impl).to(memory_format=torch.channels_last)
    op_cl.load_state_dict(op.state_dict())
    torch.testing.assert_close(op_cl(x_cl), op(x))


@pytest.mark.parametrize("impl", ["grouped", "shifted", "unfold"])
@pytest.mark.parametrize("stride", [1, 2])
def test_cpu_autocast_bfloat16(impl, stride):
    op = DynamicConv2d(8, 5, stride, impl=impl)
    x = torch.randn(2, 8, 9, 9)
    k = torch.randn(2, 8, 3, 3)
    ref, ref_f = op(x), dynamic_depthwise_conv2d(x, k, stride, impl=impl)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, out_f = op(x), dynamic_depthwise_conv2d(x, k, stride, impl=impl)
    for got, want in ((out, ref), (out_f, ref_f)):
        assert got.dtype in (torch.bfloat16, torch.float32)
        assert got.shape == want.shape and torch.isfinite(got).all()
        torch.testing.assert_close(got.float(), want, atol=0.1, rtol=0.05)


def test_float64_parameters_via_dtype_argument():
    op = DynamicConv2d(4, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in op.parameters())
    assert op(torch.randn(1, 4, 5, 5, dtype=torch.float64)).dtype == torch.float64


# --------------------------------------------------------------------------- export, compile


def test_export_with_dynamic_batch():
    op = DynamicConv2d(8, 5, stride=2, dilation=2).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(op, (torch.randn(3, 8, 9, 7),), dynamic_shapes=({0: batch},))
    exported = program.module()
    for size in (1, 5):
        x = torch.randn(size, 8, 9, 7)
        torch.testing.assert_close(exported(x), op(x))


@pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None,
    reason="torch.compile's inductor backend needs a C++ compiler (g++/c++) for CPU kernels",
)
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compile_dynamic_batch_matches_eager():
    """Inductor with a dynamic batch: one graph (no recompile) serves two batch sizes."""
    torch._dynamo.reset()
    op = DynamicConv2d(4, 3, dilation=2).eval()
    compiled = torch.compile(op, dynamic=True)
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
        for size in (2, 5):  # one graph serves both batch sizes
            x = torch.randn(size, 4, 7, 7)
            torch.testing.assert_close(compiled(x), op(x))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"kernel_size": 4}, r"kernel_size=4 is not valid; expected an odd size"),
        ({"kernel_size": 0}, r"kernel_size=0 is not valid; expected an integer >= 1"),
        ({"stride": 0}, r"stride=0 is not valid; expected an integer >= 1"),
        ({"stride": -1}, r"stride=-1 is not valid; expected an integer >= 1"),
        ({"dilation": 0}, r"dilation=0 is not valid; expected an integer >= 1"),
        ({"reduction": 0}, r"reduction=0 is not valid; expected an integer >= 1"),
        ({"channels": 0}, r"channels=0 is not valid; expected an integer >= 1"),
        ({"impl": "loop"}, r"impl='loop' is not valid; expected one of \('auto', 'grouped'"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        DynamicConv2d(**{"channels": 4, **kwargs})


def test_forward_rejects_bad_input():
    op = DynamicConv2d(4)
    with pytest.raises(ValueError, match=r"x must be a 4-d tensor B x C x H x W, got shape"):
        op(torch.randn(4, 5, 5))
    with pytest.raises(ValueError, match=r"x has 3 channels .* built for channels=4"):
        op(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match=r"x has 3 channels .* built for channels=4"):
        op.kernels(torch.randn(2, 3, 5, 5))


@pytest.mark.parametrize(
    ("x_shape", "k_shape", "kwargs", "pattern"),
    [
        ((4, 5, 5), (1, 4, 3, 3), {}, r"x and kernels must be 4-d"),
        ((1, 4, 5, 5), (4, 3, 3), {}, r"x and kernels must be 4-d"),
        ((1, 4, 5, 5), (1, 3, 3, 3), {}, r"kernels \(1, 3, 3, 3\) must match x .* channels"),
        ((2, 4, 5, 5), (1, 4, 3, 3), {}, r"kernels \(1, 4, 3, 3\) must match x .* batch"),
        ((1, 4, 5, 5), (1, 4, 4, 4), {}, r"kernels must be square with an odd size"),
        ((1, 4, 5, 5), (1, 4, 3, 5), {}, r"kernels must be square with an odd size"),
        ((1, 4, 5, 5), (1, 4, 3, 3), {"stride": 0}, r"stride=0 is not valid; expected an int"),
        ((1, 4, 5, 5), (1, 4, 3, 3), {"stride": -2}, r"stride=-2 is not valid; expected an"),
        ((1, 4, 5, 5), (1, 4, 3, 3), {"dilation": 0}, r"dilation=0 is not valid; expected"),
        ((1, 4, 5, 5), (1, 4, 3, 3), {"impl": "fft"}, r"impl='fft' is not valid; expected one"),
    ],
)
def test_functional_rejects_bad_input(x_shape, k_shape, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        dynamic_depthwise_conv2d(torch.randn(x_shape), torch.randn(k_shape), **kwargs)
