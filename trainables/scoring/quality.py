"""Sample quality of MNIST images on the features of the fixed feature network.

``point_metrics(images)`` scores a batch of samples against a reference set (by default the 10,000
MNIST test images) and returns FID, KID, the classifier-based Inception Score, precision / recall,
density / coverage and class coverage, with a ``protocol`` record. Numbers are comparable only
under one protocol (same feature network, reference set, N, seed and settings): rank with
``protocol_id(result["protocol"])`` and refuse to mix ids. Metric names and directions live in
:data:`METRICS`.

Formulas (FID in float64; kernels and distances in float32 with float64 sums; each checked in
tests against an independent computation: scipy, torchmetrics, brute force):
- FID: ||mu_s - mu_r||^2 + tr(S_s + S_r - 2 (S_r^1/2 S_s S_r^1/2)^1/2) (Heusel et al. 2017).
- KID: unbiased MMD^2 with kernel k(x, y) = (x.y / d + 1)^3, mean and std over ``n_subsets``
  random subsets of ``subset_size`` points per side (Binkowski et al. 2018).
- Inception Score: exp(E_x KL(p(y|x) || p(y))) with the classifier's softmax, over all N samples
  at once (one split) (Salimans et al. 2016).
- Precision / recall: k-NN manifolds, k = 3 (Kynkaanniemi et al. 2019); density / coverage:
  k = 5 (Naeem et al. 2020). Both sides are subsampled to the same size min(N, reference size),
  since unequal sizes bias the k-NN radii of the smaller side upwards.
- Class coverage: entropy of the predicted-label histogram divided by log(10), in [0, 1].

``python -m trainables.tools.known_answers --quality`` prints the calibration table (real images and
degraded ones); ``--benchmark`` times scoring.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from trainables.contract.metrics import METRICS, MetricInfo, metric_mode, protocol_id, worst_value  # noqa: F401 (re-exported)
from trainables.scoring.feature_net import FEATURE_NET_SHA256, NUM_CLASSES, NUM_FEATURES, load_feature_net

PROTOCOL_VERSION = 1
PR_K = 3  # precision / recall neighbourhood (Kynkaanniemi et al. 2019)
DC_K = 5  # density / coverage neighbourhood (Naeem et al. 2020)
KID_DEGREE = 3
DEFAULT_N_SUBSETS = 100
DEFAULT_SUBSET_SIZE = 1000
_CHUNK = 2048  # rows per block of pairwise distances: bounds memory at N = 10k
CACHE_ENV = "NCSN_QUALITY_CACHE"


# ---------------------------------------------------------------------------------------------
# Reference statistics


@dataclass(frozen=True, eq=False)
class Reference:
    """Features of a reference image set: ``features`` float32 [M, 64], ``mean`` float64 [64],
    ``cov`` float64 [64, 64] (unbiased), and ``sha256`` of the images (float32 bytes in [0, 1]).
    ``cache_name``: when set, derived terms (KID reference terms) are also cached on disk."""

    features: torch.Tensor
    mean: torch.Tensor
    cov: torch.Tensor
    sha256: str
    cache_name: str | None = None

    @classmethod
    def from_features(cls, features: torch.Tensor, sha256: str) -> Reference:
        f64 = features.double()
        return cls(features.float(), f64.mean(0), torch.cov(f64.T), sha256)


def _images_sha256(images: torch.Tensor) -> str:
    return hashlib.sha256(images.detach().float().contiguous().cpu().numpy().tobytes()).hexdigest()


@functools.lru_cache(maxsize=4)
def _net(device: str):
    return load_feature_net(device)


@torch.no_grad()
def embed(images: torch.Tensor, device: str, batch_size: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """Features float32 [N, 64] and logits float32 [N, 10], on ``device``."""
    net = _net(device)
    feats, logits = [], []
    for i in range(0, len(images), batch_size):
        f = net.features(images[i : i + batch_size].to(device, torch.float32))
        feats.append(f)
        logits.append(net.logits_from_features(f))
    return torch.cat(feats), torch.cat(logits)


def reference_from_images(images: torch.Tensor, device: str = "cpu") -> Reference:
    """A :class:`Reference` for float images [M, 1, 28, 28] in [0, 1] (M >= 2), e.g. a held-out half."""
    check_images(images, "reference images")
    features, _ = embed(images, device)
    return Reference.from_features(features, _images_sha256(images))


def cache_dir() -> Path:
    """Folder for cached reference statistics: ``$NCSN_QUALITY_CACHE``, else next to the MNIST cache."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    from trainables.contract.data import default_root

    return default_root().parent / "quality"


