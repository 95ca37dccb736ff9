"""JSON-lines run logs: one JSON object per line, appended and flushed as it happens."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["JsonlLogger", "read_jsonl"]


class JsonlLogger:
    """Append records to ``path``; ``enabled=False`` (non-zero DDP ranks) writes nothing.

    On resume, records at or past ``truncate_from_epoch`` are dropped first, so a log
    never holds an epoch twice.
    """

    def __init__(
        self, path: str | os.PathLike, enabled: bool = True, truncate_from_epoch: int | None = None
    ) -> None:
        self.path = Path(path)
        self.enabled = enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_from_epoch is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [r for r in read_jsonl(self.path) if r.get("epoch", -1) < truncate_from_epoch]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def log(self, **record: Any) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All records of a JSON-lines file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
