"""Figures of the committed benchmark results, for docs/benchmarks.md.

Reads ``benchmarks/results/*.json`` and writes PNGs (matplotlib, no display):

    python benchmarks/plots.py --results benchmarks/results --out docs/img
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OPS = (
    "dynamic_conv_3x3",
    "dynamic_conv_5x5",
    "spatial_attention",
    "channel_attention",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "max_pool_3x3",
    "avg_pool_3x3",
)
STEPS = (("weight", "weight step"), ("arch_first", "1st-order arch"), ("arch_second", "2nd-order"))


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _shape(row: dict[str, Any]) -> str:
    return f"{row['channels']}x{row['size']}x{row['size']}"


def _save(fig: Any, out: Path) -> None:
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def ops_figure(reports: Sequence[tuple[str, dict[str, Any]]], out: Path) -> None:
    """Forward+backward latency (median, p10-p90) of some ops across the shapes, with the
    static depthwise conv the dynamic convs are compared with; one panel per report."""
    fig, axes = plt.subplots(1, len(reports), figsize=(6.5 * len(reports), 4.8), squeeze=False)
    for ax, (label, report) in zip(axes[0], reports):
        rows = report["rows"]
        shapes = list(dict.fromkeys(_shape(r) for r in rows))
        for name in OPS:
            series = [r for r in rows if r["name"] == name]
            if not series:
                continue
            y = [r["fwd_bwd_ms"] for r in series]
            err = [
                [r["fwd_bwd_ms"] - r["fwd_bwd_p10_ms"] for r in series],
                [r["fwd_bwd_p90_ms"] - r["fwd_bwd_ms"] for r in series],
            ]
            ax.errorbar([_shape(r) for r in series], y, yerr=err, marker="o", capsize=3, label=name)
        for name, style in (("dynamic_conv_3x3", ":"), ("dynamic_conv_5x5", "--")):
            series = [r for r in rows if r["name"] == name and r.get("static_fwd_bwd_ms")]
            if series:
                ax.plot(
                    [_shape(r) for r in series],
                    [r["static_fwd_bwd_ms"] for r in series],
                    "k" + style,
                    label=series[0]["static"] + " (static)",
                )
        meta = report["meta"]
        ax.set_yscale("log")
        ax.set_xticks(range(len(shapes)), shapes)
        ax.set_xlabel(f"C x H x W (batch {meta['batch']})")
        ax.set_ylabel("forward + backward, ms (median, p10-p90)")
        ax.set_title(f"{label}\n{meta['device_name']}, {meta['threads']} threads, fp32", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    _save(fig, out)


def search_figure(report: dict[str, Any], out: Path) -> None:
    """Time per step and peak RSS per space at one size, with the DARTS anchors."""
    rows = report["rows"]
    labels = [r["config"] for r in rows]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.8 / len(STEPS)
    for i, (step, name) in enumerate(STEPS):
        xs = [j + (i - 1) * width for j in range(len(rows))]
        if all(f"{step}_s" in r for r in rows):
            ax_t.bar(xs, [r[f"{step}_s"] for r in rows], width, label=name)
            ax_m.bar(xs, [r[f"{step}_peak_rss_gb"] for r in rows], width, label=name)
        for x, r in zip(xs, rows):
            span = [x - width / 2, x + width / 2]
            if f"{step}_anchor_s" in r:
                ax_t.plot(span, [r[f"{step}_anchor_s"]] * 2, "k-", lw=2)
            if r.get(f"{step}_anchor_rss_gb"):
                ax_m.plot(span, [r[f"{step}_anchor_rss_gb"]] * 2, "k-", lw=2)
    meta = report["meta"]
    size = next(iter(meta["sizes"].values()))
    for ax, ylabel in ((ax_t, "seconds per step (median)"), (ax_m, "peak RSS, GB")):
        ax.set_xticks(range(len(rows)), labels, rotation=20)
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", alpha=0.3)
    ax_t.legend(fontsize=8, title="black bars: DARTS reference code", title_fontsize=8)
    fig.suptitle(
        f"Search steps, C={size['channels']}, {size['layers']} cells, batch {size['batch']}, "
        f"{size['image']}x{size['image']}: {meta['device_name']}, {meta['threads']} threads, "
        f"fp32, torch {meta['torch']}",
        fontsize=9,
    )
    _save(fig, out)


def export_figure(report: dict[str, Any], out: Path) -> None:
    """Export time per genotype (stacked: export, save, load + run) for each form of the
    per-sample conv, with DARTS_V2's total as a line."""
    rows = report["rows"]
    convs = list(dict.fromkeys(r["conv"] for r in rows))
    names = list(dict.fromkeys(r["genotype"] for r in rows))
    fig, ax = plt.subplots(figsize=(8, 4.6))
    width = 0.8 / len(convs)
    stages = (("trace_s", "export"), ("save_s", "save"), ("load_run_s", "load + run"))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, conv in enumerate(convs):
        by_name = {r["genotype"]: r for r in rows if r["conv"] == conv}
        xs = [j + (i - (len(convs) - 1) / 2) * width for j in range(len(names))]
        bottom = [0.0] * len(names)
        for (key, stage), colour in zip(stages, colours):
            heights = [by_name[n][key] for n in names]
            ax.bar(
                xs,
                heights,
                width,
                bottom=bottom,
                color=colour,
                alpha=1.0 if i == 0 else 0.45,
                edgecolor="k",
                label=f"{stage} (conv={conv})",
            )
            bottom = [b + h for b, h in zip(bottom, heights)]
    darts = next(r["total_s"] for r in rows if r["genotype"] == "DARTS_V2")
    ax.axhline(darts, color="k", ls="--", lw=1, label="DARTS_V2 total")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("seconds")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    meta = report["meta"]
    ax.set_title(
        f"Export of evaluation networks ({meta['channels']} channels, {meta['layers']} cells, "
        f"dynamic batch): {meta['device_name']}, {meta['threads']} threads, fp32, "
        f"torch {meta['torch']}",
        fontsize=8,
    )
    _save(fig, out)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--results", default="benchmarks/results")
    p.add_argument("--out", default="docs/img")
    args = p.parse_args(argv)
    results, out = Path(args.results), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reports = [
        (label, _load(results / name))
        for label, name in (
            ("default allocator", "ops_cpu.json"),
            ("glibc keeps freed memory", "ops_cpu_keep_freed_memory.json"),
        )
        if (results / name).exists()
    ]
    if reports:
        ops_figure(reports, out / "bench_ops_latency.png")
    for size in ("anchor", "small"):
        path = results / f"search_step_cpu_{size}.json"
        if path.exists():
            search_figure(_load(path), out / f"bench_search_steps_{size}.png")
    for batch in (32, 64):
        path = results / f"search_step_vs_reference_b{batch}.json"
        if path.exists():
            search_figure(_load(path), out / f"bench_search_steps_vs_reference_b{batch}.png")
    if (results / "export_time.json").exists():
        export_figure(_load(results / "export_time.json"), out / "bench_export_time.png")


if __name__ == "__main__":
    main()
