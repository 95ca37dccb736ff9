"""Cells (Sec. 3.2, Fig. 4), the search supernet (Sec. 4.2) and evaluation networks (4.3)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from nos_ops.cell import Cell, SearchCell
from nos_ops.genotype import DARTS_V2, BlockGene, CellGene, Genotype, derive_cell
from nos_ops.models import NetworkCIFAR, NetworkImageNet, SearchNetwork
from nos_ops.space import SPACES, get_space

C = 4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tensors here are tiny: intra-op threads only add contention on small CI machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


NOS_GENOTYPE = Genotype(
    normal=CellGene(
        (
            BlockGene((("sep_conv_3x3", 0), ("spatial_attention", 1)), "dynamic_conv_3x3"),
            BlockGene((("sep_conv_5x5", 1), ("channel_attention", 2)), "dynamic_conv_5x5"),
            BlockGene((("dil_conv_3x3", 0), ("dynamic_conv_3x3", 3)), "identity"),
            BlockGene((("identity", 0), ("dynamic_conv_5x5", 2)), "channel_attention"),
        ),
        (2, 3, 4, 5),
    ),
    reduce=CellGene(
        (
            BlockGene((("max_pool_3x3", 0), ("dynamic_conv_5x5", 1)), "spatial_attention"),
            BlockGene((("sep_conv_3x3", 1), ("spatial_attention", 2)), "sep_conv_3x3"),
            BlockGene((("identity", 2), ("channel_attention", 0)), "dynamic_conv_3x3"),
            BlockGene((("avg_pool_3x3", 1), ("dynamic_conv_3x3", 4)), "channel_attention"),
        ),
        (2, 3, 4, 5),
    ),
)
"""A hand-made derived NOS genotype: attention and dynamic ops in both tiers."""

CELL_KINDS = [(False, False), (True, False), (False, True)]  # (reduction, reduction_prev)


def _cell_inputs(batch: int, reduction_prev: bool, size: int = 8) -> tuple:
    prev_prev = 2 * size if reduction_prev else size
    return torch.randn(batch, 6, prev_prev, prev_prev), torch.randn(batch, 10, size, size)


@pytest.mark.parametrize("preset", list(SPACES))
@pytest.mark.parametrize("reduction, reduction_prev", CELL_KINDS)
def test_search_cell_shapes(preset, reduction, reduction_prev):
    space = get_space(preset)
    cell = SearchCell(space, 6, 10, C, reduction, reduction_prev)
    weights = torch.randn(space.num_edges, space.num_ops).softmax(-1)
    size = 4 if reduction else 8
    for batch in (1, 3):
        out = cell(*_cell_inputs(batch, reduction_prev), weights)
        assert out.shape == (batch, space.steps * C, size, size)
    assert cell.out_channels == space.steps * C


@pytest.mark.parametrize("preset", [*SPACES, "hand-made"])
@pytest.mark.parametrize("reduction, reduction_prev", CELL_KINDS)
def test_fixed_cell_shapes(preset, reduction, reduction_prev):
    if preset == "hand-made":
        gene = NOS_GENOTYPE.reduce if reduction else NOS_GENOTYPE.normal
    else:
        space = get_space(preset)
        gene = derive_cell(torch.randn(space.num_edges, space.num_ops), space)
    cell = Cell(gene, 6, 10, C, reduction, reduction_prev)
    size = 4 if reduction else 8
    for batch in (1, 3):
        out = cell(*_cell_inputs(batch, reduction_prev), drop_prob=0.2)
        assert out.shape == (batch, len(gene.concat) * C, size, size)
    assert cell.out_channels == len(gene.concat) * C


@pytest.mark.parametrize("preset, shape", [("nos", (18, 11)), ("darts", (14, 8))])
def test_search_network_gradients_reach_every_parameter(preset, shape):
    torch.manual_seed(0)
    net = SearchNetwork(C, 5, layers=3, space=preset)
    assert net.alphas_normal.shape == net.alphas_reduce.shape == shape
    arch = net.arch_parameters()
    assert arch == [net.alphas_normal, net.alphas_reduce]
    weights = net.weight_parameters()
    assert not {id(p) for p in arch} & {id(p) for p in weights}
    assert {id(p) for p in arch} | {id(p) for p in weights} == {id(p) for p in net.parameters()}

    # batch 4: with a tiny batch a squeeze-excitation ReLU can be dead for every sample
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([1, 3, 0, 2])
    logits, stages = net.forward_stages(x)
    assert logits.shape == (4, 5)
    assert [s.shape for s in stages] == [(4, 4 * C, 8, 8), (4, 8 * C, 4, 4), (4, 16 * C, 2, 2)]
    F.cross_entropy(logits, y).backward()
    names = {id(p): n for n, p in net.named_parameters()}
    missing = [names[id(p)] for p in net.parameters() if p.grad is None]
    assert not missing, f"no gradient: {missing}"
    assert all(p.grad.abs().min() > 0 for p in arch)
    # a squeeze-excitation ReLU can be dead on BN-normalised inputs (zero-mean channels):
    # its exact-zero gradient is legitimate, but it must stay rare
    zero = [names[id(p)] for p in weights if not p.grad.any()]
    assert len(zero) <= 0.02 * len(weights), f"zero gradient: {zero}"
    torch.testing.assert_close(net(x), logits)
    genotype = net.genotype()
    for cell in (genotype.normal, genotype.reduce):
        assert len(cell.blocks) == 4
        assert all((b.tier2 is not None) == (preset == "nos") for b in cell.blocks)


def test_search_network_stages_with_more_layers():
    net = SearchNetwork(C, 10, layers=5, space="darts")
    _, stages = net.forward_stages(torch.randn(1, 3, 8, 8))
    assert [s.shape[1:] for s in stages] == [(4 * C, 8, 8), (8 * C, 4, 4), (16 * C, 2, 2)]
    assert net.stage_ends == (0, 2, 4)


def test_search_network_needs_three_layers():
    with pytest.raises(ValueError, match="layers=2 is not valid"):
        SearchNetwork(C, 10, layers=2)


def _params(module: torch.nn.Module, skip: str | None = None) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if skip is None or skip not in n)


def test_darts_v2_cifar_network_has_the_published_size():
    with torch.device("meta"):
        plain = NetworkCIFAR(36, 10, 20, DARTS_V2, auxiliary=False)
        with_aux = NetworkCIFAR(36, 10, 20, DARTS_V2, auxiliary=True)
    assert _params(plain) == 3_349_342
    assert _params(with_aux, skip="auxiliary") == 3_349_342
    assert _params(with_aux) > _params(plain)


def test_nos_network_trains_one_step():
    torch.manual_seed(0)
    net = NetworkCIFAR(C, 10, 3, NOS_GENOTYPE, auxiliary=True)
    net.train()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 7])
    logits, aux = net(x)
    assert logits.shape == aux.shape == (2, 10)
    loss = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    # every parameter moves, those of the attention and dynamic ops of both tiers included
    unchanged = [n for n, p in net.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged
    assert any(".tier2.transform" in n for n in before)
    assert any(".edges.1.proj" in n for n in before)
    net.eval()
    with torch.no_grad():
        logits, aux = net(x)
    assert aux is None and logits.shape == (2, 10)


def test_drop_path_acts_in_training_only():
    torch.manual_seed(0)
    net = NetworkCIFAR(C, 10, 3, DARTS_V2, auxiliary=False)  # blocks of two feature edges
    x = torch.randn(3, 3, 16, 16)
    net.train()
    with torch.no_grad():
        net.drop_path_prob = 0.0
        plain = net(x)[0]
        torch.testing.assert_close(net(x)[0], plain)
        net.drop_path_prob = 0.5
        torch.manual_seed(1)
        assert not torch.allclose(net(x)[0], plain)
    net.eval()
    with torch.no_grad():
        net.drop_path_prob = 0.0
        plain = net(x)[0]
        net.drop_path_prob = 0.5
        torch.testing.assert_close(net(x)[0], plain)


@pytest.mark.parametrize("genotype", [DARTS_V2, NOS_GENOTYPE], ids=["DARTS_V2", "NOS"])
def test_imagenet_mobile_setting(genotype):
    """ImageNet mobile setting: < 600M multiply-adds at 224 x 224 (counted on the meta
    device: the same forward, shapes only)."""
    with torch.device("meta"):
        net = NetworkImageNet(48, 1000, 14, genotype, auxiliary=True).eval()
        x = torch.empty(1, 3, 224, 224)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        logits, aux = net(x)
    assert logits.shape == (1, 1000) and aux is None
    macs = counter.get_total_flops() / 2
    assert 300e6 < macs < 600e6
