"""Protocols (nos_ops.protocols): variants, presets, config checks, a tiny grid end to end
(in parallel processes, from the command line), and resume of a half-finished grid."""

from __future__ import annotations

import json

import pytest

from nos_ops.cli import main
from nos_ops.engine import load_checkpoint
from nos_ops.genotype import get_genotype
from nos_ops.protocols import (
    PRESETS,
    ProtocolConfig,
    Variant,
    calibration_ops,
    get_preset,
    run_protocol,
)

SEARCH = {
    "epochs": 2,
    "warmup_epochs": 1,
    "max_steps_per_epoch": 2,
    "channels": 4,
    "layers": 3,
    "batch_size": 16,
}
TRAIN = {"epochs": 1, "layers": 3, "channels": 4, "batch_size": 128}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A one-epoch, two-step teacher on the digits at 8 x 8."""
    from nos_ops.teacher import TeacherConfig, train_teacher

    out = tmp_path_factory.mktemp("teacher")
    config = TeacherConfig(
        arch="resnet18",
        epochs=1,
        max_steps_per_epoch=2,
        image_size=8,
        out=str(out),
        progress=False,
        quick=True,
    )
    return train_teacher(config)["path"]


def _config(tmp_path, teacher: str | None = "auto", **changes) -> ProtocolConfig:
    fields = {
        "protocol": "table4",
        "variants": ["w_ags", "distillation_only"],
        "seeds": [0],
        "teacher": teacher,
        "search": SEARCH,
        "train": TRAIN,
        "out": str(tmp_path / "protocol"),
        "progress": False,
        "plots": False,
        "jobs": 1,
    }
    return ProtocolConfig(**{**fields, **changes})


def test_presets_hold_the_papers_studies() -> None:
    assert [v.guidance for v in PRESETS["table4"]] == ["both", "none", "weights"]
    assert [v.space for v in PRESETS["fig7"]] == [
        "feature",
        "feature+attention",
        "feature+dynamic",
        "nos",
    ]
    assert {v.space for v in PRESETS["generality"]} == {"darts"}
    assert all(not v.second_order for variants in PRESETS.values() for v in variants)
    with pytest.raises(ValueError, match=r"preset='table5' is not valid; expected one of"):
        get_preset("table5")


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"key": "a b"}, r"key='a b' is not valid"),
        ({"guidance": "arch"}, r"guidance='arch' is not valid; expected one of"),
        ({"partial_channels": 0}, r"partial_channels=0 is not valid"),
        ({"second_order": 1}, r"second_order=1 is not valid"),
    ],
)
def test_variant_names_bad_fields(fields: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Variant(**{"key": "v", "label": "v", **fields})
    with pytest.raises(KeyError, match="unknown space"):
        Variant("v", "v", space="nas")


def test_variant_maps_guidance_onto_the_search() -> None:
    weights = Variant("d", "d", guidance="weights").search_fields()
    assert weights["at_steps"] == "weights"
    assert Variant("a", "a").search_fields()["at_steps"] == "both"
    assert Variant.from_dict(Variant("a", "a", space="darts").to_dict()).space == "darts"
    with pytest.raises(ValueError, match=r"variant fields \['colour'\] are not valid"):
        Variant.from_dict({"key": "a", "label": "a", "colour": "red"})


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"search": {"space": "darts"}}, r"\['space'\] are set by the protocol"),
        ({"train": {"genotype": "DARTS_V2"}}, r"\['genotype'\] are set by the protocol"),
        ({"search": {"channels": 0}}, r"channels=0 is not valid"),
        ({"seeds": [1, 1]}, r"seeds=\[1, 1\] is not valid"),
        ({"variants": ["w_ags", "w_ags"]}, r"expected distinct keys"),
        ({"variants": ["nope"]}, r"variants item 'nope' is not valid"),
        ({"teacher": None}, r"teacher=None is not valid: variants \['w_ags'"),
        ({"jobs": 0}, r"jobs=0 is not valid"),
    ],
)
def test_config_names_bad_settings(tmp_path, changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _config(tmp_path, **changes)


def test_jobs_default_to_one_per_core_on_a_cpu(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert _config(tmp_path, jobs=None, device="cpu").workers() == 2  # two grid cells
    assert _config(tmp_path, jobs=None, device="cpu", seeds=list(range(9))).workers() == 16
    assert _config(tmp_path, jobs=3, device="cpu").workers() == 3


@pytest.mark.parametrize("epochs, warmup", [(1, 0), (2, 0), (3, 2)])
def test_short_quick_searches_drop_the_quick_warmup(tmp_path, epochs: int, warmup: int) -> None:
    """``--search epochs=2`` on the quick protocol: no warm-up that would leave no
    architecture step (the quick search's own rule); a warm-up given stays checked."""
    config = _config(tmp_path, search={"epochs": epochs})
    variant = config.resolved_variants()[0]
    search = config.search_config(variant, 0, None)
    assert (search.epochs, search.warmup_epochs) == (epochs, warmup)
    with pytest.raises(ValueError, match="warmup_epochs=2 is not valid"):
        _config(tmp_path, search={"epochs": 2, "warmup_epochs": 2}).search_config(variant, 0, None)


def test_auto_teacher_needs_the_digits(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"teacher='auto' trains the quick teacher"):
        _config(tmp_path, data_dir=str(tmp_path))


def test_distillation_only_leaves_the_architecture_step_unguided(teacher) -> None:
    from nos_ops.engine import setup_distributed
    from nos_ops.search import SearchConfig
    from nos_ops.search.task import SearchTask

    ctx = setup_distributed("cpu")
    fields = {**SEARCH, "image_size": 8, "teacher": teacher, "quick": True}
    both = SearchTask(SearchConfig(**fields).resolved(), ctx)
    weights = SearchTask(SearchConfig(**fields, at_steps="weights").resolved(), ctx)
    assert both.architect.teacher is not None
    assert weights.teacher is not None and weights.architect.teacher is None
    with pytest.raises(ValueError, match=r"at_steps='arch' is not valid; expected one of"):
        SearchConfig(at_steps="arch")


def test_calibration_ops_counts_attention_and_dynamic_ops() -> None:
    assert calibration_ops(get_genotype("DARTS_V2")) == (0, 16)


def test_tiny_protocol_end_to_end_in_two_processes(tmp_path, teacher) -> None:
    out = tmp_path / "protocol"
    argv = ["protocol", "--variants", "w_ags", "distillation_only", "--seeds", "0"]
    argv += ["--teacher", teacher, "--jobs", "2", "--out", str(out), "--no-progress"]
    argv += [f"--search={k}={v}" for k, v in SEARCH.items()]
    argv += [f"--train={k}={v}" for k, v in TRAIN.items()]
    assert main(argv) == 0
    result = json.loads((out / "results.json").read_text())
    assert [row["key"] for row in result["variants"]] == ["w_ags", "distillation_only"]
    assert "not CIFAR" in result["data"]
    for row, run in zip(result["variants"], result["runs"]):
        assert row["runs"] == 1 and row["top1_std"] == 0.0
        assert row["top1_mean"] == run["top1"] and 0.0 <= run["top1"] <= 100.0
        genotype = get_genotype(
            out / "runs" / run["variant"] / "seed_0" / "train" / "genotype.json"
        )
        assert genotype.to_dict() == run["genotype"]
        assert (run["calibration_ops"], run["ops"]) == calibration_ops(genotype)
        assert run["params"] > 0 and run["macs"] > 0 and run["search_s"] > 0
    search = load_checkpoint(
        out / "runs" / "distillation_only" / "seed_0" / "search" / "checkpoint.pt"
    )
    assert search["config"]["at_steps"] == "weights" and search["config"]["teacher"] == teacher
    report = (out / "report.md").read_text()
    assert "| w/ AGS | nos | Eqs. 12 + 13 | first | 1 |" in report
    assert "| distillation only | nos | Eq. 12 only |" in report
    assert (out / "summary.png").is_file()
    assert (out / "arch_weights_w_ags.png").is_file()
    assert (out / "runs" / "w_ags" / "seed_0" / "cell.log").read_text().count("epoch 2/2") == 1


def test_half_finished_grid_resumes_where_it_stopped(tmp_path, teacher, monkeypatch) -> None:
    import nos_ops.train as train_module

    config = _config(tmp_path, teacher)
    real_train, calls = train_module.train, []

    def failing_second(*args, **kwargs):
        calls.append(args[0].out)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(train_module, "train", failing_second)
    with pytest.raises(KeyboardInterrupt):
        run_protocol(config)
    state = load_checkpoint(tmp_path / "protocol" / "checkpoint.pt", "protocol")
    assert [r["variant"] for r in state["records"]] == ["w_ags"]
    second = tmp_path / "protocol" / "runs" / "distillation_only" / "seed_0"
    assert (second / "search" / "result.json").is_file() and not (second / "cell.json").exists()
    with pytest.raises(FileExistsError, match="pass --resume to continue"):
        run_protocol(config)

    import nos_ops.search as search_module

    def no_search(*args, **kwargs):
        raise AssertionError("a finished search ran again")

    monkeypatch.setattr(search_module, "run_search", no_search)
    monkeypatch.setattr(train_module, "train", real_train)
    resumed = ProtocolConfig.from_run(tmp_path / "protocol", jobs=1)
    result = run_protocol(resumed)
    assert [r["variant"] for r in result["runs"]] == ["w_ags", "distillation_only"]
    assert (second / "cell.json").is_file()
    with pytest.raises(ValueError, match=r"cannot change when resuming"):
        ProtocolConfig.from_run(tmp_path / "protocol", seeds=[0, 1])


def test_one_seed_shows_no_spread() -> None:
    from nos_ops.protocols.report import spread_text

    assert spread_text(18.888, 0.0, 1, unit="%") == "18.89% (1 run)"
    assert spread_text(0.25, 0.03, 3, 100, 0, "%") == "25% ± 3%"
    assert spread_text(90.1, 1.234, 3) == "90.10 ± 1.23"
