"""The benchmark scripts run end to end in --smoke mode and write parseable reports.

No timing is asserted: the scripts measure, the tests only check that they run and that
their JSON carries the promised keys.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
META_KEYS = {"date", "git_sha", "torch", "cuda", "device", "device_name", "threads"}


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _report(name: str, tmp_path: Path, *extra: str) -> dict:
    out, md = tmp_path / f"{name}.json", tmp_path / f"{name}.md"
    outputs = ["--format", "json", "--out", str(out), "--md-out", str(md)]
    _load(name).main(["--smoke", *outputs, *extra])
    report = json.loads(out.read_text())
    assert META_KEYS <= set(report["meta"])
    assert report["rows"]
    assert md.read_text().startswith("## ")
    return report


def test_ops_smoke(tmp_path: Path) -> None:
    report = _report("ops", tmp_path, "--threads", "1")
    names = {r["name"] for r in report["rows"]}
    assert {"dynamic_conv_3x3", "spatial_attention", "sep_conv_3x3", "edge[nos]"} <= names
    for row in report["rows"]:
        assert {"params", "macs_per_sample", "fwd_ms", "fwd_p10_ms", "fwd_p90_ms"} <= set(row)
        assert {"fwd_bwd_ms", "device", "dtype", "threads", "channels_last"} <= set(row)
        assert row["fwd_ms"] > 0 and row["fwd_bwd_ms"] > 0
    dynamic = next(r for r in report["rows"] if r["name"] == "dynamic_conv_5x5")
    assert dynamic["static"].startswith("nn.Conv2d") and dynamic["ratio_fwd_bwd_static"] > 0
    assert report["rows"][0]["peak_memory_mb"] > 0


@pytest.mark.parametrize("fmt", ["md", "csv"])
def test_ops_text_formats(tmp_path: Path, capsys: pytest.CaptureFixture, fmt: str) -> None:
    out = tmp_path / f"ops.{fmt}"
    args = ["--smoke", "--threads", "1", "--no-memory", "--ops", "dynamic_conv_3x3"]
    _load("ops").main([*args, "--format", fmt, "--out", str(out)])
    text = out.read_text()
    assert text == capsys.readouterr().out
    assert "dynamic_conv_3x3" in text
    if fmt == "csv":
        assert text.splitlines()[0].startswith("name,")


def test_search_step_smoke(tmp_path: Path) -> None:
    report = _report("search_step", tmp_path, "--threads", "1")
    rows = {r["config"]: r for r in report["rows"]}
    assert {"nos", "darts", "darts pc4"} <= set(rows)
    for row in rows.values():
        for step in ("weight", "arch_first", "arch_second"):
            assert row[f"{step}_s"] > 0 and row[f"{step}_peak_rss_gb"] > 0
            assert f"{step}_vs_darts" in row and f"{step}_cpu_s" in row
        assert "arch_second_vs_weight" in row and row["projected_search_h"] > 0
    assert rows["darts"]["weight_vs_darts"] == 1.0


def test_table1_smoke(tmp_path: Path) -> None:
    report = _report("table1", tmp_path)
    base = report["rows"][0]
    assert base["row"] == "ResNet-18" and base["paper_mmacs"] == 555.42
    assert base["ours_macs"] == 555_422_720 and base["ours_params"] == 11_173_962
    for row in report["rows"]:
        assert {"paper_mparams", "ours_mparams", "diff_mmacs", "diff_mparams"} <= set(row)


def test_trainability_smoke(tmp_path: Path) -> None:
    report = _report("trainability", tmp_path, "--plot", str(tmp_path / "t.png"))
    names = [r["genotype"] for r in report["rows"]]
    assert names[0] == "DARTS_V2" and "random_1" in names and len(names) == 5
    for row in report["rows"]:
        assert {"finite", "peak_activation", "eval_loss", "train_mode_loss", "accuracy"} <= set(row)
        assert row["finite"] and 0 <= row["accuracy"] <= 100
    assert {"all_train", "nos_median_accuracy"} <= set(report["meta"])
    assert (tmp_path / "t.png").stat().st_size > 0


def test_study_seeds_smoke(tmp_path: Path) -> None:
    report = _report("study_seeds", tmp_path, "--seeds", "0", "1", "--root", str(tmp_path))
    base, op = report["rows"]
    assert base["op"] == "ResNet-18 baseline" and op["op"] == "spatial_attention"
    assert {"seed_0", "seed_1", "top1_err_mean", "top1_err_std"} <= set(op)
    assert op["top1_err_mean"] == (op["seed_0"] + op["seed_1"]) / 2


def test_gpu_suite_smoke(tmp_path: Path) -> None:
    report = _report("gpu_suite", tmp_path, "--device", "cpu", "--threads", "1")
    assert {"all_correct", "projected_search_h", "compile_backend"} <= set(report["meta"])
    sections = {}
    for row in report["rows"]:
        sections.setdefault(row["section"], []).append(row)
    checks = {r["name"]: r for r in sections["correctness"]}
    assert {"dynamic_conv_3x3", "spatial_attention", "export dynamic batch"} <= set(checks)
    for row in checks.values():
        assert "ok" in row and "fwd_err" in row
    assert {"bwd_err", "fp16_finite", "bf16_finite", "channels_last_err"} <= set(
        checks["dynamic_conv_3x3"]
    )
    search = {r["config"]: r for r in sections["search_step"]}
    assert set(search) == {"darts", "nos", "darts pc4"}
    for row in search.values():
        assert row["weight_s"] > 0 and row["arch_second_s"] > 0 and row["projected_search_h"] > 0
    names = {r["name"] for r in sections["train_throughput"]}
    assert {"DARTS_V2 eager fp32", "NOS compile amp"} <= names
    for row in sections["train_throughput"]:
        assert row["ok"] and row["images_per_s"] > 0


def test_search_step_reference_rounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--reference adds the reference as a configuration; ratios are medians of the
    per-round ratios, and odd rounds run the jobs in reverse order."""
    module = _load("search_step")
    (tmp_path / "step.py").write_text("")
    args = module.parse_args(
        ["--sizes", "anchor", "--configs", "nos", "--steps", "weight", "--rounds", "3"]
        + ["--reference", str(tmp_path)]
    )
    assert args.threads == module.REFERENCE_THREADS
    order, speed = [], iter([1.0, 2.0, 10.0, 5.0, 3.0, 6.0])  # round 1 slow for both

    def fake(seconds: float) -> dict:
        return {
            "wall_s": {"median": seconds},
            "cpu_s": {"median": 2 * seconds},
            "wall_range_s": [seconds, seconds],
            "peak_rss_bytes": 1e9,
            "rss_before_steps_bytes": 1e8,
            "threads": 2,
            "load_average": None,
            "cpu_busy_before": None,
        }

    def ours(config: dict, isolate: bool, idle: float) -> dict:
        order.append("nos")
        return fake(next(speed))

    def reference(directory: Path, step: str, batch: int, *rest: object) -> dict:
        order.append("reference")
        return fake(next(speed))

    monkeypatch.setattr(module, "measure", ours)
    monkeypatch.setattr(module, "measure_reference", reference)
    rows = {r["config"]: r for r in module._rows(args)}
    assert order == ["reference", "nos", "nos", "reference", "reference", "nos"]
    ref, nos = rows[module.REFERENCE], rows["nos"]
    assert ref["weight_round_s"] == [1.0, 5.0, 3.0] and nos["weight_round_s"] == [2.0, 10.0, 6.0]
    assert nos["weight_vs_reference"] == 2.0 and ref["weight_vs_reference"] == 1.0
    assert nos["weight_s"] == 6.0 and nos["weight_anchor_s"] == 3.0


def test_search_step_reference_checks(tmp_path: Path) -> None:
    module = _load("search_step")
    with pytest.raises(SystemExit):
        module.parse_args(["--reference", str(tmp_path)])  # no step.py there
    (tmp_path / "step.py").write_text("")
    with pytest.raises(SystemExit):
        module.parse_args(["--reference", str(tmp_path), "--threads", "1"])


def test_export_time_smoke(tmp_path: Path) -> None:
    report = _report("export_time", tmp_path)
    rows = {(r["genotype"], r["conv"]): r for r in report["rows"]}
    assert set(rows) == {(g, c) for g in ("DARTS_V2", "found") for c in ("auto", "shifted")}
    assert rows["found", "auto"]["nodes"] < rows["found", "shifted"]["nodes"]
    assert all(r["max_abs_diff"] < 1e-4 for r in rows.values())
    plots = _load("plots")
    plots.export_figure(report, tmp_path / "export.png")
    assert (tmp_path / "export.png").stat().st_size > 0
