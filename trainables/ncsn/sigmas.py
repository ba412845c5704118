"""Noise ladders for NCSN and the analytic NCSNv2 recommendations.

Every sigma is in the units of the data the network sees, [0, 1] pixel units for images.
The ladder is geometric, sigma_i = exp(linspace(log sigma_1, log sigma_L, L)), largest first, so
level index 0 is the largest noise (Song & Ermon 2019, section 4.2).

The NCSNv2 techniques (Song & Ermon 2020, "Improved Techniques for Training Score-Based
Generative Models", section 3) computed here:

1. sigma_1 = the largest Euclidean distance between two training points
   (:func:`max_pairwise_distance`; MNIST value cached in :data:`MNIST_MAX_PAIRWISE_DISTANCE`).
2. the ratio gamma = sigma_{i-1} / sigma_i from the Phi formula (:func:`ncsnv2_gamma`) and the
   number of levels it implies (:func:`ncsnv2_num_levels`).
4. the Langevin step eps for a given number of steps per level T (:func:`ncsnv2_step_lr`).

Step sizes follow the reference *code* convention (README, "Conventions"):
alpha_i = eps * (sigma_i / sigma_L)^2 and x <- x + alpha_i s + sqrt(2 alpha_i) z. The 2019 paper
writes x <- x + (alpha_i / 2) s + sqrt(alpha_i) z, so code eps = paper eps / 2
(:func:`paper_to_code_step_lr`, :func:`code_to_paper_step_lr`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import brentq, minimize_scalar
from scipy.special import ndtr

__all__ = [
    "MNIST_MAX_PAIRWISE_DISTANCE",
    "geometric_sigmas",
    "ladder_ratio",
    "farthest_pair",
    "max_pairwise_distance",
    "ncsnv2_gamma",
    "ncsnv2_num_levels",
    "ncsnv2_step_lr",
    "ncsnv2_step_objective",
    "snr_of_step",
    "paper_to_code_step_lr",
    "code_to_paper_step_lr",
]

# Largest Euclidean distance between two of the 60,000 MNIST training images in [0, 1] units
# (float64 images / 255, no dequantisation), between training images 26785 and 59452. Reproduce:
#   python -c "from trainables.contract.data import load_mnist; from trainables.ncsn.sigmas import \
#   farthest_pair; x, _ = load_mnist(True); print(farthest_pair(x.double() / 255))"
# (about 7-8 CPU-seconds in float64); tests/trainables/test_sigmas.py recomputes it on the full set.
MNIST_MAX_PAIRWISE_DISTANCE = 16.875761961808387


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def _ordered_sigmas(sigma_begin: float, sigma_end: float) -> tuple[float, float]:
    sigma_begin = _positive("sigma_begin", sigma_begin)
    sigma_end = _positive("sigma_end", sigma_end)
    if sigma_begin <= sigma_end:
        raise ValueError(
            f"sigma_begin must be larger than sigma_end, got sigma_begin={sigma_begin!r}, sigma_end={sigma_end!r}"
        )
    return sigma_begin, sigma_end


def _count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def geometric_sigmas(
    sigma_begin: float,
    sigma_end: float,
    num_levels: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Geometric noise ladder sigma_i = exp(linspace(log sigma_begin, log sigma_end, L)).

    Returns a strictly decreasing tensor [num_levels] (data units) with ``sigmas[0] ==
    sigma_begin`` and ``sigmas[-1] == sigma_end``. Computed in float64, then cast, so the ends are
    exact to the requested dtype. Raises ``ValueError`` for a non-positive sigma,
    ``sigma_begin <= sigma_end`` or ``num_levels < 2``.
    """
    sigma_begin, sigma_end = _ordered_sigmas(sigma_begin, sigma_end)
    num_levels = _count("num_levels", num_levels, 2)
    logs = torch.linspace(math.log(sigma_begin), math.log(sigma_end), num_levels, dtype=torch.float64)
    return logs.exp().to(dtype=dtype, device=device)


def ladder_ratio(sigma_begin: float, sigma_end: float, num_levels: int) -> float:
    """Ratio gamma = sigma_{i-1} / sigma_i of the geometric ladder (dimensionless, > 1)."""
    geometric_sigmas(sigma_begin, sigma_end, num_levels)  # validation only
    return (sigma_begin / sigma_end) ** (1.0 / (num_levels - 1))


# ----------------------------------------------------------------------------------------------
# Technique 1: sigma_1 = largest pairwise distance

# Row blocks of 512 keep the pairs computed within 20% of what the radius bound allows on MNIST
# while the products stay large enough for BLAS.
_ROW_BLOCK = 512
_COL_BLOCK = 4096


def _as_points(x) -> torch.Tensor:
    x = torch.as_tensor(x)
    if not (x.is_floating_point()):
        raise ValueError(f"x must be a floating tensor in data units (e.g. images / 255.), got dtype {x.dtype}")
    if x.dim() < 2 or x.shape[0] < 2:
        raise ValueError(f"x must have shape [N, ...] with N >= 2 points, got shape {tuple(x.shape)}")
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf")
    return x


