"""The op contract as a test users can run on their own ops: :func:`check_op`.

The built-in ops of :mod:`nos_ops.ops` are tested this way in the package's own suite
(``tests/test_op_contract.py``, parametrized over the registry). A user who registers an op
(:func:`~nos_ops.ops.registry.register_op`) calls ``check_op("my_op")`` in their tests, or
``check_op(factory, family="attention")`` before registering it. The contract, per family
(see :mod:`nos_ops.ops.registry`):

* every op maps B x C x H x W to B x C x ceil(H / stride) x ceil(W / stride) with the input's
  dtype, finite values, and a gradient for the input and every parameter (train mode);
* attention ops: ``attention(x)`` is B x 1 x H' x W' or B x C x 1 x 1;
* dynamic ops: ``kernels(x)`` is B x C x k x k with k = ``kernel_size`` (odd) and an int
  ``dilation`` >= 1;
* float64 ``gradcheck`` of the input and parameter gradients (BatchNorm in train mode);
* a ``channels_last`` input gives the same output as a contiguous one;
* batch 0 either works (empty outputs of the right shape) or raises a ``ValueError`` or
  ``TypeError`` of the op's own, never a bare torch error;
* a mixture (:class:`~nos_ops.mixed.MixedHeteroOp` over a space holding the op) gives,
  at one-hot weights, what the op gives alone, whatever fused path its capabilities select;
* a search block and a derived block (:class:`~nos_ops.block.HeterogeneousResidualBlock`)
  built with the op run forward and backward with the right shapes.

Shapes are drawn by hypothesis (batch, channels, height, width, stride, affine); failures
raise ``AssertionError`` naming the op and the drawn example.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from torch.func import functional_call

from .ops.helpers import check_bool, check_positive
from .ops.registry import Family, OpFactory, OpSpec, create_op, get_op, register_op, unregister_op

__all__ = ["check_op"]


def check_op(
    op: str | OpFactory,
    family: Family | str | None = None,
    *,
    channel_multiple: int = 2,
    max_examples: int = 8,
    gradcheck: bool = True,
    composites: bool = True,
    batch_zero: bool = True,
) -> None:
    """Check that an op honours the op contract (module docstring); raise if it does not.

    Args:
        op: a registered op name, or a factory ``(channels, stride, affine) -> nn.Module``
            (then ``family`` is required; it is registered under a temporary name while the
            mixture and block checks run, and removed afterwards).
        family: ``"feature"``, ``"attention"`` or ``"dynamic"``; for a name, it must agree
            with the registry if given.
        channel_multiple: channels are drawn as multiples of this (1 to 4 times it); the
            gradcheck uses it once. Raise it for ops that need, say, a multiple of 8.
        max_examples: hypothesis examples of the shape check (keep small: each builds the op).
        gradcheck: run the float64 gradcheck (the slowest part).
        composites: check a mixture and blocks built with the op.
        batch_zero: check that batch 0 works or raises a clear error.

    Raises:
        AssertionError: the op breaks the contract (the message names the op and the case).
        TypeError, ValueError: from the registry, if the op's product does not fit its family.
    """
    check_positive("channel_multiple", channel_multiple)
    check_positive("max_examples", max_examples)
    check_bool("gradcheck", gradcheck)
    check_bool("composites", composites)
    check_bool("batch_zero", batch_zero)
    checks = (channel_multiple, max_examples, gradcheck, composites, batch_zero)
    if isinstance(op, str):
        spec = get_op(op)
        if family is not None and spec.family is not Family(family):
            raise ValueError(
                f"family={family!r} does not match op name={op!r}, registered as "
                f"{spec.family.value!r}"
            )
        _check_registered(spec, *checks)
        return
    if not callable(op):
        raise TypeError(f"op={op!r} is not valid; expected a registered op name or a factory")
    if family is None:
        raise ValueError("family is required when op is a factory: feature, attention or dynamic")
    name = f"check_op.{getattr(op, '__name__', 'factory')}.{id(op):x}"
    register_op(name, family, op)
    try:
        _check_registered(get_op(name), *checks)
    finally:
        unregister_op(name)


def _check_registered(
    spec: OpSpec,
    multiple: int,
    max_examples: int,
    gradcheck: bool,
    composites: bool,
    batch_zero: bool,
) -> None:
    for stride, affine in itertools.product((1, 2), (True, False)):
        create_op(spec.name, multiple, stride, affine)  # the registry checks the product
    _check_shapes(spec, multiple, max_examples)
    for stride in (1, 2):
        _check_small_input(spec, multiple, stride)
        _check_channels_last(spec, multiple, stride)
        if batch_zero:
            _check_batch_zero(spec, multiple, stride)
        if gradcheck:
            _check_gradcheck(spec, multiple, stride)
    if composites:
        for stride in (1, 2):
            _check_mixture(spec, multiple, stride, residual=False)
        _check_mixture(spec, multiple, 1, residual=True)
        _check_blocks(spec, multiple)


def _fail(spec: OpSpec, case: str, message: str) -> AssertionError:
    return AssertionError(f"op {spec.name!r} ({spec.family.value}), {case}: {message}")


def _out_size(n: int, stride: int) -> int:
    return math.ceil(n / stride)


def _check_outputs(spec: OpSpec, op: nn.Module, x: torch.Tensor, stride: int, case: str):
    """Run ``op`` (and what its family exposes) on ``x``; check shapes and dtype; return
    the tensors that should carry gradients."""
    b, c, h, w = x.shape
    expected = (b, c, _out_size(h, stride), _out_size(w, stride))
    y = op(x)
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != expected:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise _fail(spec, case, f"forward(x) gave {got}; expected {expected}")
    if y.dtype != x.dtype:
        raise _fail(spec, case, f"forward(x) gave {y.dtype} for a {x.dtype} input")
    outputs = [y]
    if spec.family is Family.ATTENTION:
        a = op.attention(x)
        allowed = {(b, 1, expected[2], expected[3]), (b, c, 1, 1)}
        if tuple(a.shape) not in allowed:
            raise _fail(
                spec, case, f"attention(x) gave {tuple(a.shape)}; expected one of {allowed}"
            )
        outputs.append(a)
    elif spec.family is Family.DYNAMIC:
        k = op.kernel_size
        d = op.kernels(x)
        if k % 2 == 0 or tuple(d.shape) != (b, c, k, k):
            raise _fail(
                spec, case, f"kernels(x) gave {tuple(d.shape)}; expected {(b, c, k, k)} (k odd)"
            )
        outputs.append(d)
    for t in outputs:
        if not torch.isfinite(t).all():
            raise _fail(spec, case, "the output holds non-finite values")
    return outputs


def _check_shapes(spec: OpSpec, multiple: int, max_examples: int) -> None:
    try:
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st
    except ImportError as err:
        raise ImportError(
            'check_op draws its shapes with hypothesis: pip install "nos_ops[test]" '
            "(or pip install hypothesis)"
        ) from err

    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        batch=st.integers(1, 3),
        factor=st.integers(1, 4),
        height=st.integers(3, 9),
        width=st.integers(3, 9),
        stride=st.sampled_from((1, 2)),
        affine=st.booleans(),
        seed=st.integers(0, 2**16),
    )
    def shapes(batch, factor, height, width, stride, affine, seed):
        torch.manual_seed(seed)
        channels = factor * multiple
        case = (
            f"batch={batch}, channels={channels}, {height}x{width}, stride={stride}, "
            f"affine={affine}"
        )
        op = create_op(spec.name, channels, stride, affine).train()
        x = torch.randn(batch, channels, height, width, requires_grad=True)
        outputs = _check_outputs(spec, op, x, stride, case)
        # a random projection: a plain sum would give BatchNorm outputs a zero gradient
        loss = sum((t * torch.randn_like(t)).sum() for t in outputs)
        loss.backward()
        if x.grad is None or not torch.isfinite(x.grad).all():
            raise _fail(spec, case, "the input received no finite gradient")
        for pname, p in op.named_parameters():
            if p.grad is None or not torch.isfinite(p.grad).all():
                raise _fail(spec, case, f"parameter {pname} received no finite gradient")

    shapes()


def _check_small_input(spec: OpSpec, channels: int, stride: int) -> None:
    """1 x 1 and 2 x 1 inputs in eval mode (train-mode BatchNorm needs > 1 value)."""
    op = create_op(spec.name, channels, stride, True).eval()
    with torch.no_grad():
        for h, w in ((1, 1), (2, 1)):
            _check_outputs(spec, op, torch.randn(2, channels, h, w), stride, f"{h}x{w} input")


def _check_channels_last(spec: OpSpec, channels: int, stride: int) -> None:
    op = create_op(spec.name, channels, stride, True).eval()
    x = torch.randn(2, channels, 7, 6)
    case = f"channels_last input, stride={stride}"
    with torch.no_grad():
        expected = _check_outputs(spec, op, x, stride, "contiguous input, stride=" + str(stride))
        got = _check_outputs(
            spec, op, x.contiguous(memory_format=torch.channels_last), stride, case
        )
    for e, g in zip(expected, got):
        if not torch.allclose(e, g.contiguous(), rtol=1e-4, atol=1e-5):
            raise _fail(spec, case, "the output differs from the contiguous input's")


def _check_batch_zero(spec: OpSpec, channels: int, stride: int) -> None:
    for train in (True, False):
        op = create_op(spec.name, channels, stride, False).train(train)
        case = f"batch 0, stride={stride}, {'train' if train else 'eval'} mode"
        try:
            _check_outputs(spec, op, torch.randn(0, channels, 6, 5), stride, case)
        except (ValueError, TypeError):
            continue  # a clear refusal of the op's own
        except AssertionError:
            raise
        except Exception as err:
            raise _fail(
                spec,
                case,
                f"a bare {type(err).__name__} ({err}); support batch 0 or raise a ValueError",
            ) from None


def _spaced_input(*shape: int) -> torch.Tensor:
    """float64 values spaced far beyond gradcheck's eps and none near 0 (no ties in max
    pooling, no input on a ReLU kink)."""
    n = math.prod(shape)
    values = (torch.randperm(n, dtype=torch.float64) - (n - 1) / 2) * (4.0 / n)
    return values.reshape(shape)


class _Method(nn.Module):
    """``op.<method>(x)`` as a module's forward, for ``functional_call``."""

    def __init__(self, op: nn.Module, method: str | None) -> None:
        super().__init__()
        self.op = op
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x) if self.method is None else getattr(self.op, self.method)(x)


