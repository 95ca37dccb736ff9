"""The DARTS-space genotype zoo: published cells of DARTS and of methods searched in its space.

Cells are data, written as their authors' ``genotypes.py`` print them: per inner node two
``(op, input)`` pairs in DARTS's op names (``skip_connect`` is our ``identity``), then the
concatenated nodes. :mod:`nos_ops.genotype` turns each entry into a :class:`~nos_ops.Genotype`
(``get_genotype("PC_DARTS")``). The single-tier DARTS case of Sec. 3.3: no tier-2 op.

``PUBLISHED_PARAMS`` holds each method's published parameter count of its CIFAR-10 evaluation
network (20 cells, 36 channels; the auxiliary head not counted), and ``REFERENCE_PARAMS`` the
exact counts the DARTS reference code (quark0/darts ``cnn/model.py``, commit f276dd3) gives
for these genotypes, which our networks reproduce parameter for parameter.
"""

from __future__ import annotations

__all__ = ["DARTS_SPACE_CELLS", "ALIASES", "PUBLISHED_PARAMS", "REFERENCE_PARAMS"]

Pairs = list[tuple[str, int]]

# name -> (normal, normal_concat, reduce, reduce_concat), laid out as the sources print them
# fmt: off
DARTS_SPACE_CELLS: dict[str, tuple[Pairs, list[int], Pairs, list[int]]] = {
    # quark0/darts, cnn/genotypes.py (commit f276dd3): NASNet-A (Zoph et al. 2018) as the
    # DARTS reference writes it; five blocks per cell, sep_conv_7x7 in the reduction cell.
    "NASNet": (
        [("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 0), ("sep_conv_3x3", 0),
         ("avg_pool_3x3", 1), ("skip_connect", 0), ("avg_pool_3x3", 0), ("avg_pool_3x3", 0),
         ("sep_conv_3x3", 1), ("skip_connect", 1)],
        [2, 3, 4, 5, 6],
        [("sep_conv_5x5", 1), ("sep_conv_7x7", 0), ("max_pool_3x3", 1), ("sep_conv_7x7", 0),
         ("avg_pool_3x3", 1), ("sep_conv_5x5", 0), ("skip_connect", 3), ("avg_pool_3x3", 2),
         ("sep_conv_3x3", 2), ("max_pool_3x3", 1)],
        [4, 5, 6],
    ),
    # quark0/darts, cnn/genotypes.py (commit f276dd3): AmoebaNet-A (Real et al. 2019) as the
    # DARTS reference writes it; conv_7x1_1x7 and sep_conv_7x7 in the reduction cell.
    "AmoebaNet": (
        [("avg_pool_3x3", 0), ("max_pool_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 2),
         ("sep_conv_3x3", 0), ("avg_pool_3x3", 3), ("sep_conv_3x3", 1), ("skip_connect", 1),
         ("skip_connect", 0), ("avg_pool_3x3", 1)],
        [4, 5, 6],
        [("avg_pool_3x3", 0), ("sep_conv_3x3", 1), ("max_pool_3x3", 0), ("sep_conv_7x7", 2),
         ("sep_conv_7x7", 0), ("avg_pool_3x3", 1), ("max_pool_3x3", 0), ("max_pool_3x3", 1),
         ("conv_7x1_1x7", 0), ("sep_conv_3x3", 5)],
        [3, 4, 6],
    ),
    # quark0/darts, cnn/genotypes.py (commit f276dd3): DARTS first order (Liu et al. 2019).
    "DARTS_V1": (
        [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
        [2, 3, 4, 5],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
        [2, 3, 4, 5],
    ),
    # quark0/darts, cnn/genotypes.py (commit f276dd3): DARTS second order, the paper's
    # "DARTS (2nd)".
    "DARTS_V2": (
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
        [2, 3, 4, 5],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
        [2, 3, 4, 5],
    ),
    # yuhuixu1993/PC-DARTS, genotypes.py (commit 283b086), PC_DARTS_cifar: PC-DARTS (Xu et al.,
    # ICLR 2020) searched on CIFAR-10; 3.6 M parameters on CIFAR-10 (paper, Table 1).
    "PC_DARTS_cifar": (
        [("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
         ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
        [2, 3, 4, 5],
        [("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
         ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
        [2, 3, 4, 5],
    ),
    # yuhuixu1993/PC-DARTS, genotypes.py (commit 283b086), PC_DARTS_image: PC-DARTS searched
    # on ImageNet; 5.3 M parameters in the ImageNet-mobile network (paper, Table 2).
    "PC_DARTS_image": (
        [("skip_connect", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 0), ("skip_connect", 1),
         ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("dil_conv_5x5", 4)],
        [2, 3, 4, 5],
        [("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_5x5", 2), ("max_pool_3x3", 1),
         ("sep_conv_3x3", 2), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0), ("sep_conv_3x3", 3)],
        [2, 3, 4, 5],
    ),
    # chenxin061/pdarts, genotypes.py (commit b1575e1), PDARTS: P-DARTS (Chen et al., ICCV
    # 2019) searched on CIFAR-10; 3.4 M parameters on CIFAR-10 (paper, Table 1).
    "PDARTS": (
        [("skip_connect", 0), ("dil_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 0), ("dil_conv_5x5", 4)],
        [2, 3, 4, 5],
        [("avg_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("dil_conv_5x5", 2),
         ("max_pool_3x3", 0), ("dil_conv_3x3", 1), ("dil_conv_3x3", 1), ("dil_conv_5x5", 3)],
        [2, 3, 4, 5],
    ),
}
# fmt: on

# Other names the authors' repositories use for the same cells.
ALIASES: dict[str, str] = {
    "DARTS": "DARTS_V2",  # quark0/darts: DARTS = DARTS_V2
    "PC_DARTS": "PC_DARTS_cifar",  # yuhuixu1993/PC-DARTS: PCDARTS = PC_DARTS_cifar
    "PCDARTS": "PC_DARTS_cifar",
}

# Published parameter counts of the CIFAR-10 evaluation networks (20 cells, 36 channels),
# rounded as the papers print them (auxiliary head excluded, as DARTS counts). DARTS's Table 1
# prints 3.3 M for its first-order cell too; its own code counts 3.17 M (REFERENCE_PARAMS).
PUBLISHED_PARAMS: dict[str, float] = {
    "DARTS_V2": 3.3e6,  # DARTS paper, Table 1 (second order)
    "PC_DARTS_cifar": 3.6e6,  # PC-DARTS paper, Table 1
    "PDARTS": 3.4e6,  # P-DARTS paper, Table 1
}

# Exact counts of the DARTS reference code (cnn/model.py NetworkCIFAR(36, 10, 20) and
# NetworkImageNet(48, 1000, 14), auxiliary head excluded), measured once with that code.
REFERENCE_PARAMS: dict[str, tuple[int, int]] = {  # name -> (CIFAR-10, ImageNet)
    "NASNet": (3_830_950, 5_564_320),
    "AmoebaNet": (3_145_078, 4_627_360),
    "DARTS_V1": (3_169_414, 4_510_432),
    "DARTS_V2": (3_349_342, 4_718_752),
    "PC_DARTS_cifar": (3_634_678, 5_270_560),
    "PC_DARTS_image": (3_721_510, 5_342_464),
    "PDARTS": (3_433_798, 4_944_352),
}
