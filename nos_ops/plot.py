"""Figures: derived cells (the paper's Fig. 5), architecture weights during a search, curves.

matplotlib is optional (``pip install "nos_ops[examples]"``) and imported only when a
function is called. Figures are drawn on an Agg canvas without ``pyplot``: no window, no
global backend or figure state. The file format, PNG or SVG, follows the path's suffix.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .genotype import CellGene, Genotype
from .ops.registry import Family, op_family

__all__ = [
    "draw_genotype",
    "plot_arch_weights",
    "arch_weights_figure",
    "plot_curves",
    "FAMILY_COLORS",
]

FAMILY_COLORS = {
    Family.FEATURE: "#1f5fa8",
    Family.ATTENTION: "#c0392b",
    Family.DYNAMIC: "#238b45",
}
"""Edge and label colour of each op family."""

_FORMATS = (".png", ".svg")
_FAMILY_SYMBOLS = {
    Family.FEATURE: r"feature op ($\oplus$)",
    Family.ATTENTION: r"attention op ($\odot$)",
    Family.DYNAMIC: r"dynamic conv op ($\otimes$)",
}
_FAMILY_CMAPS = {Family.FEATURE: "Blues", Family.ATTENTION: "Reds", Family.DYNAMIC: "Greens"}
_CONCAT_COLOR = "#8c8c8c"
_INCH_PER_UNIT = 0.42  # cell drawings: inches per layout unit
_FONT = 8.0  # edge label size, points
_RADIUS = 0.32  # inner node radius, layout units


def _output_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix.lower() not in _FORMATS:
        raise ValueError(
            f"path={str(path)!r} has suffix {path.suffix!r}; expected one of {', '.join(_FORMATS)}"
        )
    return path


def _figure(figsize: tuple[float, float]) -> Any:
    """A matplotlib ``Figure`` on an Agg canvas (no pyplot)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError('nos_ops.plot needs matplotlib: pip install "nos_ops[examples]"') from err
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=path.suffix[1:].lower(), dpi=150, bbox_inches="tight")
    return path


# --------------------------------------------------------------------------- genotype drawing


def _overlaps(boxes: Any, box: Any) -> Any:
    """Overlap areas of ``box`` (x0, y0, x1, y1) with each row of ``boxes`` (N x 4)."""
    import numpy as np

    dx = np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0])
    dy = np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1])
    return np.clip(dx, 0, None) * np.clip(dy, 0, None)


def _inside(points: Any, boxes: Any) -> int:
    """How many (point, box) pairs have the point inside the box."""
    x, y = points[:, None, 0], points[:, None, 1]
    inside = (boxes[:, 0] < x) & (x < boxes[:, 2]) & (boxes[:, 1] < y) & (y < boxes[:, 3])
    return int(inside.sum())


