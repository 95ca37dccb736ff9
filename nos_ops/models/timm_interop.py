"""timm interoperability (optional extra ``nos_ops[timm]``): our networks as timm models, timm's
attention layers as ops of our registry.

Importing this module imports timm and registers ``nos_cifar`` and ``nos_imagenet`` with timm
(``timm.create_model("nos_cifar", genotype="genotype.json", num_classes=10)``). ``import
nos_ops`` does that by itself when timm is imported, before or after nos_ops, without
importing timm itself (:func:`nos_ops.models._registry.register_with_timm_on_import`).

:func:`register_timm_ops` adds timm's ``create_attn`` layers to the op registry as
``timm:<type>`` (Sec. 3.1): channel gates (``se``, ``ese``, ``eca``, ``ecam``, ``ceca``,
``gc``) as attention ops O_a whose map ``A`` (B x C x 1 x 1) enters Eq. 3, layers whose output
is a calibrated feature map rather than one gate (``cbam``, ``lcbam``, ``gca``, ``coord``,
``scoord``, ``ela``, ``strip``, ``nl``) as feature ops O_f (Eq. 2). See ``docs/interop.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import create_attn
from timm.models import build_model_with_cfg, generate_default_cfgs
from timm.models import register_model as _timm_register_model
from torch import nn

from ..ops.registry import Family, get_op, register_op
from ._registry import _CIFAR_CFG, _IMAGENET_CFG, NOSNetCIFAR, NOSNetImageNet

__all__ = [
    "TIMM_ATTENTION_TYPES",
    "TIMM_FEATURE_TYPES",
    "TimmChannelGate",
    "TimmFeatureOp",
    "register_timm_models",
    "register_timm_ops",
]


def _pooled(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    s = x.mean((2, 3), keepdim=True)
    if getattr(module, "add_maxpool", False):
        s = 0.5 * s + 0.5 * x.amax((2, 3), keepdim=True)
    return s


def _se_gate(m: nn.Module, x: torch.Tensor) -> torch.Tensor:  # timm SEModule
    return m.gate(m.fc2(m.act(m.bn(m.fc1(_pooled(m, x))))))


def _ese_gate(m: nn.Module, x: torch.Tensor) -> torch.Tensor:  # timm EffectiveSEModule
    return m.gate(m.fc(_pooled(m, x)))


def _eca_gate(m: nn.Module, x: torch.Tensor) -> torch.Tensor:  # timm EcaModule (+ use_mlp)
    y = m.conv(x.mean((2, 3)).view(x.shape[0], 1, -1))
    if m.conv2 is not None:
        y = m.conv2(m.act(y))
    return m.gate(y).view(x.shape[0], -1, 1, 1)


def _ceca_gate(m: nn.Module, x: torch.Tensor) -> torch.Tensor:  # timm CecaModule
    y = F.pad(x.mean((2, 3)).view(x.shape[0], 1, -1), (m.padding, m.padding), mode="circular")
    return m.gate(m.conv(y)).view(x.shape[0], -1, 1, 1)


def _gc_gate(m: nn.Module, x: torch.Tensor) -> torch.Tensor:  # timm GlobalContext, scale fusion
    b, c, h, w = x.shape
    if m.conv_attn is not None:
        attn = F.softmax(m.conv_attn(x).reshape(b, 1, h * w), dim=-1).unsqueeze(3)
        context = (x.reshape(b, c, h * w).unsqueeze(1) @ attn).view(b, c, 1, 1)
    else:
        context = x.mean(dim=(2, 3), keepdim=True)
    return m.gate(m.mlp_scale(context))


# timm create_attn type -> the gate A (B x C x 1 x 1) its layer multiplies x with (x * A)
_GATES: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "se": _se_gate,
    "ese": _ese_gate,
    "eca": _eca_gate,
    "ecam": _eca_gate,
    "ceca": _ceca_gate,
    "gc": _gc_gate,
}
TIMM_ATTENTION_TYPES: tuple[str, ...] = tuple(_GATES)
"""timm attention types registered as attention ops O_a (a channel gate, Eq. 3)."""

TIMM_FEATURE_TYPES: tuple[str, ...] = (
    "cbam",
    "lcbam",
    "gca",
    "coord",
    "scoord",
    "ela",
    "strip",
    "nl",
)
"""timm attention types registered as feature ops O_f: their output is a calibrated feature map
(a channel gate then a spatial gate of the gated features, per-row and per-column gates, an
added context or a non-local residual), not one map of Eq. 3's shapes."""


def _subsample(x: torch.Tensor, stride: int) -> torch.Tensor:
    return x if stride == 1 else x[:, :, ::stride, ::stride]


def _check_stride(stride: int) -> None:
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"stride={stride!r} is not valid; expected an int >= 1")


