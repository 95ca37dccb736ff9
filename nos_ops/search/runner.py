"""The search pipeline (Sec. 4.2, Appendix A1): data, bilevel loop, logs, pictures, resume.

:func:`run_search` trains the proxy :class:`~nos_ops.models.SearchNetwork` by alternating,
per step, an architecture step on a batch of the architecture half (Eq. 13) and a weight
step on a batch of the weight half (Eq. 12), DARTS's order, for ``epochs`` epochs; then it
derives the genotype (Sec. 3.3, "Search Outcome").

Every epoch it appends a JSON line to ``search.jsonl``, rewrites ``genotype.json``,
``genotype.png`` and ``arch_weights.png``, and saves ``checkpoint.pt`` atomically; at the end
it draws ``curves.png``. ``resume=True`` continues from ``checkpoint.pt`` to the same result
as an uninterrupted run. Under ``torchrun`` the weight step runs through DDP, the
architecture gradients are averaged over ranks, each rank reads its shard of the data, and
only rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.func import functional_call

from ..data import (
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
    split_for_search,
)
from ..genotype import Genotype
from ..models.search import SearchNetwork
from ..models.teachers import create_teacher
from ..plot import draw_genotype, plot_arch_weights, plot_curves
from ..space import get_space
from ..utils import (
    DistributedContext,
    JsonlLogger,
    load_checkpoint,
    read_jsonl,
    save_checkpoint,
    setup_distributed,
)
from .architect import Architect, weight_step, wrap_ddp
from .distill import Teacher

__all__ = ["QUICK", "SearchConfig", "NonFiniteLossError", "run_search", "load_teacher"]

_AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
QUICK: dict[str, Any] = {
    "channels": 8,
    "layers": 5,
    "epochs": 8,
    "batch_size": 32,
    "image_size": 16,
    "max_steps_per_epoch": 6,
}
"""What ``quick=True`` sets (fields left at their default only): a few-minute search on
2 CPU cores. ``image_size`` applies to the digits only."""
# fields that may change when resuming: they do not change the result
_RESUMABLE = ("resume", "out_dir", "device", "progress", "plots")


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; ``checkpoint`` is the last good one (None if none)."""

    def __init__(self, message: str, epoch: int, step: int, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.checkpoint = checkpoint


@dataclass
class SearchConfig:
    """Settings of :func:`run_search`; the defaults are the paper's (Sec. 4.2, App. A1).

    Data: ``data_dir`` is a CIFAR-10/100 python folder (its training set is split 25K/25K
    into weight and architecture halves; the architecture half also gives ``valid_acc``,
    as in DARTS), or None for the bundled digits (their train split is halved the same way
    and ``valid_acc`` is measured on their val split). ``valid_acc`` is the supernet's
    top-1 with BatchNorm on batch statistics (DARTS uses the running statistics, which lag
    far behind in short searches). ``image_size`` resizes the digits
    (None: 32; CIFAR is always 32).

    Schedule: SGD ``lr`` 0.025, momentum 0.9, weight decay 3e-4, cosine to ``lr_min`` = 0
    (the paper, App. A1; DARTS decays to 0.001), gradient clipping at 5 (DARTS); Adam for
    the architecture with ``arch_lr`` 6e-4, ``arch_weight_decay`` 1e-3, betas (0.5, 0.999).
    Batch 64 (DARTS's; the paper does not say; the global batch, split over DDP ranks),
    25 epochs, 16 channels and 8 cells.

    ``second_order`` uses DARTS's unrolled architecture gradient (the paper follows DARTS;
    its ablations, Sec. 4.4, search first order, the default here for speed). ``teacher``
    is a file written by ``examples/train_teacher.py`` (the paper: PyramidNet-110), None to
        search without attention transfer; ``at_weight`` is lambda (1e3). ``amp`` is
    ``"none"``, ``"bf16"`` (CPU or CUDA) or ``"fp16"`` (CUDA, with a GradScaler).
    ``max_steps_per_epoch`` caps the steps (and the ``valid_acc`` batches) per epoch, for
    tiny runs. ``partial_channels`` > 1 is the memory-lean PC-DARTS search.

    Output: ``out_dir``; ``resume`` continues from ``out_dir/checkpoint.pt`` when it exists
    (else starts afresh); ``plots=False`` skips the pictures (and matplotlib).
    ``quick=True`` gives the fields still at their default the values of :data:`QUICK`.
    """

    data_dir: str | None = None
    space: str = "nos"
    channels: int = 16
    layers: int = 8
    partial_channels: int = 1
    epochs: int = 25
    batch_size: int = 64
    lr: float = 0.025
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_lr: float = 6e-4
    arch_weight_decay: float = 1e-3
    second_order: bool = False
    teacher: str | None = None
    at_weight: float = 1e3
    image_size: int | None = None
    max_steps_per_epoch: int | None = None
    seed: int = 0
    device: str = "auto"
    amp: str = "none"
    out_dir: str = "runs/search"
    resume: bool = False
    quick: bool = False
    progress: bool = True
    plots: bool = True

    def __post_init__(self) -> None:
        get_space(self.space)
        positive = ("channels", "epochs", "batch_size", "partial_channels")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is not valid; expected an int >= 1")
        if not isinstance(self.layers, int) or self.layers < 3:
            raise ValueError(f"layers={self.layers!r} is not valid; expected an int >= 3")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ValueError(
                f"max_steps_per_epoch={self.max_steps_per_epoch!r} is not valid; "
                "expected None or an int >= 1"
            )
        if self.amp not in _AMP:
            raise ValueError(f"amp={self.amp!r} is not valid; expected one of {list(_AMP)}")
        if self.image_size is not None and (
            not isinstance(self.image_size, int) or self.image_size < 1
        ):
            raise ValueError(
                f"image_size={self.image_size!r} is not valid; expected None or an int >= 1"
            )
        if self.data_dir is not None and self.image_size not in (None, 32):
            raise ValueError(
                f"image_size={self.image_size} is not valid with data_dir (CIFAR is 32 x 32); "
                "image_size only resizes the bundled digits"
            )
        for name in ("lr", "arch_lr"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)!r} is not valid; expected > 0")
        if not 0 <= self.lr_min <= self.lr:
            raise ValueError(f"lr_min={self.lr_min!r} is not valid; expected 0 <= lr_min <= lr")
        if self.at_weight < 0:
            raise ValueError(f"at_weight={self.at_weight!r} is not valid; expected >= 0")

    def resolved(self) -> SearchConfig:
        """This config with :data:`QUICK` applied to the fields at their default (if
        ``quick``; ``image_size`` only for the digits)."""
        if not self.quick:
            return self
        defaults = {f.name: f.default for f in dataclasses.fields(SearchConfig)}
        changes = {
            k: v
            for k, v in QUICK.items()
            if getattr(self, k) == defaults[k] and not (k == "image_size" and self.data_dir)
        }
        return dataclasses.replace(self, **changes)


