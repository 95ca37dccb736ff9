"""The ResNet self-calibration study (Table 1) over several seeds: mean and spread per op.

Runs ``nos_ops.study.run_study`` once per seed (each its own run folder, resumable) and
reports, per op, the test top-1 error of the last epoch as mean +- sample standard
deviation over the seeds, beside each seed's value.

    # the quick study on the bundled digits (not CIFAR), three seeds
    python benchmarks/study_seeds.py --seeds 0 1 2 --format json \\
        --out benchmarks/results/study_seeds_digits.json \\
        --md-out benchmarks/results/study_seeds_digits.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_output_args, metadata, publish  # noqa: E402

from nos_ops.study import StudyConfig, run_study  # noqa: E402


def aggregate(results: Sequence[dict[str, Any]], seeds: Sequence[int]) -> list[dict[str, Any]]:
    """One row per op: mean and standard deviation of the top-1 error over ``seeds``."""
    rows = []
    base = [result["rows"][0]["top1_err"] for result in results]
    for index, first in enumerate(results[0]["rows"]):
        errors = [result["rows"][index]["top1_err"] for result in results]
        row = {
            "op": first["op"] or "ResNet-18 baseline",
            "top1_err_mean": statistics.fmean(errors),
            "top1_err_std": statistics.stdev(errors) if len(errors) > 1 else 0.0,
            "diff_to_baseline_mean": statistics.fmean(e - b for e, b in zip(errors, base)),
            "macs": first["macs"],
            "params": first["params"],
        }
        row.update({f"seed_{seed}": error for seed, error in zip(seeds, errors)})
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--root", default="runs/study_seeds", help="one run folder per seed")
    parser.add_argument("--epochs", type=int, default=None, help="override the quick epochs")
    parser.add_argument("--max-steps-per-epoch", type=int, default=None)
    parser.add_argument("--ops", nargs="+", default=None, help="default: every op")
    parser.add_argument("--smoke", action="store_true", help="1 epoch of 2 steps, one op")
    add_output_args(parser)
    args = parser.parse_args(argv)
    extra: dict[str, Any] = {"quick": True, "progress": False}
    if args.smoke:
        extra.update(epochs=1, max_steps_per_epoch=2, ops=["spatial_attention"], width=0.125)
    for name in ("epochs", "max_steps_per_epoch", "ops"):
        if getattr(args, name) is not None:
            extra[name] = getattr(args, name)
    results = []
    for seed in args.seeds:
        out = Path(args.root) / f"seed_{seed}"
        resume = (out / "checkpoint.pt").exists()
        config = StudyConfig(seed=seed, out=str(out), resume=resume, **extra)
        results.append(run_study(config))
    rows = aggregate(results, args.seeds)
    meta = metadata(
        torch.device("cpu"),
        dtype="float32",
        seeds=args.seeds,
        study=results[0]["args"],
        data="bundled 8x8 digits (not CIFAR)",
    )
    columns = [
        ("op", "model"),
        ("top1_err_mean", "top-1 err % (mean)"),
        ("top1_err_std", "std"),
        ("diff_to_baseline_mean", "vs baseline"),
        *((f"seed_{s}", f"seed {s}") for s in args.seeds),
        ("macs", "MACs"),
        ("params", "params"),
    ]
    publish(args, "ResNet-18 self-calibration study over seeds (digits)", meta, rows, rows, columns)
    return {"meta": meta, "rows": rows}


if __name__ == "__main__":
    main()
