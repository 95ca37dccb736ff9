"""Self-calibration ops in ResNet-18 (Sec. 4.1, Table 1) in Python: what ``nos-ops study``
runs.

    python examples/resnet_self_calibration.py --quick      # the digits (the default), minutes
    python examples/resnet_self_calibration.py --data-dir ~/data/cifar-10-batches-py \\
        --op dynamic_conv_3x3 --op spatial_attention --stages 1 2 3      # Table 1's recipe

Trains the baseline and ResNet-18 with each op after the given stages (the A1 recipe), prints
the table in the paper's layout and writes it with every number to ``OUT/results.json``.
"""

from __future__ import annotations

import argparse

from nos_ops.study import OPS, StudyConfig, run_study


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", help="CIFAR folder (default: the digits, quick)")
    parser.add_argument("--quick", action="store_true", default=None, help="quick run")
    parser.add_argument("--op", action="append", choices=list(OPS), help="default: all")
    parser.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", default="runs/study")
    parser.add_argument("--overwrite", action="store_true", help="empty --out first")
    args = parser.parse_args(argv)
    run_study(
        StudyConfig(
            data_dir=args.data_dir,
            quick=args.quick,
            ops=args.op or list(OPS),
            stages=args.stages,
            out=args.out,
            overwrite=args.overwrite,
        )
    )


if __name__ == "__main__":
    main()
