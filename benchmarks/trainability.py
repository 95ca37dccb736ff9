"""Trainability of NOS genotypes (issue: the cells the search finds must train).

Draws many genotypes of the ``nos`` space and trains each briefly on the bundled digits
with the quick evaluation recipe, beside DARTS_V2 under the same recipe:

- ``random_<i>``: random architecture weights (N(0, 1) logits) through ``derive``, as a
  search that has not converged would hand over;
- ``t1_<op>`` / ``t2_<op>``: DARTS_V2's cells with every self-calibration op ``op`` at
  tier 1 (the second edge of each block becomes ``op`` from the same source) or at tier 2
  (every block's second tier is ``op``), in the normal and the reduction cell at once.

Recipe (the quick evaluation of the training guide): 8 cells, 16 channels, 16 x 16 digits,
batch 64, 10 epochs, SGD lr 0.025 momentum 0.9 weight decay 3e-4, cosine to 0, gradient
clipping at 5, drop path 0.3 ramped linearly, random crop (pad 2), flip, cutout 8; no
auxiliary head (DARTS's head takes the 8 x 8 maps of 32 x 32 inputs). Reported per
genotype: whether every loss was finite, the peak absolute activation of any cell output
in training, the last epoch's training loss, the test loss in eval mode (running
BatchNorm statistics) and in train mode (batch statistics), and the test top-1 accuracy.

    python benchmarks/trainability.py --jobs 2 --out benchmarks/results/trainability.json \\
        --md-out benchmarks/results/trainability.md --plot docs/img/trainability.png
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_output_args, metadata, publish  # noqa: E402

from nos_ops.data import Augment, TensorLoader, channel_stats, load_digits  # noqa: E402
from nos_ops.genotype import DARTS_V2, BlockGene, CellGene, Genotype, derive  # noqa: E402
from nos_ops.models.eval import NetworkCIFAR  # noqa: E402
from nos_ops.space import ATTENTION_OPS, DYNAMIC_OPS, get_space  # noqa: E402


@dataclass(frozen=True)
class Recipe:
    """The quick evaluation recipe on the digits (see the module docstring)."""

    epochs: int = 10
    max_steps_per_epoch: int | None = None
    layers: int = 8
    channels: int = 16
    image_size: int = 16
    batch_size: int = 64
    lr: float = 0.025
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    drop_path: float = 0.3
    cutout: int = 8
    constant_lr: bool = False


PROBE = Recipe(epochs=4, max_steps_per_epoch=15, constant_lr=True, drop_path=0.0, cutout=0)
"""The trainability issue's probe: 60 SGD steps at a constant lr 0.025, batch 64."""


SMOKE = Recipe(epochs=2, max_steps_per_epoch=6, layers=5, channels=8, batch_size=32)


def _with_blocks(cell: CellGene, edit) -> CellGene:
    return CellGene(tuple(edit(block) for block in cell.blocks), cell.concat)


def hand_made(op: str, tier: int) -> Genotype:
    """DARTS_V2 with ``op`` at ``tier`` of every block of both cells."""
    if tier == 1:

        def edit(block: BlockGene) -> BlockGene:
            (first, (_, source)) = block.edges
            return BlockGene((first, (op, source)), block.tier2)
    else:

        def edit(block: BlockGene) -> BlockGene:
            return BlockGene(block.edges, op)

    return Genotype(_with_blocks(DARTS_V2.normal, edit), _with_blocks(DARTS_V2.reduce, edit))


def random_genotype(seed: int) -> Genotype:
    """``derive`` of N(0, 1) architecture logits of the ``nos`` space."""
    space = get_space("nos")
    g = torch.Generator().manual_seed(seed)
    shape = (space.num_edges, space.num_ops)
    return derive(torch.randn(shape, generator=g), torch.randn(shape, generator=g), space)


def genotypes(num_random: int, ops: Sequence[str]) -> dict[str, Genotype]:
    """DARTS_V2, the hand-made tier-1 and tier-2 genotypes of ``ops``, and random ones."""
    drawn = {"DARTS_V2": DARTS_V2}
    for tier in (1, 2):
        drawn.update({f"t{tier}_{op}": hand_made(op, tier) for op in ops})
    drawn.update({f"random_{i}": random_genotype(i) for i in range(num_random)})
    return drawn


def self_calibration_ops(genotype: Genotype) -> int:
    """How many self-calibration ops (tier 1 and tier 2) both cells hold."""
    names = set(ATTENTION_OPS) | set(DYNAMIC_OPS)
    count = 0
    for cell in (genotype.normal, genotype.reduce):
        for block in cell.blocks:
            count += sum(name in names for name, _ in block.edges) + (block.tier2 in names)
    return count


def _test_loss(model: NetworkCIFAR, images: torch.Tensor, labels: torch.Tensor) -> tuple:
    with torch.no_grad():
        logits, _ = model(images)
    loss = F.cross_entropy(logits, labels).item()
    return loss, 100.0 * (logits.argmax(1) == labels).float().mean().item()


