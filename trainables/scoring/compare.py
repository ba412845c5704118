"""Paired comparisons of samplers and FID at infinite N: what the confirmation stage ranks on.

A paired comparison (:func:`compare_samples`) resamples the SAME image indices for two samplers
that started from the same initial noise per seed, seed by seed (a stratified bootstrap over
seeds, with the per-image terms and interval rules of :mod:`trainables.scoring.intervals`), and bootstraps
the difference of their mean-over-seeds values: "better", "worse" or "not distinguishable at 95%"
(:data:`trainables.contract.metrics.VERDICTS`) by whether its interval excludes 0.

FID_inf (:func:`fid_infinity`; Chong & Forsyth 2020, "Effectively Unbiased FID and Inception
Score and where to find them"): FID at several subset sizes n, a least-squares fit of
FID(n) = FID_inf + k / n, and its intercept, so that values at different N compare.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from trainables.contract.metrics import BETTER, CONFIRM_RESAMPLES, INTERVAL_LEVEL, METRICS, TIED, WORSE
from trainables.scoring import quality
from trainables.scoring.intervals import (
    RULES,
    ReferenceSide,
    _clipped,
    bootstrap_counts,
    interval,
    replicate_metrics,
    sample_terms,
)

# ---------------------------------------------------------------------------------------------
# Several seeds, several samplers: pooled values and paired comparisons


def verdict(lo: float, hi: float, mode: str) -> str:
    """What the interval [lo, hi] of a difference (this trial minus the reference trial) says for
    a metric of direction ``mode``: better, worse, or not distinguishable at 95%."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0.0 <= hi:
        return TIED
    higher = lo > 0.0
    return BETTER if higher == (mode == "max") else WORSE


def compare_samples(
    samples: Mapping[str, Sequence[tuple[torch.Tensor, torch.Tensor]]],
    side: ReferenceSide,
    metric: str,
    resamples: int = CONFIRM_RESAMPLES,
    level: float = INTERVAL_LEVEL,
    best: str | None = None,
) -> dict:
    """Pooled values over seeds and paired comparisons of several samplers.

    ``samples``: name -> one (features, logits) pair per seed, every seed with ``side.n`` images,
    seed s of every name drawn from the same initial noise (paired). For each seed the same
    bootstrap draws serve every name; a name's value is its mean over seeds (so is each
    resample's), and its difference to ``best`` (default: the best mean by ``metric``) is
    bootstrapped jointly. Returns {"best", "values": {name: {metric: {"value", "lo", "hi",
    "per_seed"}}}, "versus_best": {name: {metric: {"difference", "lo", "hi", "verdict"}}}}.
    """
    names = list(samples)
    seeds = {len(v) for v in samples.values()}
    if not names or len(seeds) != 1 or 0 in seeds:
        raise ValueError(f"samples: every name needs the same number (>= 1) of seeds, got {sorted(seeds)}")
    n_seeds = seeds.pop()
    hats = {name: {m: [] for m in METRICS} for name in names}
    reps = {name: {m: torch.zeros(resamples, dtype=torch.float64) for m in METRICS} for name in names}
    ones = torch.ones(1, side.n, dtype=torch.float64)
    for s in range(n_seeds):
        counts = bootstrap_counts(side.n, resamples, side.seed, stream=f"paired-bootstrap-{s}")
        for name in names:
            t = sample_terms(*samples[name][s], side)
            hat = replicate_metrics(side, t, ones)
            rep = replicate_metrics(side, t, counts)
            for m in METRICS:
                hats[name][m].append(float(hat[m][0]))
                reps[name][m] += rep[m] / n_seeds
    values = {}
    for name in names:
        values[name] = {}
        for m in METRICS:
            value = sum(hats[name][m]) / n_seeds
            lo, hi = _clipped(m, *interval(value, reps[name][m], RULES[m], level))
            values[name][m] = {"value": value, "lo": lo, "hi": hi, "per_seed": list(hats[name][m])}
    mode = METRICS[metric].direction
    if best is None:
        sign = 1.0 if mode == "min" else -1.0
        best = min(names, key=lambda name: (sign * _finite(values[name][metric]["value"], math.inf), names.index(name)))
    versus = {}
    for name in names:
        if name == best:
            continue
        versus[name] = {}
        for m in METRICS:
            diff = values[name][m]["value"] - values[best][m]["value"]
            lo, hi = interval(diff, reps[name][m] - reps[best][m], RULES[m], level)
            versus[name][m] = {
                "difference": diff,
                "lo": lo,
                "hi": hi,
                "verdict": verdict(lo, hi, METRICS[m].direction),
            }
    return {"best": best, "values": values, "versus_best": versus, "resamples": resamples, "level": level}


