"""Train an evaluation network from a genotype (paper Sec. 4.3) and report its test error.

    # a few minutes on 2 CPU cores, bundled digits
    python examples/train.py --genotype DARTS_V2 --quick
    # the paper's CIFAR-10 recipe (600 epochs); CIFAR-100 takes wd 5e-4 automatically
    python examples/train.py --genotype genotype.json --data-dir data/cifar-10-batches-py
    # several GPUs or CPU processes
    torchrun --nproc_per_node=4 examples/train.py --genotype genotype.json --data-dir ...
    # the ImageNet-mobile network: prints its MACs (must be < 600M) and parameters
    python examples/train.py --genotype genotype.json --imagenet-mobile

ImageNet training goes through the API with your own ``Dataset`` (see nos_ops.trainer):
``train(imagenet_mobile_config(genotype=...), train_dataset, val_dataset)``.
Outputs in --out: checkpoint.pt (carries the genotype), log.jsonl, curves.png, final.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import torch
import torch.distributed as dist

from nos_ops.genotype import get_genotype
from nos_ops.profile import count_macs, count_params
from nos_ops.trainer import TrainConfig, build_network, imagenet_mobile_config, train
from nos_ops.utils.checkpoint import load_checkpoint

# flags that set the TrainConfig field of the same name; unset ones keep the config's value
_FIELDS = (
    "genotype", "data_dir", "epochs", "batch_size", "lr", "weight_decay", "layers", "channels",
    "auxiliary_weight", "drop_path", "cutout", "image_size", "amp", "seed", "device", "out",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--genotype", help="genotype.json or a name (default DARTS_V2)")
    parser.add_argument("--data-dir", help="cifar-10-batches-py or cifar-100-python "
                        "(default: the bundled digits)")
    parser.add_argument("--epochs", type=int, help="default 600 (ImageNet 300)")
    parser.add_argument("--batch-size", type=int, help="global batch, default 128 (ImageNet 512)")
    parser.add_argument("--lr", type=float, help="initial learning rate, default 0.025 "
                        "(ImageNet 0.25); see TrainConfig for why not the printed 0.25")
    parser.add_argument("--weight-decay", type=float, help="default 3e-4 (5e-4 on CIFAR-100)")
    parser.add_argument("--layers", type=int, help="cells, default 20 (ImageNet 14)")
    parser.add_argument("--channels", type=int, help="initial channels, default 36 (ImageNet 48)")
    parser.add_argument("--auxiliary-weight", type=float, help="default 0.4; 0: no aux head")
    parser.add_argument("--drop-path", type=float, help="final drop-path probability, 0.3")
    parser.add_argument("--cutout", type=int, help="cutout length, default 16; 0: off")
    parser.add_argument("--image-size", type=int, help="digits resolution (default 32)")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--out", help="output folder, default runs/train")
    parser.add_argument("--resume", action="store_true",
                        help="continue --out/checkpoint.pt with its config (flags given win)")
    parser.add_argument("--quick", action="store_true",
                        help="digits, 8 cells, 16 channels, 16x16, 10 epochs: a few minutes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--imagenet-mobile", action="store_true",
                        help="build the ImageNet-mobile network, print MACs/params, exit")
    return parser.parse_args(argv)


def make_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of the flags: the paper's recipe overridden by the flags given; with
    --resume, the checkpoint's config overridden by the flags given."""
    given = {name: getattr(args, name) for name in _FIELDS if getattr(args, name) is not None}
    switches = {"channels_last": args.channels_last, "compile": args.compile,
                "quick": args.quick}
    given.update({k: v for k, v in switches.items() if v})
    given.update(resume=args.resume, progress=not args.no_progress)
    if args.resume:
        out = Path(given.get("out", TrainConfig.out))
        saved = load_checkpoint(out / "checkpoint.pt")["config"]
        return TrainConfig.from_dict({**saved, **given})
    if args.imagenet_mobile:
        return imagenet_mobile_config(**given)
    return TrainConfig(**given)


def describe_imagenet(config: TrainConfig) -> None:
    """Print the ImageNet-mobile network's cost; raise if it breaks the 600M MACs limit."""
    arch = {"network": "imagenet", "channels": config.channels, "layers": config.layers,
            "num_classes": config.num_classes or 1000, "auxiliary": config.auxiliary_weight > 0,
            "image_size": config.image_size}
    model = build_network(arch, get_genotype(config.genotype))
    params = count_params(model) - count_params(model.auxiliary_head or torch.nn.Identity())
    size = config.image_size
    macs = count_macs(model, torch.zeros(1, 3, size, size))
    print(f"ImageNet-mobile: {config.layers} cells, {config.channels} channels: "
          f"{params / 1e6:.2f}M params (without the auxiliary head), {macs / 1e6:.1f}M MACs "
          f"at {size}x{size} (limit {config.max_macs / 1e6:.0f}M)")
    if macs > config.max_macs:
        raise SystemExit(f"over the mobile setting's {config.max_macs / 1e6:.0f}M MACs")
    print("Train it through the API with your ImageNet Dataset: "
          "nos_ops.trainer.train(imagenet_mobile_config(...), train_dataset, val_dataset)")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = make_config(args)
    if args.imagenet_mobile:
        describe_imagenet(config)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        final = train(config)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(final, indent=2))
        print(f"top-1 error {final['top1_err']:.2f}%, top-5 error {final['top5_err']:.2f}%, "
              f"{final['params'] / 1e6:.3f}M params, {final['macs'] / 1e6:.1f}M MACs")


if __name__ == "__main__":
    main()
