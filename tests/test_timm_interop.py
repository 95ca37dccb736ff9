"""timm interop (the ``timm`` extra): our networks as timm models, timm's attention layers as
ops, add_self_calibration on timm ResNets, save_pretrained folders loaded by timm.

Skipped as a whole when timm cannot be imported (CI installs the extra so these run).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

timm = pytest.importorskip("timm", reason="timm is not installed (pip install 'nos_ops[timm]')")

from nos_ops import (  # noqa: E402
    BlockGene,
    CellGene,
    Genotype,
    MixedHeteroOp,
    NOSNetCIFAR,
    NOSNetImageNet,
    create_op,
    get_genotype,
    save_pretrained,
)
from nos_ops.models import add_self_calibration  # noqa: E402
from nos_ops.models.timm_interop import (  # noqa: E402
    TIMM_ATTENTION_TYPES,
    TIMM_FEATURE_TYPES,
    register_timm_ops,
)
from nos_ops.ops.registry import Family, op_family  # noqa: E402
from nos_ops.space import FEATURE_OPS, SearchSpace  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = {"channels": 8, "layers": 3}


def test_timm_sees_our_models() -> None:
    assert timm.list_models("nos_*") == ["nos_cifar", "nos_imagenet"]
    assert timm.is_model("nos_cifar") and timm.is_model("nos_imagenet")


def test_timm_create_model_cifar_from_a_genotype_file(tmp_path) -> None:
    path = tmp_path / "genotype.json"
    get_genotype("PDARTS").save(path)
    model = timm.create_model("nos_cifar", genotype=str(path), num_classes=10, **SMALL)
    assert isinstance(model, NOSNetCIFAR) and model.genotype == get_genotype("PDARTS")
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 32, 32) and cfg["classifier"] == "classifier"
    assert cfg["mean"] == (0.4914, 0.4822, 0.4465) and cfg["num_classes"] == 10
    data_cfg = timm.data.resolve_data_config({}, model=model)
    assert data_cfg["input_size"] == (3, 32, 32) and data_cfg["std"] == cfg["std"]
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 10)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (
        2,
        model.num_features,
    )
    model.reset_classifier(4)
    assert model(x).shape == (2, 4) and model.get_classifier().out_features == 4


def test_timm_create_model_imagenet_by_zoo_name() -> None:
    model = timm.create_model("nos_imagenet", genotype="DARTS_V2", **SMALL).eval()
    assert isinstance(model, NOSNetImageNet) and model.pretrained_cfg["input_size"] == (3, 224, 224)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_registration_when_nos_ops_is_imported_before_timm() -> None:
    code = (
        "import sys, nos_ops\n"
        "assert 'timm' not in sys.modules\n"
        "import timm\n"
        "m = timm.create_model('nos_cifar', channels=8, layers=3, num_classes=3)\n"
        "print(type(m).__name__, m.num_classes)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert out.stdout.split() == ["NOSNetCIFAR", "3"]


@pytest.mark.parametrize("attn_type", TIMM_ATTENTION_TYPES)
def test_channel_gates_are_attention_ops(attn_type: str) -> None:
    (name,) = register_timm_ops([attn_type])
    assert name == f"timm:{attn_type}" and op_family(name) is Family.ATTENTION
    op = create_op(name, 16).eval()
    x = torch.randn(2, 16, 7, 9)
    gate = op.attention(x)
    assert gate.shape == (2, 16, 1, 1) and bool(((gate > 0) & (gate < 1)).all())
    # the gate is exactly the map the timm layer multiplies x with
    torch.testing.assert_close(x * gate, op.layer(x))
    torch.testing.assert_close(op(x), x + x * gate)
    strided = create_op(name, 16, 2).eval()
    strided.load_state_dict(op.state_dict())
    torch.testing.assert_close(strided(x), x[:, :, ::2, ::2] * (1 + gate))


@pytest.mark.parametrize("attn_type", TIMM_FEATURE_TYPES)
def test_calibrating_layers_are_feature_ops(attn_type: str) -> None:
    (name,) = register_timm_ops([attn_type])
    assert op_family(name) is Family.FEATURE
    x = torch.randn(2, 16, 7, 8)
    op = create_op(name, 16).eval()
    torch.testing.assert_close(op(x), op.layer(x))
    assert create_op(name, 16, 2).eval()(x).shape == (2, 16, 4, 4)


def test_register_timm_ops_is_idempotent_and_checks_names() -> None:
    assert register_timm_ops() == register_timm_ops()
    with pytest.raises(ValueError, match=r"types=\['ge'\] are not valid"):
        register_timm_ops(["ge"])


def test_timm_ops_in_a_space_and_a_derived_cell() -> None:
    register_timm_ops()
    space = SearchSpace("feature+timm", FEATURE_OPS + ("timm:eca", "timm:cbam"))
    assert space.family("timm:eca") is Family.ATTENTION
    cell = CellGene(
        (
            BlockGene((("timm:cbam", 0), ("timm:se", 1)), "timm:eca"),
            BlockGene((("sep_conv_3x3", 0), ("dynamic_conv_3x3", 2)), "timm:gc"),
        ),
        (2, 3),
    )
    model = NOSNetCIFAR(Genotype(cell, cell), **SMALL).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    for stride in (1, 2):
        edge = MixedHeteroOp(16, stride, space)
        out = edge(torch.randn(2, 16, 8, 8), torch.randn(len(space.ops)).softmax(-1))
        assert out.features.shape == (2, 16, 8 // stride, 8 // stride)
        assert out.attention is not None


@pytest.mark.parametrize(
    "name, widths",
    [
        ("resnet18", (64, 128, 256, 512)),
        ("resnet50", (256, 512, 1024, 2048)),
        ("resnet26d", (256, 512, 1024, 2048)),
    ],
)
def test_add_self_calibration_on_timm_resnets(name: str, widths: tuple[int, ...]) -> None:
    model = timm.create_model(name, num_classes=10)
    add_self_calibration(model, "dynamic_conv_3x3", stages=(1, 2, 3, 4))
    for i, width in enumerate(widths, start=1):
        assert getattr(model, f"layer{i}")[1].channels == width
    x = torch.randn(1, 3, 64, 64)
    assert model.eval()(x).shape == (1, 10)
    register_timm_ops(["eca"])
    add_self_calibration(timm.create_model(name, num_classes=10), "timm:eca", stages=2)


def test_timm_loads_a_save_pretrained_folder(tmp_path) -> None:
    cell = CellGene(
        (
            BlockGene((("sep_conv_3x3", 0), ("dynamic_conv_3x3", 1)), "spatial_attention"),
            BlockGene((("identity", 0), ("channel_attention", 2)), "dynamic_conv_5x5"),
        ),
        (2, 3),
    )
    model = NOSNetCIFAR(Genotype(cell, cell), num_classes=5, auxiliary=True, **SMALL)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    model.eval()
    save_pretrained(model, tmp_path)
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert tuple(loaded.pretrained_cfg["mean"]) == model.pretrained_cfg["mean"]
    other = timm.create_model(f"local-dir:{tmp_path}", pretrained=True, num_classes=3)
    assert other.num_classes == 3 and torch.equal(other.stem[0].weight, model.stem[0].weight)
