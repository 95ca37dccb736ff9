"""Training an evaluation network from a genotype (Sec. 4.3, Appendix A): CIFAR, ImageNet-mobile.

:class:`TrainConfig` holds the paper's CIFAR recipe by default and
:func:`imagenet_mobile_config` the ImageNet-mobile one; :func:`train` runs either, with
per-epoch JSON-lines logs, atomic checkpoints (``resume`` continues bit for bit on CPU),
mixed precision, ``channels_last``, ``torch.compile`` and DDP under ``torchrun``.
:func:`train_one_epoch` and :func:`evaluate` work for any classifier (the ResNet study
uses them too).

Data: the bundled digits (default), CIFAR-10/100 from ``data_dir``, or any data passed to
:func:`train`: an :class:`~nos_ops.data.ImageSet` (batched on the device by
:class:`~nos_ops.data.TensorLoader`) or any ``torch.utils.data.Dataset`` yielding
(normalised C x H x W float image, label) pairs (batched by a ``DataLoader``). ImageNet
goes through the latter: wrap your image folder in a ``Dataset`` and call
``train(imagenet_mobile_config(...), train_data, test_data)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    Augment,
    ImageSet,
    TensorLoader,
    channel_stats,
    load_cifar,
    load_digits,
)
from .genotype import Genotype, get_genotype
from .models.eval import NetworkCIFAR, NetworkImageNet
from .profile import count_macs, count_params
from .utils.checkpoint import load_checkpoint, save_checkpoint
from .utils.distributed import DistributedContext, setup_distributed
from .utils.runlog import JsonlLogger, read_jsonl

__all__ = [
    "TrainConfig",
    "QUICK",
    "imagenet_mobile_config",
    "build_network",
    "learning_rate",
    "load_data",
    "train_one_epoch",
    "evaluate",
    "train",
]

_logger = logging.getLogger(__name__)

_NETWORKS = {"cifar": NetworkCIFAR, "imagenet": NetworkImageNet}
_SCHEDULES = ("cosine", "linear")
_AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}

QUICK: dict[str, Any] = {
    "layers": 8,
    "channels": 16,
    "image_size": 16,
    "epochs": 10,
    "batch_size": 64,
    "cutout": 8,
}
"""What ``quick=True`` changes: fields still at their default take these values (the image
size only for the digits)."""


@dataclass
class TrainConfig:
    """Training recipe; the defaults are the paper's CIFAR evaluation (Sec. 4.3, App. A1).

    20 cells, 36 channels, auxiliary head weight 0.4, drop path 0.3 ramped linearly
    (``drop_path * epoch / epochs``, as DARTS), cutout 16, SGD momentum 0.9, cosine decay to
    0 over 600 epochs, batch 128, weight decay 3e-4 (5e-4 for 100 classes), gradient
    clipping at 5.

    The initial learning rate is 0.025, not the 0.25 printed in App. A1: 0.25 is almost
    certainly a typo. It is ten times DARTS's 0.025 (batch 96), which every method the
    paper compares with and follows uses with SGD at this batch size, and the paper's own
    proxy search uses 0.025; 0.25 is the ImageNet rate at batch 512 (App. A2). Set ``lr``
    to change it.

    Attributes:
        genotype: a :class:`Genotype`, a name (``"DARTS_V2"``) or a genotype JSON path.
        network: ``"cifar"`` (:class:`NetworkCIFAR`) or ``"imagenet"`` (:class:`NetworkImageNet`).
        data_dir: a ``cifar-10-batches-py``/``cifar-100-python`` folder (or its parent);
            None trains on the bundled digits. Ignored when :func:`train` is given data.
        image_size: digits resolution (default 32); CIFAR is 32. Also the input size of
            the MACs count when data come as a ``Dataset``.
        num_classes: needed only for a ``Dataset`` without a ``num_classes`` attribute.
        weight_decay: None picks 3e-4, or 5e-4 for 100 classes (CIFAR-100).
        schedule: ``"cosine"`` or ``"linear"`` decay to 0, per epoch, after
            ``warmup_epochs`` of linear warm-up.
        auxiliary_weight: weight of the auxiliary-head loss; 0 builds no auxiliary head.
        cutout: cutout length in pixels (0: off); random crop pads by ``image_size // 8``.
        max_macs: raise before training if the network has more multiply-adds (eval mode,
            batch 1, at the input size); the ImageNet mobile setting is 600M at 224x224.
        amp: ``"none"``, ``"bf16"`` or ``"fp16"`` autocast (fp16 uses a GradScaler on CUDA).
        compile: wrap the network in ``torch.compile``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``; under ``torchrun`` each rank takes its GPU.
        workers: ``DataLoader`` workers for ``Dataset`` inputs.
        out: folder for ``checkpoint.pt``, ``log.jsonl``, ``curves.png``, ``final.json``.
        resume: continue from ``out/checkpoint.pt`` (must exist).
        quick: a few-minute run on the digits: fields at their default take :data:`QUICK`.
        progress: tqdm progress bars (rank 0).
    """

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
    seed: int = 0
    device: str = "auto"
    workers: int = 4
    out: str = "runs/train"
    resume: bool = False
    quick: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.network not in _NETWORKS:
            raise ValueError(f"network={self.network!r} is not valid; expected one of "
                             f"{list(_NETWORKS)}")
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r} is not valid; expected one of "
                             f"{list(_SCHEDULES)}")
        if self.amp not in _AMP:
            raise ValueError(f"amp={self.amp!r} is not valid; expected one of {list(_AMP)}")
        for name in ("epochs", "batch_size", "layers", "channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is not valid; expected an int >= 1")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs!r} is not valid; expected an "
                             f"int in [0, epochs={self.epochs})")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"drop_path={self.drop_path!r} is not valid; expected [0, 1)")
        if self.auxiliary_weight < 0 or self.lr <= 0 or self.cutout < 0:
            raise ValueError(
                f"auxiliary_weight={self.auxiliary_weight!r}, lr={self.lr!r}, "
                f"cutout={self.cutout!r}: expected auxiliary_weight >= 0, lr > 0, cutout >= 0"
            )

    def resolved(self) -> TrainConfig:
        """This config with :data:`QUICK` applied to fields at their default (if ``quick``)."""
        if not self.quick:
            return self
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
        changes = {k: v for k, v in QUICK.items() if getattr(self, k) == defaults[k]}
        if self.data_dir is not None:
            changes.pop("image_size", None)  # CIFAR stays 32x32
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields; a :class:`Genotype` becomes its ``to_dict()``."""
        data = dataclasses.asdict(self)
        if isinstance(self.genotype, Genotype):
            data["genotype"] = self.genotype.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError``."""
        data = dict(data)
        if isinstance(data.get("genotype"), dict):
            data["genotype"] = Genotype.from_dict(data["genotype"])
        return cls(**data)


def imagenet_mobile_config(**overrides: Any) -> TrainConfig:
    """The ImageNet-mobile recipe (Sec. 4.3, App. A2; DARTS for what the paper leaves out).

    14 cells, 48 channels, auxiliary weight 0.4, SGD lr 0.25 with 5 warm-up epochs then
    linear decay to 0, batch 512, 300 epochs, label smoothing 0.1, weight decay 3e-5,
    no drop path or cutout, 224x224 inputs and at most 600M multiply-adds (checked
    before training). ``overrides`` replace any field.
    """
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
    }
    return TrainConfig(**{**recipe, **overrides})


def build_network(arch: dict[str, Any], genotype: Genotype | dict | str) -> nn.Module:
    """An evaluation network from an architecture record and a genotype.

    ``arch`` holds ``network`` (``"cifar"``/``"imagenet"``), ``channels``, ``layers``,
    ``num_classes``, ``auxiliary`` and optionally ``image_size`` (what :func:`train`
    stores in checkpoints). ``genotype`` is a :class:`Genotype`, its ``to_dict()``, a name
    or a JSON path. DARTS's CIFAR auxiliary head pools 8x8 features (32x32 inputs) to
    2x2; at other input sizes its pooling is adaptive to 2x2 (same parameters).
    """
    kind = arch.get("network", "cifar")
    if kind not in _NETWORKS:
        raise ValueError(f"arch['network']={kind!r} is not valid; expected one of "
                         f"{list(_NETWORKS)}")
    missing = [k for k in ("channels", "layers", "num_classes", "auxiliary") if k not in arch]
    if missing:
        raise ValueError(f"arch is missing {missing}; got keys {sorted(arch)}")
    genotype = Genotype.from_dict(genotype) if isinstance(genotype, dict) else genotype
    model = _NETWORKS[kind](
        channels=arch["channels"],
        num_classes=arch["num_classes"],
        layers=arch["layers"],
        genotype=get_genotype(genotype),
        auxiliary=arch["auxiliary"],
    )
    image_size = arch.get("image_size") or 32
    if kind == "cifar" and model.auxiliary_head is not None and image_size != 32:
        model.auxiliary_head.features[1] = nn.AdaptiveAvgPool2d(2)
    return model


def learning_rate(config: TrainConfig, epoch: int) -> float:
    """The learning rate of 0-based ``epoch``: linear warm-up, then cosine or linear to 0."""
    if epoch < config.warmup_epochs:
        return config.lr * (epoch + 1) / config.warmup_epochs
    progress = (epoch - config.warmup_epochs) / (config.epochs - config.warmup_epochs)
    if config.schedule == "cosine":
        return 0.5 * config.lr * (1.0 + math.cos(math.pi * progress))
    return config.lr * (1.0 - progress)


# ----------------------------------------------------------------------------- one epoch


def _progress(iterable: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError as err:
        raise ImportError('progress bars need tqdm: pip install "nos_ops[examples]"') from err
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    if amp not in _AMP:
        raise ValueError(f"amp={amp!r} is not valid; expected one of {list(_AMP)}")
    if _AMP[amp] is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_AMP[amp])


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _split_outputs(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    return (out[0], out[1]) if isinstance(out, tuple) else (out, None)


class _Meter:
    """Summed loss, top-1/top-5 hits and sample count, reduced over ranks on read."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices == labels[:, None]
        n = labels.shape[0]
        self.sums += torch.stack([
            loss.detach().double() * n,
            top[:, 0].sum().double(),
            top.any(dim=1).sum().double(),
            torch.tensor(n, dtype=torch.float64, device=labels.device),
        ])

    def result(self, ctx: DistributedContext | None) -> dict[str, float]:
        sums = self.sums if ctx is None else ctx.all_reduce_sum(self.sums)
        loss, top1, top5, n = sums.tolist()
        n = max(n, 1.0)
        return {
            "loss": loss / n,
            "top1_err": 100.0 * (1.0 - top1 / n),
            "top5_err": 100.0 * (1.0 - top5 / n),
            "samples": int(n),
        }


