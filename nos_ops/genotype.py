"""Genotypes: derived cells, the derivation rule (Sec. 3.3, "Search Outcome") and JSON.

A :class:`Genotype` holds a normal and a reduction :class:`CellGene`; each cell is a list
of :class:`BlockGene` (tier-1 edges ``(op, source node)`` and an optional tier-2 op) and
the nodes concatenated into the cell output. DARTS genotypes are the single-tier case.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .ops.registry import Family, get_op
from .space import SearchSpace, get_space

__all__ = [
    "BlockGene",
    "CellGene",
    "Genotype",
    "derive",
    "derive_cell",
    "from_darts",
    "DARTS_V1",
    "DARTS_V2",
    "GENOTYPES",
    "get_genotype",
    "SCHEMA_VERSION",
]

SCHEMA_VERSION = 1
_DARTS_NAMES = {"skip_connect": "identity"}


@dataclass(frozen=True)
class BlockGene:
    """One derived block: tier-1 ``edges`` as ``(op name, source node)`` pairs and the
    ``tier2`` op name (None for a single-tier cell). Nodes 0 and 1 are the cell inputs;
    block i is node i + 2."""

    edges: tuple[tuple[str, int], ...]
    tier2: str | None = None

    def validate(self, node: int) -> None:
        """Raise ``ValueError`` unless this gene is a valid block for ``node``."""
        if not self.edges:
            raise ValueError(f"block for node {node} has no edges")
        for name, source in self.edges:
            get_op(name)
            if not isinstance(source, int) or not 0 <= source < node:
                raise ValueError(
                    f"edge ({name!r}, {source!r}) into node {node}: source must be an int "
                    f"in [0, {node - 1}]"
                )
        if not any(
            get_op(name).family is Family.FEATURE and name != "none" for name, _ in self.edges
        ):
            raise ValueError(
                f"block for node {node} needs at least one feature op, got {self.edges}"
            )
        if self.tier2 is not None:
            get_op(self.tier2)


@dataclass(frozen=True)
class CellGene:
    """A derived cell: its blocks (node 2, 3, ...) and the nodes concatenated as output."""

    blocks: tuple[BlockGene, ...]
    concat: tuple[int, ...]

    def __post_init__(self) -> None:
        for i, block in enumerate(self.blocks):
            block.validate(i + 2)
        last = len(self.blocks) + 1
        if not self.concat or any(not 2 <= n <= last for n in self.concat):
            raise ValueError(f"concat={self.concat} must name inner nodes in [2, {last}]")

    @property
    def ops(self) -> list[str]:
        """Every op name in the cell, tier-1 then tier-2 per block."""
        names = []
        for block in self.blocks:
            names += [n for n, _ in block.edges] + ([block.tier2] if block.tier2 else [])
        return names


@dataclass(frozen=True)
class Genotype:
    """The searched architecture: a normal and a reduction cell."""

    normal: CellGene
    reduce: CellGene

    def to_dict(self) -> dict:
        def cell(c: CellGene) -> dict:
            return {
                "blocks": [
                    {"edges": [[n, s] for n, s in b.edges], "tier2": b.tier2} for b in c.blocks
                ],
                "concat": list(c.concat),
            }

        return {
            "schema": "nos_ops.genotype",
            "version": SCHEMA_VERSION,
            "normal": cell(self.normal),
            "reduce": cell(self.reduce),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Genotype:
        """Inverse of :meth:`to_dict`; ``ValueError`` naming what is malformed."""
        if not isinstance(data, dict) or data.get("schema") != "nos_ops.genotype":
            raise ValueError(
                "not a nos_ops genotype: expected a dict with schema='nos_ops.genotype'"
            )
        if data.get("version") != SCHEMA_VERSION:
            raise ValueError(
                f"genotype version={data.get('version')!r} is not supported; "
                f"expected {SCHEMA_VERSION}"
            )
        try:
            return cls(_cell_from_dict(data["normal"]), _cell_from_dict(data["reduce"]))
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed genotype: {err!r}") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write JSON atomically (temporary file, then rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Genotype:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        return cls.from_dict(data)


def _cell_from_dict(data: dict) -> CellGene:
    for block in data["blocks"]:
        for edge in block["edges"]:
            if not isinstance(edge, (list, tuple)) or len(edge) != 2:
                raise ValueError(f"malformed genotype: edge {edge!r} is not an [op, source] pair")
    blocks = tuple(
        BlockGene(tuple((str(n), int(s)) for n, s in b["edges"]), b.get("tier2"))
        for b in data["blocks"]
    )
    return CellGene(blocks, tuple(int(n) for n in data["concat"]))


def from_darts(
    normal: Sequence[tuple[str, int]],
    normal_concat: Sequence[int],
    reduce: Sequence[tuple[str, int]],
    reduce_concat: Sequence[int],
) -> Genotype:
    """Import a DARTS genotype (two ``(op, input)`` pairs per node; ``skip_connect`` is
    our ``identity``)."""

    def cell(pairs: Sequence[tuple[str, int]], concat: Sequence[int]) -> CellGene:
        if len(pairs) % 2:
            raise ValueError(f"a DARTS cell lists two (op, input) pairs per node, got {len(pairs)}")
        edges = [(_DARTS_NAMES.get(n, n), int(s)) for n, s in pairs]
        blocks = tuple(BlockGene(tuple(edges[i : i + 2])) for i in range(0, len(edges), 2))
        return CellGene(blocks, tuple(concat))

    return Genotype(cell(normal, normal_concat), cell(reduce, reduce_concat))


def derive_cell(
    weights: torch.Tensor, space: SearchSpace | str, edge_weights: torch.Tensor | None = None
) -> CellGene:
    """Derive one cell from its architecture weights (num_edges x |O| logits).

    Per block (Sec. 3.3): the two strongest tier-1 edges from distinct sources whose ops
    include at least one feature op, and the strongest tier-2 op.

    Strength is the edge's softmax weight of an op; ``none`` is never chosen (as in
    DARTS). Each edge offers its strongest op and its strongest feature op; the pair of
    offers with the largest summed strength that contains a feature op wins. Ties go to
    the lower source node, then to the op listed first in the space. With PC-DARTS edge
    normalisation, ``edge_weights`` (one logit per tier-1 edge) are softmaxed over the
    inputs of each node and multiply the tier-1 strengths, as in PC-DARTS.
    """
    space = get_space(space)
    if weights.shape != (space.num_edges, space.num_ops):
        raise ValueError(
            f"weights has shape {tuple(weights.shape)}; expected "
            f"({space.num_edges}, {space.num_ops}) for space {space.name!r}"
        )
    probs = weights.detach().float().softmax(dim=-1).cpu()
    if edge_weights is not None:
        if edge_weights.shape != (space.tier1_edges,):
            raise ValueError(
                f"edge_weights has shape {tuple(edge_weights.shape)}; expected "
                f"({space.tier1_edges},)"
            )
        betas, start = edge_weights.detach().float().cpu(), 0
        for step in range(space.steps):
            rows = slice(start, start + 2 + step)
            probs[rows] *= betas[rows].softmax(dim=-1).unsqueeze(-1)
            start = rows.stop
    usable = [i for i, n in enumerate(space.ops) if n != "none"]
    feature = [i for i in usable if space.family(space.ops[i]) is Family.FEATURE]

    def best(row: torch.Tensor, columns: list[int]) -> tuple[float, int]:
        # max strength, earliest column on ties
        return max((float(row[c]), -c) for c in columns)

    blocks, offset = [], 0
    for step in range(space.steps):
        num_inputs = 2 + step
        offers = []  # (strength, source, column)
        for source in range(num_inputs):
            row = probs[offset + source]
            for strength, neg_col in {best(row, usable), best(row, feature)}:
                offers.append((strength, source, -neg_col))
        pairs = [
            (a, b)
            for a, b in itertools.combinations(offers, 2)
            if a[1] != b[1] and (a[2] in feature or b[2] in feature)
        ]
        # offers are in source order, so p[0] is the lower source; the key is unique per pair
        a, b = max(pairs, key=lambda p: (p[0][0] + p[1][0], -p[0][1], -p[1][1], -p[0][2], -p[1][2]))
        edges = tuple((space.ops[col], src) for _, src, col in sorted([a, b], key=lambda o: o[1]))
        tier2 = None
        if space.two_tier:
            tier2 = space.ops[-best(probs[space.tier1_edges + step], usable)[1]]
        blocks.append(BlockGene(edges, tier2))
        offset += num_inputs
    return CellGene(tuple(blocks), tuple(range(2, 2 + space.steps)))


def derive(
    normal_weights: torch.Tensor,
    reduce_weights: torch.Tensor,
    space: SearchSpace | str,
    normal_edge_weights: torch.Tensor | None = None,
    reduce_edge_weights: torch.Tensor | None = None,
) -> Genotype:
    """The genotype of a search network's architecture weights (see :func:`derive_cell`)."""
    return Genotype(
        derive_cell(normal_weights, space, normal_edge_weights),
        derive_cell(reduce_weights, space, reduce_edge_weights),
    )


DARTS_V1 = from_darts(
    [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
     ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    [2, 3, 4, 5],
    [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
     ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
    [2, 3, 4, 5],
)
"""DARTS first-order cells, as published in DARTS's ``genotypes.py``."""

DARTS_V2 = from_darts(
    [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
     ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    [2, 3, 4, 5],
    [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
     ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    [2, 3, 4, 5],
)
"""DARTS second-order cells (the paper's "DARTS (2nd)"), as published."""

GENOTYPES: dict[str, Genotype] = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2, "DARTS": DARTS_V2}


def get_genotype(genotype: str | os.PathLike | Genotype) -> Genotype:
    """A named genotype (``DARTS_V2``...), a JSON file path, or ``genotype`` itself."""
    if isinstance(genotype, Genotype):
        return genotype
    if str(genotype) in GENOTYPES:
        return GENOTYPES[str(genotype)]
    if Path(genotype).is_file():
        return Genotype.load(genotype)
    raise ValueError(
        f"genotype={str(genotype)!r} is neither a file nor a known name; names: "
        f"{', '.join(GENOTYPES)}"
    )
