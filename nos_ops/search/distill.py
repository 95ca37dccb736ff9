"""Attention transfer from a teacher during search (Sec. 3.3, Eq. 10, Fig. 3).

The student (the proxy network) is pulled towards the teacher's spatial attention at
three stages. An attention map is the channel-mean of squared activations, flattened and
L2-normalised per sample (Zagoruyko and Komodakis, ICLR 2017), so the two networks may
differ in channels but must agree in spatial size at each stage.

The teacher file format is the library's: :func:`save_teacher` writes it (``nos-ops
teacher`` does), :func:`load_teacher` reads it back as a frozen :class:`Teacher`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.checkpoint import load_checkpoint, save_checkpoint
from ..models.teachers import create_teacher

__all__ = [
    "attention_map",
    "attention_transfer_loss",
    "Teacher",
    "save_teacher",
    "load_teacher",
    "weights_fingerprint",
    "same_weights",
]


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """Spatial attention ``x / ||x||_2`` with ``x = vec(mean_c F_c^2)``: B x C x H x W -> B x HW.

    The paper's ``x`` sums over channels; the mean only rescales it, which the
    normalisation removes. Computed in at least float32 so it is safe under autocast.
    """
    if features.dim() != 4:
        raise ValueError(
            f"features must be a 4-d tensor B x C x H x W, got shape {tuple(features.shape)}"
        )
    if features.dtype in (torch.float16, torch.bfloat16):
        features = features.float()
    return F.normalize(features.pow(2).mean(1).flatten(1), dim=1)


def attention_transfer_loss(
    student_stages: Sequence[torch.Tensor], teacher_stages: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Attention-transfer loss L_AT (Eq. 10), in the reference code's form.

    ``sum_j mean_{b,p} (at(S_j) - at(T_j))^2`` over stages j, samples b and positions p,
    with ``at`` = :func:`attention_map`. This is the form of the attention-transfer
    reference code, for which the paper's weight lambda = 1e3 (Eqs. 12-13) was tuned.
    Eq. 10 as printed is ``1/2 sum_j ||q_S - q_T||_2`` per sample: half the L2 norm of
    the difference, neither squared nor averaged. Per sample and stage the two are
    related by ``mean_p d^2 = ||d||_2^2 / HW``, and the reference code also averages over
    the batch. (The reference code sums the per-GPU values under ``data_parallel``; this
    is its single-device value.)

    Under DDP each rank computes this mean on its own batch shard and DDP averages the
    gradients, so the loss, and the meaning of lambda, does not scale with world size.

    Args:
        student_stages: J tensors B x C_j x H_j x W_j.
        teacher_stages: J tensors B x C'_j x H_j x W_j (channels may differ).

    Returns:
        A scalar tensor.
    """
    if len(student_stages) != len(teacher_stages):
        raise ValueError(
            f"student_stages has {len(student_stages)} stages and teacher_stages has "
            f"{len(teacher_stages)}; expected the same number"
        )
    if not student_stages:
        raise ValueError("student_stages and teacher_stages are empty; expected >= 1 stage")
    loss = None
    for j, (s, t) in enumerate(zip(student_stages, teacher_stages)):
        if s.dim() != 4 or t.dim() != 4 or s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
            raise ValueError(
                f"stage {j}: student {tuple(s.shape)} and teacher {tuple(t.shape)} must be "
                f"B x C x H x W with the same batch and spatial size (channels may differ)"
            )
        term = (attention_map(s) - attention_map(t)).pow(2).mean()
        loss = term if loss is None else loss + term
    return loss