def _load_cached(path: Path) -> Reference | None:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        ref = Reference(blob["features"], blob["mean"], blob["cov"], blob["reference_sha256"])
    except (OSError, RuntimeError, KeyError, TypeError, ValueError):
        return None  # unreadable or foreign: recompute
    ok = (
        blob.get("feature_net_sha256") == FEATURE_NET_SHA256
        and ref.features.shape == (10000, NUM_FEATURES)
        and ref.mean.shape == (NUM_FEATURES,)
        and ref.cov.shape == (NUM_FEATURES, NUM_FEATURES)
    )
    return ref if ok else None


@functools.lru_cache(maxsize=4)
def mnist_test_reference(device: str = "cpu") -> Reference:
    """Reference statistics of the 10,000 MNIST test images under the shipped feature network.

    Computed once and cached on disk in :func:`cache_dir` under a name keyed by the feature
    network's SHA-256 (a retrained network never reads stale statistics), and in memory.
    """
    path = cache_dir() / f"mnist-test-{FEATURE_NET_SHA256[:16]}.pt"
    ref = _load_cached(path) if path.is_file() else None
    if ref is None:
        from trainables.contract.data import load_mnist

        images, _ = load_mnist(train=False)
        ref = reference_from_images(images.float() / 255.0, "cpu")
        _save_atomic(
            {
                "features": ref.features.cpu(),
                "mean": ref.mean,
                "cov": ref.cov,
                "reference_sha256": ref.sha256,
                "feature_net_sha256": FEATURE_NET_SHA256,
            },
            path,
        )
    return Reference(ref.features.to(device), ref.mean, ref.cov, ref.sha256, cache_name="mnist-test")