class _CellLayout:
    """Node positions of one cell and a small router for its edges (layout units).

    Inputs sit on the left and the output on the right. Block i takes column i; its
    surrogate node k' sits above (even i) or below (odd i) its node k, so tier-2 edges are
    short vertical arrows and nodes k zig-zag around the middle. Edges are ``arc3`` curves
    whose bend and label position are chosen, edge by edge, to keep clear of nodes, of
    earlier edges and of earlier labels.
    """

    bends = (0.0, 0.12, -0.12, 0.24, -0.24, 0.36, -0.36, 0.5, -0.5)
    label_spots = tuple((t, shift) for t in (0.5, 0.42, 0.58, 0.34, 0.66) for shift in (0, 1, -1))

    def __init__(self, cell: CellGene) -> None:
        import numpy as np

        self.cell = cell
        self.nodes: dict[int, tuple[float, float]] = {0: (0.0, 1.7), 1: (0.0, -1.7)}
        self.surrogates: dict[int, tuple[float, float]] = {}
        x = 4.0
        for i, block in enumerate(cell.blocks):
            side = 1.0 if i % 2 == 0 else -1.0
            if block.tier2 is None:
                self.nodes[i + 2] = (x, side * 1.3)
            else:
                self.surrogates[i] = (x, side * 2.6)
                self.nodes[i + 2] = (x, side * 0.8)
            x += 3.4
        self.output = (x + 0.2, 0.0)
        self.width = self.output[0] + 1.0
        self.half_height = max(abs(y) for _, y in self.points()) + 1.3
        boxes = []  # inputs and output are 1.6 wide, inner nodes are circles
        for x, y in self.points():
            w = 0.8 if (x, y) in (self.nodes[0], self.nodes[1], self.output) else _RADIUS
            boxes.append((x - w, y - _RADIUS - 0.1, x + w, y + _RADIUS + 0.1))
        self.node_boxes = np.array(boxes)
        self.labels = np.empty((0, 4))  # boxes of the labels placed so far
        self.paths = np.empty((0, 2))  # sampled points of the edges routed so far

    def points(self) -> list[tuple[float, float]]:
        return [*self.nodes.values(), *self.surrogates.values(), self.output]

    @staticmethod
    def label_size(text: str) -> tuple[float, float]:
        width = (0.6 * _FONT * len(text) + 4) / 72 / _INCH_PER_UNIT
        return width, (1.3 * _FONT + 3) / 72 / _INCH_PER_UNIT

    def route(
        self, p0: tuple, p1: tuple, text: str | None
    ) -> tuple[float, tuple[float, float] | None]:
        """The bend ``rad`` of the edge p0 -> p1 (matplotlib's ``arc3``) and the centre of
        its label (None without ``text``)."""
        import numpy as np

        start, end = np.array(p0), np.array(p1)
        others = np.array([q for q in self.points() if q not in (p0, p1)])
        t = np.linspace(0.075, 0.925, 35)[:, None]
        normal = np.array([end[1] - start[1], start[0] - end[0]])  # arc3: control point offset
        best = None
        for rad in self.bends:
            control = (start + end) / 2 + rad * normal
            path = (1 - t) ** 2 * start + 2 * t * (1 - t) * control + t**2 * end
            cost = abs(rad) + 20.0 * float((np.abs(path[:, 1]) > self.half_height - 0.2).sum())
            near = np.linalg.norm(others[:, None] - path[None], axis=-1).min(axis=1)
            cost += 40.0 * float(np.clip(_RADIUS + 0.55 - near, 0, None).sum())
            cost += 2.0 * _inside(path, self.labels)
            middle = path[
                (np.linalg.norm(path - start, axis=1) > 0.9)
                & (np.linalg.norm(path - end, axis=1) > 0.9)
            ]
            if len(self.paths) and len(middle):
                gaps = np.linalg.norm(middle[:, None] - self.paths[None], axis=-1).min(axis=1)
                cost += 0.5 * float((gaps < 0.2).sum())
            label = None
            if text is not None:
                spots = [self._label(path, text, s, shift) for s, shift in self.label_spots]
                label = min(spots, key=lambda spot: spot[0])
                cost += label[0]
            if best is None or cost < best[0]:
                best = (cost, rad, label, path)
        _, rad, label, path = best
        self.paths = np.concatenate([self.paths, path])
        if label is None:
            return rad, None
        self.labels = np.concatenate([self.labels, label[2][None]])
        return rad, label[1]

    def _label(self, path: Any, text: str, t: float, shift: int) -> tuple[float, tuple, Any]:
        """Cost, centre and box of a label at ``t`` along ``path``, shifted sideways by
        ``shift`` label widths."""
        import numpy as np

        w, h = self.label_size(text)
        x, y = path[round(t * (len(path) - 1))]
        center = (float(x + shift * (w / 2 + 0.15)), float(y))
        box = np.array([center[0] - w / 2, center[1] - h / 2, center[0] + w / 2, center[1] + h / 2])
        cost = abs(t - 0.5) + 0.4 * abs(shift)
        cost += 100.0 * float(_overlaps(self.labels, box).sum())
        cost += 100.0 * float(_overlaps(self.node_boxes, box).sum())
        cost += 0.5 * _inside(self.paths, box[None])
        return cost, center, box


