"""One search epoch (Sec. 3.3, Eqs. 10-13) for the run engine, and the outcome's margins.

:class:`SearchTask` is what :func:`~nos_ops.search.runner.run_search` gives
:func:`nos_ops.engine.fit`: per step an architecture step on a batch of the architecture half
(Eq. 13, skipped during ``warmup_epochs``) and a weight step on a batch of the weight half
(Eq. 12, with attention transfer from the teacher, Eq. 10); per epoch the supernet's
accuracy, the architecture weights and the derived genotype. :func:`op_margins` says how
clearly each chosen op won its edge.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from torch.func import functional_call

from ..data import (
    Augment,
    ImageSet,
    TensorLoader,
    cifar_stats,
    load_cifar,
    load_digits,
    split_for_search,
)
from ..datasets import from_dataset
from ..engine import DistributedContext, autocast, check_finite, grad_scaler, seed_everything
from ..engine.amp import amp_dtype
from ..engine.data import given_stats, is_image_folder, load_image_folder_sets
from ..engine.progress import progress
from ..genotype import Genotype
from ..models.search import SearchNetwork
from ..plot import arch_weights_figure, draw_genotype, plot_arch_weights
from .architect import Architect, weight_step, wrap_ddp
from .distill import load_teacher, same_weights, weights_fingerprint

if TYPE_CHECKING:
    from .runner import SearchConfig

__all__ = ["SearchTask", "node_name", "op_margins", "check_ranks_agree"]


def _datasets(config: SearchConfig, dataset: Any = None) -> tuple:
    """(weight half, architecture half, accuracy set, mean, std); ``dataset`` (an
    :class:`~nos_ops.data.ImageSet` or a map-style dataset of (image, label)) replaces the
    folder of ``config``. The statistics are CIFAR's constants, or None: then
    :func:`~nos_ops.engine.data.given_stats` takes ``config``'s or the weight half's."""
    if dataset is not None:
        if not isinstance(dataset, ImageSet):
            dataset = from_dataset(dataset, config.image_size)
        weights, arch = split_for_search(dataset, 0.5, config.seed)
        return (weights, arch, arch, None, None)
    if config.data_dir is None:
        train, val, _ = load_digits(config.image_size or 32)
        weights, arch = split_for_search(train, 0.5, config.seed)
        return (weights, arch, val, None, None)
    if is_image_folder(config.data_dir):
        train, _ = load_image_folder_sets(config.data_dir, config.image_size, test=False)
        weights, arch = split_for_search(train, 0.5, config.seed)
        return (weights, arch, arch, None, None)
    train = load_cifar(Path(config.data_dir).expanduser(), train=True)
    weights, arch = split_for_search(train, 0.5, config.seed)
    return (weights, arch, arch, *cifar_stats(train.num_classes))


def node_name(index: int) -> str:
    """A cell node's name as the pictures write it: ``c_{k-2}``, ``c_{k-1}`` (the inputs),
    then ``0``, ``1``, ... (a genotype's source index minus 2); ``k'`` is the surrogate node
    (tier 1's sum) of node k."""
    return ("c_{k-2}", "c_{k-1}")[index] if index < 2 else str(index - 2)


def op_margins(net: SearchNetwork, genotype: Genotype) -> dict[str, Any]:
    """How clearly each chosen op won: its softmax weight on its edge divided by the uniform
    weight 1/|O|, per chosen op (``normal``, ``reduce``: lists of ``{"edge", "op",
    "margin"}``, edges named by :func:`node_name`; in a two-tier block the tier-1 edges enter
    the surrogate node ``k'`` and ``k'->k`` is its tier-2 edge), and
    ``mean`` over all chosen edges of both cells."""
    ops, out = net.space.ops, {}
    for name, cell, alphas in (
        ("normal", genotype.normal, net.alphas_normal),
        ("reduce", genotype.reduce, net.alphas_reduce),
    ):
        probs, rows, offset = alphas.detach().float().softmax(-1).cpu(), [], 0
        for node, block in enumerate(cell.blocks):
            target = f"{node}'" if block.tier2 is not None else str(node)
            picks = [
                (op, f"{node_name(source)}->{target}", offset + source)
                for op, source in block.edges
            ]
            if block.tier2 is not None:
                picks.append((block.tier2, f"{node}'->{node}", net.space.tier1_edges + node))
            rows += [
                {"edge": edge, "op": op, "margin": float(probs[row, ops.index(op)]) * len(ops)}
                for op, edge, row in picks
            ]
            offset += 2 + node
        out[name] = rows
    margins = [r["margin"] for name in ("normal", "reduce") for r in out[name]]
    return {**out, "mean": sum(margins) / len(margins)}


class SearchTask:
    """The search's loop, state and outputs (the engine's ``Task``)."""

    kind = "search"

    def __init__(self, config: SearchConfig, ctx: DistributedContext, dataset: Any = None) -> None:
        self.config, self.ctx, self.total_epochs = config, ctx, config.epochs
        self.dataset = dataset
        seed_everything(config.seed)
        size = self._data()
        self.net = SearchNetwork(
            config.channels,
            self.num_classes,
            config.layers,
            config.space,
            partial_channels=config.partial_channels,
        ).to(ctx.device)
        self.teacher, self.teacher_fingerprint = None, None
        if config.teacher is not None:
            self.teacher = load_teacher(config.teacher, self.num_classes, ctx.device, size)
            self.teacher_fingerprint = weights_fingerprint(self.teacher)
        self.weight_model = wrap_ddp(self.net) if ctx.enabled else self.net
        self.optimizer = torch.optim.SGD(
            self.net.weight_parameters(),
            config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        self.dtype = amp_dtype(config.amp)
        self.architect = Architect(
            self.net,
            config.arch_lr,
            config.arch_weight_decay,
            second_order=config.second_order,
            at_weight=config.at_weight,
            teacher=self.teacher if config.at_steps == "both" else None,
            amp_dtype=self.dtype,
        )
        self.scaler = grad_scaler(config.amp, ctx.device)
        self.genotype = self.net.genotype()

    def _data(self) -> int:
        """The weight and architecture loaders of this rank, the accuracy loader and the
        steps per epoch; returns the image size."""
        config, ctx = self.config, self.ctx
        if config.batch_size % ctx.world_size:
            raise ValueError(
                f"batch_size={config.batch_size} must be divisible by the world "
                f"size {ctx.world_size} (it is the global batch)"
            )
        batch = config.batch_size // ctx.world_size
        weight_set, arch_set, acc_set, mean, std = _datasets(config, self.dataset)
        mean, std = given_stats(config, weight_set, mean, std)
        size = weight_set.images.shape[-1]
        augment = Augment(mean, std, crop_padding=max(size // 8, 1), flip=True)
        shard = {"device": ctx.device, "rank": ctx.rank, "world_size": ctx.world_size}
        self.loaders = [
            TensorLoader(
                data,
                batch,
                shuffle=True,
                drop_last=True,
                augment=augment,
                seed=config.seed + offset,
                **shard,
            )
            for offset, data in ((0, weight_set), (1, arch_set))
        ]
        self.acc_loader = TensorLoader(
            acc_set, batch, augment=Augment(mean, std, 0, False), **shard
        )
        self.steps = min(len(loader) for loader in self.loaders)
        if self.steps == 0:
            raise ValueError(
                f"batch_size={config.batch_size} is larger than the "
                f"{len(weight_set)} images of a search half; lower it"
            )
        self.steps = min(self.steps, config.max_steps_per_epoch or self.steps)
        self.sizes = (len(weight_set), len(arch_set))
        self.num_classes = weight_set.num_classes
        return size

    def lr(self, epoch: int) -> float:
        c = self.config
        return c.lr_min + (c.lr - c.lr_min) * (1 + math.cos(math.pi * (epoch - 1) / c.epochs)) / 2

    def _steps(self, epoch: int, lr: float) -> torch.Tensor:
        """Sums over the epoch's steps and ranks: loss, ce, at, correct, count, arch loss."""
        c, totals = self.config, torch.zeros(6, dtype=torch.float64)
        search_arch = epoch > c.warmup_epochs
        show = c.progress and self.ctx.is_main
        batches = zip(range(self.steps), *self.loaders)
        for step, (tx, ty), (vx, vy) in progress(
            batches, self.steps, f"epoch {epoch}/{c.epochs}", show
        ):
            arch_loss = torch.zeros((), device=self.ctx.device)
            if search_arch:
                arch_loss = self.architect.step(tx, ty, vx, vy, lr, self.optimizer)["loss"]
            stats = weight_step(
                self.weight_model,
                self.optimizer,
                tx,
                ty,
                self.teacher,
                c.at_weight,
                c.grad_clip,
                self.scaler,
                self.dtype,
            )
            values = torch.stack(
                [
                    stats["loss"],
                    stats["ce"],
                    stats["at_loss"],
                    stats["correct"].float(),
                    torch.tensor(float(len(ty)), device=self.ctx.device),
                    arch_loss.float(),
                ]
            ).float()
            values = self.ctx.all_reduce_sum(values).double().cpu()
            check_finite("training loss", values[0], step + 1)
            check_finite("architecture loss", values[5], step + 1)
            totals += values
        return totals

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        lr = self.lr(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        for loader in self.loaders:
            loader.set_epoch(epoch - 1)
        self.net.train()
        totals = self._steps(epoch, lr)
        valid = _evaluate(
            self.net, self.acc_loader, self.config.max_steps_per_epoch, self.ctx, self.config.amp
        )
        check_ranks_agree(self.ctx, self.net)
        self.genotype = self.net.genotype()
        n = self.steps * self.ctx.world_size
        soft = [
            a.detach().float().softmax(-1).cpu().tolist()
            for a in (self.net.alphas_normal, self.net.alphas_reduce)
        ]
        return {
            "lr": lr,
            "arch_steps": epoch > self.config.warmup_epochs,
            "train_loss": float(totals[1]) / n,
            "train_top1": 100 * float(totals[3] / totals[4]),
            "at_loss": float(totals[2]) / n,
            "objective": float(totals[0]) / n,
            "arch_loss": float(totals[5]) / n,
            "valid_top1": valid,
            "margin": op_margins(self.net, self.genotype)["mean"],
            "alphas_normal": soft[0],
            "alphas_reduce": soft[1],
            "genotype": self.genotype.to_dict(),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.net.state_dict(),
            "weight_optimizer": self.optimizer.state_dict(),
            "arch_optimizer": self.architect.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "genotype": self.genotype.to_dict(),
            "teacher_fingerprint": self.teacher_fingerprint,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("teacher_fingerprint", self.teacher_fingerprint)
        if not same_weights(saved, self.teacher_fingerprint):
            raise ValueError(
                f"resume: teacher {self.config.teacher!r} is not the teacher this search "
                "started with (its weights changed since, e.g. it was trained again); resume "
                "with that teacher or start a new search into another folder"
            )
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["weight_optimizer"])
        self.architect.optimizer.load_state_dict(state["arch_optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.genotype = self.net.genotype()

    def modules(self) -> list[nn.Module]:
        return [self.net]

    def describe(self, r: dict[str, Any]) -> str:
        warm = "" if r["arch_steps"] else ", weights only (warm-up)"
        return (
            f"epoch {r['epoch']}/{self.config.epochs}: lr {r['lr']:.4g}, train loss "
            f"{r['train_loss']:.4f}, top-1 {r['train_top1']:.1f}%, at loss "
            f"{r['at_loss']:.4g}, valid top-1 {r['valid_top1']:.1f}%, margin "
            f"{r['margin']:.3f}{warm} ({r['seconds']:.1f} s)"
        )

    def figures(self, record: dict[str, Any]) -> dict[str, Any]:
        """The epoch's architecture weights as a picture, for TensorBoard."""
        c = self.config
        title = f"{c.space} search, epoch {record['epoch']}/{c.epochs}"
        return {"arch_weights": arch_weights_figure(record, self.net.space.ops, title=title)}

    def write_outputs(self, record: dict[str, Any], records: list[dict]) -> None:
        out, c = Path(self.config.out), self.config
        self.genotype.save(out / "genotype.json")
        if c.plots:
            title = f"{c.space} search, epoch {record['epoch']}/{c.epochs}"
            draw_genotype(self.genotype, out / "genotype.png", title=title)
            plot_arch_weights(records, self.net.space.ops, out / "arch_weights.png", title=title)


def _evaluate(
    net: nn.Module, loader: TensorLoader, max_batches: int | None, ctx: DistributedContext, amp: str
) -> float:
    """Top-1 accuracy (%) of the supernet over ranks, BatchNorm on batch statistics and the
    running statistics untouched (in short searches they lag far behind)."""
    buffers = {name: b.clone() for name, b in net.named_buffers()}
    hits = torch.zeros(2, device=ctx.device)
    with torch.no_grad():
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            with autocast(ctx.device, amp):
                logits = functional_call(net, buffers, (x,))
            hits[0] += (logits.argmax(1) == y).sum()
            hits[1] += len(y)
    correct, total = ctx.all_reduce_sum(hits).tolist()
    return 100.0 * correct / max(total, 1)


def check_ranks_agree(ctx: DistributedContext, net: SearchNetwork) -> None:
    """Raise unless every rank holds the same architecture weights as rank 0."""
    if not ctx.enabled:
        return
    flat = torch.cat([p.detach().reshape(-1) for p in net.arch_parameters()])
    gathered = [torch.empty_like(flat) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, flat)
    differ = [r for r, g in enumerate(gathered) if not torch.equal(g, gathered[0])]
    if differ:
        raise RuntimeError(
            f"ranks {differ} hold different architecture weights than rank 0; "
            "the ranks would derive different genotypes"
        )
