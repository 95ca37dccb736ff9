"""The search pipeline end to end on tiny configs: outputs, margins, warm-up, resume, NaN, DDP."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nos_ops.engine import NonFiniteLossError, load_checkpoint, read_jsonl
from nos_ops.engine import run as engine_run
from nos_ops.genotype import Genotype, derive
from nos_ops.models.teachers import create_teacher
from nos_ops.search import SearchConfig, load_teacher, run_search, save_teacher
from nos_ops.search import task as search_task
from nos_ops.search.architect import search_network

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[1]


def _config(out: Path, **changes) -> SearchConfig:
    settings = dict(
        space="darts",
        channels=4,
        layers=3,
        image_size=8,
        batch_size=4,
        epochs=2,
        max_steps_per_epoch=2,
        device="cpu",
        out=str(out),
        progress=False,
        plots=False,
        teacher=None,
    )
    return SearchConfig(**{**settings, **changes})


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_search_writes_genotype_pictures_log_margins_and_checkpoint(tmp_path, capsys):
    teacher_path = tmp_path / "teacher.pt"
    save_teacher(teacher_path, create_teacher("resnet18", 10), "resnet18", 10, 8)
    out = tmp_path / "run"
    genotype = run_search(_config(out, space="nos", teacher=str(teacher_path), plots=True))

    assert Genotype.load(out / "genotype.json") == genotype
    for name in ("genotype.png", "arch_weights.png", "curves.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG"), name
    records = read_jsonl(out / "log.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    assert [r["lr"] for r in records] == pytest.approx([0.025, 0.0125])  # cosine to 0
    for record in records:
        assert record["at_loss"] > 0 and record["margin"] > 0
        assert 0 <= record["train_top1"] <= 100 and 0 <= record["valid_top1"] <= 100
        assert record["objective"] == pytest.approx(
            record["train_loss"] + 1e3 * record["at_loss"], rel=1e-5
        )
        rows = torch.tensor(record["alphas_normal"])
        assert rows.shape == (18, 11) and torch.allclose(rows.sum(1), torch.ones(18))
    assert records[-1]["genotype"] == genotype.to_dict()
    state = load_checkpoint(out / "checkpoint.pt", "search")
    assert state["epoch"] == 2
    model = state["state"]["model"]
    assert derive(model["alphas_normal"], model["alphas_reduce"], "nos") == genotype
    result = json.loads((out / "result.json").read_text())
    margins = result["margins"]
    assert len(margins["normal"]) == 4 * 3  # two tier-1 edges and a tier-2 op per block
    mean = sum(r["margin"] for c in ("normal", "reduce") for r in margins[c]) / 24
    assert margins["mean"] == pytest.approx(mean) == pytest.approx(records[-1]["margin"])
    printed = capsys.readouterr().out
    assert "attention-guided" in printed and "margin of the chosen ops" in printed


def test_warmup_epochs_take_no_architecture_steps(tmp_path):
    run_search(_config(tmp_path / "run", epochs=2, warmup_epochs=1))
    first, second = read_jsonl(tmp_path / "run" / "log.jsonl")
    assert not first["arch_steps"] and second["arch_steps"]
    assert first["arch_loss"] == 0 and second["arch_loss"] > 0
    assert first["margin"] == pytest.approx(1.0, abs=0.02)  # alphas still near uniform


def test_resume_after_a_crash_reproduces_an_uninterrupted_run(tmp_path, monkeypatch):
    full = run_search(_config(tmp_path / "full"))
    save = engine_run.save_checkpoint

    def crash_after_saving(*args, **kwargs):
        save(*args, **kwargs)
        raise KeyboardInterrupt  # killed right after epoch 1's checkpoint

    monkeypatch.setattr(engine_run, "save_checkpoint", crash_after_saving)
    with pytest.raises(KeyboardInterrupt):
        run_search(_config(tmp_path / "resumed"))
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["epoch"] == 1
    resumed = run_search(SearchConfig.from_run(tmp_path / "resumed"))  # settings from the run

    assert resumed == full
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["state"]["model"]
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["state"]["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    logs = [
        [{k: v for k, v in r.items() if k != "seconds"} for r in read_jsonl(path)]
        for path in (tmp_path / "full" / "log.jsonl", tmp_path / "resumed" / "log.jsonl")
    ]
    assert logs[0] == logs[1]
    with pytest.raises(ValueError, match="channels: 4 -> 8"):
        run_search(_config(tmp_path / "resumed", resume=True, channels=8))
    with pytest.raises(FileExistsError, match="not empty"):
        run_search(_config(tmp_path / "resumed"))


def test_resume_refuses_a_teacher_trained_again_since(tmp_path):
    """teacher -> search -> the teacher file overwritten -> search --resume: refused, naming
    the teacher, instead of silently guiding the rest of the search by another network."""
    path, out = tmp_path / "teacher.pt", tmp_path / "run"
    torch.manual_seed(0)
    save_teacher(path, create_teacher("resnet18", 10), "resnet18", 10, 8)
    run_search(_config(out, epochs=1, teacher=str(path)))
    run_search(SearchConfig.from_run(out, epochs=2))  # the same teacher: resumes
    torch.manual_seed(1)
    save_teacher(path, create_teacher("resnet18", 10), "resnet18", 10, 8)
    with pytest.raises(ValueError, match=r"teacher '.*teacher\.pt' is not the teacher this"):
        run_search(SearchConfig.from_run(out, epochs=3))
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2


def _poison_weights_at(monkeypatch, call: int) -> None:
    """Make the ``call``-th weight step leave NaN weights behind."""
    real = search_task.weight_step
    calls = []

    def poisoned(model, *args, **kwargs):
        stats = real(model, *args, **kwargs)
        calls.append(1)
        if len(calls) == call:
            with torch.no_grad():
                search_network(model).classifier.weight.fill_(float("nan"))
        return stats

    monkeypatch.setattr(search_task, "weight_step", poisoned)


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _poison_weights_at(monkeypatch, 3)  # first step of epoch 2 (2 steps per epoch)
    with pytest.raises(NonFiniteLossError) as info:
        run_search(_config(out))
    err = info.value
    checkpoint = out / "checkpoint.pt"
    assert (err.epoch, err.step, err.checkpoint) == (2, 2, checkpoint)
    message = str(err)
    assert "epoch 2, step 2" in message and str(checkpoint) in message and "--resume" in message
    state = load_checkpoint(checkpoint)
    assert state["epoch"] == 1
    assert all(
        torch.isfinite(v).all() for v in state["state"]["model"].values() if v.is_floating_point()
    )
    assert [r["epoch"] for r in read_jsonl(out / "log.jsonl")] == [1]
    assert not (out / "result.json").exists() and not (out / ".lock").exists()

    monkeypatch.undo()
    run_search(_config(out, resume=True, lr=0.01))  # the advice: resume with a lower lr
    assert [r["epoch"] for r in read_jsonl(out / "log.jsonl")] == [1, 2]


def test_nonfinite_loss_in_the_first_epoch_says_there_is_no_checkpoint(tmp_path, monkeypatch):
    _poison_weights_at(monkeypatch, 1)
    with pytest.raises(NonFiniteLossError, match="no checkpoint was written yet") as info:
        run_search(_config(tmp_path / "run", epochs=1))
    assert info.value.checkpoint is None
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_teacher_file_checks(tmp_path):
    path = tmp_path / "teacher.pt"
    save_teacher(path, create_teacher("resnet18", 10), "resnet18", 10, 8, {"test_top1": 50.0})
    teacher = load_teacher(path, 10, "cpu", image_size=8)
    assert [s.shape[-1] for s in teacher(torch.randn(2, 3, 8, 8))] == [8, 4, 2]
    with pytest.raises(ValueError, match="num_classes=10; the search data has 100"):
        load_teacher(path, 100)
    with pytest.raises(ValueError, match="image_size=8; the search data has 16"):
        load_teacher(path, 10, image_size=16)
    with pytest.raises(ValueError, match="teacher='auto' trains a quick teacher on the "):
        run_search(
            _config(tmp_path / "run", data_dir=str(tmp_path), image_size=None, teacher="auto")
        )


@pytest.mark.slow
def test_two_process_ddp_ranks_derive_the_same_genotype(tmp_path):
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "nos_ops",
        "search",
        "--space",
        "darts",
        "--channels",
        "4",
        "--layers",
        "3",
        "--image-size",
        "8",
        "--batch-size",
        "8",
        "--epochs",
        "2",
        "--max-steps-per-epoch",
        "2",
        "--second-order",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--no-plots",
        "--no-teacher",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "all 2 ranks derived the same genotype" in output
    assert output.count("searched in") == 1  # only rank 0 reports
    genotype = Genotype.load(out / "genotype.json")
    state = load_checkpoint(out / "checkpoint.pt")
    assert len(state["rng"]) == 2  # one RNG state per rank
    model = state["state"]["model"]
    assert derive(model["alphas_normal"], model["alphas_reduce"], "darts") == genotype
    assert [r["epoch"] for r in read_jsonl(out / "log.jsonl")] == [1, 2]


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"amp": "fp8"}, "amp='fp8'"),
        ({"layers": 2}, "layers=2"),
        ({"data_dir": "cifar", "image_size": 16}, "image_size=16"),
        ({"max_steps_per_epoch": 0}, "max_steps_per_epoch=0"),
        ({"lr_min": 1.0}, "lr_min=1.0"),
        ({"warmup_epochs": -1}, "warmup_epochs=-1"),
    ],
)
def test_search_config_errors_name_the_field(changes, match):
    with pytest.raises(ValueError, match=match):
        SearchConfig(**changes)


def test_quick_is_the_default_on_the_digits():
    quick = SearchConfig().resolved()
    assert quick.quick and quick.teacher == "auto"
    assert (quick.channels, quick.layers, quick.image_size) == (8, 5, 16)
    paper = SearchConfig(data_dir="cifar").resolved()
    assert not paper.quick and (paper.channels, paper.layers, paper.epochs) == (16, 8, 25)
    assert SearchConfig(data_dir="cifar", quick=True).resolved().image_size is None


def test_auto_teacher_is_reused_from_beside_the_run(tmp_path, capsys):
    save_teacher(
        tmp_path / "teacher" / "teacher.pt",
        create_teacher("resnet18", 10),
        "resnet18",
        10,
        8,
        {
            "arch": "resnet18",
            "test_top1": 50.0,
            "train_s": 12.0,
            "path": str(tmp_path / "teacher" / "teacher.pt"),
        },
    )
    run_search(_config(tmp_path / "search", teacher="auto", epochs=1))
    printed = capsys.readouterr().out
    assert "reusing" in printed and "trained in 12 s" in printed and "attention-guided" in printed
    result = json.loads((tmp_path / "search" / "result.json").read_text())
    assert result["teacher"]["reused"] and result["teacher"]["train_s"] == 12.0
    saved = load_checkpoint(tmp_path / "search" / "checkpoint.pt")["config"]
    assert saved["teacher"] == str(tmp_path / "teacher" / "teacher.pt")  # resume needs no auto


def test_search_on_a_map_style_dataset(tmp_path):
    """Your own data from the API: any dataset of (image tensor, label) pairs."""
    images = torch.rand(24, 3, 8, 8)
    labels = torch.arange(24) % 3
    dataset = torch.utils.data.TensorDataset(images, labels)
    genotype = run_search(_config(tmp_path / "run", epochs=1, quick=False), dataset)
    assert genotype.normal.blocks and (tmp_path / "run" / "genotype.json").exists()
    with pytest.raises(ValueError, match="teacher='auto'.*your own dataset"):
        run_search(_config(tmp_path / "auto", teacher="auto", quick=False), dataset)


def test_teacher_then_search_on_your_own_dataset(tmp_path):
    """A teacher trained on a map-style dataset guides a search on the same data."""
    from nos_ops.teacher import TeacherConfig, train_teacher

    images, labels = torch.rand(24, 3, 8, 8), torch.arange(24) % 3
    dataset = torch.utils.data.TensorDataset(images, labels)
    config = TeacherConfig(
        epochs=1,
        batch_size=8,
        out=str(tmp_path / "teacher"),
        progress=False,
        quick=False,
        device="cpu",
    )
    result = train_teacher(config, dataset, dataset)
    assert result["num_classes"] == 3 and Path(result["path"]).exists()
    with pytest.raises(ValueError, match="pass both train_data and test_data"):
        train_teacher(config, dataset)
    genotype = run_search(
        _config(tmp_path / "run", epochs=1, teacher=result["path"], quick=False), dataset
    )
    assert genotype.normal.blocks
