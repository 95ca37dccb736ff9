"""MixedHeteroOp (Eq. 11), HeteroOutput, calibrate (Eqs. 5, 9) and the residual blocks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from nos_ops.block import HeterogeneousResidualBlock, SearchResidualBlock, calibrate
from nos_ops.genotype import BlockGene
from nos_ops.hetero import HeteroOutput
from nos_ops.mixed import MixedHeteroOp
from nos_ops.ops.dynamic import dynamic_depthwise_conv2d, spread_kernels
from nos_ops.ops.registry import Family
from nos_ops.space import SPACES, get_space

C = 8
DOUBLE = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tensors here are tiny: intra-op threads only add contention on small CI machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _x(batch: int = 2, size: int = 7, channels: int = C) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, dtype=DOUBLE)


def _one_hot(space, name: str) -> torch.Tensor:
    weights = torch.zeros(space.num_ops, dtype=DOUBLE)
    weights[space.ops.index(name)] = 1.0
    return weights


@pytest.mark.parametrize("preset", list(SPACES))
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("batch", [1, 3])
def test_mixed_op_output_shapes(preset, stride, batch):
    space = get_space(preset)
    edge = MixedHeteroOp(C, stride, space).double()
    x = _x(batch, size=7)
    out = edge(x, torch.randn(space.num_ops, dtype=DOUBLE).softmax(-1))
    assert isinstance(out, HeteroOutput)
    size = 7 if stride == 1 else 4
    assert out.features.shape == (batch, C, size, size)
    if space.ops_of("attention"):
        assert torch.broadcast_shapes(out.attention.shape, out.features.shape) == (
            batch,
            C,
            size,
            size,
        )
        assert out.attention.shape[0] == batch
    else:
        assert out.attention is None
    if space.ops_of("dynamic"):
        assert out.kernels.shape == (batch, C, 5, 5)
        assert edge.kernel_size == 5
    else:
        assert out.kernels is None
    assert calibrate(out).shape == (batch, C, size, size)


@pytest.mark.parametrize("shape", [(10,), (2, 11), (12,)])
def test_mixed_op_rejects_bad_weight_shapes(shape):
    edge = MixedHeteroOp(C, 1, "nos")
    with pytest.raises(ValueError, match=r"weights has shape .* expected \(11,\)"):
        edge(torch.randn(2, C, 6, 6), torch.rand(shape))


def test_mixed_op_rejects_residual_with_stride():
    with pytest.raises(ValueError, match="stride=2 is not valid with residual=True"):
        MixedHeteroOp(C, 2, "nos", residual=True)


@pytest.mark.parametrize("stride", [1, 2])
def test_mixture_is_the_weighted_sum_per_family(stride):
    """Eq. 11 per family: features, attention and (spread) kernels are weighted sums."""
    space = get_space("nos")
    edge = MixedHeteroOp(C, stride, space).double()
    x = _x(3, size=8)
    weights = torch.randn(space.num_ops, dtype=DOUBLE).softmax(-1)
    out = edge(x, weights)
    features = attention = kernels = 0
    for w, name, op in zip(weights, space.ops, edge.ops):
        family = space.family(name)
        if family is Family.FEATURE:
            features = features + w * op(x)
        elif family is Family.ATTENTION:
            attention = attention + w * op.attention(x)
        else:
            kernels = kernels + w * spread_kernels(op.kernels(x), op.dilation, 5)
    torch.testing.assert_close(out.features, features)
    torch.testing.assert_close(out.attention, attention)
    torch.testing.assert_close(out.kernels, kernels)


@pytest.mark.parametrize("name", get_space("nos").ops_of("feature"))
@pytest.mark.parametrize("stride", [1, 2])
def test_one_hot_feature_op_is_that_op(name, stride):
    space = get_space("nos")
    edge = MixedHeteroOp(C, stride, space).double()
    x = _x(2, size=8)
    out = edge(x, _one_hot(space, name))
    op = edge.ops[space.ops.index(name)]
    torch.testing.assert_close(out.features, op(x), rtol=0, atol=1e-12)
    assert not out.attention.any() and not out.kernels.any()
    torch.testing.assert_close(calibrate(out), op(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["spatial_attention", "channel_attention"])
def test_residual_one_hot_attention_is_x_plus_x_times_a(name):
    space = get_space("nos")
    edge = MixedHeteroOp(C, 1, space, residual=True).double()
    x = _x(3, size=6)
    out = edge(x, _one_hot(space, name))
    op = edge.ops[space.ops.index(name)]
    attention = op.attention(x)
    assert attention.min() > 0  # a real gate, so the check below is not x == x
    torch.testing.assert_close(out.features, x)
    torch.testing.assert_close(calibrate(out), x + x * attention)
    torch.testing.assert_close(calibrate(out), op(x))  # the op as a drop-in layer


@pytest.mark.parametrize("name", ["dynamic_conv_3x3", "dynamic_conv_5x5"])
def test_residual_one_hot_dynamic_is_x_plus_x_conv_d(name):
    space = get_space("nos")
    edge = MixedHeteroOp(C, 1, space, residual=True).double()
    x = _x(3, size=6)
    out = edge(x, _one_hot(space, name))
    op = edge.ops[space.ops.index(name)]
    expected = x + dynamic_depthwise_conv2d(x, op.kernels(x))
    assert not torch.allclose(expected, x)
    torch.testing.assert_close(calibrate(out), expected)
    torch.testing.assert_close(calibrate(out), op(x))


def test_residual_mixture_passes_input_with_the_calibration_weights():
    space = get_space("nos")
    edge = MixedHeteroOp(C, 1, space, residual=True).double()
    x = _x(2, size=6)
    weights = torch.randn(space.num_ops, dtype=DOUBLE).softmax(-1)
    out = edge(x, weights)
    features = sum(
        w * op(x)
        for w, name, op in zip(weights, space.ops, edge.ops)
        if space.family(name) is Family.FEATURE
    )
    calibration = weights[len(space.ops_of("feature")) :].sum()
    torch.testing.assert_close(out.features, features + calibration * x)


# ------------------------------------------------------------------ HeteroOutput, calibrate

KERNELS = {"3x3": (3, 1), "5x5": (5, 1), "dil_3x3": (3, 2), "dil_5x5": (5, 2)}


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 4),
    height=st.integers(3, 9),
    width=st.integers(3, 9),
    kinds=st.lists(st.sampled_from(sorted(KERNELS)), min_size=1, max_size=4, unique=True),
    attention=st.sampled_from(["none", "spatial", "channel", "both"]),
    seed=st.integers(0, 2**16),
)
def test_calibrate_equals_separate_convolutions(
    batch, channels, height, width, kinds, attention, seed
):
    """One combined per-sample conv == F + F*A + sum_d F (x) D_d, each D_d at its own size."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, channels, height, width, generator=gen, dtype=DOUBLE)
    out = HeteroOutput(features=features)
    expected = features.clone()
    for kind in kinds:
        size, dilation = KERNELS[kind]
        kernels = torch.randn(batch, channels, size, size, generator=gen, dtype=DOUBLE)
        extent = (size - 1) * dilation + 1
        out = out + HeteroOutput(kernels=spread_kernels(kernels, dilation, extent))
        expected = expected + dynamic_depthwise_conv2d(features, kernels, dilation=dilation)
    maps = []
    if attention in ("spatial", "both"):
        maps.append(torch.rand(batch, 1, height, width, generator=gen, dtype=DOUBLE))
    if attention in ("channel", "both"):
        maps.append(torch.rand(batch, channels, 1, 1, generator=gen, dtype=DOUBLE))
    for a in maps:
        out = out + HeteroOutput(attention=a)
        expected = expected + features * a
    largest = max((KERNELS[k][0] - 1) * KERNELS[k][1] + 1 for k in kinds)
    assert out.kernels.shape == (batch, channels, largest, largest)
    torch.testing.assert_close(calibrate(out), expected)


