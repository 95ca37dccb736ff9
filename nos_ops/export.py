"""Deployment: ``torch.export`` and ONNX export of evaluation networks, checkpoint loading.

Exported graphs take B x 3 x H x W images and return logits only (the auxiliary head is
a training device). With ``dynamic_batch=True`` the batch dimension is symbolic: the
per-sample depthwise conv of dynamic ops traces as shifted multiply-adds under export
(:func:`~nos_ops.ops.dynamic.dynamic_depthwise_conv2d`, ``impl="auto"``), so one graph
serves every batch size.

ONNX needs the optional extra ``export`` (``pip install "nos_ops[export]"``: onnx,
onnxscript, onnxruntime), imported only when :func:`export_onnx` is called.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch
from torch import nn

from .network import load_network

__all__ = ["LogitsOnly", "export_program", "export_onnx", "load_network"]


class LogitsOnly(nn.Module):
    """Wrap a network whose ``forward`` returns ``(logits, aux_logits)``: returns logits,
    B x num_classes. Modules that return a tensor pass through unchanged."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out[0] if isinstance(out, tuple) else out


def _example_batch(example_input: torch.Tensor, dynamic_batch: bool) -> torch.Tensor:
    if example_input.dim() != 4:
        raise ValueError(
            f"example_input must be B x C x H x W, got shape {tuple(example_input.shape)}"
        )
    if dynamic_batch and example_input.shape[0] == 1:
        # torch.export specialises size-1 dims, so a batch of one is traced as two
        example_input = torch.cat([example_input, example_input])
    return example_input


def export_program(
    model: nn.Module, example_input: torch.Tensor, dynamic_batch: bool = True
) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` in eval mode, returning logits only.

    Args:
        model: an evaluation network (``forward`` may return ``(logits, aux_logits)``).
        example_input: B x 3 x H x W on the model's device and dtype.
        dynamic_batch: make the batch dimension symbolic (min 1); H and W stay fixed.

    Returns:
        An ``ExportedProgram``; ``program.module()(x)`` gives B x num_classes logits. The
        model's training flags are restored afterwards.
    """
    example_input = _example_batch(example_input, dynamic_batch)
    flags = [(m, m.training) for m in model.modules()]
    wrapper = LogitsOnly(model).eval()
    dynamic_shapes = {"x": {0: torch.export.Dim("batch", min=1)}} if dynamic_batch else None
    try:
        with torch.no_grad():
            return torch.export.export(wrapper, (example_input,), dynamic_shapes=dynamic_shapes)
    finally:
        for module, training in flags:
            module.training = training


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    example_input: torch.Tensor,
    dynamic_batch: bool = True,
) -> Path:
    """Write ``model`` (eval mode, logits only) as ONNX with the dynamo exporter.

    The graph has one input ``input`` (B x 3 x H x W, B symbolic with ``dynamic_batch``)
    and one output ``logits``. Needs onnx and onnxscript (``pip install
    "nos_ops[export]"``). Returns ``path``.
    """
    for name in ("onnx", "onnxscript"):
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ImportError(
                f'export_onnx needs {name}: pip install "nos_ops[export]" '
                "(onnx, onnxscript, onnxruntime)"
            ) from err
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program = export_program(model, example_input, dynamic_batch)
    torch.onnx.export(
        program,
        (_example_batch(example_input, dynamic_batch),),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamo=True,
        verbose=False,
    )
    return path
