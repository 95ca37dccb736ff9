"""Parameter, MAC, latency and peak-memory helpers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nos_ops.profile import count_macs, count_params, measure_latency, peak_memory, profile_module


def test_count_params_trainable_and_shared() -> None:
    shared = nn.Linear(4, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.BatchNorm1d(3))
    assert count_params(model) == 15 + 6  # the shared Linear once, BN weight and bias
    model[3].weight.requires_grad_(False)
    assert count_params(model, trainable_only=True) == 15 + 3
    assert count_params(model) == 21


@settings(max_examples=10, deadline=None)
@given(
    cin=st.integers(1, 6),
    cout=st.integers(1, 6),
    k=st.sampled_from([1, 3, 5]),
    stride=st.integers(1, 2),
    groups=st.sampled_from([1, 2]),
    size=st.integers(5, 12),
)
def test_conv2d_macs_match_formula(
    cin: int, cout: int, k: int, stride: int, groups: int, size: int
) -> None:
    cin, cout = cin * groups, cout * groups
    conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups)
    out = (size + 2 * (k // 2) - k) // stride + 1
    expected = 2 * out * out * cout * (cin // groups) * k * k
    assert count_macs(conv, torch.randn(2, cin, size, size)) == expected


@pytest.mark.parametrize("bias", [True, False])
def test_linear_macs_match_formula(bias: bool) -> None:
    assert count_macs(nn.Linear(7, 5, bias=bias), torch.randn(3, 7)) == 3 * 7 * 5


def test_count_macs_restores_modes_and_needs_no_grad() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5))
    model.train()
    model[1].eval()  # a frozen BN inside a training model
    running_mean = model[1].running_mean.clone()
    count_macs(model, torch.randn(2, 3, 8, 8))
    assert model.training and model[0].training and model[2].training
    assert not model[1].training
    torch.testing.assert_close(model[1].running_mean, running_mean)
    assert all(p.grad is None for p in model.parameters())


def test_measure_latency_is_sane() -> None:
    calls = []
    stats = measure_latency(lambda: calls.append(torch.randn(64, 64) @ torch.randn(64, 64)), 2, 7)
    assert len(calls) == 9 and stats["repeats"] == 7
    assert 0 < stats["min_ms"] <= stats["p10_ms"] <= stats["median_ms"]
    assert stats["median_ms"] <= stats["p90_ms"] <= stats["max_ms"]
    assert stats["min_ms"] <= stats["mean_ms"] <= stats["max_ms"]
    with pytest.raises(ValueError, match="repeats=0"):
        measure_latency(lambda: None, 0, 0)
    with pytest.raises(ValueError, match="warmup=-1"):
        measure_latency(lambda: None, -1, 1)


def test_peak_memory_tracks_allocations_on_cpu() -> None:
    mib = 1 << 20

    def fn() -> tuple[torch.Tensor, torch.Tensor]:
        a = torch.empty(mib, dtype=torch.uint8)
        b = torch.empty(2 * mib, dtype=torch.uint8)
        del a
        c = torch.empty(4 * mib, dtype=torch.uint8)
        return b, c

    peak = peak_memory(fn)
    assert 6 * mib <= peak < 7 * mib  # b and c alive together; a freed before c
    assert peak_memory(lambda: None) == 0


def test_profile_module_combines_everything() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512, 4))
    model.train()
    result = profile_module(model, torch.randn(2, 3, 8, 8), warmup=1, repeats=3)
    assert result["params"] == 3 * 8 * 9 + 8 + 512 * 4 + 4
    assert result["macs"] == 2 * (64 * 8 * 27 + 512 * 4)
    assert 0 < result["p10_ms"] <= result["median_ms"] <= result["p90_ms"]
    assert result["peak_memory_bytes"] >= 2 * 8 * 64 * 4  # the conv output at least
    assert model.training
