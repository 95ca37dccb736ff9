"""A protocol: variants x seeds, each grid cell searched, derived and trained (Sec. 4.4).

:func:`run_protocol` trains the protocol's teacher once (the quick digits teacher, unless a
teacher file is given), then runs every grid cell (variant, seed) that is not done yet, in
``jobs`` processes: :func:`run_cell` searches with the variant's settings
(:func:`~nos_ops.search.run_search`), derives the cell, trains it with the protocol's fixed
recipe (:func:`~nos_ops.train.train`) and writes ``cell.json``. Each search and each
training is its own run on the engine, so an interrupted protocol resumes where it stopped
(a finished stage is reused, a half-finished one resumed from its checkpoint). At the end
:func:`~nos_ops.protocols.report.write_report` writes the tables and pictures.

Layout of ``out``: ``checkpoint.pt`` (kind ``"protocol"``: the config and the finished
cells), ``teacher/``, ``runs/<variant>/seed_<seed>/{search,train,cell.json,cell.log}``,
``report.md``, ``results.json`` and the pictures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..engine import RunConfig, RunDir, echo, load_checkpoint, read_jsonl, write_json
from ..engine.checkpoint import save_checkpoint
from ..engine.config import config_differences
from ..genotype import Genotype, get_genotype
from ..ops.registry import Family, op_family
from .variants import Variant, get_preset

__all__ = [
    "SEARCH_QUICK",
    "TEACHER_QUICK",
    "TRAIN_QUICK",
    "ProtocolConfig",
    "calibration_ops",
    "run_cell",
    "run_protocol",
]

SEARCH_QUICK: dict[str, Any] = {
    "channels": 8,
    "layers": 5,
    "epochs": 6,
    "warmup_epochs": 2,
    "max_steps_per_epoch": 6,
    "batch_size": 32,
    "arch_lr": 0.1,
}
"""The search of a quick protocol: 2 warm-up epochs, then 24 architecture steps (``arch_lr``
0.1 reaches about 2.4 in the logits, as the quick search's 48 steps at 0.05)."""

TRAIN_QUICK: dict[str, Any] = {
    "layers": 5,
    "channels": 12,
    "epochs": 15,
    "batch_size": 64,
    "cutout": 0,
    "auxiliary_weight": 0.0,
    "drop_path": 0.1,
}
"""The evaluation recipe of a quick protocol (the same for every cell)."""

TEACHER_QUICK: dict[str, Any] = {"arch": "resnet18", "epochs": 10, "batch_size": 64}
"""The teacher of a quick protocol (``teacher="auto"``): ResNet-18 on the digits, trained
once for all its cells (the quick search's teacher has 4 epochs)."""

_OWN = ("space", "second_order", "partial_channels", "at_steps", "teacher", "teacher_dir")
_RUN = ("seed", "out", "resume", "overwrite", "data_dir", "image_size", "device", "progress")


@dataclass
class ProtocolConfig(RunConfig):
    """Settings of :func:`run_protocol`.

    ``preset`` names the variants (:data:`~nos_ops.protocols.variants.PRESETS`); ``variants``,
    when given, replaces them: each a preset key (a subset) or a dict of
    :class:`~nos_ops.protocols.variants.Variant` fields. ``seeds`` are the runs per variant.
    ``search`` and ``train`` give :class:`~nos_ops.search.SearchConfig` and
    :class:`~nos_ops.train.TrainConfig` fields for every cell (over :data:`SEARCH_QUICK` and
    :data:`TRAIN_QUICK` when quick; the paper's settings otherwise). ``teacher`` is
    ``"auto"`` (the quick digits teacher, trained once into ``out/teacher``) or a teacher
    file (CIFAR: ``nos-ops teacher``). ``jobs`` grid cells run at once, each in its own
    process with ``threads`` torch threads (None: the CPU count over ``jobs``); ``jobs=None``
    is one per CPU core on a CPU (at most one per grid cell) and 1 on CUDA. ``seed`` is
    the teacher's.
    """

    preset: ClassVar[dict[str, Any]] = {"image_size": 8}
    kind: ClassVar[str] = "protocol"
    protocol: str = "table4"
    variants: list[Any] | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    data_dir: str | None = None
    image_size: int | None = None
    teacher: str | None = "auto"
    search: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    jobs: int | None = None
    threads: int | None = None
    out: str = "runs/protocol"
    plots: bool = True

    def __post_init__(self) -> None:
        self.check_fields()
        self.require_digits_size()
        self.require_int("jobs", optional=True)
        self.require_int("threads", optional=True)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds={self.seeds!r} is not valid; expected distinct ints")
        for name, fixed in (("search", _OWN + _RUN), ("train", ("genotype",) + _RUN)):
            taken = sorted(set(getattr(self, name)) & set(fixed))
            if taken:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is not valid: {taken} are set by the "
                    "protocol (its variants, seeds, data and folders)"
                )
        variants = self.resolved_variants()
        if self.teacher == "auto" and self.data_dir is not None:
            if any(v.uses_teacher for v in variants):
                raise ValueError(
                    "teacher='auto' trains the quick teacher on the bundled digits only; with "
                    "data_dir pass teacher=PATH (nos-ops teacher --data-dir ...)"
                )
        if self.teacher is None and any(v.uses_teacher for v in variants):
            raise ValueError(
                "teacher=None is not valid: variants "
                f"{[v.key for v in variants if v.uses_teacher]} use attention transfer"
            )
        self.search_config(variants[0], self.seeds[0], None)  # field errors now, not later
        self.train_config(get_genotype("DARTS_V2"), self.seeds[0], Path(self.out))

    def resolved_variants(self) -> list[Variant]:
        """The variants run: the protocol's, or those ``variants`` names or describes."""
        preset = {v.key: v for v in get_preset(self.protocol)}
        if self.variants is None:
            return list(preset.values())
        chosen = []
        for item in self.variants:
            if isinstance(item, dict):
                chosen.append(Variant.from_dict(item))
            elif item in preset:
                chosen.append(preset[item])
            else:
                raise ValueError(
                    f"variants item {item!r} is not valid; expected a key of preset "
                    f"{self.protocol!r} ({list(preset)}) or a dict of Variant fields"
                )
        keys = [v.key for v in chosen]
        if not chosen or len(set(keys)) != len(keys):
            raise ValueError(f"variants={keys!r} is not valid; expected distinct keys")
        return chosen

    def recipe(self) -> str:
        """The settings every grid cell shares, in words (for the report)."""
        search = {**(SEARCH_QUICK if self.is_quick else {}), **self.search}
        train = {**(TRAIN_QUICK if self.is_quick else {}), **self.train}
        teacher = self.teacher
        if teacher == "auto":
            teacher = f"ResNet-18 on the digits ({TEACHER_QUICK['epochs']} epochs), trained once"
        base = "the quick protocol" if self.is_quick else "the paper's settings"

        def words(fields: dict[str, Any]) -> str:
            return ", ".join(f"{k}={v}" for k, v in fields.items()) or "the defaults"

        return (
            f"Seeds {', '.join(map(str, self.seeds))}; {base}. Search: {words(search)}. "
            f"Training of every found cell (one fixed recipe): {words(train)}. "
            f"Teacher: {teacher}."
        )

    def workers(self) -> int:
        """Grid cells run at once: ``jobs``, or (None) one per CPU core, 1 on CUDA."""
        if self.jobs is not None:
            return self.jobs
        cuda = self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available())
        cells = len(self.resolved_variants()) * len(self.seeds)
        return 1 if cuda else max(1, min(cells, os.cpu_count() or 1))

    def cell_dir(self, variant: Variant, seed: int) -> Path:
        return Path(self.out).expanduser() / "runs" / variant.key / f"seed_{seed}"

    def search_config(self, variant: Variant, seed: int, teacher: str | None) -> Any:
        """The :class:`~nos_ops.search.SearchConfig` of grid cell (``variant``, ``seed``)."""
        from ..search import SearchConfig

        folder = self.cell_dir(variant, seed) / "search"
        fields = {**(SEARCH_QUICK if self.is_quick else {}), **self.search}
        return SearchConfig(
            **fields,
            **variant.search_fields(),
            **self._run_fields(seed, folder),
            teacher=teacher if variant.uses_teacher else None,
            plots=self.plots,
            quick=self.is_quick,
        ).as_resolved()  # the recipe above is complete: no preset over it

    def train_config(self, genotype: Genotype, seed: int, folder: Path) -> Any:
        """The :class:`~nos_ops.train.TrainConfig` (the fixed recipe) of a found cell."""
        from ..train import TrainConfig

        fields = {**(TRAIN_QUICK if self.is_quick else {}), **self.train}
        return TrainConfig(
            **fields, **self._run_fields(seed, folder), genotype=genotype, quick=self.is_quick
        ).as_resolved()

    def _run_fields(self, seed: int, folder: Path) -> dict[str, Any]:
        resume = (folder / "checkpoint.pt").is_file()
        return {
            "seed": seed,
            "out": str(folder),
            "resume": resume,
            "overwrite": not resume,
            "data_dir": self.data_dir,
            "image_size": self.image_size,
            "device": self.device,
            "progress": self.progress and self.workers() == 1,
            "tensorboard": self.tensorboard,
            "mean": self.mean,
            "std": self.std,
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def calibration_ops(genotype: Genotype) -> tuple[int, int]:
    """(self-calibration ops, all ops) of the normal and reduction cells of ``genotype``."""
    ops = genotype.normal.ops + genotype.reduce.ops
    return sum(op_family(op) is not Family.FEATURE for op in ops), len(ops)


def _seconds(folder: Path) -> float:
    """The run time of the engine run in ``folder``: its epochs' seconds, over resumes."""
    log = folder / "log.jsonl"
    return sum(r.get("seconds", 0.0) for r in read_jsonl(log)) if log.is_file() else 0.0


def run_cell(config: ProtocolConfig, variant: Variant, seed: int, teacher: str | None) -> dict:
    """Search, derive and train grid cell (``variant``, ``seed``); returns (and writes as
    ``cell.json``) its record. A finished stage is reused, an unfinished one resumed."""
    from ..search import run_search
    from ..train import train

    folder = config.cell_dir(variant, seed)
    done = folder / "cell.json"
    if done.is_file():
        return load_json(done)
    search = config.search_config(variant, seed, teacher)
    searched = folder / "search" / "result.json"
    genotype = Genotype.load(searched.parent / "genotype.json") if searched.is_file() else None
    if genotype is None:
        genotype = run_search(search)
    found = load_json(searched)
    trained = folder / "train" / "result.json"
    final = (
        load_json(trained)
        if trained.is_file()
        else train(config.train_config(genotype, seed, folder / "train"))
    )
    calibration, total = calibration_ops(genotype)
    record = {
        "variant": variant.key,
        "label": variant.label,
        "seed": seed,
        "top1": final["top1"],
        "top5": final["top5"],
        "params": final["params"],
        "macs": final["macs"],
        "calibration_ops": calibration,
        "ops": total,
        "search_s": _seconds(folder / "search"),
        "train_s": _seconds(folder / "train"),
        "valid_top1": found.get("valid_top1"),
        "margin": found["margins"]["mean"],
        "genotype": genotype.to_dict(),
    }
    write_json(record, done)
    return record


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _cell_in_worker(
    config: dict[str, Any], variant: dict[str, Any], seed: int, teacher: str | None, threads: int
) -> dict:
    """:func:`run_cell` in a pool process, its output into the cell's ``cell.log``."""
    torch.set_num_threads(threads)
    protocol, chosen = ProtocolConfig.from_dict(config), Variant.from_dict(variant)
    folder = protocol.cell_dir(chosen, seed)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "cell.log", "a") as log:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            return run_cell(protocol, chosen, seed, teacher)


