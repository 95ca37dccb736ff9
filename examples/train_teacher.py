"""Train a teacher for attention-guided search (paper Sec. 4.2, Appendix A1).

    # the paper's teacher on CIFAR-10: PyramidNet-110 (bottleneck, alpha 84), 300 epochs
    python examples/train_teacher.py --data-dir data/cifar-10-batches-py
    # a small one on the bundled digits (ResNet-18, 16 x 16, 10 epochs: about 2 minutes)
    python examples/train_teacher.py
    python examples/search.py --teacher runs/teacher/teacher.pt

Appendix A1 recipe: 300 epochs, batch 32, SGD lr 0.025 divided by 10 every 30 epochs,
momentum 0.9, weight decay 1e-4, random crop and horizontal flip. Without --data-dir the
run is --quick on the digits (ResNet-18, 16 x 16, 10 epochs, one torch thread as in
examples/search.py), which the quick search can use (same image size).

Outputs in --out (default runs/teacher): teacher.pt ({"arch", "num_classes",
"state_dict", "image_size", "test_top1_err"}, what examples/search.py --teacher reads),
checkpoint.pt after every epoch (--resume continues from it), log.jsonl.
"""

from __future__ import annotations

import argparse
import random
import time
from itertools import islice
from pathlib import Path

import torch

from nos_ops.data import Augment, TensorLoader
from nos_ops.models.teachers import create_teacher
from nos_ops.trainer import evaluate, load_data, train_one_epoch
from nos_ops.utils import JsonlLogger, load_checkpoint, save_checkpoint

ARCHS = ("pyramidnet110", "resnet18")
DEFAULTS = {"arch": "pyramidnet110", "epochs": 300, "image_size": None}
QUICK = {"arch": "resnet18", "epochs": 10, "image_size": 16}


class _Capped:
    """The first ``steps`` batches of a loader (all of them when ``steps`` is None)."""

    def __init__(self, loader: TensorLoader, steps: int | None) -> None:
        self.loader = loader
        self.steps = steps

    def __len__(self) -> int:
        return len(self.loader) if self.steps is None else min(self.steps, len(self.loader))

    def __iter__(self):
        return islice(iter(self.loader), len(self))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 1)[1],
    )
    parser.add_argument("--arch", choices=ARCHS, help="default pyramidnet110 (quick: resnet18)")
    parser.add_argument("--data-dir", help="cifar-10-batches-py or cifar-100-python "
                        "(default: the bundled digits)")
    parser.add_argument("--epochs", type=int, help="default 300 (quick: 10)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.025)
    parser.add_argument("--lr-step", type=int, default=30, help="epochs between lr decays")
    parser.add_argument("--lr-gamma", type=float, default=0.1, help="lr decay factor")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--image-size", type=int, help="digits resolution, default 32 (quick: 16)")
    parser.add_argument("--max-steps-per-epoch", type=int, help="cap the steps per epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    parser.add_argument("--out", default="runs/teacher", help="output folder")
    parser.add_argument("--resume", action="store_true", help="continue from --out")
    parser.add_argument("--quick", action=argparse.BooleanOptionalAction,
                        help="a few-minute run (default: on without --data-dir)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: 1 for "
                        "--quick; else torch's default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    quick = args.quick if args.quick is not None else args.data_dir is None
    if args.threads is None and quick:
        args.threads = 1
    for key, value in (QUICK if quick else DEFAULTS).items():
        if getattr(args, key) is None and not (key == "image_size" and args.data_dir):
            setattr(args, key, value)
    if args.data_dir is not None and args.image_size not in (None, 32):
        parser.error(f"--image-size {args.image_size} only applies to the digits; CIFAR is 32")
    for name in ("epochs", "batch_size", "lr_step"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)} must be >= 1")
    return args


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def train_teacher(args: argparse.Namespace) -> dict:
    """Train the teacher of ``args``; returns the contents of teacher.pt (without weights)."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but CUDA is not available")
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    if args.amp == "fp16" and not use_cuda:
        raise SystemExit("--amp fp16 needs CUDA; use --amp bf16 on the CPU")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else None
    train_set, test_set, mean, std = load_data(data_dir, args.image_size)
    size = train_set.images.shape[-1]
    augment = Augment(mean, std, crop_padding=max(size // 8, 1), flip=True)
    train_loader = TensorLoader(train_set, args.batch_size, shuffle=True, drop_last=True,
                                augment=augment, device=device, seed=args.seed)
    test_loader = TensorLoader(test_set, 256, augment=Augment(mean, std, 0, False), device=device)
    model = create_teacher(args.arch, train_set.num_classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, args.lr_step, args.lr_gamma)
    scaler = torch.amp.GradScaler("cuda") if args.amp == "fp16" else None
    start = 0
    checkpoint = out / "checkpoint.pt"
    if args.resume and checkpoint.is_file():
        state = load_checkpoint(checkpoint, map_location=device)
        if (state["arch"], state["num_classes"]) != (args.arch, train_set.num_classes):
            raise SystemExit(f"--resume: {checkpoint} holds a {state['arch']} for "
                             f"{state['num_classes']} classes; this run trains a {args.arch} "
                             f"for {train_set.num_classes}")
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        start = state["epoch"]
    logger = JsonlLogger(out / "log.jsonl", truncate_from_epoch=start + 1 if start else None)
    progress = not args.no_progress
    test = {"top1_err": float("nan")}
    for epoch in range(start + 1, args.epochs + 1):
        began = time.perf_counter()
        lr = scheduler.get_last_lr()[0]
        train_loader.set_epoch(epoch - 1)
        train = train_one_epoch(model, _Capped(train_loader, args.max_steps_per_epoch),
                                optimizer, amp=args.amp, scaler=scaler, progress=progress,
                                desc=f"{args.arch} epoch {epoch}/{args.epochs}")
        scheduler.step()
        test = evaluate(model, _Capped(test_loader, args.max_steps_per_epoch), amp=args.amp)
        logger.log(epoch=epoch, lr=lr, train_loss=train["loss"], train_err=train["top1_err"],
                   test_loss=test["loss"], test_err=test["top1_err"],
                   seconds=time.perf_counter() - began)
        save_checkpoint({"epoch": epoch, "arch": args.arch, "num_classes": train_set.num_classes,
                         "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "rng": _rng_state(),
                         "args": vars(args)}, checkpoint)
        if progress:
            print(f"epoch {epoch}/{args.epochs}: lr {lr:.4g}, train loss {train['loss']:.4f}, "
                  f"train error {train['top1_err']:.2f}%, test error {test['top1_err']:.2f}%")
    if start >= args.epochs:  # resumed a finished run
        test = evaluate(model, _Capped(test_loader, args.max_steps_per_epoch), amp=args.amp)
    info = {"arch": args.arch, "num_classes": train_set.num_classes, "image_size": size,
            "test_top1_err": test["top1_err"], "epochs": args.epochs}
    save_checkpoint({**info, "state_dict": model.state_dict()}, out / "teacher.pt")
    return info


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    info = train_teacher(args)
    print(f"{info['arch']} teacher ({info['num_classes']} classes, {info['image_size']} x "
          f"{info['image_size']}): test error {info['test_top1_err']:.2f}%")
    print(f"saved {Path(args.out) / 'teacher.pt'}; use it with: python examples/search.py "
          f"--teacher {Path(args.out) / 'teacher.pt'}"
          + (f" --image-size {info['image_size']}" if args.data_dir is None else ""))


if __name__ == "__main__":
    main()
