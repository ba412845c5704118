"""Known answers of the quality metrics and their intervals, and the command line that prints them.

    python -m trainables.tools.known_answers --quality      # calibration table: real digits and degraded ones
    python -m trainables.tools.known_answers --benchmark    # time one evaluation, with and without intervals
    python -m trainables.tools.known_answers --intervals    # real MNIST: ties, a mild blur, FID_inf
    python -m trainables.tools.known_answers --simulation   # coverage of the intervals where the truth is known

The cases are real MNIST digits (the training set, disjoint from the test-set reference) and
degraded ones, and a Gaussian simulation whose truths are known in closed form; the tests
(tests/trainables/test_quality.py, tests/trainables/test_intervals.py) assert the same facts.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from trainables.contract.metrics import METRICS, hi_key, lo_key
from trainables.scoring import intervals, quality
from trainables.scoring.compare import compare_samples, fid_infinity
from trainables.scoring.feature_net import NUM_CLASSES
from trainables.scoring.intervals import (
    ReferenceSide,
    reference_side,
    replicate_metrics,
    sample_intervals,
    sample_terms,
)

# ---------------------------------------------------------------------------------------------
# Real digits and degraded ones


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur [N, 1, 28, 28] with a Gaussian of ``sigma`` pixels (zero padding); stays in [0, 1]."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=images.dtype)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    out = F.conv2d(images, g.view(1, 1, 1, -1), padding=(0, radius))
    return F.conv2d(out, g.view(1, 1, -1, 1), padding=(radius, 0))


def known_answer_cases(n: int = 1000, seed: int = 0) -> dict[str, torch.Tensor]:
    """Calibration sets of ``n`` images each, drawn from the MNIST training set (disjoint from the
    test-set reference): ``real`` digits, uniform ``noise``, ``blurred`` digits (sigma 1.5 px), one
    ``repeated`` digit, and digits of ``one_class`` (all 1s)."""
    from trainables.contract.data import load_mnist

    images, labels = load_mnist(train=True)
    x = images.float() / 255.0
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(x), generator=gen)[:n]
    ones = torch.nonzero(labels == 1).squeeze(1)
    return {
        "real": x[pick],
        "noise": torch.rand(n, 1, 28, 28, generator=gen),
        "blurred": gaussian_blur(x[pick], 1.5).clamp(0, 1),
        "repeated": x[pick[:1]].expand(n, -1, -1, -1).clone(),
        "one_class": x[ones[torch.randperm(len(ones), generator=gen)[:n]]],
    }


_TABLE_KEYS = (
    "fid",
    "kid",
    "kid_std",
    "inception_score",
    "precision",
    "recall",
    "density",
    "coverage",
    "class_coverage",
)


def _print_table(rows: dict[str, dict]) -> None:
    print(f"{'case':<12}" + "".join(f"{k:>16}" for k in _TABLE_KEYS))
    for name, r in rows.items():
        print(f"{name:<12}" + "".join(f"{r[k]:>16.5g}" for k in _TABLE_KEYS))


# ---------------------------------------------------------------------------------------------
# Intervals: a simulation whose truth is known, and real MNIST


def _gaussian_moments(mu: torch.Tensor, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E[x x'] and E[x_i x_j x_k] of N(mu, cov)."""
    third = (
        torch.einsum("i,j,k->ijk", mu, mu, mu)
        + torch.einsum("i,jk->ijk", mu, cov)
        + torch.einsum("j,ik->ijk", mu, cov)
        + torch.einsum("k,ij->ijk", mu, cov)
    )
    return cov + torch.outer(mu, mu), third


SIMULATION_DIM = 16


