"""Training an evaluation network from a genotype (Sec. 4.3, Appendix A): CIFAR, ImageNet-mobile.

:class:`TrainConfig` holds the paper's CIFAR recipe and :func:`imagenet_mobile_config` the
ImageNet-mobile one; :func:`train` runs either on the engine (:func:`nos_ops.engine.fit`):
run folder and lock, ``log.jsonl``, ``checkpoint.pt`` every epoch (``resume`` continues bit
for bit on CPU), the non-finite guard, mixed precision, ``channels_last``, ``torch.compile``
and DDP under ``torchrun``. At the end it writes ``network.pt`` (:func:`save_network`; what
:func:`load_network`, ``nos-ops export`` and users load), ``result.json`` and ``curves.png``.

Data: the bundled digits (the default, quick), CIFAR-10/100 from ``data_dir``, or any data
passed to :func:`train`: an :class:`~nos_ops.data.ImageSet` pair or any ``Dataset`` pair of
(normalised C x H x W image, label); ImageNet goes through the latter:
``train(imagenet_mobile_config(...), train_dataset, val_dataset)``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset

from .data import Augment, ImageSet
from .engine import (
    DistributedContext,
    ModelTask,
    RunConfig,
    RunDir,
    echo,
    evaluate,
    fit,
    grad_scaler,
    setup_distributed,
    train_one_epoch,
    write_json,
)
from .engine.amp import check_amp
from .engine.data import check_data_pair, classifier_data
from .engine.distributed import wrap_ddp_model
from .engine.progress import draw_curves
from .genotype import Genotype, get_genotype
from .network import NETWORKS, build_network, network_cost, save_network

__all__ = ["TrainConfig", "QUICK", "imagenet_mobile_config", "learning_rate", "train"]

QUICK: dict[str, Any] = {
    "layers": 8,
    "channels": 16,
    "image_size": 16,
    "epochs": 10,
    "batch_size": 64,
    "cutout": 8,
}
"""What a quick run changes: fields still at their default take these values."""


@dataclass
class TrainConfig(RunConfig):
    """Training recipe; the defaults are the paper's CIFAR evaluation (Sec. 4.3, App. A1).

    20 cells, 36 channels, auxiliary head weight 0.4, drop path 0.3 ramped linearly, cutout
    16, SGD momentum 0.9, cosine decay to 0 over 600 epochs, batch 128, weight decay 3e-4
    (5e-4 for 100 classes), gradient clipping at 5. The learning rate is 0.025, not the 0.25
    printed in App. A1: 0.25 is almost certainly a typo (ten times DARTS's 0.025, which every
    method the paper compares with uses at this batch size; 0.25 is the ImageNet rate at
    batch 512, App. A2).

    ``genotype`` is a :class:`Genotype`, a name (``"DARTS_V2"``) or a JSON path; ``network``
    ``"cifar"`` or ``"imagenet"``; ``data_dir`` a CIFAR folder, an image folder
    (:func:`nos_ops.engine.data.load_image_folder_sets`), or None for the bundled digits.
    ``quick`` (None: on for the digits) gives fields at their default the values of
    :data:`QUICK`. ``schedule`` is ``"cosine"`` or ``"linear"`` after ``warmup_epochs``;
    ``max_macs`` raises before training if the network is bigger; ``amp`` is ``"none"``,
    ``"bf16"`` or ``"fp16"``; ``out`` is the run folder (``resume`` continues it,
    ``overwrite`` empties it first).
    """

    preset: ClassVar[dict[str, Any]] = QUICK
    kind: ClassVar[str] = "train"
    genotype: str | Genotype = "DARTS_V2"
    network: str = "cifar"
    data_dir: str | None = None
    image_size: int | None = None
    num_classes: int | None = None
    epochs: int = 600
    batch_size: int = 128
    lr: float = 0.025
    momentum: float = 0.9
    weight_decay: float | None = None
    schedule: str = "cosine"
    warmup_epochs: int = 0
    grad_clip: float = 5.0
    layers: int = 20
    channels: int = 36
    auxiliary_weight: float = 0.4
    drop_path: float = 0.3
    cutout: int = 16
    label_smoothing: float = 0.0
    max_macs: int | None = None
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    workers: int = 4
    out: str = "runs/train"

    def __post_init__(self) -> None:
        self.check_fields()
        self.require_choice("network", NETWORKS)
        self.require_positive("grad_clip")
        self.require_fraction("momentum", "label_smoothing")
        self.require_int("workers", "cutout", minimum=0)
        self.require_int("max_macs", optional=True)
        self.require_choice("schedule", ("cosine", "linear"))
        check_amp(self.amp)
        self.require_int("epochs", "batch_size", "channels")
        self.require_int("layers", minimum=3)
        self.require_int("image_size", "num_classes", optional=True)
        self.require_positive("lr")
        self.require_positive("weight_decay", zero=True, optional=True)
        get_genotype(self.genotype)  # a name, a genotype or a file: refused now, not later
        self.require_positive("auxiliary_weight", "cutout", zero=True)
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(
                f"warmup_epochs={self.warmup_epochs!r} is not valid; expected an "
                f"int in [0, epochs={self.epochs})"
            )
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"drop_path={self.drop_path!r} is not valid; expected [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields; a :class:`Genotype` becomes its ``to_dict()``."""
        data = dataclasses.asdict(self)
        if isinstance(self.genotype, Genotype):
            data["genotype"] = self.genotype.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        if isinstance(data.get("genotype"), dict):
            data["genotype"] = Genotype.from_dict(data["genotype"])
        return super().from_dict(data)