def farthest_pair(x) -> tuple[float, int, int]:
    """The two rows of ``x`` that lie farthest apart, and their Euclidean distance.

    ``x``: float tensor [N, ...] (trailing dimensions are flattened), N >= 2, in data units.
    Returns ``(distance, i, j)`` with ``i < j`` original row indices; the distance is recomputed
    as ``||x_i - x_j||`` in float64, so it is exact to float64 rounding.

    Exact and pruned: rows are centred on their mean c and sorted by r = ||x - c||; since
    ||x_i - x_j|| <= r_i + r_j, a block of pairs whose largest r_i + r_j cannot beat the best
    distance found so far is skipped. A cheap farthest-point walk supplies the first lower
    bound. The blocks that remain are float64 Gram products (d^2 = r_i^2 + r_j^2 - 2 <a_i, a_j>
    of centred rows, error ~ D * 1e-16 relative). On the 60k MNIST images about 6% of the
    pairs survive the pruning; data without spread in r degrade to the full O(N^2 D) product.
    """
    x = _as_points(x)
    centred = x - x.mean(dim=0)
    sq = centred.square().sum(dim=1)
    sq, order = sq.sort(descending=True)
    centred = centred[order]
    n_rows = centred.shape[0]
    radius = sq.sqrt().cpu().numpy()
    ascending = -radius  # np.searchsorted wants ascending order

    # Farthest-point hops from the outermost rows give a lower bound that is usually close to
    # the answer, which makes the pruning below effective from the first block.
    best_d2, best_i, best_j = 0.0, 0, 1
    for start in range(min(4, n_rows)):
        for _ in range(3):
            d2 = sq + sq[start] - 2.0 * (centred @ centred[start])
            far = int(d2.argmax())
            if float(d2[far]) > best_d2:
                best_d2, best_i, best_j = float(d2[far]), start, far
            start = far

    # Safety margin for rounding in r and in the Gram entries: pruning never drops a pair that
    # could beat the bound by more than float64 noise.
    slack = 1e-9
    for r0 in range(0, n_rows, _ROW_BLOCK):
        bound = math.sqrt(best_d2) * (1 - slack)
        if 2 * radius[r0] < bound:
            break  # radii only shrink from here on
        r1 = min(r0 + _ROW_BLOCK, n_rows)
        # Columns j whose r_j could still pair with the block's largest radius.
        stop = int(np.searchsorted(ascending, radius[r0] - bound, side="right"))
        rows = centred[r0:r1]
        for c0 in range(r0, stop, _COL_BLOCK):
            c1 = min(c0 + _COL_BLOCK, stop)
            d2 = torch.addmm(sq[None, c0:c1], rows, centred[c0:c1].T, alpha=-2.0)
            d2 += sq[r0:r1, None]
            flat = int(d2.argmax())
            value = float(d2.view(-1)[flat])
            if value > best_d2:
                best_d2 = value
                best_i, best_j = r0 + flat // (c1 - c0), c0 + flat % (c1 - c0)

    if best_i == best_j:  # only when every distance rounds to 0: any other row will do
        best_j = (best_i + 1) % n_rows
    i, j = sorted((int(order[best_i]), int(order[best_j])))
    distance = float(torch.linalg.vector_norm(x[i] - x[j]))
    return distance, i, j


def max_pairwise_distance(x) -> float:
    """Largest Euclidean distance between any two rows of ``x`` [N, ...] (data units).

    NCSNv2 technique 1 sets sigma_1 to this value for the training set. Exact (float64, see
    :func:`farthest_pair`). For the 60k MNIST training images / 255 it is
    :data:`MNIST_MAX_PAIRWISE_DISTANCE` = 16.876 (docs/NCSN.md: 16.88), in
    about 7 CPU-seconds (float64).
    """
    return farthest_pair(x)[0]


# ----------------------------------------------------------------------------------------------
# Technique 2: the geometric ratio gamma

# Phi(3) - Phi(-3): the overlap at gamma = 1, the largest reachable target.
_MAX_OVERLAP = float(ndtr(3.0) - ndtr(-3.0))


def _overlap(gamma: float, dim: float) -> float:
    shift = math.sqrt(2.0 * dim) * (gamma - 1.0)
    return float(ndtr(shift + 3.0 * gamma) - ndtr(shift - 3.0 * gamma))


def ncsnv2_gamma(D: int, target: float = 0.5) -> float:
    """NCSNv2 technique 2: the ratio gamma = sigma_{i-1} / sigma_i > 1 with
    Phi(sqrt(2D)(gamma - 1) + 3 gamma) - Phi(sqrt(2D)(gamma - 1) - 3 gamma) = target.

    ``D``: data dimension (784 for MNIST). ``target`` in (0, 0.9973): the paper asks for about
    0.5; the released configs sit near 0.567. MNIST: 1.0820 at 0.5, 1.0774 at 0.567.
    """
    D = _positive("D", D)
    target = float(target)
    if not 0.0 < target < _MAX_OVERLAP:
        raise ValueError(f"target must lie in (0, {_MAX_OVERLAP:.4f}), got {target!r}")
    # The overlap falls from 0.9973 at gamma = 1 towards 0; grow the bracket until it crosses.
    upper = 2.0
    while _overlap(upper, D) > target:
        upper = 1.0 + 2.0 * (upper - 1.0)
    return float(brentq(lambda g: _overlap(g, D) - target, 1.0, upper, xtol=1e-14, rtol=1e-15))


