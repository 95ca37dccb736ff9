"""The ``nos-ops`` command: ``teacher``, ``search``, ``train``, ``study``, ``protocol``, ``export``.

Each subcommand builds its pipeline's config from the flags given (flags left out keep the
config's default, or its quick preset: every command is quick on the bundled digits when
``--data-dir`` is not given) and runs it on the engine. ``--resume --out RUN`` needs no other
flag: the settings come from ``RUN/checkpoint.pt`` and only ``--epochs`` and ``--lr`` (and
settings that do not change the numbers) may be given again. Argument errors print one line
and exit 2; a run that stops (a non-finite loss, a locked or non-empty folder, a bad
checkpoint) prints one line and exits 1; Ctrl-C says how to resume and exits 130.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .engine import (
    RESUMABLE,
    CheckpointError,
    NonFiniteLossError,
    RunLockedError,
    echo,
    load_checkpoint,
)

__all__ = ["main", "build_parser", "make_config", "describe_genotype"]

_DESCRIPTIONS = {
    "teacher": (
        "Train the teacher of attention-guided search (Sec. 3.3, 4.2; App. A1).",
        "nos-ops teacher                      # quick: ResNet-18 on the digits\n"
        "nos-ops teacher --data-dir ~/data/cifar-10-batches-py   # PyramidNet-110",
    ),
    "search": (
        "Attention-guided Neural Operator Search (Sec. 3.3, 4.2; Eqs. 10-13).",
        "nos-ops search                       # quick teacher + quick search, digits\n"
        "nos-ops search --no-teacher          # the w/o-AGS ablation\n"
        "nos-ops search --data-dir ~/data/cifar-10-batches-py --teacher "
        "runs/teacher/teacher.pt",
    ),
    "train": (
        "Train an evaluation network from a genotype (Sec. 4.3; App. A1, A2).",
        "nos-ops train --genotype runs/search/genotype.json   # quick, digits\n"
        "nos-ops train --genotype genotype.json --data-dir ~/data/cifar-10-batches-py",
    ),
    "study": (
        "ResNet-18 with each self-calibration op (Sec. 4.1, Table 1).",
        "nos-ops study --op dynamic_conv_3x3 --op channel_attention   # quick, digits",
    ),
    "protocol": (
        "The paper's ablations as protocols: variants x seeds, each searched, derived and "
        "trained (Sec. 4.4: Table 4, Fig. 7, Space Generality).",
        "nos-ops protocol --protocol table4 --jobs 2        # quick, digits, seeds 0 1 2\n"
        "nos-ops protocol --protocol fig7 --seeds 0 --search epochs=4\n"
        "nos-ops protocol --resume --out runs/protocol      # continue a half-finished grid",
    ),
    "export": (
        "Export a trained network (Sec. 4.3) with torch.export (.pt2) or to ONNX.",
        "nos-ops export --network runs/train/network.pt --format onnx --out net.onnx",
    ),
}

# per subcommand: (flag, config field, type or action, help); defaults are shown from the config
_COMMON = [
    (
        "--data-dir",
        "data_dir",
        str,
        "cifar-10-batches-py or cifar-100-python folder, or an image folder (one subfolder "
        "per class, or train/ and test/ each with them; extra images) (leave out: the "
        "bundled digits, quick)",
    ),
    ("--epochs", "epochs", int, "epochs"),
    ("--batch-size", "batch_size", int, "global batch"),
    ("--lr", "lr", float, "initial learning rate"),
    ("--image-size", "image_size", int, "digits resolution (CIFAR is 32)"),
    ("--mean", "mean", [float], "normalisation mean per channel (default: from the data)"),
    ("--std", "std", [float], "normalisation std per channel (given with --mean)"),
    ("--seed", "seed", int, "random seed"),
    ("--device", "device", ("auto", "cpu", "cuda"), "device"),
    ("--out", "out", str, "run folder"),
]
_AMP = [("--amp", "amp", ("none", "bf16", "fp16"), "mixed precision")]
_FLAGS: dict[str, list[tuple[str, str, Any, str]]] = {
    "teacher": _COMMON
    + _AMP
    + [
        ("--arch", "arch", ("pyramidnet110", "resnet18"), "teacher network"),
        ("--lr-step", "lr_step", int, "epochs between lr decays"),
        ("--max-steps-per-epoch", "max_steps_per_epoch", int, "cap the steps per epoch"),
    ],
    "search": _COMMON
    + _AMP
    + [
        ("--space", "space", str, "search space (nos, darts, feature, ...)"),
        ("--channels", "channels", int, "initial channels of the supernet"),
        ("--layers", "layers", int, "cells of the supernet"),
        ("--partial-channels", "partial_channels", int, "PC-DARTS K (1: off)"),
        ("--warmup-epochs", "warmup_epochs", int, "epochs of weight steps only"),
        ("--at-weight", "at_weight", float, "lambda of Eqs. 12-13"),
        (
            "--at-steps",
            "at_steps",
            ("both", "weights"),
            "where attention transfer applies: both steps (AGS) or the weight step only "
            "(distillation only)",
        ),
        (
            "--teacher-dir",
            "teacher_dir",
            str,
            "folder of the quick teacher (default: 'teacher' beside --out)",
        ),
        ("--max-steps-per-epoch", "max_steps_per_epoch", int, "cap the steps per epoch"),
    ],
    "train": _COMMON
    + _AMP
    + [
        ("--genotype", "genotype", str, "genotype.json or a name (DARTS_V2, ...)"),
        ("--layers", "layers", int, "cells"),
        ("--channels", "channels", int, "initial channels"),
        ("--weight-decay", "weight_decay", float, "weight decay (default 3e-4; 5e-4 on CIFAR-100)"),
        ("--auxiliary-weight", "auxiliary_weight", float, "auxiliary head weight (0: none)"),
        ("--drop-path", "drop_path", float, "final drop-path probability"),
        ("--cutout", "cutout", int, "cutout length (0: off)"),
    ],
    "study": _COMMON
    + [
        ("--width", "width", float, "channel multiplier of ResNet-18"),
        ("--max-steps-per-epoch", "max_steps_per_epoch", int, "cap the steps per epoch"),
    ],
}


_FLAGS["protocol"] = [
    ("--protocol", "protocol", ("table4", "fig7", "generality"), "the paper's study"),
    ("--variants", "variants", [str], "run only these variants of the protocol (their keys)"),
    ("--seeds", "seeds", [int], "seeds: one search and training per variant and seed"),
    _COMMON[0],
    ("--image-size", "image_size", int, "digits / image-folder resolution (CIFAR is 32)"),
    *_COMMON[5:7],
    ("--teacher", "teacher", str, "teacher.pt (default 'auto': the quick digits teacher)"),
    ("--search", "search", dict, "a search setting of every cell, e.g. epochs=4 (repeatable)"),
    ("--train", "train", dict, "a training setting of every cell, e.g. epochs=20 (repeatable)"),
    (
        "--jobs",
        "jobs",
        int,
        "grid cells at once, each in its own process (default: one per CPU core, 1 on CUDA)",
    ),
    ("--seed", "seed", int, "seed of the teacher"),
    *_COMMON[-2:],
]


def _setting(text: str) -> tuple[str, Any]:
    """``FIELD=VALUE`` -> (field, value): VALUE read as JSON (numbers, true, null, lists),
    else kept as a string."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not FIELD=VALUE (e.g. epochs=4)")
    try:
        return name.replace("-", "_"), json.loads(value)
    except ValueError:
        return name.replace("-", "_"), value


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``nos-ops search: error: ... (see --help)``, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _config_class(command: str) -> type:
    if command == "teacher":
        from .teacher import TeacherConfig as cls
    elif command == "search":
        from .search import SearchConfig as cls
    elif command == "train":
        from .train import TrainConfig as cls
    elif command == "protocol":
        from .protocols import ProtocolConfig as cls
    else:
        from .study import StudyConfig as cls
    return cls


