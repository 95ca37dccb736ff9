"""Self-calibration ops in ResNet-18 (Sec. 4.1, Table 1) in Python: what ``nos-ops study``
runs.

    python examples/resnet_self_calibration.py                    # quick, on the digits
    python examples/resnet_self_calibration.py ~/data/cifar-10-batches-py   # Table 1

Trains the baseline and ResNet-18 with each op after stages 1-3 (the A1 recipe), prints the
table in the paper's layout and writes it with every number to runs/study/results.json.
"""

from __future__ import annotations

import sys

from nos_ops.study import StudyConfig, run_study


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    config = StudyConfig(data_dir=args[0] if args else None,
                         ops=["dynamic_conv_3x3", "channel_attention"], out="runs/study")
    run_study(config)


if __name__ == "__main__":
    main()