def _finite(value: float, default: float) -> float:
    return value if math.isfinite(value) else default


# ---------------------------------------------------------------------------------------------
# FID at infinite N


def fid_sizes(n: int, count: int = 6) -> list[int]:
    """Subset sizes for :func:`fid_infinity`: geometric from n / 2 (at least 2 images) up to n.

    Not smaller: at a few times the feature dimension (64) FID's bias has terms beyond 1 / n. On
    real training digits against the test reference, 500 at a time, this gives FID_inf 0.00 +- 0.23
    (mean and std over 10 sets) where plain FID is 1.29."""
    low = max(2, n // 2)
    if n <= low:
        return [n]
    ratio = (n / low) ** (1.0 / (count - 1))
    return sorted({min(n, max(low, int(round(low * ratio**i)))) for i in range(count)})


def fid_infinity(
    features: torch.Tensor,
    reference: quality.Reference | None = None,
    sizes: Sequence[int] | None = None,
    draws: int = 32,
    seed: int = 0,
) -> dict:
    """FID_inf (Chong & Forsyth 2020): FID of random subsets of ``features`` [N, d] at each size
    (mean over ``draws`` subsets drawn without replacement; the whole sample at N), the least-squares
    line FID(n) = fid_inf + slope / n, and its intercept. Returns {"fid_inf", "slope", "sizes",
    "fid_at"}; with a single size the intercept is that size's FID (no extrapolation)."""
    ref = reference if reference is not None else quality.mnist_test_reference("cpu")
    f64 = features.double().cpu()
    n = len(f64)
    sizes = sorted({int(s) for s in (sizes or fid_sizes(n))})
    if sizes[0] < 2 or sizes[-1] > n:
        raise ValueError(f"sizes={sizes}: each must lie in [2, {n}]")
    g = torch.Generator().manual_seed(quality._stream_seed(seed, "fid-infinity"))
    sqrt_ref = quality._sqrtm_psd(ref.cov.double())  # once: every subset's FID shares it
    values = []
    for size in sizes:
        parts = torch.stack([f64[torch.randperm(n, generator=g)[:size]] for _ in range(1 if size == n else draws)])
        mu = parts.mean(1)
        centred = parts - mu[:, None, :]
        cov = centred.transpose(1, 2) @ centred / (size - 1)
        cross = torch.linalg.eigvalsh(sqrt_ref @ cov @ sqrt_ref).clamp_min(0).sqrt().sum(-1)
        fids = (
            (mu - ref.mean.double()).square().sum(-1)
            + cov.diagonal(dim1=1, dim2=2).sum(-1)
            + ref.cov.trace()
            - 2 * cross
        )
        values.append(float(fids.mean()))
    if len(sizes) == 1:
        return {"fid_inf": values[0], "slope": 0.0, "sizes": sizes, "fid_at": values}
    design = torch.tensor([[1.0, 1.0 / s] for s in sizes], dtype=torch.float64)
    coef = torch.linalg.lstsq(design, torch.tensor(values, dtype=torch.float64).unsqueeze(1)).solution.squeeze(1)
    return {"fid_inf": float(coef[0]), "slope": float(coef[1]), "sizes": sizes, "fid_at": values}