def _check_gradcheck(spec: OpSpec, channels: int, stride: int) -> None:
    op = create_op(spec.name, channels, stride, True).double().train()
    names = [f"op.{n}" for n, _ in op.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for _, p in op.named_parameters())
    x = _spaced_input(2, channels, 5, 3).requires_grad_()
    methods = [None] + {Family.ATTENTION: ["attention"], Family.DYNAMIC: ["kernels"]}.get(
        spec.family, []
    )
    calls = [_Method(op, m) for m in methods]

    def fn(x, *params):
        state = dict(zip(names, params, strict=True))
        return tuple(functional_call(call, state, (x,)) for call in calls)

    case = f"float64 gradcheck, stride={stride}"
    try:
        ok = torch.autograd.gradcheck(fn, (x, *params), atol=1e-6, rtol=1e-4)
    except RuntimeError as err:  # gradcheck raises with the mismatching Jacobians
        raise _fail(spec, case, str(err)) from None
    if not ok:
        raise _fail(spec, case, "gradients disagree")


def _space_with(spec: OpSpec):
    from .space import SearchSpace

    ops = (spec.name,) if spec.name == "identity" else (spec.name, "identity")
    return SearchSpace(f"check_op:{spec.name}", ops)


def _check_mixture(spec: OpSpec, channels: int, stride: int, residual: bool) -> None:
    """At one-hot weights a mixture is the op alone (whatever fused path it takes)."""
    from .mixed import MixedHeteroOp
    from .ops.dynamic import spread_kernels

    space = _space_with(spec)
    case = f"MixedHeteroOp(stride={stride}, residual={residual})"
    edge = MixedHeteroOp(channels, stride, space, residual=residual).double()
    x = torch.randn(2, channels, 6, 5, dtype=torch.float64)
    weights = torch.zeros(space.num_ops, dtype=torch.float64)
    weights[0] = 1.0
    out = edge(x, weights)
    op = edge.ops[0]
    expected_size = (2, channels, _out_size(6, stride), _out_size(5, stride))
    if out.features is None or tuple(out.features.shape) != expected_size:
        got = None if out.features is None else tuple(out.features.shape)
        raise _fail(spec, case, f"features {got}; expected {expected_size}")

    def same(a: torch.Tensor | None, b: torch.Tensor, what: str) -> None:
        if a is None or a.shape != b.shape or not torch.allclose(a, b, rtol=1e-9, atol=1e-10):
            raise _fail(spec, case, f"{what} at one-hot weights differs from the op alone")

    if spec.family is Family.FEATURE:
        same(out.features, op(x), "features")
    elif spec.family is Family.ATTENTION:
        same(out.attention, op.attention(x), "attention")
    else:
        plain = spread_kernels(op.kernels(x), op.dilation, edge.kernel_size)
        same(out.kernels, plain, "kernels")
    soft = torch.randn(space.num_ops, dtype=torch.float64).softmax(-1)
    out = edge(x, soft)
    if not torch.isfinite(out.features).all():
        raise _fail(spec, case, "soft weights gave non-finite features")


