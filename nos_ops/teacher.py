"""Training the teacher of attention-guided search (Sec. 3.3 and 4.2, Appendix A1).

The paper's teacher is PyramidNet-110 (bottleneck, alpha 84) trained on CIFAR with the A1
recipe: 300 epochs, batch 32, SGD lr 0.025 divided by 10 every 30 epochs, momentum 0.9,
weight decay 1e-4, random crop and flip. Without ``data_dir`` the run is quick on the bundled
digits (:data:`QUICK`: ResNet-18 at 16 x 16, a few epochs), which the quick search uses.
:func:`train_teacher` runs on the engine and writes ``teacher.pt``
(:func:`~nos_ops.search.distill.save_teacher`), ``checkpoint.pt``, ``log.jsonl`` and
``result.json`` into ``out``; :func:`quick_teacher` trains it, or reuses a finished one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset

from .data import ImageSet
from .engine import (
    Capped,
    DistributedContext,
    ModelTask,
    RunConfig,
    RunDir,
    echo,
    evaluate,
    fit,
    grad_scaler,
    load_checkpoint,
    setup_distributed,
    train_one_epoch,
    write_json,
)
from .engine.amp import check_amp
from .engine.data import check_data_pair, classifier_data
from .engine.distributed import wrap_ddp_model
from .models.teachers import create_teacher
from .search.distill import save_teacher

__all__ = ["ARCHS", "QUICK", "TeacherConfig", "train_teacher", "quick_teacher"]

ARCHS = ("pyramidnet110", "resnet18")
QUICK: dict[str, Any] = {"arch": "resnet18", "epochs": 4, "batch_size": 64, "image_size": 16}
"""What a quick teacher run changes (fields still at their default)."""


@dataclass
class TeacherConfig(RunConfig):
    """Settings of :func:`train_teacher`; the defaults are the paper's (App. A1)."""

    preset: ClassVar[dict[str, Any]] = QUICK
    kind: ClassVar[str] = "teacher"
    arch: str = "pyramidnet110"
    data_dir: str | None = None
    epochs: int = 300
    batch_size: int = 32
    lr: float = 0.025
    lr_step: int = 30
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    image_size: int | None = None
    max_steps_per_epoch: int | None = None
    amp: str = "none"
    out: str = "runs/teacher"

    def __post_init__(self) -> None:
        self.check_fields()
        self.require_choice("arch", ARCHS)
        self.require_positive("weight_decay", zero=True)
        self.require_fraction("momentum")
        check_amp(self.amp)
        self.require_int("epochs", "batch_size", "lr_step")
        self.require_int("max_steps_per_epoch", optional=True)
        self.require_positive("lr")
        self.require_digits_size()


