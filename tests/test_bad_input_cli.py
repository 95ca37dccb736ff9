"""Bad command lines and run files of ``nos-ops``: refused at once, in one line.

No case here trains anything: a command line is first turned into its config
(``make_config``), which is where bad values must be refused, and only a command line that
is refused there is run through ``main`` (exit status 2 and one line naming the flag).
Run files (checkpoints, teachers, networks, logs) are written by hand in the engine's
schema, truncated or of the wrong kind; each error names the file.

The engine's configs and command line (not edited by this suite) closed every gap it first
found (they were non-strict xfails at first: see the git history of this file).
"""

from __future__ import annotations

import json

import pytest
import torch

from nos_ops.cli import build_parser, main, make_config
from nos_ops.engine import load_checkpoint, read_jsonl
from nos_ops.engine.checkpoint import CheckpointError, save_checkpoint
from nos_ops.search.distill import load_teacher

pytestmark = pytest.mark.usefixtures("single_thread")


def _config(argv: list[str]):
    return make_config(build_parser().parse_args(argv))


def _exits_2_in_one_line(argv: list[str], match: str, capsys) -> None:
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert err.count("\n") == 1, err
    assert match in err, err


# ------------------------------------------------------------------ argparse-level errors

PARSE = [
    (["search", "--epochs", "x"], "argument --epochs: invalid int value: 'x'"),
    (["search", "--epochs", "1.5"], "argument --epochs: invalid int value: '1.5'"),
    (["search", "--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    (["search", "--batch-size", ""], "argument --batch-size: invalid int value"),
    (["search", "--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["search", "--amp", "fp8"], "argument --amp: invalid choice: 'fp8'"),
    (["teacher", "--arch", "vgg"], "argument --arch: invalid choice: 'vgg'"),
    (["train", "--channels", "many"], "argument --channels: invalid int value"),
    (["study", "--stages", "one"], "argument --stages: invalid int value"),
    (["search", "--teacher", "t.pt", "--no-teacher"], "not allowed with argument --teacher"),
    (["search", "--resume", "--overwrite"], "not allowed with argument --resume"),
    (["search", "--quick", "--no-quick"], "not allowed with argument --quick"),
    (["export", "--out", "net.pt2"], "one of the arguments --network --genotype is required"),
    (["export", "--genotype", "DARTS_V2"], "the following arguments are required: --out"),
    (["export", "--genotype", "DARTS_V2", "--out", "n", "--format", "tf"], "invalid choice"),
    (["serve"], "invalid choice: 'serve'"),
    ([], "the following arguments are required: COMMAND"),
    (["search", "--bogus", "3"], "unrecognized arguments: --bogus 3"),
]


@pytest.mark.parametrize("argv, match", PARSE, ids=[" ".join(a) or "empty" for a, _ in PARSE])
def test_argparse_errors_are_one_line_and_exit_2(argv, match, capsys):
    """Parsed only (``main`` parses first): a command line that parsed would start a run."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and match in err, err


# ------------------------------------------------------------------ config-level errors

REFUSED = [
    (["search", "--lr", "-1"], "lr=-1.0 is not valid"),
    (["search", "--lr", "0"], "lr=0.0 is not valid"),
    (["search", "--at-weight", "-1"], "at_weight=-1.0 is not valid"),
    (["search", "--epochs", "-1"], "epochs=-1 is not valid"),
    (["search", "--epochs", "0"], "epochs=0 is not valid"),
    (["search", "--batch-size", "0"], "batch_size=0 is not valid"),
    (["search", "--layers", "0"], "layers=0 is not valid"),
    (["search", "--layers", "2"], "layers=2 is not valid"),
    (["search", "--channels", "0"], "channels=0 is not valid"),
    (["search", "--partial-channels", "0"], "partial_channels=0 is not valid"),
    (["search", "--image-size", "0"], "image_size=0 is not valid"),
    (["search", "--image-size", "-8"], "image_size=-8 is not valid"),
    (["search", "--warmup-epochs", "-1"], "warmup_epochs=-1 is not valid"),
    (["search", "--max-steps-per-epoch", "0"], "max_steps_per_epoch=0 is not valid"),
    (["search", "--data-dir", "d", "--image-size", "16"], "image_size=16 is not valid with"),
    (["train", "--lr", "-0.1"], "lr=-0.1"),
    (["train", "--epochs", "-1"], "epochs=-1 is not valid"),
    (["train", "--drop-path", "1.0"], "drop_path=1.0 is not valid"),
    (["train", "--drop-path", "nan"], "drop_path=nan is not valid"),
    (["train", "--drop-path", "-0.5"], "drop_path=-0.5 is not valid"),
    (["train", "--auxiliary-weight", "-1"], "auxiliary_weight=-1.0"),
    (["train", "--cutout", "-1"], "cutout=-1"),
    (["train", "--layers", "0"], "layers=0 is not valid"),
    (["train", "--channels", "0"], "channels=0 is not valid"),
    (["train", "--batch-size", "0"], "batch_size=0 is not valid"),
    (["teacher", "--lr", "0"], "lr=0.0 is not valid"),
    (["teacher", "--epochs", "0"], "epochs=0 is not valid"),
    (["teacher", "--lr-step", "0"], "lr_step=0 is not valid"),
    (["teacher", "--batch-size", "-2"], "batch_size=-2 is not valid"),
    (["study", "--width", "0"], "width=0.0 is not valid"),
    (["study", "--width", "-1"], "width=-1.0 is not valid"),
    (["study", "--op", "nope"], "ops=['nope'] is not valid"),
    (["study", "--epochs", "0"], "epochs=0 is not valid"),
]


@pytest.mark.parametrize("argv, match", REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_bad_values_are_refused_by_the_config(argv, match, capsys):
    with pytest.raises((ValueError, TypeError, KeyError), match=match.replace("[", r"\[")):
        _config(argv)
    _exits_2_in_one_line(argv, match, capsys)


def test_an_unknown_space_exits_2_in_one_line(capsys):
    with pytest.raises(KeyError, match="unknown space='nope'; presets: nos"):
        _config(["search", "--space", "nope"])
    _exits_2_in_one_line(["search", "--space", "nope"], "unknown space='nope'", capsys)


SHOULD_REFUSE = [
    (["search", "--lr", "nan"], "lr=nan is not valid"),
    (["search", "--at-weight", "nan"], "at_weight=nan is not valid"),
    (["train", "--lr", "nan"], "lr=nan is not valid"),
    (["train", "--auxiliary-weight", "nan"], "auxiliary_weight=nan is not valid"),
    (["teacher", "--lr", "nan"], "lr=nan is not valid"),
    (["teacher", "--image-size", "0"], "image_size=0 is not valid"),
    (["study", "--width", "nan"], "width=nan is not valid"),
    (["study", "--image-size", "0"], "image_size=0 is not valid"),
    (["study", "--lr", "nan"], "lr=nan is not valid"),
    (["search", "--lr", "inf"], "lr=inf"),
    (["search", "--partial-channels", "3"], "partial_channels=3"),
    (["search", "--warmup-epochs", "30"], "warmup_epochs=30"),
    (["search", "--threads", "0"], "threads=0"),
    (["train", "--layers", "2"], "layers=2"),
    (["train", "--image-size", "0"], "image_size=0"),
    (["train", "--weight-decay", "-1"], "weight_decay=-1"),
    (["train", "--weight-decay", "nan"], "weight_decay=nan"),
    (["train", "--genotype", "DARTS_V9"], "DARTS_V9"),
    (["study", "--stages", "5"], "stages"),
    (["study", "--stages", "0"], "stages"),
]


@pytest.mark.parametrize("argv, match", SHOULD_REFUSE)
def test_values_the_config_should_refuse(argv, match, capsys):
    with pytest.raises((ValueError, TypeError, KeyError), match=match.replace("[", r"\[")):
        _config(argv)
    _exits_2_in_one_line(argv, match, capsys)  # only reached when the config refused it


# ------------------------------------------------------------------ run files (--resume)


def _search_config() -> dict:
    return _config(["search", "--out", "x"]).resolved().to_dict()


def _write_run(folder, kind="search", config=None, version=1, raw: bytes | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "checkpoint.pt"
    if raw is not None:
        path.write_bytes(raw)
        return path
    save_checkpoint(path, kind, {"state": {}}, config=config or _search_config(), epoch=1)
    if version != 1:
        state = torch.load(path, weights_only=False)
        state["format_version"] = version
        torch.save(state, path)
    return path


def _truncated(tmp_path) -> bytes:
    path = _write_run(tmp_path / "whole")
    data = path.read_bytes()
    return data[: len(data) // 2]


RUN_FILES = {
    "missing": (lambda tmp: (tmp / "run").mkdir(), "does not exist"),
    "truncated": (lambda tmp: _write_run(tmp / "run", raw=_truncated(tmp)), "cannot be read"),
    "empty": (lambda tmp: _write_run(tmp / "run", raw=b""), "cannot be read"),
    "garbage": (lambda tmp: _write_run(tmp / "run", raw=b"\x00\x01garbage"), "cannot be read"),
    "json": (lambda tmp: _write_run(tmp / "run", raw=b'{"kind": "search"}'), "cannot be read"),
    "plain torch file": (
        lambda tmp: torch.save({"model": {}}, (tmp / "run").mkdir() or tmp / "run/checkpoint.pt"),
        "is not a nos_ops checkpoint",
    ),
    "teacher kind": (
        lambda tmp: _write_run(tmp / "run", kind="teacher"),
        "is a 'teacher' checkpoint; expected 'search'",
    ),
    "network kind": (lambda tmp: _write_run(tmp / "run", kind="network"), "is a 'network'"),
    "newer format": (lambda tmp: _write_run(tmp / "run", version=99), "format_version=99"),
    "unknown config field": (
        lambda tmp: _write_run(tmp / "run", config={**_search_config(), "bogus": 1}),
        "SearchConfig has no fields ['bogus']",
    ),
    "bad config value": (
        lambda tmp: _write_run(tmp / "run", config={**_search_config(), "layers": 2}),
        "layers=2 is not valid",
    ),
}


@pytest.mark.parametrize("case", sorted(RUN_FILES))
def test_resume_from_a_bad_run_file_exits_2_naming_it(case, tmp_path, capsys):
    write, match = RUN_FILES[case]
    write(tmp_path)
    argv = ["search", "--resume", "--out", str(tmp_path / "run")]
    with pytest.raises((CheckpointError, FileNotFoundError, ValueError, TypeError)) as info:
        _config(argv)
    assert match in str(info.value)
    assert (
        "checkpoint" in str(info.value)
        or "Config" in str(info.value)
        or ("is not valid" in str(info.value))
    )
    _exits_2_in_one_line(argv, match, capsys)


def test_resume_changing_a_fixed_setting_is_refused(tmp_path, capsys):
    _write_run(tmp_path / "run")
    argv = ["search", "--resume", "--out", str(tmp_path / "run"), "--layers", "5"]
    _exits_2_in_one_line(argv, "['layers'] cannot change when resuming", capsys)


# ------------------------------------------------------------------ export and networks


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--genotype", "DARTS_V2", "--layers", "0"], "layers=0 is not valid"),
        (["--genotype", "DARTS_V2", "--layers", "2"], "layers=2 is not valid"),
        (["--genotype", "DARTS_V2", "--channels", "0"], "channels=0 is not valid"),
        (["--genotype", "DARTS_V2", "--num-classes", "0"], "num_classes=0 is not valid"),
        (["--genotype", "DARTS_V9"], "genotype='DARTS_V9' is neither a file nor a known name"),
    ],
)
def test_export_refuses_bad_networks_with_exit_1(argv, match, tmp_path, capsys):
    capsys.readouterr()
    assert main(["export", *argv, "--out", str(tmp_path / "net.pt2")]) == 1
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1, err
    assert not (tmp_path / "net.pt2").exists()


@pytest.mark.parametrize("flag", ["--layers", "--channels", "--num-classes", "--image-size"])
def test_export_of_a_network_refuses_genotype_sizes_with_exit_2(flag, tmp_path, capsys):
    """A trained network's sizes come from its file; a size flag beside it would be ignored."""
    capsys.readouterr()
    argv = ["export", "--network", "network.pt", flag, "16", "--out", str(tmp_path / "n.pt2")]
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1, err
    assert f"{flag} is for --genotype only" in err, err


def _file(tmp_path, name: str, kind: str | None):
    path = tmp_path / name
    if kind == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n")
    elif kind == "json":
        path.write_text(json.dumps({"schema": "nos_ops.genotype"}))
    elif kind is not None:
        save_checkpoint(path, kind, {"state": {}}, config={}, epoch=1)
    return path


@pytest.mark.parametrize(
    "kind, match",
    [
        ("binary", "cannot be read"),
        ("json", "cannot be read"),
        ("teacher", "is a 'teacher' checkpoint; expected 'network' or 'train'"),
        ("search", "is a 'search' checkpoint"),
        (None, "does not exist"),
    ],
)
def test_export_of_a_bad_network_file_names_it(kind, match, tmp_path, capsys):
    path = _file(tmp_path, "network.pt", kind)
    capsys.readouterr()
    assert main(["export", "--network", str(path), "--out", str(tmp_path / "n.pt2")]) == 1
    err = capsys.readouterr().err
    assert match in err and str(path) in err and err.count("\n") == 1, err


@pytest.mark.parametrize("kind", ["binary", "json"])
def test_export_of_a_bad_genotype_file_names_it(kind, tmp_path, capsys):
    path = _file(tmp_path, "genotype.json", kind)
    capsys.readouterr()
    assert main(["export", "--genotype", str(path), "--out", str(tmp_path / "n.pt2")]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and err.count("\n") == 1, err


def test_export_of_a_checkpoint_as_genotype_names_it(tmp_path, capsys):
    path = _file(tmp_path, "checkpoint.pt", "train")
    assert main(["export", "--genotype", str(path), "--out", str(tmp_path / "n.pt2")]) == 1
    err = capsys.readouterr().err
    assert "looks like a torch checkpoint" in err and str(path) in err, err


# ------------------------------------------------------------------ teachers


def _teacher_file(tmp_path, kind="teacher", image_size=16, num_classes=10):
    path = tmp_path / f"{kind}.pt"
    save_checkpoint(
        path,
        kind,
        {"arch": "resnet18", "num_classes": num_classes, "image_size": image_size, "model": {}},
        config={},
        epoch=1,
    )
    return path


@pytest.mark.parametrize("kind", ["search", "train", "network", "study"])
def test_a_run_checkpoint_is_not_a_teacher(kind, tmp_path):
    """A run's checkpoint.pt given as --teacher is refused, naming the file."""
    path = _teacher_file(tmp_path, kind)
    with pytest.raises(
        CheckpointError,
        match=rf"{path.name} is a '{kind}' checkpoint; "
        "expected 'teacher'",
    ):
        load_teacher(path)


@pytest.mark.parametrize("name, value", [("image_size", 32), ("num_classes", 100)])
def test_a_teacher_of_other_data_is_refused(name, value, tmp_path):
    """A teacher trained at 16 x 16 (or on 10 classes) does not guide a 32 x 32 search."""
    path = _teacher_file(tmp_path)
    with pytest.raises(ValueError, match=rf"teacher='.*teacher.pt' has {name}="):
        load_teacher(path, **{name: value})


@pytest.mark.parametrize("raw", [b"", b"\x00garbage", b"PK\x03\x04broken zip"])
def test_a_broken_teacher_file_names_it(raw, tmp_path):
    path = tmp_path / "teacher.pt"
    path.write_bytes(raw)
    with pytest.raises(CheckpointError, match=r"checkpoint .*teacher.pt cannot be read"):
        load_teacher(path)


# ------------------------------------------------------------------ logs


def test_a_torn_last_log_line_is_skipped(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]


@pytest.mark.parametrize("middle", ['{"epo', "not json", "{'epoch': 2}", "[1,"])
def test_a_bad_log_line_inside_the_file_names_file_and_line(middle, tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text(f'{{"epoch": 1}}\n{middle}\n{{"epoch": 3}}\n')
    with pytest.raises(ValueError, match=r"log.jsonl line 2 is not valid JSON"):
        read_jsonl(path)


def test_checkpoint_reader_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint .*nothing.pt does not exist"):
        load_checkpoint(tmp_path / "nothing.pt")


# ------------------------------------------------------------------ configs built in Python


def _config_class(name: str):
    if name == "search":
        from nos_ops.search import SearchConfig as cls
    elif name == "train":
        from nos_ops.train import TrainConfig as cls
    elif name == "teacher":
        from nos_ops.teacher import TeacherConfig as cls
    else:
        from nos_ops.study import StudyConfig as cls
    return cls


CONFIGS = [
    ("search", {"epochs": 2.5}, "epochs=2.5 is not valid"),
    ("search", {"epochs": True}, "epochs=True is not valid"),
    ("search", {"space": 3}, "space=3 is not valid"),
    ("search", {"arch_lr": float("nan")}, "arch_lr=nan is not valid"),
    ("search", {"amp": "fp8"}, "amp='fp8' is not valid"),
    ("train", {"epochs": "10"}, "epochs='10' is not valid"),
    ("train", {"genotype": 3}, "genotype=3 is not valid"),
    ("train", {"network": "resnet"}, "network='resnet' is not valid"),
    ("train", {"schedule": "step"}, "schedule='step' is not valid"),
    ("train", {"num_classes": 0}, "num_classes=0 is not valid"),
    ("teacher", {"arch": "vgg"}, "arch='vgg' is not valid"),
    ("teacher", {"epochs": 0.5}, "epochs=0.5 is not valid"),
    ("study", {"ops": "dynamic_conv_3x3"}, "ops='dynamic_conv_3x3' is not valid"),
    ("study", {"stages": (0,)}, "stages=(0,) is not valid"),
    ("search", {"lr": "0.1"}, "lr='0.1'"),
    ("train", {"lr": "0.1"}, "lr='0.1'"),
    ("teacher", {"lr": "0.1"}, "lr='0.1'"),
    ("study", {"width": "1"}, "width='1'"),
    ("train", {"drop_path": "0.2"}, "drop_path='0.2'"),
    ("search", {"grad_clip": -1.0}, "grad_clip=-1.0"),
    ("search", {"grad_clip": float("nan")}, "grad_clip=nan"),
    ("train", {"grad_clip": -1.0}, "grad_clip=-1.0"),
    ("train", {"grad_clip": 0.0}, "grad_clip=0.0"),
    ("search", {"momentum": -0.5}, "momentum=-0.5"),
    ("train", {"momentum": 2.0}, "momentum=2.0"),
    ("search", {"weight_decay": -1.0}, "weight_decay=-1.0"),
    ("search", {"seed": "0"}, "seed='0'"),
    ("search", {"device": "tpu"}, "device='tpu'"),
    ("search", {"second_order": "yes"}, "second_order='yes'"),
    ("search", {"teacher": 3}, "teacher=3"),
    ("train", {"label_smoothing": 1.5}, "label_smoothing=1.5"),
    ("train", {"workers": -1}, "workers=-1"),
    ("train", {"max_macs": -5}, "max_macs=-5"),
    ("train", {"cutout": 2.5}, "cutout=2.5"),
]


@pytest.mark.parametrize("command, change, match", CONFIGS)
def test_configs_built_in_python_check_their_fields(command, change, match):
    with pytest.raises(
        (ValueError, TypeError, KeyError), match=match.replace("(", r"\(").replace(")", r"\)")
    ):
        _config_class(command)(**change)


# ------------------------------------------------------------------ the engine's loops


def test_evaluate_refuses_an_empty_loader():
    from torch import nn

    from nos_ops.engine.loop import evaluate

    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with pytest.raises(ValueError, match=r"empty|no batch"):
        evaluate(model, [])


SEARCH_FLAGS = [
    "--space",
    "darts",
    "--channels",
    "4",
    "--layers",
    "3",
    "--image-size",
    "8",
    "--batch-size",
    "4",
    "--epochs",
    "1",
    "--max-steps-per-epoch",
    "1",
    "--no-plots",
    "--no-progress",
    "--device",
    "cpu",
]


@pytest.mark.parametrize(
    "kind, image_size, match",
    [
        ("search", 8, "is a 'search' checkpoint; expected 'teacher'"),
        ("train", 8, "is a 'train' checkpoint; expected 'teacher'"),
        ("teacher", 16, "has image_size=16; the search data has 8"),
    ],
    ids=["run checkpoint", "train checkpoint", "teacher at 16x16 for an 8x8 search"],
)
def test_search_refuses_a_wrong_teacher_file(kind, image_size, match, tmp_path, capsys):
    """Refused when the search is set up, before any step (exit 1, one line naming it)."""
    path = _teacher_file(tmp_path, kind, image_size=image_size)
    capsys.readouterr()
    argv = ["search", *SEARCH_FLAGS, "--teacher", str(path), "--out", str(tmp_path / "run")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert match in err and str(path.name) in err and err.count("\n") == 1, err
    assert not (tmp_path / "run" / "genotype.json").exists()
