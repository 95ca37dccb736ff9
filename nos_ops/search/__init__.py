"""Attention-guided search (Sec. 3.3): the bilevel steps, attention transfer, the teacher
file format and the search pipeline."""

from .architect import Architect, weight_step
from .distill import Teacher, attention_map, attention_transfer_loss, load_teacher, save_teacher
from .runner import QUICK, NonFiniteLossError, SearchConfig, op_margins, run_search

__all__ = [
    "QUICK",
    "Architect",
    "NonFiniteLossError",
    "SearchConfig",
    "Teacher",
    "attention_map",
    "attention_transfer_loss",
    "load_teacher",
    "op_margins",
    "run_search",
    "save_teacher",
    "weight_step",
]
