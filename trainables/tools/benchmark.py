"""Training and sampling throughput of this project's NCSN code against the seed-style baseline.

Both sides run the same network (CondRefineNetDilated: same architecture, same parameters, same
initial weights; the report gives the relative difference of their scores), batch size, noise
ladder and device. They differ in how the work is written and fed:

- baseline (:mod:`trainables.tools.baseline`, the seed's code and habits): the network's norm and
  activation computed as the seed wrote them, fp32 eager, contiguous tensors, a torchvision-style
  Dataset behind a DataLoader with 2 workers, a ``.item()`` log line per step; sampling under
  ``torch.no_grad`` with per-step ``.item()`` logging;
- optimized (:class:`trainables.ncsn.train.Trainer` + :func:`trainables.ncsn.langevin.anneal_langevin`):
  the dataset as one uint8 tensor on the device, batches by indexing, no host sync per step, the
  trainer's memory format / autocast / fused-Adam / compile settings, sampling under
  ``torch.inference_mode``.

``variants`` adds rows that split the gain (the seed loop around this project's network code,
the other memory format); ``bf16`` adds amp bf16 (bf16 autocast for the levels with sigma >= 0.1,
fp32 below: the design CPUs with native bf16 could use; trainables/ncsn/arithmetic.py). Repeats
alternate the contenders, so a shared machine's load hits all alike; the table shows medians and
the ratio to the baseline. Training is reported in iterations/s, sampling in network evaluations x images / s.

:func:`run_benchmark` measures and returns the report (a JSON-ready dict), :func:`format_table`
renders it; ``platform/benchmark.py`` is the command line.
"""

from __future__ import annotations

import os
import statistics
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from trainables.contract.data import load_mnist
from trainables.ncsn.langevin import anneal_langevin
from trainables.ncsn.model import CondRefineNetDilated
from trainables.ncsn.timing import timed
from trainables.ncsn.train import TrainConfig, Trainer, resolve_device
from trainables.tools.baseline import SeedLoop, score_rel_diff, seed_network
from trainables.tools.op_census import format_guards, step_guards

# Row names of the table.
BASELINE = "baseline (seed code)"
OPTIMIZED = "optimized"
SEED_LOOP_OUR_NETWORK = "seed loop + this network"
BF16 = "optimized + amp bf16"

# What is measured per repeat: training iterations/s and its CPU seconds per iteration, sampling
# evaluations x images / s and its CPU milliseconds per evaluation x image.
MEASURES = ("train", "sample", "train_cpu", "sample_cpu")
# Each row of the report's "results": the per-repeat lists, the medians, the ratios to the baseline.
RESULT_KEYS = (
    "train_iters_per_s",
    "sample_evals_images_per_s",
    "train_cpu_s_per_iter",
    "sample_cpu_ms_per_eval_image",
    *(f"{m}_median" for m in MEASURES),
    "train_ratio",
    "sample_ratio",
    "train_cpu_ratio",
    "sample_cpu_ratio",
)


@dataclass(frozen=True)
class BenchmarkSettings:
    """What to measure: network width, batch, levels, device, repeats, training iterations and
    Langevin steps per level per repeat, the step, torch CPU threads (0: torch's default),
    torch.compile in the optimized path, and the extra rows."""

    ngf: int = 32
    batch: int = 64
    num_levels: int = 10
    device: str = "auto"
    repeats: int = 3
    iters: int = 5
    n_steps_each: int = 1
    step_lr: float = 2e-5
    threads: int = 0
    compile: bool = False
    variants: bool = False
    bf16: bool = False
    image_size: int = 28


class FastLoop:
    """This project's path: trainables.ncsn.train.Trainer and trainables.ncsn.langevin.anneal_langevin."""

    def __init__(self, cfg: TrainConfig, images: torch.Tensor):
        self.trainer = Trainer(cfg, images)
        self.sigmas = self.trainer.sigmas

    def train(self, n_iters: int) -> None:
        self.trainer.train(n_iters)

    def sample(self, x, step_lr, n_steps_each, levels=None):
        g = torch.Generator(device=x.device).manual_seed(0)
        chosen = None if levels is None else list(range(levels))
        return anneal_langevin(
            self.trainer.score_fn(use_ema=False), x, self.sigmas, step_lr, n_steps_each, generator=g, levels=chosen
        ).samples