def _check_blocks(spec: OpSpec, channels: int) -> None:
    """A search block over a space holding the op and a derived block using it, forward and
    backward, normal and reduction."""
    from .block import HeterogeneousResidualBlock, SearchResidualBlock
    from .genotype import BlockGene

    space = _space_with(spec)
    for reduction in (False, True):
        case = f"blocks, reduction={reduction}"
        size = 8
        out_size = 4 if reduction else 8
        states = [torch.randn(2, channels, size, size, requires_grad=True) for _ in range(2)]
        search = SearchResidualBlock(channels, 2, reduction, space)
        tier1 = torch.randn(2, space.num_ops).softmax(-1)
        tier2 = torch.randn(space.num_ops).softmax(-1)
        node = search(states, tier1, tier2)
        expected = (2, channels, out_size, out_size)
        if tuple(node.shape) != expected:
            raise _fail(spec, case, f"search block gave {tuple(node.shape)}; expected {expected}")
        if spec.name == "none":  # a derived cell never holds `none`
            continue
        gene = BlockGene(((spec.name, 0), ("identity", 1)), spec.name)
        block = HeterogeneousResidualBlock(channels, gene, reduction).train()
        node = block(states, drop_prob=0.2)
        if tuple(node.shape) != expected:
            raise _fail(spec, case, f"derived block gave {tuple(node.shape)}; expected {expected}")
        (node * torch.randn_like(node)).sum().backward()
        if any(s.grad is None or not torch.isfinite(s.grad).all() for s in states):
            raise _fail(spec, case, "the block inputs received no finite gradient")
