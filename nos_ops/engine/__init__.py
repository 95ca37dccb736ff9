"""The run engine every pipeline (search, training, teacher, ResNet study) runs on.

``config`` (dataclass configs, quick presets, what may change on resume), ``checkpoint``
(one schema, atomic writes, clear load errors), ``run`` (run folder and lock, RNG, the
non-finite guard, the epoch loop :func:`fit`), ``loop`` (one step, one epoch, evaluation),
``amp``, ``distributed`` (DDP), ``data`` (classifier loaders), ``progress`` and ``runlog``.
"""

from .amp import autocast, grad_scaler
from .checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    atomic_save,
    load_checkpoint,
    read_torch_file,
    save_checkpoint,
    write_json,
)
from .config import RESUMABLE, RunConfig
from .distributed import DistributedContext, setup_distributed
from .loop import Capped, ModelTask, evaluate, optimizer_step, train_one_epoch
from .progress import echo
from .run import (
    NonFiniteLossError,
    RunDir,
    RunLockedError,
    capture_rng,
    check_finite,
    fit,
    restore_rng,
    seed_everything,
)
from .runlog import JsonlLogger, read_jsonl

__all__ = [
    "FORMAT_VERSION",
    "RESUMABLE",
    "Capped",
    "CheckpointError",
    "DistributedContext",
    "JsonlLogger",
    "ModelTask",
    "NonFiniteLossError",
    "RunConfig",
    "RunDir",
    "RunLockedError",
    "atomic_save",
    "autocast",
    "capture_rng",
    "check_finite",
    "echo",
    "evaluate",
    "fit",
    "grad_scaler",
    "load_checkpoint",
    "optimizer_step",
    "read_jsonl",
    "read_torch_file",
    "restore_rng",
    "save_checkpoint",
    "seed_everything",
    "setup_distributed",
    "train_one_epoch",
    "write_json",
]
