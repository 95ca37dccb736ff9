"""Attention-guided search (Sec. 3.3): the bilevel steps, attention transfer and the
search pipeline."""

from .architect import Architect, weight_step
from .distill import Teacher, attention_map, attention_transfer_loss
from .runner import NonFiniteLossError, SearchConfig, run_search

__all__ = [
    "Architect",
    "NonFiniteLossError",
    "SearchConfig",
    "Teacher",
    "attention_map",
    "attention_transfer_loss",
    "run_search",
    "weight_step",
]