def _add_flags(parser: argparse.ArgumentParser, command: str) -> None:
    cls = _config_class(command)
    defaults = {
        f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(cls)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }
    for flag, name, kind, text in _FLAGS[command]:
        default = defaults.get(name)
        shown = [] if name in defaults else ["default: all"]
        if name in defaults and default not in (None, {}, []) and "default" not in text:
            shown = [f"default {default!r}"]  # unset or empty: the text says what happens
        if name in cls.preset and defaults.get(name) != cls.preset[name]:
            shown.append(f"quick: {cls.preset[name]!r}")
        options: dict[str, Any] = {"choices": kind} if isinstance(kind, tuple) else {"type": kind}
        if isinstance(kind, list):  # several values of one type
            options = {"type": kind[0], "nargs": "+", "metavar": name.upper()}
        if kind is dict:  # FIELD=VALUE, repeatable
            options = {"type": _setting, "action": "append", "metavar": "FIELD=VALUE"}
        note = f" ({'; '.join(shown)})" if shown else ""
        parser.add_argument(flag, dest=name, help=f"{text}{note}", **options)
    quick = parser.add_mutually_exclusive_group()
    quick.add_argument(
        "--quick",
        dest="quick",
        action="store_const",
        const=True,
        help="minutes on a CPU (the default without --data-dir)",
    )
    quick.add_argument(
        "--no-quick",
        dest="quick",
        action="store_const",
        const=False,
        help="the paper's settings on the digits",
    )
    run = parser.add_mutually_exclusive_group()
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue --out with its checkpoint's settings; only "
        f"{', '.join(sorted(RESUMABLE - {'resume', 'overwrite'}))} may change",
    )
    run.add_argument("--overwrite", action="store_true", help="empty --out first")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads (default: 1 for a "
        "quick search or teacher, whose tensors are tiny)",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (the per-epoch lines still print)",
    )
    parser.add_argument(
        "--tensorboard",
        dest="tensorboard",
        action="store_const",
        const=True,
        help="also write each epoch's losses, accuracies and learning rate"
        + (" and the architecture weights as a picture" if command == "search" else "")
        + ' as TensorBoard events into OUT/tensorboard (pip install "nos_ops[tensorboard]")',
    )


