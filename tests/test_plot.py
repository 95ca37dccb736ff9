"""Figures: genotype drawing, architecture weights, learning curves (PNG and SVG files)."""

from __future__ import annotations

import builtins
from xml.etree import ElementTree

import pytest
import torch

pytest.importorskip("matplotlib")

from nos_ops.genotype import DARTS_V2, BlockGene, CellGene, Genotype, derive  # noqa: E402
from nos_ops.plot import draw_genotype, plot_arch_weights, plot_curves  # noqa: E402
from nos_ops.space import get_space  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"

NOS_GENOTYPE = Genotype(
    normal=CellGene(
        (
            BlockGene((("sep_conv_3x3", 0), ("spatial_attention", 1)), "dynamic_conv_3x3"),
            BlockGene((("channel_attention", 0), ("sep_conv_5x5", 2)), "dynamic_conv_5x5"),
            BlockGene((("dil_conv_3x3", 1), ("dynamic_conv_3x3", 3)), "identity"),
            BlockGene((("identity", 0), ("dynamic_conv_5x5", 4)), "channel_attention"),
        ),
        (2, 3, 4, 5),
    ),
    reduce=CellGene(
        (
            BlockGene((("max_pool_3x3", 0), ("dynamic_conv_5x5", 1)), "spatial_attention"),
            BlockGene((("sep_conv_3x3", 1), ("spatial_attention", 2)), "sep_conv_3x3"),
            BlockGene((("identity", 2), ("channel_attention", 3)), "dynamic_conv_3x3"),
            BlockGene((("avg_pool_3x3", 1), ("dynamic_conv_3x3", 4)), "channel_attention"),
        ),
        (2, 3, 4, 5),
    ),
)


def _check_file(path, suffix: str) -> None:
    data = path.read_bytes()
    assert len(data) > 5_000
    if suffix == ".png":
        assert data.startswith(PNG)
    else:
        root = ElementTree.fromstring(data)
        assert root.tag == "{http://www.w3.org/2000/svg}svg"


def _records(space: str, epochs: int = 4) -> list[dict]:
    space = get_space(space)
    shape = (space.num_edges, space.num_ops)
    records = []
    for epoch in range(epochs):
        records.append(
            {
                "epoch": epoch,
                "alphas_normal": torch.randn(shape).softmax(-1).tolist(),
                "alphas_reduce": torch.randn(shape).softmax(-1).tolist(),
                "train_loss": 2.0 / (epoch + 1),
                "val_acc": 0.1 * epoch,
            }
        )
        records.append({"epoch": epoch, "step": 10, "lr": 0.025})  # a per-step record
    return records


@pytest.mark.parametrize(
    "genotype, suffix",
    [(NOS_GENOTYPE, ".png"), (DARTS_V2, ".svg")],
    ids=["nos-png", "darts-svg"],
)
def test_draw_genotype_writes_the_file(genotype, suffix, tmp_path):
    path = draw_genotype(genotype, tmp_path / "figures" / f"cells{suffix}", title="cells")
    assert path == tmp_path / "figures" / f"cells{suffix}"
    _check_file(path, suffix)


def test_draw_genotype_svg_names_every_op(tmp_path):
    genotype = derive(torch.randn(18, 11), torch.randn(18, 11), "nos")
    path = draw_genotype(genotype, tmp_path / "cells.svg")
    _check_file(path, ".svg")
    text = path.read_text()
    for op in set(genotype.normal.ops + genotype.reduce.ops):
        assert op in text
    assert "normal cell" in text and "reduction cell" in text


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_arch_weights_writes_the_file(suffix, tmp_path):
    space = "darts" if suffix == ".svg" else "nos"
    ops = get_space(space).ops
    path = plot_arch_weights(_records(space), ops, tmp_path / f"alphas{suffix}", title=space)
    _check_file(path, suffix)


def test_plot_arch_weights_any_number_of_edges(tmp_path):
    records = [
        {"epoch": e, "alphas_normal": [[0.5, 0.5]] * 3, "alphas_reduce": [[0.2, 0.8]] * 3}
        for e in range(3)
    ]
    _check_file(plot_arch_weights(records, ["identity", "none"], tmp_path / "a.png"), ".png")


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_curves_writes_the_file(suffix, tmp_path):
    path = plot_curves(_records("darts"), ["train_loss", "val_acc", "lr"], tmp_path / f"c{suffix}")
    _check_file(path, suffix)


@pytest.mark.parametrize("suffix", [".pdf", ".jpg", ""])
def test_bad_suffix_names_the_valid_ones(suffix, tmp_path):
    match = r"path=.* has suffix .*; expected one of \.png, \.svg"
    with pytest.raises(ValueError, match=match):
        draw_genotype(DARTS_V2, tmp_path / f"cells{suffix}")
    with pytest.raises(ValueError, match=match):
        plot_arch_weights(_records("darts", 1), get_space("darts").ops, tmp_path / f"a{suffix}")
    with pytest.raises(ValueError, match=match):
        plot_curves(_records("darts", 1), ["val_acc"], tmp_path / f"c{suffix}")
    assert not list(tmp_path.iterdir())


def test_argument_errors(tmp_path):
    with pytest.raises(TypeError, match="genotype must be a Genotype, got str"):
        draw_genotype("DARTS_V2", tmp_path / "g.png")
    ops = get_space("darts").ops
    with pytest.raises(ValueError, match="ops must name at least one op"):
        plot_arch_weights(_records("darts", 1), [], tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"records\[0\]\['alphas_normal'\] must be .* 7 weights"):
        plot_arch_weights(_records("darts", 1), ops[:7], tmp_path / "a.png")
    with pytest.raises(ValueError, match="records has no record with the keys"):
        plot_arch_weights([{"epoch": 0, "lr": 0.1}], ops, tmp_path / "a.png")
    with pytest.raises(KeyError, match="unknown op name='conv_9x9'"):
        plot_arch_weights(_records("darts", 1), ["conv_9x9"] * 8, tmp_path / "a.png")
    with pytest.raises(ValueError, match="keys must name at least one record key"):
        plot_curves(_records("darts", 1), [], tmp_path / "c.png")
    with pytest.raises(ValueError, match="keys: no record has both 'epoch' and 'val_loss'"):
        plot_curves(_records("darts", 1), ["val_acc", "val_loss"], tmp_path / "c.png")
    with pytest.raises(ValueError, match="no record has both 'step' and 'val_acc'"):
        plot_curves(_records("darts", 1), ["val_acc"], tmp_path / "c.png", x="step")


def test_missing_matplotlib_says_what_to_install(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r'pip install "nos_ops\[examples\]"'):
        plot_curves([{"epoch": 0, "loss": 1.0}], ["loss"], tmp_path / "c.png")
