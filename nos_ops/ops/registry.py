"""Op registry: name -> (family, factory), Sec. 3.1 of the paper.

Every candidate operation of a search space is looked up here by name. A factory
has the signature ``(channels, stride, affine) -> nn.Module``; the family says what
the module produces (see :class:`Family`). Users add their own ops with
:func:`register_op`, the same way timm's ``create_attn`` maps names to layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from torch import nn

__all__ = [
    "Family",
    "OpSpec",
    "register_op",
    "get_op",
    "create_op",
    "op_family",
    "list_ops",
]

OpFactory = Callable[[int, int, bool], nn.Module]


class Family(str, Enum):
    """What an op produces and how it is applied to features (DESIGN, table)."""

    FEATURE = "feature"  # O_f: features, combined with +
    ATTENTION = "attention"  # O_a: a gate A in (0, 1), applied as F + F * A
    DYNAMIC = "dynamic"  # O_d: per-sample depthwise kernels D, applied as F + F (x) D


@dataclass(frozen=True)
class OpSpec:
    """A registered op: its name, family and factory ``(channels, stride, affine)``."""

    name: str
    family: Family
    factory: OpFactory

    def __call__(self, channels: int, stride: int = 1, affine: bool = True) -> nn.Module:
        return self.factory(channels, stride, affine)


_REGISTRY: dict[str, OpSpec] = {}


def register_op(
    name: str, family: Family | str, factory: OpFactory | None = None, *, overwrite: bool = False
):
    """Register ``factory`` under ``name``; usable as a decorator when ``factory`` is None.

    ``family`` is one of ``"feature"``, ``"attention"``, ``"dynamic"``. Attention ops must
    expose ``attention(x)`` and dynamic ops ``kernels(x)`` plus a ``dilation`` attribute.
    """
    family = _family(family)

    def _register(fn: OpFactory) -> OpFactory:
        if name in _REGISTRY and not overwrite:
            raise ValueError(f"op name={name!r} is already registered; pass overwrite=True")
        _REGISTRY[name] = OpSpec(name, family, fn)
        return fn

    return _register if factory is None else _register(factory)


def _family(family: Family | str) -> Family:
    try:
        return Family(family)
    except ValueError:
        valid = ", ".join(f.value for f in Family)
        raise ValueError(f"family={family!r} is not valid; expected one of: {valid}") from None


def get_op(name: str) -> OpSpec:
    """The :class:`OpSpec` registered under ``name``; ``KeyError`` listing valid names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ", ".join(list_ops())
        raise KeyError(f"unknown op name={name!r}; registered ops: {valid}") from None


def create_op(name: str, channels: int, stride: int = 1, affine: bool = True) -> nn.Module:
    """Build the op ``name`` for ``channels`` input/output channels."""
    return get_op(name)(channels, stride, affine)


def op_family(name: str) -> Family:
    """The family of the op registered under ``name``."""
    return get_op(name).family


def list_ops(family: Family | str | None = None) -> list[str]:
    """Registered op names, in registration order, optionally of one family."""
    if family is None:
        return list(_REGISTRY)
    family = _family(family)
    return [n for n, s in _REGISTRY.items() if s.family is family]