def _simulated(count: int, gen: torch.Generator, mixing: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` draws of the simulation's features N(mu, diag(s^2)) and their logits."""
    mu = torch.zeros(SIMULATION_DIM, dtype=torch.float64)
    mu[:2] = torch.tensor([0.6, -0.3], dtype=torch.float64)
    scale = torch.linspace(1.6, 2.4, SIMULATION_DIM, dtype=torch.float64)
    x = (torch.randn(count, SIMULATION_DIM, generator=gen, dtype=torch.float64) * scale + mu).float()
    return x, x @ mixing


@functools.lru_cache(maxsize=2)
def simulation_setup(n: int = 200) -> tuple[ReferenceSide, quality.Reference, torch.Tensor, dict]:
    """The simulation of :func:`gaussian_simulation` for samples of ``n``: (its reference side,
    reference, logit map, the truth of every metric)."""
    d = SIMULATION_DIM
    g = torch.Generator().manual_seed(1)
    ref = quality.Reference.from_features(torch.randn(3000, d, generator=g) * 2.0, "simulation")
    mixing = torch.randn(d, 10, generator=g)
    mu = torch.zeros(d, dtype=torch.float64)
    mu[:2] = torch.tensor([0.6, -0.3], dtype=torch.float64)
    cov = torch.diag(torch.linspace(1.6, 2.4, d, dtype=torch.float64) ** 2)
    side = reference_side(n, 0, ref, "cpu", n_subsets=50, subset_size=n)
    second, third = _gaussian_moments(mu, cov)
    e_xx = float((third * third).sum() / d**3 + 3 * torch.trace(second @ second) / d**2 + 3 * mu @ mu / d + 1)
    y = side.kid_points.double()
    mean_u, var_u = y @ mu / d + 1, torch.einsum("ji,ik,jk->j", y, cov, y) / d**2
    e_xy = float((side.kid_weights * (mean_u**3 + 3 * mean_u * var_u)).sum())
    truth = {"fid": quality.frechet_distance(mu, cov, ref.mean, ref.cov), "kid": e_xx + side.kid_yy - 2 * e_xy}
    x, logits = _simulated(100_000, torch.Generator().manual_seed(2), mixing)
    dist = torch.cat([torch.cdist(x[i : i + 20_000], side.real) for i in range(0, len(x), 20_000)])
    truth["precision"] = float((dist <= side.r_pr).any(1).double().mean())
    truth["density"] = float((dist <= side.r_dc).sum(1).double().mean() / quality.DC_K)
    log_p = torch.log_softmax(logits.double(), 1)
    p_mean = log_p.exp().mean(0)
    truth["inception_score"] = math.exp(float((log_p.exp() * (log_p - p_mean.log())).sum(1).mean()))
    hist = torch.bincount(logits.argmax(1), minlength=NUM_CLASSES).double() / len(logits)
    truth["class_coverage"] = float(-(hist[hist > 0] * hist[hist > 0].log()).sum() / math.log(NUM_CLASSES))
    ones = torch.ones(1, n, dtype=torch.float64)
    at_n = {"recall": 0.0, "coverage": 0.0}
    extra = torch.Generator().manual_seed(3)
    for _ in range(200):
        values = replicate_metrics(side, sample_terms(*_simulated(n, extra, mixing), side), ones)
        for name in at_n:
            at_n[name] += float(values[name][0]) / 200
    truth.update(at_n)
    return side, ref, mixing, truth


def gaussian_simulation(repeats: int = 200, n: int = 200, resamples: int = 250, seed: int = 4) -> dict:
    """How often the 95% intervals cover the truth, where the truth is known.

    Features N(mu, diag(s^2)) in 16-d against a fixed reference of 3,000 N(0, 4 I) points, logits a
    fixed linear map of them. Truths (:func:`simulation_setup`): FID in closed form (the reference
    statistics are fixed); KID in closed form from the Gaussian's moments (E (u + 1)^3 for
    u = x.y / d: third moments for E k(x, x'), a Gaussian u for each reference point in E k(x, y));
    precision, density, Inception Score and class coverage from 100,000 draws; recall and coverage,
    defined at the sample count, as their mean over 200 samples of n. Returns {"coverage",
    "truth", "width" (mean interval width), "mean_estimate" and "sd_estimate" (of the samples'
    values), "n", "repeats"}.
    """
    side, _, mixing, truth = simulation_setup(n)
    covered, width = dict.fromkeys(METRICS, 0), dict.fromkeys(METRICS, 0.0)
    values: dict[str, list[float]] = {name: [] for name in METRICS}
    gen = torch.Generator().manual_seed(seed)
    for _ in range(repeats):
        bounds = sample_intervals(*_simulated(n, gen, mixing), side, resamples)
        for name in METRICS:
            covered[name] += bounds[lo_key(name)] <= truth[name] <= bounds[hi_key(name)]
            width[name] += (bounds[hi_key(name)] - bounds[lo_key(name)]) / repeats
            values[name].append(bounds["estimates"][name])
    estimates = {name: torch.tensor(v, dtype=torch.float64) for name, v in values.items()}
    return {
        "coverage": {k: v / repeats for k, v in covered.items()},
        "truth": truth,
        "width": width,
        "mean_estimate": {k: float(v.mean()) for k, v in estimates.items()},
        "sd_estimate": {k: float(v.std()) for k, v in estimates.items()},
        "n": n,
        "repeats": repeats,
    }


def mnist_known_answers(resamples: int = 1000, sets: int = 10) -> dict:
    """Known answers on real MNIST, as :func:`compare_samples` calls them.

    The test set's features (cached with the reference statistics) in a random split: a reference
    of 5,000 digits, two disjoint sets of 1,000 (real vs real), and the first set blurred by a
    Gaussian of sigma 0.6 px (paired with it). FID_inf against plain FID: ``sets`` disjoint sets of
    500 training digits against the test reference.
    """
    from trainables.contract.data import load_mnist

    full = quality.mnist_test_reference("cpu")
    order = torch.randperm(len(full.features), generator=torch.Generator().manual_seed(0))
    feats = full.features[order]
    with torch.no_grad():
        logits = quality._net("cpu").logits_from_features(feats)
    images, _ = load_mnist(train=False)
    blurred = quality.embed(gaussian_blur(images[order[5000:6000]].float() / 255.0, 0.6).clamp(0, 1), "cpu")
    side = reference_side(1000, 0, quality.Reference.from_features(feats[:5000], "mnist-test-random-half"))
    compared = compare_samples(
        {
            "real": [(feats[5000:6000], logits[5000:6000])],
            "other real": [(feats[6000:7000], logits[6000:7000])],
            "blurred 0.6 px": [blurred],
        },
        side,
        "kid",
        resamples=resamples,
        best="real",
    )
    train, _ = load_mnist(train=True)
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))[: 500 * sets]
    train_feats, _ = quality.embed(train[pick].float() / 255.0, "cpu")
    plain, inf = [], []
    for s in range(sets):
        part = train_feats[500 * s : 500 * (s + 1)].double()
        plain.append(quality.frechet_distance(part.mean(0), torch.cov(part.T), full.mean, full.cov))
        inf.append(fid_infinity(part, full, seed=s)["fid_inf"])
    return {"comparisons": compared, "fid_500": plain, "fid_inf": inf}


# ---------------------------------------------------------------------------------------------
# Command line


def _print_table(rows: dict[str, dict]) -> None:
    print(f"{'case':<12}" + "".join(f"{k:>16}" for k in _TABLE_KEYS))
    for name, r in rows.items():
        print(f"{name:<12}" + "".join(f"{r[k]:>16.5g}" for k in _TABLE_KEYS))


def _benchmark(n: int, repeats: int) -> dict:
    images = known_answer_cases(n)["real"]
    start = time.perf_counter()
    quality.mnist_test_reference("cpu")
    quality._net("cpu")
    setup = time.perf_counter() - start
    times: dict[str, list[float]] = {"quality.point_metrics": [], "intervals.evaluate": []}
    for _ in range(repeats):
        for name, fn in (("quality.point_metrics", quality.point_metrics), ("intervals.evaluate", intervals.evaluate)):
            start = time.perf_counter()
            fn(images)
            times[name].append(time.perf_counter() - start)
    print(f"setup (feature net + reference statistics, cached on disk after first run): {setup:.2f} s")
    for name, ts in times.items():
        print(f"{name}({n} images) on {torch.get_num_threads()} threads: " + ", ".join(f"{t:.2f}" for t in ts) + " s")
    return {"n": n, "threads": torch.get_num_threads(), "setup_s": setup, "seconds": times}


def _print_intervals(found: dict) -> None:
    compared = found["comparisons"]
    for name, versus in compared["versus_best"].items():
        print(f"{name} against real digits (N = 1,000, paired bootstrap, {compared['resamples']} draws):")
        for metric, v in versus.items():
            bounds = f"[{v['lo']:+.4g}, {v['hi']:+.4g}]"
            print(f"  {metric:16s} difference {v['difference']:+.4g} {bounds}  {v['verdict']}")
    sets = len(found["fid_500"])
    print(f"real training digits, {sets} sets of 500: plain FID " + ", ".join(f"{v:.2f}" for v in found["fid_500"]))
    print(" " * 40 + "FID_inf " + ", ".join(f"{v:.2f}" for v in found["fid_inf"]))
    print(f"  means: plain {sum(found['fid_500']) / sets:.3f}, FID_inf {sum(found['fid_inf']) / sets:.3f}")


def _print_simulation(sim: dict, repeats: int) -> None:
    print(f"simulation: {repeats} samples of {sim['n']}, coverage of the truth by the 95% intervals:")
    for metric in METRICS:
        print(
            f"  {metric:16s} {sim['coverage'][metric]:.3f}  (truth {sim['truth'][metric]:.4g}, "
            f"mean width {sim['width'][metric]:.3g})"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainables.tools.known_answers", description=__doc__.split("\n")[0])
    p.add_argument("--quality", action="store_true", help="print the calibration table of the metrics")
    p.add_argument("--benchmark", action="store_true", help="time one evaluation of --n real images")
    p.add_argument("--intervals", action="store_true", help="real MNIST: ties, mild blur, FID_inf")
    p.add_argument("--simulation", action="store_true", help="coverage of the intervals where the truth is known")
    p.add_argument("--n", type=int, default=1000, help="images per case of --quality and --benchmark")
    p.add_argument("--repeats", type=int, default=3, help="timed evaluations of --benchmark")
    p.add_argument("--simulation-repeats", type=int, default=200, help="samples of --simulation (default 200)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    if not (args.quality or args.benchmark or args.intervals or args.simulation):
        p.error("give at least one of --quality, --benchmark, --intervals, --simulation")
    if args.n < 6:
        p.error(f"--n={args.n}: must be >= 6")
    if args.repeats < 1:
        p.error(f"--repeats={args.repeats}: must be >= 1")
    if args.simulation_repeats < 10:
        p.error(f"--simulation-repeats={args.simulation_repeats}: must be at least 10")
    out: dict = {}
    if args.quality:
        rows = {name: quality.point_metrics(imgs) for name, imgs in known_answer_cases(args.n).items()}
        _print_table(rows)
        out["quality"] = rows
    if args.benchmark:
        out["benchmark"] = _benchmark(args.n, args.repeats)
    if args.intervals:
        found = mnist_known_answers()
        _print_intervals(found)
        versus = found["comparisons"]["versus_best"]
        out["intervals"] = {"versus_real": versus, **{k: found[k] for k in ("fid_500", "fid_inf")}}
    if args.simulation:
        sim = gaussian_simulation(repeats=args.simulation_repeats)
        _print_simulation(sim, args.simulation_repeats)
        out["simulation"] = sim
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
