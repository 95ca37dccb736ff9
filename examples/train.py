"""Train an evaluation network from a genotype in Python: what ``nos-ops train`` runs.

    python examples/train.py --genotype runs/search/genotype.json      # quick, on the digits
    python examples/train.py --genotype DARTS_V2 --data-dir ~/data/cifar-10-batches-py

The recipe is the paper's (Sec. 4.3, App. A1); without ``--data-dir`` the run is quick on the
bundled digits (``--quick`` says so explicitly). ImageNet goes through the same function with
your own ``Dataset``: ``train(imagenet_mobile_config(genotype=...), train_set, val_set)``.
The network it writes (``OUT/network.pt``) is what :func:`nos_ops.network.load_network` reads.
"""

from __future__ import annotations

import argparse

from nos_ops.train import TrainConfig, train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--genotype", default="DARTS_V2", help="genotype.json or a name")
    parser.add_argument("--data-dir", help="CIFAR folder (default: the digits, quick)")
    parser.add_argument("--quick", action="store_true", default=None, help="quick run")
    parser.add_argument("--out", default="runs/train")
    parser.add_argument("--overwrite", action="store_true", help="empty --out first")
    args = parser.parse_args(argv)
    config = TrainConfig(
        genotype=args.genotype,
        data_dir=args.data_dir,
        quick=args.quick,
        out=args.out,
        overwrite=args.overwrite,
    )
    final = train(config)
    print(
        f"test top-1 {final['top1']:.2f}%, {final['params'] / 1e6:.3f}M params, "
        f"{final['macs'] / 1e6:.1f}M MACs: {args.out}/network.pt"
    )


if __name__ == "__main__":
    main()