# ------------------------------------------------------------------------------------- timing
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


# ------------------------------------------------------------------------------------- report
def summarize(rows: dict[str, dict[str, list[float]]], baseline: str = BASELINE) -> dict[str, dict]:
    """The report's "results" from the per-repeat measurements ``{row: {measure: [values]}}``
    (measures as in :data:`MEASURES`): per row the lists, their medians and the ratios to the
    ``baseline`` row (> 1: better than the baseline, for speeds and CPU costs alike)."""
    table = {}
    for name, measured in rows.items():
        table[name] = {
            "train_iters_per_s": measured["train"],
            "sample_evals_images_per_s": measured["sample"],
            "train_cpu_s_per_iter": measured["train_cpu"],
            "sample_cpu_ms_per_eval_image": measured["sample_cpu"],
            **{f"{k}_median": statistics.median(measured[k]) for k in MEASURES},
        }
    base = table[baseline]
    for entry in table.values():
        entry["train_ratio"] = entry["train_median"] / base["train_median"]
        entry["sample_ratio"] = entry["sample_median"] / base["sample_median"]
        entry["train_cpu_ratio"] = base["train_cpu_median"] / entry["train_cpu_median"]
        entry["sample_cpu_ratio"] = base["sample_cpu_median"] / entry["sample_cpu_median"]
    return table


def run_benchmark(settings: BenchmarkSettings, images: torch.Tensor | None = None, progress=sys.stderr) -> dict:
    """Time every contender ``settings.repeats`` times; return the report (a JSON-ready dict with
    "settings", "machine", "optimized_settings", "seed_vs_optimized_score_rel_diff" and
    "results", the latter from :func:`summarize`).

    ``images``: uint8 [N, 1, 28, 28] training images (default: all of MNIST). One line per
    repeat and contender goes to ``progress`` (None: silent). ``ValueError`` for a device that
    is not available.
    """
    s = settings
    device = resolve_device(s.device)
    if s.threads:
        torch.set_num_threads(s.threads)
    if images is None:
        images, _ = load_mnist(train=True)
    cfg = TrainConfig(
        ngf=s.ngf,
        batch_size=s.batch,
        num_levels=s.num_levels,
        sigma_begin=1.0,
        sigma_end=0.01,
        seed=0,
        device=str(device),
        compile=s.compile,
        image_size=s.image_size,
    )
    log: list[str] = []

    def fast(**overrides):
        return FastLoop(TrainConfig(**{**cfg.to_dict(), **overrides}), images)

    optimized = fast()

    def seed(network):
        network.load_state_dict(optimized.trainer.model.state_dict())  # the same initial weights
        return SeedLoop(network, cfg, images, device, log)

    contenders = {BASELINE: seed(seed_network(cfg.ngf, cfg.num_levels, cfg.image_size)), OPTIMIZED: optimized}
    # name -> (training iterations, sampler levels) per repeat; the slow extra rows do less work.
    work = {name: (s.iters, s.num_levels) for name in contenders}
    if s.variants:
        contenders[SEED_LOOP_OUR_NETWORK] = seed(CondRefineNetDilated(cfg.ngf, cfg.num_levels, 1, cfg.image_size))
        other = not cfg.channels_last
        contenders[f"optimized, channels_last={other}"] = fast(channels_last=other)
        work.update({name: (s.iters, s.num_levels) for name in list(contenders)[2:]})
    if s.bf16 and not (device.type == "cuda" and contenders[OPTIMIZED].trainer.runtime.amp == "bf16"):
        contenders[BF16] = fast(amp="bf16", amp_min_sigma=0.1)
        # Emulated bf16 on a CPU without AVX512-BF16/AMX is very slow: one repeat of little work.
        work[BF16] = (1, 1)
    shape = (s.batch, 1, cfg.image_size, cfg.image_size)
    x = torch.rand(shape, device=device)
    levels = torch.arange(shape[0], device=device) % len(optimized.sigmas)
    agreement = score_rel_diff(contenders[BASELINE].model, optimized.trainer.score_fn(use_ema=False), x, levels)
    n_evals = s.num_levels * s.n_steps_each

    for loop in contenders.values():  # warm-up: workers, allocator, oneDNN primitives, compilation
        loop.train(2)  # a trainer's first steps (compilation, autotuning) are its warm-up
        loop.sample(torch.rand(shape, device=device), s.step_lr, 1, levels=1)

    rows = {name: {k: [] for k in MEASURES} for name in contenders}
    for r in range(s.repeats):
        for name, loop in contenders.items():
            if name == BF16 and r > 0:
                continue
            iters, n_levels = work[name]
            images_evals = n_levels * s.n_steps_each * s.batch
            wall, cpu = timed(partial(loop.train, iters), device)
            rows[name]["train"].append(iters / wall)
            rows[name]["train_cpu"].append(cpu / iters)
            x0 = torch.rand(shape, device=device)
            wall, cpu = timed(partial(loop.sample, x0, s.step_lr, s.n_steps_each, levels=n_levels), device)
            rows[name]["sample"].append(images_evals / wall)
            rows[name]["sample_cpu"].append(cpu / images_evals * 1e3)
            if progress is not None:
                print(
                    f"repeat {r + 1}/{s.repeats}: {name}: {rows[name]['train'][-1]:.3f} it/s, "
                    f"{rows[name]['sample'][-1]:.1f} evals*img/s",
                    file=progress,
                    flush=True,
                )

    trainer = optimized.trainer
    return {
        "settings": {
            "ngf": s.ngf,
            "batch": s.batch,
            "num_levels": s.num_levels,
            "iters": s.iters,
            "n_steps_each": s.n_steps_each,
            "evals_per_sample_run": n_evals,
            "repeats": s.repeats,
            "step_lr": s.step_lr,
        },
        "machine": {
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
            # Spinning OpenMP threads collapse on an oversubscribed machine: record the policy.
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", ""),
            "torch": torch.__version__,
        },
        "optimized_settings": {
            "channels_last": trainer.channels_last,
            "amp": trainer.runtime.amp,
            "compile": trainer.config.compile,
            "adam": "fused",
        },
        "seed_vs_optimized_score_rel_diff": agreement,
        "results": summarize(rows),
        # what a GPU step asks of the device, counted here (trainables/tools/op_census.py)
        "guards": step_guards(min(s.ngf, 16), min(s.batch, 8), s.num_levels),
    }


