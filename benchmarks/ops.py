"""Cost of every registered op and of the public layers: params, MACs, latency, peak memory.

For each op (``nos_ops.ops.list_ops()``) and layer (``MixedHeteroOp``,
``SearchResidualBlock``, ``HeterogeneousResidualBlock``; ``DynamicConv2d``,
``SpatialAttention`` and ``ChannelAttention`` are the registered self-calibration ops) at
each shape: parameters, multiply-adds per sample (``count_macs``), inference forward and
training forward+backward latency (median, p10, p90 over interleaved repeats) and the peak
tensor memory of forward+backward (``nos_ops.profile.peak_memory``: the profiler's
allocation timeline on CPU, ``max_memory_allocated`` on CUDA).

Self-calibration ops are timed side by side with a static equivalent: a depthwise
``nn.Conv2d`` of the same kernel size, dilation and stride for dynamic convs (and the same
static conv through :func:`nos_ops.ops.dynamic.depthwise_conv2d`, this library's fast CPU
path), ``x * 1`` for attention; the ratios are of medians from the same interleaved run.

    python benchmarks/ops.py                                   # CPU, markdown
    python benchmarks/ops.py --format json --out benchmarks/results/ops_cpu.json
    python benchmarks/ops.py --device cuda --amp bf16 --channels-last --format json --out F
    python benchmarks/ops.py --smoke                           # tiny shapes, one repeat
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    add_output_args,
    interleaved_latency,
    keep_freed_memory,
    load_average,
    metadata,
    publish,
    wait_idle,
)

from nos_ops import (  # noqa: E402
    HeterogeneousResidualBlock,
    MixedHeteroOp,
    SearchResidualBlock,
    calibrate,
    get_space,
)
from nos_ops.genotype import BlockGene  # noqa: E402
from nos_ops.ops import create_op, list_ops, op_family  # noqa: E402
from nos_ops.ops.dynamic import depthwise_conv2d  # noqa: E402
from nos_ops.profile import count_macs, count_params, peak_memory  # noqa: E402

AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# A derived block mixing the three families: what an evaluation network runs per node.
FIXED_GENE = BlockGene((("sep_conv_3x3", 0), ("dynamic_conv_5x5", 1)), "spatial_attention")


class StaticDepthwise(nn.Module):
    """A static depthwise conv run through the library's fast CPU path."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return depthwise_conv2d(x, c.weight, c.stride[0], c.padding[0], c.dilation[0])


