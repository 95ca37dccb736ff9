"""Genotypes: the derivation rule (Sec. 3.3, "Search Outcome"), JSON files, DARTS cells."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nos_ops.genotype import (
    DARTS_V1,
    DARTS_V2,
    GENOTYPES,
    SCHEMA_VERSION,
    BlockGene,
    CellGene,
    Genotype,
    derive,
    derive_cell,
    from_darts,
    get_genotype,
)
from nos_ops.ops.registry import Family
from nos_ops.space import SPACES, SearchSpace, get_space


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
            BlockGene((("channel_attention", 0), ("sep_conv_5x5", 2)), "dynamic_conv_5x5"),
            BlockGene((("dil_conv_3x3", 1), ("dynamic_conv_3x3", 3)), "identity"),
            BlockGene((("identity", 0), ("dynamic_conv_5x5", 4)), "channel_attention"),
        ),
        (2, 3, 4, 5),
    ),
    reduce=CellGene(
        (
            BlockGene((("max_pool_3x3", 0), ("dynamic_conv_5x5", 1)), "spatial_attention"),
            BlockGene((("sep_conv_3x3", 1), ("spatial_attention", 2)), "sep_conv_3x3"),
            BlockGene((("identity", 2), ("channel_attention", 3)), "dynamic_conv_3x3"),
            BlockGene((("avg_pool_3x3", 1), ("dynamic_conv_3x3", 4)), "channel_attention"),
        ),
        (2, 3, 4, 5),
    ),
)


def _reference_cell(probs: torch.Tensor, space: SearchSpace) -> list[tuple]:
    """Brute force over every pair of sources and ops: the strongest pair with a feature
    op (``none`` excluded); ties to the lower sources, then the ops listed first."""
    usable = [i for i, n in enumerate(space.ops) if n != "none"]
    feature = {i for i in usable if space.family(space.ops[i]) is Family.FEATURE}
    blocks, offset = [], 0
    for step in range(space.steps):
        candidates = []
        for a, b in itertools.combinations(range(2 + step), 2):
            for i, j in itertools.product(usable, usable):
                if i in feature or j in feature:
                    strength = float(probs[offset + a, i]) + float(probs[offset + b, j])
                    candidates.append((strength, -a, -b, -i, -j))
        _, a, b, i, j = max(candidates)
        edges = ((space.ops[-i], -a), (space.ops[-j], -b))
        tier2 = None
        if space.two_tier:
            row = probs[space.tier1_edges + step]
            tier2 = space.ops[max(usable, key=lambda c: (float(row[c]), -c))]
        blocks.append(BlockGene(edges, tier2))
        offset += 2 + step
    return blocks


def _check_rule(cell: CellGene, space: SearchSpace) -> None:
    assert len(cell.blocks) == space.steps
    assert cell.concat == tuple(range(2, 2 + space.steps))
    for node, block in enumerate(cell.blocks, start=2):
        (op_a, src_a), (op_b, src_b) = block.edges
        assert 0 <= src_a < src_b < node
        assert "none" not in (op_a, op_b, block.tier2)
        assert Family.FEATURE in (space.family(op_a), space.family(op_b))
        assert {op_a, op_b} <= set(space.ops)
        assert (block.tier2 is not None) == space.two_tier


@settings(max_examples=50, deadline=None)
@given(
    preset=st.sampled_from(sorted(SPACES)),
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([0.0, 1e-3, 1.0, 5.0]),
    integer=st.booleans(),
    betas=st.booleans(),
)
def test_derive_obeys_the_rule_and_is_optimal(preset, seed, scale, integer, betas):
    space = get_space(preset)
    gen = torch.Generator().manual_seed(seed)
    shape = (space.num_edges, space.num_ops)

    def logits() -> torch.Tensor:
        if integer:  # small integers: many exact ties
            return torch.randint(0, 3, shape, generator=gen).float()
        return scale * torch.randn(shape, generator=gen)

    normal, reduce = logits(), logits()
    edge_weights = [None, None]
    if betas:
        edge_weights = [torch.randn(space.tier1_edges, generator=gen) for _ in range(2)]
    genotype = derive(normal, reduce, space, *edge_weights)
    for cell, weights, beta in zip(
        (genotype.normal, genotype.reduce), (normal, reduce), edge_weights
    ):
        _check_rule(cell, space)
        probs = weights.softmax(-1)
        if beta is not None:
            start = 0
            for step in range(space.steps):
                rows = slice(start, start + 2 + step)
                probs[rows] *= beta[rows].softmax(-1).unsqueeze(-1)
                start = rows.stop
        assert list(cell.blocks) == _reference_cell(probs, space)


def test_two_attention_edges_swap_in_the_best_feature_option():
    space = get_space("nos")
    index = space.ops.index
    weights = torch.zeros(space.num_edges, space.num_ops)
    # block 0: both edges prefer attention; source 0's runner-up feature op is strong
    weights[0, index("spatial_attention")], weights[0, index("sep_conv_5x5")] = 4.0, 3.0
    weights[1, index("channel_attention")], weights[1, index("dil_conv_5x5")] = 4.0, 1.0
    # block 1: attention tops sources 0 and 2; only source 1 has a strong feature op
    weights[2, index("spatial_attention")] = 3.0
    weights[3, index("sep_conv_3x3")] = 2.5
    weights[4, index("channel_attention")] = 4.0
    # tier 2 of blocks 0 and 1; blocks 2 and 3 are uniform everywhere
    weights[14, index("dynamic_conv_5x5")] = 1.0
    weights[15, index("channel_attention")] = 2.0
    cell = derive_cell(weights, space)
    assert cell.blocks == (
        BlockGene((("sep_conv_5x5", 0), ("channel_attention", 1)), "dynamic_conv_5x5"),
        BlockGene((("sep_conv_3x3", 1), ("channel_attention", 2)), "channel_attention"),
        BlockGene((("sep_conv_3x3", 0), ("sep_conv_3x3", 1)), "sep_conv_3x3"),
        BlockGene((("sep_conv_3x3", 0), ("sep_conv_3x3", 1)), "sep_conv_3x3"),
    )


def test_darts_never_derives_none():
    space = get_space("darts")
    weights = torch.zeros(space.num_edges, space.num_ops)
    weights[:, space.ops.index("none")] = 5.0
    weights[4, space.ops.index("identity")] = 1.0  # block 1, source node 2
    cell = derive_cell(weights, space)
    assert cell.blocks[1] == BlockGene((("sep_conv_3x3", 0), ("identity", 2)))
    for block in (cell.blocks[0], *cell.blocks[2:]):
        assert block == BlockGene((("sep_conv_3x3", 0), ("sep_conv_3x3", 1)))


def test_ties_go_to_lower_sources_then_first_ops():
    space = get_space("nos")
    uniform = derive_cell(torch.zeros(18, 11), space)
    assert set(uniform.blocks) == {
        BlockGene((("sep_conv_3x3", 0), ("sep_conv_3x3", 1)), "sep_conv_3x3")
    }
    # identical rows: attention strongest, then sep_conv_5x5; the pairs (feature at 0,
    # attention at 1) and (attention at 0, feature at 1) tie: the lower source gets the
    # op listed first
    weights = torch.zeros(18, 11)
    weights[:, space.ops.index("spatial_attention")] = 2.0
    weights[:, space.ops.index("sep_conv_5x5")] = 1.0
    cell = derive_cell(weights, space)
    assert set(cell.blocks) == {
        BlockGene((("sep_conv_5x5", 0), ("spatial_attention", 1)), "spatial_attention")
    }
    # equal feature logits in one row: the op listed first
    weights = torch.zeros(18, 11)
    weights[0, space.ops.index("dil_conv_3x3")] = weights[0, space.ops.index("sep_conv_5x5")] = 2
    weights[14, space.ops.index("dynamic_conv_5x5")] = weights[14, space.ops.index("identity")] = 2
    assert derive_cell(weights, space).blocks[0] == BlockGene(
        (("sep_conv_5x5", 0), ("sep_conv_3x3", 1)), "identity"
    )


def test_ties_follow_space_order_not_family_order():
    space = SearchSpace(
        "attention-first", ("channel_attention", "identity", "sep_conv_3x3"), steps=1
    )
    cell = derive_cell(torch.zeros(space.num_edges, space.num_ops), space)
    assert cell.blocks == (
        BlockGene((("channel_attention", 0), ("identity", 1)), "channel_attention"),
    )


@pytest.mark.parametrize("shape", [(18, 10), (14, 11), (18,)])
def test_derive_rejects_wrong_weight_shapes(shape):
    with pytest.raises(ValueError, match=r"weights has shape .* expected \(18, 11\)"):
        derive_cell(torch.zeros(shape), "nos")


def test_derive_rejects_wrong_edge_weight_shapes():
    with pytest.raises(ValueError, match=r"edge_weights has shape \(18,\); expected \(14,\)"):
        derive_cell(torch.zeros(18, 11), "nos", torch.zeros(18))


# --------------------------------------------------------------------------------- JSON


@pytest.mark.parametrize("genotype", [NOS_GENOTYPE, DARTS_V2, DARTS_V1])
def test_json_round_trip(genotype, tmp_path):
    path = tmp_path / "genotype.json"
    genotype.save(path)
    assert Genotype.load(path) == genotype
    assert get_genotype(path) == genotype
    assert get_genotype(str(path)) == genotype
    assert Genotype.from_dict(json.loads(path.read_text())) == genotype
    data = json.loads(path.read_text())
    assert data["schema"] == "nos_ops.genotype" and data["version"] == SCHEMA_VERSION
    assert [p.name for p in tmp_path.iterdir()] == ["genotype.json"]  # no temporary left


def _valid() -> dict:
    return NOS_GENOTYPE.to_dict()


def _edit(change) -> dict:
    data = _valid()
    change(data)
    return data


MALFORMED = {
    "not a dict": ([1, 2], ValueError, "not a nos_ops genotype"),
    "wrong schema": (
        _edit(lambda d: d.update(schema="darts")),
        ValueError,
        "schema='nos_ops.genotype'",
    ),
    "no schema": (_edit(lambda d: d.pop("schema")), ValueError, "not a nos_ops genotype"),
    "wrong version": (
        _edit(lambda d: d.update(version=99)),
        ValueError,
        "version=99 is not supported; expected 1",
    ),
    "bad op name": (
        _edit(lambda d: d["normal"]["blocks"][0]["edges"][0].__setitem__(0, "sep_conv_9x9")),
        (ValueError, KeyError),
        "sep_conv_9x9",
    ),
    "bad tier-2 op": (
        _edit(lambda d: d["reduce"]["blocks"][1].update(tier2="gated_attention")),
        (ValueError, KeyError),
        "gated_attention",
    ),
    "source out of range": (
        _edit(lambda d: d["normal"]["blocks"][1]["edges"][1].__setitem__(1, 3)),
        ValueError,
        r"into node 3: source must be an int in \[0, 2\]",
    ),
    "negative source": (
        _edit(lambda d: d["reduce"]["blocks"][0]["edges"][0].__setitem__(1, -1)),
        ValueError,
        "source must be an int",
    ),
    "no feature op": (
        _edit(
            lambda d: d["normal"]["blocks"][0].update(
                edges=[["spatial_attention", 0], ["dynamic_conv_3x3", 1]]
            )
        ),
        ValueError,
        "needs at least one feature op",
    ),
    "no edges": (
        _edit(lambda d: d["normal"]["blocks"][2].update(edges=[])),
        ValueError,
        "has no edges",
    ),
    "bad concat": (
        _edit(lambda d: d["reduce"].update(concat=[2, 6])),
        ValueError,
        r"concat=\(2, 6\) must name inner nodes in \[2, 5\]",
    ),
    "missing cell": (_edit(lambda d: d.pop("reduce")), ValueError, "malformed genotype"),
    "missing edges": (
        _edit(lambda d: d["normal"]["blocks"][0].pop("edges")),
        ValueError,
        "malformed genotype",
    ),
    "missing concat": (
        _edit(lambda d: d["normal"].pop("concat")),
        ValueError,
        "malformed genotype",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_genotypes_are_rejected_with_a_reason(case, tmp_path):
    data, error, match = MALFORMED[case]
    with pytest.raises(error, match=match):
        Genotype.from_dict(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(error, match=match):
        get_genotype(path)


def test_invalid_json_text(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"schema": "nos_ops.genotype", "version": 1,')
    with pytest.raises(ValueError, match="broken.json is not valid JSON"):
        Genotype.load(path)


# ------------------------------------------------------------------ DARTS cells, look-up


def test_darts_constants_use_identity_for_skip_connect():
    for genotype in (DARTS_V1, DARTS_V2):
        ops = genotype.normal.ops + genotype.reduce.ops
        assert "skip_connect" not in ops and "identity" in ops
        for cell in (genotype.normal, genotype.reduce):
            assert cell.concat == (2, 3, 4, 5)
            assert all(b.tier2 is None and len(b.edges) == 2 for b in cell.blocks)
    assert DARTS_V2.normal.blocks[2] == BlockGene((("sep_conv_3x3", 1), ("identity", 0)))
    assert DARTS_V2.normal.blocks[3] == BlockGene((("identity", 0), ("dil_conv_3x3", 2)))
    assert DARTS_V2.reduce.blocks[0] == BlockGene((("max_pool_3x3", 0), ("max_pool_3x3", 1)))
    assert DARTS_V1.reduce.blocks[3] == BlockGene((("identity", 2), ("avg_pool_3x3", 0)))
    assert DARTS_V1 != DARTS_V2


def test_from_darts_needs_pairs_per_node():
    with pytest.raises(ValueError, match="two \\(op, input\\) pairs per node, got 3"):
        from_darts([("sep_conv_3x3", 0)] * 3, [2], [("sep_conv_3x3", 0)] * 2, [2])


def test_cell_ops_lists_tier1_then_tier2_per_block():
    assert NOS_GENOTYPE.normal.ops[:6] == [
        "sep_conv_3x3",
        "spatial_attention",
        "dynamic_conv_3x3",
        "channel_attention",
        "sep_conv_5x5",
        "dynamic_conv_5x5",
    ]


def test_get_genotype_by_name_and_passthrough():
    assert get_genotype("DARTS_V2") is DARTS_V2
    assert get_genotype("DARTS") is DARTS_V2
    assert get_genotype("DARTS_V1") is DARTS_V1
    assert get_genotype(NOS_GENOTYPE) is NOS_GENOTYPE
    assert set(GENOTYPES) >= {"DARTS_V1", "DARTS_V2"}


def test_get_genotype_unknown_name():
    with pytest.raises(
        ValueError,
        match="genotype='DARTS_V3' is neither a file nor a known name; names: DARTS_V1, DARTS_V2",
    ):
        get_genotype("DARTS_V3")