def ncsnv2_num_levels(sigma_begin: float, sigma_end: float, gamma: float) -> int:
    """Number of levels L of a geometric ladder from sigma_begin to sigma_end with ratio gamma.

    L - 1 = log(sigma_begin / sigma_end) / log(gamma), rounded to the nearest integer (the
    ladder whose ratio is nearest to gamma; it reproduces the released CIFAR-10 L = 232 for
    50 -> 0.01 at the released target 0.567). At least 2.
    """
    sigma_begin, sigma_end = _ordered_sigmas(sigma_begin, sigma_end)
    gamma = float(gamma)
    if not math.isfinite(gamma) or gamma <= 1.0:
        raise ValueError(f"gamma must be a finite number > 1, got {gamma!r}")
    return max(2, 1 + round(math.log(sigma_begin / sigma_end) / math.log(gamma)))


# ----------------------------------------------------------------------------------------------
# Technique 4: the Langevin step for a given T


def ncsnv2_step_objective(step_lr: float, sigma_end: float, gamma: float, n_steps_each: int) -> float:
    """The NCSNv2 technique-4 expression, code convention, a = step_lr / sigma_end^2:

        (1 - a)^(2T) * (gamma^2 - 2a / (1 - (1 - a)^2)) + 2a / (1 - (1 - a)^2)

    For a single data point at 0 (score -x / sigma_i^2) the chain at level i is linear,
    x <- (1 - a) x + sqrt(2 alpha_i) z, and this is its variance after T steps divided by
    sigma_i^2, starting from the previous level's variance gamma^2 sigma_i^2; the ideal value
    is 1. Valid for 0 < a < 1.
    """
    a = float(step_lr) / float(sigma_end) ** 2
    stationary = 2.0 * a / (1.0 - (1.0 - a) ** 2)
    return (1.0 - a) ** (2 * n_steps_each) * (gamma**2 - stationary) + stationary


def ncsnv2_step_lr(sigma_end: float, gamma: float, n_steps_each: int) -> float:
    """NCSNv2 technique 4: the code-convention eps whose :func:`ncsnv2_step_objective` is
    closest to 1, for steps per level T = ``n_steps_each`` and ladder ratio ``gamma``.

    The objective exceeds 1 for every a in (0, 1), so closest to 1 is its minimum, found on a
    log grid and refined with bounded Brent. Reproduces the released CIFAR-10 step 6.2e-6
    (sigma 50 -> 0.01, L = 232, T = 5). Pass the ratio of the ladder actually used
    (:func:`ladder_ratio`), not the rounded target gamma.
    """
    sigma_end = _positive("sigma_end", sigma_end)
    gamma = float(gamma)
    if not math.isfinite(gamma) or gamma <= 1.0:
        raise ValueError(f"gamma must be a finite number > 1, got {gamma!r}")
    T = _count("n_steps_each", n_steps_each, 1)

    def objective(log_a: float) -> float:
        return ncsnv2_step_objective(math.exp(log_a) * sigma_end**2, sigma_end, gamma, T)

    grid = np.linspace(math.log(1e-10), math.log(1 - 1e-9), 2001)
    k = int(np.argmin([objective(v) for v in grid]))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    best = minimize_scalar(objective, bounds=(lo, hi), method="bounded", options={"xatol": 1e-12})
    return float(math.exp(best.x) * sigma_end**2)


# ----------------------------------------------------------------------------------------------
# Conventions


def snr_of_step(step_lr: float, sigma_end: float) -> float:
    """Signal-to-noise ratio r = sqrt(eps / (2 sigma_L^2)) of a code-convention step eps.

    Scale-free: NCSN v1 MNIST (eps 2e-5, sigma_L 0.01) gives 0.316, NCSNv2 CIFAR-10 0.176.
    """
    return math.sqrt(_positive("step_lr", step_lr) / (2.0 * _positive("sigma_end", sigma_end) ** 2))


def paper_to_code_step_lr(step_lr: float) -> float:
    """Convert the 2019 paper's eps (x += eps_i/2 s + sqrt(eps_i) z) to the code convention
    (x += eps_i s + sqrt(2 eps_i) z): code eps = paper eps / 2."""
    return _positive("step_lr", step_lr) / 2.0


def code_to_paper_step_lr(step_lr: float) -> float:
    """Inverse of :func:`paper_to_code_step_lr`: paper eps = 2 * code eps."""
    return _positive("step_lr", step_lr) * 2.0
