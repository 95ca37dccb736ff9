"""The GPU suite: everything a session with a GPU should measure, in one call (issue 13).

1. Correctness on the device: every registered op (``list_ops``/``create_op``) forward and
   backward against a CPU float64 copy; fp16 and bf16 autocast run finite; a
   ``channels_last`` input gives the same output (and whether the layout is kept);
   ``torch.compile(dynamic=True)`` of a DynamicConv2d model over two batch sizes matches
   eager with one compiled frame; ``torch.export`` with a dynamic batch matches eager.
2. Supernet steps (weight, first-order and second-order architecture) for the darts, nos
   and PC-DARTS (``partial_channels=4``) spaces at C=16, 8 cells, batch 64, 32 x 32, with
   ``torch.cuda.max_memory_allocated``, and the projected 25-epoch search hours - through
   ``benchmarks/search_step.py`` (in-process: CUDA peaks are per step, RSS is cumulative).
3. Training throughput (images/s) of the evaluation network (NetworkCIFAR, 36 channels,
   20 cells, batch 96, auxiliary head, drop path 0.2) for DARTS_V2 and a NOS genotype,
   eager and compiled, fp32 and bf16 autocast. The data is a GPU-resident random batch;
   the timed loop has no host sync (``.item()``/``.cpu()``); synchronised around timings.

    python benchmarks/gpu_suite.py    # cuda: benchmarks/results/gpu_suite_cuda.{json,md}
    python benchmarks/gpu_suite.py --device cpu --smoke   # the same code on tiny shapes

Meant to finish in at most 6 minutes on one GPU (most of it inductor compiles).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import search_step  # noqa: E402
from _common import ROOT, add_output_args, load_average, metadata, publish  # noqa: E402

from nos_ops.genotype import DARTS_V2, BlockGene, CellGene, Genotype  # noqa: E402
from nos_ops.models.eval import NetworkCIFAR  # noqa: E402
from nos_ops.ops.registry import create_op, list_ops  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
FULL = {
    "op": {"channels": 16, "batch": 8, "image": 16},
    "search": "anchor",  # search_step.SIZES, batch overridden to 64
    "search_batch": 64,
    "eval": {"channels": 36, "layers": 20, "batch": 96, "image": 32, "auxiliary": True},
    "warmup": 3,
    "steps": 20,
}
SMOKE = {
    "op": {"channels": 8, "batch": 2, "image": 8},
    "search": "smoke",
    "search_batch": None,
    "eval": {"channels": 4, "layers": 3, "batch": 4, "image": 8, "auxiliary": False},
    "warmup": 1,
    "steps": 2,
}
SEARCH_CONFIGS = "darts,nos,darts pc4"
TOLERANCE = 1e-3  # max |device fp32 - CPU fp64| / max(1, max |CPU fp64|)


def nos_genotype() -> Genotype:
    """A NOS genotype with dynamic and attention ops at both tiers."""
    cell = CellGene(
        (
            BlockGene((("sep_conv_3x3", 0), ("dynamic_conv_3x3", 1)), "spatial_attention"),
            BlockGene((("dil_conv_3x3", 0), ("channel_attention", 2)), "dynamic_conv_5x5"),
            BlockGene((("sep_conv_5x5", 1), ("spatial_attention", 0)), None),
            BlockGene((("max_pool_3x3", 0), ("dil_dynamic_conv_3x3", 3)), "channel_attention"),
        ),
        (2, 3, 4, 5),
    )
    return Genotype(cell, cell)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _error(a: torch.Tensor | None, ref: torch.Tensor | None) -> float:
    if a is None or ref is None:
        return 0.0 if a is None and ref is None else float("inf")
    ref = ref.double().cpu()
    return float((a.double().cpu() - ref).abs().max()) / max(1.0, float(ref.abs().max()))


def _attempt(row: dict[str, Any], key: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as err:  # recorded, the suite goes on
        row[f"{key}_error"] = f"{type(err).__name__}: {str(err)[:300]}"
        return None


def _finite_step(op: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> bool:
    x = x.detach().requires_grad_(True)
    with torch.autocast(x.device.type, dtype=dtype):
        out = op(x)
    out.float().square().mean().backward()
    grads = [x.grad] + [p.grad for p in op.parameters() if p.grad is not None]
    return bool(torch.isfinite(out).all()) and all(bool(torch.isfinite(g).all()) for g in grads)


def check_op(name: str, shape: dict[str, int], device: torch.device) -> dict[str, Any]:
    """One op on ``device`` (fp32) against its CPU float64 copy, forward and backward."""
    row: dict[str, Any] = {"section": "correctness", "name": name}
    torch.manual_seed(0)
    c, b, s = shape["channels"], shape["batch"], shape["image"]
    ref_op = create_op(name, c).double()
    op = copy.deepcopy(ref_op).float().to(device)
    x64 = torch.randn(b, c, s, s, dtype=torch.float64, requires_grad=True)
    ref = ref_op(x64)
    g64 = torch.randn_like(ref)
    ref.backward(g64)
    x = x64.detach().float().to(device).requires_grad_(True)
    out = op(x)
    out.backward(g64.float().to(device))
    row["fwd_err"] = _error(out.detach(), ref.detach())
    grad_errs = [_error(x.grad, x64.grad)] + [
        _error(p.grad, q.grad) for p, q in zip(op.parameters(), ref_op.parameters())
    ]
    row["bwd_err"] = max(grad_errs)
    row["ok"] = row["fwd_err"] <= TOLERANCE and row["bwd_err"] <= TOLERANCE
    xd = x.detach()
    for label, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        op.zero_grad(set_to_none=True)
        row[f"{label}_finite"] = _attempt(row, label, lambda d=dtype: _finite_step(op, xd, d))
    with torch.no_grad():
        plain = op(xd)
        cl = op(xd.contiguous(memory_format=torch.channels_last))
    row["channels_last_err"] = _error(cl, plain)
    row["channels_last_kept"] = bool(cl.is_contiguous(memory_format=torch.channels_last))
    return row


def _dynamic_conv_model(channels: int, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        create_op("dynamic_conv_3x3", channels), nn.ReLU(), create_op("dynamic_conv_5x5", channels)
    )
    return model.to(device).eval()


def check_compile(shape: dict[str, int], device: torch.device, backend: str) -> dict[str, Any]:
    """``torch.compile(dynamic=True)`` of a DynamicConv2d model over two batch sizes."""
    from torch._dynamo.testing import CompileCounterWithBackend

    row: dict[str, Any] = {"section": "correctness", "name": f"compile dynamic ({backend})"}
    torch._dynamo.reset()
    model = _dynamic_conv_model(shape["channels"], device)
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(model, backend=counter, dynamic=True)
    errs = []

    def run() -> None:
        start = time.perf_counter()
        with torch.no_grad():
            for b in (shape["batch"], shape["batch"] + 3):
                x = torch.randn(b, shape["channels"], shape["image"], shape["image"], device=device)
                errs.append(_error(compiled(x), model(x)))
        sync(device)
        row["compile_s"] = time.perf_counter() - start

    _attempt(row, "compile", run)
    row["fwd_err"] = max(errs) if errs else None
    row["frames"] = counter.frame_count
    row["ok"] = bool(errs) and max(errs) <= TOLERANCE and counter.frame_count == 1
    torch._dynamo.reset()
    return row


def check_export(shape: dict[str, int], device: torch.device) -> dict[str, Any]:
    """``torch.export`` of a DynamicConv2d model with a dynamic batch dimension."""
    row: dict[str, Any] = {"section": "correctness", "name": "export dynamic batch"}
    model = _dynamic_conv_model(shape["channels"], device)
    c, s = shape["channels"], shape["image"]

    def run() -> float:
        batch = torch.export.Dim("batch", min=2, max=4096)
        x = torch.randn(shape["batch"], c, s, s, device=device)
        exported = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
        other = torch.randn(shape["batch"] + 3, c, s, s, device=device)
        with torch.no_grad():
            return _error(exported.module()(other), model(other))

    row["fwd_err"] = _attempt(row, "export", run)
    row["ok"] = row["fwd_err"] is not None and row["fwd_err"] <= TOLERANCE
    return row


def search_rows(args: argparse.Namespace, plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The three spaces' steps through ``search_step``'s own measurement (in-process)."""
    ns = argparse.Namespace(
        configs=SEARCH_CONFIGS,
        steps=",".join(search_step.STEPS),
        sizes=plan["search"],
        batch=plan["search_batch"],
        device=args.device,
        amp="none",
        channels_last=False,
        threads=args.threads,
        warmup=0 if args.smoke else 1,
        repeats=1 if args.smoke else 3,
        no_isolate=True,
        idle_wait=0.0,
        reference=None,
        rounds=1,
    )
    rows = search_step._rows(ns)
    for row in rows:
        row["section"], row["name"] = "search_step", row["config"]
    return rows


