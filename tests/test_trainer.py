"""Evaluation training (nos_ops.train): one step, end to end, resume, NaN guard, ImageNet, DDP."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from nos_ops.data import Augment, ImageSet, TensorLoader, channel_stats, load_digits
from nos_ops.engine import (
    NonFiniteLossError,
    evaluate,
    load_checkpoint,
    read_jsonl,
    train_one_epoch,
)
from nos_ops.engine import run as engine_run
from nos_ops.network import build_network, load_network
from nos_ops.train import TrainConfig, imagenet_mobile_config, learning_rate, train

ROOT = Path(__file__).resolve().parents[1]
TINY = {"layers": 3, "channels": 4, "batch_size": 4, "progress": False}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine the
    threads' barriers cost 10-60x; the previous setting is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> tuple[ImageSet, ImageSet]:
    """12 training and 8 test digits at 16x16: 3 steps of batch 4 per epoch."""
    train_set, _, test_set = load_digits(16)
    return train_set.subset(torch.arange(12)), test_set.subset(torch.arange(8))


def _arch(**overrides) -> dict:
    return {
        "network": "cifar",
        "channels": 4,
        "layers": 3,
        "num_classes": 10,
        "auxiliary": True,
        "image_size": 16,
        **overrides,
    }


@pytest.mark.parametrize(("amp", "channels_last"), [("none", False), ("bf16", True)])
def test_one_step_with_aux_and_drop_path(digits, amp: str, channels_last: bool) -> None:
    torch.manual_seed(0)
    model = build_network(_arch(), "DARTS_V2")
    model.drop_path_prob = 0.2
    if channels_last:
        model.to(memory_format=torch.channels_last)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mean, std = channel_stats(digits[0])
    loader = TensorLoader(digits[0].subset(torch.arange(4)), 4, augment=Augment(mean, std))
    optimizer = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9)
    metrics = train_one_epoch(
        model,
        loader,
        optimizer,
        auxiliary_weight=0.4,
        grad_clip=5.0,
        amp=amp,
        channels_last=channels_last,
    )
    assert math.isfinite(metrics["loss"]) and metrics["samples"] == 4
    after = model.state_dict()
    for prefix in ("stem", "cells.0", "classifier", "auxiliary_head"):
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(prefix))


def test_learning_rate_schedules() -> None:
    cifar = TrainConfig(epochs=10)
    assert learning_rate(cifar, 0) == pytest.approx(0.025)
    assert learning_rate(cifar, 5) == pytest.approx(0.0125)
    imagenet = imagenet_mobile_config(epochs=15)
    assert [learning_rate(imagenet, e) for e in (0, 4, 5, 10)] == pytest.approx(
        [0.05, 0.25, 0.25, 0.125]
    )


def test_config_validation_and_quick() -> None:
    with pytest.raises(ValueError, match="amp='fp8'"):
        TrainConfig(amp="fp8")
    with pytest.raises(ValueError, match="network='mobile'"):
        TrainConfig(network="mobile")
    quick = TrainConfig(layers=3).resolved()  # quick by default on the digits
    assert (quick.layers, quick.channels, quick.image_size, quick.quick) == (3, 16, 16, True)
    assert TrainConfig.from_dict(json.loads(json.dumps(quick.to_dict()))) == quick
    paper = TrainConfig(data_dir="cifar").resolved()
    assert (paper.layers, paper.epochs, paper.quick) == (20, 600, False)


def test_quick_end_to_end_on_digits(tmp_path) -> None:
    out = tmp_path / "run"
    config = TrainConfig(epochs=1, out=str(out), **{**TINY, "batch_size": 64})
    final = train(config)
    for name in (
        "checkpoint.pt",
        "log.jsonl",
        "curves.png",
        "result.json",
        "genotype.json",
        "network.pt",
    ):
        assert (out / name).is_file(), name
    assert json.loads((out / "result.json").read_text()) == pytest.approx(final)
    (record,) = read_jsonl(out / "log.jsonl")
    assert record["epoch"] == 1 and record["test_top1"] == final["top1"]
    assert 0 <= final["top1"] <= final["top5"] <= 100
    assert final["top1_err"] == pytest.approx(100 - final["top1"])
    model = load_network(out / "network.pt")
    assert load_network(out / "checkpoint.pt").state_dict().keys() == model.state_dict().keys()
    assert final["params"] == sum(p.numel() for p in model.parameters()) - sum(
        p.numel() for p in model.auxiliary_head.parameters()
    )
    assert final["macs"] > 0
    # the rebuilt network reproduces the reported test error
    train_set, _, test_set = load_digits(16)
    mean, std = channel_stats(train_set)
    loader = TensorLoader(test_set, 64, augment=Augment(mean, std, 0, False))
    assert evaluate(model, loader)["top1"] == pytest.approx(final["top1"])


def test_resume_after_a_crash_matches_uninterrupted(digits, tmp_path, monkeypatch) -> None:
    common = {**TINY, "drop_path": 0.3, "cutout": 4, "seed": 3}
    full = train(TrainConfig(epochs=2, out=str(tmp_path / "full"), **common), *digits)
    save = engine_run.save_checkpoint

    def crash_after_saving(*args, **kwargs):  # killed right after epoch 1's checkpoint
        save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(engine_run, "save_checkpoint", crash_after_saving)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(epochs=2, out=str(tmp_path / "cut"), **common), *digits)
    monkeypatch.undo()
    resumed = train(
        TrainConfig(epochs=2, out=str(tmp_path / "cut"), resume=True, **common), *digits
    )
    for key in ("top1", "top5", "test_loss", "train_loss"):
        assert resumed[key] == full[key], key
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["state"]["model"]
    b = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["state"]["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)
    log = read_jsonl(tmp_path / "cut" / "log.jsonl")
    assert [r["epoch"] for r in log] == [1, 2]
    with pytest.raises(ValueError, match="channels: 4 -> 8"):
        train(
            TrainConfig(
                epochs=2, out=str(tmp_path / "cut"), resume=True, **{**common, "channels": 8}
            ),
            *digits,
        )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(TrainConfig(out=str(tmp_path / "none"), resume=True, **common), *digits)


def test_resume_keeps_the_runs_genotype_when_its_file_was_overwritten(
    digits, tmp_path, capsys
) -> None:
    """search -> train -> a second search into the same folder -> train --resume: the run
    goes on with the genotype it started with, and says that the file changed."""
    from nos_ops.genotype import get_genotype

    path, out = tmp_path / "genotype.json", tmp_path / "run"
    get_genotype("DARTS_V2").save(path)
    train(TrainConfig(genotype=str(path), epochs=1, out=str(out), **TINY), *digits)
    get_genotype("DARTS_V1").save(path)
    capsys.readouterr()
    final = train(TrainConfig.from_run(out, epochs=2), *digits)
    assert "now holds another genotype than this run's" in capsys.readouterr().out
    assert final["epochs"] == 2
    kept = load_network(out / "network.pt")
    assert kept.genotype.to_dict() == get_genotype("DARTS_V2").to_dict()
    assert json.loads((out / "genotype.json").read_text()) == get_genotype("DARTS_V2").to_dict()


def test_the_trained_network_says_what_input_it_reads_down_to_a_shared_folder(
    digits, tmp_path
) -> None:
    """train on 16x16 digits -> network.pt -> load_network -> save_pretrained ->
    from_pretrained: the input size and normalisation are the digits', not CIFAR's."""
    from nos_ops.pretrained import from_pretrained, save_pretrained

    out = tmp_path / "run"
    train(TrainConfig(epochs=1, out=str(out), **TINY), *digits)
    mean, std = channel_stats(digits[0])
    model = load_network(out / "network.pt")
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 16, 16)
    assert cfg["mean"] == pytest.approx(mean) and cfg["std"] == pytest.approx(std)
    shared = from_pretrained(save_pretrained(model, tmp_path / "share"))
    for key in ("input_size", "mean", "std"):
        assert tuple(shared.pretrained_cfg[key]) == pytest.approx(tuple(cfg[key])), key
    assert load_network(out / "checkpoint.pt").pretrained_cfg["input_size"] == (3, 16, 16)


def test_a_diverging_run_stops_keeps_its_checkpoint_and_writes_no_nan(digits, tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(epochs=1, out=str(out), **TINY), *digits)
    good = load_checkpoint(out / "checkpoint.pt")["state"]["model"]
    (out / "result.json").unlink()
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step \d+.*after epoch 1.*--lr"):
        train(TrainConfig(epochs=3, lr=1e12, out=str(out), resume=True, **TINY), *digits)
    kept = load_checkpoint(out / "checkpoint.pt")
    assert kept["epoch"] == 1
    assert all(torch.equal(good[k], kept["state"]["model"][k]) for k in good)
    assert not (out / "result.json").exists()
    for name in ("log.jsonl", "genotype.json"):
        assert "NaN" not in (out / name).read_text() and "Infinity" not in (out / name).read_text()


def test_imagenet_mobile_one_step_on_random_224(tmp_path) -> None:
    default = imagenet_mobile_config()
    assert (default.layers, default.channels, default.batch_size, default.epochs) == (
        14,
        48,
        512,
        300,
    )
    assert default.max_macs == 600_000_000 and default.label_smoothing == 0.1
    torch.manual_seed(0)
    images = torch.randn(2, 3, 224, 224)
    data = TensorDataset(images, torch.tensor([0, 1]))
    config = imagenet_mobile_config(
        layers=4,
        channels=8,
        batch_size=2,
        epochs=1,
        warmup_epochs=0,
        num_classes=3,
        workers=0,
        progress=False,
        out=str(tmp_path / "imagenet"),
    )
    final = train(config, data, data)
    assert math.isfinite(final["train_loss"]) and 0 < final["macs"] < 600_000_000
    state = load_checkpoint(tmp_path / "imagenet" / "network.pt", "network")
    assert state["arch"]["network"] == "imagenet" and state["arch"]["num_classes"] == 3
    with pytest.raises(ValueError, match="over max_macs"):
        train(dataclasses.replace(config, max_macs=1000, overwrite=True), data, data)


def test_ddp_two_processes_rank0_writes(tmp_path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        "-m",
        "nos_ops",
        "train",
        "--layers",
        "3",
        "--channels",
        "4",
        "--epochs",
        "1",
        "--batch-size",
        "128",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(out),
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("test top-1") == 1  # only rank 0 reports
    (record,) = read_jsonl(out / "log.jsonl")  # one record: rank 1 appended nothing
    assert record["epoch"] == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.pt",
        "curves.png",
        "genotype.json",
        "log.jsonl",
        "network.pt",
        "result.json",
    ]
    assert "world 2" in result.stderr + result.stdout
