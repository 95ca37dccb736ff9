"""The paper's studies as protocols: variants x seeds, each searched, derived and trained.

:class:`Variant` and :data:`PRESETS` (``table4``, ``fig7``, ``generality``) say what is
compared; :func:`run_protocol` runs the grid (resumable, in parallel processes) and
:func:`write_report` summarises it (mean +- std over seeds, single runs, pictures).
"""

from .config import SEARCH_QUICK, TEACHER_QUICK, TRAIN_QUICK, ProtocolConfig
from .report import markdown_report, plot_summary, summarise, write_report
from .runner import calibration_ops, run_cell, run_protocol
from .variants import GUIDANCE, PRESETS, Variant, get_preset

__all__ = [
    "GUIDANCE",
    "PRESETS",
    "SEARCH_QUICK",
    "TEACHER_QUICK",
    "TRAIN_QUICK",
    "ProtocolConfig",
    "Variant",
    "calibration_ops",
    "get_preset",
    "markdown_report",
    "plot_summary",
    "run_cell",
    "run_protocol",
    "summarise",
    "write_report",
]
