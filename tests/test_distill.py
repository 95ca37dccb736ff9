"""Attention transfer (Eq. 10) and the Teacher wrapper."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nos_ops.models import resnet18_cifar
from nos_ops.search.distill import (
    Teacher,
    attention_map,
    attention_transfer_loss,
    same_weights,
    weights_fingerprint,
)


def _hand_attention(f: torch.Tensor) -> torch.Tensor:
    """x = vec(sum_c F_c^2) per sample, divided by its L2 norm (Eq. 10's notation)."""
    x = (f**2).sum(dim=1).reshape(f.shape[0], -1)
    return x / x.norm(dim=1, keepdim=True)


def test_attention_map_shape_and_norm() -> None:
    f = torch.randn(3, 5, 4, 6, dtype=torch.float64)
    a = attention_map(f)
    assert a.shape == (3, 24)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(a, _hand_attention(f))
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        attention_map(torch.randn(3, 5))


def test_attention_map_half_precision_is_float32() -> None:
    f = torch.randn(2, 4, 3, 3).to(torch.bfloat16)
    assert attention_map(f).dtype == torch.float32


def test_loss_equals_hand_computation() -> None:
    torch.manual_seed(0)
    student = [torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.randn(2, 6, 4, 4).double()]
    teacher = [torch.randn(2, 16, 8, 8, dtype=torch.float64), torch.randn(2, 3, 4, 4).double()]
    expected = 0.0
    for s, t in zip(student, teacher):
        d = _hand_attention(s) - _hand_attention(t)
        expected += (d**2).sum() / d.numel()  # mean over batch and positions
    torch.testing.assert_close(attention_transfer_loss(student, teacher), expected)


def test_loss_relates_to_printed_eq10() -> None:
    s, t = torch.randn(1, 4, 5, 5, dtype=torch.float64), torch.randn(1, 2, 5, 5).double()
    eq10 = 0.5 * (_hand_attention(s) - _hand_attention(t)).norm()
    loss = attention_transfer_loss([s], [t])
    torch.testing.assert_close(loss, (2 * eq10) ** 2 / 25)


@settings(max_examples=20, deadline=None)
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 8),
    repeat=st.integers(2, 4),
    size=st.integers(1, 6),
)
def test_loss_zero_and_channel_invariance(
    batch: int, channels: int, repeat: int, size: int
) -> None:
    f = torch.randn(batch, channels, size, size, dtype=torch.float64)
    other = torch.randn(batch, 3, size, size, dtype=torch.float64)
    assert attention_transfer_loss([f], [f]).item() == 0.0
    # repeating the channels changes C but not the channel-mean, hence not the map
    wide = f.repeat(1, repeat, 1, 1)
    torch.testing.assert_close(attention_map(wide), attention_map(f))
    torch.testing.assert_close(attention_transfer_loss([f], [wide]), f.new_zeros(()))
    torch.testing.assert_close(
        attention_transfer_loss([wide], [other]), attention_transfer_loss([f], [other])
    )


def test_loss_gradient_reaches_student_only() -> None:
    s = torch.randn(2, 4, 4, 4, requires_grad=True)
    t = torch.randn(2, 8, 4, 4)
    attention_transfer_loss([s], [t]).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_loss_errors() -> None:
    a = torch.randn(2, 4, 8, 8)
    with pytest.raises(ValueError, match=r"stage 1.*\(2, 4, 8, 8\).*\(2, 4, 4, 4\)"):
        attention_transfer_loss([a, a], [a, torch.randn(2, 4, 4, 4)])
    with pytest.raises(ValueError, match=r"stage 0.*\(2, 4, 8, 8\).*\(3, 4, 8, 8\)"):
        attention_transfer_loss([a], [torch.randn(3, 4, 8, 8)])
    with pytest.raises(ValueError, match="2 stages.*1"):
        attention_transfer_loss([a, a], [a])
    with pytest.raises(ValueError, match="empty"):
        attention_transfer_loss([], [])


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.blocks = nn.Sequential(
            nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU()),
            nn.Sequential(nn.Conv2d(6, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU()),
            nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU()),
        )
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def test_teacher_hooks_equal_direct_and_carry_no_grad() -> None:
    model = Toy()
    teacher = Teacher(model, ["blocks.0", "blocks.1", "blocks.2"])
    teacher.train()
    assert teacher.training and not model.training
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    stages = teacher(x)
    with torch.no_grad():
        f0 = model.blocks[0](model.stem(x))
        f1 = model.blocks[1](f0)
        expected = [f0, f1, model.blocks[2](f1)]
    assert [s.shape[-1] for s in stages] == [16, 8, 4]
    for got, want in zip(stages, expected):
        torch.testing.assert_close(got, want)
        assert not got.requires_grad
    running_mean = model.blocks[0][1].running_mean.clone()
    model.train()  # even if someone flips the model back, the teacher runs in eval
    teacher(x)
    torch.testing.assert_close(model.blocks[0][1].running_mean, running_mean)
    assert all(not m._forward_hooks for m in model.modules())


def test_teacher_uses_stage_features() -> None:
    model = resnet18_cifar()
    teacher = Teacher(model)
    x = torch.randn(1, 3, 32, 32)
    stages = teacher(x)
    assert [tuple(s.shape[1:]) for s in stages] == [(64, 32, 32), (128, 16, 16), (256, 8, 8)]
    model.eval()
    with torch.no_grad():
        for got, want in zip(stages, model.stage_features(x)):
            torch.testing.assert_close(got, want)
    container = nn.ModuleDict({"student": nn.Conv2d(3, 3, 1), "teacher": teacher}).train()
    assert container.training and teacher.training and not model.training


def test_teacher_errors() -> None:
    with pytest.raises(ValueError, match="stage_features"):
        Teacher(Toy())
    with pytest.raises(ValueError, match=r"\['blocks.7'\].*stem, blocks, head"):
        Teacher(Toy(), ["blocks.0", "blocks.7"])


def test_weights_fingerprint_tells_other_weights_apart_but_not_rounding():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    same = weights_fingerprint(model)
    assert len(same) == 2 * len(model.state_dict()) and same_weights(
        same, weights_fingerprint(model)
    )
    assert same_weights([x * (1 + 1e-12) for x in same], same)  # sums in another order
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] += 1e-3
    assert not same_weights(weights_fingerprint(model), same)
    assert same_weights(None, None) and not same_weights(same, None)
    assert not same_weights(same[:-1], same)
