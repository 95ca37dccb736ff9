"""The DARTS-space genotype zoo: every genotype builds, with the reference's parameter counts.

Each CIFAR-10 (20 cells, 36 channels) and ImageNet-mobile (14 cells, 48 channels) network is
built once; the counts are the DARTS reference code's (``nos_ops.zoo.REFERENCE_PARAMS``) and
agree with the published figures (``nos_ops.zoo.PUBLISHED_PARAMS``) to the papers' rounding.
"""

from __future__ import annotations

import pytest
import torch

from nos_ops import Genotype, NetworkCIFAR, NetworkImageNet, create_op, get_genotype
from nos_ops.genotype import GENOTYPES, from_darts
from nos_ops.zoo import ALIASES, DARTS_SPACE_CELLS, PUBLISHED_PARAMS, REFERENCE_PARAMS

pytestmark = pytest.mark.usefixtures("single_thread")


def _params(model: torch.nn.Module) -> int:
    """Parameters without the auxiliary head, as DARTS counts them."""
    return sum(p.numel() for k, p in model.named_parameters() if not k.startswith("auxiliary"))


@pytest.mark.parametrize("name", list(REFERENCE_PARAMS))
def test_reference_parameter_counts(name: str) -> None:
    cifar, imagenet = REFERENCE_PARAMS[name]
    assert _params(NetworkCIFAR(36, 10, 20, genotype=name)) == cifar
    assert _params(NetworkImageNet(48, 1000, 14, genotype=name)) == imagenet


@pytest.mark.parametrize("name", list(PUBLISHED_PARAMS))
def test_published_parameter_counts(name: str) -> None:
    # the papers print millions to one decimal
    assert round(REFERENCE_PARAMS[name][0] / 1e6, 1) == PUBLISHED_PARAMS[name] / 1e6


def test_every_zoo_entry_is_reachable_by_name() -> None:
    assert set(DARTS_SPACE_CELLS) <= set(GENOTYPES)
    assert set(DARTS_SPACE_CELLS) == set(REFERENCE_PARAMS)
    for name, cells in DARTS_SPACE_CELLS.items():
        assert get_genotype(name) == from_darts(*cells)
    for alias, name in ALIASES.items():
        assert get_genotype(alias) is get_genotype(name)
    # the names the issue and the authors' repositories use
    assert get_genotype("PC_DARTS") == from_darts(*DARTS_SPACE_CELLS["PC_DARTS_cifar"])
    assert get_genotype("PDARTS").normal.blocks[0].edges == (("identity", 0), ("dil_conv_3x3", 1))


def test_zoo_genotypes_round_trip_json() -> None:
    for genotype in GENOTYPES.values():
        assert Genotype.from_dict(genotype.to_dict()) == genotype


def test_five_block_cells_concatenate_their_nodes() -> None:
    nasnet, amoeba = get_genotype("NASNet"), get_genotype("AmoebaNet")
    assert len(nasnet.normal.blocks) == 5 and nasnet.reduce.concat == (4, 5, 6)
    assert amoeba.reduce.concat == (3, 4, 6)
    assert "sep_conv_7x7" in nasnet.reduce.ops and "conv_7x1_1x7" in amoeba.reduce.ops


@pytest.mark.parametrize("name", ["NASNet", "AmoebaNet"])
def test_seven_by_seven_genotypes_run(name: str) -> None:
    model = NetworkCIFAR(8, 10, 3, genotype=name, auxiliary=False).eval()
    logits, aux = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and aux is None


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [7, 8])
def test_seven_by_seven_ops_shapes(stride: int, size: int) -> None:
    x = torch.randn(2, 6, size, size)
    out = -(-size // stride)
    for name in ("sep_conv_7x7", "conv_7x1_1x7"):
        assert create_op(name, 6, stride).eval()(x).shape == (2, 6, out, out)


def test_conv_7x1_1x7_is_built_as_darts_builds_it() -> None:
    op = create_op("conv_7x1_1x7", 4, 2, affine=False)
    relu, conv1, conv2, bn = op
    assert isinstance(relu, torch.nn.ReLU)
    assert (conv1.kernel_size, conv1.stride, conv1.padding) == ((1, 7), (1, 2), (0, 3))
    assert (conv2.kernel_size, conv2.stride, conv2.padding) == ((7, 1), (2, 1), (3, 0))
    assert conv1.bias is None and conv2.bias is None and not bn.affine
    # 2 * C * C * 7 conv weights (+ 2C BN affine)
    assert sum(p.numel() for p in create_op("conv_7x1_1x7", 4).parameters()) == 2 * 16 * 7 + 8


@pytest.mark.parametrize("affine", [True, False])
def test_sep_conv_7x7_parameter_count_is_darts(affine: bool) -> None:
    # DARTS SepConv(C, C, 7, stride, 3): twice (7x7 depthwise, 1x1 pointwise, BN)
    c, bn = 16, (32 if affine else 0)
    op = create_op("sep_conv_7x7", c, 2, affine)
    assert sum(p.numel() for p in op.parameters()) == 2 * (49 * c + c * c + bn)
    assert op[0][1].stride == (2, 2) and op[1][1].stride == (1, 1)
    assert op[0][1].padding == (3, 3) and op[0][1].kernel_size == (7, 7)