def test_calibrate_without_calibration_is_the_features():
    features = _x()
    assert calibrate(HeteroOutput(features=features)) is features


def test_calibrate_needs_features():
    with pytest.raises(ValueError, match="calibrate needs features"):
        calibrate(HeteroOutput(attention=torch.rand(1, 1, 4, 4)))


def test_hetero_output_addition_pads_kernels_to_the_larger_grid():
    k3, k5 = torch.randn(2, C, 3, 3), torch.randn(2, C, 5, 5)
    expected = k5 + F.pad(k3, (1, 1, 1, 1))
    small, large = HeteroOutput(kernels=k3), HeteroOutput(kernels=k5)
    torch.testing.assert_close((small + large).kernels, expected)
    torch.testing.assert_close((large + small).kernels, expected)
    k9 = torch.randn(2, C, 9, 9)
    summed = HeteroOutput(kernels=k3) + HeteroOutput(kernels=k5) + HeteroOutput(kernels=k9)
    torch.testing.assert_close(summed.kernels, k9 + F.pad(expected, (2, 2, 2, 2)))


def test_hetero_output_addition_and_scale_fieldwise():
    f, a = torch.randn(2, C, 4, 4), torch.rand(2, 1, 4, 4)
    total = HeteroOutput(features=f) + HeteroOutput(attention=a) + HeteroOutput(features=f)
    torch.testing.assert_close(total.features, 2 * f)
    assert total.attention is a and total.kernels is None
    scaled = total.scale(0.5)
    torch.testing.assert_close(scaled.features, f)
    torch.testing.assert_close(scaled.attention, 0.5 * a)
    assert scaled.kernels is None


# --------------------------------------------------------------------------- residual blocks


def _states(num_inputs: int, reduction: bool, batch: int = 2, size: int = 8) -> list:
    """Cell inputs at ``size``; earlier inner nodes at the cell's output resolution."""
    inner = size // 2 if reduction else size
    return [_x(batch, size) for _ in range(2)] + [_x(batch, inner) for _ in range(num_inputs - 2)]


