"""The public op contract: ``nos_ops.testing.check_op`` on every registered op, and on ops
that break it (each must be caught, with a message naming the op)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nos_ops.mixed import MixedHeteroOp
from nos_ops.ops import registry
from nos_ops.ops.registry import declares, list_ops, register_op
from nos_ops.testing import check_op

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def scratch_registry(monkeypatch):
    """A private copy of the registry, so registrations made by a test do not leak."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


@pytest.mark.parametrize("name", list_ops())
def test_every_registered_op_honours_the_contract(name):
    check_op(name)


# ------------------------------------------------------------------ ops that break it


class _NoStride(nn.Module):
    def __init__(self, channels: int, stride: int, affine: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


class _Gate(nn.Module):
    """An attention op whose map has the wrong shape (B x C x H x W) unless ``good``."""

    def __init__(self, channels: int, stride: int, good: bool = True) -> None:
        super().__init__()
        self.stride = stride
        self.good = good
        self.conv = nn.Conv2d(channels, 1 if good else channels, 1)

    def attention(self, x):
        return torch.sigmoid(self.conv(x[:, :, :: self.stride, :: self.stride]))

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        return x * (1 + torch.sigmoid(self.conv(x)))


class _Detached(_NoStride):
    def forward(self, x):
        return F.avg_pool2d(x, 1, self.stride).detach() + 0 * self.conv.weight.sum()

    stride = 1


class _NaN(_NoStride):
    def forward(self, x):
        return self.conv(x) * float("nan")


class _EmptyBatchCrash(_NoStride):
    def forward(self, x):
        if x.shape[0] == 0:
            raise RuntimeError("non-positive groups is not supported")
        return self.conv(x)


class _FakeZero(_NoStride):
    """Declares ``is_zero`` but is not zero: a mixture skips it, so the one-hot check fails."""

    is_zero = True


BROKEN = {
    "ignores stride": (lambda c, s, a: _NoStride(c, s, a), "feature", r"forward\(x\) gave"),
    "wrong map shape": (lambda c, s, a: _Gate(c, s, good=False), "attention", r"attention\(x\)"),
    "non-finite": (
        lambda c, s, a: _NaN(c, 1, a) if s == 1 else nn.AvgPool2d(1, s),
        "feature",
        "non-finite",
    ),
    "false capability": (
        lambda c, s, a: _FakeZero(c, 1, a) if s == 1 else nn.AvgPool2d(1, s),
        "feature",
        "one-hot weights differs",
    ),
    "bare error at batch 0": (
        lambda c, s, a: _EmptyBatchCrash(c, 1, a) if s == 1 else nn.AvgPool2d(1, s),
        "feature",
        "batch 0, stride=1.*a bare RuntimeError",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_check_op_catches_broken_ops(case, scratch_registry):
    factory, family, match = BROKEN[case]
    with pytest.raises(AssertionError, match=match) as info:
        check_op(factory, family, max_examples=3, gradcheck=False)
    assert "op 'check_op." in str(info.value)
    assert not [n for n in registry.list_ops() if n.startswith("check_op.")]  # removed


def test_check_op_catches_missing_gradients(scratch_registry):
    register_op(
        "detached", "feature", lambda c, s, a: _Detached(c, 1, a) if s == 1 else nn.AvgPool2d(1, s)
    )
    with pytest.raises(AssertionError, match="'detached'.*no finite gradient"):
        check_op("detached", max_examples=2, gradcheck=False, composites=False)


def test_check_op_passes_a_good_user_op(scratch_registry):
    check_op(lambda c, s, a: _Gate(c, s), "attention", max_examples=3)
    register_op("good_gate", "attention", lambda c, s, a: _Gate(c, s))
    check_op("good_gate", "attention", max_examples=3, gradcheck=False)
    with pytest.raises(ValueError, match="does not match op name='good_gate'"):
        check_op("good_gate", "feature")


# ------------------------------------------------------------------ capabilities


class _MyZero(nn.Module):
    is_zero = True

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x[:, :, :: self.stride, :: self.stride] * 0.0


class _ReluConv(nn.Module):
    """A user op that starts with a ReLU and says so: the mixture shares its ReLU."""

    shares_relu = True
    calls = 0

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)

    def forward(self, x):
        return self.forward_after_relu(F.relu(x))

    def forward_after_relu(self, x):
        type(self).calls += 1
        return self.conv(x)


def test_registered_ops_get_the_fused_paths_they_declare(scratch_registry):
    from nos_ops.space import SearchSpace

    register_op("my_zero", "feature", lambda c, s, a: _MyZero(s))
    register_op("my_relu_conv", "feature", lambda c, s, a: _ReluConv(c, s))
    space = SearchSpace("mine", ("my_zero", "my_relu_conv", "sep_conv_3x3"))
    edge = MixedHeteroOp(4, 1, space).double()
    assert edge._active == (1, 2)  # the zero op is skipped
    assert edge._after_relu == (False, True, True)  # one shared ReLU for both
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    _ReluConv.calls = 0
    out = edge(x, torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64))
    assert _ReluConv.calls == 1
    expected = 0.5 * edge.ops[1](x) + 0.3 * edge.ops[2](x)
    torch.testing.assert_close(out.features, expected)
    check_op("my_relu_conv", max_examples=2, gradcheck=False)


def test_builtin_capabilities():
    from nos_ops.ops import create_op

    assert declares(create_op("none", 4), "is_zero")
    for name in ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"):
        assert declares(create_op(name, 4), "shares_relu")
    for name in ("avg_pool_3x3", "max_pool_3x3", "identity"):
        op = create_op(name, 4)
        assert not declares(op, "shares_relu") and not declares(op, "is_zero")
