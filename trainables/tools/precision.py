"""How much each reduced-precision design moves the score and the loss, per noise level.

One untrained network (fp32 weights) is evaluated in IEEE fp32 and under each design of
:data:`DESIGNS` on the same clean images x, noise z and level i (sigma_i), x~ = x + sigma_i z:

- ``score_err``: ||s_d(x~, i) - s_fp32(x~, i)|| / ||s_fp32(x~, i) - s_fp32(x, i)||, the score
  error relative to the network's response to the noise (what the sampler and the loss use);
- ``ideal_err``: sigma_i ||s_d - s_fp32|| / ||z||, the same error in units of the ideal
  response ||z|| / sigma_i (the DSM target's size; a trained network's response is close to it);
- ``loss_err``: |L_d - L_fp32| / L_fp32 of the DSM loss of level i, L = mean over the batch of
  1/2 ||sigma_i s(x~, i) + z||^2 (anneal power 2).

:data:`SCORE_BOUND` and :data:`LOSS_BOUND` are the bounds the default design holds at every level
down to sigma 0.005 on an untrained network (the worst case: its response to noise is weak, so
the same rounding is a larger part of it; a partly trained ngf-16 network measured 1.1% at sigma
0.09 where an untrained one measures 4-10% under bf16). tests/trainables/test_precision.py holds
the default design to them on CPU; the GPU check (trainables/tools/gpu_check.py) on CUDA.

The designs (trainables/ncsn/arithmetic.py says what each precision computes): bf16 at every level;
bf16 above sigma 0.1 and IEEE fp32 below (the earlier default: two forward passes per training
step); fp16 autocast (every op autocast lists in fp16, the residual stream and norm outputs
included; a table-only candidate); fp16 convolutions with fp32 elementwise work (the default);
TF32 convolutions. A CPU has no TF32: there it is emulated by rounding each convolution's input
and weight to 10 mantissa bits (``tf32``: to nearest; ``tf32-trunc``: towards zero, the
pessimistic reading of what a tensor core does with raw fp32). On CUDA ``tf32`` is the tensor
cores' own and ``tf32-emulated`` the CPU's prediction of it, side by side.

    python -m trainables.tools.precision                 # the table on this machine's CPU, ngf 16
    python -m trainables.tools.precision --ngf 64        # the network a trial trains (minutes on 2 cores)
    python -m trainables.tools.precision --ngf 64 --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from trainables.ncsn import arithmetic
from trainables.ncsn.loss import dequantize
from trainables.ncsn.model import CondRefineNetDilated
from trainables.ncsn.sigmas import geometric_sigmas

# The table's ladder: 1 down to 0.005 (the smallest sigma a ladder here uses), 12 levels.
TABLE_LADDER = (1.0, 0.005, 12)
SCORE_BOUND = 0.10  # score error / the network's noise response, at every level
LOSS_BOUND = 0.01  # relative DSM loss difference, at every level


@dataclass(frozen=True)
class Design:
    """A precision design: ``precision`` for the levels with sigma >= ``min_sigma``, IEEE fp32
    below; ``how`` names a table-only variant ("autocast-fp16", "tf32-emulated", "tf32-trunc")."""

    name: str
    precision: str
    min_sigma: float = 0.0
    how: str | None = None

    def context(self, sigma: float, device_type: str) -> contextlib.AbstractContextManager:
        if sigma < self.min_sigma:
            return contextlib.nullcontext()
        if self.how == "autocast-fp16":
            return torch.autocast(device_type, dtype=torch.float16)
        emulate = self.how in ("tf32-emulated", "tf32-trunc") or (self.precision == "tf32" and device_type != "cuda")
        return arithmetic.computing(
            self.precision, device_type, emulate_tf32=emulate, truncate_tf32=self.how == "tf32-trunc"
        )

    def reduced(self, sigma: float) -> bool:
        return sigma >= self.min_sigma


DEFAULT_DESIGN = Design("fp16", "fp16")
DESIGNS = (
    Design("bf16", "bf16"),
    Design("bf16>=0.1", "bf16", 0.1),
    Design("fp16-autocast", "fp16", how="autocast-fp16"),
    DEFAULT_DESIGN,
    Design("tf32", "tf32"),
    Design("tf32-trunc", "tf32", how="tf32-trunc"),
)
# On CUDA, beside the real TF32: the CPU's prediction of it, computed on the same GPU.
CUDA_EXTRA = (Design("tf32-emulated", "tf32", how="tf32-emulated"),)


def table_network(ngf: int, device: str | torch.device, seed: int = 0) -> CondRefineNetDilated:
    """The untrained network of the table (fp32 weights from ``seed``, eval mode, channels_last)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CondRefineNetDilated(ngf=ngf, num_levels=TABLE_LADDER[2])
    return model.to(device).to(memory_format=torch.channels_last).eval()


