"""Drawing samples from a network with a sampler setting: the one path every trial and task takes.

A joint trial's evaluations (:mod:`trainables.tune_trainable`), a sampler trial's looks
(:mod:`trainables.sampler_trainable`) and the confirmation's seeds (:mod:`trainables.confirm_task`)
all call :func:`draw`: for each chunk of at most ``max_batch`` chains, the network's warm-up for
that batch shape (compilation, graph capture: timed apart from sampling), U[0, 1) noise from a
generator seeded by the chunk's :func:`trainables.contract.params.noise_seed`, annealed Langevin
down the ladder (:func:`trainables.ncsn.langevin.anneal_langevin`), then the samples clamped to
[0, 1] and cropped to MNIST's 28x28 where the network works at 32. Since the seed is a function
of the search seed, the stream and the item alone, two trials at the same point start from the
same noise whatever path draws them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from trainables.contract.params import ladder_levels, nfe_per_sample
from trainables.ncsn.langevin import anneal_langevin
from trainables.ncsn.timing import synchronize


@dataclass(frozen=True)
class SamplerSettings:
    """An annealed Langevin sampler: step size (code convention), steps per level, a final
    denoising step, and the levels it visits (from ``skip_levels``, every ``level_stride``-th)."""

    step_lr: float
    n_steps_each: int
    denoise: bool = False
    skip_levels: int = 0
    level_stride: int = 1

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> SamplerSettings:
        """The settings in a mapping (a trial config, a checkpoint's trained-with values)."""
        return cls(
            step_lr=float(settings["step_lr"]),
            n_steps_each=int(settings["n_steps_each"]),
            denoise=bool(settings.get("denoise", False)),
            skip_levels=int(settings.get("skip_levels", 0)),
            level_stride=int(settings.get("level_stride", 1)),
        )

    def levels(self, num_levels: int) -> tuple[int, ...]:
        return ladder_levels(num_levels, self.skip_levels, self.level_stride)

    def nfe(self, num_levels: int) -> int:
        return nfe_per_sample(num_levels, asdict(self))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Draw:
    """What :func:`draw` drew: ``samples`` float32 [n, 1, 28, 28] on the CPU in [0, 1];
    ``finite`` False when a chain went non-finite; network evaluations per sample; seconds of
    warm-up and of sampling (the device synchronised); the first chunk's per-level SNR and its
    ``n_frames`` snapshots."""

    samples: torch.Tensor
    finite: bool
    n_evals: int
    warmup_seconds: float
    sample_seconds: float
    snr: torch.Tensor | None = None
    frames: list[torch.Tensor] = field(default_factory=list)


def draw(
    score_fn,
    sigmas: torch.Tensor,
    n: int,
    image_size: int,
    settings: SamplerSettings,
    seed_of: Callable[[int], int],
    device: torch.device,
    levels: tuple[int, ...] | None = None,
    max_batch: int | None = None,
    n_frames: int = 0,
) -> Draw:
    """``n`` samples of ``score_fn`` with ``settings``, ``max_batch`` chains at a time (all at
    once with None); chunk c's noise from a generator seeded ``seed_of(c)``; ``levels`` None: the
    whole ladder. See the module docstring."""
    device = torch.device(device)
    parts, finite, n_evals, snr, frames = [], True, 0, None, []
    warmup = sampling = 0.0
    step = max_batch or n
    for chunk, first in enumerate(range(0, n, step)):
        count = min(step, n - first)
        if hasattr(score_fn, "warm"):  # compilation / graph capture for this batch shape
            warmup += score_fn.warm(torch.zeros(count, 1, image_size, image_size, device=device))
        start = time.perf_counter()
        gen = torch.Generator(device=device).manual_seed(int(seed_of(chunk)))
        x_init = torch.rand(count, 1, image_size, image_size, generator=gen, device=device)
        result = anneal_langevin(
            score_fn,
            x_init,
            sigmas,
            step_lr=settings.step_lr,
            n_steps_each=settings.n_steps_each,
            denoise=settings.denoise,
            n_frames=n_frames if chunk == 0 else 0,
            generator=gen,
            levels=levels,
        )
        finite = finite and bool(torch.isfinite(result.samples).all())
        samples = result.samples.float().clamp(0.0, 1.0)
        if image_size != 28:  # the feature network sees MNIST's 28x28
            crop = (image_size - 28) // 2
            samples = samples[..., crop : crop + 28, crop : crop + 28]
        parts.append(samples.cpu())
        synchronize(device)
        sampling += time.perf_counter() - start
        n_evals = int(result.n_evals)
        if chunk == 0:
            snr, frames = result.snr, result.frames
    return Draw(torch.cat(parts), finite, n_evals, warmup, sampling, snr, frames)
