"""A protocol's settings: the variants and seeds, the shared recipes, the teacher, the jobs.

:class:`ProtocolConfig` is the config of :func:`~nos_ops.protocols.runner.run_protocol`;
it builds each grid cell's :class:`~nos_ops.search.SearchConfig` and
:class:`~nos_ops.train.TrainConfig`. Quick protocols (the bundled digits) use
:data:`SEARCH_QUICK`, :data:`TRAIN_QUICK` and :data:`TEACHER_QUICK`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..engine import RunConfig
from ..genotype import Genotype, get_genotype
from .variants import Variant, get_preset

__all__ = ["SEARCH_QUICK", "TEACHER_QUICK", "TRAIN_QUICK", "ProtocolConfig"]

SEARCH_QUICK: dict[str, Any] = {
    "channels": 8,
    "layers": 5,
    "epochs": 6,
    "warmup_epochs": 2,
    "max_steps_per_epoch": 6,
    "batch_size": 32,
    "arch_lr": 0.1,
}
"""The search of a quick protocol: 2 warm-up epochs, then 24 architecture steps (``arch_lr``
0.1 reaches about 2.4 in the logits, as the quick search's 48 steps at 0.05)."""

TRAIN_QUICK: dict[str, Any] = {
    "layers": 5,
    "channels": 12,
    "epochs": 15,
    "batch_size": 64,
    "cutout": 0,
    "auxiliary_weight": 0.0,
    "drop_path": 0.1,
}
"""The evaluation recipe of a quick protocol (the same for every cell)."""

TEACHER_QUICK: dict[str, Any] = {"arch": "resnet18", "epochs": 10, "batch_size": 64}
"""The teacher of a quick protocol (``teacher="auto"``): ResNet-18 on the digits, trained
once for all its cells (the quick search's teacher has 4 epochs)."""

_OWN = ("space", "second_order", "partial_channels", "at_steps", "teacher", "teacher_dir")
_RUN = ("seed", "out", "resume", "overwrite", "data_dir", "image_size", "device", "progress")


@dataclass
class ProtocolConfig(RunConfig):
    """Settings of :func:`run_protocol`.

    ``preset`` names the variants (:data:`~nos_ops.protocols.variants.PRESETS`); ``variants``,
    when given, replaces them: each a preset key (a subset) or a dict of
    :class:`~nos_ops.protocols.variants.Variant` fields. ``seeds`` are the runs per variant.
    ``search`` and ``train`` give :class:`~nos_ops.search.SearchConfig` and
    :class:`~nos_ops.train.TrainConfig` fields for every cell (over :data:`SEARCH_QUICK` and
    :data:`TRAIN_QUICK` when quick; the paper's settings otherwise). ``teacher`` is
    ``"auto"`` (the quick digits teacher, trained once into ``out/teacher``) or a teacher
    file (CIFAR: ``nos-ops teacher``). ``jobs`` grid cells run at once, each in its own
    process with ``threads`` torch threads (None: the CPU count over ``jobs``); ``jobs=None``
    is one per CPU core on a CPU (at most one per grid cell) and 1 on CUDA. ``seed`` is
    the teacher's.
    """

    preset: ClassVar[dict[str, Any]] = {"image_size": 8}
    kind: ClassVar[str] = "protocol"
    protocol: str = "table4"
    variants: list[Any] | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    data_dir: str | None = None
    image_size: int | None = None
    teacher: str | None = "auto"
    search: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    jobs: int | None = None
    threads: int | None = None
    out: str = "runs/protocol"
    plots: bool = True

    def __post_init__(self) -> None:
        self.check_fields()
        self.require_digits_size()
        self.require_int("jobs", optional=True)
        self.require_int("threads", optional=True)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds={self.seeds!r} is not valid; expected distinct ints")
        for name, fixed in (("search", _OWN + _RUN), ("train", ("genotype",) + _RUN)):
            taken = sorted(set(getattr(self, name)) & set(fixed))
            if taken:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is not valid: {taken} are set by the "
                    "protocol (its variants, seeds, data and folders)"
                )
        variants = self.resolved_variants()
        guided = [v.key for v in variants if v.uses_teacher]
        if guided and self.teacher == "auto" and self.data_dir is not None:
            raise ValueError(
                "teacher='auto' trains the quick teacher on the bundled digits only; with "
                "data_dir pass teacher=PATH (nos-ops teacher --data-dir ...)"
            )
        if guided and self.teacher is None:
            raise ValueError(f"teacher=None is not valid: variants {guided} use attention transfer")
        self.search_config(variants[0], self.seeds[0], None)  # field errors now, not later
        self.train_config(get_genotype("DARTS_V2"), self.seeds[0], Path(self.out))

    def resolved_variants(self) -> list[Variant]:
        """The variants run: the protocol's, or those ``variants`` names or describes."""
        preset = {v.key: v for v in get_preset(self.protocol)}
        if self.variants is None:
            return list(preset.values())
        chosen = []
        for item in self.variants:
            if isinstance(item, dict):
                chosen.append(Variant.from_dict(item))
            elif item in preset:
                chosen.append(preset[item])
            else:
                raise ValueError(
                    f"variants item {item!r} is not valid; expected a key of preset "
                    f"{self.protocol!r} ({list(preset)}) or a dict of Variant fields"
                )
        keys = [v.key for v in chosen]
        if not chosen or len(set(keys)) != len(keys):
            raise ValueError(f"variants={keys!r} is not valid; expected distinct keys")
        return chosen

    def recipe(self) -> str:
        """The settings every grid cell shares, in words (for the report)."""
        search, train, teacher = self._recipe("search"), self._recipe("train"), self.teacher
        if teacher == "auto":
            teacher = f"ResNet-18 on the digits ({TEACHER_QUICK['epochs']} epochs), trained once"
        base = "the quick protocol" if self.is_quick else "the paper's settings"

        def words(fields: dict[str, Any]) -> str:
            return ", ".join(f"{k}={v}" for k, v in fields.items()) or "the defaults"

        return (
            f"Seeds {', '.join(map(str, self.seeds))}; {base}. Search: {words(search)}. "
            f"Training of every found cell (one fixed recipe): {words(train)}. "
            f"Teacher: {teacher}."
        )

    def workers(self) -> int:
        """Grid cells run at once: ``jobs``, or (None) one per CPU core, 1 on CUDA."""
        if self.jobs is not None:
            return self.jobs
        cuda = self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available())
        cells = len(self.resolved_variants()) * len(self.seeds)
        return 1 if cuda else max(1, min(cells, os.cpu_count() or 1))

    def _recipe(self, stage: str) -> dict[str, Any]:
        """The ``"search"`` or ``"train"`` fields of every cell: the quick ones (when quick)
        under those the config gives; the quick warm-up goes when the given ``epochs`` leave
        no epoch after it (:func:`~nos_ops.search.runner.fitting_warmup`)."""
        from ..search.runner import fitting_warmup

        quick = {"search": SEARCH_QUICK, "train": TRAIN_QUICK}[stage] if self.is_quick else {}
        given = getattr(self, stage)
        return {**fitting_warmup(quick, given.get("epochs")), **given}

    def cell_dir(self, variant: Variant, seed: int) -> Path:
        return Path(self.out).expanduser() / "runs" / variant.key / f"seed_{seed}"

    def search_config(self, variant: Variant, seed: int, teacher: str | None) -> Any:
        """The :class:`~nos_ops.search.SearchConfig` of grid cell (``variant``, ``seed``)."""
        from ..search import SearchConfig

        folder = self.cell_dir(variant, seed) / "search"
        return SearchConfig(
            **self._recipe("search"),
            **variant.search_fields(),
            **self._run_fields(seed, folder),
            teacher=teacher if variant.uses_teacher else None,
            plots=self.plots,
            quick=self.is_quick,
        ).as_resolved()  # the recipe above is complete: no preset over it

    def train_config(self, genotype: Genotype, seed: int, folder: Path) -> Any:
        """The :class:`~nos_ops.train.TrainConfig` (the fixed recipe) of a found cell."""
        from ..train import TrainConfig

        return TrainConfig(
            **self._recipe("train"),
            **self._run_fields(seed, folder),
            genotype=genotype,
            quick=self.is_quick,
        ).as_resolved()

    def _run_fields(self, seed: int, folder: Path) -> dict[str, Any]:
        resume = (folder / "checkpoint.pt").is_file()
        return {
            "seed": seed,
            "out": str(folder),
            "resume": resume,
            "overwrite": not resume,
            "data_dir": self.data_dir,
            "image_size": self.image_size,
            "device": self.device,
            "progress": self.progress and self.workers() == 1,
            "tensorboard": self.tensorboard,
            "mean": self.mean,
            "std": self.std,
        }
