"""Progress bars (tqdm when installed) and the lines every run prints."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["progress", "echo"]


def progress(iterable: Iterable, total: int | None, desc: str, enabled: bool) -> Iterable:
    """``iterable`` with a transient tqdm bar when ``enabled`` and tqdm is installed."""
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


def echo(message: str, *, err: bool = False, **_: Any) -> None:
    """Print a line without breaking an active progress bar."""
    stream = sys.stderr if err else sys.stdout
    try:
        from tqdm.auto import tqdm
    except ImportError:
        print(message, file=stream, flush=True)
        return
    tqdm.write(message, file=stream)
    stream.flush()