def _batches(
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    channels_last: bool,
    desc: str,
    progress: bool,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches on ``device`` (NHWC when ``channels_last``), with progress."""
    total = len(loader) if hasattr(loader, "__len__") else None
    for x, y in _progress(loader, total, desc, progress):
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, y.to(device, non_blocking=True)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    auxiliary_weight: float = 0.0,
    grad_clip: float | None = None,
    label_smoothing: float = 0.0,
    amp: str = "none",
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = False,
    ctx: DistributedContext | None = None,
    progress: bool = False,
    desc: str = "train",
) -> dict[str, float]:
    """One pass of ``loader`` with SGD steps; works for any classifier.

    ``model(x)`` may return logits or ``(logits, aux_logits)``; with an auxiliary output
    the loss is ``CE(logits) + auxiliary_weight * CE(aux_logits)``. Gradients are clipped
    to norm ``grad_clip`` (after unscaling with an fp16 ``scaler``).

    Returns ``loss`` (cross-entropy of the main logits), ``top1_err``, ``top5_err`` (%)
    and ``samples``, summed over DDP ranks when ``ctx`` is given.
    """
    device = _device_of(model)
    model.train()
    meter = _Meter(device)
    for x, y in _batches(loader, device, channels_last, desc, progress):
        with _autocast(device, amp):
            logits, aux_logits = _split_outputs(model(x))
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
            total_loss = loss
            if aux_logits is not None and auxiliary_weight > 0:
                aux_loss = F.cross_entropy(aux_logits, y, label_smoothing=label_smoothing)
                total_loss = loss + auxiliary_weight * aux_loss
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(total_loss).backward()
            if grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            total_loss.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
        meter.update(loss.float(), logits.float(), y)
    return meter.result(ctx)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    amp: str = "none",
    channels_last: bool = False,
    ctx: DistributedContext | None = None,
    progress: bool = False,
    desc: str = "test",
) -> dict[str, float]:
    """Loss and top-1/top-5 error (%) of ``model`` in eval mode over ``loader``.

    Returns ``loss``, ``top1_err``, ``top5_err`` and ``samples`` (summed over DDP ranks
    when ``ctx`` is given; a rank-sharded loader pads with a few repeated samples, as
    ``DistributedSampler`` does).
    """
    device = _device_of(model)
    model.eval()
    meter = _Meter(device)
    for x, y in _batches(loader, device, channels_last, desc, progress):
        with _autocast(device, amp):
            logits, _ = _split_outputs(model(x))
            loss = F.cross_entropy(logits.float(), y)
        meter.update(loss, logits.float(), y)
    return meter.result(ctx)


# ------------------------------------------------------------------------------------ data


class _DatasetLoader:
    """A ``DataLoader`` over a rank's shard of any ``Dataset``, reshuffled by ``set_epoch``."""

    def __init__(
        self, dataset: Dataset, batch_size: int, shuffle: bool, drop_last: bool,
        ctx: DistributedContext, seed: int, workers: int,
    ) -> None:
        self.sampler = DistributedSampler(
            dataset, ctx.world_size, ctx.rank, shuffle=shuffle, seed=seed, drop_last=False
        )
        self.loader = DataLoader(
            dataset, batch_size, sampler=self.sampler, drop_last=drop_last,
            num_workers=workers, pin_memory=ctx.device.type == "cuda",
            persistent_workers=workers > 0,
        )

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.loader)


