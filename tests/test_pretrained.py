"""save_pretrained / from_pretrained: config.json + model.safetensors (or pytorch_model.bin).

Round trips a NOS genotype with dynamic and attention ops on both tiers, exactly (eval mode).
"""

from __future__ import annotations

import json

import pytest
import torch

from nos_ops import (
    BlockGene,
    CellGene,
    Genotype,
    NetworkCIFAR,
    create_model,
    from_pretrained,
    save_pretrained,
)
from nos_ops.pretrained import load_weights, read_config

pytestmark = pytest.mark.usefixtures("single_thread")

NOS_CELL = CellGene(
    (
        BlockGene((("sep_conv_3x3", 0), ("dynamic_conv_3x3", 1)), "spatial_attention"),
        BlockGene((("identity", 0), ("channel_attention", 2)), "dynamic_conv_5x5"),
    ),
    (2, 3),
)
NOS_GENOTYPE = Genotype(NOS_CELL, NOS_CELL)


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial weights and BN statistics, so a mismatch cannot hide behind zeros."""
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(
                    torch.rand_like(tensor) * 0.2 + 0.05
                    if "running_var" in name
                    else torch.randn_like(tensor) * 0.1
                )
    return model.eval()


def test_round_trip_nos_genotype(tmp_path) -> None:
    model = _randomised(NetworkCIFAR(8, 5, 3, genotype=NOS_GENOTYPE, auxiliary=True))
    save_pretrained(model, tmp_path, mean=(0.5, 0.4, 0.3), label_names=list("abcde"))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == "nos_cifar" and config["num_classes"] == 5
    assert config["model_args"]["channels"] == 8 and config["model_args"]["layers"] == 3
    assert config["model_args"]["auxiliary"] is True
    assert Genotype.from_dict(config["model_args"]["genotype"]) == NOS_GENOTYPE
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert config["pretrained_cfg"]["mean"] == [0.5, 0.4, 0.3]
    assert config["label_names"] == list("abcde")
    loaded = from_pretrained(tmp_path)
    assert not loaded.training and loaded.genotype == NOS_GENOTYPE
    assert loaded.pretrained_cfg["mean"] == (0.5, 0.4, 0.3)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x)[0], rtol=0, atol=0)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_safetensors_file(tmp_path) -> None:
    pytest.importorskip("safetensors", reason="the safetensors extra is not installed")
    save_pretrained(create_model("nos_cifar", channels=8, layers=3), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_pytorch_bin_without_safetensors(tmp_path) -> None:
    model = _randomised(create_model("nos_imagenet", genotype="PDARTS", channels=8, layers=3))
    save_pretrained(model, tmp_path, safe_serialization=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "pytorch_model.bin"]
    loaded = from_pretrained(tmp_path)
    assert type(loaded) is type(model) and read_config(tmp_path)["architecture"] == "nos_imagenet"
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_other_num_classes_gets_a_new_classifier(tmp_path) -> None:
    model = _randomised(NetworkCIFAR(8, 5, 3, genotype="DARTS_V2", auxiliary=True))
    save_pretrained(model, tmp_path)
    loaded = from_pretrained(tmp_path, num_classes=3)
    assert (
        loaded.classifier.out_features == 3 and loaded.auxiliary_head.classifier.out_features == 3
    )
    assert torch.equal(loaded.stem[0].weight, model.stem[0].weight)


def test_create_model_loads_a_folder(tmp_path) -> None:
    model = _randomised(create_model("nos_cifar", genotype="PDARTS", channels=8, layers=3))
    save_pretrained(model, tmp_path)
    again = create_model("nos_cifar", pretrained=tmp_path, genotype="PDARTS", channels=8, layers=3)
    assert torch.equal(again.classifier.weight, model.classifier.weight)


def test_errors_name_the_folder(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not a save_pretrained folder"):
        from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "resnet18"}))
    with pytest.raises(ValueError, match="unknown model name='resnet18'"):
        from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="holds no weights"):
        load_weights(tmp_path)
    with pytest.raises(TypeError, match="expected an evaluation network"):
        save_pretrained(torch.nn.Linear(2, 2), tmp_path)


def test_a_network_file_becomes_a_shareable_folder(tmp_path) -> None:
    """network.pt (what nos-ops train writes) -> save_pretrained -> from_pretrained."""
    from nos_ops.network import build_network, load_network, save_network

    arch = {"network": "cifar", "channels": 8, "layers": 3, "num_classes": 4, "auxiliary": True}
    model = _randomised(build_network(arch, NOS_GENOTYPE))
    save_network(tmp_path / "network.pt", model, arch, NOS_GENOTYPE)
    save_pretrained(load_network(tmp_path / "network.pt"), tmp_path / "share")
    loaded = from_pretrained(tmp_path / "share")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x)[0], rtol=0, atol=0)
