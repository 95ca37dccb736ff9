"""Search spaces (Sec. 3.1 and 4.2): which registered ops an edge may choose from.

A :class:`SearchSpace` is an ordered tuple of op names (the columns of the architecture
matrix A, Eq. 11) and says whether a cell has the second tier of the heterogeneous
residual block (Eqs. 6-9). Presets: ``"nos"`` (the paper's 11 ops), ``"darts"`` (O_f plus
``none``, single tier) and the Fig. 7 ablations ``"feature"``, ``"feature+attention"``,
``"feature+dynamic"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

from .ops.registry import Family, get_op

__all__ = ["SearchSpace", "FEATURE_OPS", "ATTENTION_OPS", "DYNAMIC_OPS", "get_space", "SPACES"]

FEATURE_OPS = (
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "avg_pool_3x3",
    "max_pool_3x3",
    "identity",
)
ATTENTION_OPS = ("spatial_attention", "channel_attention")
DYNAMIC_OPS = ("dynamic_conv_3x3", "dynamic_conv_5x5")


@dataclass(frozen=True)
class SearchSpace:
    """An ordered set of candidate ops and the cell shape they are searched in.

    Args:
        name: a label for logs and genotype files.
        ops: registered op names; their order is the column order of the architecture
            weights.
        two_tier: cells have a second-tier edge per block (Eqs. 6-9); DARTS has not.
        steps: inner nodes (blocks) per cell.
    """

    name: str
    ops: tuple[str, ...]
    two_tier: bool = True
    steps: int = 4

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name={self.name!r} is not valid; expected a non-empty string")
        if isinstance(self.ops, str):
            raise TypeError(
                f"ops={self.ops!r} is a string; expected a sequence of op names such as "
                f"({self.ops!r},)"
            )
        if not isinstance(self.ops, (tuple, list)):
            raise TypeError(
                f"ops={self.ops!r} is not valid; expected a tuple of registered op names"
            )
        object.__setattr__(self, "ops", tuple(self.ops))  # a list is taken as a tuple
        if not self.ops:
            raise ValueError("ops must name at least one registered op")
        bad = [n for n in self.ops if not isinstance(n, str)]
        if bad:
            raise TypeError(f"ops={self.ops!r} holds non-string entries {bad}; expected op names")
        if len(set(self.ops)) != len(self.ops):
            twice = sorted({n for n in self.ops if self.ops.count(n) > 1})
            raise ValueError(f"ops has duplicates: {self.ops} names {twice} more than once")
        for name in self.ops:
            get_op(name)  # KeyError listing valid names
        if not any(self.family(n) is Family.FEATURE and n != "none" for n in self.ops):
            raise ValueError(f"space {self.name!r} needs at least one feature op, got {self.ops}")
        if not isinstance(self.two_tier, bool):
            raise TypeError(f"two_tier={self.two_tier!r} is not valid; expected True or False")
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ValueError(f"steps={self.steps!r} is not valid; expected an integer >= 1")

    @staticmethod
    def family(name: str) -> Family:
        return get_op(name).family

    def ops_of(self, family: Family | str) -> tuple[str, ...]:
        """The ops of one family, in space order."""
        family = Family(family)
        return tuple(n for n in self.ops if self.family(n) is family)

    @property
    def num_ops(self) -> int:
        return len(self.ops)

    @property
    def tier1_edges(self) -> int:
        """First-tier edges per cell: 2 + 3 + ... = 14 for 4 blocks."""
        return sum(2 + i for i in range(self.steps))

    @property
    def num_edges(self) -> int:
        """Rows of the architecture matrix: tier-1 edges, then one tier-2 edge per block."""
        return self.tier1_edges + (self.steps if self.two_tier else 0)

    def num_cells(self) -> int:
        """Distinct cells :func:`nos_ops.genotype.derive` can produce (one cell type).

        Per block: a pair of distinct inputs, an op on each (``none`` excluded; at least
        one feature op), and a tier-2 op. The paper counts ``prod_n C(n+1, 2) x 11^3``
        (about 5.6e14, "10^14"), without the feature-op constraint; DARTS counts
        ``prod_n C(n+1, 2) x 7^2`` (about 1.0e9).
        """
        choices = [n for n in self.ops if n != "none"]
        calibration = [n for n in choices if self.family(n) is not Family.FEATURE]
        pair_ops = len(choices) ** 2 - len(calibration) ** 2
        tier2 = len(choices) if self.two_tier else 1
        total = 1
        for block in range(self.steps):
            total *= comb(block + 2, 2) * pair_ops * tier2
        return total


SPACES: dict[str, SearchSpace] = {
    "nos": SearchSpace("nos", FEATURE_OPS + ATTENTION_OPS + DYNAMIC_OPS),
    "darts": SearchSpace("darts", FEATURE_OPS + ("none",), two_tier=False),
    "feature": SearchSpace("feature", FEATURE_OPS),
    "feature+attention": SearchSpace("feature+attention", FEATURE_OPS + ATTENTION_OPS),
    "feature+dynamic": SearchSpace("feature+dynamic", FEATURE_OPS + DYNAMIC_OPS),
}


def get_space(space: str | SearchSpace) -> SearchSpace:
    """A preset by name, or ``space`` itself."""
    if isinstance(space, SearchSpace):
        return space
    if not isinstance(space, str):
        raise TypeError(
            f"space={space!r} is not valid; expected a SearchSpace or a preset name "
            f"({', '.join(SPACES)})"
        )
    try:
        return SPACES[space]
    except KeyError:
        raise KeyError(f"unknown space={space!r}; presets: {', '.join(SPACES)}") from None
