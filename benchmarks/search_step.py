"""Time and peak memory of the search steps, per search space (Sec. 3.3, Eqs. 12-13).

For each space preset and the PC-DARTS option (``SearchNetwork(partial_channels=4)``):
the weight step (:func:`nos_ops.search.weight_step`: forward, backward, clip, SGD), the
first-order and the second-order architecture step (:class:`nos_ops.search.Architect`),
at the paper's proxy size (C=16, 8 cells, batch 32, 32 x 32: the anchor) and a smaller one.
No teacher (the DARTS objective), random data.

Every (configuration, step) runs in a fresh subprocess, so its peak RSS
(``resource.getrusage``) is that step's own. Time per step: median (p10, p90) of
``--repeats`` steps after ``--warmup``; wall clock and process CPU time (the CPU time is
steadier when other work shares the machine). Ratios to DARTS are of medians from the
same run. The DARTS reference code measured on these 2-core machines (torch 2.13 CPU,
2 threads, fp32, C=16, 8 cells, batch 32) is printed beside the DARTS rows as the anchor.

    python benchmarks/search_step.py                      # both sizes, markdown
    python benchmarks/search_step.py --sizes anchor --format json --out F
    python benchmarks/search_step.py --device cuda --batch 64   # adds the 25-epoch projection
    python benchmarks/search_step.py --smoke
"""

from __future__ import annotations

import argparse
import json
import resource
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
# The DARTS reference code on these machines (torch 2.13 CPU, 2 threads, fp32, anchor size).
ANCHORS = {
    ("darts", "weight"): (4.1, 4.9),
    ("darts", "arch_first"): (3.6, None),
    ("darts", "arch_second"): (15.9, 6.5),
    ("darts pc4", "weight"): (1.7, 1.8),
}
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
        proc = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(config)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"child for {config} failed:\n{proc.stderr[-4000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["load_average"] = load
    result["cpu_busy_before"] = busy
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", choices=("none", "bf16"), default="none")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--sizes", default="anchor,small", help=f"comma list of {sorted(SIZES)}")
    p.add_argument("--batch", type=int, default=None, help="override the sizes' batch")
    p.add_argument("--configs", default=None, help="comma list of config labels")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma list of {STEPS}")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
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
    return args


def _rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    labels = {c[0] for c in CONFIGS}
    wanted = args.configs.split(",") if args.configs else [c[0] for c in CONFIGS]
    steps = args.steps.split(",")
    sizes = args.sizes.split(",")
    for name, known in (("configs", labels), ("steps", set(STEPS)), ("sizes", set(SIZES))):
        chosen = {"configs": wanted, "steps": steps, "sizes": sizes}[name]
        unknown = set(chosen) - known
        if unknown:
            raise SystemExit(f"--{name}: unknown {sorted(unknown)}; expected {sorted(known)}")
    rows = []
    for size in sizes:
        shape = dict(SIZES[size])
        if args.batch:
            shape["batch"] = args.batch
        for label, space, partial in CONFIGS:
            if label not in wanted:
                continue
            row: dict[str, Any] = {"size": size, "config": label, **shape}
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
                result = measure(config, not args.no_isolate, args.idle_wait)
                row[f"{step}_s"] = result["wall_s"]["median"]
                row[f"{step}_p10_s"] = result["wall_s"]["p10"]
                row[f"{step}_p90_s"] = result["wall_s"]["p90"]
                row[f"{step}_cpu_s"] = result["cpu_s"]["median"]
                row[f"{step}_peak_rss_gb"] = result["peak_rss_bytes"] / GB
                row[f"{step}_rss_before_gb"] = result["rss_before_steps_bytes"] / GB
                if "peak_cuda_bytes" in result:
                    row[f"{step}_peak_cuda_gb"] = result["peak_cuda_bytes"] / GB
                row[f"{step}_load_average"] = result["load_average"]
                row[f"{step}_cpu_busy_before"] = result["cpu_busy_before"]
                row["threads"] = result["threads"]
            rows.append(row)
    _derive(rows, steps)
    return rows


