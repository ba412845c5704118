"""95% intervals that include the noise of the generated sample, on every evaluation.

Every metric of :func:`trainables.scoring.quality.point_metrics` is computed against FIXED reference statistics:
the MNIST test features (mean, covariance), the KID reference subsets and the k-NN reference
manifold, all fixed by the protocol's seed and sample count. What moves a value from one evaluation
to the next is therefore the sample of N generated images, and that is what the intervals here
resample: a nonparametric bootstrap over the generated images (Efron & Tibshirani 1993, "An
Introduction to the Bootstrap"). A resample draws N of the N images with replacement and is held
as counts c_i (how often image i was drawn); every metric is rewritten as a function of the counts
of per-image terms computed once, so B resamples cost B weighted sums, not B evaluations:

- FID: weighted mean and covariance of the features (a covariance per resample: 64-d, cheap) in
  the Frechet distance to the fixed reference Gaussian.
- KID: xx(c) + yy - 2 xy(c). yy is the fixed reference term (mean over the protocol's subsets);
  xy(c) = sum_i c_i r_i / N with r_i the image's kernel against the reference, weighted by how
  often each reference point enters a subset; xx(c) = (c'Kc - sum_i c_i^2 k_ii) / (N^2 - sum c_i^2),
  the mean kernel over pairs of distinct images (a copy is not paired with itself). At c = 1 this
  is exactly the value :func:`trainables.scoring.quality.point_metrics` reports whenever its KID subsets hold
  the whole sample (N <= subset size, 1,000); above that it is the full-sample U-statistic, the
  same expectation with less subset noise.
- Precision, density: means over images of a fixed per-image term (in the real k-NN manifold; the
  number of real balls holding it). Coverage: a real ball counts when any drawn image lies in it.
- Recall: a real point counts when it lies in the k-NN ball of a drawn image; the ball's radius is
  the distance at which the drawn copies of the OTHER images reach k (copies of the image itself
  do not count), so a resample's neighbour mass matches the sample's and radii do not collapse.
- Inception Score, class coverage: weighted means of the classifier's per-image terms.

At c = 1 every formula returns the sample's own value (tests check it against
:func:`trainables.scoring.quality.point_metrics`).

Two interval rules, chosen per metric by what its value estimates (:data:`RULES`):

- ``basic`` (the "basic bootstrap" interval, Davison & Hinkley 1997, eq. 5.6):
  [2 t - q_hi, 2 t - q_lo] with q the 2.5% and 97.5% quantiles of the resampled values. It covers
  the metric's large-N value and corrects a small-N bias to first order: FID is biased upwards by
  roughly b / N (docs/NCSN.md), a resample by about as much again, so the plain percentile interval
  would sit above both the sample's value and the truth. For FID, KID, Inception Score, precision,
  density and class coverage.
- ``centred``: the resampled values' 2.5% and 97.5% quantiles shifted so that their mean sits on
  the sample's value. Recall and coverage are defined at the sample count (more images cover more
  real balls; their value at infinite N is not what they estimate), and a resample holds only about
  63% distinct images, which lowers both a little; centring removes that shift and keeps the spread.

The simulation test (tests/trainables/test_intervals.py) checks that these intervals cover the
truth in at least 90% of repeats. Bounds are clipped to each metric's range (FID >= 0,
probabilities in [0, 1], ...); KID is not clipped (its unbiased estimate may be negative).

Paired comparisons of several samplers and FID_inf build on these terms: :mod:`trainables.scoring.compare`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainables.contract.metrics import INTERVAL_LEVEL, INTERVALS, METRICS, hi_key, lo_key
from trainables.scoring import quality
from trainables.scoring.feature_net import NUM_CLASSES

DEFAULT_RESAMPLES = 500  # bootstrap draws of each evaluation's 95% intervals
BASIC, CENTRED = "basic", "centred"
RULES = {
    "fid": BASIC,
    "kid": CENTRED,
    "inception_score": BASIC,
    "precision": CENTRED,
    "recall": CENTRED,
    "density": CENTRED,
    "coverage": CENTRED,
    "class_coverage": BASIC,
}
# The values each metric's truth can take (an interval is clipped to them).
RANGES = {
    "fid": (0.0, math.inf),
    "kid": (-math.inf, math.inf),
    "inception_score": (1.0, float(NUM_CLASSES)),
    "precision": (0.0, 1.0),
    "recall": (0.0, 1.0),
    "density": (0.0, math.inf),
    "coverage": (0.0, 1.0),
    "class_coverage": (0.0, 1.0),
}
METHOD = "bootstrap over the generated images, reference statistics fixed (trainables/scoring/intervals.py)"
# Neighbours listed per image for the recall radius of a resample (see _recall): fewer than k = 3
# draws among the 16 nearest happens with probability P(Poisson(16) < 3) ~ 2e-5, and then the 16th
# neighbour's distance is used.
_NEIGHBOURS = 16
_CELLS = 1 << 22  # elements per block of intermediate results (bounds memory at N = 10k)


# ---------------------------------------------------------------------------------------------
# The fixed side


@dataclass(frozen=True, eq=False)
class ReferenceSide:
    """What every resample holds fixed, for samples of ``n`` images under protocol seed ``seed``.

    mean, cov, cov_sqrt: the reference Gaussian (float64, CPU). kid_points, kid_weights, kid_yy:
    the reference points of the KID subsets, how much each weighs in the cross term (they sum to
    1) and the reference term (mean over subsets). real, r_pr, r_dc: the real k-NN manifold of
    the precision/recall (k = 3) and density/coverage (k = 5) metrics; fake_idx: the images those
    metrics use (all of them unless N exceeds the reference size).
    """

    n: int
    seed: int
    mean: torch.Tensor
    cov: torch.Tensor
    cov_sqrt: torch.Tensor
    kid_points: torch.Tensor
    kid_weights: torch.Tensor
    kid_yy: float
    real: torch.Tensor
    r_pr: torch.Tensor
    r_dc: torch.Tensor
    fake_idx: torch.Tensor


_SIDES: dict[tuple, ReferenceSide] = {}


def reference_side(
    n: int,
    seed: int = 0,
    reference: quality.Reference | None = None,
    device: str = "cpu",
    n_subsets: int = quality.DEFAULT_N_SUBSETS,
    subset_size: int = quality.DEFAULT_SUBSET_SIZE,
) -> ReferenceSide:
    """The fixed side of :func:`trainables.scoring.quality.point_metrics` for ``n`` images (the same KID
    subsets, manifold subsets and radii), kept in memory: every evaluation of a trial reuses it."""
    device = str(device)
    ref = reference if reference is not None else quality.mnist_test_reference(device)
    key = (id(ref), ref.sha256, n, seed, n_subsets, subset_size, device)
    side = _SIDES.get(key)
    if side is not None:
        return side
    ref_feats = ref.features.to(device).float()
    yy = quality._cached_kid_terms(ref, ref_feats, n, n_subsets, subset_size, seed)
    ref_idx, _ = quality.kid_subsets(n, len(ref_feats), n_subsets, subset_size, seed)
    counts = torch.bincount(ref_idx.reshape(-1), minlength=len(ref_feats)).double()
    used = counts.nonzero().squeeze(1)
    fake_idx, real_idx = quality.manifold_subsets(n, len(ref_feats), seed)
    real = ref_feats[real_idx.to(device)]
    r_pr, r_dc = quality._nn_radii(real, (quality.PR_K, quality.DC_K))
    mean, cov = ref.mean.double().cpu(), ref.cov.double().cpu()
    side = ReferenceSide(
        n=n,
        seed=seed,
        mean=mean,
        cov=cov,
        cov_sqrt=quality._sqrtm_psd(cov),
        kid_points=ref_feats[used.to(device)],
        kid_weights=(counts[used] / counts.sum()).to(device),
        kid_yy=float(yy.double().mean()),
        real=real,
        r_pr=r_pr,
        r_dc=r_dc,
        fake_idx=fake_idx.to(device),
    )
    if len(_SIDES) >= 8:
        _SIDES.clear()
    _SIDES[key] = side
    return side


# ---------------------------------------------------------------------------------------------
# Per-image terms of one sample


@dataclass(frozen=True, eq=False)
class SampleTerms:
    """Per-image terms of one sample against a :class:`ReferenceSide` (see the module docstring).
    Build with :func:`sample_terms`."""

    n: int
    f64: torch.Tensor  # features, float64 [n, d]
    f32: torch.Tensor  # features, float32 [n, d] (kernels)
    k_diag: torch.Tensor  # k(x_i, x_i), float64 [n]
    kid_r: torch.Tensor  # weighted kernel against the reference, float64 [n]
    in_precision: torch.Tensor  # image inside the real k = 3 manifold, float64 [n_fake]
    in_density: torch.Tensor  # real k = 5 balls holding the image, float64 [n_fake]
    cov_pairs: tuple[torch.Tensor, torch.Tensor]  # (real j, fake i) with the image in j's ball
    nbr_idx: torch.Tensor  # nearest other images, long [n_fake, K]
    nbr_d: torch.Tensor  # their distances, ascending, float32 [n_fake, K]
    rec_pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (real j, fake i, distance)
    log_p: torch.Tensor  # classifier log-probabilities, float64 [n, C]
    labels: torch.Tensor  # predicted labels, long [n]


def _fake_neighbours(fake: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest other rows of each row of ``fake`` [n, d]: (indices, distances), ascending,
    with distances computed as :func:`trainables.scoring.quality._nn_radii` computes them."""
    idx, dist = [], []
    rows = torch.arange(len(fake), device=fake.device)
    for i in range(0, len(fake), quality._CHUNK):
        d = torch.cdist(fake[i : i + quality._CHUNK], fake)
        d[torch.arange(len(d), device=d.device), rows[i : i + quality._CHUNK]] = -math.inf  # self first
        top = d.topk(k + 1, dim=1, largest=False)
        idx.append(top.indices[:, 1:])
        dist.append(top.values[:, 1:])
    return torch.cat(idx), torch.cat(dist)


