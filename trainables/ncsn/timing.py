"""Timing work on a device: the one device-sync and the one network-pass timer every measurement
uses (the trainer, the sampler, the calibration before a search, the benchmark and the GPU check).

A CUDA kernel returns before it runs; a timer that does not wait for the device measures the
launch, not the work. :func:`synchronize` waits (nothing on a CPU); :func:`timed` and
:func:`level_pass` wait before they start the clock and before they stop it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for the work queued on ``device`` (a CUDA device); nothing on a CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device | str) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of ``fn()``, the device synchronised before and
    after. CPU time is steadier on a shared machine; it leaves out other processes' work."""
    synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    fn()
    synchronize(device)
    return time.perf_counter() - start, time.process_time() - cpu_start


def level_pass(
    score, device: torch.device, batch: int, level: int, repeats: int, size: int = 28
) -> tuple[float, float]:
    """(seconds of one network pass of ``batch`` images at ladder ``level``, seconds of the first
    pass: the compilation, graph capture or autotuning of that level's precision). One more pass
    runs untimed between them, so the steady passes start warm."""
    x = torch.rand(batch, 1, size, size, device=device)
    idx = torch.full((batch,), level, dtype=torch.long, device=device)
    fn = score.at_level(level)
    with torch.inference_mode():
        first, _ = timed(lambda: fn(x, idx), device)
        fn(x, idx)
        steady, _ = timed(lambda: [fn(x, idx) for _ in range(repeats)], device)
    return steady / repeats, first