def imagenet_mobile_config(**overrides: Any) -> TrainConfig:
    """The ImageNet-mobile recipe (Sec. 4.3, App. A2; DARTS for what the paper leaves out):
    14 cells, 48 channels, SGD lr 0.25 with 5 warm-up epochs then linear decay, batch 512,
    300 epochs, label smoothing 0.1, weight decay 3e-5, no drop path or cutout, 224x224 and
    at most 600M multiply-adds. ``overrides`` replace any field."""
    recipe: dict[str, Any] = {
        "network": "imagenet",
        "layers": 14,
        "channels": 48,
        "lr": 0.25,
        "schedule": "linear",
        "warmup_epochs": 5,
        "batch_size": 512,
        "epochs": 300,
        "label_smoothing": 0.1,
        "weight_decay": 3e-5,
        "drop_path": 0.0,
        "cutout": 0,
        "image_size": 224,
        "max_macs": 600_000_000,
        "quick": False,
    }
    return TrainConfig(**{**recipe, **overrides})


def learning_rate(config: TrainConfig, epoch: int) -> float:
    """The learning rate of 0-based ``epoch``: linear warm-up, then cosine or linear to 0."""
    if epoch < config.warmup_epochs:
        return config.lr * (epoch + 1) / config.warmup_epochs
    progress = (epoch - config.warmup_epochs) / (config.epochs - config.warmup_epochs)
    if config.schedule == "cosine":
        return 0.5 * config.lr * (1.0 + math.cos(math.pi * progress))
    return config.lr * (1.0 - progress)


