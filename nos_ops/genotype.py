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
from .zoo import ALIASES, DARTS_SPACE_CELLS

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
        """Raise ``ValueError`` unless this gene is a valid block for ``node``.

        Edges are ``(op, source)`` pairs: ``op`` a registered name other than ``none`` (which
        a derived cell never holds), ``source`` an int (not a bool or float) in
        [0, node - 1]; at least one edge is a feature op; ``tier2`` is None or an op name.
        """
        if not isinstance(self.edges, (tuple, list)):
            raise ValueError(
                f"edges={self.edges!r} into node {node} is not valid; expected a tuple of "
                "(op, source) pairs"
            )
        if not self.edges:
            raise ValueError(f"block for node {node} has no edges")
        for edge in self.edges:
            if not isinstance(edge, (tuple, list)) or len(edge) != 2:
                raise ValueError(f"edge {edge!r} into node {node} is not an (op, source) pair")
            name, source = edge
            _check_op_name(name, f"edge ({name!r}, {source!r}) into node {node}")
            if not _is_int(source) or not 0 <= source < node:
                raise ValueError(
                    f"edge ({name!r}, {source!r}) into node {node}: source must be an int "
                    f"in [0, {node - 1}]"
                    + (f", not a {type(source).__name__}" if not _is_int(source) else "")
                )
        if not any(get_op(name).family is Family.FEATURE for name, _ in self.edges):
            raise ValueError(
                f"block for node {node} needs at least one feature op, got {self.edges}"
            )
        if self.tier2 is not None:
            _check_op_name(self.tier2, f"tier2 of the block for node {node}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_op_name(name: object, where: str) -> None:
    """Raise ``ValueError`` unless ``name`` is a registered op a derived cell may hold."""
    if not isinstance(name, str):
        raise ValueError(f"{where}: op name={name!r} is not valid; expected a string")
    if name == "none":
        raise ValueError(f"{where}: op 'none' is not valid in a derived cell; drop the edge")
    try:
        get_op(name)
    except KeyError as err:
        raise ValueError(f"{where}: {err.args[0]}") from None


@dataclass(frozen=True)
class CellGene:
    """A derived cell: its blocks (node 2, 3, ...) and the nodes concatenated as output."""

    blocks: tuple[BlockGene, ...]
    concat: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.blocks, (tuple, list)) or not self.blocks:
            raise ValueError(
                f"blocks={self.blocks!r} is not valid; a cell needs at least one block"
            )
        for i, block in enumerate(self.blocks):
            if not isinstance(block, BlockGene):
                raise ValueError(f"block {i} is a {type(block).__name__}; expected a BlockGene")
            block.validate(i + 2)
        last = len(self.blocks) + 1
        concat = self.concat
        if (
            not isinstance(concat, (tuple, list))
            or not concat
            or any(not _is_int(n) or not 2 <= n <= last for n in concat)
        ):
            raise ValueError(f"concat={concat} must name inner nodes in [2, {last}] (ints)")
        if len(set(concat)) != len(concat):
            raise ValueError(f"concat={concat} is not valid; it names a node twice")

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

    def __post_init__(self) -> None:
        for name in ("normal", "reduce"):
            if not isinstance(getattr(self, name), CellGene):
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is not valid; expected a CellGene"
                )

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
        cells = []
        for key in ("normal", "reduce"):
            if key not in data:
                raise ValueError(f"malformed genotype: the {key!r} cell is missing")
            try:
                cells.append(_cell_from_dict(data[key]))
            except ValueError as err:
                raise ValueError(f"{key} cell: {err}") from None
        return cls(*cells)

    def save(self, path: str | os.PathLike) -> None:
        """Write JSON atomically (temporary file, then rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Genotype:
        """Read a genotype JSON file; every ``ValueError`` names the file."""
        raw = Path(path).read_bytes()  # FileNotFoundError / IsADirectoryError name the path
        if raw[:2] == b"PK" or raw[:1] == b"\x80":
            raise ValueError(
                f"{path} is not a genotype JSON file: it looks like a torch checkpoint "
                "(zip or pickle); pass the genotype.json of a search, or load the checkpoint "
                "with torch.load and read its genotype"
            )
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ValueError(
                f"{path} is not a genotype JSON file: it holds binary (non UTF-8) data"
            ) from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        try:
            return cls.from_dict(data)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None


def _cell_from_dict(data: dict) -> CellGene:
    """A :class:`CellGene` from its JSON form; sources and concat entries are taken as they
    are (2.9 or true are errors, not 2 or 1)."""
    if not isinstance(data, dict):
        raise ValueError(f"malformed genotype: a cell is a dict, got {type(data).__name__}")
    for key in ("blocks", "concat"):
        if key not in data:
            raise ValueError(f"malformed genotype: the cell has no {key!r}")
        if not isinstance(data[key], list):
            raise ValueError(
                f"malformed genotype: {key!r} is a {type(data[key]).__name__}; expected a list"
            )
    blocks = []
    for i, block in enumerate(data["blocks"]):
        if not isinstance(block, dict) or "edges" not in block:
            raise ValueError(f"malformed genotype: block {i} is not a dict with 'edges'")
        if not isinstance(block["edges"], list):
            raise ValueError(f"malformed genotype: the edges of block {i} are not a list")
        for edge in block["edges"]:
            if not isinstance(edge, (list, tuple)) or len(edge) != 2:
                raise ValueError(f"malformed genotype: edge {edge!r} is not an [op, source] pair")
        blocks.append(BlockGene(tuple(tuple(e) for e in block["edges"]), block.get("tier2")))
    return CellGene(tuple(blocks), tuple(data["concat"]))


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
        edges = [(_DARTS_NAMES.get(n, n), s) for n, s in pairs]
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
    if not isinstance(weights, torch.Tensor):
        raise TypeError(f"weights must be a tensor, got {type(weights).__name__}")
    if weights.shape != (space.num_edges, space.num_ops):
        raise ValueError(
            f"weights has shape {tuple(weights.shape)}; expected "
            f"({space.num_edges}, {space.num_ops}) for space {space.name!r}"
        )
    _check_finite_weights("weights", weights)
    probs = weights.detach().float().softmax(dim=-1).cpu()
    if edge_weights is not None:
        if not isinstance(edge_weights, torch.Tensor):
            raise TypeError(f"edge_weights must be a tensor, got {type(edge_weights).__name__}")
        _check_finite_weights("edge_weights", edge_weights)
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


def _check_finite_weights(name: str, weights: torch.Tensor) -> None:
    bad = int((~torch.isfinite(weights.detach())).sum())
    if bad:
        raise ValueError(
            f"{name} holds {bad} non-finite values (NaN or inf): the architecture weights "
            "diverged, so no genotype can be derived from them; lower the architecture "
            "learning rate or resume from an earlier checkpoint"
        )


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
    [
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("skip_connect", 0),
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("skip_connect", 2),
    ],
    [2, 3, 4, 5],
    [
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("skip_connect", 2),
        ("avg_pool_3x3", 0),
    ],
    [2, 3, 4, 5],
)
"""DARTS first-order cells, as published in DARTS's ``genotypes.py``."""