class TimesOne(nn.Module):
    """``x * 1``: the static stand-in for an attention op (same output, no gate)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1.0


class EdgeLayer(nn.Module):
    """``calibrate(MixedHeteroOp(x, softmax weights))``: one relaxed edge, calibrated."""

    def __init__(self, channels: int, space: str) -> None:
        super().__init__()
        self.edge = MixedHeteroOp(channels, 1, space)
        self.register_buffer("weights", torch.randn(self.edge.space.num_ops).softmax(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return calibrate(self.edge(x, self.weights))


class SearchBlockLayer(nn.Module):
    """``SearchResidualBlock`` of the first node (two inputs, both ``x``)."""

    def __init__(self, channels: int, space: str) -> None:
        super().__init__()
        space_ = get_space(space)
        self.block = SearchResidualBlock(channels, 2, False, space_)
        self.register_buffer("tier1", torch.randn(2, space_.num_ops).softmax(-1))
        self.register_buffer("tier2", torch.randn(space_.num_ops).softmax(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block([x, x], self.tier1, self.tier2 if self.block.tier2 else None)


class FixedBlockLayer(nn.Module):
    """``HeterogeneousResidualBlock`` of :data:`FIXED_GENE` (inputs ``x``, ``x``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = HeterogeneousResidualBlock(channels, FIXED_GENE, False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block([x, x])


@dataclass(frozen=True)
class Subject:
    """One row kind: an op or layer, its family and (for self-calibration ops) statics."""

    name: str
    layer: str
    family: str
    build: Callable[[int], nn.Module]
    statics: tuple[tuple[str, Callable[[int], nn.Module]], ...] = ()


def _depthwise(op: nn.Module, channels: int) -> nn.Conv2d:
    k, d = op.kernel_size, op.dilation
    return nn.Conv2d(
        channels, channels, k, op.stride, d * (k - 1) // 2, d, groups=channels, bias=False
    )


def subjects() -> list[Subject]:
    """Every registered op, then the composite layers."""
    rows = []
    for name in list_ops():
        family = op_family(name).value
        layer = type(create_op(name, 8)).__name__

        def build(c: int, name: str = name) -> nn.Module:
            return create_op(name, c)

        statics: tuple[tuple[str, Callable[[int], nn.Module]], ...] = ()
        if family == "dynamic":
            probe = create_op(name, 8)
            k, d = probe.kernel_size, probe.dilation
            layer = f"DynamicConv2d(k={k}, d={d})"

            def conv(c: int, name: str = name) -> nn.Module:
                return _depthwise(create_op(name, c), c)

            def fast(c: int, name: str = name) -> nn.Module:
                return StaticDepthwise(_depthwise(create_op(name, c), c))

            statics = ((f"nn.Conv2d dw {k}x{k} d{d}", conv), ("depthwise_conv2d", fast))
        elif family == "attention":
            statics = (("x * 1", lambda c: TimesOne()),)
        rows.append(Subject(name, layer, family, build, statics))
    for space in ("nos", "darts"):
        edge = _bind(EdgeLayer, space)
        rows.append(Subject(f"edge[{space}]", "MixedHeteroOp", "layer", edge))
    for space in ("nos", "darts"):
        block = _bind(SearchBlockLayer, space)
        rows.append(Subject(f"block[{space}]", "SearchResidualBlock", "layer", block))
    rows.append(Subject("block[fixed]", "HeterogeneousResidualBlock", "layer", FixedBlockLayer))
    return rows


def _bind(cls: type[nn.Module], space: str) -> Callable[[int], nn.Module]:
    return lambda c: cls(c, space)


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _prepare(module: nn.Module, args: argparse.Namespace, device: torch.device) -> nn.Module:
    module = module.to(device)
    if args.channels_last:
        module = module.to(memory_format=torch.channels_last)
    return module


def _timers(
    module: nn.Module, x: torch.Tensor, device: torch.device, amp: torch.dtype | None
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(inference forward, training forward+backward) closures for ``module`` at ``x``."""
    xg = x.detach().clone().requires_grad_(True)
    with torch.no_grad(), _autocast(device, amp):
        grad = torch.randn_like(module.train()(xg))

    def forward() -> None:
        module.eval()
        with torch.no_grad(), _autocast(device, amp):
            module(x)

    def forward_backward() -> None:
        module.train()
        module.zero_grad(set_to_none=True)
        xg.grad = None
        with _autocast(device, amp):
            out = module(xg)
        out.backward(grad.to(out.dtype))

    return forward, forward_backward


def measure(
    subject: Subject,
    channels: int,
    size: int,
    args: argparse.Namespace,
    device: torch.device,
    skip_memory: bool,
) -> dict[str, Any]:
    amp = AMP[args.amp]
    torch.manual_seed(0)
    module = _prepare(subject.build(channels), args, device)
    x = torch.randn(args.batch, channels, size, size, device=device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    statics = [(label, _prepare(build(channels), args, device)) for label, build in subject.statics]
    timers = [_timers(m, x, device, amp) for m in [module] + [s for _, s in statics]]
    fwd = interleaved_latency([t[0] for t in timers], args.warmup, args.repeats, device)
    fwd_bwd = interleaved_latency([t[1] for t in timers], args.warmup, args.repeats, device)
    row: dict[str, Any] = {
        "name": subject.name,
        "layer": subject.layer,
        "family": subject.family,
        "batch": args.batch,
        "channels": channels,
        "size": size,
        "device": device.type,
        "dtype": "float32" if amp is None else f"autocast {args.amp}",
        "threads": torch.get_num_threads(),
        "channels_last": args.channels_last,
        "params": count_params(module),
        "macs_per_sample": count_macs(module, x[:1]),
        "fwd_ms": fwd[0]["median"],
        "fwd_p10_ms": fwd[0]["p10"],
        "fwd_p90_ms": fwd[0]["p90"],
        "fwd_bwd_ms": fwd_bwd[0]["median"],
        "fwd_bwd_p10_ms": fwd_bwd[0]["p10"],
        "fwd_bwd_p90_ms": fwd_bwd[0]["p90"],
        "peak_memory_mb": None,
    }
    if not skip_memory:
        row["peak_memory_mb"] = peak_memory(timers[0][1], device) / 2**20
    for i, (label, _) in enumerate(statics, start=1):
        key = "static" if i == 1 else "static_lib"
        row[key] = label
        row[f"{key}_fwd_ms"] = fwd[i]["median"]
        row[f"{key}_fwd_bwd_ms"] = fwd_bwd[i]["median"]
        row[f"ratio_fwd_{key}"] = fwd[0]["median"] / fwd[i]["median"]
        row[f"ratio_fwd_bwd_{key}"] = fwd_bwd[0]["median"] / fwd_bwd[i]["median"]
    return row


COLUMNS = (
    ("name", "op / layer"),
    ("layer", "class"),
    ("shape", "B x C x H x W"),
    ("params", "params"),
    ("mmacs", "MMACs/sample"),
    ("fwd", "fwd ms (p10-p90)"),
    ("fwd_bwd", "fwd+bwd ms (p10-p90)"),
    ("peak_memory_mb", "peak MiB (fwd+bwd)"),
    ("static", "static"),
    ("static_fwd_bwd_ms", "static fwd+bwd ms"),
    ("ratio_fwd_bwd_static", "ratio fwd+bwd"),
    ("ratio_fwd_static", "ratio fwd"),
    ("ratio_fwd_bwd_static_lib", "ratio fwd+bwd vs depthwise_conv2d"),
)


def _display(row: dict[str, Any]) -> dict[str, Any]:
    shown = dict(row)
    shown["shape"] = f"{row['batch']}x{row['channels']}x{row['size']}x{row['size']}"
    shown["mmacs"] = row["macs_per_sample"] / 1e6
    for key in ("fwd", "fwd_bwd"):
        shown[key] = (
            f"{row[f'{key}_ms']:.3g} ({row[f'{key}_p10_ms']:.3g}-{row[f'{key}_p90_ms']:.3g})"
        )
    return shown


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """``"16x32,64x16"`` -> [(16, 32), (64, 16)]: channels x spatial size."""
    try:
        shapes = [tuple(int(v) for v in part.split("x")) for part in text.split(",") if part]
    except ValueError:
        shapes = []
    if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
        raise argparse.ArgumentTypeError(
            f"shapes={text!r} is not valid; expected CxS pairs such as 16x32,64x16"
        )
    return shapes  # type: ignore[return-value]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    p.add_argument("--amp", choices=sorted(AMP), default="none", help="autocast dtype")
    p.add_argument("--channels-last", action="store_true", help="modules and inputs NHWC")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--shapes", type=parse_shapes, default=parse_shapes("16x32,64x16,256x8"))
    p.add_argument("--ops", default=None, help="comma-separated row names (default: all)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    p.add_argument(
        "--idle-wait",
        type=float,
        default=0.0,
        help="before each row, wait up to this many seconds for other work to leave the CPUs",
    )
    p.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="glibc keeps freed memory (no page faults per call), see _common.keep_freed_memory",
    )
    add_output_args(p)
    p.add_argument(
        "--smoke", action="store_true", help="tiny shapes, one repeat, memory of row 1 (tests)"
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.shapes, args.batch, args.warmup, args.repeats = [(8, 8)], 2, 0, 1
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available on this machine")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    kept = keep_freed_memory() if args.keep_freed_memory else False
    chosen = subjects()
    if args.ops:
        wanted = set(args.ops.split(","))
        unknown = wanted - {s.name for s in chosen}
        if unknown:
            raise SystemExit(f"--ops: unknown names {sorted(unknown)}")
        chosen = [s for s in chosen if s.name in wanted]
    meta = metadata(
        device,
        benchmark="ops",
        batch=args.batch,
        amp=args.amp,
        channels_last=args.channels_last,
        keep_freed_memory=kept,
        warmup=args.warmup,
        repeats=args.repeats,
        smoke=args.smoke,
    )
    rows = []
    for channels, size in args.shapes:
        for subject in chosen:
            # the profiler pass is the slow part of a smoke run: once is enough to test it
            skip_memory = args.no_memory or (args.smoke and bool(rows))
            busy = wait_idle(args.idle_wait) if args.idle_wait > 0 else None
            rows.append(measure(subject, channels, size, args, device, skip_memory))
            rows[-1]["cpu_busy_before"] = busy
    meta["load_average_end"] = load_average()
    report = {"meta": meta, "rows": rows}
    notes = [
        "fwd: eval mode, no grad; fwd+bwd: train mode, backward of a random output gradient "
        "into the input and the parameters. Medians of interleaved repeats; ratios are of "
        "medians from the same run.",
        "static: a depthwise nn.Conv2d with the dynamic op's kernel size, dilation and stride "
        "(dynamic ops); x * 1 (attention ops). depthwise_conv2d: the same static conv through "
        "the library's fast CPU backward.",
    ]
    dtype = "float32" if args.amp == "none" else f"autocast {args.amp}"
    title = (
        f"Ops and layers: {meta['device_name']}, {dtype}, {meta['threads']} threads, "
        f"channels_last={args.channels_last}, batch {args.batch}, keep_freed_memory={kept}"
    )
    publish(args, title, meta, rows, [_display(r) for r in rows], COLUMNS, notes)
    return report


if __name__ == "__main__":
    main()