def _add_extras(parsers: dict[str, argparse.ArgumentParser]) -> None:
    """The flags that are not config fields of the same name."""
    _search_extras(parsers["search"])
    _protocol_extras(parsers["protocol"])
    _train_extras(parsers["train"], parsers["study"])
    _export_flags(parsers["export"])


def _search_extras(search: argparse.ArgumentParser) -> None:
    order = search.add_mutually_exclusive_group()
    order.add_argument(
        "--second-order",
        dest="second_order",
        action="store_const",
        const=True,
        help="DARTS's unrolled architecture gradient (default: first order)",
    )
    order.add_argument("--first-order", dest="second_order", action="store_const", const=False)
    guide = search.add_mutually_exclusive_group()
    guide.add_argument(
        "--teacher",
        dest="teacher",
        metavar="PATH",
        help="teacher.pt of nos-ops teacher (default: train or reuse the quick digits teacher)",
    )
    guide.add_argument(
        "--no-teacher",
        dest="teacher",
        action="store_const",
        const="",
        help="no attention transfer: the paper's w/o-AGS ablation",
    )
    search.add_argument("--no-plots", dest="plots", action="store_const", const=False)


def _protocol_extras(protocol: argparse.ArgumentParser) -> None:
    protocol.add_argument(
        "--no-teacher",
        dest="teacher",
        action="store_const",
        const="",
        help="no teacher (only for protocols whose variants use none)",
    )
    protocol.add_argument("--no-plots", dest="plots", action="store_const", const=False)


def _train_extras(train: argparse.ArgumentParser, study: argparse.ArgumentParser) -> None:
    train.add_argument("--channels-last", dest="channels_last", action="store_const", const=True)
    train.add_argument("--compile", dest="compile", action="store_const", const=True)
    train.add_argument(
        "--imagenet-mobile",
        action="store_true",
        help="the ImageNet-mobile recipe: print its MACs and parameters, exit",
    )
    study.add_argument(
        "--op",
        dest="ops",
        action="append",
        metavar="OP",
        help="self-calibration op to add (repeatable; default all)",
    )
    study.add_argument(
        "--stages",
        dest="stages",
        type=int,
        nargs="+",
        help="ResNet stages to add the op after (default 1 2 3)",
    )


