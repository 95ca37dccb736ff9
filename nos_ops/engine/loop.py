"""The classifier loops every pipeline shares: one step, one training epoch, evaluation.

Metrics are top-1/top-5 accuracy in % (``top1``, ``top5``) and the mean cross-entropy
(``loss``); an error rate is only ever derived (``100 - top1``) and named ``top1_err``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .amp import autocast
from .distributed import DistributedContext
from .progress import progress as progress_bar
from .run import check_finite

__all__ = ["Capped", "Meter", "ModelTask", "optimizer_step", "train_one_epoch", "evaluate"]


class Capped:
    """The first ``steps`` batches of a loader per pass (all of them when None)."""

    def __init__(self, loader: Any, steps: int | None) -> None:
        self.loader, self.steps = loader, steps

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader) if self.steps is None else min(self.steps, len(self.loader))

    def __iter__(self) -> Iterator:
        return islice(iter(self.loader), len(self))


class ModelTask:
    """What a :class:`~nos_ops.engine.run.Task` that trains one ``model`` with one
    ``optimizer`` (and an fp16 ``scaler``, or None) shares: its state, its modules."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def modules(self) -> list[nn.Module]:
        return [self.model]

    def write_outputs(self, record: dict[str, Any], records: list[dict[str, Any]]) -> None:
        """Files the task writes after each epoch (rank 0); none by default."""


class Meter:
    """Summed loss, top-1/top-5 hits and sample count, reduced over ranks on read."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]
        n = labels.shape[0]
        self.sums += torch.stack(
            [
                loss.detach().double() * n,
                top[:, 0].sum().double(),
                top.any(dim=1).sum().double(),
                torch.tensor(n, dtype=torch.float64, device=labels.device),
            ]
        )

    def result(self, ctx: DistributedContext | None = None) -> dict[str, float]:
        """``loss``, ``top1``, ``top5`` (accuracy, %) and ``samples``; ``ValueError`` when
        no sample was seen."""
        sums = self.sums if ctx is None else ctx.all_reduce_sum(self.sums)
        loss, top1, top5, n = sums.tolist()
        if n == 0:
            raise ValueError(
                "no batch: the loader is empty (a dataset smaller than one batch with "
                "drop_last, or max_steps_per_epoch=0); there is nothing to measure"
            )
        return {
            "loss": loss / n,
            "top1": 100.0 * top1 / n,
            "top5": 100.0 * top5 / n,
            "samples": int(n),
        }


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    parameters: Iterable[nn.Parameter],
    grad_clip: float | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Backward, (unscale,) clip to norm ``grad_clip``, step, (update the scaler)."""
    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if scaler is not None:
        scaler.unscale_(optimizer)
    if grad_clip:
        nn.utils.clip_grad_norm_(list(parameters), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def _batches(
    loader: Iterable, device: torch.device, channels_last: bool, desc: str, show: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    total = len(loader) if hasattr(loader, "__len__") else None
    for x, y in progress_bar(loader, total, desc, show):
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, y.to(device, non_blocking=True)


def _split(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    return (out[0], out[1]) if isinstance(out, tuple) else (out, None)


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
    """One pass of ``loader`` with optimizer steps; works for any classifier.

    ``model(x)`` may return logits or ``(logits, aux_logits)``; with an auxiliary output the
    loss is ``CE(logits) + auxiliary_weight * CE(aux_logits)``. A non-finite loss stops the
    run (:func:`~nos_ops.engine.run.check_finite`) before the step is taken. Returns
    ``loss``, ``top1``, ``top5`` (%) and ``samples``, summed over DDP ranks with ``ctx``.
    """
    device = next(model.parameters()).device
    model.train()
    meter = Meter(device)
    for step, (x, y) in enumerate(_batches(loader, device, channels_last, desc, progress), 1):
        with autocast(device, amp):
            logits, aux_logits = _split(model(x))
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
            total = loss
            if aux_logits is not None and auxiliary_weight > 0:
                total = loss + auxiliary_weight * F.cross_entropy(
                    aux_logits, y, label_smoothing=label_smoothing
                )
        check_finite("training loss", total.detach(), step)
        optimizer_step(total, optimizer, model.parameters(), grad_clip, scaler)
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
    """``loss``, ``top1``, ``top5`` (%) and ``samples`` of ``model`` in eval mode."""
    device = next(model.parameters()).device
    model.eval()
    meter = Meter(device)
    for x, y in _batches(loader, device, channels_last, desc, progress):
        with autocast(device, amp):
            logits, _ = _split(model(x))
            loss = F.cross_entropy(logits.float(), y)
        meter.update(loss, logits.float(), y)
    return meter.result(ctx)
