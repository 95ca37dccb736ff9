"""Train the teacher of attention-guided search in Python: what ``nos-ops teacher`` runs.

    python examples/train_teacher.py                 # quick: ResNet-18 on the digits, minutes
    python examples/train_teacher.py --data-dir ~/data/cifar-10-batches-py  # PyramidNet-110

The paper's teacher is PyramidNet-110 trained with the A1 recipe (Sec. 4.2, App. A1). The
file it writes, ``OUT/teacher.pt``, is what ``SearchConfig(teacher=...)`` reads
(:func:`nos_ops.search.load_teacher`).
"""

from __future__ import annotations

import argparse

from nos_ops.teacher import TeacherConfig, train_teacher


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", help="CIFAR folder (default: the digits, quick)")
    parser.add_argument("--out", default="runs/teacher")
    parser.add_argument("--overwrite", action="store_true", help="empty --out first")
    args = parser.parse_args(argv)
    config = TeacherConfig(data_dir=args.data_dir, out=args.out, overwrite=args.overwrite)
    result = train_teacher(config)
    print(
        f"{result['arch']}: test top-1 {result['test_top1']:.2f}% in {result['train_s']:.0f} s;"
        f" search with it: SearchConfig(teacher={result['path']!r}, data_dir=...)"
    )


if __name__ == "__main__":
    main()