def _save_atomic(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # atomic: concurrent trials never read a half-written file


_KID_TERMS: dict[tuple, torch.Tensor] = {}


def _cached_kid_terms(
    ref: Reference, ref_feats: torch.Tensor, n_sample: int, n_subsets: int, subset_size: int, seed: int
) -> torch.Tensor:
    """:func:`reference_kid_terms` for this evaluation's subsets, kept in memory and, for a
    reference with a ``cache_name``, on disk (they depend only on the reference and the seed)."""
    ref_idx, _ = kid_subsets(n_sample, len(ref_feats), n_subsets, subset_size, seed)
    key = (FEATURE_NET_SHA256, ref.sha256, len(ref_feats), n_subsets, ref_idx.shape[1], seed)
    terms = _KID_TERMS.get(key)
    path = None
    if ref.cache_name is not None:
        path = cache_dir() / f"{ref.cache_name}-{FEATURE_NET_SHA256[:16]}-kid-seed{seed}-{n_subsets}x{key[4]}.pt"
    if terms is None and path is not None and path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob["key"] == repr(key) and blob["terms"].shape == (n_subsets,):
                terms = blob["terms"]
        except (OSError, RuntimeError, KeyError, TypeError, ValueError):
            pass  # unreadable: recompute
    if terms is None:
        terms = reference_kid_terms(ref_feats, ref_idx)
        if path is not None:
            _save_atomic({"key": repr(key), "terms": terms}, path)
    if len(_KID_TERMS) >= 16:
        _KID_TERMS.clear()
    _KID_TERMS[key] = terms
    return terms


# ---------------------------------------------------------------------------------------------
# Metrics on features


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (float64)."""
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """Frechet distance between N(mu1, cov1) and N(mu2, cov2); mu [d], cov [d, d].

    tr((cov1 cov2)^1/2) is taken as tr((A cov1 A)^1/2) with A = cov2^1/2: the same value
    (similar matrices), but symmetric, so eigh is stable even for singular covariances.
    """
    mu1, cov1, mu2, cov2 = (t.double().cpu() for t in (mu1, cov1, mu2, cov2))
    a = _sqrtm_psd(cov2)
    cross = torch.linalg.eigvalsh(a @ cov1 @ a).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2 * cross)


def _poly_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """k(x_i, y_j) = (x_i.y_j / d + 1)^3 for x [m, d], y [n, d] -> [m, n]."""
    k = torch.addmm(x.new_ones(()), x, y.T, alpha=1.0 / x.shape[1])
    return k.mul(k).mul_(k)  # explicit cube: pow_(3) is several times slower on CPU


def _kernel_sum(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum of k(x_i, y_j) over all pairs, float64 (row sums in the input dtype, then float64)."""
    return _poly_kernel(x, y).sum(1).double().sum()


def _offdiag_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of k(x_i, x_j) over pairs i != j of x [m, d], float64."""
    k = _poly_kernel(x, x)
    m = len(x)
    return (k.sum(1).double().sum() - k.diagonal().double().sum()) / (m * (m - 1))


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 between samples x [m, d] and y [n, d] (m, n >= 2), kernel (x.y/d + 1)^3."""
    return _offdiag_mean(x) + _offdiag_mean(y) - 2 * _kernel_sum(x, y) / (len(x) * len(y))


def _stream_seed(seed: int, stream: str) -> int:
    """Independent random streams per use of one user seed (KID subsets, manifold subsets)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{stream}".encode()).digest()[:8], "little") >> 1


def kid_subsets(
    n_sample: int, n_reference: int, n_subsets: int, subset_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index sets for KID: (reference [n_subsets, m], sample [n_subsets, m]) with
    m = min(subset_size, n_sample, n_reference), each row drawn without replacement.

    The reference rows are drawn first, so they depend only on (seed, n_subsets, m, n_reference)
    and their kernel terms can be reused across evaluations.
    """
    m = min(subset_size, n_sample, n_reference)
    g = torch.Generator().manual_seed(_stream_seed(seed, "kid"))
    ref = torch.stack([torch.randperm(n_reference, generator=g)[:m] for _ in range(n_subsets)])
    smp = torch.stack([torch.randperm(n_sample, generator=g)[:m] for _ in range(n_subsets)])
    return ref, smp


def reference_kid_terms(reference: torch.Tensor, ref_idx: torch.Tensor) -> torch.Tensor:
    """The reference part of each subset's MMD^2: mean k(y_i, y_j), i != j, over the rows of
    ``ref_idx`` [n_subsets, m] into ``reference`` [M, d] -> float64 [n_subsets] on the CPU."""
    reference = reference.float()
    return torch.stack([_offdiag_mean(reference[i.to(reference.device)]) for i in ref_idx]).cpu()


def kernel_distance(
    sample: torch.Tensor,
    reference: torch.Tensor,
    n_subsets: int,
    subset_size: int,
    seed: int,
    reference_terms: torch.Tensor | None = None,
) -> tuple[float, float, int]:
    """KID: mean and population std of :func:`mmd2_unbiased` over the :func:`kid_subsets` pairs.

    ``sample`` [N, d], ``reference`` [M, d]; returns (mean, std, m). Kernels are evaluated in the
    features' dtype (float32 in :func:`point_metrics`) and summed in float64. ``reference_terms``:
    :func:`reference_kid_terms` for these subsets, if already known (they depend only on the
    reference and the seed). When m == N every sample subset is the whole sample, so the sample
    term is computed once and the cross term is a mean of per-reference-point sums: the same value
    as the per-subset formula, at the cost of one [M, N] kernel instead of n_subsets [m, m] ones.
    """
    ref_idx, smp_idx = kid_subsets(len(sample), len(reference), n_subsets, subset_size, seed)
    m = ref_idx.shape[1]
    yy = reference_terms if reference_terms is not None else reference_kid_terms(reference, ref_idx)
    if yy.shape != (n_subsets,):
        raise ValueError(f"reference_terms: expected shape [{n_subsets}], got {list(yy.shape)}")
    if m == len(sample):
        xx = _offdiag_mean(sample).cpu().expand(n_subsets)
        ref_sums = torch.cat(
            [_poly_kernel(reference[j : j + _CHUNK], sample).sum(1).double() for j in range(0, len(reference), _CHUNK)]
        ).cpu()
        xy = ref_sums[ref_idx].sum(1) / (m * m)
    else:
        xx = torch.stack([_offdiag_mean(sample[i.to(sample.device)]) for i in smp_idx]).cpu()
        xy = torch.stack(
            [
                _kernel_sum(sample[i.to(sample.device)], reference[j.to(reference.device)])
                for i, j in zip(smp_idx, ref_idx)
            ]
        ).cpu() / (m * m)
    values = xx + yy - 2 * xy
    # population std, as torchmetrics reports it (0 for one subset rather than NaN)
    return values.mean().item(), values.std(correction=0).item(), m


def _nn_radii(x: torch.Tensor, ks: tuple[int, ...]) -> list[torch.Tensor]:
    """For each k in ``ks``, the distance from each row of x [n, d] to its k-th nearest other row."""
    out = []
    for i in range(0, len(x), _CHUNK):
        # the point itself is the smallest (0), so the k-th other neighbour is at sorted index k
        out.append(torch.cdist(x[i : i + _CHUNK], x).topk(max(ks) + 1, dim=1, largest=False).values)
    d = torch.cat(out)
    return [d[:, k] for k in ks]


def manifold_metrics(real: torch.Tensor, fake: torch.Tensor, k_pr: int = PR_K, k_dc: int = DC_K) -> dict:
    """Precision, recall (k = ``k_pr``), density, coverage (k = ``k_dc``) of ``fake`` [n, d] against
    ``real`` [m, d]; needs more than max(k_pr, k_dc) rows on each side.

    A point lies in a k-NN ball if its distance is <= the ball's radius (closed balls, as in
    Kynkaanniemi et al.'s definition). Distances are float32: errors ~1e-6 of a typical radius.
    """
    if min(len(real), len(fake)) <= max(k_pr, k_dc):
        raise ValueError(
            f"manifold metrics need more than {max(k_pr, k_dc)} points per side, "
            f"got {len(real)} real and {len(fake)} fake"
        )
    real, fake = real.float(), fake.float()
    r_pr, r_dc = _nn_radii(real, (k_pr, k_dc))
    (f_pr,) = _nn_radii(fake, (k_pr,))
    in_precision = in_density = 0
    recalled = torch.zeros(len(real), dtype=torch.bool, device=real.device)
    nearest_fake = torch.full((len(real),), math.inf, device=real.device)
    for i in range(0, len(fake), _CHUNK):
        d = torch.cdist(fake[i : i + _CHUNK], real)  # [chunk, m]
        in_precision += (d <= r_pr).any(1).sum().item()
        in_density += (d <= r_dc).sum().item()
        recalled |= (d <= f_pr[i : i + _CHUNK, None]).any(0)
        nearest_fake = torch.minimum(nearest_fake, d.min(0).values)
    return {
        "precision": in_precision / len(fake),
        "recall": recalled.double().mean().item(),
        "density": in_density / (k_dc * len(fake)),
        "coverage": (nearest_fake <= r_dc).double().mean().item(),
    }


def manifold_subsets(n_sample: int, n_reference: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Index sets of the k-NN metrics: (sample [m], reference [m]) with m = min(n_sample,
    n_reference), drawn without replacement. Both sides get the same size: unequal sizes bias the
    smaller side's radii upwards."""
    gen = torch.Generator().manual_seed(_stream_seed(seed, "manifold"))
    m = min(n_sample, n_reference)
    return torch.randperm(n_sample, generator=gen)[:m], torch.randperm(n_reference, generator=gen)[:m]


def inception_score(logits: torch.Tensor) -> float:
    """exp(E_x KL(p(y|x) || p(y))) from classifier logits [N, C], p(y) the mean over the N samples."""
    log_p = F.log_softmax(logits.double(), dim=1)
    log_py = log_p.exp().mean(0).log()
    return math.exp((log_p.exp() * (log_p - log_py)).sum(1).mean().item())


def class_coverage(labels: torch.Tensor, num_classes: int = NUM_CLASSES) -> tuple[float, list[int]]:
    """Entropy of the label histogram / log(num_classes), in [0, 1], and the histogram (counts)."""
    hist = torch.bincount(labels.cpu(), minlength=num_classes)
    p = hist.double() / hist.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    return max(0.0, entropy / math.log(num_classes)), hist.tolist()


# ---------------------------------------------------------------------------------------------
# Evaluation


def check_images(images, name: str = "images") -> None:
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise ValueError(
            f"{name}: expected a float tensor, got {type(images).__name__} {getattr(images, 'dtype', '')}".rstrip()
        )
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28) or len(images) < 2:
        raise ValueError(f"{name}: expected shape [N >= 2, 1, 28, 28], got {list(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError(f"{name}: contains NaN or inf; a diverged trial should report worst_value(metric)")
    lo, hi = images.min().item(), images.max().item()
    if lo < 0 or hi > 1:
        raise ValueError(f"{name}: values must lie in [0, 1], got min {lo:.4g} max {hi:.4g}; clamp samples first")


def point_metrics_of_features(
    features: torch.Tensor,
    logits: torch.Tensor,
    reference: Reference | None = None,
    seed: int = 0,
    n_subsets: int = DEFAULT_N_SUBSETS,
    subset_size: int = DEFAULT_SUBSET_SIZE,
    precision: dict | None = None,
) -> dict:
    """:func:`point_metrics` of images already embedded by :func:`embed` (features [N, 64], logits
    [N, 10], both on the device to score on)."""
    n = len(features)
    if n <= max(PR_K, DC_K):
        raise ValueError(f"images: need more than {max(PR_K, DC_K)} for the k-NN metrics, got N={n}")
    if n_subsets < 1:
        raise ValueError(f"n_subsets={n_subsets}: must be >= 1")
    if subset_size < 2:
        raise ValueError(f"subset_size={subset_size}: must be >= 2")
    device = str(features.device)
    ref = reference if reference is not None else mnist_test_reference(device)
    ref_feats = ref.features.to(device)
    f64 = features.double().cpu()
    fid = frechet_distance(f64.mean(0), torch.cov(f64.T), ref.mean, ref.cov)
    terms = _cached_kid_terms(ref, ref_feats, n, n_subsets, subset_size, seed)
    kid, kid_std, kid_m = kernel_distance(features, ref_feats, n_subsets, subset_size, seed, terms)
    fake_idx, real_idx = manifold_subsets(n, len(ref_feats), seed)
    manifold = manifold_metrics(ref_feats[real_idx.to(device)], features[fake_idx.to(device)])
    coverage_c, hist = class_coverage(logits.argmax(1))
    protocol = {
        "version": PROTOCOL_VERSION,
        "feature_net_sha256": FEATURE_NET_SHA256,
        "feature_dim": NUM_FEATURES,
        "reference_sha256": ref.sha256,
        "reference_n": len(ref_feats),
        "n": n,
        "seed": seed,
        "kid_subsets": n_subsets,
        "kid_subset_size": kid_m,
        "kid_kernel": f"poly{KID_DEGREE}",
        "pr_k": PR_K,
        "dc_k": DC_K,
        "manifold_size": len(fake_idx),
    }
    if precision:
        protocol["precision"] = dict(precision)
    return {
        "fid": fid,
        "kid": kid,
        "kid_std": kid_std,
        "inception_score": inception_score(logits),
        **manifold,
        "class_coverage": coverage_c,
        "class_histogram": hist,
        "protocol": protocol,
        "protocol_id": protocol_id(protocol),
    }


def point_metrics(
    images: torch.Tensor,
    n_subsets: int = DEFAULT_N_SUBSETS,
    subset_size: int = DEFAULT_SUBSET_SIZE,
    seed: int = 0,
    device: str = "cpu",
    reference: Reference | None = None,
    precision: dict | None = None,
) -> dict:
    """The point value of every metric of samples: float images [N, 1, 28, 28] in [0, 1], N >= 6.
    The one public scoring function is :func:`trainables.scoring.intervals.evaluate`, which adds
    the 95% interval of every metric; this is its point half.

    ``reference`` defaults to the MNIST test set (:func:`mnist_test_reference`). KID uses
    ``n_subsets`` subsets of min(``subset_size``, N, reference size) points; the manifold metrics
    use min(N, reference size) points per side, drawn with ``seed``. Returns plain Python values:
    fid, kid, kid_std, inception_score, precision, recall, density, coverage, class_coverage,
    class_histogram (10 counts), protocol (dict) and protocol_id (its :func:`protocol_id`).
    ``precision``: how the samples were computed where that changes them (a run under fp16 amp:
    ``{"amp": "fp16", "amp_min_sigma": 0.0}``, :func:`trainables.ncsn.runtime.protocol_precision`); it
    becomes part of the protocol, so results of different precisions are never ranked together. None (fp32)
    adds nothing: fp32 results keep the ids they always had.
    """
    check_images(images)
    features, logits = embed(images, str(device))
    return point_metrics_of_features(features, logits, reference, seed, n_subsets, subset_size, precision)
