"""Search spaces (Sec. 3.1, 4.2): presets, custom spaces, errors and the cell count."""

from __future__ import annotations

import pytest

from nos_ops.ops.registry import Family
from nos_ops.space import (
    ATTENTION_OPS,
    DYNAMIC_OPS,
    FEATURE_OPS,
    SPACES,
    SearchSpace,
    get_space,
)

DARTS_FEATURE_OPS = (
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "avg_pool_3x3",
    "max_pool_3x3",
    "identity",
)


def test_nos_preset_is_the_papers_space():
    space = get_space("nos")
    assert space.num_ops == 11
    assert space.ops == DARTS_FEATURE_OPS + (
        "spatial_attention",
        "channel_attention",
        "dynamic_conv_3x3",
        "dynamic_conv_5x5",
    )
    assert space.two_tier and space.steps == 4
    assert space.tier1_edges == 14
    assert space.num_edges == 18  # A in R^{18 x 11}
    assert space.ops_of("feature") == DARTS_FEATURE_OPS
    assert space.ops_of(Family.ATTENTION) == ("spatial_attention", "channel_attention")
    assert space.ops_of(Family.DYNAMIC) == ("dynamic_conv_3x3", "dynamic_conv_5x5")


def test_darts_preset_is_single_tier_with_none():
    space = get_space("darts")
    assert space.num_ops == 8
    assert set(space.ops) == set(DARTS_FEATURE_OPS) | {"none"}
    assert not space.two_tier
    assert space.num_edges == space.tier1_edges == 14
    assert space.ops_of("attention") == space.ops_of("dynamic") == ()


@pytest.mark.parametrize(
    "name, ops",
    [
        ("feature", FEATURE_OPS),
        ("feature+attention", FEATURE_OPS + ATTENTION_OPS),
        ("feature+dynamic", FEATURE_OPS + DYNAMIC_OPS),
    ],
)
def test_ablation_presets(name, ops):
    space = get_space(name)
    assert space.ops == ops
    assert space.two_tier
    assert space.num_edges == 18
    assert space.name == name


def test_presets_are_named_by_their_key_and_get_space_passes_spaces_through():
    assert set(SPACES) == {"nos", "darts", "feature", "feature+attention", "feature+dynamic"}
    for key, space in SPACES.items():
        assert space.name == key
        assert get_space(space) is space


def test_unknown_preset_lists_the_presets():
    with pytest.raises(KeyError, match="unknown space='nas'.*nos, darts"):
        get_space("nas")


def test_custom_space_from_registered_names():
    space = SearchSpace(
        "mine", ("identity", "dil_dynamic_conv_3x3", "sep_conv_3x3"), two_tier=False, steps=2
    )
    assert space.num_ops == 3
    assert space.ops_of("dynamic") == ("dil_dynamic_conv_3x3",)
    assert space.ops_of("feature") == ("identity", "sep_conv_3x3")
    assert space.tier1_edges == 2 + 3
    assert space.num_edges == 5
    assert SearchSpace("mine2", ("sep_conv_3x3", "channel_attention"), steps=3).num_edges == 9 + 3


def test_unknown_op_name_is_a_key_error_listing_registered_ops():
    with pytest.raises(KeyError, match="unknown op name='sep_conv_9x9'.*sep_conv_3x3"):
        SearchSpace("bad", ("sep_conv_3x3", "sep_conv_9x9"))


@pytest.mark.parametrize(
    "ops, match",
    [
        ((), "at least one registered op"),
        (("sep_conv_3x3", "identity", "sep_conv_3x3"), "duplicates"),
        (("spatial_attention", "dynamic_conv_3x3"), "at least one feature op"),
        (("none", "channel_attention"), "at least one feature op"),
    ],
)
def test_invalid_op_lists(ops, match):
    with pytest.raises(ValueError, match=match):
        SearchSpace("bad", ops)


@pytest.mark.parametrize("steps", [0, -1])
def test_invalid_steps(steps):
    with pytest.raises(ValueError, match=f"steps={steps} is not valid"):
        SearchSpace("bad", ("identity",), steps=steps)


def test_family_of_op_names():
    assert SearchSpace.family("max_pool_3x3") is Family.FEATURE
    assert SearchSpace.family("channel_attention") is Family.ATTENTION
    assert SearchSpace.family("dynamic_conv_5x5") is Family.DYNAMIC


def test_num_cells_darts_is_the_published_count():
    # prod_{n=1..4} C(n+1, 2) x 7^2: pairs of inputs per block, one of 7 ops on each edge
    assert get_space("darts").num_cells() == (1 * 49) * (3 * 49) * (6 * 49) * (10 * 49)
    assert get_space("darts").num_cells() == 1_037_664_180  # ~1.04e9, "10^9" in Sec. 4.2


def test_num_cells_nos_by_hand():
    # per block: input pairs C(n+1, 2), op pairs 11^2 minus the 4^2 pairs of two
    # self-calibration ops (no feature op), times 11 tier-2 ops
    per_block_ops = (11 * 11 - 4 * 4) * 11
    assert per_block_ops == 1155
    expected = 1 * 3 * 6 * 10 * 1155**4
    assert expected == 320_332_086_112_500  # ~3.2e14; the paper's 11^3 bound gives ~5.6e14
    assert get_space("nos").num_cells() == expected
    assert expected < 180 * 11**12


@pytest.mark.parametrize(
    "name, per_block",
    [
        ("feature", 7 * 7 * 7),
        ("feature+attention", (9 * 9 - 2 * 2) * 9),
        ("feature+dynamic", (9 * 9 - 2 * 2) * 9),
    ],
)
def test_num_cells_ablations(name, per_block):
    assert get_space(name).num_cells() == 180 * per_block**4


def test_num_cells_custom_steps():
    space = SearchSpace("two", ("sep_conv_3x3", "identity", "none"), two_tier=False, steps=2)
    # "none" is never derived: 2 ops per edge; blocks with 2 and 3 inputs
    assert space.num_cells() == (1 * 4) * (3 * 4)
