"""Attention-guided bilevel search (Sec. 3.3, Eqs. 12-13): the weight and architecture steps.

The network weights Theta follow Eq. 12, ``L_train + lambda * L_AT`` with SGD
(:func:`weight_step`); the architecture weights A follow Eq. 13, ``L_val + lambda * L_AT``
with Adam (:class:`Architect`), in DARTS's first-order or second-order (unrolled) form.
``L_AT`` is the attention-transfer loss (Eq. 10) between the search network's three stage
outputs and a teacher's on the same batch; without a teacher the objectives are DARTS's.

Neither step touches the other's parameters: the weight step computes no gradient for A
and the architect computes none for Theta and never changes the model's buffers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.parallel import DistributedDataParallel

from ..engine.amp import autocast
from .distill import attention_transfer_loss

__all__ = ["Architect", "StagesForward", "search_network", "weight_step", "wrap_ddp"]

TeacherFn = Callable[[torch.Tensor], Sequence[torch.Tensor]]


class StagesForward(nn.Module):
    """``forward(x) = net.forward_stages(x)``: logits and stage outputs through ``__call__``,
    so that :class:`~torch.nn.parallel.DistributedDataParallel` and
    :func:`torch.func.functional_call` see the stage outputs attention transfer needs."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        if not hasattr(net, "forward_stages"):
            raise TypeError(f"net={type(net).__name__} has no forward_stages(x)")
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.net.forward_stages(x)


def search_network(model: nn.Module) -> nn.Module:
    """The search network inside ``model`` (unwraps DDP and :class:`StagesForward`)."""
    if isinstance(model, DistributedDataParallel):
        model = model.module
    if isinstance(model, StagesForward):
        model = model.net
    for name in ("arch_parameters", "weight_parameters", "forward_stages"):
        if not hasattr(model, name):
            raise TypeError(
                f"model={type(model).__name__} has no {name}(); expected a search "
                "network such as nos_ops.SearchNetwork"
            )
    return model


def wrap_ddp(net: nn.Module, **kwargs) -> DistributedDataParallel:
    """DistributedDataParallel over ``StagesForward(net)`` for :func:`weight_step`.

    The architecture weights are left out of DDP (they get no gradient in the weight
    step; :class:`Architect` averages their gradients itself). ``kwargs`` go to DDP.
    """
    staged = StagesForward(net)
    arch = {id(p) for p in net.arch_parameters()}
    ignore = [n for n, p in staged.named_parameters() if id(p) in arch]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(staged, ignore)
    return DistributedDataParallel(staged, **kwargs)


