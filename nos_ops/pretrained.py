"""Weights users can share: a folder with ``config.json`` and ``model.safetensors``.

:func:`save_pretrained` writes an evaluation network (Sec. 4.3) in the layout timm reads from a
local folder or a Hugging Face Hub repository: ``config.json`` holds ``architecture``
(``nos_cifar`` / ``nos_imagenet``), ``num_classes``, ``num_features``, ``pretrained_cfg``
(input size, mean/std, crop, classifier and first-conv names) and ``model_args`` (the genotype
as JSON, channels, layers, auxiliary head, input channels); the weights are
``model.safetensors`` (optional extra ``nos_ops[safetensors]``) or, without safetensors,
``pytorch_model.bin``. :func:`from_pretrained` rebuilds the network from the folder alone, and
so does ``timm.create_model("local-dir:FOLDER", pretrained=True)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .genotype import Genotype
from .models._registry import _CIFAR_CFG, _IMAGENET_CFG, create_model, get_model_spec
from .models.eval import NetworkCIFAR, NetworkImageNet

__all__ = ["save_pretrained", "from_pretrained", "load_weights", "read_config", "CONFIG_NAME"]

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
PYTORCH_NAME = "pytorch_model.bin"
FORMAT_VERSION = 1


def _has_safetensors() -> bool:
    try:
        import safetensors.torch  # noqa: F401
    except ImportError:
        return False
    return True


def _unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DDP / DataParallel wrapper or a ``torch.compile`` module."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def _architecture(model: nn.Module) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(registered name, model_args, default pretrained_cfg) of an evaluation network."""
    if not isinstance(model, (NetworkCIFAR, NetworkImageNet)):
        raise TypeError(
            f"model is a {type(model).__name__}; expected an evaluation network "
            "(NetworkCIFAR, NetworkImageNet, or one made by nos_ops.create_model / timm)"
        )
    genotype: Genotype = model.genotype
    layers = len(model.cells)
    if isinstance(model, NetworkImageNet):
        channels = model.stem0[3].out_channels
        in_chans = model.stem0[0].in_channels
        args = {}
        name, cfg = "nos_imagenet", _IMAGENET_CFG
    else:
        first = model.cells[0]
        channels = first.out_channels // len(genotype.normal.concat)
        in_chans = model.stem[0].in_channels
        args = {"stem_multiplier": model.stem[0].out_channels // channels}
        name, cfg = "nos_cifar", _CIFAR_CFG
    args = {
        "genotype": genotype.to_dict(),
        "channels": channels,
        "layers": layers,
        "auxiliary": model.auxiliary_head is not None,
        "in_chans": in_chans,
        **args,
    }
    cfg = dict(cfg, input_size=(in_chans, *cfg["input_size"][1:]))
    return name, args, cfg


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def save_pretrained(
    model: nn.Module,
    folder: str | os.PathLike,
    *,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    input_size: tuple[int, int, int] | None = None,
    label_names: list[str] | None = None,
    safe_serialization: bool | None = None,
) -> Path:
    """Write ``model`` (an evaluation network) to ``folder`` as ``config.json`` + weights.

    Args:
        model: a :class:`~nos_ops.NetworkCIFAR` / :class:`~nos_ops.NetworkImageNet`, or a
            network from :func:`nos_ops.create_model` or ``timm.create_model`` (DDP and
            ``torch.compile`` wrappers are unwrapped).
        folder: created if missing; existing files of the same names are replaced.
        mean: normalisation mean the network was trained with (default: the model's
            ``pretrained_cfg``, else CIFAR-10's or ImageNet's).
        std: normalisation std, as ``mean``.
        input_size: ``(C, H, W)`` the network was trained at (default as ``mean``).
        label_names: class names, stored as timm's ``label_names``.
        safe_serialization: write ``model.safetensors`` (True; needs ``safetensors``) or
            ``pytorch_model.bin`` (False); None picks safetensors when it is installed.

    Returns:
        The folder's path.
    """
    model = _unwrap(model)
    name, model_args, cfg = _architecture(model)
    cfg = dict(cfg, **getattr(model, "pretrained_cfg", {}))
    cfg = {k: v for k, v in cfg.items() if k in _CIFAR_CFG}  # drop timm's run-time fields
    for key, value in (("mean", mean), ("std", std), ("input_size", input_size)):
        if value is not None:
            cfg[key] = tuple(value)
    num_classes = model.classifier.out_features if isinstance(model.classifier, nn.Linear) else 0
    cfg["num_classes"] = num_classes
    if model.auxiliary_head is not None:  # timm replaces both heads for another num_classes
        cfg["classifier"] = ("classifier", "auxiliary_head.classifier")
    config: dict[str, Any] = {
        "architecture": name,
        "num_classes": num_classes,
        "num_features": model.classifier.in_features
        if isinstance(model.classifier, nn.Linear)
        else getattr(model, "num_features", None),
        "global_pool": "avg",
        "pretrained_cfg": cfg,
        "model_args": model_args,
        "nos_ops": {"format": FORMAT_VERSION},
    }
    if label_names is not None:
        if len(label_names) != num_classes:
            raise ValueError(
                f"label_names has {len(label_names)} names; the classifier has "
                f"{num_classes} classes"
            )
        config["label_names"] = list(label_names)
    if safe_serialization is None:
        safe_serialization = _has_safetensors()
    if safe_serialization and not _has_safetensors():
        raise ImportError(
            "safe_serialization=True needs safetensors: pip install 'nos_ops[safetensors]' "
            "(or pass safe_serialization=False for pytorch_model.bin)"
        )
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if safe_serialization:
        from safetensors.torch import save_file

        _atomic(folder / SAFETENSORS_NAME, lambda p: save_file(state, str(p), {"format": "pt"}))
        (folder / PYTORCH_NAME).unlink(missing_ok=True)
    else:
        _atomic(folder / PYTORCH_NAME, lambda p: torch.save(state, p))
        (folder / SAFETENSORS_NAME).unlink(missing_ok=True)
    text = json.dumps(_jsonable(config), indent=2)
    _atomic(folder / CONFIG_NAME, lambda p: p.write_text(text + "\n"))
    return folder


def _atomic(path: Path, write) -> None:  # noqa: ANN001
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a :func:`save_pretrained` folder, checked to name one of our
    architectures."""
    path = Path(folder).expanduser() / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {folder} is not a save_pretrained folder")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(config, dict) or "architecture" not in config:
        raise ValueError(f"{path} has no 'architecture'; it is not a timm/nos_ops model config")
    try:
        get_model_spec(config["architecture"])
    except KeyError as err:
        raise ValueError(f"{path}: {err.args[0]}") from None
    return config


def load_weights(
    folder: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """The state dict in ``folder``: ``model.safetensors`` if present, else
    ``pytorch_model.bin`` (loaded with ``weights_only=True``)."""
    folder = Path(folder).expanduser()
    if (folder / SAFETENSORS_NAME).is_file():
        if not _has_safetensors():
            raise ImportError(
                f"{folder / SAFETENSORS_NAME} needs safetensors: pip install 'nos_ops[safetensors]'"
            )
        from safetensors.torch import load_file

        return load_file(str(folder / SAFETENSORS_NAME), device=str(map_location))
    if (folder / PYTORCH_NAME).is_file():
        return torch.load(folder / PYTORCH_NAME, map_location=map_location, weights_only=True)
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise FileNotFoundError(
        f"{folder} holds no weights: expected {SAFETENSORS_NAME} or {PYTORCH_NAME}, found {present}"
    )


def from_pretrained(
    folder: str | os.PathLike, map_location: str | torch.device = "cpu", **overrides: Any
) -> nn.Module:
    """The network saved in ``folder`` by :func:`save_pretrained`, in eval mode.

    ``overrides`` replace ``model_args`` (e.g. ``drop_path_rate=0.1``); a different
    ``num_classes`` gets a new classifier (the saved one is not loaded), as in timm. The
    model's ``pretrained_cfg`` is the saved one (input size, mean/std, ...).
    """
    config = read_config(folder)
    saved_classes = int(config.get("num_classes", 0))
    kwargs = dict(config.get("model_args", {}), num_classes=saved_classes)
    kwargs.update(overrides)
    model = create_model(config["architecture"], **kwargs)
    state = load_weights(folder, map_location)
    if kwargs["num_classes"] != saved_classes:
        heads = ("classifier.", "auxiliary_head.classifier.")
        state = {k: v for k, v in state.items() if not k.startswith(heads)}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith(heads) for k in missing):
            raise RuntimeError(
                f"weights in {folder} do not fit the network: missing {missing}, "
                f"unexpected {unexpected}"
            )
    else:
        model.load_state_dict(state)
    cfg = dict(config.get("pretrained_cfg", {}), num_classes=kwargs["num_classes"])
    model.pretrained_cfg = model.default_cfg = {
        k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()
    }
    return model.to(map_location).eval()
