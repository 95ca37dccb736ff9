"""Run configs: dataclasses that round-trip to JSON, a quick preset, and resume checks.

Every pipeline's config (search, train, teacher, study) is a dataclass derived from
:class:`RunConfig`, which holds the fields every run has (``seed``, ``device``, ``out``,
``resume``, ``overwrite``, ``quick``, ``progress``, ``tensorboard``); each pipeline adds
``data_dir``, ``epochs``, ``lr`` and its own, and a class attribute ``preset`` (its quick dict).
:data:`RESUMABLE` is the one list of fields that may differ between a checkpoint's config
and the config that resumes it: the epoch count and the learning rate (so a run can be
extended, or continued at a lower rate after a non-finite loss), and settings that do not
change the numbers.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

__all__ = ["RESUMABLE", "RunConfig", "check_resumable", "config_differences"]

RESUMABLE = frozenset(
    {
        "epochs",
        "lr",
        "out",
        "resume",
        "overwrite",
        "device",
        "progress",
        "plots",
        "workers",
        "jobs",
        "threads",
        "tensorboard",
    }
)
"""Config fields that may change when a run is resumed."""

C = TypeVar("C", bound="RunConfig")


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"field: saved -> current"`` for every field outside :data:`RESUMABLE` that differs."""
    keys = sorted(set(saved) | set(current))
    return [
        f"{k}: {saved.get(k)!r} -> {current.get(k)!r}"
        for k in keys
        if k not in RESUMABLE and saved.get(k) != current.get(k)
    ]


def check_resumable(saved: dict[str, Any], current: dict[str, Any], path: os.PathLike) -> None:
    """Raise ``ValueError`` naming the fields where ``current`` differs from the config
    ``saved`` in checkpoint ``path`` (outside :data:`RESUMABLE`)."""
    differ = config_differences(saved, current)
    if differ:
        raise ValueError(
            f"resume: the config differs from {path}'s in {'; '.join(differ)}; resume with "
            "the checkpoint's settings (nos-ops ... --resume --out needs no other flags) or "
            "start a new run into another folder"
        )


def _matches(value: Any, annotation: str) -> bool:
    """Whether ``value`` fits a field annotation written as a string."""
    kinds = [part.strip() for part in annotation.split("|")]
    if value is None:
        return "None" in kinds
    for kind in kinds:
        if kind == "bool" and isinstance(value, bool):
            return True
        if isinstance(value, bool):
            continue
        if (kind == "int" and isinstance(value, int)) or (
            kind == "float" and isinstance(value, (int, float))
        ):
            return True
        if kind == "str" and isinstance(value, (str, os.PathLike)):
            return True
        if kind.startswith("list[") and isinstance(value, (list, tuple)):
            item = kind[5:-1]
            return all(_matches(v, item) for v in value)
        if kind not in ("int", "float", "bool", "str", "None") and not kind.startswith("list"):
            return True  # a class (e.g. Genotype): checked where it is used
    return False


