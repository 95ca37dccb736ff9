"""A run: its folder and lock, resume, RNG, the non-finite guard, and the epoch loop.

:func:`fit` drives any :class:`Task` (the search, evaluation training, teacher training, the
ResNet study): it opens the run folder (:class:`RunDir`), resumes from its checkpoint when
asked (checking the config; :data:`~nos_ops.engine.config.RESUMABLE` fields may change),
then per epoch runs the task, checks that every number and parameter is finite, appends the
record to ``log.jsonl`` (and, with ``tensorboard``, to TensorBoard events in
``tensorboard/``), lets the task write its own files, saves ``checkpoint.pt`` with the
RNG state of every rank, and prints one line. A non-finite loss stops the run with a
:class:`NonFiniteLossError` that names the epoch, the step, the last good checkpoint and how
to resume it; nothing non-finite is written.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from .checkpoint import load_checkpoint, remove_temp_files, save_checkpoint
from .config import RunConfig, check_resumable
from .distributed import DistributedContext, gather_objects
from .progress import echo
from .runlog import JsonlLogger
from .tensorboard import TensorBoardLogger

__all__ = [
    "RunDir",
    "RunLockedError",
    "NonFiniteLossError",
    "Task",
    "capture_rng",
    "restore_rng",
    "seed_everything",
    "check_finite",
    "fit",
]


class RunLockedError(RuntimeError):
    """Another live process holds the run folder."""


class NonFiniteLossError(RuntimeError):
    """A loss or parameter became NaN or infinite; ``checkpoint`` is the last good one (None
    if none was written) and is left intact."""

    def __init__(self, message: str, epoch: int, step: int | None, checkpoint: Path | None):
        super().__init__(message)
        self.epoch, self.step, self.checkpoint = epoch, step, checkpoint


class _NonFinite(Exception):
    def __init__(self, what: str, value: float, step: int | None) -> None:
        super().__init__(what)
        self.what, self.value, self.step = what, value, step


def check_finite(what: str, value: float | torch.Tensor, step: int | None = None) -> None:
    """Stop the run (inside :func:`fit`) when ``value`` is NaN or infinite."""
    number = float(value.detach() if isinstance(value, torch.Tensor) else value)
    if not math.isfinite(number):
        raise _NonFinite(what, number, step)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunDir:
    """A run folder held under an exclusive lock (``.lock``: pid and host).

    A second run into a locked folder fails at once naming the folder and the holder's pid;
    a lock left by a dead process is taken over (and said so). A fresh run into a non-empty
    folder needs ``resume`` (continue it) or ``overwrite`` (empty it first). Temporary files
    of killed saves are removed. ``enabled=False`` (DDP ranks other than 0) touches nothing.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        resume: bool = False,
        overwrite: bool = False,
        enabled: bool = True,
    ) -> None:
        self.path = Path(path).expanduser()
        self.resume, self.overwrite, self.enabled = resume, overwrite, enabled
        self.lock = self.path / ".lock"
        self._held = False

    @classmethod
    def of(cls, config: RunConfig, ctx: DistributedContext) -> RunDir:
        """The run folder of ``config`` (``out``, ``resume``, ``overwrite``); only the main
        rank of ``ctx`` touches it."""
        return cls(
            config.out, resume=config.resume, overwrite=config.overwrite, enabled=ctx.is_main
        )

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def log(self) -> Path:
        return self.path / "log.jsonl"

    def __enter__(self) -> RunDir:
        if not self.enabled:
            return self
        self.path.mkdir(parents=True, exist_ok=True)
        self._acquire()
        try:
            self._prepare()
        except BaseException:
            self.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _acquire(self) -> None:
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
        for _ in range(3):
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._check_holder()
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(record)
            self._held = True
            return
        raise RunLockedError(f"could not lock run folder {self.path} ({self.lock})")

    def _check_holder(self) -> None:
        """Raise if a live process holds the lock; remove it if its holder is dead."""
        holder: dict[str, Any] = {}
        for _ in range(20):  # a holder writes its pid right after creating the file
            try:
                holder = json.loads(self.lock.read_text() or "{}")
            except (OSError, ValueError):
                holder = {}
            if holder:
                break
            time.sleep(0.05)
        pid, host = holder.get("pid"), holder.get("host")
        if isinstance(pid, int) and (host != socket.gethostname() or _alive(pid)):
            raise RunLockedError(
                f"run folder {self.path} is in use by process {pid} on {host} (lock file "
                f"{self.lock}); wait for it to finish, or use another --out"
            )
        echo(
            f"{self.path}: took over the stale lock of process {pid} (no longer running)", err=True
        )
        self.lock.unlink(missing_ok=True)

    def _prepare(self) -> None:
        removed = remove_temp_files(self.path)
        if removed:
            echo(
                f"{self.path}: removed {len(removed)} temporary file(s) of an interrupted save",
                err=True,
            )
        others = sorted(p.name for p in self.path.iterdir() if p.name != ".lock")
        if self.resume:
            if not self.checkpoint.is_file():
                raise FileNotFoundError(
                    f"resume: checkpoint {self.checkpoint} does not exist; start afresh with "
                    "--overwrite (or without --resume into an empty folder)"
                )
        elif others and not self.overwrite:
            raise FileExistsError(
                f"run folder {self.path} is not empty ({', '.join(others[:4])}"
                f"{', ...' if len(others) > 4 else ''}); pass --resume to continue that run "
                "or --overwrite to start afresh"
            )
        elif others:
            for name in others:
                target = self.path / name
                shutil.rmtree(target) if target.is_dir() else target.unlink()

    def release(self) -> None:
        if self._held:
            self.lock.unlink(missing_ok=True)
            self._held = False