class _TeacherTask(ModelTask):
    kind = "teacher"

    def __init__(self, config: TeacherConfig, ctx: DistributedContext, data: tuple) -> None:
        self.config, self.ctx, self.total_epochs = config, ctx, config.epochs
        train, test, self.num_classes, self.image_size = classifier_data(
            config, ctx, data, in_memory=True
        )
        self.train_loader = Capped(train, config.max_steps_per_epoch)
        self.test_loader = Capped(test, config.max_steps_per_epoch)
        torch.manual_seed(config.seed)
        self.model = create_teacher(config.arch, self.num_classes).to(ctx.device)
        self.runner = wrap_ddp_model(self.model, ctx)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        self.scaler = grad_scaler(config.amp, ctx.device)

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        c = self.config
        lr = c.lr * c.lr_gamma ** ((epoch - 1) // c.lr_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.train_loader.set_epoch(epoch - 1)
        show = c.progress and self.ctx.is_main
        train = train_one_epoch(
            self.runner,
            self.train_loader,
            self.optimizer,
            amp=c.amp,
            scaler=self.scaler,
            ctx=self.ctx,
            progress=show,
            desc=f"{c.arch} epoch {epoch}/{c.epochs}",
        )
        test = evaluate(self.runner, self.test_loader, amp=c.amp, ctx=self.ctx)
        return {
            "lr": lr,
            "train_loss": train["loss"],
            "train_top1": train["top1"],
            "test_loss": test["loss"],
            "test_top1": test["top1"],
        }

    def describe(self, r: dict[str, Any]) -> str:
        return (
            f"teacher epoch {r['epoch']}/{self.config.epochs}: lr {r['lr']:.4g}, train "
            f"loss {r['train_loss']:.4f}, top-1 {r['train_top1']:.2f}%, test top-1 "
            f"{r['test_top1']:.2f}% ({r['seconds']:.1f} s)"
        )


def train_teacher(
    config: TeacherConfig,
    train_data: ImageSet | Dataset | None = None,
    test_data: ImageSet | Dataset | None = None,
) -> dict[str, Any]:
    """Train the teacher of ``config``; returns ``result.json``'s contents: ``arch``,
    ``num_classes``, ``image_size``, ``test_top1`` (%), ``epochs``, ``train_s`` (seconds
    of training over all sessions of the run) and ``path`` (of ``teacher.pt``).

    Data come from ``config`` unless ``train_data`` and ``test_data`` are given: two
    :class:`~nos_ops.data.ImageSet` or two map-style datasets of (image tensor, label), as
    :func:`nos_ops.train.train` takes them (pass them again to resume)."""
    check_data_pair(train_data, test_data)
    config = config.resolved()
    ctx = setup_distributed(config.device)
    task = _TeacherTask(config, ctx, (train_data, test_data))
    if ctx.is_main:
        where = "quick run on the digits" if config.quick else "paper recipe"
        echo(
            f"teacher: {config.arch}, {config.epochs} epochs at {task.image_size} x "
            f"{task.image_size} ({where}), into {config.out}"
        )
    with RunDir.of(config, ctx) as run:
        records = fit(task, run, ctx)
        path = run.path / "teacher.pt"
        test = evaluate(task.model, task.test_loader, amp=config.amp, ctx=ctx)
        result = {
            "arch": config.arch,
            "num_classes": task.num_classes,
            "image_size": task.image_size,
            "test_top1": test["top1"],
            "epochs": config.epochs,
            "train_s": sum(r["seconds"] for r in records),
            "path": str(path),
        }
        if ctx.is_main:
            save_teacher(path, task.model, config.arch, task.num_classes, task.image_size, result)
            write_json(result, run.path / "result.json")
    ctx.barrier()
    return result


def quick_teacher(
    out: str | Path = "runs/teacher",
    image_size: int = 16,
    progress: bool = True,
    device: str = "auto",
    **changes: Any,
) -> dict[str, Any]:
    """The quick digits teacher at ``out``: reused when ``out/teacher.pt`` holds one at
    ``image_size``, else trained (an interrupted run there is resumed) with the quick preset
    and ``changes`` (other :class:`TeacherConfig` fields, e.g. ``epochs``, ``seed``). Returns
    the teacher's result record with ``reused`` (bool) added."""
    path = Path(out) / "teacher.pt"
    if path.is_file():
        state = load_checkpoint(path, "teacher")
        if state["image_size"] != image_size or state["num_classes"] != 10:
            raise ValueError(
                f"{path} is a teacher for {state['num_classes']} classes at "
                f"{state['image_size']} x {state['image_size']}; the quick search needs one "
                f"for the digits at {image_size} x {image_size}: pass --teacher PATH, "
                "--no-teacher, or another --teacher-dir"
            )
        result = {**state["metrics"], "reused": True}
        echo(
            f"teacher: reusing {path} ({result['arch']}, test top-1 "
            f"{result['test_top1']:.1f}%, trained in {result['train_s']:.0f} s)"
        )
        return result
    began = time.perf_counter()
    resume = (Path(out) / "checkpoint.pt").is_file()
    config = TeacherConfig(
        image_size=image_size,
        out=str(out),
        resume=resume,
        progress=progress,
        device=device,
        **changes,
    )
    result = train_teacher(config)
    echo(
        f"teacher: trained {result['arch']} in {time.perf_counter() - began:.0f} s "
        f"(test top-1 {result['test_top1']:.1f}%): {path}"
    )
    return {**result, "reused": False}