def level_errors(
    model: torch.nn.Module, images: torch.Tensor, designs: Sequence[Design] = DESIGNS, seed: int = 0
) -> dict[str, list[dict[str, float]]]:
    """{design name: one row per level of the table's ladder: sigma, reduced (whether the design
    runs the level in its reduced precision), score_err, ideal_err, loss_err (module docstring)}.
    ``images``: uint8 [N, 1, 28, 28]; the noise is drawn with ``seed``."""
    device = next(model.parameters()).device
    sigmas = geometric_sigmas(*TABLE_LADDER).tolist()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = dequantize(images.to(torch.uint8), generator=gen).to(device)
    z = torch.randn(x.shape, generator=gen).to(device)

    def score(inp: torch.Tensor, i: int, ctx: contextlib.AbstractContextManager) -> torch.Tensor:
        idx = torch.full((inp.shape[0],), i, dtype=torch.long, device=device)
        with ctx:
            return model(inp.contiguous(memory_format=torch.channels_last), idx).float()

    def loss(s: torch.Tensor, sigma: float) -> torch.Tensor:
        return 0.5 * (sigma * s + z).square().flatten(1).sum(1).mean()

    rows: dict[str, list[dict[str, float]]] = {d.name: [] for d in designs}
    with torch.inference_mode():
        for i, sigma in enumerate(sigmas):
            noisy = x + sigma * z
            ref = score(noisy, i, contextlib.nullcontext())
            response = (ref - score(x, i, contextlib.nullcontext())).norm()
            for design in designs:
                out = score(noisy, i, design.context(sigma, device.type))
                diff = (out - ref).norm()
                rows[design.name].append(
                    {
                        "sigma": sigma,
                        "reduced": design.reduced(sigma),
                        "score_err": float(diff / response),
                        "ideal_err": float(sigma * diff / z.norm()),
                        "loss_err": float((loss(out, sigma) - loss(ref, sigma)).abs() / loss(ref, sigma)),
                    }
                )
    return rows


def error_table(
    images: torch.Tensor, ngf: int = 16, device: str = "cpu", designs: Sequence[Design] | None = None, seed: int = 0
) -> dict[str, list[dict]]:
    """:func:`level_errors` of ``designs`` (default: :data:`DESIGNS`, plus :data:`CUDA_EXTRA` on
    CUDA) on the table's untrained network of width ``ngf``."""
    if designs is None:
        designs = DESIGNS + (CUDA_EXTRA if torch.device(device).type == "cuda" else ())
    return level_errors(table_network(ngf, device, seed), images, designs, seed=seed)


def within_bounds(rows: list[dict]) -> bool:
    return all(r["score_err"] <= SCORE_BOUND and r["loss_err"] <= LOSS_BOUND for r in rows)


def format_table(table: dict[str, list[dict]]) -> str:
    """One row per level: each design's score error (/ the noise response), then a line per
    design with its worst score error, ideal error and loss error, and its verdict."""
    designs = list(table)
    width = max(9, *(len(d) for d in designs))
    lines = [f"{'sigma':>8s}" + "".join(f" | {d:>{width}s}" for d in designs), "-" * (8 + (width + 3) * len(designs))]
    for k in range(len(table[designs[0]])):
        row = f"{table[designs[0]][k]['sigma']:8.4g}"
        for d in designs:
            r = table[d][k]
            cell = f"{r['score_err']:.2%}" + ("" if r["reduced"] else " fp32")
            row += f" | {cell:>{width}s}"
        lines.append(row)
    lines.append("")
    for d in designs:
        rows = table[d]
        worst = max(rows, key=lambda r: r["score_err"])
        lines.append(
            f"{d:>{width}s}: worst score {worst['score_err']:.2%} at sigma {worst['sigma']:.3g}, "
            f"ideal {max(r['ideal_err'] for r in rows):.3%}, loss {max(r['loss_err'] for r in rows):.3%}: "
            f"{'within' if within_bounds(rows) else 'OUTSIDE'} the bounds"
        )
    lines.append(
        f"score: error / the network's noise response (bound {SCORE_BOUND:.0%} at every level); ideal: / ||z||/sigma; "
        f"loss: DSM loss of the level (bound {LOSS_BOUND:.0%}); 'fp32': the design runs that level in IEEE fp32"
    )
    return "\n".join(lines)


def table_images(n: int = 16) -> torch.Tensor:
    """The first ``n`` MNIST training images (uint8 [n, 1, 28, 28])."""
    from trainables.contract.data import load_mnist

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
    print(f"each design vs IEEE fp32, same weights and inputs, untrained ngf={args.ngf} network on {args.device}:")
    print(format_table(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
