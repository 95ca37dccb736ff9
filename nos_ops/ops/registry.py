"""Op registry: name -> (family, factory), Sec. 3.1 of the paper.

Every candidate operation of a search space is looked up here by name. A factory
has the signature ``(channels, stride, affine) -> nn.Module``; the family says what
the module produces (see :class:`Family`). Users add their own ops with
:func:`register_op`, the same way timm's ``create_attn`` maps names to layers.

The op contract, checked on every op :func:`create_op` builds (and in full, with
hypothesis-drawn inputs, by :func:`nos_ops.testing.check_op`):

* feature ops map B x C x H x W to B x C x ceil(H / stride) x ceil(W / stride);
* attention ops expose ``attention(x)``: a gate B x 1 x H' x W' or B x C x 1 x 1;
* dynamic ops expose ``kernels(x)`` (B x C x k x k) and the ints ``kernel_size`` and
  ``dilation``; their dense extent is ``(kernel_size - 1) * dilation + 1``.

Capabilities: class attributes an op may set to ``True`` so that mixtures
(:class:`~nos_ops.mixed.MixedHeteroOp`) take a fused path for it. They are read with
:func:`declares`, never by the op's class. Each is a promise that the fused path gives what
the op gives alone; :func:`nos_ops.testing.check_op` checks it (one-hot mixtures):

* ``is_zero`` (feature): the output is all zeros (DARTS ``none``); a mixture skips the op
  (its weight still counts in the softmax).
* ``shares_relu`` (feature): the op starts with a ReLU and has ``forward_after_relu(x)``, the
  op on an input already through that ReLU; the ops of one edge share one ReLU.
* ``batched_kernels`` (dynamic): the kernels come from the bottleneck, transform and decode
  1x1 convs of Fig. 1 (attributes ``bottleneck``, ``transform``, ``decode``, ``channels``,
  ``kernel_size``) as in :class:`~nos_ops.ops.dynamic.DynamicConv2d`, so
  :func:`~nos_ops.ops.dynamic.generate_kernels` makes the kernels of several such ops in one
  pass over x (``kernels(x)`` must equal ``generate_kernels([op], x)[0]``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn

from .helpers import check_bool, check_positive

__all__ = [
    "Family",
    "OpSpec",
    "register_op",
    "get_op",
    "create_op",
    "op_family",
    "list_ops",
    "unregister_op",
    "declares",
    "check_product",
    "CAPABILITIES",
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
        check_positive("channels", channels)
        check_positive("stride", stride)
        check_bool("affine", affine)
        op = self.factory(channels, stride, affine)
        check_product(self.name, self.family, op)
        return op


_REGISTRY: dict[str, OpSpec] = {}


def register_op(
    name: str, family: Family | str, factory: OpFactory | None = None, *, overwrite: bool = False
):
    """Register ``factory`` under ``name``; usable as a decorator when ``factory`` is None.

    ``family`` is one of ``"feature"``, ``"attention"``, ``"dynamic"``. Attention ops must
    expose ``attention(x)`` and dynamic ops ``kernels(x)`` plus int ``kernel_size`` and
    ``dilation`` attributes (see the module docstring). A class factory is checked now, a
    function factory through one product built on the meta device; every product is
    checked again each time :func:`create_op` builds one (a ``TypeError`` naming the op).
    ``nos_ops.testing.check_op(name)`` tests the whole contract.
    """
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise ValueError(
            f"op name={name!r} is not valid; expected a non-empty string without spaces "
            "(it is written into genotype files and command lines)"
        )
    family = _family(family)
    check_bool("overwrite", overwrite)

    def _register(fn: OpFactory) -> OpFactory:
        if not callable(fn):
            raise TypeError(
                f"factory={fn!r} for op name={name!r} is not callable; expected a function "
                "or class (channels, stride, affine) -> nn.Module"
            )
        _check_signature(name, fn)
        if isinstance(fn, type):
            _check_class(name, family, fn)
        else:
            _check_sample(name, family, fn)
        if name in _REGISTRY and not overwrite:
            raise ValueError(f"op name={name!r} is already registered; pass overwrite=True")
        _REGISTRY[name] = OpSpec(name, family, fn)
        return fn

    return _register if factory is None else _register(factory)


def unregister_op(name: str) -> OpSpec:
    """Remove the op ``name`` from the registry and return its :class:`OpSpec` (``KeyError``
    listing valid names if it is not registered)."""
    spec = get_op(name)
    del _REGISTRY[name]
    return spec


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


# capability -> (family, attributes the op must have when it declares it)
CAPABILITIES: dict[str, tuple[Family, tuple[str, ...]]] = {
    "is_zero": (Family.FEATURE, ()),
    "shares_relu": (Family.FEATURE, ("forward_after_relu",)),
    "batched_kernels": (
        Family.DYNAMIC,
        ("bottleneck", "transform", "decode", "channels", "kernel_size"),
    ),
}
_INTERFACE = {
    Family.FEATURE: (),
    Family.ATTENTION: ("attention",),
    Family.DYNAMIC: ("kernels", "kernel_size", "dilation"),
}


def declares(op: nn.Module, capability: str) -> bool:
    """Whether ``op`` declares ``capability`` (a class attribute set to ``True``)."""
    return getattr(op, capability, False) is True


def _check_signature(name: str, factory: Callable) -> None:
    """The factory must accept ``(channels, stride, affine)`` positionally."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # no signature to read (some builtins): trust it
        return
    try:
        signature.bind(8, 1, True)
    except TypeError as err:
        raise TypeError(
            f"factory {getattr(factory, '__name__', factory)!r} for op name={name!r} does not "
            f"take (channels, stride, affine): {err}"
        ) from None