class TimmChannelGate(nn.Module):
    """A timm channel-attention layer (``create_attn(attn_type, channels)``) as an attention op:
    ``attention(x)`` is its gate ``A``, B x C x 1 x 1 in (0, 1), the map the timm layer
    multiplies ``x`` with; ``forward(x)`` is Eq. 5's residual calibration ``x + x * A``
    (subsampled to the output resolution when ``stride`` is 2, as our attention ops do).
    ``layer`` holds the timm module, so its parameters keep timm's names."""

    def __init__(self, attn_type: str, channels: int, stride: int = 1, **kwargs: Any) -> None:
        super().__init__()
        if attn_type not in _GATES:
            raise ValueError(
                f"attn_type={attn_type!r} is not valid; expected one of {', '.join(_GATES)}"
            )
        _check_stride(stride)
        self.attn_type = attn_type
        self.channels = channels
        self.stride = stride
        self.layer = create_attn(attn_type, channels, **kwargs)
        if attn_type == "gc" and (self.layer.mlp_add is not None or self.layer.mlp_scale is None):
            raise ValueError("a 'gc' gate needs fuse_scale=True and fuse_add=False")

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The channel gate ``A``: B x C x 1 x 1 in (0, 1)."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"{type(self).__name__}({self.attn_type!r}) expects B x {self.channels} x H x W "
                f"features, got shape {tuple(x.shape)}"
            )
        return _GATES[self.attn_type](self.layer, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _subsample(x, self.stride) * (1 + self.attention(x))

    def extra_repr(self) -> str:
        return f"{self.attn_type!r}, channels={self.channels}, stride={self.stride}"


class TimmFeatureOp(nn.Module):
    """A timm attention layer whose output is calibrated features, as a feature op: B x C x H x W
    -> B x C x ceil(H / stride) x ceil(W / stride). With ``stride`` 2 the input is subsampled
    first (a strided identity), then calibrated. ``layer`` holds the timm module."""

    def __init__(self, attn_type: str, channels: int, stride: int = 1, **kwargs: Any) -> None:
        super().__init__()
        _check_stride(stride)
        self.attn_type = attn_type
        self.channels = channels
        self.stride = stride
        self.layer = create_attn(attn_type, channels, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(_subsample(x, self.stride))

    def extra_repr(self) -> str:
        return f"{self.attn_type!r}, channels={self.channels}, stride={self.stride}"


def register_timm_ops(types: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """Register timm attention layers as ops ``timm:<type>`` (all of :data:`TIMM_ATTENTION_TYPES`
    and :data:`TIMM_FEATURE_TYPES` by default); returns the op names. Idempotent: names already
    registered are kept. The factories ignore ``affine`` (timm's layers keep their own norms).

    Ops join the registry only when asked, so a search space never changes because timm happens
    to be installed: ``SearchSpace("mine", FEATURE_OPS + ("timm:eca",))``.
    """
    known = TIMM_ATTENTION_TYPES + TIMM_FEATURE_TYPES
    types = known if types is None else tuple(types)
    unknown = [t for t in types if t not in known]
    if unknown:
        raise ValueError(f"types={unknown} are not valid; expected some of {', '.join(known)}")
    names = []
    for attn_type in types:
        name = f"timm:{attn_type}"
        names.append(name)
        try:
            get_op(name)
            continue
        except KeyError:
            pass
        if attn_type in _GATES:
            register_op(name, Family.ATTENTION, _factory(TimmChannelGate, attn_type))
        else:
            register_op(name, Family.FEATURE, _factory(TimmFeatureOp, attn_type))
    return names


def _factory(cls: type[nn.Module], attn_type: str) -> Callable[[int, int, bool], nn.Module]:
    def factory(channels: int, stride: int, affine: bool) -> nn.Module:
        return cls(attn_type, channels, stride)

    return factory


# timm's registry reads the pretrained cfgs from this module's ``default_cfgs``
default_cfgs = generate_default_cfgs(
    {
        "nos_cifar": dict(_CIFAR_CFG, url=""),
        "nos_imagenet": dict(_IMAGENET_CFG, url=""),
    }
)


def nos_cifar(pretrained: bool = False, **kwargs: Any) -> NOSNetCIFAR:
    """timm entry point: :class:`~nos_ops.models._registry.NOSNetCIFAR` (CIFAR, 32 x 32)."""
    return build_model_with_cfg(NOSNetCIFAR, "nos_cifar", pretrained, **kwargs)


def nos_imagenet(pretrained: bool = False, **kwargs: Any) -> NOSNetImageNet:
    """timm entry point: :class:`~nos_ops.models._registry.NOSNetImageNet` (224 x 224)."""
    return build_model_with_cfg(NOSNetImageNet, "nos_imagenet", pretrained, **kwargs)


_REGISTERED = False


def register_timm_models() -> list[str]:
    """Register ``nos_cifar`` and ``nos_imagenet`` with timm (once); returns their names."""
    global _REGISTERED
    if not _REGISTERED:
        _timm_register_model(nos_cifar)
        _timm_register_model(nos_imagenet)
        _REGISTERED = True
    return ["nos_cifar", "nos_imagenet"]


register_timm_models()
