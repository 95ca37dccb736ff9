"""The ``nos-ops`` command: every subcommand end to end (tiny), errors, resume, kill -9."""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nos_ops.cli import build_parser, main, make_config
from nos_ops.engine import load_checkpoint, read_jsonl
from nos_ops.genotype import Genotype
from nos_ops.teacher import quick_teacher

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[1]
TEACHER = [
    "--epochs",
    "1",
    "--max-steps-per-epoch",
    "2",
    "--image-size",
    "8",
    "--batch-size",
    "4",
    "--no-progress",
    "--device",
    "cpu",
]
SEARCH = [
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
    "2",
    "--max-steps-per-epoch",
    "2",
    "--no-plots",
    "--no-progress",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "teacher"
    assert main(["teacher", *TEACHER, "--out", str(out)]) == 0
    return out


def test_teacher_search_train_export_end_to_end(teacher, tmp_path, capsys):
    state = load_checkpoint(teacher / "teacher.pt", "teacher")
    assert (state["arch"], state["num_classes"], state["image_size"]) == ("resnet18", 10, 8)
    search = tmp_path / "search"
    assert (
        main(["search", *SEARCH, "--teacher", str(teacher / "teacher.pt"), "--out", str(search)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "attention-guided" in printed and "node 0 <- " in printed and "c_{k-2}" in printed
    assert "teacher: " in printed and f"nos-ops train --genotype {search}" in printed
    assert "--quick" not in printed.split("next:")[-1]
    # --resume needs only the folder; the epoch count may grow
    assert main(["search", "--resume", "--out", str(search), "--epochs", "3"]) == 0
    assert [r["epoch"] for r in read_jsonl(search / "log.jsonl")] == [1, 2, 3]

    train = tmp_path / "train"
    assert (
        main(
            [
                "train",
                "--genotype",
                str(search / "genotype.json"),
                "--layers",
                "3",
                "--channels",
                "4",
                "--epochs",
                "1",
                "--batch-size",
                "128",
                "--image-size",
                "8",
                "--no-progress",
                "--device",
                "cpu",
                "--out",
                str(train),
            ]
        )
        == 0
    )
    assert "test top-1" in capsys.readouterr().out
    assert load_checkpoint(train / "network.pt", "network")["genotype"] == (
        Genotype.load(search / "genotype.json").to_dict()
    )
    assert (
        main(["export", "--network", str(train / "network.pt"), "--out", str(tmp_path / "net.pt2")])
        == 0
    )
    printed = capsys.readouterr().out
    assert "export: tracing" in printed and "max |exported - eager|" in printed


def test_the_teachers_next_command_runs_as_printed(tmp_path, capsys):
    """The hint carries the teacher's image size: a search at another size would refuse it."""
    capsys.readouterr()
    assert main(["teacher", *TEACHER, "--out", str(tmp_path / "teacher")]) == 0
    hint = capsys.readouterr().out.split("next: nos-ops ")[-1].split()
    assert hint[:1] == ["search"] and hint[hint.index("--image-size") + 1] == "8"
    tiny = [*SEARCH[:6], *SEARCH[8:]]  # SEARCH without its own --image-size
    tiny[tiny.index("--epochs") + 1] = "1"
    assert main([*hint, *tiny, "--out", str(tmp_path / "search")]) == 0


def test_study_subcommand(tmp_path, capsys):
    out = tmp_path / "study"
    assert (
        main(
            [
                "study",
                "--op",
                "channel_attention",
                "--epochs",
                "1",
                "--width",
                "0.125",
                "--image-size",
                "8",
                "--batch-size",
                "16",
                "--max-steps-per-epoch",
                "1",
                "--no-progress",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "| + Attention | Channel | - |" in capsys.readouterr().out
    assert len(json.loads((out / "results.json").read_text())["rows"]) == 2


def test_argument_errors_are_one_line_and_exit_2(teacher, capsys):
    for argv, expected in (
        (["search", "--epochs", "x"], "argument --epochs: invalid int value"),
        (["search", "--layers", "2"], "layers=2 is not valid"),
        (
            ["teacher", "--resume", "--out", str(teacher), "--arch", "pyramidnet110"],
            "['arch'] cannot change when resuming",
        ),
        (["train", "--resume", "--out", str(teacher / "missing")], "does not exist"),
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and expected in err and err.count("\n") == 1, err


def test_runs_that_cannot_start_exit_1_with_one_line(teacher, tmp_path, capsys):
    assert main(["teacher", *TEACHER, "--out", str(teacher)]) == 1
    assert "is not empty" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname()[1]}))
    assert main(["teacher", *TEACHER, "--out", str(busy)]) == 1
    assert f"in use by process {os.getpid()}" in capsys.readouterr().err


def test_help_names_the_paper_defaults_and_an_example(capsys):
    for command in ("teacher", "search", "train", "study", "export"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "Sec." in text and "examples:" in text and f"nos-ops {command}" in text
    parser = build_parser()
    quick = make_config(parser.parse_args(["search"])).resolved()
    assert quick.teacher == "auto" and quick.quick and quick.channels == 8
    ablation = make_config(parser.parse_args(["search", "--no-teacher"]))
    assert ablation.teacher is None


def test_quick_teacher_is_reused(teacher, capsys):
    info = quick_teacher(teacher, image_size=8)
    assert info["reused"] and info["path"] == str(teacher / "teacher.pt")
    assert "reusing" in capsys.readouterr().out
    with pytest.raises(ValueError, match="at 16 x 16"):
        quick_teacher(teacher, image_size=16)


def test_console_script_and_module_entry_point():
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="nos-ops")
    assert script.value == "nos_ops.cli:run"
    result = subprocess.run(
        [sys.executable, "-m", "nos_ops", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0 and "teacher" in result.stdout and "export" in result.stdout


def test_examples_are_short_scripts_of_the_python_api():
    for path in sorted((ROOT / "examples").glob("*.py")):
        text = path.read_text()
        assert len(text.splitlines()) <= 60, path.name
        compile(text, str(path), "exec")
        assert "from nos_ops." in text and "def main(" in text, path.name


def test_a_diverging_teacher_exits_1_and_writes_no_teacher(tmp_path, capsys):
    out = tmp_path / "teacher"
    assert main(["teacher", *TEACHER, "--lr", "1e12", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "stopped: non-finite training loss" in err and "epoch 1, step" in err
    assert not (out / "teacher.pt").exists() and not (out / ".lock").exists()


def test_ctrl_c_says_how_to_continue(teacher, tmp_path, monkeypatch, capsys):
    import nos_ops.teacher as teacher_module

    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(teacher_module, "train_teacher", interrupted)
    assert main(["teacher", "--resume", "--out", str(teacher)]) == 130
    assert f"continue with: nos-ops teacher --resume --out {teacher}" in capsys.readouterr().err
    assert main(["teacher", *TEACHER, "--out", str(tmp_path / "new")]) == 130
    assert "no checkpoint yet" in capsys.readouterr().err


KILL_RUNS = {  # pipeline -> tiny flags of a run long enough to be killed after a checkpoint
    "teacher": [
        "--epochs",
        "12",
        "--max-steps-per-epoch",
        "2",
        "--image-size",
        "8",
        "--batch-size",
        "4",
    ],
    "search": [
        "--space",
        "darts",
        "--channels",
        "4",
        "--layers",
        "3",
        "--epochs",
        "6",
        "--max-steps-per-epoch",
        "2",
        "--image-size",
        "8",
        "--batch-size",
        "4",
        "--no-teacher",
        "--no-plots",
    ],
    "train": [
        "--genotype",
        "DARTS_V2",
        "--channels",
        "4",
        "--layers",
        "3",
        "--epochs",
        "6",
        "--image-size",
        "8",
        "--batch-size",
        "256",
    ],
    "study": [
        "--op",
        "spatial_attention",
        "--width",
        "0.125",
        "--epochs",
        "3",
        "--max-steps-per-epoch",
        "2",
        "--image-size",
        "8",
        "--batch-size",
        "4",
    ],
}


@pytest.mark.parametrize("pipeline", sorted(KILL_RUNS))
def test_kill_9_then_resume_matches_for_every_pipeline(tmp_path, capsys, pipeline):
    """SIGKILL right after the first checkpoint, resume from the folder alone: the same
    per-epoch log (timings aside) and the same final checkpoint state as a run never killed."""
    flags = [*KILL_RUNS[pipeline], "--no-progress", "--device", "cpu"]
    assert main([pipeline, *flags, "--out", str(tmp_path / "full")]) == 0
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "nos_ops", pipeline, *flags, "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = len(read_jsonl(out / "log.jsonl"))
    if done >= len(read_jsonl(tmp_path / "full" / "log.jsonl")):
        pytest.skip("the run finished before it could be killed")
    assert (out / ".lock").exists()  # left behind by the killed process
    capsys.readouterr()
    assert main([pipeline, "--resume", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "took over the stale lock" in printed.err
    if pipeline == "search":  # the time reported covers the killed session's epochs too
        assert "s of epochs over all sessions" in printed.out
        seconds = sum(r["seconds"] for r in read_jsonl(out / "log.jsonl"))
        assert json.loads((out / "result.json").read_text())["search_s"] == pytest.approx(seconds)
    timings = ("seconds", "wall_s", "train_s", "load_average")
    logs = [
        [{k: v for k, v in r.items() if k not in timings} for r in read_jsonl(p / "log.jsonl")]
        for p in (tmp_path / "full", out)
    ]
    assert logs[0] == logs[1]
    states = [load_checkpoint(p / "checkpoint.pt")["state"] for p in (tmp_path / "full", out)]
    assert _same(states[0], states[1])
    if pipeline == "teacher":  # and the file the search reads
        a, b = (load_checkpoint(p / "teacher.pt")["model"] for p in (tmp_path / "full", out))
        assert all(torch.equal(a[k], b[k]) for k in a)


def _same(a, b) -> bool:
    """Nested checkpoint states equal, tensors bit for bit, timings aside."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        keys = {k for k in a if k not in ("seconds", "wall_s", "train_s")}
        return keys == {k for k in b if k not in ("seconds", "wall_s", "train_s")} and all(
            _same(a[k], b[k]) for k in keys
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b
