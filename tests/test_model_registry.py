"""nos_ops.create_model / list_models: the timm-style evaluation networks, without timm."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

import nos_ops
from nos_ops import NetworkCIFAR, NetworkImageNet, create_model, get_genotype, list_models
from nos_ops.models import _registry
from nos_ops.models._registry import NOSNetCIFAR, NOSNetImageNet, register_model

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = {"channels": 8, "layers": 3}


def test_list_models_with_wildcards() -> None:
    assert {"nos_cifar", "nos_imagenet"} <= set(list_models())
    assert list_models("nos_*") == ["nos_cifar", "nos_imagenet"]
    assert list_models("*imagenet") == ["nos_imagenet"]
    assert list_models("resnet*") == []


def test_unknown_model_name_lists_the_registered_ones() -> None:
    with pytest.raises(KeyError, match="unknown model name='nos_cifra'; registered models: "):
        create_model("nos_cifra")


def test_register_model_refuses_to_overwrite() -> None:
    with pytest.raises(ValueError, match="already registered; pass overwrite=True"):
        register_model("nos_cifar", NOSNetCIFAR)


def test_pretrained_true_is_refused() -> None:
    with pytest.raises(ValueError, match="publishes no weights"):
        create_model("nos_cifar", pretrained=True, **SMALL)


@pytest.mark.parametrize("genotype", ["PDARTS", "dict", "json-string", "file"])
def test_genotype_forms(genotype: str, tmp_path) -> None:
    g = get_genotype("PDARTS")
    if genotype == "dict":
        arg = g.to_dict()
    elif genotype == "json-string":
        import json

        arg = json.dumps(g.to_dict())
    elif genotype == "file":
        arg = tmp_path / "genotype.json"
        g.save(arg)
    else:
        arg = genotype
    model = create_model("nos_cifar", genotype=arg, **SMALL)
    assert isinstance(model, NOSNetCIFAR) and model.genotype == g


def test_same_network_as_the_evaluation_network() -> None:
    """Same state-dict keys and, in eval mode, the same logits as NetworkCIFAR."""
    model = create_model("nos_cifar", genotype="DARTS_V2", num_classes=5, auxiliary=True, **SMALL)
    plain = NetworkCIFAR(8, 5, 3, genotype="DARTS_V2", auxiliary=True)
    assert model.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(model.state_dict())
    model.eval(), plain.eval()
    x = torch.randn(2, 3, 32, 32)
    logits = model(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 5)
    torch.testing.assert_close(logits, plain(x)[0], rtol=0, atol=0)
    out, aux = model.forward_with_aux(x)
    assert aux is None and torch.equal(out, logits)


def test_forward_with_aux_in_training() -> None:
    model = create_model("nos_cifar", num_classes=4, auxiliary=True, **SMALL).train()
    logits, aux = model.forward_with_aux(torch.randn(2, 3, 32, 32))
    assert logits.shape == aux.shape == (2, 4)


def test_timm_interface() -> None:
    model = create_model("nos_cifar", num_classes=7, **SMALL).eval()
    x = torch.randn(2, 3, 32, 32)
    features = model.forward_features(x)
    assert features.shape == (2, model.num_features, 8, 8)
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    assert model.get_classifier() is model.classifier
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 32, 32) and cfg["num_classes"] == 7
    assert cfg["classifier"] == "classifier" and cfg["first_conv"] == "stem.0"
    assert model.get_submodule(cfg["first_conv"]).in_channels == 3
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity)
    assert model(x).shape == (2, model.num_features)
    with pytest.raises(ValueError, match="global_pool='max' is not valid"):
        model.reset_classifier(3, global_pool="max")


def test_in_chans_and_drop_path_rate() -> None:
    model = create_model("nos_cifar", in_chans=1, drop_path_rate=0.2, **SMALL)
    assert model.drop_path_prob == 0.2 and model.pretrained_cfg["input_size"] == (1, 32, 32)
    assert model.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_imagenet_model() -> None:
    model = create_model("nos_imagenet", genotype="PC_DARTS_image", num_classes=6, **SMALL)
    assert isinstance(model, NOSNetImageNet) and isinstance(model, NetworkImageNet)
    assert model.pretrained_cfg["input_size"] == (3, 224, 224)
    assert model.get_submodule(model.pretrained_cfg["first_conv"]).in_channels == 3
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(model(x), model.forward_with_aux(x)[0], rtol=0, atol=0)


def test_normalisation_constants_match_the_data_module() -> None:
    from nos_ops import data

    assert _registry.CIFAR10_MEAN == data.CIFAR10_MEAN and _registry.CIFAR10_STD == data.CIFAR10_STD


def test_top_level_names() -> None:
    for name in ("create_model", "list_models", "save_pretrained", "from_pretrained"):
        assert name in nos_ops.__all__ and hasattr(nos_ops, name)


def test_timm_hook_is_installed_once_and_never_imports_timm() -> None:
    before = "timm" in sys.modules
    _registry.register_with_timm_on_import()
    _registry.register_with_timm_on_import()
    hooks = [f for f in sys.meta_path if isinstance(f, _registry._TimmImportHook)]
    assert len(hooks) <= 1
    assert ("timm" in sys.modules) == before
