"""Evaluation networks as files: build one from its record, save it, load it back.

A network file (checkpoint kind ``"network"``) holds the weights, the architecture record
(``network``, ``channels``, ``layers``, ``num_classes``, ``auxiliary``, ``image_size``) and
the genotype, so :func:`load_network` rebuilds it without re-typing anything. ``nos-ops train``
writes one (``network.pt``); ``nos-ops export`` and users load it.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from .engine.checkpoint import load_checkpoint, save_checkpoint
from .genotype import Genotype, get_genotype
from .models.eval import NetworkCIFAR, NetworkImageNet

__all__ = ["NETWORKS", "build_network", "network_cost", "save_network", "load_network"]

NETWORKS = {"cifar": NetworkCIFAR, "imagenet": NetworkImageNet}


def build_network(arch: dict[str, Any], genotype: Genotype | dict | str) -> nn.Module:
    """An evaluation network from an architecture record (``network``, ``channels``,
    ``layers``, ``num_classes``, ``auxiliary``, optional ``image_size``) and a genotype. At
    inputs other than 32x32 the CIFAR auxiliary head pools adaptively to 2x2."""
    kind = arch.get("network", "cifar")
    if kind not in NETWORKS:
        raise ValueError(f"arch['network']={kind!r} is not valid; expected one of {list(NETWORKS)}")
    missing = [k for k in ("channels", "layers", "num_classes", "auxiliary") if k not in arch]
    if missing:
        raise ValueError(f"arch is missing {missing}; got keys {sorted(arch)}")
    genotype = Genotype.from_dict(genotype) if isinstance(genotype, dict) else genotype
    model = NETWORKS[kind](
        channels=arch["channels"],
        num_classes=arch["num_classes"],
        layers=arch["layers"],
        genotype=get_genotype(genotype),
        auxiliary=arch["auxiliary"],
    )
    if kind == "cifar" and model.auxiliary_head is not None and arch.get("image_size", 32) != 32:
        model.auxiliary_head = _AdaptiveAuxiliaryHead(model.auxiliary_head)
    return model


class _AdaptiveAuxiliaryHead(nn.Module):
    """The CIFAR auxiliary head with its 5x5 average pool made adaptive (to 2x2), for inputs
    other than 32x32: the same parameters and state-dict keys as the head it wraps."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.features, self.classifier = head.features, head.classifier
        self.features[1] = nn.AdaptiveAvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def network_cost(model: nn.Module, image_size: int) -> tuple[int, int]:
    """(parameters without the auxiliary head, multiply-adds in eval mode at batch 1 and
    ``image_size`` x ``image_size``): the paper's "Params" and "FLOPS"."""
    from .profile import count_macs, count_params

    head = getattr(model, "auxiliary_head", None)
    params = count_params(model) - (count_params(head) if head is not None else 0)
    return params, count_macs(model, torch.zeros(1, 3, image_size, image_size))


_PREPROCESSING = ("input_size", "mean", "std")
"""The ``pretrained_cfg`` fields a network file keeps: what its input must look like."""


def save_network(
    path: str | os.PathLike,
    model: nn.Module,
    arch: dict[str, Any],
    genotype: Genotype,
    metrics: dict[str, Any] | None = None,
) -> None:
    """Write a trained network (kind ``"network"``): weights, architecture, genotype, and
    the input it was trained on (``input_size``, ``mean``, ``std`` of the model's
    ``pretrained_cfg``), which :func:`load_network` gives back."""
    cfg = getattr(model, "pretrained_cfg", {})
    save_checkpoint(
        path,
        "network",
        {
            "model": model.state_dict(),
            "arch": arch,
            "genotype": genotype.to_dict(),
            "metrics": metrics or {},
            "preprocessing": {k: cfg[k] for k in _PREPROCESSING if k in cfg},
        },
    )


def load_network(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """The network of a :func:`save_network` file (or a ``train`` checkpoint), in eval mode.
    Its ``pretrained_cfg`` (timm's name) says what input it was trained on: ``input_size``
    from the architecture's ``image_size``, ``mean`` and ``std`` where the file records
    them; :func:`nos_ops.save_pretrained` passes them on."""
    state = load_checkpoint(path, ("network", "train"), map_location)
    entries = state if state["kind"] == "network" else state["state"]
    model = build_network(entries["arch"], entries["genotype"])
    model.load_state_dict(entries["model"])
    size = entries["arch"].get("image_size")
    cfg = {"input_size": (3, size, size)} if size is not None else {}
    cfg.update(entries.get("preprocessing", {}))
    if cfg:
        model.pretrained_cfg = cfg
    return model.eval()
