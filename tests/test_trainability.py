"""Self-calibration ops are stable in the input's scale, and NOS genotypes train.

``DynamicConv2d`` generates its kernels from the RMS-normalised input and bounds every tap
by 1 / k^2, so it is positively homogeneous (``op(s x) = s op(x)``) with a gain of at most
2; the attention ops gate with ``1 + A``, A in (0, 1), so ``|x| <= |op(x)| <= 2 |x|``.
The short trainability run is the suite's version of ``benchmarks/trainability.py``.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nos_ops import ChannelAttention, DynamicConv2d, SpatialAttention
from nos_ops.cell import Cell
from nos_ops.genotype import derive
from nos_ops.space import get_space

pytestmark = pytest.mark.usefixtures("single_thread")

scales = st.sampled_from([1e-3, 1e-2, 0.5, 3.0, 1e2, 1e3])


@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 12),
    size=st.integers(1, 9),
    kernel_size=st.sampled_from([3, 5]),
    dilation=st.integers(1, 2),
    stride=st.integers(1, 2),
    scale=scales,
)
def test_dynamic_conv_is_homogeneous_in_the_input_scale(
    batch: int,
    channels: int,
    size: int,
    kernel_size: int,
    dilation: int,
    stride: int,
    scale: float,
) -> None:
    op = DynamicConv2d(channels, kernel_size, stride, dilation, decode_init_std=1.0).double()
    x = torch.randn(batch, channels, size, size + 2, dtype=torch.float64)
    expected = scale * op(x)
    torch.testing.assert_close(op(scale * x), expected, rtol=1e-4, atol=1e-6 * scale)
    torch.testing.assert_close(op.kernels(scale * x), op.kernels(x), rtol=1e-4, atol=1e-9)


@given(channels=st.integers(1, 8), kernel_size=st.sampled_from([3, 5]), weight=scales)
def test_dynamic_conv_gain_is_at_most_two_whatever_the_weights(
    channels: int, kernel_size: int, weight: float
) -> None:
    op = DynamicConv2d(channels, kernel_size)
    with torch.no_grad():
        for p in op.parameters():
            p.normal_(std=weight)
    x = torch.randn(2, channels, 7, 7)
    kernels = op.kernels(x)
    assert kernels.abs().sum(dim=(-2, -1)).max() <= 1 + 1e-6  # |delta + D|_1 <= 2
    assert op(x).abs().max() <= 2 * x.abs().max() + 1e-6


@pytest.mark.parametrize("layer", [SpatialAttention, ChannelAttention])
@given(batch=st.integers(1, 3), channels=st.integers(1, 12), size=st.integers(1, 9), scale=scales)
def test_attention_gain_is_between_one_and_two(
    layer: type, batch: int, channels: int, size: int, scale: float
) -> None:
    op = layer(channels)
    x = scale * torch.randn(batch, channels, size, size)
    ratio = op(x) / x
    assert ratio.min() >= 1 - 1e-5 and ratio.max() <= 2 + 1e-5


@given(seed=st.integers(0, 2**16), scale=st.sampled_from([1e2, 1e3, 1e5]))
def test_derived_cells_do_not_react_to_the_input_scale(seed: int, scale: float) -> None:
    """Train mode: a cell's preprocessing BatchNorm removes the input scale, and no op after
    it may bring the scale back (a kernel generated linearly from its input would). Inputs
    of RMS 10 and more, so that BatchNorm's eps is negligible."""
    space = get_space("nos")
    g = torch.Generator().manual_seed(seed)
    shape = (space.num_edges, space.num_ops)
    genotype = derive(torch.randn(shape, generator=g), torch.randn(shape, generator=g), space)
    for gene, reduction in ((genotype.normal, False), (genotype.reduce, True)):
        cell = Cell(gene, 6, 6, 4, reduction, reduction_prev=False).double()
        s0, s1 = 10 * torch.randn(2, 2, 6, 8, 8, dtype=torch.float64)
        torch.testing.assert_close(cell(scale * s0, scale * s1), cell(s0, s1), rtol=1e-5, atol=1e-5)


def _trainability():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "trainability.py"
    spec = importlib.util.spec_from_file_location("benchmark_trainability", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "name", ["DARTS_V2", "t2_dynamic_conv_5x5", "t1_spatial_attention", "random_0"]
)
def test_short_trainability_run(name: str) -> None:
    bench = _trainability()
    ops = ["dynamic_conv_5x5", "spatial_attention"]
    genotype = bench.genotypes(1, ops)[name]
    recipe = bench.Recipe(
        epochs=3,
        max_steps_per_epoch=8,
        layers=5,
        channels=8,
        batch_size=32,
        drop_path=0.0,
        cutout=0,
    )
    result = bench.train_quick(genotype, recipe)
    assert result["finite"] and all(math.isfinite(v) for v in result["epoch_losses"])
    assert result["epoch_losses"][-1] < result["epoch_losses"][0]
    assert math.isfinite(result["eval_loss"]) and result["peak_activation"] < 1e3


def test_drop_path_spares_a_single_feature_input() -> None:
    """A node fed by one feature op and one self-calibration op keeps its features."""
    from nos_ops.block import HeterogeneousResidualBlock
    from nos_ops.genotype import BlockGene

    states = [torch.randn(4, 6, 5, 5) for _ in range(2)]
    single = HeterogeneousResidualBlock(
        6, BlockGene((("sep_conv_3x3", 0), ("dynamic_conv_3x3", 1))), False
    )
    double = HeterogeneousResidualBlock(
        6, BlockGene((("sep_conv_3x3", 0), ("dil_conv_3x3", 1))), False
    )
    for block, spared in ((single, True), (double, False)):
        block.train()
        torch.manual_seed(0)
        kept = block(states, 0.0)
        torch.manual_seed(0)
        dropped = block(states, 0.9)
        assert torch.equal(kept, dropped) is spared
