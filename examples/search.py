"""Neural Operator Search in Python: what ``nos-ops search`` runs (Sec. 3.3 and 4.2).

    python examples/search.py                # quick teacher, then the quick search (digits)
    python examples/search.py --no-teacher   # the paper's w/o-AGS ablation
    python examples/search.py --data-dir ~/data/cifar-10-batches-py \\
        --teacher runs/teacher/teacher.pt    # the paper's search (see train_teacher.py)

Without ``--data-dir`` the search is quick on the bundled digits and, with ``teacher="auto"``
(the default), first trains (or reuses) a quick ResNet-18 teacher in ``runs/teacher``: the
attention-guided search of the paper (Eqs. 10, 12, 13).
"""

from __future__ import annotations

import argparse
import time

import torch

from nos_ops.cli import describe_genotype
from nos_ops.search import SearchConfig, run_search


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", help="CIFAR folder (default: the digits, quick)")
    parser.add_argument("--teacher", default="auto", help="teacher.pt (default: quick one)")
    parser.add_argument("--no-teacher", dest="teacher", action="store_const", const=None)
    parser.add_argument("--out", default="runs/search")
    run = parser.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true")
    run.add_argument("--overwrite", action="store_true", help="empty --out first")
    args = parser.parse_args(argv)
    if args.data_dir is None:
        torch.set_num_threads(1)  # the quick supernet runs thousands of tiny ops per step
    began = time.perf_counter()
    genotype = run_search(
        SearchConfig(
            data_dir=args.data_dir,
            teacher=args.teacher,
            out=args.out,
            resume=args.resume,
            overwrite=args.overwrite,
        )
    )
    print(describe_genotype(genotype))
    print(
        f"done in {time.perf_counter() - began:.0f} s (teacher included); train the cell: "
        f"python examples/train.py --genotype {args.out}/genotype.json"
    )


if __name__ == "__main__":
    main()