def load_teacher(path: str | Path, num_classes: int, device: torch.device) -> Teacher:
    """The frozen teacher of a file written by ``examples/train_teacher.py``:
    ``{"arch": name, "num_classes": n, "state_dict": ...}``."""
    state = load_checkpoint(path)
    missing = [k for k in ("arch", "num_classes", "state_dict") if k not in state]
    if missing:
        raise ValueError(
            f"teacher={str(path)!r} lacks {missing}; expected a file written by "
            "examples/train_teacher.py with keys 'arch', 'num_classes', 'state_dict'"
        )
    if state["num_classes"] != num_classes:
        raise ValueError(
            f"teacher={str(path)!r} has num_classes={state['num_classes']}; the search data "
            f"has {num_classes}"
        )
    model = create_teacher(state["arch"], state["num_classes"])
    model.load_state_dict(state["state_dict"])
    return Teacher(model).to(device)


def _datasets(config: SearchConfig) -> tuple[ImageSet, ImageSet, ImageSet, tuple, tuple]:
    """(weight half, architecture half, accuracy set, mean, std)."""
    if config.data_dir is None:
        train, val, _ = load_digits(config.image_size or 32)
        weights, arch = split_for_search(train, 0.5, config.seed)
        mean, std = channel_stats(weights)
        return weights, arch, val, mean, std
    train = load_cifar(Path(config.data_dir).expanduser(), train=True)
    weights, arch = split_for_search(train, 0.5, config.seed)
    if train.num_classes == 100:
        return weights, arch, arch, CIFAR100_MEAN, CIFAR100_STD
    return weights, arch, arch, CIFAR10_MEAN, CIFAR10_STD


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:
        pass
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])