def throughput(
    genotype: str, genotype_obj: Genotype, mode: str, plan: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """Training images/s of the evaluation network: ``mode`` is eager/compile x fp32/amp."""
    device = torch.device(args.device)
    shape = plan["eval"]
    row: dict[str, Any] = {"section": "train_throughput", "name": f"{genotype} {mode}", **shape}
    torch.manual_seed(0)
    torch._dynamo.reset()
    model = NetworkCIFAR(shape["channels"], 10, shape["layers"], genotype_obj, shape["auxiliary"])
    model.drop_path_prob = 0.2
    model = model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    b, s = shape["batch"], shape["image"]
    images = torch.randn(b, 3, s, s, device=device)  # GPU-resident: no copy in the loop
    labels = torch.randint(0, 10, (b,), device=device)
    amp = "amp" in mode
    forward = model
    if "compile" in mode:
        forward = torch.compile(model, backend=args.compile_backend)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits, aux = forward(images)
            loss = F.cross_entropy(logits, labels)
            if aux is not None:
                loss = loss + 0.4 * F.cross_entropy(aux, labels)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    def run() -> None:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        start = time.perf_counter()
        for _ in range(plan["warmup"]):
            step()
        sync(device)
        row["warmup_s"] = time.perf_counter() - start  # includes the compile
        start = time.perf_counter()
        for _ in range(plan["steps"]):
            step()
        sync(device)
        elapsed = time.perf_counter() - start
        row["step_ms"] = 1000 * elapsed / plan["steps"]
        row["images_per_s"] = plan["steps"] * b / elapsed
        if device.type == "cuda":
            row["peak_cuda_gb"] = torch.cuda.max_memory_allocated(device) / 1e9

    _attempt(row, "run", run)
    row["ok"] = "images_per_s" in row
    torch._dynamo.reset()
    return row


def _summary(row: dict[str, Any]) -> str:
    section = row["section"]
    errors = "; ".join(f"{k}: {v}" for k, v in row.items() if k.endswith("_error"))
    if section == "correctness":
        fwd = row.get("fwd_err")
        parts = [f"ok={row.get('ok')}", f"fwd err {fwd:.2g}" if fwd is not None else "no result"]
        if "bwd_err" in row:
            parts += [
                f"bwd err {row['bwd_err']:.2g}",
                f"fp16 finite={row.get('fp16_finite')}",
                f"bf16 finite={row.get('bf16_finite')}",
                f"channels_last err {row['channels_last_err']:.2g}"
                f" (layout kept={row['channels_last_kept']})",
            ]
        if "frames" in row:
            parts.append(f"frames={row['frames']}, {row.get('compile_s', 0):.1f} s")
        text = ", ".join(parts)
    elif section == "search_step":
        parts = []
        for step in search_step.STEPS:
            if f"{step}_s" in row:
                mem = row.get(f"{step}_peak_cuda_gb")
                parts.append(
                    f"{step} {row[f'{step}_s']:.3g} s" + (f" ({mem:.2f} GB)" if mem else "")
                )
        parts.append(f"25-epoch search {row.get('projected_search_h', 0):.3g} h")
        text = ", ".join(parts)
    else:
        text = (
            f"{row.get('images_per_s', 0):.0f} images/s, {row.get('step_ms', 0):.1f} ms/step, "
            f"warmup {row.get('warmup_s', 0):.1f} s"
            + (f", {row['peak_cuda_gb']:.2f} GB" if "peak_cuda_gb" in row else "")
        )
    return text + (f"; {errors}" if errors else "")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, dynamo's eager backend")
    p.add_argument("--compile-backend", default=None, help="inductor; eager with --smoke")
    p.add_argument(
        "--sections",
        default="correctness,search_step,train_throughput",
        help="comma list of the sections to run",
    )
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    add_output_args(p)
    args = p.parse_args(argv)
    if args.compile_backend is None:
        args.compile_backend = "eager" if args.smoke else "inductor"
    if not args.smoke and args.out is None:
        tag = args.device.replace(":", "")
        args.format, args.out = "json", str(RESULTS / f"gpu_suite_{tag}.json")
        args.md_out = args.md_out or str(RESULTS / f"gpu_suite_{tag}.md")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available on this machine")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    plan = SMOKE if args.smoke else FULL
    sections = args.sections.split(",")
    meta = metadata(
        device,
        benchmark="gpu_suite",
        smoke=args.smoke,
        compile_backend=args.compile_backend,
        plan=plan,
        cudnn=torch.backends.cudnn.version() if device.type == "cuda" else None,
    )
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    if "correctness" in sections:
        for name in list_ops():
            try:
                rows.append(check_op(name, plan["op"], device))
            except Exception as err:
                rows.append(
                    {
                        "section": "correctness",
                        "name": name,
                        "ok": False,
                        "fwd_err": None,
                        "run_error": traceback.format_exception_only(err)[-1].strip()[:300],
                    }
                )
        rows.append(check_compile(plan["op"], device, args.compile_backend))
        rows.append(check_export(plan["op"], device))
    if "search_step" in sections:
        rows += search_rows(args, plan)
    if "train_throughput" in sections:
        for label, genotype in (("DARTS_V2", DARTS_V2), ("NOS", nos_genotype())):
            for mode in ("eager fp32", "eager amp", "compile fp32", "compile amp"):
                rows.append(throughput(label, genotype, mode, plan, args))
    meta["wall_s"] = time.perf_counter() - started
    meta["load_average_end"] = load_average()
    checks = [r for r in rows if r["section"] == "correctness"]
    meta["all_correct"] = all(r.get("ok") for r in checks)
    meta["projected_search_h"] = {
        r["config"]: r.get("projected_search_h") for r in rows if r["section"] == "search_step"
    }
    shown = [{**r, "result": _summary(r)} for r in rows]
    columns = [("section", "section"), ("name", "name"), ("result", "result")]
    title = (
        f"GPU suite: {meta['device_name']}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    )
    notes = [
        f"Correctness: device fp32 vs CPU float64, error = max abs diff / max(1, max |ref|), "
        f"ok at <= {TOLERANCE}; fp16/bf16: autocast forward+backward finite.",
        "Search steps: benchmarks/search_step.py's run_step in-process (C=16, 8 cells, batch "
        "64, 32 x 32 unless --smoke); 25-epoch search = 25 x ceil(25000 / batch) x (weight + "
        "second-order step).",
        "Throughput: NetworkCIFAR training step (SGD, aux 0.4, drop path 0.2, clip 5), amp = "
        f"bf16 autocast, compile backend {args.compile_backend}; warmup includes the compile.",
    ]
    publish(args, title, meta, rows, shown, columns, notes)
    return {"meta": meta, "rows": rows}


if __name__ == "__main__":
    main()
