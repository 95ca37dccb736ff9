"""A protocol's report: mean +- std over seeds per variant, the single runs, and pictures.

:func:`write_report` writes into the protocol folder ``results.json`` (the config, the
data set, one summary row per variant, one record per run), ``report.md`` (both tables),
``summary.png`` (test accuracy per variant with the seeds as points; the share of
self-calibration ops in the found cells) and ``arch_weights_<variant>.png`` (the
architecture weights over the search of the variant's first seed).
"""

from __future__ import annotations

import logging
import shutil
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..engine import write_json
from ..engine.checkpoint import atomic_write_text
from .variants import Variant

__all__ = [
    "summarise",
    "markdown_report",
    "plot_summary",
    "write_report",
    "data_name",
    "spread_text",
]

_logger = logging.getLogger(__name__)
_GUIDANCE = {"both": "Eqs. 12 + 13", "weights": "Eq. 12 only", "none": "none"}


def _spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def spread_text(
    mean: float, std: float, runs: int, scale: float = 1.0, digits: int = 2, unit: str = ""
) -> str:
    """``"mean ± std"`` of a summary row, or ``"mean (1 run)"``: one seed shows no spread."""
    if runs < 2:
        return f"{scale * mean:.{digits}f}{unit} (1 run)"
    return f"{scale * mean:.{digits}f}{unit} ± {scale * std:.{digits}f}{unit}"


def summarise(variants: Sequence[Variant], records: Sequence[dict]) -> list[dict[str, Any]]:
    """One row per variant with runs: test top-1 mean/std (%), self-calibration share,
    parameters, MACs and search/train seconds (means), and each seed's top-1."""
    rows = []
    for variant in variants:
        runs = [r for r in records if r["variant"] == variant.key]
        if not runs:
            continue
        top1, top1_std = _spread([r["top1"] for r in runs])
        share, share_std = _spread([r["calibration_ops"] / r["ops"] for r in runs])
        rows.append(
            {
                **variant.to_dict(),
                "runs": len(runs),
                "top1_mean": top1,
                "top1_std": top1_std,
                "calibration_share_mean": share,
                "calibration_share_std": share_std,
                "params_mean": statistics.fmean(r["params"] for r in runs),
                "macs_mean": statistics.fmean(r["macs"] for r in runs),
                "search_s_mean": statistics.fmean(r["search_s"] for r in runs),
                "train_s_mean": statistics.fmean(r["train_s"] for r in runs),
                "top1_by_seed": {str(r["seed"]): r["top1"] for r in runs},
            }
        )
    return rows


def data_name(data_dir: str | None, image_size: int | None) -> str:
    """The data set in words, saying plainly when it is the bundled digits."""
    if data_dir is None:
        size = image_size or 32
        return (
            f"the bundled 8x8 digits of scikit-learn at {size}x{size} (not CIFAR: these "
            "numbers cannot be compared with the paper's CIFAR-10/100 figures)"
        )
    return f"the images of {data_dir}"