def _draw_cell(ax: Any, layout: _CellLayout, name: str, half_height: float) -> None:
    from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

    cell = layout.cell
    patches: dict[Any, Any] = {}

    def box_node(key: Any, xy: tuple, text: str, color: str) -> None:
        w, h = 1.5, 0.8
        patch = FancyBboxPatch(
            (xy[0] - w / 2, xy[1] - h / 2),
            w,
            h,
            boxstyle="round,pad=0.05,rounding_size=0.2",
            facecolor=color,
            edgecolor="#333333",
            linewidth=1.0,
            zorder=3,
        )
        ax.add_patch(patch)
        ax.text(*xy, text, ha="center", va="center", fontsize=11, zorder=4)
        patches[key] = patch

    def circle_node(key: Any, xy: tuple, text: str, surrogate: bool) -> None:
        patch = Circle(
            xy,
            _RADIUS,
            facecolor="#f3f3f3" if surrogate else "#cfe2f3",
            edgecolor="#333333",
            linewidth=1.0,
            linestyle="--" if surrogate else "-",
            zorder=3,
        )
        ax.add_patch(patch)
        ax.text(*xy, text, ha="center", va="center", fontsize=10, zorder=4)
        patches[key] = patch

    box_node(0, layout.nodes[0], r"$c_{k-2}$", "#d9ead3")
    box_node(1, layout.nodes[1], r"$c_{k-1}$", "#d9ead3")
    box_node("out", layout.output, r"$c_{k}$", "#fff2cc")
    for i in range(len(cell.blocks)):
        circle_node(i + 2, layout.nodes[i + 2], str(i), surrogate=False)
        if i in layout.surrogates:
            circle_node(("sur", i), layout.surrogates[i], f"{i}'", surrogate=True)

    def edge(a: Any, b: Any, pa: tuple, pb: tuple, op: str | None) -> None:
        rad, center = layout.route(pa, pb, op)
        color = _CONCAT_COLOR if op is None else FAMILY_COLORS[op_family(op)]
        arrow = FancyArrowPatch(
            pa,
            pb,
            connectionstyle=f"arc3,rad={rad}",
            arrowstyle="-|>",
            mutation_scale=11,
            color=color,
            linewidth=1.0 if op is None else 1.4,
            patchA=patches[a],
            patchB=patches[b],
            linestyle="--" if op is None else "-",
            zorder=1 if op is None else 2,
        )
        ax.add_patch(arrow)
        if op is not None:
            ax.text(
                *center,
                op,
                ha="center",
                va="center",
                fontsize=_FONT,
                color=color,
                zorder=5,
                bbox={
                    "boxstyle": "round,pad=0.15",
                    "facecolor": "white",
                    "edgecolor": "none",
                    "alpha": 0.9,
                },
            )

    # fixed edges first (tier 2, concatenation), then tier-1 edges from short to long
    for i, block in enumerate(cell.blocks):
        if block.tier2 is not None:
            edge(("sur", i), i + 2, layout.surrogates[i], layout.nodes[i + 2], block.tier2)
    for node in cell.concat:
        edge(node, "out", layout.nodes[node], layout.output, None)
    tier1 = []
    for i, block in enumerate(cell.blocks):
        target = ("sur", i) if block.tier2 is not None else i + 2
        end = layout.surrogates.get(i, layout.nodes[i + 2])
        for op, source in block.edges:
            start = layout.nodes[source]
            tier1.append((math.dist(start, end), source, target, start, end, op))
    for _, source, target, start, end, op in sorted(tier1, key=lambda e: e[0]):
        edge(source, target, start, end, op)

    ax.set_xlim(-1.1, layout.width)
    ax.set_ylim(-half_height, half_height)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(name, fontsize=12)


def draw_genotype(genotype: Genotype, path: str | os.PathLike, title: str | None = None) -> Path:
    """Draw the normal and the reduction cell of ``genotype`` side by side (paper Fig. 5).

    Inputs ``c_{k-2}``, ``c_{k-1}``; per block a surrogate node k' (dashed) fed by the
    tier-1 edges and a node k fed by the tier-2 edge (single-tier cells, e.g. DARTS, feed
    k directly); the output ``c_k`` concatenates the ``concat`` nodes (grey dashed edges).
    Edges and labels are coloured by op family. Returns ``path`` (``.png`` or ``.svg``).
    """
    if not isinstance(genotype, Genotype):
        raise TypeError(f"genotype must be a Genotype, got {type(genotype).__name__}")
    path = _output_path(path)
    cells = (("normal cell", genotype.normal), ("reduction cell", genotype.reduce))
    layouts = [_CellLayout(cell) for _, cell in cells]
    widths = [layout.width + 1.1 for layout in layouts]
    half_height = max(layout.half_height for layout in layouts)
    # axes placed in inches so that one layout unit is exactly _INCH_PER_UNIT
    top, bottom = 0.35 + (0.4 if title else 0.0), 0.4
    width = sum(widths) * _INCH_PER_UNIT
    height = 2 * half_height * _INCH_PER_UNIT
    fig = _figure((width, height + top + bottom))
    left = 0.0
    for units, layout, (name, _) in zip(widths, layouts, cells):
        w = units * _INCH_PER_UNIT
        ax = fig.add_axes(
            (
                left / width,
                bottom / (height + top + bottom),
                w / width,
                height / (height + top + bottom),
            )
        )
        _draw_cell(ax, layout, name, half_height)
        left += w
    from matplotlib.lines import Line2D

    used = {op_family(name) for _, cell in cells for name in cell.ops}
    families = [f for f in Family if f in used]
    handles = [Line2D([], [], color=FAMILY_COLORS[f], lw=2) for f in families]
    handles.append(Line2D([], [], color=_CONCAT_COLOR, lw=1, ls="--"))
    labels = [*(_FAMILY_SYMBOLS[f] for f in families), "concatenation"]
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    if title:
        fig.suptitle(title, fontsize=13, y=1.0 - 0.1 / (height + top + bottom), va="top")
    return _save(fig, path)