def seed_everything(seed: int) -> None:
    """Seed Python's, torch's (and numpy's, when installed) generators."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass


def capture_rng() -> dict[str, Any]:
    """The state of Python's, torch's, CUDA's and numpy's generators."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:
        pass
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])


class Task(Protocol):
    """What a pipeline gives :func:`fit`: its loop, its state and its outputs."""

    kind: str  # the checkpoint kind: "search", "train", "teacher" or "study"
    config: RunConfig
    total_epochs: int

    def run_epoch(self, epoch: int) -> dict[str, Any]: ...  # 1-based; the log record
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def modules(self) -> list[nn.Module]: ...  # whose parameters must stay finite
    def describe(self, record: dict[str, Any]) -> str: ...  # the per-epoch line
    def write_outputs(self, record: dict[str, Any], records: list[dict]) -> None: ...

    # optional: ``figures(record) -> {tag: matplotlib Figure}``, pictures for TensorBoard


def _advice(task: Task, where: str, good: int | None, path: Path) -> str:
    if good is None:
        return f"{where}; no checkpoint was written yet: start again with a lower lr"
    out = task.config.out
    return (
        f"{where}; the last good checkpoint is {path} (after epoch {good}); resume it "
        f"with a lower learning rate: nos-ops {task.kind} --resume --out {out} --lr LR "
        f"(Python: resume=True, lr=...)"
    )


def _finite_record(record: dict[str, Any]) -> str | None:
    for key, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            return key
    return None


def _resume(task: Task, run: RunDir, ctx: DistributedContext) -> int:
    state = load_checkpoint(run.checkpoint, task.kind, map_location=ctx.device)
    check_resumable(state["config"], task.config.to_dict(), run.checkpoint)
    task.load_state_dict(state["state"])
    rng = state["rng"]
    restore_rng(rng[ctx.rank] if len(rng) == ctx.world_size else rng[0])
    return int(state["epoch"])


def fit(task: Task, run: RunDir, ctx: DistributedContext) -> list[dict[str, Any]]:
    """Run ``task``'s remaining epochs in the (entered) ``run``; returns the log records."""
    start = _resume(task, run, ctx) if run.resume else 0
    logger = JsonlLogger(run.log, ctx.is_main, keep_before_epoch=start + 1 if start else None)
    board = TensorBoardLogger(
        run.path / "tensorboard",
        enabled=ctx.is_main and bool(getattr(task.config, "tensorboard", False)),
        first_epoch=start + 1,
    )
    try:
        _epochs(task, run, ctx, start, logger, board)
    finally:
        board.close()
    return logger.records


def _epochs(
    task: Task,
    run: RunDir,
    ctx: DistributedContext,
    start: int,
    logger: JsonlLogger,
    board: TensorBoardLogger,
) -> None:
    good: int | None = start or None
    for epoch in range(start + 1, task.total_epochs + 1):
        began = time.perf_counter()
        try:
            record = task.run_epoch(epoch)
            bad = _finite_record(record)
            if bad is not None:
                raise _NonFinite(bad, record[bad], None)
            for module in task.modules():
                if not all(torch.isfinite(p).all() for p in module.parameters()):
                    raise _NonFinite("parameters", math.nan, None)
        except _NonFinite as err:
            step = f", step {err.step}" if err.step is not None else ""
            where = f"non-finite {err.what} ({err.value}) at epoch {epoch}{step}"
            raise NonFiniteLossError(
                _advice(task, where, good, run.checkpoint),
                epoch,
                err.step,
                run.checkpoint if good else None,
            ) from None
        record = {"epoch": epoch, **record, "seconds": time.perf_counter() - began}
        rng = gather_objects(ctx, capture_rng())
        if ctx.is_main:
            logger.log(record)
            board.log(record, board.figures_of(task, record))
            task.write_outputs(record, logger.records)
            save_checkpoint(
                run.checkpoint,
                task.kind,
                {"state": task.state_dict(), "rng": rng, "metrics": record},
                config=task.config.to_dict(),
                epoch=epoch,
            )
            echo(task.describe(record))
        good = epoch
        ctx.barrier()
