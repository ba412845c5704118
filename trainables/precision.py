"""How much reduced precision moves the score and the loss, per noise level.

Two trainers built from one config and seed hold the same weights; one computes in fp32, the
other under an amp design (``amp: bf16`` with its ``amp_min_sigma``). On the same clean images x,
noise z and level i (sigma_i), with x~ = x + sigma_i z:

- ``score_err``: ||s_amp(x~, i) - s_fp32(x~, i)|| / ||s_fp32(x~, i) - s_fp32(x, i)||, the score
  error relative to the network's response to the noise (what the sampler and the loss use);
- ``ideal_err``: sigma_i ||s_amp - s_fp32|| / ||z||, the same error in units of the ideal
  response ||z|| / sigma_i (the DSM target's size; a trained network's response is close to it);
- ``loss_err``: |L_amp - L_fp32| / L_fp32 of the DSM loss of level i, L = mean over the batch of
  1/2 ||sigma_i s(x~, i) + z||^2 (anneal power 2).

:data:`SCORE_BOUND` and :data:`LOSS_BOUND` are the bounds the chosen design holds at every level
down to sigma 0.005 on an untrained network (the worst case: its response to noise is weak,
so the same rounding is a larger part of it; a partly trained ngf-16 network measured 1.1% at
sigma 0.09 where an untrained one measures 4-10%). tests/trainables/test_precision.py holds the
default design to them on CPU; the GPU check (trainables/gpu_check.py) on CUDA.

    python -m trainables.precision                 # the table on this machine's CPU, ngf 16
    python -m trainables.precision --ngf 64 --device cuda
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

import torch

from trainables.loss import dequantize
from trainables.sigmas import geometric_sigmas
from trainables.train import TrainConfig, Trainer

# The table's ladder: 1 down to 0.005 (the smallest sigma a ladder here uses), 12 levels.
TABLE_LADDER = (1.0, 0.005, 12)
SCORE_BOUND = 0.10  # score error / the network's noise response, at every level
LOSS_BOUND = 0.01  # relative DSM loss difference, at every level


def level_errors(
    amp_trainer: Trainer, fp32_trainer: Trainer, images: torch.Tensor, seed: int = 0
) -> list[dict[str, float]]:
    """Per level of the trainers' (equal) ladder: sigma, bf16 (whether the amp design runs the
    level in bf16), score_err, ideal_err, loss_err (module docstring). ``images``: uint8
    [N, 1, H, W] at the trainers' image size; the noise is drawn with ``seed``."""
    device = fp32_trainer.device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = dequantize(images.to(torch.uint8), generator=gen).to(device)
    z = torch.randn(x.shape, generator=gen).to(device)
    amp_score, ref_score = amp_trainer.score_fn(use_ema=False), fp32_trainer.score_fn(use_ema=False)
    rows = []
    with torch.inference_mode():
        for i, sigma in enumerate(fp32_trainer.sigmas.tolist()):
            idx = torch.full((x.shape[0],), i, dtype=torch.long, device=device)
            noisy = x + sigma * z
            ref = ref_score.at_level(i)(noisy, idx)
            clean = ref_score.at_level(i)(x, idx)
            amp = amp_score.at_level(i)(noisy, idx)
            diff = (amp - ref).norm()
            loss_ref = 0.5 * (sigma * ref + z).square().flatten(1).sum(1).mean()
            loss_amp = 0.5 * (sigma * amp + z).square().flatten(1).sum(1).mean()
            rows.append(
                {
                    "sigma": sigma,
                    "bf16": i < amp_trainer.bf16_levels,
                    "score_err": float(diff / (ref - clean).norm()),
                    "ideal_err": float(sigma * diff / z.norm()),
                    "loss_err": float((loss_amp - loss_ref).abs() / loss_ref),
                }
            )
    return rows


def trainer_pair(
    ngf: int, device: str, amp_min_sigma: float, ladder: Sequence = TABLE_LADDER, seed: int = 0, **extra
) -> tuple[Trainer, Trainer]:
    """(amp trainer, fp32 trainer): one config and seed, so the same weights; eager and without
    CUDA graphs unless ``extra`` (given to both configs) says otherwise: this compares arithmetic."""
    sigma_begin, sigma_end, levels = ladder
    base = dict(ngf=ngf, num_levels=levels, sigma_begin=sigma_begin, sigma_end=sigma_end, seed=seed, device=device)
    extra = {"compile": "off", "cuda_graphs": "off", **extra}
    placeholder = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    amp = Trainer(TrainConfig(**base, amp="bf16", amp_min_sigma=amp_min_sigma, **extra), placeholder)
    fp32 = Trainer(TrainConfig(**base, amp="off", **extra), placeholder)
    return amp, fp32


def error_table(
    images: torch.Tensor, ngf: int = 16, device: str = "cpu", designs: Sequence[float] | None = None, seed: int = 0
) -> dict[float, list[dict]]:
    """{amp_min_sigma: level_errors(...)} for each design (default: plain bf16 at every level,
    amp_min_sigma 0, and the default design), on the table's ladder."""
    from trainables.params import SETTINGS

    designs = designs if designs is not None else (0.0, SETTINGS["amp_min_sigma"].default)
    out = {}
    for design in designs:
        amp, fp32 = trainer_pair(ngf, device, design, seed=seed)
        out[design] = level_errors(amp, fp32, images, seed=seed)
    return out


def within_bounds(rows: list[dict]) -> bool:
    return all(r["score_err"] <= SCORE_BOUND and r["loss_err"] <= LOSS_BOUND for r in rows)


def format_table(table: dict[float, list[dict]]) -> str:
    """One row per level, per design: score error / noise response, / ideal response, loss error."""
    designs = list(table)
    head = f"{'sigma':>8s}" + "".join(f" | {'amp_min_sigma ' + format(d, 'g'):^30s}" for d in designs)
    sub = f"{'':8s}" + "".join(f" | {'prec':>4s} {'score':>7s} {'ideal':>7s} {'loss':>7s}" for _ in designs)
    lines = [head, sub, "-" * len(sub)]
    for k in range(len(table[designs[0]])):
        row = f"{table[designs[0]][k]['sigma']:8.4g}"
        for d in designs:
            r = table[d][k]
            prec = "bf16" if r["bf16"] else "fp32"
            row += f" | {prec:>4s} {r['score_err']:7.2%} {r['ideal_err']:7.2%} {r['loss_err']:7.2%}"
        lines.append(row)
    verdicts = ", ".join(f"{d:g}: {'within' if within_bounds(table[d]) else 'OUTSIDE'}" for d in designs)
    lines.append(
        f"score: error / the network's noise response; ideal: / ||z||/sigma; loss: DSM loss of the level. "
        f"Bounds {SCORE_BOUND:.0%} (score) and {LOSS_BOUND:.0%} (loss) at every level: {verdicts}"
    )
    return "\n".join(lines)


def table_images(n: int = 16) -> torch.Tensor:
    """The first ``n`` MNIST training images (uint8 [n, 1, 28, 28])."""
    from trainables.data import load_mnist

    images, _ = load_mnist(train=True)
    return images[:n]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ngf", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    # one thread: small batches, and on a shared machine spinning OpenMP threads cost 10x
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(args.seed)
    ladder = geometric_sigmas(*TABLE_LADDER).tolist()
    assert math.isclose(ladder[-1], 0.005, rel_tol=1e-6)
    table = error_table(table_images(args.images), ngf=args.ngf, device=args.device, seed=args.seed)
    print(f"bf16 vs fp32, same weights and inputs, untrained ngf={args.ngf} network on {args.device}:")
    print(format_table(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
