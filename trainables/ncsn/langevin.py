"""Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1), in the reference *code* convention.

Code convention (used everywhere in this project; README, "Conventions"): for each level i from
the largest sigma to the smallest, with alpha_i = step_lr * (sigma_i / sigma_L)^2, repeat T
(= ``n_steps_each``) times

    x <- x + alpha_i * s(x, i) + sqrt(2 alpha_i) * z,    z ~ N(0, I).

The 2019 paper writes x <- x + (alpha_i / 2) s + sqrt(alpha_i) z with alpha_i = eps (sigma_i /
sigma_L)^2, so a paper eps equals twice a code ``step_lr`` (paper 4e-5 == code 2e-5; see
:func:`trainables.ncsn.sigmas.paper_to_code_step_lr`). The scale-free statement of the step is the
signal-to-noise ratio r = sqrt(step_lr / (2 sigma_L^2)) (:func:`trainables.ncsn.sigmas.snr_of_step`).

Optional final denoising (NCSNv2): x <- x + sigma^2 s(x, j) with no noise, j the last visited
level; by Tweedie's formula this is the posterior mean E[x_0 | x] under noise sigma_j.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = ["LangevinResult", "ScoreFn", "anneal_langevin", "langevin_step_sizes"]

# score_fn(x [B, ...], level_idx int64 [B]) -> score [B, ...], the score at noise sigmas[level_idx].
# It may also offer ``at_level(i)``, returning the score function specialised for level i (the
# chain visits one level at a time): trainables.ncsn.runtime.LevelScore picks its precision that way
# without reading the level index back from the device.
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class LangevinResult:
    """Output of :func:`anneal_langevin`.

    samples: [B, ...] final state (after denoising; clamped to [0, 1] only if asked).
    frames: ``n_frames`` snapshots [B, ...], evenly spaced over the chain; the last is ``samples``.
    snr: float32 [L] realised signal-to-noise ratio per ladder level, the mean over the level's
        steps and the batch of ||alpha_i s_b|| / ||sqrt(2 alpha_i) z_b|| (NaN for skipped levels).
        A well-fitted score at equilibrium gives about r = sqrt(step_lr / (2 sigma_L^2)).
    n_evals: score evaluations per image (visited levels * T, + 1 with denoising).
    levels: the ladder indices visited, in order.
    """

    samples: torch.Tensor
    frames: list[torch.Tensor]
    snr: torch.Tensor
    n_evals: int
    levels: tuple[int, ...]


def langevin_step_sizes(sigmas: torch.Tensor, step_lr: float) -> torch.Tensor:
    """Per-level step alpha_i = step_lr * (sigma_i / sigma_L)^2 (code convention), shape [L].

    sigma_L is the last (smallest) entry of the full ladder, whatever levels are visited.
    """
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    return step_lr * (sigmas / sigmas[-1]) ** 2


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_ladder(sigmas: torch.Tensor) -> list[float]:
    if sigmas.dim() != 1 or sigmas.numel() < 1:
        raise ValueError(f"sigmas must be a 1-D tensor [L] with L >= 1, got shape {tuple(sigmas.shape)}")
    values = sigmas.detach().to("cpu", torch.float64).tolist()  # one sync, before the chain
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"sigmas must be positive and finite, got {values}")
    if any(b >= a for a, b in zip(values, values[1:])):
        raise ValueError(f"sigmas must be strictly decreasing (index 0 = largest), got {values}")
    return values


def _check_levels(levels: Sequence[int] | None, num_levels: int) -> tuple[int, ...]:
    if levels is None:
        return tuple(range(num_levels))
    chosen = tuple(levels)
    if (
        not chosen
        or not all(_is_int(i) for i in chosen)
        or any(i < 0 or i >= num_levels for i in chosen)
        or any(b <= a for a, b in zip(chosen, chosen[1:]))
    ):
        raise ValueError(
            f"levels must be a non-empty, strictly increasing sequence of indices in "
            f"[0, {num_levels - 1}], got {list(levels)!r}"
        )
    return tuple(int(i) for i in chosen)


def _frame_steps(n_frames: int, total_steps: int) -> set[int]:
    # Frame k (1-based) is taken after step round(k * total / n): the last one after the
    # final step, the others evenly spread before it.
    return {round(k * total_steps / n_frames) for k in range(1, n_frames)}


def anneal_langevin(
    score_fn: ScoreFn,
    x_init: torch.Tensor,
    sigmas: torch.Tensor,
    step_lr: float,
    n_steps_each: int,
    denoise: bool = False,
    n_frames: int = 0,
    generator: torch.Generator | None = None,
    clamp_output: bool = False,
    levels: Sequence[int] | None = None,
    step_guard: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> LangevinResult:
    """Annealed Langevin dynamics from ``x_init`` down the noise ladder ``sigmas``.

    Args:
        score_fn: ``score_fn(x, level_idx)`` -> score, x [B, ...] and level_idx int64 [B] (all
            equal to the current level i, 0 = largest sigma); the score has x's shape.
        x_init: [B, ...] start (NCSN: uniform noise U[0, 1) of the image shape); not modified.
        sigmas: [L] strictly decreasing noise ladder (data units); only its values are used
            here, the network knows them by index.
        step_lr: code-convention eps > 0; alpha_i = step_lr * (sigma_i / sigma_L)^2. A paper eps
            is twice this (module docstring).
        n_steps_each: T >= 1 steps per visited level.
        denoise: finish with x <- x + sigma_j^2 s(x, j), j the last visited level (Tweedie).
        n_frames: number of snapshots to return (0..steps), evenly spaced, last = samples.
        generator: torch.Generator on x_init's device, for reproducible noise.
        clamp_output: clamp ``samples`` and the frames to [0, 1]; the chain itself is never
            clamped.
        levels: ladder indices to visit, strictly increasing (default all). A truncated or
            sub-sampled ladder keeps alpha_i relative to the full ladder's sigma_L.
        step_guard: a context manager factory each Langevin step runs inside (the GPU check
            runs the steps under ``torch.cuda.set_sync_debug_mode("error")``).

    Runs under ``torch.inference_mode``. The loop has static shapes and no host sync (level
    indices preallocated, noise drawn in place into one buffer, SNR accumulated on device), so
    it suits CUDA graphs or ``torch.compile`` of ``score_fn``.
    """
    if not callable(score_fn):
        raise ValueError(f"score_fn must be callable, got {score_fn!r}")
    sigmas = torch.as_tensor(sigmas)
    sigma_values = _check_ladder(sigmas)
    step_lr = float(step_lr)
    if not math.isfinite(step_lr) or step_lr <= 0:
        raise ValueError(f"step_lr must be a positive finite number, got {step_lr!r}")
    if not _is_int(n_steps_each) or n_steps_each < 1:
        raise ValueError(f"n_steps_each must be an integer >= 1, got {n_steps_each!r}")
    n_steps_each = int(n_steps_each)
    if not isinstance(x_init, torch.Tensor) or not x_init.is_floating_point() or x_init.dim() < 2:
        shape = tuple(x_init.shape) if isinstance(x_init, torch.Tensor) else type(x_init).__name__
        raise ValueError(f"x_init must be a floating tensor [B, ...] with at least 2 dims, got {shape}")
    if generator is not None and generator.device.type != x_init.device.type:
        raise ValueError(f"generator must live on x_init's device {x_init.device}, got {generator.device}")
    visit = _check_levels(levels, len(sigma_values))
    total_steps = len(visit) * n_steps_each
    if not _is_int(n_frames) or not 0 <= n_frames <= total_steps:
        raise ValueError(f"n_frames must be an integer in [0, {total_steps}], got {n_frames!r}")
    n_frames = int(n_frames)

    sigma_last = sigma_values[-1]
    alphas = [step_lr * (s / sigma_last) ** 2 for s in sigma_values]
    batch = x_init.shape[0]
    device = x_init.device
    frame_steps = _frame_steps(n_frames, total_steps) if n_frames else set()

    with torch.inference_mode():
        x = x_init.detach().clone()
        noise = torch.empty_like(x)
        # One row of indices per level, built once: the loop only takes views.
        level_idx = torch.arange(len(sigma_values), device=device).unsqueeze(1).repeat(1, batch)
        snr_sum = torch.zeros(len(sigma_values), dtype=torch.float32, device=device)
        frames: list[torch.Tensor] = []
        step = 0
        at_level = getattr(score_fn, "at_level", None)
        guard = step_guard or contextlib.nullcontext
        for i in visit:
            alpha = alphas[i]
            noise_scale = math.sqrt(2.0 * alpha)
            idx = level_idx[i]
            score_i = score_fn if at_level is None else at_level(i)
            for _ in range(n_steps_each):
                with guard():
                    score = score_i(x, idx)
                    noise.normal_(generator=generator)
                    signal_norm = torch.linalg.vector_norm(score.flatten(1), dim=1)
                    noise_norm = torch.linalg.vector_norm(noise.flatten(1), dim=1)
                    snr_sum[i] += (alpha * signal_norm / (noise_scale * noise_norm)).mean().float()
                    # A fresh tensor each step (score_fn may return a view of x, and frames keep
                    # references); the in-place add only touches that new tensor.
                    x = torch.add(x, score, alpha=alpha).add_(noise, alpha=noise_scale)
                step += 1
                if step in frame_steps:
                    frames.append(x)
        if denoise:
            j = visit[-1]
            score_j = score_fn if at_level is None else at_level(j)
            with guard():
                x = x + sigma_values[j] ** 2 * score_j(x, level_idx[j])
        if clamp_output:
            x = x.clamp(0.0, 1.0)
            frames = [f.clamp(0.0, 1.0) for f in frames]
        if n_frames:
            frames.append(x)
        snr = torch.full_like(snr_sum, float("nan"))
        snr[list(visit)] = snr_sum[list(visit)] / n_steps_each

    return LangevinResult(
        samples=x,
        frames=frames,
        snr=snr,
        n_evals=total_steps + int(bool(denoise)),
        levels=visit,
    )
