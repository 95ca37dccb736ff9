"""JSON-lines run logs: one strict-JSON object per line, appended and flushed per epoch.

A run killed mid-write can leave a torn last line; :func:`read_jsonl` skips it (with a
warning) and :class:`JsonlLogger` drops it when it reopens the log on resume.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write_text

__all__ = ["JsonlLogger", "read_jsonl"]

_logger = logging.getLogger(__name__)


class JsonlLogger:
    """Append records to ``path``; ``enabled=False`` (non-zero DDP ranks) writes nothing.

    A fresh run (``keep_before_epoch=None``) starts an empty log; a resumed one keeps only
    the records before ``keep_before_epoch`` (and drops a torn last line), so a log never
    holds an epoch twice. :attr:`records` are the records kept.
    """

    def __init__(
        self, path: str | os.PathLike, enabled: bool = True, keep_before_epoch: int | None = None
    ) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.records: list[dict[str, Any]] = []
        if not enabled:
            return
        if keep_before_epoch is not None and self.path.exists():
            self.records = [
                r for r in read_jsonl(self.path) if r.get("epoch", -1) < keep_before_epoch
            ]
        atomic_write_text("".join(json.dumps(r) + "\n" for r in self.records), self.path)

    def log(self, record: dict[str, Any]) -> None:
        """Append ``record`` (strict JSON: a NaN raises ``ValueError`` before writing)."""
        if not self.enabled:
            return
        line = json.dumps(record, allow_nan=False) + "\n"
        with open(self.path, "a") as handle:
            handle.write(line)
            handle.flush()
        self.records.append(record)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a JSON-lines file; a torn last line is skipped with a warning, a bad
    line elsewhere raises ``ValueError`` naming the file and line."""
    path = Path(path)
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):
                _logger.warning("%s: skipped a torn last line (%d): %s", path, number, err)
                break
            raise ValueError(f"{path} line {number} is not valid JSON: {err}") from None
    return records