_GENOTYPE_SIZES = {
    "--layers": 20,
    "--channels": 36,
    "--num-classes": 10,
    "--image-size": 32,
}
"""``nos-ops export --genotype`` sizes; ``--network`` takes them from its checkpoint."""


def _export_flags(export: argparse.ArgumentParser) -> None:
    source = export.add_mutually_exclusive_group(required=True)
    source.add_argument("--network", help="network.pt of nos-ops train (or its checkpoint.pt)")
    source.add_argument("--genotype", help="an untrained network from a genotype")
    export.add_argument("--format", choices=("torch", "onnx"), default="torch")
    export.add_argument("--out", required=True, help="output file (.pt2 or .onnx)")
    for flag, default in _GENOTYPE_SIZES.items():
        export.add_argument(flag, type=int, help=f"(default {default}; --genotype only)")
    export.add_argument("--batch-size", type=int, default=2, help="example input batch (default 2)")
    export.add_argument("--static-batch", action="store_true", help="fix the batch dimension")


def build_parser() -> argparse.ArgumentParser:
    """The ``nos-ops`` argument parser with its six subcommands."""
    return _build()[0]


def _build() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = _Parser(
        prog="nos-ops",
        description="Neural Operator Search (Li, Gong, Zhu, "
        "2023): teacher, search, train, study, protocol and export pipelines.",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    parsers = {}
    for name, (text, example) in _DESCRIPTIONS.items():
        parsers[name] = commands.add_parser(
            name,
            help=text,
            description=text,
            epilog=f"examples:\n{example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name != "export":
            _add_flags(parsers[name], name)
    _add_extras(parsers)
    return parser, parsers


def make_config(args: argparse.Namespace) -> Any:
    """The config of parsed ``args``: the flags given over the config's defaults, or, with
    ``--resume``, over the checkpoint's config (only :data:`RESUMABLE` fields may be given)."""
    cls = _config_class(args.command)
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"threads={args.threads} is not valid; expected an int >= 1")
    names = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    given.update({k: dict(given[k]) for k in ("search", "train") if isinstance(given.get(k), list)})
    if given.get("teacher") == "":
        given["teacher"] = None
    given.pop("resume", None)
    given.pop("overwrite", None)
    if not args.no_progress:
        given.pop("progress", None)
    else:
        given["progress"] = False
    if args.resume:
        return cls.from_run(given.pop("out", cls.out), **given)
    return cls(**given, overwrite=args.overwrite)


def describe_genotype(genotype: Any) -> str:
    """The genotype as text, with the node names of its picture (``c_{k-2}``, ``c_{k-1}``,
    ``0``, ``1``, ...; ``k'`` is node k's surrogate, the tier-1 sum the tier-2 op maps to k)."""
    from .search.task import node_name

    lines = []
    for name, cell in (("normal", genotype.normal), ("reduction", genotype.reduce)):
        concat = ", ".join(node_name(n) for n in cell.concat)
        lines.append(f"{name} cell (output: concat of nodes {concat})")
        for i, block in enumerate(cell.blocks):
            edges = " + ".join(f"{op}({node_name(source)})" for op, source in block.edges)
            if block.tier2 is None:
                lines.append(f"  node {i} <- {edges}")
            else:
                lines.append(f"  node {i}' <- {edges};  node {i} <- {block.tier2}({i}')")
    return "\n".join(lines)


def _rank0() -> bool:
    """Whether this is the process that reports (rank 0 under ``torchrun``)."""
    return int(os.environ.get("RANK", "0")) == 0


def _teacher(config: Any) -> None:
    from .teacher import train_teacher

    result = train_teacher(config)
    if not _rank0():
        return
    echo(
        f"{result['arch']} teacher: test top-1 {result['test_top1']:.2f}%, trained in "
        f"{result['train_s']:.0f} s; saved {result['path']}"
    )
    data = f" --data-dir {config.data_dir}" if config.data_dir else ""
    if result["image_size"] != 32:  # the search must read the images at the teacher's size
        data += f" --image-size {result['image_size']}"
    echo(f"next: nos-ops search{data} --teacher {result['path']}")


def _search(config: Any) -> None:
    from .search import run_search

    began = time.perf_counter()
    genotype = run_search(config)
    if not _rank0():
        return
    out = Path(config.out)
    result = _load_result(out)
    echo(describe_genotype(genotype))
    teacher = result.get("teacher") or {}
    if teacher.get("path"):
        took = teacher.get("train_s")
        how = "reused" if teacher.get("reused") else "trained"
        echo(
            f"teacher: {teacher['path']} ({how}; its training took {took:.0f} s)"
            if took is not None
            else f"teacher: {teacher['path']}"
        )
    else:
        echo("teacher: none (w/o AGS)")
    took = f"{time.perf_counter() - began:.0f} s"
    if config.resume and "search_s" in result:
        took = f"{result['search_s']:.0f} s of epochs over all sessions ({took} in this one)"
    echo(
        f"searched in {took}; margin of the chosen ops {result['margins']['mean']:.3f}; "
        f"genotype: {out / 'genotype.json'}"
    )
    data = f" --data-dir {config.data_dir}" if config.data_dir else ""
    echo(f"next: nos-ops train --genotype {out / 'genotype.json'}{data}")


def _load_result(out: Path) -> dict[str, Any]:
    path = out / "result.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _train(config: Any, args: argparse.Namespace) -> None:
    from .train import imagenet_mobile_config, train

    if args.imagenet_mobile:
        _describe_imagenet(
            imagenet_mobile_config(
                **{
                    k: v
                    for k, v in vars(args).items()
                    if k in ("genotype", "layers", "channels") and v is not None
                }
            )
        )
        return
    final = train(config)
    if not _rank0():
        return
    if final.get("top1") is not None:
        echo(
            f"test top-1 {final['top1']:.2f}% (error {final['top1_err']:.2f}%), top-5 "
            f"{final['top5']:.2f}%, {final['params'] / 1e6:.3f}M params, "
            f"{final['macs'] / 1e6:.1f}M MACs; network: {Path(final['out']) / 'network.pt'}"
        )
    echo(f"next: nos-ops export --network {Path(final['out']) / 'network.pt'} --out net.pt2")


def _describe_imagenet(config: Any) -> None:
    from .genotype import get_genotype
    from .network import build_network
    from .profile import count_macs, count_params

    arch = {
        "network": "imagenet",
        "channels": config.channels,
        "layers": config.layers,
        "num_classes": 1000,
        "auxiliary": True,
        "image_size": config.image_size,
    }
    model = build_network(arch, get_genotype(config.genotype))
    params = count_params(model) - count_params(model.auxiliary_head)
    macs = count_macs(model, torch.zeros(1, 3, config.image_size, config.image_size))
    echo(
        f"ImageNet-mobile: {config.layers} cells, {config.channels} channels: "
        f"{params / 1e6:.2f}M params (without the auxiliary head), {macs / 1e6:.1f}M MACs "
        f"(limit {config.max_macs / 1e6:.0f}M); train it with your Dataset through "
        "nos_ops.train.train(imagenet_mobile_config(...), train_set, val_set)"
    )
    if macs > config.max_macs:
        raise SystemExit(1)


def _study(config: Any) -> None:
    from .study import run_study

    run_study(config)
    echo(f"results: {Path(config.out) / 'results.json'}")


def _protocol(config: Any) -> None:
    from .protocols import run_protocol
    from .protocols.report import spread_text

    result = run_protocol(config)
    echo("variant: test top-1 mean ± std over seeds (self-calibration ops)")
    for row in result["variants"]:
        top1 = spread_text(row["top1_mean"], row["top1_std"], row["runs"], unit="%")
        runs = f", {row['runs']} runs" if row["runs"] > 1 else ""
        echo(
            f"  {row['label']}: {top1} ({100 * row['calibration_share_mean']:.0f}% of the "
            f"ops){runs}"
        )
    out = Path(config.out)
    echo(f"report: {out / 'report.md'}; pictures: {out / 'summary.png'}")


def _resolve_export_sizes(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    for flag, default in _GENOTYPE_SIZES.items():
        name = flag[2:].replace("-", "_")
        if args.network is not None and getattr(args, name) is not None:
            parser.error(f"{flag} is for --genotype only; --network takes it from its checkpoint")
        if getattr(args, name) is None:
            setattr(args, name, default)


def _export(args: argparse.Namespace) -> None:
    from .export import export_onnx, export_program
    from .genotype import get_genotype
    from .network import build_network, load_network

    if args.network is not None:
        model = load_network(args.network)
        size = load_checkpoint(args.network, ("network", "train"))
        size = (size if size["kind"] == "network" else size["state"])["arch"]["image_size"]
    else:
        arch = {
            "network": "cifar",
            "channels": args.channels,
            "layers": args.layers,
            "num_classes": args.num_classes,
            "auxiliary": False,
        }
        model, size = build_network(arch, get_genotype(args.genotype)).eval(), args.image_size
    dynamic, out = not args.static_batch, Path(args.out)
    check = torch.randn(args.batch_size + dynamic, 3, size, size)
    with torch.no_grad():
        expected = model(check)[0]
    example = torch.randn(args.batch_size, 3, size, size)
    echo(
        f"export: tracing the network ({args.format}, {size}x{size}, "
        f"{'dynamic' if dynamic else 'static'} batch); 20 cells take tens of seconds on a CPU"
    )
    began = time.perf_counter()
    if args.format == "torch":
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.export.save(export_program(model, example, dynamic_batch=dynamic), out)
        got = torch.export.load(out).module()(check)
    else:
        export_onnx(model, out, example, dynamic_batch=dynamic)
        try:
            import onnxruntime
        except ImportError:
            echo(f"wrote {out}; onnxruntime is not installed, so the output was not checked")
            return
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"input": check.numpy()})[0])
    diff = (got - expected).abs().max().item()
    echo(
        f"wrote {out} in {time.perf_counter() - began:.0f} s; batch {len(check)}: "
        f"max |exported - eager| = {diff:.2e}"
    )


