"""A model factory by name: ``create_model("nos_cifar", genotype=...)``, ``list_models("nos_*")``.

The same names and keyword arguments as the models :mod:`nos_ops.models.timm_interop` registers
with timm, so ``nos_ops.create_model`` and ``timm.create_model`` build the same network; this
module does not import timm. The models are the evaluation networks of Sec. 4.3
(:class:`~nos_ops.models.eval.NetworkCIFAR`, :class:`~nos_ops.models.eval.NetworkImageNet`) in
timm's interface: ``forward(x)`` returns logits only, with ``forward_features``,
``forward_head``, ``get_classifier``, ``reset_classifier``, ``num_features`` and a
``pretrained_cfg`` (input size, mean/std, classifier name). State-dict keys are the
evaluation networks', so weights move between the two forms unchanged.
"""

from __future__ import annotations

import fnmatch
import importlib.abc
import json
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..genotype import Genotype, get_genotype
from .eval import NetworkCIFAR, NetworkImageNet

__all__ = [
    "NOSNetCIFAR",
    "NOSNetImageNet",
    "ModelSpec",
    "create_model",
    "list_models",
    "register_model",
    "get_model_spec",
    "resolve_genotype",
    "register_with_timm_on_import",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

# the same constants as nos_ops.data (tests check that they agree)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resolve_genotype(genotype: Genotype | dict | str | os.PathLike) -> Genotype:
    """A :class:`~nos_ops.Genotype` from itself, its ``to_dict()`` form (as a ``config.json``
    stores it), a JSON string of that form, a zoo name (``"DARTS_V2"``) or a JSON file path."""
    if isinstance(genotype, dict):
        return Genotype.from_dict(genotype)
    if isinstance(genotype, str) and genotype.lstrip().startswith("{"):
        try:
            data = json.loads(genotype)
        except json.JSONDecodeError as err:
            raise ValueError(f"genotype is a string that is not valid JSON: {err}") from None
        return Genotype.from_dict(data)
    if isinstance(genotype, (str, os.PathLike)):
        genotype = os.path.expanduser(os.fspath(genotype))
    return get_genotype(genotype)


class _TimmInterface:
    """timm's classifier interface on an evaluation network (mixed into a subclass)."""

    cells: nn.ModuleList
    classifier: nn.Module
    global_pooling: nn.Module
    drop_path_prob: float
    num_classes: int
    num_features: int
    pretrained_cfg: dict[str, Any]
    default_cfg: dict[str, Any]

    def _finish_init(self, num_classes: int, cfg: dict[str, Any], in_chans: int) -> None:
        size = cfg["input_size"][1:]
        cfg = dict(cfg, input_size=(in_chans, *size))
        if in_chans != 3:
            cfg.update(mean=(0.5,) * in_chans, std=(0.5,) * in_chans)
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = self.classifier.in_features
        self.pretrained_cfg = dict(cfg, num_classes=num_classes)
        self.default_cfg = self.pretrained_cfg

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last cell's output, B x num_features x H/4 x W/4 (CIFAR) or H/32 x W/32."""
        s0, s1 = self.stems(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
        return s1

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool and the classifier: B x num_classes (B x num_features with
        ``pre_logits``)."""
        x = self.global_pooling(x).flatten(1)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits B x num_classes (the auxiliary head, if any, only in :meth:`forward_with_aux`)."""
        return self.forward_head(self.forward_features(x))

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The evaluation network's ``forward``: ``(logits, aux_logits)``, ``aux_logits`` None
        outside training or without the auxiliary head."""
        return super().forward(x)  # type: ignore[misc]

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new, freshly initialised classifier for ``num_classes`` (0: ``nn.Identity``,
        ``forward`` returns the pooled features). Only ``global_pool="avg"`` is supported."""
        if global_pool not in (None, "avg"):
            raise ValueError(f"global_pool={global_pool!r} is not valid; expected None or 'avg'")
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
            raise ValueError(f"num_classes={num_classes!r} is not valid; expected an int >= 0")
        weight = next(self.classifier.parameters(), None) if self.num_classes else None
        factory = {} if weight is None else {"device": weight.device, "dtype": weight.dtype}
        self.num_classes = num_classes
        self.pretrained_cfg["num_classes"] = num_classes
        self.classifier = (
            nn.Linear(self.num_features, num_classes, **factory) if num_classes else nn.Identity()
        )


def _replace_stem_conv(conv: nn.Conv2d, in_chans: int) -> nn.Conv2d:
    if not isinstance(in_chans, int) or isinstance(in_chans, bool) or in_chans < 1:
        raise ValueError(f"in_chans={in_chans!r} is not valid; expected an int >= 1")
    if in_chans == conv.in_channels:
        return conv
    return nn.Conv2d(
        in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False
    )


class NOSNetCIFAR(_TimmInterface, NetworkCIFAR):
    """:class:`~nos_ops.models.eval.NetworkCIFAR` with timm's interface (``forward`` returns
    logits B x num_classes). ``genotype`` may also be a genotype dict or a JSON file path;
    ``in_chans`` changes the stem's input channels; ``drop_path_rate`` is timm's name for
    ``drop_path_prob``."""

    def __init__(
        self,
        genotype: Genotype | dict | str | os.PathLike = "DARTS_V2",
        channels: int = 36,
        layers: int = 20,
        num_classes: int = 10,
        auxiliary: bool = False,
        in_chans: int = 3,
        drop_path_rate: float = 0.0,
        stem_multiplier: int = 3,
    ) -> None:
        super().__init__(
            channels=channels,
            num_classes=num_classes,
            layers=layers,
            genotype=resolve_genotype(genotype),
            auxiliary=auxiliary,
            stem_multiplier=stem_multiplier,
            drop_path_prob=drop_path_rate,
        )
        self.stem[0] = _replace_stem_conv(self.stem[0], in_chans)
        self._finish_init(num_classes, _CIFAR_CFG, in_chans)


class NOSNetImageNet(_TimmInterface, NetworkImageNet):
    """:class:`~nos_ops.models.eval.NetworkImageNet` (ImageNet-mobile, 224 x 224) with timm's
    interface; arguments as :class:`NOSNetCIFAR`."""

    def __init__(
        self,
        genotype: Genotype | dict | str | os.PathLike = "DARTS_V2",
        channels: int = 48,
        layers: int = 14,
        num_classes: int = 1000,
        auxiliary: bool = False,
        in_chans: int = 3,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__(
            channels=channels,
            num_classes=num_classes,
            layers=layers,
            genotype=resolve_genotype(genotype),
            auxiliary=auxiliary,
            drop_path_prob=drop_path_rate,
        )
        self.stem0[0] = _replace_stem_conv(self.stem0[0], in_chans)
        self._finish_init(num_classes, _IMAGENET_CFG, in_chans)


# timm's pretrained_cfg fields (timm.models.PretrainedCfg), without weights: url/hf_hub_id empty
_CIFAR_CFG: dict[str, Any] = {
    "num_classes": 10,
    "input_size": (3, 32, 32),
    "pool_size": (8, 8),
    "crop_pct": 1.0,
    "crop_mode": "center",
    "interpolation": "bilinear",
    "fixed_input_size": False,
    "mean": CIFAR10_MEAN,
    "std": CIFAR10_STD,
    "first_conv": "stem.0",
    "classifier": "classifier",
}
_IMAGENET_CFG: dict[str, Any] = {
    "num_classes": 1000,
    "input_size": (3, 224, 224),
    "pool_size": (7, 7),
    "crop_pct": 0.875,
    "crop_mode": "center",
    "interpolation": "bilinear",
    "fixed_input_size": False,
    "mean": IMAGENET_MEAN,
    "std": IMAGENET_STD,
    "first_conv": "stem0.0",
    "classifier": "classifier",
}


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its name, factory (keyword arguments -> ``nn.Module``), default
    ``pretrained_cfg`` (timm's fields) and a one-line description."""

    name: str
    factory: Callable[..., nn.Module]
    pretrained_cfg: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_MODELS: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    factory: Callable[..., nn.Module],
    pretrained_cfg: dict[str, Any] | None = None,
    description: str = "",
    *,
    overwrite: bool = False,
) -> ModelSpec:
    """Register ``factory`` under ``name`` for :func:`create_model` (``ValueError`` if the name
    is taken, unless ``overwrite``)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name={name!r} is not valid; expected a non-empty string")
    if name in _MODELS and not overwrite:
        raise ValueError(f"model name={name!r} is already registered; pass overwrite=True")
    spec = ModelSpec(name, factory, dict(pretrained_cfg or {}), description)
    _MODELS[name] = spec
    return spec


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered under ``name``; ``KeyError`` listing valid names."""
    try:
        return _MODELS[name]
    except KeyError:
        raise KeyError(
            f"unknown model name={name!r}; registered models: {', '.join(list_models())}"
        ) from None


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the wildcard ``pattern`` (``"nos_*"``), sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def create_model(
    name: str, pretrained: bool | str | os.PathLike = False, **kwargs: Any
) -> nn.Module:
    """Build the registered model ``name`` with ``kwargs`` (e.g. ``genotype``, ``num_classes``,
    ``channels``, ``layers``, ``auxiliary``, ``in_chans``, ``drop_path_rate``).

    ``pretrained`` may be the folder of :func:`nos_ops.save_pretrained`: its weights are
    loaded (the architecture is still ``kwargs``'s; use :func:`nos_ops.from_pretrained` to
    rebuild the saved one). ``True`` is refused: no weights are published.
    """
    spec = get_model_spec(name)
    model = spec.factory(**kwargs)
    if pretrained is True:
        raise ValueError(
            f"pretrained=True is not valid for {name!r}: nos_ops publishes no weights; pass "
            "the folder written by nos_ops.save_pretrained, or use nos_ops.from_pretrained"
        )
    if pretrained:
        from ..pretrained import load_weights

        model.load_state_dict(load_weights(Path(pretrained)))
    return model


def nos_cifar(**kwargs: Any) -> NOSNetCIFAR:
    """CIFAR evaluation network (20 cells, 36 channels, 32 x 32 inputs) from a genotype."""
    return NOSNetCIFAR(**kwargs)


def nos_imagenet(**kwargs: Any) -> NOSNetImageNet:
    """ImageNet-mobile evaluation network (14 cells, 48 channels, 224 x 224) from a genotype."""
    return NOSNetImageNet(**kwargs)


register_model("nos_cifar", nos_cifar, _CIFAR_CFG, nos_cifar.__doc__ or "")
register_model("nos_imagenet", nos_imagenet, _IMAGENET_CFG, nos_imagenet.__doc__ or "")


def _register_with_timm() -> None:
    try:
        from . import timm_interop  # noqa: F401  (registers on import)
    except Exception as err:  # a broken or incompatible timm must not break `import timm`
        warnings.warn(
            f"nos_ops could not register its models with timm: {err!r}", RuntimeWarning, 2
        )


class _TimmImportHook(importlib.abc.MetaPathFinder):
    """Runs :func:`_register_with_timm` right after ``timm`` itself is imported."""

    def find_spec(self, fullname, path, target=None):  # noqa: ANN001
        if fullname != "timm":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_register(module) -> None:  # noqa: ANN001
            exec_module(module)
            sys.meta_path[:] = [f for f in sys.meta_path if f is not self]
            _register_with_timm()

        loader.exec_module = exec_then_register
        return spec


def register_with_timm_on_import() -> None:
    """Make timm see ``nos_cifar`` and ``nos_imagenet``: now if timm is imported already, else
    right after it is (a one-shot import hook; nos_ops never imports timm itself). ``import
    nos_ops`` calls this."""
    if "timm" in sys.modules:
        _register_with_timm()
    elif not any(isinstance(f, _TimmImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _TimmImportHook())
