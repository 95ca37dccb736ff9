"""Self-calibration ops in ResNet-18 (paper Sec. 4.1, Table 1): baseline vs each op added.

    # minutes on 2 CPU cores: bundled digits, 16x16, ResNet-18 at width x0.25, 3 epochs
    python examples/resnet_self_calibration.py --quick --op dynamic_conv_3x3 --op channel_attention
    # Table 1 on CIFAR-10 (300 epochs per model, as Appendix A1)
    python examples/resnet_self_calibration.py --data-dir data/cifar-10-batches-py

Every model is trained with one recipe (Appendix A1): SGD lr 0.025, momentum 0.9, weight
decay 1e-4, learning rate divided by 10 every 30 epochs, random crop and horizontal flip,
batch 32. Each self-calibration op is appended after ResNet stages ``--stages`` (1 2 3 in
the paper) by :func:`nos_ops.models.add_self_calibration`. Prints a markdown table in the
paper's layout (errors of the last epoch; MACs and parameters as differences to the
baseline) and writes it with every number to ``--out``/results.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nos_ops.data import Augment, TensorLoader
from nos_ops.models import BasicBlock, add_self_calibration, resnet18_cifar
from nos_ops.profile import count_macs, count_params
from nos_ops.trainer import evaluate, load_data, train_one_epoch

OPS = {  # op -> (Model, Type, Kernels) as in Table 1
    "dynamic_conv_3x3": ("+ Dynamic", "Normal", "3"),
    "dynamic_conv_5x5": ("+ Dynamic", "Normal", "5"),
    "dil_dynamic_conv_3x3": ("+ Dynamic", "Dilated", "3"),
    "dil_dynamic_conv_5x5": ("+ Dynamic", "Dilated", "5"),
    "spatial_attention": ("+ Attention", "Spatial", "-"),
    "channel_attention": ("+ Attention", "Channel", "-"),
}
QUICK = {"epochs": 3, "batch_size": 64, "width": 0.25, "image_size": 16}
DEFAULTS = {"epochs": 300, "batch_size": 32, "width": 1.0, "image_size": None}

_logger = logging.getLogger("resnet_study")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--op", action="append", choices=[*OPS, "all"],
                        help="self-calibration op to add (repeatable; default all)")
    parser.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3],
                        help="ResNet stages to add the op after (1-4)")
    parser.add_argument("--data-dir", help="cifar-10-batches-py or cifar-100-python "
                        "(default: the bundled digits)")
    parser.add_argument("--epochs", type=int, help="default 300 (quick: 3)")
    parser.add_argument("--batch-size", type=int, help="default 32 (quick: 64)")
    parser.add_argument("--lr", type=float, default=0.025)
    parser.add_argument("--width", type=float,
                        help="channel multiplier of ResNet-18 (64-512 at 1.0); quick: 0.25")
    parser.add_argument("--image-size", type=int, help="digits resolution (32; quick: 16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="runs/resnet_study")
    parser.add_argument("--quick", action="store_true",
                        help="minutes on CPU: digits at 16x16, width x0.25, 3 epochs, batch 64")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else DEFAULTS
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    ops = args.op or ["all"]
    args.op = list(OPS) if "all" in ops else list(dict.fromkeys(ops))
    if args.width <= 0:
        parser.error(f"--width {args.width} is not valid; expected a positive multiplier")
    return args


def resnet18(num_classes: int, width: float) -> nn.Module:
    """CIFAR ResNet-18 with every stage's channels scaled by ``width`` (1.0: the original)."""
    model = resnet18_cifar(num_classes)
    if width == 1.0:
        return model
    channels = [max(8, round(c * width)) for c in (64, 128, 256, 512)]
    model.conv1 = nn.Conv2d(3, channels[0], 3, 1, 1, bias=False)
    model.bn1 = nn.BatchNorm2d(channels[0])
    previous = channels[0]
    for i, (c, stride) in enumerate(zip(channels, (1, 2, 2, 2)), start=1):
        setattr(model, f"layer{i}", nn.Sequential(BasicBlock(previous, c, stride),
                                                  BasicBlock(c, c, 1)))
        previous = c
    model.linear = nn.Linear(channels[-1], num_classes)
    return model


