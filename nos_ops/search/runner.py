"""The search pipeline (Sec. 4.2, Appendix A1) on the run engine: its settings and its run.

:func:`run_search` trains the proxy :class:`~nos_ops.models.SearchNetwork` by alternating,
per step, an architecture step on a batch of the architecture half (Eq. 13) and a weight
step on a batch of the weight half (Eq. 12), DARTS's order, with attention transfer from a
teacher (Eq. 10): the paper's method. By default (``teacher="auto"``) a quick teacher on the
bundled digits is trained or reused first (:func:`nos_ops.teacher.quick_teacher`);
``teacher=None`` is the paper's "w/o AGS" ablation. The first ``warmup_epochs`` epochs take
weight steps only (as PC-DARTS). Then it derives the genotype (Sec. 3.3) and reports the
margin of the chosen ops (:func:`~nos_ops.search.task.op_margins`). What one epoch
computes is :class:`~nos_ops.search.task.SearchTask`.

Per epoch: a ``log.jsonl`` record, ``genotype.json``, ``genotype.png``,
``arch_weights.png`` and ``checkpoint.pt``; at the end ``curves.png`` and ``result.json``.
Under ``torchrun`` the weight step runs through DDP, the architecture gradients are averaged
over ranks, each rank reads its shard, and only rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch.distributed as dist

from ..engine import (
    DistributedContext,
    NonFiniteLossError,
    RunConfig,
    RunDir,
    echo,
    fit,
    setup_distributed,
    write_json,
)
from ..engine.amp import check_amp
from ..engine.progress import draw_curves
from ..genotype import Genotype
from ..space import get_space
from .task import SearchTask, check_ranks_agree, node_name, op_margins

__all__ = [
    "AT_STEPS",
    "QUICK",
    "SearchConfig",
    "NonFiniteLossError",
    "run_search",
    "op_margins",
    "node_name",
]

AT_STEPS = ("both", "weights")
"""Where the attention-transfer term applies: both steps (AGS), or the weight step only."""

QUICK: dict[str, Any] = {
    "channels": 8,
    "layers": 5,
    "epochs": 8,
    "batch_size": 32,
    "image_size": 16,
    "max_steps_per_epoch": 8,
    "warmup_epochs": 2,
    "arch_lr": 0.05,
}
"""What a quick search sets (fields left at their default only): minutes on 2 CPU cores.
Two warm-up epochs train the weights before the architecture moves (as PC-DARTS does),
then 48 architecture steps. The paper's ``arch_lr`` (6e-4) moves Adam's logits by at most
about 6e-4 a step: over 48 steps every op would stay within 3 % of uniform and the chosen
cell would be noise. DARTS takes about 10,000 steps at 3e-4 (a reach of about 3 in the
logits); 48 steps at 0.05 reach 2.4. The chosen ops' margins are printed and logged.
``image_size`` applies to the digits only."""


def fitting_warmup(preset: dict[str, Any], epochs: int | None) -> dict[str, Any]:
    """``preset`` without its ``warmup_epochs`` when ``epochs`` would leave no epoch after
    the warm-up (no architecture step); unchanged otherwise, or when ``epochs`` is None."""
    warmup = preset.get("warmup_epochs")
    if warmup is None or epochs is None or epochs > warmup:
        return preset
    return {k: v for k, v in preset.items() if k != "warmup_epochs"}


@dataclass
class SearchConfig(RunConfig):
    """Settings of :func:`run_search`; the defaults are the paper's (Sec. 4.2, App. A1).

    Data: ``data_dir`` is a CIFAR-10/100 folder (its training set is split 25K/25K into
    weight and architecture halves, the latter also giving ``valid_top1``), an image folder
    (its training images split the same way, at ``image_size``, default 32, normalised by the
    weight half's statistics; :func:`nos_ops.engine.data.load_image_folder_sets`), or None
    for the bundled digits (quick by default: :data:`QUICK`). ``valid_top1`` is the supernet's top-1
    accuracy (%) with BatchNorm on batch statistics.

    Schedule: SGD ``lr`` 0.025, momentum 0.9, weight decay 3e-4, cosine to ``lr_min`` = 0,
    gradient clipping at 5; Adam for the architecture with ``arch_lr`` 6e-4 and
    ``arch_weight_decay`` 1e-3; batch 64 (global), 25 epochs, 16 channels, 8 cells. The first
    ``warmup_epochs`` epochs update the weights only. ``second_order`` is DARTS's unrolled
    architecture gradient (default first order, as the paper's ablations).

    Teacher: ``"auto"`` trains or reuses the quick digits teacher in ``teacher_dir`` (None:
    the folder ``teacher`` beside ``out``; digits only), a path to a
    :func:`~nos_ops.search.distill.save_teacher` file, or None (no attention transfer, "w/o
    AGS"); ``at_weight`` is lambda (1e3); ``at_steps`` says where the attention-transfer
    term applies: ``"both"`` (the weight step, Eq. 12, and the architecture step, Eq. 13:
    the paper's AGS) or ``"weights"`` (Eq. 12 only: the paper's "distillation only").
    ``amp`` is ``"none"``, ``"bf16"`` or ``"fp16"`` (CUDA). ``max_steps_per_epoch`` caps the
    steps per epoch; ``partial_channels`` > 1 is the PC-DARTS search. ``out`` is the run
    folder (``resume`` continues it, ``overwrite`` empties it first); ``plots=False`` skips
    the pictures.
    """

    preset: ClassVar[dict[str, Any]] = QUICK
    kind: ClassVar[str] = "search"
    data_dir: str | None = None
    space: str = "nos"
    channels: int = 16
    layers: int = 8
    partial_channels: int = 1
    epochs: int = 25
    warmup_epochs: int = 0
    batch_size: int = 64
    lr: float = 0.025
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_lr: float = 6e-4
    arch_weight_decay: float = 1e-3
    second_order: bool = False
    teacher: str | None = "auto"
    teacher_dir: str | None = None
    at_weight: float = 1e3
    at_steps: str = "both"
    image_size: int | None = None
    max_steps_per_epoch: int | None = None
    amp: str = "none"
    out: str = "runs/search"
    plots: bool = True

    def quick_preset(self) -> dict[str, Any]:
        """:data:`QUICK`, without its warm-up when ``epochs`` leaves no epoch after it."""
        return fitting_warmup(QUICK, self.epochs)

    def __post_init__(self) -> None:
        self.check_fields()
        get_space(self.space)
        self.require_positive("grad_clip")
        self.require_positive("weight_decay", "arch_weight_decay", zero=True)
        self.require_fraction("momentum")
        self.require_int("channels", "epochs", "batch_size", "partial_channels")
        self.require_int("layers", minimum=3)
        self.require_int("warmup_epochs", minimum=0)
        self.require_int("max_steps_per_epoch", optional=True)
        self.require_digits_size()
        check_amp(self.amp)
        self.require_positive("lr", "arch_lr")
        self.require_positive("at_weight", zero=True)
        self.require_choice("at_steps", AT_STEPS)
        if self.channels % self.partial_channels:
            raise ValueError(
                f"partial_channels={self.partial_channels} is not valid; it must divide "
                f"channels={self.channels} (PC-DARTS samples 1/K of every edge's channels)"
            )
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs={self.warmup_epochs} is not valid; expected fewer than "
                f"epochs={self.epochs} (else no architecture step is taken)"
            )
        if not 0 <= self.lr_min <= self.lr:
            raise ValueError(f"lr_min={self.lr_min!r} is not valid; expected 0 <= lr_min <= lr")


def _resolve_teacher(
    config: SearchConfig, ctx: DistributedContext, own_data: bool = False
) -> tuple[SearchConfig, dict]:
    """``config`` with ``teacher="auto"`` replaced by the quick teacher's path."""
    if config.teacher != "auto":
        return config, {"path": config.teacher, "reused": config.teacher is not None}
    if own_data:
        raise ValueError(
            "teacher='auto' trains a quick teacher on the bundled digits only; with your own "
            "dataset pass teacher=PATH (a teacher trained on it: nos_ops.teacher.train_teacher) "
            "or teacher=None (no attention transfer)"
        )
    if config.data_dir is not None:
        raise ValueError(
            "teacher='auto' trains a quick teacher on the bundled digits only; "
            "for CIFAR or an image folder train one (nos-ops teacher --data-dir ...) and pass "
            "teacher=PATH (--teacher), or teacher=None (--no-teacher)"
        )
    from ..teacher import quick_teacher

    folder = config.teacher_dir or str(Path(config.out).expanduser().parent / "teacher")
    info = quick_teacher(folder, config.image_size or 32, config.progress, config.device)
    return dataclasses.replace(config, teacher=info["path"], teacher_dir=folder), info


def run_search(config: SearchConfig, dataset: Any = None) -> Genotype:
    """Run the attention-guided search of ``config`` and return the derived genotype.

    ``dataset``, an :class:`~nos_ops.data.ImageSet` or any map-style dataset of (image
    tensor, label) pairs, replaces ``config.data_dir``: it is split in weight and
    architecture halves and normalised by the weight half's statistics (images resized to
    ``config.image_size`` when given). Pass the same dataset again to resume.

    Raises :class:`~nos_ops.engine.NonFiniteLossError` (the last good checkpoint kept) when a
    loss becomes NaN or infinite, ``RunLockedError`` when another run holds ``out``.
    """
    began, initialised = time.perf_counter(), dist.is_available() and dist.is_initialized()
    ctx = setup_distributed(config.device)
    try:
        config, teacher = _resolve_teacher(config.resolved(), ctx, dataset is not None)
        task = SearchTask(config, ctx, dataset)
        if ctx.is_main:
            guide = "without a teacher (the paper's w/o AGS ablation)"
            if config.teacher and config.at_steps == "both":
                guide = f"attention-guided (Eqs. 10, 12, 13) with teacher {config.teacher}"
            elif config.teacher:
                guide = f"distillation only (Eqs. 10, 12; not 13) with teacher {config.teacher}"
            echo(
                f"search: space {config.space}, {guide}; {task.sizes[0]}/{task.sizes[1]} "
                f"images for weights/architecture, {task.steps} steps per epoch, "
                f"{'quick run on the digits' if config.quick else 'full settings'}, "
                f"{ctx.world_size} rank(s) on {ctx.device}, into {config.out}"
            )
        with RunDir.of(config, ctx) as run:
            records = fit(task, run, ctx)
            check_ranks_agree(ctx, task.net)
            if ctx.is_main:
                _finish(task, run, records, teacher, time.perf_counter() - began)
        return task.genotype
    finally:
        if not initialised:
            ctx.close()


def _finish(
    task: SearchTask, run: RunDir, records: list[dict], teacher: dict, wall_s: float
) -> None:
    margins = op_margins(task.net, task.genotype)
    echo(
        f"margin of the chosen ops (softmax weight / uniform 1/{len(task.net.space.ops)}): "
        f"mean {margins['mean']:.3f} (details in result.json)"
    )
    for cell in ("normal", "reduce"):
        picks = ", ".join(f"{r['edge']} {r['op']} {r['margin']:.3f}" for r in margins[cell])
        echo(f"  {cell}: {picks}")
    task.genotype.save(run.path / "genotype.json")
    last = records[-1] if records else {}
    write_json(
        {
            "genotype": task.genotype.to_dict(),
            "margins": margins,
            "valid_top1": last.get("valid_top1"),
            "train_top1": last.get("train_top1"),
            "epochs": task.config.epochs,
            "teacher": teacher,
            "search_s": sum(r["seconds"] for r in records),
            "wall_s": wall_s,
            "out": str(run.path),
        },
        run.path / "result.json",
    )
    if records and task.config.plots:
        keys = ["train_loss", "train_top1", "valid_top1", "arch_loss", "margin"]
        keys += ["at_loss"] if task.teacher is not None else []
        draw_curves(records, keys, run.path / "curves.png", f"{task.config.space} search")
    if task.ctx.enabled:
        echo(f"all {task.ctx.world_size} ranks derived the same genotype")
