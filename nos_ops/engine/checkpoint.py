"""One checkpoint schema for every pipeline, written atomically, read with clear errors.

A checkpoint is a ``torch.save`` dict with a header: ``format`` (``"nos_ops.checkpoint"``),
``format_version``, ``kind`` (``"search"``, ``"train"``, ``"teacher"``, ``"study"``,
``"protocol"`` or ``"network"``), ``epoch`` (epochs done) and ``config`` (the run's config as
a dict), then the kind's own entries. Writes go to a temporary file in the same folder, are
fsynced and renamed over the target, and the temporary file is removed on every path (also on
errors), so a crash never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import json
import os
import pickle
import uuid
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "KINDS",
    "CheckpointError",
    "atomic_save",
    "atomic_write_text",
    "write_json",
    "read_torch_file",
    "save_checkpoint",
    "load_checkpoint",
    "remove_temp_files",
]

FORMAT = "nos_ops.checkpoint"
FORMAT_VERSION = 1
KINDS = ("search", "train", "teacher", "study", "protocol", "network")
_TMP = ".tmp-"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and why."""


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{_TMP}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _atomic(path: str | os.PathLike, write: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (temporary file, fsync, rename)."""
    return _atomic(path, lambda handle: torch.save(obj, handle))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return _atomic(path, lambda handle: handle.write(text.encode()))


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as strict JSON atomically: NaN or infinity raise ``ValueError`` (nothing
    non-finite is ever written)."""
    return atomic_write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n", path)


def remove_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove temporary files that killed saves left in ``folder`` (ours, and ``*.tmp`` of
    other atomic writers such as ``Genotype.save``); returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    left = [
        p
        for p in folder.iterdir()
        if p.is_file() and ((p.name.startswith(".") and _TMP in p.name) or p.name.endswith(".tmp"))
    ]
    for path in left:
        path.unlink(missing_ok=True)
    return left


def read_torch_file(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load`` with errors that name the file: missing, truncated or not a torch file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except (EOFError, OSError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise CheckpointError(
            f"checkpoint {path} cannot be read: it is truncated or not a torch file "
            f"({type(err).__name__}: {' '.join(str(err).split()[:12])}); delete it (start "
            "afresh with --overwrite) or "
            "restore it from a backup"
        ) from None


def save_checkpoint(
    path: str | os.PathLike,
    kind: str,
    entries: dict[str, Any],
    *,
    config: dict[str, Any] | None = None,
    epoch: int | None = None,
) -> Path:
    """Write a ``kind`` checkpoint with the header, ``config``, ``epoch`` and ``entries``."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not valid; expected one of {list(KINDS)}")
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "epoch": epoch,
        "config": config,
    }
    return atomic_save({**header, **entries}, path)


def load_checkpoint(
    path: str | os.PathLike,
    kind: str | Iterable[str] | None = None,
    map_location: Any = "cpu",
) -> dict[str, Any]:
    """Read a checkpoint of :func:`save_checkpoint`, checking its header.

    Raises ``FileNotFoundError`` when ``path`` is missing and :class:`CheckpointError`
    (naming the file) when it is truncated, not a nos_ops checkpoint, of a newer format, or
    of another ``kind`` than the one (or ones) asked for.
    """
    state = read_torch_file(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a nos_ops checkpoint (no format={FORMAT!r} header); it was not "
            "written by nos_ops, or by a version before the checkpoint schema"
        )
    version = state.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version={version!r}, newer than this nos_ops reads "
            f"({FORMAT_VERSION}); upgrade nos_ops"
        )
    kinds = (kind,) if isinstance(kind, str) else tuple(kind or ())
    if kinds and state.get("kind") not in kinds:
        raise CheckpointError(
            f"{path} is a {state.get('kind')!r} checkpoint; expected "
            f"{' or '.join(map(repr, kinds))}"
        )
    return state
