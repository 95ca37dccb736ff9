"""Attention-guided Neural Operator Search (paper Sec. 3.3 and 4.2): find a cell.

    # a few minutes on 2 CPU cores: the bundled digits, a small supernet, no teacher
    python examples/search.py
    # the paper's search on CIFAR-10 with a PyramidNet-110 teacher (second order as DARTS)
    python examples/train_teacher.py --data-dir data/cifar-10-batches-py --out runs/teacher
    python examples/search.py --data-dir data/cifar-10-batches-py \\
        --teacher runs/teacher/teacher.pt --second-order
    # several GPUs or CPU processes
    torchrun --nproc_per_node=4 examples/search.py --data-dir data/cifar-10-batches-py

Without --data-dir the search runs --quick on the digits (8 channels, 5 cells, 16 x 16,
8 epochs of 6 steps of batch 32, one torch thread); --no-quick gives the paper's settings
(16 channels, 8 cells, 25 epochs, batch 64). One thread, because the quick supernet runs
thousands of tiny ops per step: on a 2-core machine that also runs another job, a step
took 2.5 s with one thread and 93 s with two (the threads spin waiting for each other).

The default is first-order search, for speed (the paper's ablations search first order;
its main search follows DARTS: --second-order). The default is no teacher, so that the
first command runs alone; for attention-guided search on the digits, train a small teacher
first (python examples/train_teacher.py, about 2 minutes) and pass
--teacher runs/teacher/teacher.pt.

Outputs in --out (default runs/search): genotype.json, genotype.png, arch_weights.png,
curves.png, search.jsonl and checkpoint.pt (--resume continues from it).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import torch

from nos_ops.genotype import CellGene
from nos_ops.search import NonFiniteLossError, SearchConfig, run_search
from nos_ops.space import SPACES

# flag -> SearchConfig field; flags left unset keep the config's (or --quick's) value
_FIELDS = {
    "data_dir": "data_dir",
    "space": "space",
    "second_order": "second_order",
    "teacher": "teacher",
    "at_weight": "at_weight",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "channels": "channels",
    "layers": "layers",
    "partial_channels": "partial_channels",
    "lr": "lr",
    "image_size": "image_size",
    "max_steps_per_epoch": "max_steps_per_epoch",
    "seed": "seed",
    "device": "device",
    "amp": "amp",
    "out": "out_dir",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 1)[1],
    )
    parser.add_argument("--data-dir", help="cifar-10-batches-py or cifar-100-python "
                        "(default: the bundled digits)")
    parser.add_argument("--space", choices=tuple(SPACES), help="search space, default nos")
    order = parser.add_mutually_exclusive_group()
    order.add_argument("--first-order", dest="second_order", action="store_const", const=False,
                       help="first-order architecture gradient (the default)")
    order.add_argument("--second-order", dest="second_order", action="store_const", const=True,
                       help="DARTS's unrolled (second-order) architecture gradient")
    teacher = parser.add_mutually_exclusive_group()
    teacher.add_argument("--teacher", metavar="PATH",
                         help="teacher.pt of examples/train_teacher.py: attention-guided search")
    teacher.add_argument("--no-teacher", dest="teacher", action="store_const", const=None,
                         help="no attention transfer (the default)")
    parser.add_argument("--at-weight", type=float, help="lambda of Eqs. 12-13, default 1e3")
    parser.add_argument("--epochs", type=int, help="default 25 (quick: 8)")
    parser.add_argument("--batch-size", type=int, help="global batch, default 64 (quick: 32)")
    parser.add_argument("--channels", type=int, help="initial channels, default 16 (quick: 8)")
    parser.add_argument("--layers", type=int, help="cells, default 8 (quick: 5)")
    parser.add_argument("--partial-channels", type=int, help="PC-DARTS K, default 1 (off)")
    parser.add_argument("--lr", type=float, help="weight learning rate, default 0.025")
    parser.add_argument("--image-size", type=int, help="digits resolution, default 32 (quick: 16)")
    parser.add_argument("--max-steps-per-epoch", type=int, help="cap the steps per epoch")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"))
    parser.add_argument("--out", help="output folder, default runs/search")
    parser.add_argument("--resume", action="store_true", help="continue from --out")
    parser.add_argument("--quick", action=argparse.BooleanOptionalAction,
                        help="a few-minute search (default: on without --data-dir)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: 1 for "
                        "--quick, whose tensors are tiny; else torch's default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--no-plots", action="store_true", help="no pictures (no matplotlib)")
    return parser.parse_args(argv)


def make_config(args: argparse.Namespace) -> SearchConfig:
    """The SearchConfig of the flags: the paper's settings (or --quick's), overridden by the
    flags given."""
    given = {field: getattr(args, flag) for flag, field in _FIELDS.items()
             if getattr(args, flag) is not None}
    quick = args.quick if args.quick is not None else args.data_dir is None
    return SearchConfig(**given, resume=args.resume, quick=quick,
                        progress=not args.no_progress, plots=not args.no_plots)


def describe_cell(name: str, cell: CellGene) -> str:
    """One line per block: ``node 2 <- sep_conv_3x3(0) + identity(1) | tier 2: ...``."""
    lines = [f"{name} cell (output: concat of nodes {', '.join(map(str, cell.concat))})"]
    for i, block in enumerate(cell.blocks):
        edges = " + ".join(f"{op}({source})" for op, source in block.edges)
        tier2 = f" | tier 2: {block.tier2}" if block.tier2 else ""
        lines.append(f"  node {i + 2} <- {edges}{tier2}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = make_config(args)
    threads = args.threads if args.threads is not None else 1 if config.resolved().quick else None
    if threads is not None:
        torch.set_num_threads(threads)
    began = time.perf_counter()
    try:
        genotype = run_search(config)
    except NonFiniteLossError as err:
        sys.exit(f"search stopped: {err}")
    if int(os.environ.get("RANK", "0")) != 0:
        return
    out = config.out_dir
    genotype_path = os.path.join(out, "genotype.json")
    resolved = config.resolved()
    print(describe_cell("normal", genotype.normal))
    print(describe_cell("reduction", genotype.reduce))
    settings = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(resolved).items()
                         if k in ("space", "channels", "layers", "epochs", "second_order",
                                  "teacher"))
    print(f"searched in {time.perf_counter() - began:.0f} s ({settings})")
    print(f"genotype: {genotype_path}")
    if config.plots:
        pictures = ("genotype.png", "arch_weights.png", "curves.png")
        print(f"pictures: {', '.join(os.path.join(out, p) for p in pictures)}")
    print(f"log: {os.path.join(out, 'search.jsonl')}, checkpoint: "
          f"{os.path.join(out, 'checkpoint.pt')}")
    print(f"train the cell: python examples/train.py --genotype {genotype_path} --quick")


if __name__ == "__main__":
    main()
