"""Run plumbing shared by the search and training pipelines: checkpoints, logs, DDP."""

from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import DistributedContext, setup_distributed
from .runlog import JsonlLogger, read_jsonl

__all__ = [
    "DistributedContext",
    "JsonlLogger",
    "load_checkpoint",
    "read_jsonl",
    "save_checkpoint",
    "setup_distributed",
]
