"""Cost of a module: parameters, multiply-adds, latency and peak memory (Tables 1-3).

The paper's "FLOPS" are multiply-adds of convolutions and linear layers: counted here
as ``FlopCounterMode`` total FLOPs / 2, which gives 555,422,720 for the CIFAR ResNet-18
of Table 1. Latency is wall-clock with CUDA synchronisation; peak memory is the allocator
high-water mark above what was allocated before the call (see :func:`peak_memory`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.profiler import ProfilerActivity
from torch.profiler import profile as torch_profile
from torch.utils.flop_counter import FlopCounterMode

from .ops.helpers import check_bool, check_int

__all__ = ["count_params", "count_macs", "measure_latency", "peak_memory", "profile_module"]

Device = torch.device | str | None


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared ones once), optionally only those with requires_grad."""
    _check_module(module)
    check_bool("trainable_only", trainable_only)
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _check_module(module: nn.Module) -> None:
    if not isinstance(module, nn.Module):
        raise TypeError(f"module is a {type(module).__name__}; expected an nn.Module")


def _check_callable(fn: Callable[[], Any]) -> None:
    if not callable(fn):
        raise TypeError(f"fn={fn!r} is not callable; expected a function of no arguments")


def _check_device(device: Device) -> None:
    if device is None:
        return
    try:
        torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not valid: {err}") from None


@contextmanager
def _inference(module: nn.Module) -> Iterator[None]:
    """Eval mode and no_grad; each submodule's training flag is restored afterwards."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in flags:
            m.training = training


def count_macs(module: nn.Module, *inputs: Any) -> int:
    """Multiply-adds of one ``module(*inputs)`` in eval mode: FlopCounterMode FLOPs // 2.

    Counts the ops FlopCounterMode knows (convolutions, matmuls, attention); element-wise
    ops, normalisation and pooling count zero, as in the paper's tables.
    """
    _check_module(module)
    with _inference(module), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops() // 2


def _is_cuda(device: Device) -> bool:
    return device is not None and torch.device(device).type == "cuda"


def _synchronize(device: Device) -> None:
    if _is_cuda(device):
        torch.cuda.synchronize(device)


def measure_latency(
    fn: Callable[[], Any], warmup: int = 10, repeats: int = 50, device: Device = None
) -> dict[str, float]:
    """Wall-clock time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones.

    On CUDA the device is synchronised before and after each call, so queued kernels
    are counted. Returns milliseconds: ``median_ms``, ``p10_ms``, ``p90_ms``, ``mean_ms``,
    ``min_ms``, ``max_ms``, and ``repeats``.
    """
    _check_callable(fn)
    check_int("warmup", warmup, 0)
    check_int("repeats", repeats, 1)
    _check_device(device)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    ms = torch.tensor(times, dtype=torch.float64)
    p10, median, p90 = ms.quantile(torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
    return {
        "median_ms": median,
        "p10_ms": p10,
        "p90_ms": p90,
        "mean_ms": ms.mean().item(),
        "min_ms": ms.min().item(),
        "max_ms": ms.max().item(),
        "repeats": repeats,
    }


def peak_memory(fn: Callable[[], Any], device: Device = None) -> int:
    """Peak bytes allocated by ``fn()`` above what was allocated before it was called.

    CUDA: ``torch.cuda.max_memory_allocated`` after resetting the peak, minus the bytes
    allocated at the start. Other devices (CPU): ``fn`` runs under ``torch.profiler`` with
    ``profile_memory=True``; the allocator's allocation (+bytes) and free (-bytes) events
    for that device, ordered by time, are summed cumulatively and the maximum is
    returned. Either way only tensor storage counts, not the Python heap or the RSS.
    """
    _check_callable(fn)
    _check_device(device)
    if _is_cuda(device):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return max(0, torch.cuda.max_memory_allocated(device) - start)
    with torch_profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    kind = "cpu" if device is None else torch.device(device).type
    events = [
        e
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type().name.lower() == kind
    ]
    current = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def profile_module(
    module: nn.Module,
    inputs: torch.Tensor | tuple[Any, ...],
    warmup: int = 5,
    repeats: int = 20,
) -> dict[str, float]:
    """Params, MACs, inference latency and peak memory of ``module(*inputs)`` in eval mode.

    The device for synchronisation and memory is the first tensor input's. Returns
    ``params``, ``macs``, ``median_ms``, ``p10_ms``, ``p90_ms`` and ``peak_memory_bytes``.
    """
    _check_module(module)
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    device = next((x.device for x in inputs if isinstance(x, torch.Tensor)), None)
    with _inference(module):
        latency = measure_latency(lambda: module(*inputs), warmup, repeats, device)
        memory = peak_memory(lambda: module(*inputs), device)
    return {
        "params": count_params(module),
        "macs": count_macs(module, *inputs),
        "median_ms": latency["median_ms"],
        "p10_ms": latency["p10_ms"],
        "p90_ms": latency["p90_ms"],
        "peak_memory_bytes": memory,
    }
