"""Train the teacher of attention-guided search in Python: what ``nos-ops teacher`` runs.

    python examples/train_teacher.py                     # quick: ResNet-18 on the digits
    python examples/train_teacher.py ~/data/cifar-10-batches-py   # PyramidNet-110, 300 epochs

The paper's teacher is PyramidNet-110 trained with the A1 recipe (Sec. 4.2, App. A1). The file
it writes, ``runs/teacher/teacher.pt``, is what ``SearchConfig(teacher=...)`` reads
(:func:`nos_ops.search.load_teacher`).
"""

from __future__ import annotations

import sys

from nos_ops.teacher import TeacherConfig, train_teacher


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    config = TeacherConfig(data_dir=args[0] if args else None, out="runs/teacher")
    result = train_teacher(config)
    print(f"{result['arch']}: test top-1 {result['test_top1']:.2f}% in {result['train_s']:.0f} s;"
          f" search with it: SearchConfig(teacher={result['path']!r}, data_dir=...)")


if __name__ == "__main__":
    main()
