"""The ResNet self-calibration study (Sec. 4.1, Table 1): ResNet-18 and each op added.

Every model is trained with one recipe (Appendix A1): SGD lr 0.025, momentum 0.9, weight
decay 1e-4, learning rate divided by 10 every 30 epochs, random crop and horizontal flip,
batch 32, 300 epochs. Each self-calibration op is appended after ResNet stages ``stages``
(1 2 3 in the paper) by :func:`nos_ops.models.add_self_calibration`. Without ``data_dir`` the
study is quick on the bundled digits (:data:`QUICK`). :func:`run_study` trains the baseline
and then each op's model on the engine (one checkpoint, resumable mid-model), and writes
``results.json`` (``args``, ``rows``, ``table``) with :func:`markdown_table`, Table 1's layout.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from .engine import (
    Capped,
    DistributedContext,
    ModelTask,
    RunConfig,
    RunDir,
    echo,
    evaluate,
    fit,
    setup_distributed,
    train_one_epoch,
    write_json,
)
from .engine.data import classifier_loaders, load_data
from .models import BasicBlock, add_self_calibration, resnet18_cifar
from .profile import count_macs, count_params

__all__ = ["OPS", "QUICK", "StudyConfig", "resnet18", "markdown_table", "run_study"]

OPS = {  # op -> (Model, Type, Kernels) as in Table 1
    "dynamic_conv_3x3": ("+ Dynamic", "Normal", "3"),
    "dynamic_conv_5x5": ("+ Dynamic", "Normal", "5"),
    "dil_dynamic_conv_3x3": ("+ Dynamic", "Dilated", "3"),
    "dil_dynamic_conv_5x5": ("+ Dynamic", "Dilated", "5"),
    "spatial_attention": ("+ Attention", "Spatial", "-"),
    "channel_attention": ("+ Attention", "Channel", "-"),
}
QUICK: dict[str, Any] = {"epochs": 3, "batch_size": 64, "width": 0.25, "image_size": 16}
"""What a quick study changes (fields still at their default)."""


@dataclass
class StudyConfig(RunConfig):
    """Settings of :func:`run_study`; the defaults are the paper's (Sec. 4.1, App. A1).
    ``ops`` are :data:`OPS` names (default all), ``width`` scales ResNet-18's channels,
    ``max_steps_per_epoch`` caps the training and test batches (for tiny runs)."""

    preset: ClassVar[dict[str, Any]] = QUICK
    kind: ClassVar[str] = "study"
    ops: list[str] = field(default_factory=lambda: list(OPS))
    stages: list[int] = field(default_factory=lambda: [1, 2, 3])
    data_dir: str | None = None
    epochs: int = 300
    batch_size: int = 32
    lr: float = 0.025
    width: float = 1.0
    image_size: int | None = None
    max_steps_per_epoch: int | None = None
    out: str = "runs/study"

    def __post_init__(self) -> None:
        self.check_fields()
        unknown = [op for op in self.ops if op not in OPS]
        if unknown or not self.ops:
            raise ValueError(f"ops={self.ops!r} is not valid; expected names from {list(OPS)}")
        if not self.stages or any(s not in (1, 2, 3, 4) for s in self.stages):
            raise ValueError(
                f"stages={self.stages!r} is not valid; ResNet-18 has stages 1, 2, 3 and 4"
            )
        self.require_positive("width", "lr")
        self.require_int("epochs", "batch_size")
        self.require_int("max_steps_per_epoch", optional=True)
        self.require_digits_size()


def resnet18(num_classes: int, width: float) -> nn.Module:
    """CIFAR ResNet-18 with every stage's channels scaled by ``width`` (1.0: the original)."""
    model = resnet18_cifar(num_classes)
    if width == 1.0:
        return model
    channels = [max(8, round(c * width)) for c in (64, 128, 256, 512)]
    model.conv1 = nn.Conv2d(3, channels[0], 3, 1, 1, bias=False)
    model.bn1 = nn.BatchNorm2d(channels[0])
    previous = channels[0]
    for i, (c, stride) in enumerate(zip(channels, (1, 2, 2, 2)), start=1):
        setattr(
            model, f"layer{i}", nn.Sequential(BasicBlock(previous, c, stride), BasicBlock(c, c, 1))
        )
        previous = c
    model.linear = nn.Linear(channels[-1], num_classes)
    return model


