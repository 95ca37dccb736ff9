"""Shared plumbing of the benchmark scripts: run metadata, interleaved timing, output tables.

Not a benchmark itself. The scripts import it as ``_common`` (they run as files, with this
folder first on ``sys.path``).
"""

from __future__ import annotations

import csv
import ctypes
import datetime
import io
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from nos_ops import __version__
from nos_ops.profile import measure_latency

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("md", "json", "csv")


def git_sha() -> str:
    """The checkout's commit, with ``+dirty`` when tracked files differ from it."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: other work on the machine skews wall times."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def cpu_busy(interval: float = 1.0) -> float | None:
    """Fraction of all CPUs busy over ``interval`` seconds (/proc/stat), None if unknown.
    Sampled while this process idles, so it is the load of other work."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return idle, sum(fields)

    try:
        idle0, total0 = sample()
        time.sleep(interval)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def wait_idle(max_wait_s: float, threshold: float = 0.2) -> float | None:
    """Wait (up to ``max_wait_s``) until other work keeps at most ``threshold`` of the CPUs
    busy: two-thread torch runs 10-60x slower when another process takes a core. Returns
    the last busy fraction seen (recorded with the measurement)."""
    deadline = time.monotonic() + max_wait_s
    busy = cpu_busy()
    while busy is not None and busy > threshold and time.monotonic() < deadline:
        time.sleep(5.0)
        busy = cpu_busy()
    return busy


def metadata(device: torch.device, **extra: Any) -> dict[str, Any]:
    """What a reader needs to compare numbers across runs."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "nos_ops": __version__,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": device.type,
        "device_name": device_name(device),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_start": load_average(),
        **extra,
    }


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse (``mallopt``: no mmap for large
    blocks, no trimming), as jemalloc or tcmalloc would. Without it every large tensor of a
    microbenchmark loop is a fresh mmap whose first touch page-faults; on these VMs that is
    most of the time of small ops. Returns False where glibc is not the allocator."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mmap_threshold, trim_threshold = -3, -1  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
        return bool(libc.mallopt(mmap_threshold, 1 << 30) and libc.mallopt(trim_threshold, 1 << 31))
    except (OSError, AttributeError):
        return False


def quantiles(times: Sequence[float]) -> dict[str, float]:
    """Median, p10 and p90 of ``times`` (linear interpolation, as ``torch.quantile``)."""
    t = torch.tensor(list(times), dtype=torch.float64)
    p10, median, p90 = t.quantile(torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
    return {"median": median, "p10": p10, "p90": p90}


def interleaved_latency(
    fns: Sequence[Callable[[], Any]], warmup: int, repeats: int, device: torch.device
) -> list[dict[str, float]]:
    """Milliseconds of each of ``fns``, timed round-robin so that they share the same
    machine conditions (load from other processes drifts; a ratio of two medians taken
    minutes apart would not be side by side). Each call is timed by
    :func:`nos_ops.profile.measure_latency` (CUDA-synchronised). Returns ``quantiles``."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            bucket.append(measure_latency(fn, warmup=0, repeats=1, device=device)["median_ms"])
    return [quantiles(bucket) for bucket in times]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3g}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A GitHub table of ``rows`` with ``columns`` as (key, header) pairs."""
    lines = [
        "| " + " | ".join(header for _, header in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key)) for key, _ in columns) + " |")
    return "\n".join(lines)


def markdown_meta(meta: dict[str, Any]) -> str:
    keys = ("date", "git_sha", "device_name", "threads", "torch", "cuda", "load_average_start")
    return "; ".join(f"{k}: {meta.get(k)}" for k in keys if k in meta)


def render(
    fmt: str,
    title: str,
    meta: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    notes: Sequence[str] = (),
) -> str:
    """The report in ``fmt``: ``md`` (title, metadata line, table, notes), ``json``
    (``{"meta", "rows"}``) or ``csv`` (every key of the rows)."""
    if fmt == "json":
        return json.dumps({"meta": meta, "rows": list(rows)}, indent=1) + "\n"
    if fmt == "csv":
        keys: list[str] = []
        for row in rows:
            keys += [k for k in row if k not in keys]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    if fmt != "md":
        raise ValueError(f"format={fmt!r} is not valid; expected one of {FORMATS}")
    parts = [f"## {title}", "", markdown_meta(meta), "", markdown_table(rows, columns)]
    if notes:
        parts += [""] + [f"- {note}" for note in notes]
    return "\n".join(parts) + "\n"


def _write(text: str, out: str) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def publish(
    args: Any,
    title: str,
    meta: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    shown: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    notes: Sequence[str] = (),
) -> None:
    """Print the report in ``args.format`` (markdown from the ``shown`` rows, JSON and CSV
    from the raw ``rows``), write it to ``args.out``, and the markdown to ``args.md_out``."""
    text = render(args.format, title, meta, shown if args.format == "md" else rows, columns, notes)
    print(text, end="")
    if args.out:
        _write(text, args.out)
    if args.md_out:
        _write(render("md", title, meta, shown, columns, notes), args.md_out)


def add_output_args(parser: Any) -> None:
    parser.add_argument("--format", choices=FORMATS, default="md")
    parser.add_argument("--out", default=None, help="also write the report to this file")
    parser.add_argument("--md-out", default=None, help="also write the markdown table here")