def load_data(
    data_dir: str | os.PathLike | None = None, image_size: int | None = None
) -> tuple[ImageSet, ImageSet, tuple[float, ...], tuple[float, ...]]:
    """(train, test, mean, std): CIFAR-10/100 from ``data_dir``, or the bundled digits.

    Digits: the train and test splits of :func:`~nos_ops.data.load_digits` at
    ``image_size`` (default 32) and their train-set channel statistics. CIFAR: the
    standard train/test sets (32x32; other ``image_size`` values raise) and constants.
    """
    if data_dir is None:
        train_set, _, test_set = load_digits(image_size or 32)
        mean, std = channel_stats(train_set)
        return train_set, test_set, mean, std
    if image_size not in (None, 32):
        raise ValueError(f"image_size={image_size} is not valid for CIFAR; its images are "
                         "32x32 (leave image_size None)")
    train_set = load_cifar(data_dir, train=True)
    test_set = load_cifar(data_dir, train=False)
    if train_set.num_classes == 100:
        return train_set, test_set, CIFAR100_MEAN, CIFAR100_STD
    return train_set, test_set, CIFAR10_MEAN, CIFAR10_STD


def _loaders(
    config: TrainConfig,
    train_data: ImageSet | Dataset | None,
    test_data: ImageSet | Dataset | None,
    ctx: DistributedContext,
) -> tuple[Any, Any, int, int]:
    """(train loader, test loader, num_classes, image size)."""
    if (train_data is None) != (test_data is None):
        raise ValueError("pass both train_data and test_data, or neither (config data)")
    mean = std = None
    if train_data is None:
        train_data, test_data, mean, std = load_data(config.data_dir, config.image_size)
    if config.batch_size % ctx.world_size:
        raise ValueError(f"batch_size={config.batch_size} must be divisible by the "
                         f"world size {ctx.world_size} (it is the global batch)")
    batch = config.batch_size // ctx.world_size
    if isinstance(train_data, ImageSet):
        if not isinstance(test_data, ImageSet):
            raise TypeError("train_data is an ImageSet, so test_data must be one too")
        if mean is None:
            mean, std = channel_stats(train_data)
        size = train_data.images.shape[-1]
        pad = max(1, size // 8)
        common = {"device": ctx.device, "seed": config.seed, "rank": ctx.rank,
                  "world_size": ctx.world_size}
        train_loader = TensorLoader(
            train_data, batch, shuffle=True, drop_last=True,
            augment=Augment(mean, std, pad, True, config.cutout), **common,
        )
        test_loader = TensorLoader(
            test_data, batch, augment=Augment(mean, std, 0, False, 0), **common
        )
        return train_loader, test_loader, train_data.num_classes, size
    num_classes = getattr(train_data, "num_classes", None) or config.num_classes
    if num_classes is None:
        raise ValueError("train_data has no num_classes attribute; set config.num_classes")
    size = config.image_size or int(train_data[0][0].shape[-1])
    train_loader = _DatasetLoader(train_data, batch, True, True, ctx, config.seed, config.workers)
    test_loader = _DatasetLoader(test_data, batch, False, False, ctx, config.seed, config.workers)
    return train_loader, test_loader, num_classes, size


# ----------------------------------------------------------------------------------- train


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return ((seed * 1_000_003 + epoch) * 1_000_003 + rank) % 2**63


def _plot(log_path: Path, path: Path, title: str) -> None:
    from .plot import plot_curves

    keys = ["train_loss", "test_loss", "train_top1_err", "test_top1_err", "test_top5_err", "lr"]
    try:
        plot_curves(read_jsonl(log_path), keys, path, title=title)
    except ImportError as err:
        _logger.warning("learning curves not drawn: %s", err)


def train(
    config: TrainConfig,
    train_data: ImageSet | Dataset | None = None,
    test_data: ImageSet | Dataset | None = None,
) -> dict[str, Any]:
    """Train an evaluation network from ``config.genotype`` and report its final metrics.

    Data come from ``config`` (digits or CIFAR) unless ``train_data`` and ``test_data``
    are given (both :class:`~nos_ops.data.ImageSet`, or any ``Dataset`` of normalised
    images, e.g. ImageNet; see the module docstring). The test set is evaluated after
    every epoch. Under ``torchrun`` each rank trains on its shard of the global batch and
    metrics are reduced across ranks; only rank 0 writes, into ``config.out``:

    * ``checkpoint.pt`` every epoch (atomic): model, optimizer, scaler, epoch, the config,
      the genotype (``to_dict()``) and the architecture record, so
      :func:`nos_ops.export.load_network` rebuilds the network without re-typing it;
    * ``log.jsonl``: one record per epoch (lr, drop path, train/test loss and errors);
    * ``curves.png`` (needs matplotlib) and ``final.json`` at the end.

    Returns the final metrics: ``top1_err``, ``top5_err``, ``test_loss``, ``train_loss``,
    ``params`` (without the auxiliary head), ``macs`` (eval mode, batch 1), ``epochs``,
    ``wall_s`` and ``out``.
    """
    start_time = time.perf_counter()
    config = config.resolved()
    ctx = setup_distributed(config.device)
    out = Path(config.out)
    ckpt_path, log_path = out / "checkpoint.pt", out / "log.jsonl"
    genotype = get_genotype(config.genotype)
    train_loader, test_loader, num_classes, image_size = _loaders(
        config, train_data, test_data, ctx
    )
    arch = {
        "network": config.network,
        "channels": config.channels,
        "layers": config.layers,
        "num_classes": num_classes,
        "auxiliary": config.auxiliary_weight > 0,
        "image_size": image_size,
    }
    torch.manual_seed(config.seed)
    model = build_network(arch, genotype)
    params = count_params(model)
    if model.auxiliary_head is not None:
        params -= count_params(model.auxiliary_head)
    macs = count_macs(model, torch.zeros(1, 3, image_size, image_size))
    if config.max_macs is not None and macs > config.max_macs:
        raise ValueError(
            f"the network has {macs / 1e6:.1f}M multiply-adds at {image_size}x{image_size}, "
            f"over max_macs={config.max_macs / 1e6:.1f}M; use fewer layers/channels"
        )
    model.to(ctx.device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    weight_decay = config.weight_decay
    if weight_decay is None:
        weight_decay = 5e-4 if num_classes == 100 else 3e-4
    optimizer = torch.optim.SGD(
        model.parameters(), config.lr, momentum=config.momentum, weight_decay=weight_decay
    )
    use_scaler = config.amp == "fp16" and ctx.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    start_epoch, last = 0, {}
    if config.resume:
        state = load_checkpoint(ckpt_path, ctx.device)
        if state.get("arch") != arch or state.get("genotype") != genotype.to_dict():
            raise ValueError(
                f"resume: {ckpt_path} holds a different architecture ({state.get('arch')}) or "
                f"genotype than this config ({arch}); resume with the checkpoint's config, "
                "TrainConfig.from_dict(load_checkpoint(path)['config']), or use another out"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, last = state["epoch"], state.get("metrics", {})
    keep_until = start_epoch + 1 if config.resume else None
    logger = JsonlLogger(log_path, enabled=ctx.is_main, truncate_from_epoch=keep_until)
    runner: nn.Module = model
    if ctx.enabled:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        runner = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if config.compile:
        runner = torch.compile(runner)
    if ctx.is_main:
        _logger.info("%s: %d cells, %d channels, %.3fM params, %.1fM MACs at %dx%d, world %d",
                     config.network, config.layers, config.channels, params / 1e6, macs / 1e6,
                     image_size, image_size, ctx.world_size)
        out.mkdir(parents=True, exist_ok=True)
        genotype.save(out / "genotype.json")

    progress = config.progress and ctx.is_main
    for epoch in range(start_epoch, config.epochs):
        epoch_start = time.perf_counter()
        lr = learning_rate(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.drop_path_prob = config.drop_path * epoch / config.epochs
        torch.manual_seed(_epoch_seed(config.seed, epoch, ctx.rank))
        train_loader.set_epoch(epoch)
        desc = f"epoch {epoch + 1}/{config.epochs}"
        train_metrics = train_one_epoch(
            runner, train_loader, optimizer, auxiliary_weight=config.auxiliary_weight,
            grad_clip=config.grad_clip, label_smoothing=config.label_smoothing, amp=config.amp,
            scaler=scaler, channels_last=config.channels_last, ctx=ctx, progress=progress,
            desc=desc,
        )
        test_metrics = evaluate(
            runner, test_loader, amp=config.amp, channels_last=config.channels_last, ctx=ctx,
            progress=progress, desc=f"{desc} test",
        )
        last = {
            "epoch": epoch + 1,
            "lr": lr,
            "drop_path": model.drop_path_prob,
            **{f"train_{k}": v for k, v in train_metrics.items() if k != "samples"},
            **{f"test_{k}": v for k, v in test_metrics.items() if k != "samples"},
            "epoch_s": time.perf_counter() - epoch_start,
        }
        logger.log(**last)
        if ctx.is_main:
            _logger.info(
                "epoch %d/%d lr %.4g train loss %.4f top-1 err %.2f%% | test loss %.4f top-1 "
                "err %.2f%% top-5 err %.2f%% (%.1fs)", epoch + 1, config.epochs, lr,
                last["train_loss"], last["train_top1_err"], last["test_loss"],
                last["test_top1_err"], last["test_top5_err"], last["epoch_s"],
            )
            save_checkpoint(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "epoch": epoch + 1,
                    "metrics": last,
                    "config": config.to_dict(),
                    "genotype": genotype.to_dict(),
                    "arch": arch,
                },
                ckpt_path,
            )
    final = {
        "top1_err": last.get("test_top1_err"),
        "top5_err": last.get("test_top5_err"),
        "test_loss": last.get("test_loss"),
        "train_loss": last.get("train_loss"),
        "params": params,
        "macs": macs,
        "epochs": config.epochs,
        "wall_s": time.perf_counter() - start_time,
        "out": str(out),
    }
    if ctx.is_main:
        _plot(log_path, out / "curves.png", f"{config.network}: {config.layers} cells, "
              f"{config.channels} channels")
        tmp = out / "final.json.tmp"
        tmp.write_text(json.dumps(final, indent=2))
        os.replace(tmp, out / "final.json")
    ctx.barrier()
    return final
