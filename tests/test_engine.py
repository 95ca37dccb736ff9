"""The run engine: checkpoints, run folders and locks, logs, configs, the loop and its guard."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from nos_ops.engine import (
    CheckpointError,
    JsonlLogger,
    NonFiniteLossError,
    RunConfig,
    RunDir,
    RunLockedError,
    atomic_save,
    check_finite,
    fit,
    load_checkpoint,
    read_jsonl,
    save_checkpoint,
    setup_distributed,
    write_json,
)
from nos_ops.engine import checkpoint as checkpoint_module
from nos_ops.engine import run as run_module
from nos_ops.engine.config import config_differences


def test_checkpoint_round_trip_and_header(tmp_path):
    path = save_checkpoint(
        tmp_path / "c.pt", "train", {"x": torch.arange(3)}, config={"a": 1}, epoch=2
    )
    state = load_checkpoint(path, "train")
    assert (state["kind"], state["epoch"], state["config"]) == ("train", 2, {"a": 1})
    assert torch.equal(state["x"], torch.arange(3))
    assert load_checkpoint(path, ("network", "train"))["kind"] == "train"
    with pytest.raises(ValueError, match="kind='bogus'"):
        save_checkpoint(tmp_path / "d.pt", "bogus", {})


def test_corrupt_checkpoints_name_the_file_and_what_is_wrong(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", "search", {"x": torch.zeros(1000)})
    with pytest.raises(CheckpointError, match="'search' checkpoint; expected 'train'"):
        load_checkpoint(path, "train")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match=r"truncated\.pt cannot be read: it is truncated"):
        load_checkpoint(truncated)
    plain = tmp_path / "plain.pt"
    torch.save({"model": {}}, plain)
    with pytest.raises(CheckpointError, match="plain.pt is not a nos_ops checkpoint"):
        load_checkpoint(plain)
    newer = tmp_path / "newer.pt"
    atomic_save({"format": "nos_ops.checkpoint", "format_version": 99, "kind": "train"}, newer)
    with pytest.raises(CheckpointError, match="format_version=99, newer"):
        load_checkpoint(newer)
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_failed_saves_leave_no_temp_file_and_strict_json(tmp_path):
    with pytest.raises(Exception):  # noqa: B017 - a lambda cannot be pickled
        atomic_save({"f": lambda: 0}, tmp_path / "c.pt")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="Out of range float"):
        write_json({"loss": math.nan}, tmp_path / "r.json")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / ".checkpoint.pt.tmp-123-abcd").write_bytes(b"x")  # left by a killed save
    with RunDir(tmp_path, resume=False, overwrite=True):
        pass
    assert not any(".tmp-" in p.name for p in tmp_path.iterdir())


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_lock_contention_and_stale_lock_takeover(tmp_path, capsys):
    with RunDir(tmp_path / "run"):
        with pytest.raises(RunLockedError, match=rf"run .*run is in use by process {os.getpid()}"):
            RunDir(tmp_path / "run").__enter__()
    assert not (tmp_path / "run" / ".lock").exists()
    pid = _dead_pid()
    (tmp_path / "run" / ".lock").write_text(json.dumps({"pid": pid, "host": os.uname()[1]}))
    with RunDir(tmp_path / "run") as run:
        assert json.loads(run.lock.read_text())["pid"] == os.getpid()
    assert f"took over the stale lock of process {pid}" in capsys.readouterr().err


def test_non_empty_folder_needs_resume_or_overwrite(tmp_path):
    (tmp_path / "log.jsonl").write_text("{}\n")
    with pytest.raises(FileExistsError, match="not empty .*--resume .*--overwrite"):
        RunDir(tmp_path).__enter__()
    with pytest.raises(FileNotFoundError, match="checkpoint.pt does not exist"):
        RunDir(tmp_path, resume=True).__enter__()
    with RunDir(tmp_path, overwrite=True):
        assert [p.name for p in tmp_path.iterdir()] == [".lock"]


def test_log_tolerates_a_torn_last_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3, "lo')
    assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]
    logger = JsonlLogger(path, keep_before_epoch=3)
    logger.log({"epoch": 3})
    assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}]
    with pytest.raises(ValueError, match="not valid JSON|Out of range"):
        logger.log({"epoch": 4, "loss": math.inf})
    path.write_text('{"epoch": 1}\n{bad\n{"epoch": 3}\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        read_jsonl(path)


@dataclass
class ToyConfig(RunConfig):
    preset = {"epochs": 2}
    data_dir: str | None = None
    epochs: int = 5
    lr: float = 0.1
    width: int = 3
    out: str = "runs/toy"
    resume: bool = False
    overwrite: bool = False
    quick: bool | None = None
    progress: bool = False


def test_config_round_trip_quick_and_resumable_fields():
    config = ToyConfig().resolved()
    assert (config.epochs, config.quick) == (2, True)
    assert ToyConfig(data_dir="x").resolved().epochs == 5
    assert ToyConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(TypeError, match=r"no fields \['bogus'\]"):
        ToyConfig.from_dict({"bogus": 1})
    assert config.with_changes(epochs=9, lr=0.01).epochs == 9
    assert config.with_changes(epochs=5).resolved().epochs == 5  # a default value stays
    with pytest.raises(ValueError, match=r"\['width'\] cannot change when resuming"):
        config.with_changes(width=4)
    assert config_differences({"width": 3, "lr": 1}, {"width": 4, "lr": 2}) == ["width: 3 -> 4"]


class ToyTask:
    """Fits y = 2x with one weight: one SGD step per epoch on random data."""

    kind = "train"

    def __init__(self, config: ToyConfig, poison_at: int | None = None) -> None:
        self.config, self.total_epochs, self.poison_at = config, config.epochs, poison_at
        self.model = nn.Linear(1, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), config.lr)

    def run_epoch(self, epoch: int) -> dict:
        x = torch.randn(8, 1)
        loss = (self.model(x) - 2 * x).pow(2).mean()
        if epoch == self.poison_at:
            loss = loss * math.inf
        check_finite("training loss", loss, step=1)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": float(loss.detach())}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def modules(self) -> list[nn.Module]:
        return [self.model]

    def describe(self, record: dict) -> str:
        return f"epoch {record['epoch']}: {record['loss']:.4f}"

    def write_outputs(self, record: dict, records: list) -> None:
        pass


def _fit(config: ToyConfig, **task_kwargs) -> tuple[ToyTask, list]:
    torch.manual_seed(0)
    task = ToyTask(config, **task_kwargs)
    with RunDir(config.out, resume=config.resume, overwrite=config.overwrite) as run:
        return task, fit(task, run, setup_distributed("cpu"))


def test_fit_resume_after_a_crash_and_a_torn_log_is_bit_identical(tmp_path, monkeypatch):
    full, full_log = _fit(ToyConfig(epochs=3, out=str(tmp_path / "full")))
    real = run_module.save_checkpoint

    def crash_after_epoch_2(path, kind, entries, **kw):
        real(path, kind, entries, **kw)
        if kw["epoch"] == 2:
            raise KeyboardInterrupt  # a kill right after the checkpoint

    monkeypatch.setattr(run_module, "save_checkpoint", crash_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        _fit(ToyConfig(epochs=3, out=str(tmp_path / "cut")))
    monkeypatch.undo()
    with open(tmp_path / "cut" / "log.jsonl", "a") as log:
        log.write('{"epoch": 3, "lo')  # a torn line: killed while writing
    torch.manual_seed(123)  # the checkpoint's RNG state wins over the process's
    resumed, log = _fit(ToyConfig(epochs=3, out=str(tmp_path / "cut"), resume=True))
    assert torch.equal(resumed.model.weight, full.model.weight)
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in x] for x in (full_log, log)]
    assert strip[0] == strip[1]
    longer, log = _fit(ToyConfig(epochs=4, lr=0.05, out=str(tmp_path / "cut"), resume=True))
    assert [r["epoch"] for r in log] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="width: 3 -> 4"):
        _fit(ToyConfig(epochs=4, width=4, out=str(tmp_path / "cut"), resume=True))


def test_fit_stops_on_non_finite_loss_and_keeps_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError) as info:
        _fit(ToyConfig(epochs=3, out=str(out)), poison_at=2)
    err = info.value
    assert (err.epoch, err.step, err.checkpoint) == (2, 1, out / "checkpoint.pt")
    assert "epoch 2, step 1" in str(err) and "--resume" in str(err) and "--lr" in str(err)
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    assert "NaN" not in (out / "log.jsonl").read_text()
    assert "Infinity" not in (out / "log.jsonl").read_text()
    with pytest.raises(NonFiniteLossError, match="no checkpoint was written yet"):
        _fit(ToyConfig(epochs=3, out=str(tmp_path / "first")), poison_at=1)
    # the advice works: resuming with a lower learning rate is allowed
    task, log = _fit(dataclasses.replace(ToyConfig(epochs=3, out=str(out)), resume=True, lr=0.01))
    assert [r["epoch"] for r in log] == [1, 2, 3]


def test_temp_names_are_unique_per_save(tmp_path):
    names = {checkpoint_module._temp_path(Path(tmp_path / "g.json")).name for _ in range(5)}
    assert len(names) == 5