class _StudyTask(ModelTask):
    kind = "study"

    def __init__(self, config: StudyConfig, ctx: DistributedContext) -> None:
        self.config, self.ctx = config, ctx
        self.names: list[str | None] = [None, *config.ops]
        self.total_epochs = len(self.names) * config.epochs
        train_set, test_set, mean, std = load_data(config.data_dir, config.image_size)
        self.train_set, self.size = train_set, train_set.images.shape[-1]
        train, test, self.num_classes, _ = classifier_loaders(
            train_set, test_set, ctx, config, mean, std
        )
        self.train_loader = Capped(train, config.max_steps_per_epoch)
        self.test_loader = Capped(test, config.max_steps_per_epoch)
        self.rows: list[dict[str, Any]] = []
        self.index, self.train_s = -1, 0.0

    def _build(self, index: int) -> None:
        """Model ``index`` (0: the baseline) with its optimizer, MACs and parameters."""
        c, op = self.config, self.names[index]
        torch.manual_seed(c.seed)
        self.model = resnet18(self.num_classes, c.width)
        if op is not None:
            add_self_calibration(self.model, op, c.stages)
        self.macs = count_macs(self.model, torch.zeros(1, 3, self.size, self.size))
        self.params = count_params(self.model)
        self.model.to(self.ctx.device)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), c.lr, momentum=0.9, weight_decay=1e-4
        )
        self.index, self.train_s = index, 0.0

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        c = self.config
        index, k = divmod(epoch - 1, c.epochs)
        if index != self.index:
            self._build(index)
        lr = c.lr * 0.1 ** (k // 30)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        name, began = self.names[index] or "baseline", time.perf_counter()
        self.train_loader.set_epoch(k)
        train = train_one_epoch(
            self.model,
            self.train_loader,
            self.optimizer,
            progress=c.progress,
            desc=f"{name} {k + 1}/{c.epochs}",
        )
        self.train_s += time.perf_counter() - began
        record = {
            "model": name,
            "model_epoch": k + 1,
            "lr": lr,
            "train_loss": train["loss"],
            "train_top1": train["top1"],
        }
        if k + 1 == c.epochs:
            test = evaluate(self.model, self.test_loader)
            self.rows.append(
                {
                    "op": self.names[index],
                    "top1": test["top1"],
                    "top5": test["top5"],
                    "top1_err": 100.0 - test["top1"],
                    "top5_err": 100.0 - test["top5"],
                    "macs": self.macs,
                    "params": self.params,
                    "train_s": self.train_s,
                }
            )
            record.update(test_top1=test["top1"], test_top5=test["top5"])
        return record

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "rows": self.rows,
            "index": self.index,
            "epochs": self.config.epochs,
            "train_s": self.train_s,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["epochs"] != self.config.epochs:
            raise ValueError(
                f"resume: the study was started with epochs={state['epochs']}; "
                "a study cannot change its epochs per model on resume"
            )
        self._build(state["index"])
        super().load_state_dict(state)
        self.rows, self.train_s = state["rows"], state["train_s"]

    def describe(self, r: dict[str, Any]) -> str:
        test = f", test top-1 {r['test_top1']:.2f}%" if "test_top1" in r else ""
        return (
            f"{r['model']} epoch {r['model_epoch']}/{self.config.epochs}: train loss "
            f"{r['train_loss']:.4f}, top-1 {r['train_top1']:.2f}%{test} "
            f"({r['seconds']:.1f} s)"
        )


def markdown_table(rows: list[dict[str, Any]], caption: str) -> str:
    """Table 1's layout: the baseline absolute, op rows with differences to the baseline."""
    base = rows[0]
    lines = [
        caption,
        "",
        "| Model | Type | Kernels | Top-1 err (%) | Top-5 err (%) | MACs (M) | Params (M) |",
        "|---|---|---|---|---|---|---|",
        f"| ResNet-18 | - | - | {base['top1_err']:.2f} | {base['top5_err']:.2f} | "
        f"{base['macs'] / 1e6:.2f} | {base['params'] / 1e6:.2f} |",
    ]
    for row in rows[1:]:
        model, kind, kernels = OPS[row["op"]]
        d1, d5 = row["top1_err"] - base["top1_err"], row["top5_err"] - base["top5_err"]
        lines.append(
            f"| {model} | {kind} | {kernels} | {row['top1_err']:.2f} ({d1:+.2f}) | "
            f"{row['top5_err']:.2f} ({d5:+.2f}) | {(row['macs'] - base['macs']) / 1e6:+.3f} | "
            f"{(row['params'] - base['params']) / 1e6:+.3f} |"
        )
    return "\n".join(lines)


def run_study(config: StudyConfig) -> dict[str, Any]:
    """Train the baseline and each op's model; returns ``{"args", "rows", "table"}`` (also
    ``out/results.json``). Rows hold ``op``, ``top1``/``top5`` (test accuracy, %),
    ``top1_err``/``top5_err`` (100 minus those), ``macs``, ``params`` and ``train_s``."""
    config = config.resolved()
    ctx = setup_distributed(config.device)
    task = _StudyTask(config, ctx)
    where = "quick run on the digits" if config.quick else "paper recipe"
    echo(
        f"study: ResNet-18 x{config.width:g} and {len(config.ops)} op(s) after stages "
        f"{config.stages}, {config.epochs} epochs each ({where}), into {config.out}"
    )
    with RunDir.of(config, ctx) as run:
        fit(task, run, ctx)
        quick = ", quick mode: narrower and shorter than the paper" if config.quick else ""
        caption = (
            f"Self-calibration ops after ResNet-18 stages {', '.join(map(str, config.stages))} "
            f"on {task.train_set.name} ({task.size}x{task.size}, {config.epochs} epochs, batch "
            f"{config.batch_size}, width x{config.width:g}{quick}). Errors of the last epoch; "
            "differences to the baseline in brackets; MACs at batch 1."
        )
        result = {
            "args": dataclasses.asdict(config),
            "rows": task.rows,
            "table": markdown_table(task.rows, caption),
        }
        write_json(result, run.path / "results.json")
    echo(result["table"])
    return result