def _derive(rows: list[dict[str, Any]], steps: Sequence[str]) -> None:
    """Ratios to DARTS and to the weight step, the anchors, the 25-epoch projection."""
    darts = {r["size"]: r for r in rows if r["config"] == "darts"}
    for row in rows:
        base = darts.get(row["size"])
        for step in steps:
            if base is not None:
                row[f"{step}_vs_darts"] = row[f"{step}_s"] / base[f"{step}_s"]
                row[f"{step}_cpu_vs_darts"] = row[f"{step}_cpu_s"] / base[f"{step}_cpu_s"]
                row[f"{step}_rss_vs_darts"] = (
                    row[f"{step}_peak_rss_gb"] / base[f"{step}_peak_rss_gb"]
                )
            if step != "weight" and "weight_s" in row:
                row[f"{step}_vs_weight"] = row[f"{step}_s"] / row["weight_s"]
            anchor = ANCHORS.get((row["config"], step))
            if anchor and row["size"] == "anchor":
                row[f"{step}_anchor_s"], row[f"{step}_anchor_rss_gb"] = anchor
                row[f"{step}_vs_anchor"] = row[f"{step}_s"] / anchor[0]
                if anchor[1] is not None:
                    row[f"{step}_rss_vs_anchor"] = row[f"{step}_peak_rss_gb"] / anchor[1]
        arch = "arch_second" if "arch_second_s" in row else "arch_first"
        if "weight_s" in row and f"{arch}_s" in row:
            steps_per_epoch = -(-SEARCH_TRAIN // row["batch"])
            total = EPOCHS * steps_per_epoch * (row["weight_s"] + row[f"{arch}_s"])
            row["projected_search_h"] = total / 3600
            row["projected_arch_step"] = arch


def _display(rows: list[dict[str, Any]], steps: Sequence[str]) -> tuple[list, list]:
    columns = [("size", "size"), ("config", "space")]
    shown = []
    for row in rows:
        r = dict(row)
        for step in steps:
            r[f"{step}_t"] = (
                f"{row[f'{step}_s']:.3g} ({row[f'{step}_p10_s']:.3g}-{row[f'{step}_p90_s']:.3g})"
            )
            if f"{step}_anchor_s" in row:
                r[f"{step}_anchor"] = f"{row[f'{step}_anchor_s']} s"
                if row.get(f"{step}_anchor_rss_gb"):
                    r[f"{step}_anchor"] += f", {row[f'{step}_anchor_rss_gb']} GB"
        shown.append(r)
    for step in steps:
        columns += [
            (f"{step}_t", f"{step} s (p10-p90)"),
            (f"{step}_cpu_s", f"{step} CPU s"),
            (f"{step}_peak_rss_gb", f"{step} peak RSS GB"),
            (f"{step}_vs_darts", f"{step} / DARTS"),
            (f"{step}_rss_vs_darts", f"{step} RSS / DARTS"),
        ]
        if step != "weight":
            columns.append((f"{step}_vs_weight", f"{step} / weight step"))
        columns.append((f"{step}_anchor", f"{step} anchor (DARTS ref.)"))
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
        isolated=not args.no_isolate,
        smoke=args.smoke,
        sizes={s: SIZES[s] for s in args.sizes.split(",") if s in SIZES},
        teacher=None,
        anchors={f"{c} {s}": {"s": t, "peak_rss_gb": m} for (c, s), (t, m) in ANCHORS.items()},
    )
    rows = _rows(args)
    meta["load_average_end"] = load_average()
    steps = args.steps.split(",")
    shown, columns = _display(rows, steps)
    dtype = "float32" if args.amp == "none" else f"autocast {args.amp}"
    title = (
        f"Search steps: {meta['device_name']}, {dtype}, {meta['threads']} threads, "
        f"torch {torch.__version__}, channels_last={args.channels_last}"
    )
    notes = [
        "Wall-clock medians (p10-p90) per step; CPU = process CPU time; peak RSS of a fresh "
        "process per step (includes the ~0.3-0.4 GB of the torch runtime)"
        + ("" if not args.no_isolate else " - here NOT isolated: RSS is cumulative"),
        "Anchor: the DARTS reference code on these 2-core machines (torch 2.13 CPU, 2 threads, "
        "fp32, C=16, 8 cells, batch 32); it applies to the darts rows at the anchor size.",
        f"25-epoch search: {EPOCHS} epochs x ceil({SEARCH_TRAIN} / batch) steps x "
        "(weight step + second-order arch step) at the measured times.",
    ]
    publish(args, title, meta, rows, shown, columns, notes)
    return {"meta": meta, "rows": rows}


if __name__ == "__main__":
    main()
