"""The search pipeline end to end on tiny configs: outputs, resume, NaN handling, DDP, CLIs."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nos_ops.genotype import Genotype, derive
from nos_ops.models.teachers import create_teacher
from nos_ops.search import NonFiniteLossError, SearchConfig, Teacher, run_search, runner
from nos_ops.search.architect import search_network
from nos_ops.utils import load_checkpoint, read_jsonl

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[1]


def _config(out: Path, **changes) -> SearchConfig:
    settings = dict(
        space="darts", channels=4, layers=3, image_size=8, batch_size=4, epochs=2,
        max_steps_per_epoch=2, device="cpu", out_dir=str(out), progress=False, plots=False,
    )
    return SearchConfig(**{**settings, **changes})


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_search_writes_genotype_pictures_log_and_checkpoint(tmp_path):
    teacher_path = tmp_path / "teacher.pt"
    model = create_teacher("resnet18", 10)
    torch.save({"arch": "resnet18", "num_classes": 10, "state_dict": model.state_dict()},
               teacher_path)
    out = tmp_path / "run"
    genotype = run_search(_config(out, space="nos", teacher=str(teacher_path), plots=True))

    assert Genotype.load(out / "genotype.json") == genotype
    for name in ("genotype.png", "arch_weights.png", "curves.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG"), name
    records = read_jsonl(out / "search.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    assert [r["lr"] for r in records] == pytest.approx([0.025, 0.0125])  # cosine to 0
    for record in records:
        assert record["at_loss"] > 0
        assert 0 <= record["train_acc"] <= 100 and 0 <= record["valid_acc"] <= 100
        assert record["objective"] == pytest.approx(
            record["train_loss"] + 1e3 * record["at_loss"], rel=1e-5
        )
        for key in ("alphas_normal", "alphas_reduce"):
            rows = torch.tensor(record[key])
            assert rows.shape == (18, 11)
            assert torch.allclose(rows.sum(1), torch.ones(18))
    assert records[-1]["genotype"] == genotype.to_dict()
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 2
    assert derive(state["model"]["alphas_normal"], state["model"]["alphas_reduce"], "nos") == (
        genotype
    )
    assert {"weight_optimizer", "arch_optimizer", "scheduler", "rng", "config"} <= set(state)


def test_resume_reproduces_an_uninterrupted_run(tmp_path, monkeypatch):
    full = run_search(_config(tmp_path / "full"))

    class Crash(Exception):
        """A simulated crash right after a checkpoint was written."""

    def crash_after_saving(state, path):
        save(state, path)
        raise Crash

    save = runner.save_checkpoint
    monkeypatch.setattr(runner, "save_checkpoint", crash_after_saving)
    with pytest.raises(Crash):
        run_search(_config(tmp_path / "resumed"))
    monkeypatch.setattr(runner, "save_checkpoint", save)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["epoch"] == 1
    resumed = run_search(_config(tmp_path / "resumed", resume=True))

    assert resumed == full
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    assert a["model"].keys() == b["model"].keys()
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    logs = [
        [{k: v for k, v in r.items() if k != "seconds"} for r in read_jsonl(path)]
        for path in (tmp_path / "full" / "search.jsonl", tmp_path / "resumed" / "search.jsonl")
    ]
    assert logs[0] == logs[1]

    with pytest.raises(ValueError, match="lr: 0.025 -> 0.1"):
        run_search(_config(tmp_path / "resumed", resume=True, lr=0.1))


def _poison_weights_at(monkeypatch, call: int) -> None:
    """Make the ``call``-th weight step leave NaN weights behind."""
    real = runner.weight_step
    calls = []

    def poisoned(model, *args, **kwargs):
        stats = real(model, *args, **kwargs)
        calls.append(1)
        if len(calls) == call:
            with torch.no_grad():
                search_network(model).classifier.weight.fill_(float("nan"))
        return stats

    monkeypatch.setattr(runner, "weight_step", poisoned)


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    digests = []
    save = runner.save_checkpoint

    def recording(state, path):
        save(state, path)
        digests.append(_digest(Path(path)))

    monkeypatch.setattr(runner, "save_checkpoint", recording)
    _poison_weights_at(monkeypatch, 3)  # first step of epoch 2 (2 steps per epoch)
    with pytest.raises(NonFiniteLossError) as info:
        run_search(_config(out))
    err = info.value
    checkpoint = out / "checkpoint.pt"
    assert (err.epoch, err.step, err.checkpoint) == (2, 2, checkpoint)
    message = str(err)
    assert "epoch 2, step 2" in message and str(checkpoint) in message and "resume" in message
    assert len(digests) == 1 and _digest(checkpoint) == digests[0]
    state = load_checkpoint(checkpoint)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())

    monkeypatch.undo()
    run_search(_config(out, resume=True))  # the pointed-to checkpoint resumes
    assert [r["epoch"] for r in read_jsonl(out / "search.jsonl")] == [1, 2]


def test_nonfinite_loss_in_the_first_epoch_says_there_is_no_checkpoint(tmp_path, monkeypatch):
    _poison_weights_at(monkeypatch, 1)
    with pytest.raises(NonFiniteLossError, match="no checkpoint was written yet") as info:
        run_search(_config(tmp_path / "run", epochs=1))
    assert info.value.checkpoint is None
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.slow
def test_two_process_ddp_ranks_derive_the_same_genotype(tmp_path):
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(ROOT / "examples" / "search.py"), "--space", "darts", "--channels", "4",
        "--layers", "3", "--image-size", "8", "--batch-size", "8", "--epochs", "2",
        "--max-steps-per-epoch", "2", "--second-order", "--device", "cpu", "--out", str(out),
        "--no-plots",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "all 2 ranks derived the same genotype" in output
    genotype = Genotype.load(out / "genotype.json")
    state = load_checkpoint(out / "checkpoint.pt")
    assert len(state["rng"]) == 2  # one RNG state per rank
    assert derive(state["model"]["alphas_normal"], state["model"]["alphas_reduce"], "darts") == (
        genotype
    )
    assert [r["epoch"] for r in read_jsonl(out / "search.jsonl")] == [1, 2]


@pytest.mark.slow
def test_train_teacher_writes_a_teacher_the_search_loads(tmp_path, capsys):
    out = tmp_path / "teacher"
    _example("train_teacher.py").main(
        ["--epochs", "1", "--max-steps-per-epoch", "2", "--image-size", "8", "--batch-size",
         "4", "--out", str(out), "--no-progress", "--device", "cpu"]
    )
    state = load_checkpoint(out / "teacher.pt")
    assert (state["arch"], state["num_classes"], state["image_size"]) == ("resnet18", 10, 8)
    assert (out / "checkpoint.pt").is_file()
    teacher = runner.load_teacher(out / "teacher.pt", 10, torch.device("cpu"))
    assert isinstance(teacher, Teacher)
    stages = teacher(torch.randn(2, 3, 8, 8))
    assert [s.shape[-1] for s in stages] == [8, 4, 2]
    with pytest.raises(ValueError, match="num_classes=10"):
        runner.load_teacher(out / "teacher.pt", 100, torch.device("cpu"))
    assert "teacher.pt" in capsys.readouterr().out


def test_search_cli_flags_make_the_config():
    cli = _example("search.py")
    quick = cli.make_config(cli.parse_args([])).resolved()
    assert quick.data_dir is None and quick.quick and not quick.second_order
    assert quick.teacher is None
    assert (quick.channels, quick.layers, quick.image_size) == (8, 5, 16)
    paper = cli.make_config(cli.parse_args(
        ["--data-dir", "cifar", "--second-order", "--teacher", "t.pt", "--epochs", "3"]
    )).resolved()
    assert not paper.quick and paper.second_order and paper.teacher == "t.pt"
    assert (paper.channels, paper.layers, paper.epochs, paper.batch_size) == (16, 8, 3, 64)
    assert (paper.lr, paper.lr_min, paper.arch_lr, paper.at_weight) == (0.025, 0.0, 6e-4, 1e3)
    cifar_quick = cli.make_config(cli.parse_args(["--data-dir", "cifar", "--quick"])).resolved()
    assert cifar_quick.channels == 8 and cifar_quick.image_size is None
    overridden = cli.make_config(cli.parse_args(["--channels", "12", "--out", "x"])).resolved()
    assert overridden.channels == 12 and overridden.out_dir == "x"


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"amp": "fp8"}, "amp='fp8'"),
        ({"layers": 2}, "layers=2"),
        ({"data_dir": "cifar", "image_size": 16}, "image_size=16"),
        ({"max_steps_per_epoch": 0}, "max_steps_per_epoch=0"),
        ({"lr_min": 1.0}, "lr_min=1.0"),
    ],
)
def test_search_config_errors_name_the_field(changes, match):
    with pytest.raises(ValueError, match=match):
        SearchConfig(**changes)