# --------------------------------------------------------------------- architecture weights


def _edge_grid(num_edges: int) -> tuple[int, int, list[tuple[int, int, str]]] | None:
    """Panel rows, columns and (row, column, name) of each architecture row, or None.

    Rows of the architecture matrix are the tier-1 edges of block 0, 1, ... in DARTS order,
    then one tier-2 edge per block (two-tier spaces). Panel row = block, column = source
    (the last column is tier 2).
    """
    for two_tier in (True, False):
        for steps in range(1, num_edges + 1):
            if steps * (steps + 3) // 2 + (steps if two_tier else 0) != num_edges:
                continue
            sources = ["$c_{k-2}$", "$c_{k-1}$"] + [str(i) for i in range(steps)]
            target = "'" if two_tier else ""
            panels = [
                (i, j, f"{sources[j]} → {i}{target}") for i in range(steps) for j in range(i + 2)
            ]
            if two_tier:
                panels += [(i, steps + 1, f"{i}' → {i} (tier 2)") for i in range(steps)]
            return steps, steps + 1 + two_tier, panels
    return None


def _op_styles(ops: Sequence[str]) -> list[dict]:
    """A line colour per op, shades of one colour map per family, and a dash pattern."""
    from matplotlib import colormaps

    families = [None if name == "none" else op_family(name) for name in ops]
    styles = []
    dashes = ("-", "--", "-.", ":")
    for name, family in zip(ops, families):
        if family is None:
            styles.append({"color": "#9e9e9e", "linestyle": ":"})
            continue
        members = [n for n, f in zip(ops, families) if f is family]
        k = members.index(name)
        shade = 0.9 - 0.45 * k / max(len(members) - 1, 1)
        color = colormaps[_FAMILY_CMAPS[family]](shade)
        styles.append({"color": color, "linestyle": dashes[k % len(dashes)]})
    return styles


def _weights(record: dict, key: str, index: int, num_ops: int) -> list[list[float]]:
    rows = [[float(v) for v in row] for row in record[key]]
    if not rows or any(len(row) != num_ops for row in rows):
        raise ValueError(
            f"records[{index}][{key!r}] must be a list of edges with {num_ops} weights each "
            f"(one per op of ops), got row lengths {[len(r) for r in rows]}"
        )
    return rows


