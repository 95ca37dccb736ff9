"""An optional TensorBoard writer beside the JSON-lines log (``tensorboard=True``).

:func:`~nos_ops.engine.run.fit` opens one :class:`TensorBoardLogger` per run when the
config's ``tensorboard`` is set and hands it every epoch's record right after
``log.jsonl`` gets it, so every pipeline (search, train, teacher, study) logs the same way:
each finite number of the record becomes a scalar (``loss/...``, ``accuracy/...``, ``lr``,
``other/...``) at step = epoch, and a task's :meth:`figures` (the search: its architecture
weights) become pictures. The events go to ``OUT/tensorboard``; view them with
``tensorboard --logdir OUT``. Needs the ``tensorboard`` package: ``pip install
"nos_ops[tensorboard]"``.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["TensorBoardLogger", "scalar_tag", "require_tensorboard"]

_logger = logging.getLogger(__name__)

_MISSING = (
    "tensorboard=True (--tensorboard) needs the tensorboard package: "
    'pip install "nos_ops[tensorboard]"'
)


def require_tensorboard() -> type:
    """``torch.utils.tensorboard.SummaryWriter``; ``ImportError`` naming the extra when the
    ``tensorboard`` package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ImportError(_MISSING) from err
    return SummaryWriter


def scalar_tag(key: str) -> str:
    """The TensorBoard tag of record key ``key``: losses and accuracies grouped, ``lr`` alone."""
    if key == "lr":
        return "lr"
    if "loss" in key or key == "objective":
        return f"loss/{key}"
    if "top1" in key or "top5" in key or "acc" in key:
        return f"accuracy/{key}"
    return f"other/{key}"


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of ``record`` (booleans and ``epoch`` left out; one level of nested
    dicts flattened as ``outer/inner``)."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key == "epoch" or isinstance(value, bool):
            continue
        if isinstance(value, dict):
            for inner, v in value.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    out[f"{key}/{inner}"] = float(v)
        elif isinstance(value, (int, float)) and math.isfinite(value):
            out[key] = float(value)
    return out


class TensorBoardLogger:
    """TensorBoard events in ``folder``; ``enabled=False`` (off, or a DDP rank other than 0)
    writes nothing and needs no ``tensorboard`` package.

    ``first_epoch`` is the first epoch this process logs: on resume, events of that epoch and
    later left by the interrupted run are purged, so a curve never holds an epoch twice.
    """

    def __init__(
        self, folder: str | os.PathLike, enabled: bool = True, first_epoch: int = 1
    ) -> None:
        self.folder = Path(folder)
        self.writer: Any = None
        if not enabled:
            return
        writer_class = require_tensorboard()
        self.writer = writer_class(
            log_dir=str(self.folder), purge_step=first_epoch if first_epoch > 1 else None
        )
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def log(self, record: dict[str, Any], figures: dict[str, Any] | None = None) -> None:
        """Write the scalars of ``record`` and ``figures`` (tag -> matplotlib figure) at
        step ``record["epoch"]``, then flush."""
        if self.writer is None:
            return
        step = int(record["epoch"])
        for key, value in _scalars(record).items():
            self.writer.add_scalar(scalar_tag(key), value, step)
        for tag, figure in (figures or {}).items():
            self.writer.add_figure(tag, figure, step, close=False)
        self.writer.flush()

    def figures_of(self, task: Any, record: dict[str, Any]) -> dict[str, Any]:
        """``task.figures(record)`` when the task draws any; a missing matplotlib is warned
        about once and the pictures are left out (the scalars are still written)."""
        draw = getattr(task, "figures", None)
        if self.writer is None or draw is None:
            return {}
        try:
            return draw(record)
        except ImportError as err:
            if not self._warned:
                _logger.warning("TensorBoard: no pictures (%s)", err)
                self._warned = True
            return {}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