def format_table(report: dict) -> str:
    """The report as the text table the command line prints (medians, ratios to the baseline)."""
    s, m = report["settings"], report["machine"]
    lines = [
        f"NCSN benchmark: ngf={s['ngf']} batch={s['batch']} L={s['num_levels']} on {m['device']} "
        f"({m['device_name'] or m['cpu_capability']}, {m['cpu_capability']}, {m['threads']} threads), "
        f"medians of {s['repeats']} repeats",
        f"optimized path: {report['optimized_settings']}; seed vs optimized scores differ by "
        f"{report['seed_vs_optimized_score_rel_diff']:.1e} (relative L2)",
    ]
    header = (
        f"{'code':32s} {'train it/s':>10s} {'x base':>6s} {'CPU-s/it':>8s} {'x base':>6s}   "
        f"{'sample evals*img/s':>18s} {'x base':>6s} {'CPU-ms':>6s} {'x base':>6s}"
    )
    lines += [header, "-" * len(header)]
    for name, e in report["results"].items():
        lines.append(
            f"{name:32s} {e['train_median']:10.3f} {e['train_ratio']:6.2f} {e['train_cpu_median']:8.2f} "
            f"{e['train_cpu_ratio']:6.2f}   {e['sample_median']:18.1f} {e['sample_ratio']:6.2f} "
            f"{e['sample_cpu_median']:6.2f} {e['sample_cpu_ratio']:6.2f}"
        )
    lines.append(
        "x base: speed relative to the baseline (wall clock; CPU: this process's CPU time, which "
        "leaves out the baseline's DataLoader workers)"
    )
    if "guards" in report:
        lines += ["", format_guards(report["guards"])]
    return "\n".join(lines)
