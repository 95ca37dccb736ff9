"""torch.compile where users will use it (issue 13, item 3).

Graph breaks are counted with ``torch._dynamo.explain``; recompiles with a counting
backend over two batch sizes under ``dynamic=True``. The checks use dynamo's ``eager``
backend (tracing is what breaks or recompiles; inductor code generation on CPU is slow);
one tiny DynamicConv2d model is compiled with inductor end to end.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo as dynamo
from torch import nn
from torch._dynamo.testing import CompileCounter

from nos_ops.block import HeterogeneousResidualBlock
from nos_ops.genotype import BlockGene, CellGene, Genotype
from nos_ops.models.eval import NetworkCIFAR
from nos_ops.models.search import SearchNetwork
from nos_ops.ops.registry import create_op
from nos_ops.space import SearchSpace

BATCHES = (2, 3)  # 0 and 1 are specialised by dynamo; two sizes above them


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    dynamo.reset()
    yield
    dynamo.reset()


def nos_genotype() -> Genotype:
    """A derived NOS cell holding dynamic and attention ops at both tiers."""
    cell = CellGene(
        (
            BlockGene((("sep_conv_3x3", 0), ("dynamic_conv_3x3", 1)), "spatial_attention"),
            BlockGene((("dil_conv_3x3", 0), ("channel_attention", 2)), "dynamic_conv_5x5"),
            BlockGene((("identity", 1), ("spatial_attention", 0)), None),
            BlockGene((("max_pool_3x3", 0), ("dil_dynamic_conv_3x3", 3)), "channel_attention"),
        ),
        (2, 3, 4, 5),
    )
    return Genotype(cell, cell)


def _frames(fn, inputs) -> int:
    """Frames compiled by ``torch.compile(fn, dynamic=True)`` over ``inputs`` (a recompile
    per batch size would make it grow with the sizes)."""
    counter = CompileCounter()
    compiled = torch.compile(fn, backend=counter, dynamic=True)
    for x in inputs:
        compiled(x)
    return counter.frame_count


@pytest.mark.parametrize(
    "name", ["dynamic_conv_3x3", "dil_dynamic_conv_5x5", "spatial_attention", "channel_attention"]
)
def test_op_has_no_graph_break(name: str) -> None:
    op = create_op(name, 8)
    explained = dynamo.explain(op)(torch.randn(2, 8, 8, 8))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


@pytest.mark.parametrize("training", [False, True])
def test_derived_block_has_no_graph_break(training: bool) -> None:
    gene = BlockGene((("sep_conv_3x3", 0), ("dynamic_conv_3x3", 1)), "channel_attention")
    block = HeterogeneousResidualBlock(8, gene, reduction=False).train(training)
    x = torch.randn(2, 8, 8, 8)
    explained = dynamo.explain(lambda a, b: block([a, b], 0.2))(x, x)
    assert explained.graph_break_count == 0, explained.break_reasons


def test_dynamic_conv_model_compiles_once_for_batch_sizes() -> None:
    model = nn.Sequential(create_op("dynamic_conv_3x3", 8), create_op("dynamic_conv_5x5", 8))

    def step(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        out.sum().backward()
        return out

    assert _frames(step, [torch.randn(b, 8, 8, 8) for b in BATCHES]) == 1


def test_dynamic_conv_model_inductor_matches_eager() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(create_op("dynamic_conv_3x3", 4), nn.ReLU())
    compiled = torch.compile(model, dynamic=True)
    for b in BATCHES:
        x = torch.randn(b, 4, 6, 6)
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)


def test_eval_network_compiles_once_without_graph_break() -> None:
    net = NetworkCIFAR(4, 10, 3, nos_genotype(), auxiliary=False)
    net.drop_path_prob = 0.1

    def forward(x: torch.Tensor) -> torch.Tensor:
        return net(x)[0]

    # One frame over both sizes: no graph break (a break splits the frame) and no recompile.
    assert _frames(forward, [torch.randn(b, 3, 8, 8) for b in BATCHES]) == 1


def _tiny_supernet() -> SearchNetwork:
    ops = ("none", "identity", "sep_conv_3x3", "dynamic_conv_3x3", "spatial_attention")
    return SearchNetwork(4, 10, 3, SearchSpace("tiny", ops, two_tier=True, steps=2))


def test_supernet_forward_compiles_once() -> None:
    """The supernet's forward with dynamic and attention candidates (no autograd)."""
    net = _tiny_supernet()
    with torch.no_grad():
        assert _frames(net, [torch.randn(b, 3, 8, 8) for b in BATCHES]) == 1


def test_supernet_training_forward_compiles() -> None:
    net = _tiny_supernet()
    assert _frames(net, [torch.randn(b, 3, 8, 8) for b in BATCHES]) == 1
