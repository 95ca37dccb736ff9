"""Neural Operator Search in Python: what ``nos-ops search`` runs (Sec. 3.3 and 4.2).

    python examples/search.py                # quick teacher, then the quick search (digits)
    python examples/search.py --no-teacher   # the paper's w/o-AGS ablation
    python examples/search.py --overwrite    # start runs/search afresh (or --resume it)

Without ``data_dir`` the search is quick on the bundled digits and, with ``teacher="auto"``
(the default), first trains (or reuses) a quick ResNet-18 teacher in ``runs/teacher``: the
attention-guided search of the paper (Eqs. 10, 12, 13). On CIFAR pass
``data_dir=...`` and ``teacher="runs/teacher/teacher.pt"`` (see examples/train_teacher.py).
"""

from __future__ import annotations

import sys
import time

import torch

from nos_ops.cli import describe_genotype
from nos_ops.search import SearchConfig, run_search


def main(argv: list[str] | None = None) -> None:
    flags = set(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)  # the quick supernet runs thousands of tiny ops per step
    config = SearchConfig(
        out="runs/search",
        teacher=None if "--no-teacher" in flags else "auto",
        resume="--resume" in flags,
        overwrite="--overwrite" in flags,
    )
    began = time.perf_counter()
    genotype = run_search(config)
    print(describe_genotype(genotype))
    print(f"done in {time.perf_counter() - began:.0f} s (teacher included); "
          "train the cell: python examples/train.py --genotype runs/search/genotype.json")


if __name__ == "__main__":
    main()
