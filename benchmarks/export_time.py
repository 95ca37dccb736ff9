"""Export time of evaluation networks: DARTS_V2 beside cells our search found.

Times what ``nos-ops export`` does for each genotype (36 channels, 20 cells, 32 x 32,
dynamic batch, eval mode): ``torch.export`` of the network (``trace_s``), saving the
``.pt2`` (``save_s``), loading it back and running one batch (``load_run_s``), and with
``--onnx`` the ONNX export (``onnx_s``, of the ``conv=auto`` form only: ONNX export of the
larger shifted graphs takes many minutes). ``nodes`` counts the exported graph's nodes.

Genotypes: DARTS_V2; ``found``, a cell the NOS search found on the bundled digits
(``benchmarks/results/found_before_fix_genotype.json``); ``dynamic_5x5``, DARTS_V2 with a
dynamic 5 x 5 conv on every block's second edge (the ``t1_dynamic_conv_5x5`` genotype of
``benchmarks/trainability.py``: the most per-sample convs). Every genotype is exported with
the per-sample depthwise conv in its export form (``conv=auto``: ``F.unfold`` patches) and,
for comparison, in the k*k shifted multiply-adds that export used before (``conv=shifted``).
Rounds interleave all of them; ``ratio_to_darts`` is the median over rounds of the total
(trace + save + load and run) over DARTS_V2's in the same round.

    python benchmarks/export_time.py --rounds 2 --onnx --out benchmarks/results/export_time.json \\
        --md-out benchmarks/results/export_time.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, add_output_args, metadata, publish  # noqa: E402

from nos_ops.export import export_onnx, export_program  # noqa: E402
from nos_ops.genotype import Genotype, get_genotype  # noqa: E402
from nos_ops.network import build_network  # noqa: E402
from nos_ops.ops import dynamic  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CONVS = ("auto", "shifted")


def genotypes() -> dict[str, Genotype]:
    """DARTS_V2, the found cell and the all-dynamic-5x5 cell (module docstring)."""
    rows = json.loads((RESULTS / "trainability.json").read_text())["rows"]
    dynamic = next(r for r in rows if r["genotype"] == "t1_dynamic_conv_5x5")
    return {
        "DARTS_V2": get_genotype("DARTS_V2"),
        "found": get_genotype(RESULTS / "found_before_fix_genotype.json"),
        "dynamic_5x5": Genotype.from_dict(dynamic["genotype_json"]),
    }


@contextlib.contextmanager
def export_form(conv: str) -> Iterator[None]:
    """With ``conv="shifted"``, export traces the per-sample depthwise conv as shifted
    multiply-adds (``impl="auto"`` picks ``"unfold"`` under export)."""
    saved = dynamic._CONVS["unfold"]
    if conv == "shifted":
        dynamic._CONVS["unfold"] = dynamic._CONVS["shifted"]
    try:
        yield
    finally:
        dynamic._CONVS["unfold"] = saved


def export_once(
    genotype: Genotype, conv: str, channels: int, layers: int, onnx: bool, folder: Path
) -> dict[str, Any]:
    """Build, export, save, load and run one network; seconds of each stage."""
    torch.manual_seed(0)
    arch = {"network": "cifar", "channels": channels, "layers": layers, "num_classes": 10}
    model = build_network({**arch, "auxiliary": False}, genotype).eval()
    example, check = torch.randn(2, 3, 32, 32), torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model(check)[0]
    began = time.perf_counter()
    with export_form(conv):
        program = export_program(model, example)
    traced = time.perf_counter()
    torch.export.save(program, folder / "net.pt2")
    saved = time.perf_counter()
    got = torch.export.load(folder / "net.pt2").module()(check)
    done = time.perf_counter()
    row = {
        "trace_s": traced - began,
        "save_s": saved - traced,
        "load_run_s": done - saved,
        "total_s": done - began,
        "nodes": len(program.graph.nodes),
        "max_abs_diff": (got - expected).abs().max().item(),
    }
    if onnx and conv == "auto":
        began = time.perf_counter()
        with export_form(conv):
            export_onnx(model, folder / "net.onnx", example)
        row["onnx_s"] = time.perf_counter() - began
    return row


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (genotype, conv) once per round, in one order per round (odd rounds reversed)."""
    cells = genotypes()
    if args.smoke:  # the all-dynamic cell's shifted form alone takes most of a minute
        del cells["dynamic_5x5"]
    jobs = [(name, conv) for name in cells for conv in args.convs]
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {job: [] for job in jobs}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            for name, conv in jobs if round_ % 2 == 0 else jobs[::-1]:
                print(f"round {round_ + 1}/{args.rounds}: {name} conv={conv}", file=sys.stderr)
                runs[name, conv].append(
                    export_once(
                        cells[name], conv, args.channels, args.layers, args.onnx, Path(folder)
                    )
                )
    rows = []
    for (name, conv), measured in runs.items():
        row: dict[str, Any] = {"genotype": name, "conv": conv, "rounds": len(measured)}
        for key in measured[0]:
            row[key] = statistics.median(m[key] for m in measured)
        row["max_abs_diff"] = max(m["max_abs_diff"] for m in measured)
        darts = runs["DARTS_V2", conv]
        row["ratio_to_darts"] = statistics.median(
            m["total_s"] / d["total_s"] for m, d in zip(measured, darts)
        )
        rows.append(row)
    return rows


COLUMNS = (
    ("genotype", "genotype"),
    ("conv", "per-sample conv"),
    ("nodes", "graph nodes"),
    ("trace_s", "export s"),
    ("save_s", "save s"),
    ("load_run_s", "load + run s"),
    ("total_s", "total s"),
    ("ratio_to_darts", "total / DARTS_V2"),
    ("onnx_s", "ONNX s"),
    ("max_abs_diff", "max abs diff"),
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_output_args(p)
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds")
    p.add_argument("--channels", type=int, default=36)
    p.add_argument("--layers", type=int, default=20)
    p.add_argument("--onnx", action="store_true", help="also time the ONNX export")
    p.add_argument("--convs", default=",".join(CONVS), help=f"comma list of {CONVS}")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="4 channels, 3 cells, one round, no dynamic_5x5 (tests)",
    )
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds={args.rounds} is not valid; expected >= 1")
    args.convs = tuple(c for c in args.convs.split(",") if c)
    if not args.convs or any(c not in CONVS for c in args.convs):
        p.error(f"--convs={','.join(args.convs)!r} is not valid; expected a comma list of {CONVS}")
    if args.smoke:
        args.channels, args.layers, args.rounds = 4, 3, 1
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    meta = metadata(
        torch.device("cpu"),
        benchmark="export_time",
        channels=args.channels,
        layers=args.layers,
        rounds=args.rounds,
        dtype="float32",
    )
    rows = measure(args)
    notes = [
        "export: torch.export with a dynamic batch; load + run: torch.export.load and one "
        "batch of 3, checked against eager (max abs diff)",
        "conv=auto: the export form of the per-sample depthwise conv (F.unfold patches); "
        "conv=shifted: k*k shifted multiply-adds (the export form before)",
    ]
    publish(args, "Export time of evaluation networks", meta, rows, rows, COLUMNS, notes)
    return {"meta": meta, "rows": rows}


if __name__ == "__main__":
    main()
