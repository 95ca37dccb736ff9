"""Time and peak memory of the search steps, per search space (Sec. 3.3, Eqs. 12-13).

For each space preset and the PC-DARTS option (``SearchNetwork(partial_channels=4)``):
the weight step (:func:`nos_ops.search.weight_step`: forward, backward, clip, SGD), the
first-order and the second-order architecture step (:class:`nos_ops.search.Architect`),
at the paper's proxy size (C=16, 8 cells, batch 32, 32 x 32: the anchor) and a smaller one.
No teacher (the DARTS objective), random data.

Every (configuration, step) runs in a fresh subprocess, so its peak RSS
(``resource.getrusage``) is that step's own. Time per step: median and range of
``--repeats`` steps after ``--warmup``; wall clock and process CPU time (the CPU time is
steadier when other work shares the machine).

``--reference DIR`` (the DARTS reference code, ``../shared/anchors/darts-reference``) adds its
own ``step.py`` as one more configuration at the anchor size, in a fresh process like the
others, and ``--rounds N`` repeats the whole set N times, in alternating order: the
machine's speed drifts by tens of percent within minutes, so every ratio (to DARTS, to the
reference) is the median over the rounds of the ratio measured within one round.

    python benchmarks/search_step.py                      # both sizes, markdown
    python benchmarks/search_step.py --sizes anchor --batch 32,64 --configs nos,darts \
        --reference ../shared/anchors/darts-reference --rounds 3
    python benchmarks/search_step.py --device cuda --batch 64   # adds the 25-epoch projection
    python benchmarks/search_step.py --smoke
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    add_output_args,
    load_average,
    metadata,
    publish,
    quantiles,
    wait_idle,
)

from nos_ops import SearchNetwork  # noqa: E402
from nos_ops.search import Architect, weight_step  # noqa: E402

SIZES = {
    "anchor": {"channels": 16, "layers": 8, "batch": 32, "image": 32},
    "small": {"channels": 8, "layers": 5, "batch": 16, "image": 16},
    "smoke": {"channels": 4, "layers": 3, "batch": 2, "image": 8},
}
# (label, space, partial_channels)
CONFIGS = (
    ("nos", "nos", 1),
    ("darts", "darts", 1),
    ("feature", "feature", 1),
    ("feature+attention", "feature+attention", 1),
    ("feature+dynamic", "feature+dynamic", 1),
    ("darts pc4", "darts", 4),
    ("nos pc4", "nos", 4),
)
STEPS = ("weight", "arch_first", "arch_second")
# The DARTS reference code's step.py: its mode per step. It runs C=16, 8 cells, 32 x 32 (the
# anchor size) at 2 threads; only the batch is a parameter.
REFERENCE = "darts reference"
REFERENCE_MODES = {"weight": "weight", "arch_first": "arch1", "arch_second": "arch2"}
REFERENCE_THREADS = 2
EPOCHS, SEARCH_TRAIN = 25, 25000  # the paper's search: 25 epochs over a 25k-image split
GB = 1e9


def run_step(config: dict[str, Any]) -> dict[str, Any]:
    """Build the network and time ``config["step"]``; runs inside the child process."""
    torch.manual_seed(0)
    if config["threads"]:
        torch.set_num_threads(config["threads"])
    device = torch.device(config["device"])
    net = SearchNetwork(
        config["channels"],
        10,
        config["layers"],
        config["space"],
        partial_channels=config["partial_channels"],
    ).to(device)
    if config["channels_last"]:
        net = net.to(memory_format=torch.channels_last)
    batch, image = config["batch"], config["image"]

    def data() -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(batch, 3, image, image, device=device)
        if config["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, torch.randint(0, 10, (batch,), device=device)

    (train_x, train_y), (val_x, val_y) = data(), data()
    optimizer = torch.optim.SGD(net.weight_parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    amp = {"none": None, "bf16": torch.bfloat16}[config["amp"]]
    step = config["step"]
    if step == "weight":

        def fn() -> None:
            weight_step(net, optimizer, train_x, train_y, amp_dtype=amp)

    else:
        architect = Architect(net, second_order=step == "arch_second", amp_dtype=amp)
        weight_step(net, optimizer, train_x, train_y, amp_dtype=amp)  # momentum buffers

        def fn() -> None:
            architect.step(train_x, train_y, val_x, val_y, 0.025, optimizer)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    wall, cpu = [], []
    for i in range(config["warmup"] + config["repeats"]):
        sync()
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        fn()
        sync()
        if i >= config["warmup"]:
            wall.append(time.perf_counter() - start_wall)
            cpu.append(time.process_time() - start_cpu)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = {
        "wall_s": quantiles(wall),
        "cpu_s": quantiles(cpu),
        "wall_range_s": [min(wall), max(wall)],
        "peak_rss_bytes": peak_rss,
        "rss_before_steps_bytes": baseline_rss,
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        result["peak_cuda_bytes"] = torch.cuda.max_memory_allocated(device)
    return result


def measure(config: dict[str, Any], isolate: bool, idle_wait_s: float) -> dict[str, Any]:
    """``run_step(config)`` in a fresh interpreter (``isolate``) or in this one, after
    waiting up to ``idle_wait_s`` for other work to leave the CPUs."""
    busy = wait_idle(idle_wait_s) if idle_wait_s > 0 else None
    load = load_average()
    if not isolate:
        result = run_step(config)
    else:
        result = _child([sys.executable, __file__, "--child", json.dumps(config)], config)
    result["load_average"] = load
    result["cpu_busy_before"] = busy
    return result


def measure_reference(
    directory: Path, step: str, batch: int, warmup: int, repeats: int, idle_wait_s: float
) -> dict[str, Any]:
    """The DARTS reference code's ``step.py`` for ``step`` at ``batch``, in a fresh process,
    as a :func:`measure` result (its peak RSS is that process's, like ours)."""
    busy = wait_idle(idle_wait_s) if idle_wait_s > 0 else None
    load = load_average()
    command = [sys.executable, str(directory / "step.py"), REFERENCE_MODES[step], str(batch)]
    out = _child(command + [str(repeats), str(warmup)], {"reference": step, "batch": batch})
    return {
        "wall_s": {"median": out["median_s"]},
        "cpu_s": {"median": out["median_cpu_s"]},
        "wall_range_s": [out["min_s"], out["max_s"]],
        "peak_rss_bytes": out["peak_rss_MB"] * 2**20,
        "rss_before_steps_bytes": out["rss_after_setup_MB"] * 2**20,
        "threads": out["threads"],
        "load_average": load,
        "cpu_busy_before": busy,
    }


def _child(command: list[str], what: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child for {what} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", choices=("none", "bf16"), default="none")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--sizes", default="anchor,small", help=f"comma list of {sorted(SIZES)}")
    p.add_argument("--batch", default=None, help="comma list of batches replacing the sizes'")
    p.add_argument("--configs", default=None, help="comma list of config labels")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma list of {STEPS}")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="the DARTS reference code's folder (with step.py): measured beside ours",
    )
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds of every step")
    p.add_argument("--no-isolate", action="store_true", help="no subprocess per step")
    p.add_argument(
        "--idle-wait",
        type=float,
        default=0.0,
        help="before each step, wait up to this many seconds for other work to leave the CPUs",
    )
    add_output_args(p)
    p.add_argument(
        "--smoke", action="store_true", help="a tiny network, three configs, one step, in-process"
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.warmup, args.repeats, args.no_isolate = "smoke", 0, 1, True
        args.configs = args.configs or "nos,darts,darts pc4"
    if args.rounds < 1:
        p.error(f"--rounds {args.rounds} is not valid; expected >= 1")
    if args.reference is not None:
        if not (args.reference / "step.py").is_file():
            p.error(f"--reference {args.reference}: no step.py there (the DARTS reference code)")
        if args.device != "cpu" or args.amp != "none" or args.channels_last:
            p.error("--reference runs the reference on the CPU in fp32, NCHW: compare likewise")
        if args.threads not in (None, REFERENCE_THREADS):
            p.error(f"--reference runs at {REFERENCE_THREADS} threads; pass --threads 2 or none")
        if args.no_isolate:
            p.error("--reference needs a fresh process per step (drop --no-isolate)")
        args.threads = REFERENCE_THREADS
    return args


def _jobs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One job per (size, batch, configuration, step), the reference's included."""
    labels = {c[0] for c in CONFIGS}
    wanted = args.configs.split(",") if args.configs else [c[0] for c in CONFIGS]
    steps = args.steps.split(",")
    sizes = args.sizes.split(",")
    for name, known in (("configs", labels), ("steps", set(STEPS)), ("sizes", set(SIZES))):
        chosen = {"configs": wanted, "steps": steps, "sizes": sizes}[name]
        unknown = set(chosen) - known
        if unknown:
            raise SystemExit(f"--{name}: unknown {sorted(unknown)}; expected {sorted(known)}")
    batches = [int(b) for b in str(args.batch).split(",")] if args.batch else [None]
    jobs = []
    for size in sizes:
        for batch in batches:
            shape = dict(SIZES[size], **({"batch": batch} if batch else {}))
            configs = [c for c in CONFIGS if c[0] in wanted]
            if args.reference is not None and size == "anchor":
                configs.insert(0, (REFERENCE, None, None))
            for label, space, partial in configs:
                for step in steps:
                    config = {
                        **shape,
                        "space": space,
                        "partial_channels": partial,
                        "step": step,
                        "device": args.device,
                        "amp": args.amp,
                        "channels_last": args.channels_last,
                        "threads": args.threads,
                        "warmup": args.warmup,
                        "repeats": args.repeats,
                    }
                    jobs.append({"size": size, "config": label, "run": config})
    return jobs


def _run_job(job: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    config = job["run"]
    if job["config"] == REFERENCE:
        return measure_reference(
            args.reference,
            config["step"],
            config["batch"],
            config["warmup"],
            config["repeats"],
            args.idle_wait,
        )
    return measure(config, not args.no_isolate, args.idle_wait)


def _rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every job once per round (odd rounds in reverse order), then one row per
    (size, batch, configuration) with medians over the rounds and per-round ratios."""
    jobs = _jobs(args)
    rounds = args.rounds
    results: list[list[dict[str, Any]]] = [[] for _ in jobs]
    for r in range(rounds):
        order = range(len(jobs)) if r % 2 == 0 else reversed(range(len(jobs)))
        for i in order:
            results[i].append(_run_job(jobs[i], args))
    rows: dict[tuple, dict[str, Any]] = {}
    for job, runs in zip(jobs, results):
        config, step = job["run"], job["run"]["step"]
        key = (job["size"], config["batch"], job["config"])
        row = rows.setdefault(
            key,
            {
                "size": job["size"],
                "config": job["config"],
                **{k: config[k] for k in ("channels", "layers", "batch", "image")},
                "rounds": rounds,
            },
        )
        row[f"{step}_round_s"] = [run["wall_s"]["median"] for run in runs]
        row[f"{step}_round_cpu_s"] = [run["cpu_s"]["median"] for run in runs]
        row[f"{step}_s"] = statistics.median(row[f"{step}_round_s"])
        row[f"{step}_min_s"] = min(run["wall_range_s"][0] for run in runs)
        row[f"{step}_max_s"] = max(run["wall_range_s"][1] for run in runs)
        row[f"{step}_cpu_s"] = statistics.median(row[f"{step}_round_cpu_s"])
        row[f"{step}_peak_rss_gb"] = max(run["peak_rss_bytes"] for run in runs) / GB
        row[f"{step}_rss_before_gb"] = runs[0]["rss_before_steps_bytes"] / GB
        if "peak_cuda_bytes" in runs[0]:
            row[f"{step}_peak_cuda_gb"] = max(run["peak_cuda_bytes"] for run in runs) / GB
        row[f"{step}_load_average"] = [run["load_average"] for run in runs]
        row[f"{step}_cpu_busy_before"] = [run["cpu_busy_before"] for run in runs]
        row["threads"] = runs[0]["threads"]
    _derive(list(rows.values()), args.steps.split(","))
    return list(rows.values())


def _derive(rows: list[dict[str, Any]], steps: Sequence[str]) -> None:
    """Ratios to DARTS and to the reference (medians of per-round ratios), to the weight
    step, and the 25-epoch projection."""
    bases = {
        name: {(r["size"], r["batch"]): r for r in rows if r["config"] == config}
        for name, config in (("darts", "darts"), ("reference", REFERENCE))
    }
    for row in rows:
        for step in steps:
            for name, base_rows in bases.items():
                base = base_rows.get((row["size"], row["batch"]))
                if base is None or f"{step}_round_s" not in base:
                    continue
                for clock in ("", "cpu_"):
                    pairs = zip(row[f"{step}_round_{clock}s"], base[f"{step}_round_{clock}s"])
                    ratios = [ours / theirs for ours, theirs in pairs]
                    row[f"{step}_{clock}vs_{name}"] = statistics.median(ratios)
                row[f"{step}_rss_vs_{name}"] = (
                    row[f"{step}_peak_rss_gb"] / base[f"{step}_peak_rss_gb"]
                )
                if name == "reference":
                    row[f"{step}_anchor_s"] = base[f"{step}_s"]
                    row[f"{step}_anchor_rss_gb"] = base[f"{step}_peak_rss_gb"]
            if step != "weight" and "weight_s" in row:
                row[f"{step}_vs_weight"] = row[f"{step}_s"] / row["weight_s"]
        arch = "arch_second" if "arch_second_s" in row else "arch_first"
        if "weight_s" in row and f"{arch}_s" in row:
            steps_per_epoch = -(-SEARCH_TRAIN // row["batch"])
            total = EPOCHS * steps_per_epoch * (row["weight_s"] + row[f"{arch}_s"])
            row["projected_search_h"] = total / 3600
            row["projected_arch_step"] = arch


def _display(
    rows: list[dict[str, Any]], steps: Sequence[str], reference: bool
) -> tuple[list, list]:
    columns = [("size", "size"), ("batch", "batch"), ("config", "space")]
    shown = []
    for row in rows:
        r = dict(row)
        for step in steps:
            r[f"{step}_t"] = (
                f"{row[f'{step}_s']:.3g} ({row[f'{step}_min_s']:.3g}-{row[f'{step}_max_s']:.3g})"
            )
        shown.append(r)
    for step in steps:
        columns += [
            (f"{step}_t", f"{step} s (min-max)"),
            (f"{step}_cpu_s", f"{step} CPU s"),
            (f"{step}_peak_rss_gb", f"{step} peak RSS GB"),
            (f"{step}_vs_darts", f"{step} / DARTS"),
        ]
        if reference:
            columns += [
                (f"{step}_vs_reference", f"{step} / reference"),
                (f"{step}_rss_vs_reference", f"{step} RSS / reference"),
            ]
        else:
            columns.append((f"{step}_rss_vs_darts", f"{step} RSS / DARTS"))
        if step != "weight":
            columns.append((f"{step}_vs_weight", f"{step} / weight step"))
    columns.append(("projected_search_h", "25-epoch search h (projected)"))
    return shown, columns


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(run_step(json.loads(args.child))))
        return {}
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available on this machine")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    meta = metadata(
        device,
        benchmark="search_step",
        amp=args.amp,
        channels_last=args.channels_last,
        warmup=args.warmup,
        repeats=args.repeats,
        rounds=args.rounds,
        isolated=not args.no_isolate,
        smoke=args.smoke,
        sizes={s: SIZES[s] for s in args.sizes.split(",") if s in SIZES},
        teacher=None,
        reference=None if args.reference is None else str(args.reference.resolve()),
    )
    rows = _rows(args)
    meta["load_average_end"] = load_average()
    steps = args.steps.split(",")
    shown, columns = _display(rows, steps, args.reference is not None)
    dtype = "float32" if args.amp == "none" else f"autocast {args.amp}"
    title = (
        f"Search steps: {meta['device_name']}, {dtype}, {meta['threads']} threads, "
        f"torch {torch.__version__}, channels_last={args.channels_last}"
    )
    notes = [
        f"Wall-clock median of the {args.rounds} round median(s) of {args.repeats} steps after "
        f"{args.warmup} warm-up (min-max over all steps); CPU = process CPU time; peak RSS of a "
        "fresh process per step (includes the ~0.3-0.4 GB of the torch runtime)"
        + ("" if not args.no_isolate else " - here NOT isolated: RSS is cumulative"),
        "Ratios: the median over rounds of the ratio within one round (rounds interleaved, "
        "odd rounds in reverse order).",
        f"25-epoch search: {EPOCHS} epochs x ceil({SEARCH_TRAIN} / batch) steps x "
        "(weight step + second-order arch step) at the measured times.",
    ]
    if args.reference is not None:
        notes.insert(
            1,
            f"{REFERENCE}: the DARTS reference search code (quark0/darts, CPU shims) run by its "
            f"own step.py in a fresh process, {REFERENCE_THREADS} threads, at the anchor size.",
        )
    publish(args, title, meta, rows, shown, columns, notes)
    return {"meta": meta, "rows": rows}


if __name__ == "__main__":
    main()
