"""Mixed precision in one place: the autocast context and the fp16 GradScaler.

``amp`` is ``"none"``, ``"bf16"`` (CPU or CUDA) or ``"fp16"`` (CUDA, with a GradScaler).
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["AMP", "amp_dtype", "autocast", "grad_scaler", "check_amp"]

AMP: dict[str, torch.dtype | None] = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_amp(amp: str, device: torch.device | None = None) -> None:
    """Raise ``ValueError`` for an unknown ``amp`` or fp16 without CUDA."""
    if amp not in AMP:
        raise ValueError(f"amp={amp!r} is not valid; expected one of {list(AMP)}")
    if amp == "fp16" and device is not None and device.type != "cuda":
        raise ValueError("amp='fp16' needs CUDA; use amp='bf16' on the CPU")


def amp_dtype(amp: str) -> torch.dtype | None:
    """The autocast dtype of ``amp`` (None for ``"none"``)."""
    check_amp(amp)
    return AMP[amp]


def autocast(
    device: torch.device, amp: str | torch.dtype | None
) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``device``'s type for ``amp`` (``"none"``, ``"bf16"``,
    ``"fp16"``, or a dtype); a no-op for ``"none"`` and None."""
    dtype = amp if amp is None or isinstance(amp, torch.dtype) else amp_dtype(amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A CUDA GradScaler for fp16, else None (bf16 and fp32 need none)."""
    check_amp(amp, device)
    return torch.amp.GradScaler("cuda") if amp == "fp16" else None
