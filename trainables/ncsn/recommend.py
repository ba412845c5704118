"""Recommended NCSN noise and sampler settings, and the published MNIST settings.

:func:`recommend` applies the analytic NCSNv2 techniques (Song & Ermon 2020, section 3;
formulas in :mod:`trainables.ncsn.sigmas`) to a dataset: sigma_1 from the largest pairwise distance
(technique 1), the ladder ratio gamma from the Phi formula (technique 2), the number of levels
that ratio implies, and the code-convention Langevin step eps for a chosen T (technique 4).

    python -m trainables.ncsn.recommend --dataset mnist [--n-steps-each 5] [--target 0.5] [--json]

:data:`NCSN_2019_MNIST` and :func:`ncsnv2_mnist_setting` are plain dicts in the same keys, used
as warm-start trials by the search.
"""

from __future__ import annotations

import argparse
import json
import sys

from trainables.contract.params import defaults
from trainables.ncsn.sigmas import (
    MNIST_MAX_PAIRWISE_DISTANCE,
    ladder_ratio,
    ncsnv2_gamma,
    ncsnv2_num_levels,
    ncsnv2_step_lr,
    snr_of_step,
)

__all__ = ["DATASETS", "NCSN_2019_MNIST", "ncsnv2_mnist_setting", "recommend", "main"]

# Per dataset: sigma_1 (largest pairwise training distance, data units) and D (values per
# example). Only datasets whose sigma_1 was computed here are listed.
DATASETS = {
    "mnist": {"sigma_begin": MNIST_MAX_PAIRWISE_DISTANCE, "dim": 28 * 28},
}
# NCSNv2 keeps the 2019 sigma_L: the smallest noise must be invisible.
SIGMA_END = 0.01

# Song & Ermon 2019, MNIST: the defaults of the parameter table (its step is in the code
# convention: paper eps = 4e-5).
SETTING_KEYS = (
    "sigma_begin",
    "sigma_end",
    "num_levels",
    "step_lr",
    "n_steps_each",
    "batch_size",
    "lr",
    "ema",
    "denoise",
)
NCSN_2019_MNIST = defaults(SETTING_KEYS)


def recommend(dataset: str = "mnist", n_steps_each: int = 5, target: float = 0.5) -> dict:
    """NCSNv2's analytic recommendation for ``dataset`` with T = ``n_steps_each`` steps per level.

    ``target`` is the Phi-formula overlap of technique 2 (paper: about 0.5; released configs
    near 0.567). Returns a dict: ``sigma_begin``, ``sigma_end`` (data units), ``gamma`` (ratio of
    the ladder actually built, after rounding L), ``num_levels``, ``step_lr`` (code convention),
    ``n_steps_each``, ``snr`` (r = sqrt(step_lr / (2 sigma_end^2))) and ``provenance`` (one line).
    Unknown dataset names raise ``ValueError``.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    info = DATASETS[dataset]
    sigma_begin = float(info["sigma_begin"])
    target_gamma = ncsnv2_gamma(info["dim"], target)
    num_levels = ncsnv2_num_levels(sigma_begin, SIGMA_END, target_gamma)
    gamma = ladder_ratio(sigma_begin, SIGMA_END, num_levels)
    step_lr = ncsnv2_step_lr(SIGMA_END, gamma, n_steps_each)
    return {
        "sigma_begin": sigma_begin,
        "sigma_end": SIGMA_END,
        "gamma": gamma,
        "num_levels": num_levels,
        "step_lr": step_lr,
        "n_steps_each": int(n_steps_each),
        "snr": snr_of_step(step_lr, SIGMA_END),
        "provenance": (
            f"NCSNv2 techniques 1, 2, 4 (Song & Ermon 2020) for {dataset}: sigma_1 = largest "
            f"pairwise training distance, gamma from Phi overlap {target:g} with D = {info['dim']} "
            f"(target gamma {target_gamma:.4f}), eps for T = {int(n_steps_each)}, code convention"
        ),
    }


def ncsnv2_mnist_setting(n_steps_each: int = 5, target: float = 0.5) -> dict:
    """The NCSNv2-recommended MNIST setting in the keys of :data:`NCSN_2019_MNIST`.

    Noise ladder and step from :func:`recommend`; EMA 0.999 and the final denoising step
    (techniques 5 and the NCSNv2 sampler); batch 128 and Adam lr 1e-4 as in every released
    NCSNv2 config.
    """
    rec = recommend("mnist", n_steps_each=n_steps_each, target=target)
    return dict(
        sigma_begin=rec["sigma_begin"],
        sigma_end=rec["sigma_end"],
        num_levels=rec["num_levels"],
        step_lr=rec["step_lr"],
        n_steps_each=rec["n_steps_each"],
        batch_size=128,
        lr=1e-4,
        ema=0.999,
        denoise=True,
    )


def _format(rec: dict) -> str:
    lines = [
        f"sigma_begin   {rec['sigma_begin']:.4f}",
        f"sigma_end     {rec['sigma_end']:g}",
        f"num_levels    {rec['num_levels']}",
        f"gamma         {rec['gamma']:.5f}",
        f"n_steps_each  {rec['n_steps_each']}",
        f"step_lr       {rec['step_lr']:.3g}   (code convention; paper eps {2 * rec['step_lr']:.3g})",
        f"snr           {rec['snr']:.3f}",
        f"provenance    {rec['provenance']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainables.ncsn.recommend",
        description="Print the NCSNv2 analytic noise ladder and Langevin step for a dataset.",
    )
    parser.add_argument("--dataset", default="mnist", help=f"one of {sorted(DATASETS)}")
    parser.add_argument("--n-steps-each", type=int, default=5, help="Langevin steps per level T")
    parser.add_argument("--target", type=float, default=0.5, help="technique-2 overlap, about 0.5")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        rec = recommend(args.dataset, n_steps_each=args.n_steps_each, target=args.target)
    except ValueError as err:
        print(f"recommend: {err}", file=sys.stderr)
        return 2
    print(json.dumps(rec, indent=2) if args.json else _format(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