def _seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass


def _gather_objects(ctx: DistributedContext, obj: Any) -> list[Any]:
    if not ctx.enabled:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def _check_ranks_agree(ctx: DistributedContext, net: SearchNetwork) -> None:
    """Raise unless every rank holds the same architecture weights as rank 0."""
    if not ctx.enabled:
        return
    flat = torch.cat([p.detach().reshape(-1) for p in net.arch_parameters()])
    gathered = [torch.empty_like(flat) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, flat)
    differ = [r for r, g in enumerate(gathered) if not torch.equal(g, gathered[0])]
    if differ:
        raise RuntimeError(
            f"ranks {differ} hold different architecture weights than rank 0; the ranks "
            "would derive different genotypes"
        )


def _softmax_rows(weights: torch.Tensor) -> list[list[float]]:
    return weights.detach().float().softmax(dim=-1).cpu().tolist()


def _evaluate(
    net: nn.Module,
    loader: TensorLoader,
    max_batches: int | None,
    ctx: DistributedContext,
    amp_dtype: torch.dtype | None,
) -> float:
    """Top-1 accuracy (%) of the supernet, summed over ranks, with BatchNorm on batch
    statistics (as the architecture step sees the network) and the running statistics
    left untouched: in short searches the running statistics still lag far behind."""
    buffers = {name: b.clone() for name, b in net.named_buffers()}
    hits = torch.zeros(2, device=ctx.device)
    with torch.no_grad():
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            with torch.autocast(ctx.device.type, amp_dtype, enabled=amp_dtype is not None):
                logits = functional_call(net, buffers, (x,))
            hits[0] += (logits.argmax(1) == y).sum()
            hits[1] += len(y)
    correct, total = ctx.all_reduce_sum(hits).tolist()
    return 100.0 * correct / max(total, 1)


def _nonfinite_error(
    what: str, value: float, epoch: int, step: int, checkpoint: Path, good_epoch: int | None
) -> NonFiniteLossError:
    where = f"non-finite {what} ({value}) at epoch {epoch}, step {step}"
    if good_epoch is None:
        advice = "no checkpoint was written yet; start again with a lower lr or at_weight"
        return NonFiniteLossError(f"{where}; {advice}", epoch, step, None)
    advice = (
        f"the last good checkpoint is {checkpoint} (after epoch {good_epoch}); resume from "
        "it with resume=True (examples/search.py --resume), e.g. with a lower lr or "
        "at_weight, or without amp"
    )
    return NonFiniteLossError(f"{where}; {advice}", epoch, step, checkpoint)


def run_search(config: SearchConfig) -> Genotype:
    """Run the attention-guided search of ``config`` and return the derived genotype.

    Raises :class:`NonFiniteLossError` (the last good checkpoint left intact) when a loss
    becomes NaN or infinite.
    """
    config = config.resolved()
    initialised = dist.is_available() and dist.is_initialized()
    ctx = setup_distributed(config.device)
    try:
        return _search(config, ctx)
    finally:
        if not initialised:
            ctx.close()