class Teacher(nn.Module):
    """A frozen teacher that returns its stage features: B x 3 x H x W -> list of tensors.

    Uses ``model.stage_features(x)`` when the model has it and ``stage_modules`` is None;
    otherwise records the outputs of the submodules named in ``stage_modules`` (names as
    in ``model.named_modules()``, e.g. ``["layer1", "layer2", "layer3"]``) with forward
    hooks during ``model(x)``. The model always runs in eval mode under ``torch.no_grad``:
    ``train()`` on the wrapper keeps it in eval, and the features carry no gradient.
    """

    def __init__(self, model: nn.Module, stage_modules: list[str] | None = None) -> None:
        super().__init__()
        if stage_modules is None and not callable(getattr(model, "stage_features", None)):
            raise ValueError(
                f"stage_modules=None needs a model with stage_features(x); "
                f"{type(model).__name__} has none, so name its stage submodules"
            )
        if stage_modules is not None:
            names = dict(model.named_modules())
            unknown = [n for n in stage_modules if n not in names or n == ""]
            if unknown or not stage_modules:
                top = ", ".join(n for n, _ in model.named_children())
                raise ValueError(
                    f"stage_modules={stage_modules!r} is not valid: {unknown or 'empty'}; "
                    f"expected names from model.named_modules(), e.g. children: {top}"
                )
        self.model = model.eval()
        self.stage_modules = None if stage_modules is None else list(stage_modules)

    def train(self, mode: bool = True) -> Teacher:
        """Set the wrapper's flag; the wrapped teacher stays in eval mode."""
        super().train(mode)
        self.model.eval()
        return self

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.model.eval()
        if self.stage_modules is None:
            return list(self.model.stage_features(x))
        modules = dict(self.model.named_modules())
        outputs: dict[str, torch.Tensor] = {}
        handles = [
            modules[name].register_forward_hook(
                lambda _m, _i, out, name=name: outputs.__setitem__(name, out)
            )
            for name in self.stage_modules
        ]
        try:
            self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        missing = [n for n in self.stage_modules if n not in outputs]
        if missing:
            raise RuntimeError(f"stage_modules {missing} did not run in the teacher's forward")
        return [outputs[name] for name in self.stage_modules]


def save_teacher(
    path: str | os.PathLike,
    model: nn.Module,
    arch: str,
    num_classes: int,
    image_size: int,
    metrics: dict[str, Any] | None = None,
) -> None:
    """Write a teacher file (checkpoint kind ``"teacher"``): ``arch`` (a
    :func:`~nos_ops.models.teachers.create_teacher` name), ``num_classes``, ``image_size``
    (the resolution it was trained at), ``model`` (the weights) and ``metrics``."""
    save_checkpoint(
        path,
        "teacher",
        {
            "arch": arch,
            "num_classes": num_classes,
            "image_size": image_size,
            "model": model.state_dict(),
            "metrics": metrics or {},
        },
    )


def load_teacher(
    path: str | os.PathLike,
    num_classes: int | None = None,
    device: torch.device | str = "cpu",
    image_size: int | None = None,
) -> Teacher:
    """The frozen :class:`Teacher` of a :func:`save_teacher` file, on ``device``.

    ``num_classes`` and ``image_size``, when given, must match the file's (a teacher trained
    on other data or at another resolution would guide the search with the wrong maps).
    """
    state = load_checkpoint(path, "teacher")
    for name, wanted in (("num_classes", num_classes), ("image_size", image_size)):
        if wanted is not None and state[name] != wanted:
            raise ValueError(
                f"teacher={str(path)!r} has {name}={state[name]}; the search data has "
                f"{wanted}: train a teacher on the same data (nos-ops teacher)"
            )
    model = create_teacher(state["arch"], state["num_classes"])
    model.load_state_dict(state["model"])
    return Teacher(model).to(device)


def weights_fingerprint(model: nn.Module) -> list[float]:
    """Per tensor of ``model.state_dict()``, its float64 sum and sum of squares: equal for
    the same weights, and in practice different for any retrained ones. The search keeps its
    teacher's in its checkpoint, so a resume with another teacher is refused."""
    values: list[float] = []
    for tensor in model.state_dict().values():
        wide = tensor.detach().cpu().double()
        values += [wide.sum().item(), wide.square().sum().item()]
    return values


def same_weights(a: Sequence[float] | None, b: Sequence[float] | None) -> bool:
    """Whether two :func:`weights_fingerprint` results (or two None) describe the same
    weights: equal up to the rounding of sums taken in another order (1e-9 relative)."""
    if a is None or b is None:
        return a is b
    return len(a) == len(b) and all(
        math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12) for x, y in zip(a, b)
    )