@dataclass
class RunConfig:
    """The fields every run has; base of the pipeline configs (see the module docstring).

    ``seed`` fixes every random draw; ``device`` is ``"auto"``, ``"cpu"`` or ``"cuda"``;
    ``out`` is the run folder, which ``resume`` continues and ``overwrite`` empties first;
    ``quick`` (None: quick exactly when ``data_dir`` is None) applies :attr:`preset`;
    ``progress`` shows progress bars (the per-epoch lines print either way);
    ``mean`` and ``std`` (one number per image channel, given together) replace the
    normalisation statistics otherwise computed from the training images (CIFAR: its
    published constants); they apply to CIFAR, image folders, the digits and ImageSets, not
    to a ``Dataset`` the caller normalises itself;
    ``tensorboard`` also writes each epoch's numbers (and the search's architecture weights
    as a picture) as TensorBoard events into ``out/tensorboard`` (needs the ``tensorboard``
    extra; off by default).
    """

    preset: ClassVar[dict[str, Any]] = {}
    kind: ClassVar[str] = ""  # the checkpoint kind of the pipeline's runs
    seed: int = 0
    device: str = "auto"
    out: str = "runs/run"
    resume: bool = False
    overwrite: bool = False
    quick: bool | None = None
    progress: bool = True
    tensorboard: bool = False
    mean: list[float] | None = None
    std: list[float] | None = None

    def check_fields(self) -> None:
        """Raise ``ValueError`` naming the field for a value of the wrong type (from the
        field's annotation: ``int``, ``float``, ``bool``, ``str``, lists, ``| None``) or an
        unknown ``device``. Each pipeline's ``__post_init__`` calls it first."""
        for f in dataclasses.fields(self):
            value, annotation = getattr(self, f.name), str(f.type)
            if not _matches(value, annotation):
                raise ValueError(f"{f.name}={value!r} is not valid; expected {annotation}")
        self.require_choice("device", ("auto", "cpu", "cuda"))
        self._check_stats()
        if self.tensorboard:
            from .tensorboard import require_tensorboard

            require_tensorboard()  # ImportError naming the extra, before any run starts

    def _check_stats(self) -> None:
        """``mean`` and ``std``: both or neither, as long as each other, finite, std > 0."""
        mean, std = self.mean, self.std
        if (mean is None) != (std is None):
            raise ValueError(
                f"mean={mean!r} and std={std!r} are not valid; give both (one number per "
                "channel) or neither (statistics from the data)"
            )
        if mean is None or std is None:
            return
        if not mean or len(mean) != len(std):
            raise ValueError(
                f"mean={mean!r} and std={std!r} are not valid; expected one number per "
                "channel in each, as many means as stds"
            )
        if not all(math.isfinite(m) for m in mean) or not all(
            math.isfinite(s) and s > 0 for s in std
        ):
            raise ValueError(
                f"mean={mean!r}, std={std!r} are not valid; expected finite means and stds > 0"
            )

    def require_int(self, *names: str, minimum: int = 1, optional: bool = False) -> None:
        """Raise ``ValueError`` naming the field unless each is an int >= ``minimum`` (or
        None, when ``optional``)."""
        for name in names:
            value = getattr(self, name)
            if optional and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                none = "None or " if optional else ""
                raise ValueError(
                    f"{name}={value!r} is not valid; expected {none}an int >= {minimum}"
                )

    def require_positive(self, *names: str, zero: bool = False, optional: bool = False) -> None:
        """Raise ``ValueError`` naming the field unless each number is finite and > 0 (>= 0
        with ``zero``; or None, when ``optional``)."""
        for name in names:
            value = getattr(self, name)
            if optional and value is None:
                continue
            if not math.isfinite(value) or not (value >= 0 if zero else value > 0):
                raise ValueError(
                    f"{name}={value!r} is not valid; expected {'>=' if zero else '>'} 0"
                )

    def require_fraction(self, *names: str) -> None:
        """Raise ``ValueError`` naming the field unless each number is in [0, 1)."""
        for name in names:
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"{name}={value!r} is not valid; expected a number in [0, 1)")

    def require_choice(self, name: str, valid: Any) -> None:
        """Raise ``ValueError`` naming the field unless its value is in ``valid``."""
        if getattr(self, name) not in valid:
            raise ValueError(
                f"{name}={getattr(self, name)!r} is not valid; expected one of {list(valid)}"
            )

    def require_digits_size(self) -> None:
        """``image_size`` resizes the bundled digits and image folders only: CIFAR is
        32 x 32."""
        from .data import is_image_folder

        self.require_int("image_size", optional=True)
        size = getattr(self, "image_size", None)
        data_dir = getattr(self, "data_dir", None)
        if data_dir is not None and size not in (None, 32) and not is_image_folder(data_dir):
            raise ValueError(
                f"image_size={size} is not valid with data_dir (CIFAR is 32 x 32); "
                "image_size only resizes the bundled digits and image folders"
            )

    @property
    def is_quick(self) -> bool:
        """``quick``, or, when it is None, whether the run uses the bundled digits."""
        quick = getattr(self, "quick", None)
        return getattr(self, "data_dir", None) is None if quick is None else bool(quick)

    def quick_preset(self) -> dict[str, Any]:
        """The quick preset for this config (:attr:`preset`; a pipeline may adapt it to the
        fields given, e.g. no warm-up in a search shorter than the preset's warm-up)."""
        return self.preset

    def resolved(self: C) -> C:
        """This config with the quick preset given to the fields still at their default
        (when :attr:`is_quick`; ``image_size`` only for the digits) and ``quick`` made
        explicit."""
        if getattr(self, "_resolved", False):
            return self
        if not self.is_quick:
            return dataclasses.replace(self, quick=False).as_resolved()
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        digits = getattr(self, "data_dir", None) is None
        changes = {
            k: v
            for k, v in self.quick_preset().items()
            if getattr(self, k) == defaults[k] and (digits or k != "image_size")
        }
        return dataclasses.replace(self, **changes, quick=True).as_resolved()

    def as_resolved(self: C) -> C:
        """Mark this config as resolved (e.g. one read back from a checkpoint): its
        :meth:`resolved` is itself, so a field set back to its default (``--epochs 25`` on a
        quick run) keeps that value."""
        object.__setattr__(self, "_resolved", True)
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (override to convert non-JSON values)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Inverse of :meth:`to_dict`; unknown fields raise ``TypeError`` naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise TypeError(f"{cls.__name__} has no fields {unknown}; fields: {sorted(names)}")
        return cls(**data)

    @classmethod
    def from_run(cls: type[C], out: str | os.PathLike, **changes: Any) -> C:
        """The config of the run in folder ``out`` (from its ``checkpoint.pt``), ready to
        resume: ``resume=True`` and ``changes`` (only :data:`RESUMABLE` fields, e.g.
        ``epochs`` or ``lr``) applied. What ``nos-ops ... --resume --out OUT`` uses."""
        from .checkpoint import load_checkpoint

        state = load_checkpoint(Path(out) / "checkpoint.pt", cls.kind or None)
        saved = cls.from_dict(state["config"]).as_resolved()
        return saved.with_changes(
            **{"overwrite": False, **changes, "resume": True, "out": str(out)}
        )

    def with_changes(self: C, **changes: Any) -> C:
        """A copy with ``changes``; raises ``ValueError`` for fields outside
        :data:`RESUMABLE` (what a resumed run may change)."""
        fixed = sorted(set(changes) - RESUMABLE)
        if fixed:
            raise ValueError(
                f"{fixed} cannot change when resuming; only {sorted(RESUMABLE)} can "
                "(start a new run into another folder to change the others)"
            )
        changed = dataclasses.replace(self, **changes)
        return changed.as_resolved() if getattr(self, "_resolved", False) else changed
