"""The Table 1 study (nos_ops.study, ``nos-ops study``) in tiny quick runs on the digits."""

from __future__ import annotations

import json

import pytest

from nos_ops.engine import NonFiniteLossError, load_checkpoint
from nos_ops.engine import run as engine_run
from nos_ops.study import OPS, StudyConfig, run_study

pytestmark = pytest.mark.usefixtures("single_thread")


def _config(out, **changes) -> StudyConfig:
    settings = dict(
        ops=["channel_attention", "dynamic_conv_3x3"],
        epochs=2,
        width=0.125,
        image_size=8,
        batch_size=16,
        max_steps_per_epoch=2,
        device="cpu",
        progress=False,
        out=str(out),
    )
    return StudyConfig(**{**settings, **changes})


def test_study_prints_the_table_and_resumes_bit_for_bit(tmp_path, capsys, monkeypatch):
    result = run_study(_config(tmp_path / "full"))
    table = capsys.readouterr().out
    assert (
        "| Model | Type | Kernels | Top-1 err (%) | Top-5 err (%) | MACs (M) | Params (M) |"
        in table
    )
    for row in (
        "| ResNet-18 | - | - |",
        "| + Attention | Channel | - |",
        "| + Dynamic | Normal | 3 |",
        "quick mode",
    ):
        assert row in table
    rows = result["rows"]
    assert [r["op"] for r in rows] == [None, "channel_attention", "dynamic_conv_3x3"]
    base, attention, dynamic = rows
    assert attention["params"] > base["params"] and dynamic["macs"] > base["macs"]
    assert all(0 <= r["top5_err"] <= r["top1_err"] <= 100 for r in rows)
    assert all(r["top1_err"] == pytest.approx(100 - r["top1"]) for r in rows)
    saved = json.loads((tmp_path / "full" / "results.json").read_text())
    assert saved["rows"] == rows and saved["args"]["stages"] == [1, 2, 3]

    save = engine_run.save_checkpoint

    def crash_mid_second_model(*args, **kwargs):  # killed after model 2's first epoch
        save(*args, **kwargs)
        if kwargs["epoch"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(engine_run, "save_checkpoint", crash_mid_second_model)
    with pytest.raises(KeyboardInterrupt):
        run_study(_config(tmp_path / "cut"))
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt", "study")["epoch"] == 3
    resumed = run_study(_config(tmp_path / "cut", resume=True))
    strip = [
        [{k: v for k, v in r.items() if k != "train_s"} for r in x["rows"]]
        for x in (result, resumed)
    ]
    assert strip[0] == strip[1]
    with pytest.raises(ValueError, match="cannot change its epochs"):
        run_study(_config(tmp_path / "cut", resume=True, epochs=3))


def test_a_diverging_study_stops(tmp_path):
    with pytest.raises(NonFiniteLossError, match="epoch 1, step 2; no checkpoint was written"):
        run_study(_config(tmp_path / "run", ops=["channel_attention"], lr=1e12))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["log.jsonl"]


def test_config_checks_and_defaults() -> None:
    assert StudyConfig().ops == list(OPS)
    assert StudyConfig(data_dir="cifar").resolved().epochs == 300
    assert StudyConfig().resolved().epochs == 3
    with pytest.raises(ValueError, match="width=0"):
        StudyConfig(width=0)
    with pytest.raises(ValueError, match="ops=\\['bogus'\\]"):
        StudyConfig(ops=["bogus"])
