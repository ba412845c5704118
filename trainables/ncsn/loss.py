"""Denoising score matching over all noise levels (Song & Ermon 2019, eq. 5-6) and dequantisation.

All quantities are in [0, 1] image units: x in [0, 1], sigmas in the same units, scores in 1/units.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

ScoreModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def dequantize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantisation x * 255/256 + U(0, 1/256).

    Args:
        x: uint8 images [..] in 0..255, or floats in [0, 1] (k/255 for pixel value k).
        generator: torch.Generator on x's device (None: the global RNG).

    Returns float32 of x's shape in [0, 1): a pixel of value k lands uniformly in
    [k/256, (k+1)/256), so the 256 values tile [0, 1) without overlap.
    """
    if x.dtype == torch.uint8:
        # k/255 * 255/256 = k/256: go there directly, no rounding detour.
        base = x.to(torch.float32) * (1.0 / 256.0)
    elif x.is_floating_point():
        base = x.to(torch.float32) * (255.0 / 256.0)
    else:
        raise ValueError(f"dequantize: x must be uint8 or floating point, got dtype {x.dtype}")
    noise = torch.rand(base.shape, generator=generator, device=base.device, dtype=torch.float32)
    return base.add_(noise, alpha=1.0 / 256.0)


def dsm_loss(
    model: ScoreModel,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    anneal_power: float = 2.0,
    generator: torch.Generator | None = None,
    return_parts: bool = False,
    level_idx: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
):
    """Denoising score matching loss with one uniformly drawn noise level per example.

    For each example b: i_b ~ U{0..L-1}, z ~ N(0, I), x~ = x + sigmas[i_b] z and

        l_b = 1/2 * || s(x~, i_b) + z / sigma ||^2 * sigma^anneal_power   (summed over pixels)

    with sigma = sigmas[i_b]; the loss is the batch mean of l_b. anneal_power = 2 gives every
    level the same expected weight (the paper's lambda(sigma) = sigma^2).

    Args:
        model: callable (x~ [B, ...] float, level_idx int64 [B]) -> score [B, ...]. May run under
            autocast; its output is taken to fp32 before the loss, which is always fp32.
        x: dequantised data in [0, 1], float [B, ...].
        sigmas: noise levels, 1-D float [L] on x's device, largest first.
        anneal_power: p in sigma^p.
        generator: torch.Generator on x's device for the levels and the noise (None: global RNG).
        return_parts: also return the per-example losses and levels.
        level_idx: int64 [B] levels drawn by the caller (default: uniform, from ``generator``).
        weights: float [B] per-example weights of the batch mean (default: equal), e.g. those of
            a stratified draw (:class:`trainables.ncsn.runtime.BatchSplit`).

    Returns the scalar loss (fp32, differentiable), or (loss, per_example_loss [B] fp32,
    unweighted, level_idx int64 [B]) when return_parts.
    """
    if sigmas.dim() != 1 or sigmas.numel() < 1:
        raise ValueError(f"dsm_loss: sigmas must be a non-empty 1-D tensor, got shape {tuple(sigmas.shape)}")
    batch = x.shape[0]
    x = x.float()
    if level_idx is None:
        level_idx = torch.randint(0, sigmas.numel(), (batch,), generator=generator, device=x.device)
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    sigma = sigmas.to(torch.float32)[level_idx].view(batch, *([1] * (x.dim() - 1)))
    x_tilde = torch.addcmul(x, sigma, z)
    score = model(x_tilde, level_idx).float()
    # ||s + z/sigma||^2 sigma^p = ||s sigma + z||^2 sigma^(p-2): one fused multiply-add, and no
    # z/sigma that blows up for tiny sigmas.
    residual = torch.addcmul(z, score, sigma)
    per_example = 0.5 * residual.square().flatten(1).sum(1) * sigma.flatten().pow(anneal_power - 2.0)
    loss = per_example.mean() if weights is None else (per_example * weights).mean()
    if return_parts:
        return loss, per_example, level_idx
    return loss