def plot_arch_weights(
    records: Sequence[dict],
    ops: Sequence[str],
    path: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """Each edge's softmax weight of every op over the epochs of a search.

    ``records`` are per-epoch dicts with ``"epoch"``, ``"alphas_normal"`` and
    ``"alphas_reduce"`` (num_edges x len(ops) softmax weights, e.g. from the search log);
    records without them are skipped. One panel per edge (panel row = block, column =
    source node, last column the tier-2 edge), the normal cell above the reduction cell,
    lines in shades of one colour per op family (``none`` grey), one shared legend.
    Returns ``path`` (``.png`` or ``.svg``).
    """
    path = _output_path(path)
    ops = list(ops)
    if not ops:
        raise ValueError("ops must name at least one op, got an empty sequence")
    for name in ops:
        op_family(name)  # KeyError listing registered ops
    keys = ("epoch", "alphas_normal", "alphas_reduce")
    kept = [(i, r) for i, r in enumerate(records) if all(k in r for k in keys)]
    if not kept:
        raise ValueError(f"records has no record with the keys {keys}")
    epochs = [r["epoch"] for _, r in kept]
    cells = {}
    for key in keys[1:]:
        weights = [_weights(r, key, i, len(ops)) for i, r in kept]
        if len({len(w) for w in weights}) != 1:
            raise ValueError(f"records disagree on the number of edges in {key!r}")
        cells[key] = weights
    num_edges = len(cells["alphas_normal"][0])
    grid = _edge_grid(num_edges)
    if grid is None:
        cols = min(num_edges, 6)
        rows = math.ceil(num_edges / cols)
        grid = (rows, cols, [(e // cols, e % cols, f"edge {e}") for e in range(num_edges)])
    rows, cols, panels = grid
    styles = _op_styles(ops)

    fig = _figure((1.9 * cols + 0.4, 2 * (1.35 * rows + 0.6) + 0.8))
    subfigs = fig.subfigures(2, 1, hspace=0.02)
    used = {(r, c) for r, c, _ in panels}
    for subfig, key, name in zip(subfigs, keys[1:], ("normal cell", "reduction cell")):
        grid_spec = subfig.add_gridspec(
            rows, cols, left=0.05, right=0.99, top=0.88, bottom=0.08, wspace=0.3, hspace=0.55
        )
        first = None
        for edge, (r, c, label) in enumerate(panels):
            ax = subfig.add_subplot(grid_spec[r, c], sharex=first)
            first = first or ax
            for k, style in enumerate(styles):
                ax.plot(epochs, [w[edge][k] for w in cells[key]], linewidth=1.2, **style)
            ax.set_title(label, fontsize=8, pad=2)
            ax.tick_params(labelsize=6, length=2, pad=1)
            ax.grid(alpha=0.3, linewidth=0.5)
            if (r + 1, c) in used:
                ax.tick_params(labelbottom=False)
            else:
                ax.set_xlabel("epoch", fontsize=7, labelpad=1)
        subfig.suptitle(name, fontsize=11)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linewidth=1.6, **style) for style in styles]
    fig.legend(
        handles,
        ops,
        loc="lower center",
        ncol=min(len(ops), 6),
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, -0.04),
    )
    if title:
        fig.suptitle(title, fontsize=13, y=1.02)
    return _save(fig, path)


def arch_weights_figure(record: dict, ops: Sequence[str], title: str | None = None) -> Any:
    """One epoch's architecture weights as a matplotlib ``Figure`` (not saved): a heat map
    per cell (rows: edges, columns: ops, each cell of the map the op's softmax weight, the
    strongest op of each edge outlined). ``record`` holds ``"alphas_normal"`` and
    ``"alphas_reduce"`` as in the search log. What the search gives TensorBoard each epoch
    (``tensorboard=True``); :func:`plot_arch_weights` draws the whole search instead.
    """
    ops = list(ops)
    if not ops:
        raise ValueError("ops must name at least one op, got an empty sequence")
    cells = [
        (name, _weights(record, key, 0, len(ops)))
        for key, name in (("alphas_normal", "normal cell"), ("alphas_reduce", "reduction cell"))
    ]
    num_edges = len(cells[0][1])
    grid = _edge_grid(num_edges)
    labels = [p[2] for p in grid[2]] if grid else [f"edge {e}" for e in range(num_edges)]
    fig = _figure((2 * (0.42 * len(ops) + 1.6), 0.26 * num_edges + 1.6))
    axes = fig.subplots(1, 2)
    for ax, (name, rows) in zip(axes, cells):
        image = ax.imshow(rows, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(ops)), ops, rotation=60, ha="right", fontsize=6)
        ax.set_yticks(range(len(rows)), labels[: len(rows)], fontsize=6)
        for e, row in enumerate(rows):
            best = max(range(len(row)), key=row.__getitem__)
            ax.add_patch(
                _rectangle((best - 0.5, e - 0.5), 1, 1, fill=False, edgecolor="w", linewidth=1)
            )
        ax.set_title(name, fontsize=9)
    fig.colorbar(image, ax=list(axes), fraction=0.03, pad=0.02)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _rectangle(*args: Any, **kwargs: Any) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle(*args, **kwargs)


# --------------------------------------------------------------------------- learning curves


def plot_curves(
    records: Sequence[dict],
    keys: Sequence[str],
    path: str | os.PathLike,
    title: str | None = None,
    x: str = "epoch",
) -> Path:
    """Learning curves, one panel per key in ``keys``, against ``x``.

    ``records`` are JSON-lines records (e.g. :func:`nos_ops.engine.read_jsonl`);
    records missing ``x`` or the key (or holding None) are skipped for that key. Returns
    ``path`` (``.png`` or ``.svg``).
    """
    path = _output_path(path)
    keys = list(keys)
    if not keys:
        raise ValueError("keys must name at least one record key, got an empty sequence")
    series = {}
    for key in keys:
        points = [(r[x], r[key]) for r in records if None not in (r.get(x), r.get(key))]
        if not points:
            seen = sorted({k for r in records for k in r})
            raise ValueError(
                f"keys: no record has both {x!r} and {key!r}; keys seen in records: {seen}"
            )
        series[key] = points
    cols = min(len(keys), 3)
    rows = math.ceil(len(keys) / cols)
    fig = _figure((4.2 * cols, 3.0 * rows + (0.4 if title else 0.0)))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel()[len(keys) :]:
        ax.set_visible(False)
    for ax, key in zip(axes.ravel(), keys):
        xs, ys = zip(*series[key])
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, linewidth=1.5)
        ax.set_xlabel(x)
        ax.set_title(key, fontsize=10)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return _save(fig, path)
