"""The optional TensorBoard writer (``tensorboard=True`` / ``--tensorboard``): off by
default, scalars of every pipeline and the search's architecture weights per epoch, and a
clear error naming the extra when the ``tensorboard`` package is missing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from nos_ops.cli import main
from nos_ops.engine.tensorboard import TensorBoardLogger, scalar_tag
from nos_ops.search import SearchConfig, run_search
from nos_ops.teacher import TeacherConfig

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = ["--epochs", "1", "--max-steps-per-epoch", "2", "--image-size", "8"]
TINY += ["--batch-size", "4", "--no-progress", "--device", "cpu"]


def _events(folder: Path) -> dict:
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="the tensorboard extra is not installed",
    )
    events = accumulator.EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


def test_off_by_default_and_tags_group_the_record():
    assert TeacherConfig().tensorboard is False and SearchConfig().tensorboard is False
    assert TensorBoardLogger("unused", enabled=False).enabled is False  # needs no package
    assert scalar_tag("lr") == "lr"
    assert scalar_tag("train_loss") == "loss/train_loss"
    assert scalar_tag("objective") == "loss/objective"
    assert scalar_tag("valid_top1") == "accuracy/valid_top1"
    assert scalar_tag("seconds") == "other/seconds"


def test_missing_package_names_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match=r"nos_ops\[tensorboard\]"):
        TeacherConfig(tensorboard=True)
    with pytest.raises(SystemExit) as exit_:
        main(["teacher", *TINY, "--tensorboard", "--out", str(tmp_path / "t")])
    assert exit_.value.code == 2
    assert 'pip install "nos_ops[tensorboard]"' in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_teacher_cli_writes_scalars_beside_the_log(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    out = tmp_path / "teacher"
    assert main(["teacher", *TINY, "--tensorboard", "--out", str(out)]) == 0
    assert (out / "log.jsonl").is_file()
    tags = _events(out / "tensorboard").Tags()["scalars"]
    assert {"lr", "loss/train_loss", "accuracy/train_top1"} <= set(tags), tags
    plain = tmp_path / "plain"
    assert main(["teacher", *TINY, "--out", str(plain)]) == 0
    assert not (plain / "tensorboard").exists()


def test_search_writes_scalars_and_arch_weights_each_epoch_and_resume_purges(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    pytest.importorskip("matplotlib", reason="pictures need matplotlib")
    out = tmp_path / "search"
    settings = dict(
        space="darts",
        channels=4,
        layers=3,
        image_size=8,
        batch_size=4,
        epochs=1,
        max_steps_per_epoch=2,
        device="cpu",
        out=str(out),
        progress=False,
        plots=False,
        teacher=None,
        tensorboard=True,
    )
    run_search(SearchConfig(**settings))
    run_search(SearchConfig.from_run(out, epochs=2))
    events = _events(out / "tensorboard")
    tags = events.Tags()
    assert {"lr", "loss/train_loss", "loss/arch_loss", "accuracy/valid_top1"} <= set(
        tags["scalars"]
    )
    assert [e.step for e in events.Scalars("loss/train_loss")] == [1, 2]
    assert "arch_weights" in tags["images"]
    assert [e.step for e in events.Images("arch_weights")] == [1, 2]