def _check_sample(name: str, family: Family, factory: Callable) -> None:
    """Build one product of a function factory (8 channels, stride 1, on the meta device: no
    memory, no arithmetic) and check it against its family. A factory that cannot build 8
    channels on the meta device is checked each time :func:`create_op` builds one."""
    try:
        with torch.device("meta"):
            op = factory(8, 1, True)
    except Exception:  # noqa: BLE001 - the user's code; create_op checks what it builds
        return
    check_product(name, family, op)


def _check_class(name: str, family: Family, cls: type) -> None:
    """The parts of the contract a class factory shows before it is instantiated."""
    if not issubclass(cls, nn.Module):
        raise TypeError(f"factory={cls.__name__} for op name={name!r} is not an nn.Module subclass")
    for method in _INTERFACE[family][:1]:
        if not callable(getattr(cls, method, None)):
            raise TypeError(
                f"op name={name!r} is registered as a {family.value} op but "
                f"{cls.__name__} has no {method}(x) method; see the op contract in "
                "nos_ops.ops.registry"
            )


def check_product(name: str, family: Family | str, op: object) -> None:
    """Raise ``TypeError`` unless ``op``, built for the op ``name``, fits its family's
    interface and the capabilities it declares (see the module docstring)."""
    family = _family(family)
    what = f"op name={name!r} ({family.value})"
    if not isinstance(op, nn.Module):
        raise TypeError(
            f"the factory of {what} returned {type(op).__name__}; expected an nn.Module"
        )
    cls = type(op).__name__
    for attr in _INTERFACE[family]:
        value = getattr(op, attr, None)
        if attr in ("attention", "kernels"):
            if not callable(value):
                raise TypeError(
                    f"{what} built a {cls} without an {attr}(x) method; {family.value} ops "
                    f"must expose {attr}(x), see nos_ops.ops.registry"
                )
        elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TypeError(
                f"{what} built a {cls} whose {attr}={value!r}; dynamic ops must have "
                f"an int {attr} >= 1"
            )
    for capability, (owner, needs) in CAPABILITIES.items():
        if not declares(op, capability):
            continue
        if owner is not family:
            raise TypeError(
                f"{what} built a {cls} declaring {capability}=True, a capability of "
                f"{owner.value} ops"
            )
        missing = [a for a in needs if getattr(op, a, None) is None]
        if missing:
            raise TypeError(f"{what} built a {cls} declaring {capability}=True without {missing}")
