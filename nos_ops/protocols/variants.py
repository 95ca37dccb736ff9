"""Variants of the search and the paper's protocols built from them (Table 4, Fig. 7).

A :class:`Variant` is one way to search: a space, where attention transfer applies
(``guidance``), first or second order, and the PC-DARTS channel share. :data:`PRESETS` holds
the paper's studies: ``table4`` (w/ AGS, w/o AGS, distillation only; Table 4 and Fig. 6),
``fig7`` (the spaces O_f, O_f+O_a, O_f+O_d and O with AGS; Fig. 7) and ``generality`` (the
DARTS space with and without AGS, first order; "Space Generality", Sec. 4.4).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from ..space import get_space

__all__ = ["GUIDANCE", "Variant", "PRESETS", "get_preset"]

GUIDANCE = ("both", "weights", "none")
"""Where the attention-transfer term applies: the weight and architecture steps (Eqs. 12
and 13: AGS), the weight step only (Eq. 12: "distillation only"), or nowhere (no teacher:
"w/o AGS")."""


@dataclass(frozen=True)
class Variant:
    """One search setting of a protocol; ``key`` names its run folders (letters, digits,
    ``_`` and ``-``), ``label`` its rows and plots."""

    key: str
    label: str
    space: str = "nos"
    guidance: str = "both"
    second_order: bool = False
    partial_channels: int = 1

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.key):
            raise ValueError(
                f"key={self.key!r} is not valid; expected letters, digits, '_' and '-' "
                "(it names the variant's run folders)"
            )
        get_space(self.space)  # KeyError naming the presets
        if self.guidance not in GUIDANCE:
            raise ValueError(
                f"guidance={self.guidance!r} is not valid; expected one of {list(GUIDANCE)}"
            )
        if not isinstance(self.second_order, bool):
            raise ValueError(f"second_order={self.second_order!r} is not valid; expected a bool")
        if not isinstance(self.partial_channels, int) or self.partial_channels < 1:
            raise ValueError(
                f"partial_channels={self.partial_channels!r} is not valid; expected an int >= 1"
            )

    @property
    def uses_teacher(self) -> bool:
        return self.guidance != "none"

    def search_fields(self) -> dict[str, Any]:
        """The :class:`~nos_ops.search.SearchConfig` fields this variant sets (the teacher
        path is the protocol's)."""
        return {
            "space": self.space,
            "second_order": self.second_order,
            "partial_channels": self.partial_channels,
            "at_steps": "weights" if self.guidance == "weights" else "both",
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Variant:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"variant fields {unknown} are not valid; fields: {sorted(names)}")
        return cls(**data)


PRESETS: dict[str, tuple[Variant, ...]] = {
    "table4": (
        Variant("w_ags", "w/ AGS", guidance="both"),
        Variant("wo_ags", "w/o AGS", guidance="none"),
        Variant("distillation_only", "distillation only", guidance="weights"),
    ),
    "fig7": (
        Variant("f", "O_f", space="feature"),
        Variant("f_a", "O_f+O_a", space="feature+attention"),
        Variant("f_d", "O_f+O_d", space="feature+dynamic"),
        Variant("all", "O (all)", space="nos"),
    ),
    "generality": (
        Variant("darts", "DARTS", space="darts", guidance="none"),
        Variant("darts_ags", "DARTS + AGS", space="darts", guidance="both"),
    ),
}
"""The paper's protocols (first order, as its ablations)."""


def get_preset(name: str) -> tuple[Variant, ...]:
    """The variants of preset ``name``; ``ValueError`` naming the presets otherwise."""
    if name not in PRESETS:
        raise ValueError(f"preset={name!r} is not valid; expected one of {list(PRESETS)}")
    return PRESETS[name]