def sample_terms(features: torch.Tensor, logits: torch.Tensor, side: ReferenceSide) -> SampleTerms:
    """The per-image terms of a sample: ``features`` [n, d] and ``logits`` [n, C] of the feature
    network (``n`` = ``side.n``), on the side's device."""
    n = len(features)
    if n != side.n:
        raise ValueError(f"features: {n} images, but the reference side is for {side.n}")
    f32 = features.float().to(side.real.device)
    f64 = f32.double()
    k_diag = (f64.square().sum(1) / f64.shape[1] + 1.0).pow(3)  # k(x, x) = (x.x / d + 1)^3
    kid_r = torch.zeros(n, dtype=torch.float64, device=f32.device)
    for j in range(0, len(side.kid_points), quality._CHUNK):
        block = quality._poly_kernel(f32, side.kid_points[j : j + quality._CHUNK]).double()
        kid_r += block @ side.kid_weights[j : j + quality._CHUNK]

    fake = f32[side.fake_idx]
    k_nbr = min(_NEIGHBOURS, len(fake) - 1)
    nbr_idx, nbr_d = _fake_neighbours(fake, k_nbr)
    reach = nbr_d[:, -1]  # no resample's recall radius exceeds the K-th neighbour's distance
    in_precision, in_density, cov_j, cov_i, rec_j, rec_i, rec_d = [], [], [], [], [], [], []
    for i in range(0, len(fake), quality._CHUNK):
        d = torch.cdist(fake[i : i + quality._CHUNK], side.real)  # as quality.manifold_metrics does
        in_precision.append((d <= side.r_pr).any(1))
        in_dc = d <= side.r_dc
        in_density.append(in_dc.sum(1))
        fi, rj = in_dc.nonzero(as_tuple=True)
        cov_j.append(rj)
        cov_i.append(fi + i)
        fi, rj = (d <= reach[i : i + quality._CHUNK, None]).nonzero(as_tuple=True)
        rec_j.append(rj)
        rec_i.append(fi + i)
        rec_d.append(d[fi, rj])
    log_p = F.log_softmax(logits.double().to(f32.device), dim=1)
    return SampleTerms(
        n=n,
        f64=f64,
        f32=f32,
        k_diag=k_diag,
        kid_r=kid_r,
        in_precision=torch.cat(in_precision).double(),
        in_density=torch.cat(in_density).double(),
        cov_pairs=(torch.cat(cov_j), torch.cat(cov_i)),
        nbr_idx=nbr_idx,
        nbr_d=nbr_d,
        rec_pairs=(torch.cat(rec_j), torch.cat(rec_i), torch.cat(rec_d)),
        log_p=log_p,
        labels=logits.argmax(1).to(f32.device),
    )


