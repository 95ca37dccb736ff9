"""Progress bars (tqdm when installed), the lines every run prints, its learning curves."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable

_logger = logging.getLogger(__name__)

__all__ = ["progress", "echo", "draw_curves"]


def progress(iterable: Iterable, total: int | None, desc: str, enabled: bool) -> Iterable:
    """``iterable`` with a transient tqdm bar when ``enabled`` and tqdm is installed."""
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


def echo(message: str, *, err: bool = False) -> None:
    """Print a line without breaking an active progress bar."""
    stream = sys.stderr if err else sys.stdout
    try:
        from tqdm.auto import tqdm
    except ImportError:
        print(message, file=stream, flush=True)
        return
    tqdm.write(message, file=stream)
    stream.flush()


def draw_curves(records: list[dict], keys: list[str], path: str | os.PathLike, title: str) -> None:
    """``curves.png`` of a run's log records (:func:`nos_ops.plot.plot_curves`); without
    matplotlib a warning instead."""
    from ..plot import plot_curves

    try:
        plot_curves(records, keys, path, title=title)
    except ImportError as err:
        _logger.warning("learning curves not drawn: %s", err)