_RUNS: dict[str, Callable[..., None]] = {
    "teacher": _teacher,
    "search": _search,
    "study": _study,
    "protocol": _protocol,
}


def _threads(args: argparse.Namespace, config: Any) -> None:
    threads = args.threads
    quick = config.resolved().quick
    if threads is None and args.command in ("search", "teacher") and quick:
        threads = 1
    if threads is None and args.command == "protocol" and quick and config.workers() == 1:
        threads = 1
    if threads is not None:
        torch.set_num_threads(threads)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nos-ops`` with ``argv``; returns the exit status."""
    parser, parsers = _build()
    args = parser.parse_args(argv)
    if args.command == "export":
        _resolve_export_sizes(args, parsers["export"])
        return _guard(lambda: _export(args), args, None)
    try:
        config = make_config(args)
    except (
        ValueError,
        TypeError,
        KeyError,
        FileNotFoundError,
        CheckpointError,
        ImportError,
    ) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        parsers[args.command].error(" ".join(str(message).split()))
    _threads(args, config)
    if args.command == "train":
        return _guard(lambda: _train(config, args), args, config)
    return _guard(lambda: _RUNS[args.command](config), args, config)


def _guard(run: Callable[[], None], args: argparse.Namespace, config: Any) -> int:
    """Run; one line and a non-zero status for a run that stops."""
    try:
        run()
    except NonFiniteLossError as err:
        print(f"nos-ops {args.command}: stopped: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except (
        RunLockedError,
        FileExistsError,
        FileNotFoundError,
        CheckpointError,
        ValueError,
        ImportError,
    ) as err:
        print(f"nos-ops {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        out = getattr(config, "out", None)
        hint = ""
        if out is not None and (Path(out) / "checkpoint.pt").is_file():
            hint = f"; continue with: nos-ops {args.command} --resume --out {out}"
        elif out is not None:
            hint = f"; no checkpoint yet: start again with --overwrite --out {out}"
        print(f"nos-ops {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    return 0


def run() -> None:
    """The console-script entry point."""
    sys.exit(main())