# ---------------------------------------------------------------------------------------------
# Metrics as functions of the counts


def _fid(side: ReferenceSide, t: SampleTerms, counts: torch.Tensor) -> torch.Tensor:
    n = t.n
    centre = t.f64.mean(0)
    x = t.f64 - centre  # centred: the weighted covariance loses no digits to a large mean
    w = counts / n
    mu = w @ x  # [B, d], relative to centre
    d = x.shape[1]
    second = torch.zeros(len(w), d * d, dtype=torch.float64, device=w.device)
    rows = max(1, _CELLS // (d * d))
    for i in range(0, n, rows):  # one GEMM over the images' outer products
        part = x[i : i + rows]
        second += w[:, i : i + len(part)] @ (part[:, :, None] * part[:, None, :]).reshape(len(part), d * d)
    cov = (second.reshape(-1, d, d) - mu[:, :, None] * mu[:, None, :]) * (n / (n - 1))
    a = side.cov_sqrt.to(cov.device)
    cross = torch.linalg.eigvalsh(a @ cov @ a).clamp_min(0).sqrt().sum(-1)
    diff = mu + centre - side.mean.to(cov.device)
    trace = cov.diagonal(dim1=-2, dim2=-1).sum(-1)
    return diff.square().sum(-1) + trace + side.cov.trace().to(cov.device) - 2 * cross


def _kid(side: ReferenceSide, t: SampleTerms, counts: torch.Tensor) -> torch.Tensor:
    n = t.n
    quad = torch.zeros(len(counts), dtype=torch.float64, device=counts.device)
    rows = max(1, _CELLS // n)
    for i in range(0, n, rows):
        block = quality._poly_kernel(t.f32[i : i + rows], t.f32).double()  # [r, n]
        quad += ((counts @ block.T) * counts[:, i : i + len(block)]).sum(1)
    sq = counts.square()
    pairs = n * n - sq.sum(1)
    xx = (quad - sq @ t.k_diag) / pairs.clamp_min(1)
    xx = torch.where(pairs > 0, xx, torch.full_like(xx, math.nan))  # one image drawn n times
    return xx + side.kid_yy - 2 * (counts @ t.kid_r) / n


def _coverage(side: ReferenceSide, t: SampleTerms, drawn: torch.Tensor) -> torch.Tensor:
    j, i = t.cov_pairs
    out = []
    step = max(1, _CELLS // max(len(j), len(side.real)))
    for b in range(0, len(drawn), step):
        held = torch.zeros(len(drawn[b : b + step]), len(side.real), dtype=torch.float64, device=drawn.device)
        held.index_add_(1, j, drawn[b : b + step, i])
        out.append((held > 0).double().mean(1))
    return torch.cat(out)


def _recall(side: ReferenceSide, t: SampleTerms, counts: torch.Tensor) -> torch.Tensor:
    """Recall of each resample: the k-NN radius of a drawn image is the distance at which the
    drawn copies of the other images reach k = 3 (see the module docstring)."""
    k = quality.PR_K
    j, i, dist = t.rec_pairs
    n_fake, width = t.nbr_idx.shape
    out = []
    step = max(1, _CELLS // max(n_fake * width, len(j), len(side.real)))
    small = counts.to(torch.int32)  # whole counts; their running sums along the neighbours
    for b in range(0, len(counts), step):
        c = counts[b : b + step]
        enough = small[b : b + step, t.nbr_idx].cumsum(-1) >= k  # [b, n_fake, K]
        # the first neighbour where the drawn mass reaches k (the K-th where it never does)
        pos = (enough.sum(-1) - width).neg_().clamp_(max=width - 1)
        radius = t.nbr_d.gather(1, pos.T).T  # [b, n_fake]
        hits = ((dist <= radius[:, i]) & (c[:, i] > 0)).double()
        held = torch.zeros(len(c), len(side.real), dtype=torch.float64, device=c.device)
        held.index_add_(1, j, hits)
        out.append((held > 0).double().mean(1))
    return torch.cat(out)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -torch.where(p > 0, p * p.clamp_min(1e-300).log(), torch.zeros_like(p)).sum(-1)


def replicate_metrics(side: ReferenceSide, t: SampleTerms, counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every metric of :data:`trainables.contract.metrics.METRICS` for each row of ``counts`` [B, n] (how
    often each image is drawn; a row of ones is the sample itself): name -> float64 [B], CPU."""
    counts = counts.to(t.f64.device, torch.float64)
    n = t.n
    fake = counts[:, side.fake_idx]
    drawn = (fake > 0).double()
    n_fake = fake.sum(1)
    p = t.log_p.exp()
    p_mean = counts @ p / n
    hneg = (p * t.log_p).sum(1)
    hist = counts @ F.one_hot(t.labels, NUM_CLASSES).double()
    out = {
        "fid": _fid(side, t, counts),
        "kid": _kid(side, t, counts),
        "inception_score": torch.exp(counts @ hneg / n + _entropy(p_mean)),
        "precision": fake @ t.in_precision / n_fake,
        "recall": _recall(side, t, fake),
        "density": fake @ t.in_density / (quality.DC_K * n_fake),
        "coverage": _coverage(side, t, drawn),
        "class_coverage": (_entropy(hist / hist.sum(1, keepdim=True)) / math.log(NUM_CLASSES)).clamp_min(0.0) + 0.0,
    }
    assert set(out) == set(METRICS), "every registered metric needs a resampled form here"
    return {name: value.cpu() for name, value in out.items()}


# ---------------------------------------------------------------------------------------------
# Intervals


def bootstrap_counts(n: int, resamples: int, seed: int, stream: str = "bootstrap") -> torch.Tensor:
    """``resamples`` bootstrap draws of ``n`` images as counts, float64 [resamples, n] (CPU); the
    same (n, resamples, seed, stream) give the same draws, so two samples can share them."""
    g = torch.Generator().manual_seed(quality._stream_seed(seed, stream))
    counts = torch.zeros(resamples, n, dtype=torch.float64)
    for b in range(0, resamples, max(1, _CELLS // n)):
        idx = torch.randint(n, (min(resamples, b + max(1, _CELLS // n)) - b, n), generator=g)
        counts[b : b + len(idx)].scatter_add_(1, idx, torch.ones(idx.shape, dtype=torch.float64))
    return counts


def interval(
    estimate: float, replicates: torch.Tensor, rule: str, level: float = INTERVAL_LEVEL
) -> tuple[float, float]:
    """The ``level`` interval of one metric from its estimate and resampled values, by ``rule``
    (:data:`BASIC` or :data:`CENTRED`; see the module docstring); NaN replicates are dropped."""
    reps = replicates.double()
    reps = reps[torch.isfinite(reps)]
    if not len(reps) or not math.isfinite(estimate):
        return math.nan, math.nan
    alpha = (1.0 - level) / 2.0
    q_lo, q_hi = (float(v) for v in torch.quantile(reps, torch.tensor([alpha, 1.0 - alpha], dtype=reps.dtype)))
    if rule == BASIC:
        return 2 * estimate - q_hi, 2 * estimate - q_lo
    if rule == CENTRED:
        shift = estimate - float(reps.mean())
        return q_lo + shift, q_hi + shift
    raise ValueError(f"rule={rule!r}: use {BASIC!r} or {CENTRED!r}")


def _clipped(name: str, lo: float, hi: float) -> tuple[float, float]:
    low, high = RANGES[name]
    return min(max(lo, low), high), max(min(hi, high), low)


def sample_intervals(
    features: torch.Tensor,
    logits: torch.Tensor,
    side: ReferenceSide,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = INTERVAL_LEVEL,
) -> dict:
    """95% intervals of every metric of one sample: {``<metric>_lo``, ``<metric>_hi``} (plain
    floats), centred on the values the counts formulas give for the sample itself (``estimates``)."""
    t = sample_terms(features, logits, side)
    ones = torch.ones(1, t.n, dtype=torch.float64)
    estimates = {name: float(v[0]) for name, v in replicate_metrics(side, t, ones).items()}
    reps = replicate_metrics(side, t, bootstrap_counts(t.n, resamples, side.seed))
    out: dict = {"estimates": estimates}
    for name in METRICS:
        lo, hi = _clipped(name, *interval(estimates[name], reps[name], RULES[name], level))
        out[lo_key(name)], out[hi_key(name)] = lo, hi
    return out


def interval_record(resamples: int, seed: int, level: float = INTERVAL_LEVEL) -> dict:
    """How the intervals of an evaluation were made (stored beside its metrics)."""
    return {"method": METHOD, "resamples": resamples, "level": level, "seed": seed, "rules": dict(RULES)}


# ---------------------------------------------------------------------------------------------
# An evaluation with its intervals


def evaluate_features(
    features: torch.Tensor,
    logits: torch.Tensor,
    reference: quality.Reference | None = None,
    seed: int = 0,
    n_subsets: int = quality.DEFAULT_N_SUBSETS,
    subset_size: int = quality.DEFAULT_SUBSET_SIZE,
    resamples: int = DEFAULT_RESAMPLES,
    precision: dict | None = None,
) -> dict:
    """:func:`trainables.scoring.quality.point_metrics_of_features` plus the 95% interval of every metric
    (``<metric>_lo``, ``<metric>_hi``: :func:`sample_intervals` with ``resamples`` draws) and how
    they were made (``intervals``, :func:`interval_record`). The intervals are no part of the
    protocol: they change no value. ``resamples`` = 0 adds nothing."""
    if resamples < 0:
        raise ValueError(f"resamples={resamples}: must be >= 0 (0 for no intervals)")
    device = str(features.device)
    ref = reference if reference is not None else quality.mnist_test_reference(device)
    metrics = quality.point_metrics_of_features(features, logits, ref, seed, n_subsets, subset_size, precision)
    if resamples:
        side = reference_side(len(features), seed, ref, device, n_subsets, subset_size)
        bounds = sample_intervals(features, logits, side, resamples)
        bounds.pop("estimates")
        metrics.update(bounds)
        metrics[INTERVALS] = interval_record(resamples, seed)
    return metrics


def evaluate(
    images: torch.Tensor,
    n_subsets: int = quality.DEFAULT_N_SUBSETS,
    subset_size: int = quality.DEFAULT_SUBSET_SIZE,
    seed: int = 0,
    device: str = "cpu",
    reference: quality.Reference | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    precision: dict | None = None,
) -> dict:
    """Score samples as :func:`trainables.scoring.quality.point_metrics` does (same arguments, same values),
    with the 95% intervals of :func:`evaluate_features`. What every trial reports."""
    quality.check_images(images)
    features, logits = quality.embed(images, str(device))
    return evaluate_features(features, logits, reference, seed, n_subsets, subset_size, resamples, precision)
