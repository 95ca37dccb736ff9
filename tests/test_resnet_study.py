"""The Table 1 study script (examples/resnet_self_calibration.py) in quick mode on digits."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "resnet_self_calibration.py"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine the
    threads' barriers cost 10-60x; the previous setting is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("resnet_self_calibration", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_study_prints_table(study, tmp_path, capsys) -> None:
    argv = ["--quick", "--epochs", "1", "--width", "0.125", "--op", "channel_attention",
            "--op", "dynamic_conv_3x3", "--no-progress", "--out", str(tmp_path)]
    rows = study.main(argv)
    table = capsys.readouterr().out
    assert "| Model | Type | Kernels | Top-1 err (%) | Top-5 err (%) | MACs (M) | Params (M) |" \
        in table
    assert "| ResNet-18 | - | - |" in table
    assert "| + Attention | Channel | - |" in table
    assert "| + Dynamic | Normal | 3 |" in table
    assert "quick mode" in table
    assert [r["op"] for r in rows] == [None, "channel_attention", "dynamic_conv_3x3"]
    base, attention, dynamic = rows
    assert attention["params"] > base["params"] and dynamic["macs"] > base["macs"]
    assert all(0 <= r["top5_err"] <= r["top1_err"] <= 100 for r in rows)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == rows and saved["args"]["stages"] == [1, 2, 3]


def test_all_ops_and_invalid_width(study) -> None:
    assert study.parse_args(["--op", "all"]).op == list(study.OPS)
    assert study.parse_args([]).epochs == 300
    with pytest.raises(SystemExit):
        study.parse_args(["--width", "0"])