def _run_cells(
    config: ProtocolConfig, cells: list[tuple[Variant, int]], teacher: str | None
) -> Iterator[dict]:
    """The records of ``cells``, as they finish (in ``config.workers()`` processes)."""
    jobs = config.workers()
    if jobs == 1:
        for variant, seed in cells:
            yield run_cell(config, variant, seed, teacher)
        return
    threads = config.threads or max(1, (os.cpu_count() or 1) // jobs)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=spawn) as pool:
        futures = [
            pool.submit(
                _cell_in_worker, config.to_dict(), variant.to_dict(), seed, teacher, threads
            )
            for variant, seed in cells
        ]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _teacher(config: ProtocolConfig, variants: list[Variant]) -> str | None:
    """The teacher file of the protocol: trained (or reused, or resumed) once into
    ``out/teacher`` before any cell runs (:data:`TEACHER_QUICK` on the digits)."""
    if not any(v.uses_teacher for v in variants):
        return None
    if config.teacher != "auto":
        return config.teacher
    from ..teacher import TeacherConfig, train_teacher

    folder = Path(config.out).expanduser() / "teacher"
    if (folder / "teacher.pt").is_file():
        return str(folder / "teacher.pt")
    resume = (folder / "checkpoint.pt").is_file()
    teacher = TeacherConfig(
        **TEACHER_QUICK,
        image_size=config.image_size,
        seed=config.seed,
        out=str(folder),
        resume=resume,
        overwrite=not resume,
        device=config.device,
        progress=config.progress,
        quick=True,
    )
    return train_teacher(teacher)["path"]


def _open(config: ProtocolConfig, run: RunDir) -> list[dict]:
    """The records saved in the protocol's checkpoint (checked against ``config`` on
    resume); a fresh protocol writes its checkpoint first."""
    if not config.resume:
        _save(config, run, [])
        return []
    state = load_checkpoint(run.checkpoint, "protocol")
    differ = config_differences(state["config"], config.to_dict())
    if differ:
        raise ValueError(
            f"resume: the config differs from {run.checkpoint}'s in {'; '.join(differ)}; "
            "resume with the checkpoint's settings or start a new protocol into another folder"
        )
    return list(state["records"])


def _save(config: ProtocolConfig, run: RunDir, records: list[dict]) -> None:
    save_checkpoint(
        run.checkpoint,
        "protocol",
        {"records": records},
        config=config.to_dict(),
        epoch=len(records),
    )


def run_protocol(config: ProtocolConfig) -> dict[str, Any]:
    """Run every grid cell of ``config`` not done yet and write the report; returns the
    report's data (``variants``: one summary row per variant, ``runs``: one record per
    cell). Raises like the pipelines (a non-finite loss, a locked folder) and keeps what
    finished."""
    from .report import write_report

    config = config.resolved()
    variants = config.resolved_variants()
    grid = [(v, s) for v in variants for s in config.seeds]
    with RunDir(config.out, resume=config.resume, overwrite=config.overwrite) as run:
        records = _open(config, run)
        finished = {(r["variant"], r["seed"]) for r in records}
        pending = [(v, s) for v, s in grid if (v.key, s) not in finished]
        teacher = _teacher(config, variants) if pending else None
        where = "quick, on the bundled digits" if config.quick else "full settings"
        echo(
            f"protocol {config.protocol}: {len(variants)} variant(s) x {len(config.seeds)} "
            f"seed(s) ({where}); {len(pending)} of {len(grid)} grid cells to run, "
            f"{config.workers()} at a time, into {run.path}"
        )
        for record in _run_cells(config, pending, teacher):
            records.append(record)
            _save(config, run, records)
            echo(
                f"[{len(records)}/{len(grid)}] {record['label']} seed {record['seed']}: test "
                f"top-1 {record['top1']:.2f}%, {record['calibration_ops']}/{record['ops']} "
                f"self-calibration ops, search {record['search_s']:.0f} s, train "
                f"{record['train_s']:.0f} s"
            )
        order = {(v.key, s): i for i, (v, s) in enumerate(grid)}
        records.sort(key=lambda r: order[(r["variant"], r["seed"])])
        return write_report(config, variants, records, run.path)