@pytest.mark.parametrize(
    "tier2",
    [
        "spatial_attention",
        "channel_attention",
        "dynamic_conv_3x3",
        "dynamic_conv_5x5",
        "sep_conv_3x3",
    ],
)
@pytest.mark.parametrize("reduction", [False, True])
def test_fixed_block_residual_form(tier2, reduction):
    gene = BlockGene(
        (("sep_conv_3x3", 0), ("dynamic_conv_3x3", 1), ("spatial_attention", 2)), tier2
    )
    block = HeterogeneousResidualBlock(C, gene, reduction).double()
    states = _states(3, reduction)
    conv, dynamic, attention = block.edges
    features = conv(states[0])
    surrogate = (
        features
        + features * attention.attention(states[2])
        + dynamic_depthwise_conv2d(features, dynamic.kernels(states[1]))
    )
    op = block.tier2
    if tier2.endswith("attention"):
        expected = surrogate + surrogate * op.attention(surrogate)
    elif tier2.startswith("dynamic"):
        expected = surrogate + dynamic_depthwise_conv2d(surrogate, op.kernels(surrogate))
    else:
        expected = op(surrogate)
    torch.testing.assert_close(block(states), expected)


def _share(search_op: torch.nn.Module, fixed_op: torch.nn.Module) -> None:
    """Copy a search-form op's state into the fixed op built from the same name.

    Only the fixed op's affine BatchNorm weights and biases (1 and 0 at init, the same as
    the search form's non-affine BatchNorm) have no counterpart.
    """
    missing, unexpected = fixed_op.load_state_dict(search_op.state_dict(), strict=False)
    assert not unexpected
    assert all(k.rsplit(".", 1)[-1] in ("weight", "bias") for k in missing), missing
    for key in missing:
        assert isinstance(fixed_op.get_submodule(key.rsplit(".", 1)[0]), torch.nn.BatchNorm2d)


GENES = [
    ("nos", 2, BlockGene((("sep_conv_3x3", 0), ("spatial_attention", 1)), "dynamic_conv_5x5")),
    ("nos", 3, BlockGene((("channel_attention", 0), ("dil_conv_5x5", 2)), "sep_conv_5x5")),
    (
        "nos",
        3,
        BlockGene(
            (("dynamic_conv_3x3", 0), ("identity", 1), ("dynamic_conv_5x5", 2)), "channel_attention"
        ),
    ),
    ("nos", 4, BlockGene((("sep_conv_5x5", 0), ("identity", 3)), "spatial_attention")),
    ("nos", 5, BlockGene((("dynamic_conv_5x5", 1), ("dil_conv_3x3", 4)), "identity")),
    (
        "feature+dynamic",
        2,
        BlockGene((("identity", 0), ("dynamic_conv_3x3", 1)), "dynamic_conv_3x3"),
    ),
    ("darts", 3, BlockGene((("sep_conv_3x3", 0), ("identity", 1)))),
    ("darts", 4, BlockGene((("dil_conv_3x3", 1), ("sep_conv_5x5", 2)))),
]


@pytest.mark.parametrize("preset, num_inputs, gene", GENES)
@pytest.mark.parametrize("reduction", [False, True])
def test_search_block_at_one_hot_weights_is_the_derived_block(preset, num_inputs, gene, reduction):
    """The search form's limit is the derived cell: one-hot architecture weights (zero rows
    for edges not kept) and shared op parameters give the fixed block's output exactly.
    Pooling ops are left out: their search form adds a non-affine BatchNorm (as in DARTS)."""
    space = get_space(preset)
    search = SearchResidualBlock(C, num_inputs, reduction, space).double()
    fixed = HeterogeneousResidualBlock(C, gene, reduction).double()
    tier1 = torch.zeros(num_inputs, space.num_ops, dtype=DOUBLE)
    for k, (name, source) in enumerate(gene.edges):
        column = space.ops.index(name)
        tier1[source, column] = 1.0
        _share(search.tier1[source].ops[column], fixed.edges[k])
    tier2 = None
    if gene.tier2 is not None:
        tier2 = _one_hot(space, gene.tier2)
        _share(search.tier2.ops[space.ops.index(gene.tier2)], fixed.tier2)
    assert (search.tier2 is None) == (not space.two_tier)
    states = _states(num_inputs, reduction, batch=3)
    expected = fixed(states)
    assert expected.shape == (3, C, 4 if reduction else 8, 4 if reduction else 8)
    torch.testing.assert_close(search(states, tier1, tier2), expected, rtol=1e-10, atol=1e-10)


def test_search_block_mixture_differs_from_one_hot():
    """Guards the test above: with soft weights the search block is not the derived one."""
    space = get_space("nos")
    search = SearchResidualBlock(C, 2, False, space).double()
    states = _states(2, False)
    soft = torch.randn(2, space.num_ops, dtype=DOUBLE).softmax(-1)
    hard = torch.zeros_like(soft)
    hard[0, 0] = hard[1, 7] = 1.0
    tier2 = _one_hot(space, "identity")
    assert not torch.allclose(search(states, soft, tier2), search(states, hard, tier2))