def train_quick(genotype: Genotype, recipe: Recipe = Recipe(), seed: int = 0) -> dict[str, Any]:
    """Train ``genotype`` with ``recipe`` on the digits; the measurements of one row."""
    torch.manual_seed(seed)
    train_set, _, test_set = load_digits(recipe.image_size)
    mean, std = channel_stats(train_set)
    augment = Augment(mean, std, recipe.image_size // 8, True, recipe.cutout)
    loader = TensorLoader(train_set, recipe.batch_size, True, True, augment, seed=seed)
    model = NetworkCIFAR(recipe.channels, 10, recipe.layers, genotype, auxiliary=False)
    optimizer = torch.optim.SGD(
        model.parameters(), recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay
    )
    steps = len(loader) if recipe.max_steps_per_epoch is None else recipe.max_steps_per_epoch
    steps = min(steps, len(loader))
    total = recipe.epochs * steps

    def factor(step: int) -> float:
        return 1.0 if recipe.constant_lr else 0.5 * (1 + math.cos(math.pi * step / total))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    peak = 0.0

    def track(module, inputs, output) -> None:
        nonlocal peak
        peak = max(peak, output.detach().abs().max().item())

    hooks = [cell.register_forward_hook(track) for cell in model.cells]
    losses, finite, start = [], True, time.perf_counter()
    for epoch in range(recipe.epochs):
        model.train()
        model.drop_path_prob = recipe.drop_path * epoch / recipe.epochs
        loader.set_epoch(epoch)
        epoch_losses = []
        for step, (images, labels) in enumerate(loader):
            if step == steps:
                break
            logits, _ = model(images)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            optimizer.step()
            scheduler.step()
            epoch_losses.append(loss.item())
            finite = finite and math.isfinite(epoch_losses[-1])
        losses.append(statistics.fmean(epoch_losses))
    for hook in hooks:
        hook.remove()
    images = Augment(mean, std, 0, False, 0)(test_set.images)
    model.eval()
    eval_loss, accuracy = _test_loss(model, images, test_set.labels)
    model.train()
    model.drop_path_prob = 0.0
    train_mode_loss, _ = _test_loss(model, images, test_set.labels)
    recalibrate_batchnorm(model, loader)
    model.eval()
    recalibrated_loss, _ = _test_loss(model, images, test_set.labels)
    return {
        "finite": finite,
        "peak_activation": peak,
        "train_loss": losses[-1],
        "eval_loss": eval_loss,
        "train_mode_loss": train_mode_loss,
        "recalibrated_eval_loss": recalibrated_loss,
        "accuracy": accuracy,
        "epoch_losses": losses,
        "seconds": time.perf_counter() - start,
    }


def recalibrate_batchnorm(model: torch.nn.Module, loader: TensorLoader) -> None:
    """Replace every BatchNorm's running statistics by their average over one pass of
    ``loader`` with the final weights ("precise BN"): tells a lag of the running statistics
    apart from a real train/eval mismatch."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    model.train()
    loader.set_epoch(10**6)
    with torch.no_grad():
        for images, _ in loader:
            model(images)


def _strip(genotype: Genotype, keep) -> Genotype:
    """``genotype`` with the tier-2 ops that ``keep`` rejects removed."""

    def edit(block: BlockGene) -> BlockGene:
        return BlockGene(block.edges, block.tier2 if keep(block.tier2) else None)

    return Genotype(_with_blocks(genotype.normal, edit), _with_blocks(genotype.reduce, edit))


def variants(genotype: Genotype) -> dict[str, Genotype]:
    """The trainability issue's ablation table of one found genotype."""
    attention, dynamic = set(ATTENTION_OPS), set(DYNAMIC_OPS)
    no_tier2 = _strip(genotype, lambda op: False)

    def plain(block: BlockGene) -> BlockGene:
        edges = tuple(("identity" if op in attention | dynamic else op, s) for op, s in block.edges)
        return BlockGene(edges, block.tier2)

    return {
        "as found": genotype,
        "tier-2 dynamic conv removed": _strip(genotype, lambda op: op not in dynamic),
        "tier-2 attention removed": _strip(genotype, lambda op: op not in attention),
        "no tier 2": no_tier2,
        "no tier 2, tier-1 self-calibration -> identity": Genotype(
            _with_blocks(no_tier2.normal, plain), _with_blocks(no_tier2.reduce, plain)
        ),
        "DARTS_V2": DARTS_V2,
    }


def _row(job: tuple[str, Genotype, Recipe, int]) -> dict[str, Any]:
    name, genotype, recipe, seed = job
    torch.set_num_threads(1)  # one process per core (--jobs)
    row = {"genotype": name, "self_calibration_ops": self_calibration_ops(genotype)}
    row.update(train_quick(genotype, recipe, seed))
    loss_ok = row["eval_loss"] <= 1.5 * row["train_mode_loss"] + 0.05
    row["trains"] = row["finite"] and loss_ok and row["epoch_losses"][-1] < row["epoch_losses"][0]
    row["genotype_json"] = genotype.to_dict()
    return row


def verdict(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets: every genotype trains; the median NOS accuracy is at least
    DARTS_V2's minus 2 points."""
    darts = next(r["accuracy"] for r in rows if r["genotype"] == "DARTS_V2")
    nos = [r["accuracy"] for r in rows if r["genotype"] != "DARTS_V2"]
    median = statistics.median(nos) if nos else float("nan")
    return {
        "all_train": all(r["trains"] for r in rows),
        "darts_v2_accuracy": darts,
        "nos_median_accuracy": median,
        "median_within_2_points": median >= darts - 2.0,
    }


def plot(rows: Sequence[dict[str, Any]], out: str) -> None:
    """Accuracy per genotype (bars, DARTS_V2 marked) and the training-loss curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5), width_ratios=(3, 2))
    names = [r["genotype"] for r in rows]
    colors = ["tab:gray" if n == "DARTS_V2" else "tab:blue" for n in names]
    left.bar(range(len(rows)), [r["accuracy"] for r in rows], color=colors)
    left.set_xticks(range(len(rows)), names, rotation=70, ha="right", fontsize=8)
    left.set_ylabel("digits test top-1 accuracy (%)")
    left.axhline(
        rows[0]["accuracy"] - 2, color="tab:red", lw=0.8, ls="--", label="DARTS_V2 - 2 points"
    )
    left.legend(loc="lower left")
    for r in rows:
        style = {"color": "black", "lw": 2} if r["genotype"] == "DARTS_V2" else {"alpha": 0.5}
        right.plot(range(1, len(r["epoch_losses"]) + 1), r["epoch_losses"], **style)
    right.set_xlabel("epoch")
    right.set_ylabel("training loss (mean per epoch)")
    right.set_yscale("log")
    fig.suptitle("Trainability of NOS genotypes, bundled 8x8 digits at 16x16 (not CIFAR)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


COLUMNS = [
    ("genotype", "genotype"),
    ("self_calibration_ops", "self-cal. ops"),
    ("finite", "finite"),
    ("peak_activation", "peak activation"),
    ("train_loss", "train loss"),
    ("train_mode_loss", "test loss (train mode)"),
    ("eval_loss", "test loss (eval mode)"),
    ("recalibrated_eval_loss", "eval, BN recalibrated"),
    ("accuracy", "test acc %"),
    ("trains", "trains"),
]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--random", type=int, default=8, help="random genotypes (default 8)")
    parser.add_argument(
        "--ops",
        nargs="+",
        default=list(ATTENTION_OPS + DYNAMIC_OPS),
        help="self-calibration ops of the hand-made genotypes",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="processes, one thread each")
    parser.add_argument("--plot", default=None, help="write the picture here (PNG)")
    parser.add_argument(
        "--variants",
        metavar="GENOTYPE_JSON",
        help="instead: the ablation table of one found genotype, trained "
        "with the issue's probe (60 steps at a constant lr 0.025)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="2 random genotypes, 2 ops, a tiny recipe (seconds)"
    )
    add_output_args(parser)
    args = parser.parse_args(argv)
    recipe = SMOKE if args.smoke else PROBE if args.variants else Recipe()
    if args.variants:
        drawn = variants(Genotype.load(args.variants))
    else:
        ops = args.ops[:1] if args.smoke else args.ops
        drawn = genotypes(2 if args.smoke else args.random, ops)
    jobs = [(name, g, recipe, args.seed) for name, g in drawn.items()]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(_row, jobs))
    else:
        rows = [_row(job) for job in jobs]
    result = verdict(rows)
    meta = metadata(
        torch.device("cpu"),
        dtype="float32",
        recipe=vars(recipe),
        seed=args.seed,
        jobs=args.jobs,
        data="bundled 8x8 digits resized to 16x16 (not CIFAR)",
        **result,
    )
    notes = [
        f"every genotype trains (finite losses, falling loss, eval-mode test loss <= 1.5 x "
        f"train-mode + 0.05): {result['all_train']}",
        f"median accuracy of the NOS genotypes {result['nos_median_accuracy']:.1f} % vs "
        f"DARTS_V2 {result['darts_v2_accuracy']:.1f} % (target: at most 2 points below): "
        f"{result['median_within_2_points']}",
    ]
    title = "Trainability of NOS genotypes (digits, quick recipe)"
    if args.variants:
        title = f"Variants of {args.variants} (digits, 60 steps at a constant lr 0.025)"
    publish(args, title, meta, rows, rows, COLUMNS, notes)
    if args.plot:
        plot(rows, args.plot)
    return {"meta": meta, "rows": rows}


if __name__ == "__main__":
    main()
