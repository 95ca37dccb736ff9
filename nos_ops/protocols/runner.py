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
import json
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

from ..engine import RunDir, echo, load_checkpoint, read_jsonl, write_json
from ..engine.checkpoint import save_checkpoint
from ..engine.config import check_resumable
from ..genotype import Genotype
from ..ops.registry import Family, op_family
from .config import TEACHER_QUICK, ProtocolConfig
from .variants import Variant

__all__ = ["calibration_ops", "run_cell", "run_protocol"]


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
    searched = folder / "search" / "result.json"
    if searched.is_file():
        genotype = Genotype.load(searched.parent / "genotype.json")
    else:
        genotype = run_search(config.search_config(variant, seed, teacher))
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
    config: ProtocolConfig, variant: Variant, seed: int, teacher: str | None, threads: int
) -> dict:
    """:func:`run_cell` in a pool process, its output into the cell's ``cell.log``."""
    torch.set_num_threads(threads)
    folder = config.cell_dir(variant, seed)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "cell.log", "a") as log:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            return run_cell(config, variant, seed, teacher)


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
            pool.submit(_cell_in_worker, config, variant, seed, teacher, threads)
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
    from ..teacher import quick_teacher

    folder = Path(config.out).expanduser() / "teacher"
    size = config.image_size or 32
    info = quick_teacher(
        folder, size, config.progress, config.device, seed=config.seed, **TEACHER_QUICK
    )
    return info["path"]


def _open(config: ProtocolConfig, run: RunDir) -> list[dict]:
    """The records saved in the protocol's checkpoint (checked against ``config`` on
    resume); a fresh protocol writes its checkpoint first."""
    if not config.resume:
        _save(config, run, [])
        return []
    state = load_checkpoint(run.checkpoint, "protocol")
    check_resumable(state["config"], config.to_dict(), run.checkpoint)
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