def _search(config: SearchConfig, ctx: DistributedContext) -> Genotype:
    from tqdm.auto import tqdm

    amp_dtype = _AMP[config.amp]
    if config.amp == "fp16" and ctx.device.type != "cuda":
        raise ValueError("amp='fp16' needs CUDA; use amp='bf16' on the CPU")
    out = Path(config.out_dir)
    checkpoint_path = out / "checkpoint.pt"
    _seed(config.seed)

    if config.batch_size % ctx.world_size:
        raise ValueError(
            f"batch_size={config.batch_size} must be divisible by the world size "
            f"{ctx.world_size} (it is the global batch)"
        )
    batch = config.batch_size // ctx.world_size
    weight_set, arch_set, acc_set, mean, std = _datasets(config)
    padding = max(weight_set.images.shape[-1] // 8, 1)
    augment = Augment(mean, std, crop_padding=padding, flip=True)
    loaders = [
        TensorLoader(
            dataset,
            batch,
            shuffle=True,
            drop_last=True,
            augment=augment,
            device=ctx.device,
            seed=config.seed + offset,
            rank=ctx.rank,
            world_size=ctx.world_size,
        )
        for offset, dataset in ((0, weight_set), (1, arch_set))
    ]
    acc_loader = TensorLoader(
        acc_set,
        batch,
        augment=Augment(mean, std, 0, False),
        device=ctx.device,
        rank=ctx.rank,
        world_size=ctx.world_size,
    )
    steps = min(len(loader) for loader in loaders)
    if steps == 0:
        raise ValueError(
            f"batch_size={config.batch_size} is larger than the {len(weight_set)} images of a "
            "search half; lower it"
        )
    if config.max_steps_per_epoch is not None:
        steps = min(steps, config.max_steps_per_epoch)

    net = SearchNetwork(
        config.channels,
        weight_set.num_classes,
        config.layers,
        config.space,
        partial_channels=config.partial_channels,
    ).to(ctx.device)
    teacher = None
    if config.teacher is not None:
        teacher = load_teacher(config.teacher, weight_set.num_classes, ctx.device)
    weight_model = wrap_ddp(net) if ctx.enabled else net
    optimizer = torch.optim.SGD(
        net.weight_parameters(),
        config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs, config.lr_min)
    architect = Architect(
        net,
        config.arch_lr,
        config.arch_weight_decay,
        second_order=config.second_order,
        at_weight=config.at_weight,
        teacher=teacher,
        amp_dtype=amp_dtype,
    )
    scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None

    start, good_epoch = 0, None
    if config.resume and checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path, map_location=ctx.device)
        saved = state["config"]
        changed = [
            f"{k}: {saved.get(k)!r} -> {v!r}"
            for k, v in dataclasses.asdict(config).items()
            if k not in _RESUMABLE and saved.get(k) != v
        ]
        if changed:
            raise ValueError(
                f"resume=True but the settings differ from {checkpoint_path}'s: "
                f"{'; '.join(changed)}; use the same settings or another out_dir"
            )
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["weight_optimizer"])
        architect.optimizer.load_state_dict(state["arch_optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        _set_rng_state(rng[ctx.rank] if len(rng) == ctx.world_size else rng[0])
        start = good_epoch = state["epoch"]
    logger = JsonlLogger(
        out / "search.jsonl", enabled=ctx.is_main, truncate_from_epoch=start + 1 if start else None
    )
    records = read_jsonl(logger.path) if ctx.is_main and start else []
    show = ctx.is_main and config.progress
    if show:
        where = f"{ctx.world_size} ranks" if ctx.enabled else str(ctx.device)
        tqdm.write(
            f"search: space {config.space}, {len(weight_set)}/{len(arch_set)} images for "
            f"weights/architecture, {steps} steps per epoch, {where}"
            + (f", resuming after epoch {start}" if start else "")
        )

    genotype = net.genotype()
    for epoch in range(start + 1, config.epochs + 1):
        began = time.perf_counter()
        lr = scheduler.get_last_lr()[0]
        for loader in loaders:
            loader.set_epoch(epoch - 1)
        net.train()
        totals = torch.zeros(6, dtype=torch.float64)
        bar = tqdm(
            total=steps,
            desc=f"epoch {epoch}/{config.epochs}",
            disable=not show,
            leave=False,
            dynamic_ncols=True,
        )
        for step, ((tx, ty), (vx, vy)) in enumerate(zip(*loaders), start=1):
            if step > steps:
                break
            arch_stats = architect.step(tx, ty, vx, vy, lr, optimizer)
            stats = weight_step(
                weight_model, optimizer, tx, ty, teacher, config.at_weight, config.grad_clip,
                scaler, amp_dtype,
            )
            # summed over ranks: loss, ce, at_loss, correct, count, architecture loss
            values = torch.stack(
                [stats["loss"], stats["ce"], stats["at_loss"], stats["correct"].float(),
                 torch.tensor(float(len(ty)), device=ctx.device), arch_stats["loss"]]
            )
            values = ctx.all_reduce_sum(values.float()).double().cpu()
            for index, what in ((0, "training loss"), (5, "architecture loss")):
                if not math.isfinite(values[index]):
                    bar.close()
                    raise _nonfinite_error(
                        what, float(values[index]), epoch, step, checkpoint_path, good_epoch
                    )
            totals += values
            bar.update()
            bar.set_postfix(
                loss=f"{totals[1] / step / ctx.world_size:.3f}",
                acc=f"{100 * totals[3] / totals[4]:.1f}",
            )
        bar.close()
        scheduler.step()
        if not all(torch.isfinite(p).all() for p in net.parameters()):
            raise _nonfinite_error(
                "parameters", math.nan, epoch, steps, checkpoint_path, good_epoch
            )
        valid_acc = _evaluate(net, acc_loader, config.max_steps_per_epoch, ctx, amp_dtype)
        _check_ranks_agree(ctx, net)
        genotype = net.genotype()
        mean_over = steps * ctx.world_size
        record = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": float(totals[1]) / mean_over,
            "train_acc": 100.0 * float(totals[3] / totals[4]),
            "at_loss": float(totals[2]) / mean_over,
            "objective": float(totals[0]) / mean_over,
            "arch_loss": float(totals[5]) / mean_over,
            "valid_acc": valid_acc,
            "seconds": time.perf_counter() - began,
            "alphas_normal": _softmax_rows(net.alphas_normal),
            "alphas_reduce": _softmax_rows(net.alphas_reduce),
            "genotype": genotype.to_dict(),
        }
        rng = _gather_objects(ctx, _rng_state())
        if ctx.is_main:
            logger.log(**record)
            records.append(record)
            genotype.save(out / "genotype.json")
            if config.plots:
                title = f"{config.space} search, epoch {epoch}/{config.epochs}"
                draw_genotype(genotype, out / "genotype.png", title=title)
                plot_arch_weights(records, net.space.ops, out / "arch_weights.png", title=title)
            save_checkpoint(
                {
                    "epoch": epoch,
                    "model": net.state_dict(),
                    "weight_optimizer": optimizer.state_dict(),
                    "arch_optimizer": architect.optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "rng": rng,
                    "config": dataclasses.asdict(config),
                    "genotype": genotype.to_dict(),
                },
                checkpoint_path,
            )
        good_epoch = epoch
        ctx.barrier()
        if show:
            tqdm.write(
                f"epoch {epoch}/{config.epochs}: lr {lr:.4g}, train loss "
                f"{record['train_loss']:.4f}, train acc {record['train_acc']:.1f}%, at loss "
                f"{record['at_loss']:.4g}, valid acc {valid_acc:.1f}%, "
                f"{record['seconds']:.1f} s"
            )

    _check_ranks_agree(ctx, net)
    if ctx.is_main:
        genotype.save(out / "genotype.json")
        if records and config.plots:
            keys = ["train_loss", "train_acc", "valid_acc", "arch_loss"]
            if teacher is not None:
                keys.append("at_loss")
            plot_curves(records, keys, out / "curves.png", title=f"{config.space} search")
        if show and ctx.enabled:
            tqdm.write(f"all {ctx.world_size} ranks derived the same genotype")
    return genotype