def _objective(
    logits: torch.Tensor,
    stages: Sequence[torch.Tensor],
    target: torch.Tensor,
    teacher_stages: Sequence[torch.Tensor] | None,
    at_weight: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(CE + at_weight * L_AT, CE, L_AT)``; ``L_AT`` is None without a teacher."""
    ce = F.cross_entropy(logits.float(), target)
    if teacher_stages is None:
        return ce, ce, None
    at = attention_transfer_loss(stages, teacher_stages)
    return ce + at_weight * at, ce, at


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_mean(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The mean over ranks of every tensor (one flat all-reduce); identity on one process."""
    if not _distributed():
        return list(tensors)
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    return [f.view_as(t) for f, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


@contextlib.contextmanager
def _frozen(params: Sequence[nn.Parameter]) -> Iterator[None]:
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def weight_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    teacher: TeacherFn | None = None,
    at_weight: float = 1e3,
    grad_clip: float | None = 5.0,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """One step on the network weights Theta (Eq. 12): ``CE(train) + at_weight * L_AT``.

    Args:
        model: a search network (``arch_parameters``, ``weight_parameters``,
            ``forward_stages``), or the DDP model of :func:`wrap_ddp`.
        optimizer: the weight optimiser (SGD in the paper), over the weight parameters.
        x: a training batch of images, B x 3 x H x W.
        y: its labels, B.
        teacher: ``teacher(x)`` -> its stage outputs (no grad), or None for no ``L_AT``.
        at_weight: lambda of Eq. 12 (1e3 in the paper).
        grad_clip: max gradient norm of the weights (5 as in DARTS); None to not clip.
        scaler: a GradScaler for float16 autocast.
        amp_dtype: autocast dtype (``torch.bfloat16``, ``torch.float16``) or None.

    The architecture weights are frozen during the step: they get no ``.grad`` and do not
    change. Returns detached scalars: ``loss``, ``ce``, ``at_loss`` (0 without a teacher),
    ``correct`` (top-1 hits in the batch).
    """
    net = search_network(model)
    if isinstance(model, DistributedDataParallel) and not isinstance(model.module, StagesForward):
        raise TypeError(
            f"model is a DistributedDataParallel over {type(model.module).__name__}; build it "
            "with wrap_ddp(net) so that it returns the stage outputs"
        )
    staged = model if isinstance(model, DistributedDataParallel) else StagesForward(net)
    with _frozen(net.arch_parameters()):
        with autocast(x.device, amp_dtype):
            logits, stages = staged(x)
            teacher_stages = teacher(x) if teacher is not None else None
            loss, ce, at = _objective(logits, stages, y, teacher_stages, at_weight)
        optimizer.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler is not None else loss).backward()
    if scaler is not None:
        scaler.unscale_(optimizer)
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(net.weight_parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return {
        "loss": loss.detach(),
        "ce": ce.detach(),
        "at_loss": at.detach() if at is not None else torch.zeros_like(ce.detach()),
        "correct": (logits.detach().argmax(1) == y).sum(),
    }


def _sgd_direction(
    param: torch.Tensor,
    grad: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    group: dict | None,
) -> torch.Tensor:
    """What :class:`torch.optim.SGD` would multiply by the learning rate in its next step
    (weight decay, momentum buffer, dampening, Nesterov); zero for a parameter the optimiser
    does not hold (``group`` None). Other optimisers count as SGD with their groups'
    ``weight_decay`` and ``momentum``."""
    if group is None:
        return torch.zeros_like(grad)
    step = grad + group.get("weight_decay", 0.0) * param.detach()
    momentum = group.get("momentum", 0.0)
    if momentum:
        buffer = optimizer.state.get(param, {}).get("momentum_buffer")
        if buffer is not None:
            buffer = momentum * buffer + (1 - group.get("dampening", 0.0)) * step
        else:
            buffer = step
        step = step + momentum * buffer if group.get("nesterov", False) else buffer
    return step


class Architect:
    """Updates the architecture weights A by Adam on ``L_val + at_weight * L_AT`` (Eq. 13).

    Args:
        model: the search network (or its DDP wrapper; the architect uses the bare network).
        lr: Adam's learning rate for A (Appendix A1: 6e-4).
        weight_decay: Adam's weight decay for A (Appendix A1: 1e-3).
        betas: Adam's betas for A (as DARTS).
        second_order: DARTS's unrolled approximation of Theta* (Eq. 13 through one virtual
            weight step) instead of the current weights (first order).
        at_weight: lambda of Eqs. 12-13.
        teacher: ``teacher(x)`` -> its stage outputs (no grad), or None for no ``L_AT``.
        amp_dtype: autocast dtype for the forward passes, or None. The second-order
            finite difference is noisy in low precision; prefer float32 there.

    Every pass runs through :func:`torch.func.functional_call` with copies of the model's
    buffers, so BatchNorm running statistics follow the weight steps only and are never
    touched by the architect. Under ``torch.distributed`` the architecture gradient (and,
    for the second order, the virtual step's gradients) are averaged over ranks, so every
    rank takes the same step.
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float = 6e-4,
        weight_decay: float = 1e-3,
        betas: tuple[float, float] = (0.5, 0.999),
        second_order: bool = False,
        at_weight: float = 1e3,
        teacher: TeacherFn | None = None,
        amp_dtype: torch.dtype | None = None,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"lr={lr} is not valid; expected > 0")
        if at_weight < 0:
            raise ValueError(f"at_weight={at_weight} is not valid; expected >= 0")
        self.model = search_network(model)
        self.staged = StagesForward(self.model)
        self.second_order = second_order
        self.at_weight = at_weight
        self.teacher = teacher
        self.amp_dtype = amp_dtype
        self.arch_params = list(self.model.arch_parameters())
        arch = {id(p) for p in self.arch_params}
        self.weights = {
            n: p for n, p in self.staged.named_parameters() if id(p) not in arch and p.requires_grad
        }
        self.optimizer = torch.optim.Adam(
            self.arch_params, lr=lr, betas=betas, weight_decay=weight_decay
        )

    def step(
        self,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        val_x: torch.Tensor,
        val_y: torch.Tensor,
        eta: float,
        weight_optimizer: torch.optim.Optimizer,
    ) -> dict[str, torch.Tensor]:
        """One Adam step on A. ``eta`` and ``weight_optimizer`` (the current weight
        learning rate and optimiser) define the second order's virtual step; the first
        order ignores them and the training batch. Returns detached scalars of the
        validation batch: ``loss``, ``ce``, ``at_loss`` (0 without a teacher)."""
        grads, stats = self.hypergradient(train_x, train_y, val_x, val_y, eta, weight_optimizer)
        for p, g in zip(self.arch_params, grads):
            p.grad = g.to(p.dtype)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return stats

    def hypergradient(
        self,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        val_x: torch.Tensor,
        val_y: torch.Tensor,
        eta: float,
        weight_optimizer: torch.optim.Optimizer,
    ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """The gradient of Eq. 13 w.r.t. A (averaged over ranks) and the loss statistics,
        without changing anything."""
        buffers = {n: b.clone() for n, b in self.staged.named_buffers()}
        val_teacher = self._teacher(val_x)
        if not self.second_order:
            loss, ce, at = self._loss({}, buffers, val_x, val_y, val_teacher)
            grads = torch.autograd.grad(loss, self.arch_params, materialize_grads=True)
        else:
            grads, (loss, ce, at) = self._unrolled(
                train_x, train_y, val_x, val_y, val_teacher, eta, weight_optimizer, buffers
            )
        grads = _all_reduce_mean([g.detach() for g in grads])
        stats = {
            "loss": loss.detach(),
            "ce": ce.detach(),
            "at_loss": at.detach() if at is not None else torch.zeros_like(ce.detach()),
        }
        return grads, stats

    def _teacher(self, x: torch.Tensor) -> list[torch.Tensor] | None:
        if self.teacher is None:
            return None
        with torch.no_grad(), autocast(x.device, self.amp_dtype):
            return list(self.teacher(x))

    def _loss(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        teacher_stages: list[torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        with autocast(x.device, self.amp_dtype):
            logits, stages = functional_call(self.staged, {**params, **buffers}, (x,))
        return _objective(logits, stages, y, teacher_stages, self.at_weight)

    def _unrolled(
        self,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        val_x: torch.Tensor,
        val_y: torch.Tensor,
        val_teacher: list[torch.Tensor] | None,
        eta: float,
        weight_optimizer: torch.optim.Optimizer,
        buffers: dict[str, torch.Tensor],
    ) -> tuple[list[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """DARTS's second order: with ``w' = w - eta * step(w)`` the weight optimiser's next
        step, ``d/dA L_val(w', A) - eta * d2/dAdw L_train(w, A) . dw'``, the mixed term by a
        central finite difference at ``w +- eps * dw'``, ``eps = 0.01 / ||dw'||``."""
        names = list(self.weights)
        train_teacher = self._teacher(train_x)
        inner, _, _ = self._loss({}, buffers, train_x, train_y, train_teacher)
        grads = torch.autograd.grad(inner, list(self.weights.values()), materialize_grads=True)
        grads = _all_reduce_mean([g.detach() for g in grads])
        groups = {id(p): g for g in weight_optimizer.param_groups for p in g["params"]}
        unrolled = {
            n: (
                p.detach() - eta * _sgd_direction(p, g, weight_optimizer, groups.get(id(p)))
            ).requires_grad_()
            for (n, p), g in zip(self.weights.items(), grads)
        }
        loss, ce, at = self._loss(unrolled, buffers, val_x, val_y, val_teacher)
        outer = torch.autograd.grad(
            loss, self.arch_params + list(unrolled.values()), materialize_grads=True
        )
        d_arch = list(outer[: len(self.arch_params)])
        vector = _all_reduce_mean([g.detach() for g in outer[len(self.arch_params) :]])
        norm = torch.linalg.vector_norm(torch.cat([v.reshape(-1) for v in vector])).item()
        if norm > 0:
            eps = 0.01 / norm
            mixed = []
            for sign in (1.0, -1.0):
                shifted = {
                    n: self.weights[n].detach() + sign * eps * v for n, v in zip(names, vector)
                }
                inner, _, _ = self._loss(shifted, buffers, train_x, train_y, train_teacher)
                mixed.append(torch.autograd.grad(inner, self.arch_params, materialize_grads=True))
            d_arch = [
                d - eta * (gp - gn) / (2 * eps) for d, gp, gn in zip(d_arch, mixed[0], mixed[1])
            ]
        return d_arch, (loss, ce, at)