def markdown_report(
    title: str, data: str, rows: Sequence[dict], records: Sequence[dict], recipe: str
) -> str:
    """The summary table (mean +- std over seeds) and the single runs, in Markdown."""
    lines = [
        f"# {title}",
        "",
        f"Data: {data}. {recipe}",
        "",
        "| Variant | Space | Attention transfer | Order | Runs | Test top-1 (%) | "
        "Self-calibration ops (share) | Params (M) | MACs (M) | Search (s) | Train (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        order = "second" if row["second_order"] else "first"
        pc = f", PC K={row['partial_channels']}" if row["partial_channels"] > 1 else ""
        n = row["runs"]
        top1 = spread_text(row["top1_mean"], row["top1_std"], n)
        share = spread_text(
            row["calibration_share_mean"], row["calibration_share_std"], n, 100, 0, "%"
        )
        lines.append(
            f"| {row['label']} | {row['space']} | {_GUIDANCE[row['guidance']]} | {order}{pc} | "
            f"{n} | {top1} | {share} | "
            f"{row['params_mean'] / 1e6:.3f} | "
            f"{row['macs_mean'] / 1e6:.2f} | {row['search_s_mean']:.0f} | "
            f"{row['train_s_mean']:.0f} |"
        )
    lines += [
        "",
        "Mean ± sample standard deviation over the seeds. Single runs:",
        "",
        "| Variant | Seed | Test top-1 (%) | Self-calibration ops | Supernet valid top-1 (%) | "
        "Margin | Params (M) | MACs (M) | Search (s) | Train (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        valid = "-" if r.get("valid_top1") is None else f"{r['valid_top1']:.1f}"
        lines.append(
            f"| {r['label']} | {r['seed']} | {r['top1']:.2f} | {r['calibration_ops']}/{r['ops']} "
            f"| {valid} | {r['margin']:.3f} | {r['params'] / 1e6:.3f} | {r['macs'] / 1e6:.2f} | "
            f"{r['search_s']:.0f} | {r['train_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot_summary(
    rows: Sequence[dict], records: Sequence[dict], path: str | Path, title: str
) -> Path:
    """Two panels: test top-1 per variant (seeds as points, mean +- std as a bar), and the
    share of self-calibration ops in the found cells (same layout)."""
    from ..plot import _figure, _output_path, _save

    path = _output_path(path)
    fig = _figure((max(6.0, 1.9 * len(rows) + 2.5), 3.4))
    panels = (
        ("top1", "test top-1 (%)", 1.0),
        ("calibration", "self-calibration ops (%)", 100.0),
    )
    for i, (key, label, scale) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        for x, row in enumerate(rows):
            runs = [r for r in records if r["variant"] == row["key"]]
            values = [
                scale * (r["top1"] if key == "top1" else r["calibration_ops"] / r["ops"])
                for r in runs
            ]
            mean, std = _spread(values)
            ax.bar(x, mean, width=0.6, color="#c6dbef", edgecolor="#1f5fa8", zorder=1)
            ax.errorbar(x, mean, yerr=std, color="#1f5fa8", capsize=4, zorder=2)
            offsets = [0.18 * (j - (len(values) - 1) / 2) for j in range(len(values))]
            ax.scatter([x + o for o in offsets], values, color="#c0392b", s=14, zorder=3)
        ax.set_xticks(range(len(rows)), [row["label"] for row in rows], fontsize=8)
        ax.set_ylabel(label)
        if key == "top1":
            low = min(scale * r["top1"] for r in records)
            ax.set_ylim(max(0.0, low - 5.0), 100.0)
        else:
            ax.set_ylim(0.0, 100.0)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(wspace=0.3)
    return _save(fig, path)


def write_report(
    config: Any, variants: Sequence[Variant], records: Sequence[dict], folder: Path
) -> dict[str, Any]:
    """Write ``results.json``, ``report.md`` and the pictures of a finished protocol into
    ``folder``; returns the ``results.json`` data."""
    rows = summarise(variants, records)
    data = data_name(config.data_dir, config.image_size)
    title = f"Protocol {config.protocol}"
    text = markdown_report(title, data, rows, records, config.recipe())
    atomic_write_text(text, folder / "report.md")
    result = {
        "config": config.to_dict(),
        "data": data,
        "variants": rows,
        "runs": list(records),
    }
    write_json(result, folder / "results.json")
    if config.plots and rows:
        try:
            plot_summary(rows, records, folder / "summary.png", f"{title}: {data.split(' (')[0]}")
        except ImportError as err:
            _logger.warning("protocol pictures not drawn: %s", err)
        for variant in variants:
            seeds = [r["seed"] for r in records if r["variant"] == variant.key]
            if not seeds:
                continue
            picture = config.cell_dir(variant, seeds[0]) / "search" / "arch_weights.png"
            if picture.is_file():
                shutil.copyfile(picture, folder / f"arch_weights_{variant.key}.png")
    return result