class _TrainTask(ModelTask):
    kind = "train"

    def __init__(self, config: TrainConfig, data: tuple, ctx: DistributedContext) -> None:
        self.config, self.ctx, self.total_epochs = config, ctx, config.epochs
        self.train_loader, self.test_loader, classes, size = classifier_data(config, ctx, data)
        self.arch = {
            "network": config.network,
            "channels": config.channels,
            "layers": config.layers,
        }
        self.arch.update(
            num_classes=classes, auxiliary=config.auxiliary_weight > 0, image_size=size
        )
        self.input_cfg: dict[str, Any] = {"input_size": (3, size, size)}  # network.pt keeps it
        augment = getattr(self.test_loader, "augment", None)
        if isinstance(augment, Augment):  # the library's loaders: their normalisation
            self.input_cfg.update(mean=augment.mean, std=augment.std)
        self._build(get_genotype(config.genotype))

    def _build(self, genotype: Genotype) -> None:
        """The network of ``genotype`` with its optimizer, scaler and runner."""
        config, size = self.config, self.arch["image_size"]
        self.genotype = genotype
        torch.manual_seed(config.seed)
        self.model = build_network(self.arch, genotype)
        self.model.pretrained_cfg = dict(self.input_cfg)
        self.params, self.macs = network_cost(self.model, size)
        if config.max_macs is not None and self.macs > config.max_macs:
            raise ValueError(
                f"the network has {self.macs / 1e6:.1f}M multiply-adds at {size}x{size}, over "
                f"max_macs={config.max_macs / 1e6:.1f}M; use fewer layers/channels"
            )
        layout = torch.channels_last if config.channels_last else torch.preserve_format
        self.model.to(self.ctx.device, memory_format=layout)
        decay = config.weight_decay
        decay = (5e-4 if self.arch["num_classes"] == 100 else 3e-4) if decay is None else decay
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), config.lr, momentum=config.momentum, weight_decay=decay
        )
        self.scaler = grad_scaler(config.amp, self.ctx.device)
        self.runner = wrap_ddp_model(self.model, self.ctx)
        if config.compile:
            self.runner = torch.compile(self.runner)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume with the run's own genotype, even where the genotype file it was started
        from has since been overwritten (by a later search, say)."""
        saved = Genotype.from_dict(state["genotype"])
        if saved != self.genotype:
            if self.ctx.is_main:
                echo(
                    f"resume: {self.config.genotype!s} now holds another genotype than this "
                    "run's; continuing with the run's own (from its checkpoint)"
                )
            self._build(saved)
        super().load_state_dict(state)

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        c, lr = self.config, learning_rate(self.config, epoch - 1)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.drop_path_prob = c.drop_path * (epoch - 1) / c.epochs
        torch.manual_seed(((c.seed * 1_000_003 + epoch - 1) * 1_000_003 + self.ctx.rank) % 2**63)
        self.train_loader.set_epoch(epoch - 1)
        show, desc = c.progress and self.ctx.is_main, f"epoch {epoch}/{c.epochs}"
        common = {"amp": c.amp, "channels_last": c.channels_last, "ctx": self.ctx, "progress": show}
        train = train_one_epoch(
            self.runner,
            self.train_loader,
            self.optimizer,
            auxiliary_weight=c.auxiliary_weight,
            grad_clip=c.grad_clip,
            label_smoothing=c.label_smoothing,
            scaler=self.scaler,
            desc=desc,
            **common,
        )
        test = evaluate(self.runner, self.test_loader, desc=f"{desc} test", **common)
        return {
            "lr": lr,
            "drop_path": self.model.drop_path_prob,
            **{f"train_{k}": v for k, v in train.items() if k != "samples"},
            **{f"test_{k}": v for k, v in test.items() if k != "samples"},
        }

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "arch": self.arch, "genotype": self.genotype.to_dict()}

    def describe(self, r: dict[str, Any]) -> str:
        return (
            f"epoch {r['epoch']}/{self.config.epochs}: lr {r['lr']:.4g}, train loss "
            f"{r['train_loss']:.4f}, top-1 {r['train_top1']:.2f}% | test loss "
            f"{r['test_loss']:.4f}, top-1 {r['test_top1']:.2f}%, top-5 "
            f"{r['test_top5']:.2f}% ({r['seconds']:.1f} s)"
        )


def train(
    config: TrainConfig,
    train_data: ImageSet | Dataset | None = None,
    test_data: ImageSet | Dataset | None = None,
) -> dict[str, Any]:
    """Train an evaluation network from ``config.genotype`` and report its final metrics.

    Data come from ``config`` unless ``train_data`` and ``test_data`` are given. Only rank 0
    writes into ``config.out``: ``checkpoint.pt`` and ``log.jsonl`` every epoch, then
    ``network.pt``, ``genotype.json``, ``result.json`` and ``curves.png`` (with matplotlib).
    Returns ``top1``, ``top5`` (test accuracy, %), ``top1_err`` (100 - top1), ``test_loss``,
    ``train_loss``, ``params`` (without the auxiliary head), ``macs`` (batch 1), ``epochs``,
    ``wall_s`` and ``out``. Raises :class:`~nos_ops.engine.NonFiniteLossError` when a loss
    turns NaN or infinite (the last good checkpoint is kept).
    """
    began, config = time.perf_counter(), config.resolved()
    check_data_pair(train_data, test_data)
    ctx = setup_distributed(config.device)
    task = _TrainTask(config, (train_data, test_data), ctx)
    if ctx.is_main:
        echo(
            f"train: {config.network}, {config.layers} cells, {config.channels} channels, "
            f"{task.params / 1e6:.3f}M params, {task.macs / 1e6:.1f}M MACs, "
            f"{'quick run on the digits' if config.quick else 'full recipe'}, world "
            f"{ctx.world_size}, into {config.out}"
        )
    with RunDir.of(config, ctx) as run:
        records = fit(task, run, ctx)
        last = records[-1] if records else {}
        final = {
            "top1": last.get("test_top1"),
            "top5": last.get("test_top5"),
            "top1_err": 100.0 - last["test_top1"] if last else None,
            "test_loss": last.get("test_loss"),
            "train_loss": last.get("train_loss"),
            "params": task.params,
            "macs": task.macs,
            "epochs": config.epochs,
            "wall_s": time.perf_counter() - began,
            "out": str(run.path),
        }
        if ctx.is_main:
            save_network(run.path / "network.pt", task.model, task.arch, task.genotype, final)
            task.genotype.save(run.path / "genotype.json")
            write_json(final, run.path / "result.json")
            keys = ["train_loss", "test_loss", "train_top1", "test_top1", "test_top5", "lr"]
            draw_curves(records, keys, run.path / "curves.png", f"{config.network} network")
    ctx.barrier()
    return final