def run_one(op: str | None, args: argparse.Namespace, data: tuple) -> dict[str, Any]:
    """Train ResNet-18 (+ ``op`` after ``args.stages``) with the A1 recipe; its test errors."""
    train_set, test_set, mean, std = data
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    model = resnet18(train_set.num_classes, args.width)
    if op is not None:
        add_self_calibration(model, op, args.stages)
    size = train_set.images.shape[-1]
    macs = count_macs(model, torch.zeros(1, 3, size, size))
    params = count_params(model)
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), args.lr, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.1)
    train_loader = TensorLoader(
        train_set, args.batch_size, shuffle=True, drop_last=True,
        augment=Augment(mean, std, max(1, size // 8), True, 0), device=device, seed=args.seed,
    )
    test_loader = TensorLoader(
        test_set, args.batch_size, augment=Augment(mean, std, 0, False, 0), device=device
    )
    name = op or "baseline"
    start = time.perf_counter()
    for epoch in range(args.epochs):
        train_loader.set_epoch(epoch)
        train_metrics = train_one_epoch(
            model, train_loader, optimizer, progress=not args.no_progress,
            desc=f"{name} {epoch + 1}/{args.epochs}",
        )
        scheduler.step()
        _logger.info("%s epoch %d/%d: train loss %.4f top-1 err %.2f%%", name, epoch + 1,
                     args.epochs, train_metrics["loss"], train_metrics["top1_err"])
    test = evaluate(model, test_loader)
    return {
        "op": op,
        "top1_err": test["top1_err"],
        "top5_err": test["top5_err"],
        "macs": macs,
        "params": params,
        "train_s": time.perf_counter() - start,
    }


def markdown_table(rows: list[dict[str, Any]], caption: str) -> str:
    """Table 1's layout: baseline absolute, op rows with differences to the baseline."""
    base = rows[0]
    lines = [
        caption,
        "",
        "| Model | Type | Kernels | Top-1 err (%) | Top-5 err (%) | MACs (M) | Params (M) |",
        "|---|---|---|---|---|---|---|",
        f"| ResNet-18 | - | - | {base['top1_err']:.2f} | {base['top5_err']:.2f} | "
        f"{base['macs'] / 1e6:.2f} | {base['params'] / 1e6:.2f} |",
    ]
    for row in rows[1:]:
        model, kind, kernels = OPS[row["op"]]
        d1 = row["top1_err"] - base["top1_err"]
        d5 = row["top5_err"] - base["top5_err"]
        lines.append(
            f"| {model} | {kind} | {kernels} | {row['top1_err']:.2f} ({d1:+.2f}) | "
            f"{row['top5_err']:.2f} ({d5:+.2f}) | {(row['macs'] - base['macs']) / 1e6:+.3f} | "
            f"{(row['params'] - base['params']) / 1e6:+.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = load_data(args.data_dir, args.image_size)
    train_set = data[0]
    rows = [run_one(op, args, data) for op in [None, *args.op]]
    size = train_set.images.shape[-1]
    quick = ", quick mode: narrower and shorter than the paper" if args.quick else ""
    caption = (
        f"Self-calibration ops after ResNet-18 stages {', '.join(map(str, args.stages))} on "
        f"{train_set.name} ({size}x{size}, {args.epochs} epochs, batch {args.batch_size}, "
        f"width x{args.width:g}{quick}). Errors of the last epoch; differences to the "
        "baseline in brackets; MACs at batch 1."
    )
    table = markdown_table(rows, caption)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"args": vars(args), "rows": rows, "table": table}
    (out / "results.json").write_text(json.dumps(record, indent=2))
    return rows


if __name__ == "__main__":
    main()