DARTS_V2 = from_darts(
    [
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("skip_connect", 0),
        ("dil_conv_3x3", 2),
    ],
    [2, 3, 4, 5],
    [
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
    ],
    [2, 3, 4, 5],
)
"""DARTS second-order cells (the paper's "DARTS (2nd)"), as published."""

GENOTYPES: dict[str, Genotype] = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2}
"""Every named genotype: DARTS's (``DARTS_V1``, ``DARTS_V2``), the DARTS reference's NASNet and
AmoebaNet, PC-DARTS (``PC_DARTS``, ``PC_DARTS_image``) and P-DARTS (``PDARTS``), with their
sources in :mod:`nos_ops.zoo`, and the aliases their repositories use (``DARTS``, ``PCDARTS``)."""
for _name, _cells in DARTS_SPACE_CELLS.items():
    GENOTYPES.setdefault(_name, from_darts(*_cells))
for _alias, _name in ALIASES.items():
    GENOTYPES[_alias] = GENOTYPES[_name]
del _name, _cells, _alias


def get_genotype(genotype: str | os.PathLike | Genotype) -> Genotype:
    """A named genotype (``DARTS_V2``...), a JSON file path, or ``genotype`` itself."""
    if isinstance(genotype, Genotype):
        return genotype
    if not isinstance(genotype, (str, os.PathLike)):
        raise TypeError(
            f"genotype={genotype!r} is not valid; expected a Genotype, a name such as "
            f"'DARTS_V2' or the path of a genotype JSON file"
        )
    if str(genotype) in GENOTYPES:
        return GENOTYPES[str(genotype)]
    if Path(genotype).is_file():
        return Genotype.load(genotype)
    raise ValueError(
        f"genotype={str(genotype)!r} is neither a file nor a known name; names: "
        f"{', '.join(GENOTYPES)}"
    )
