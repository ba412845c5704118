"""What the GPU check (:mod:`trainables.tools.gpu_check`) is made of: the sizes of a run, one outcome,
and the probes it measures with (where a trainer's tensors live, FLOPs of a step, spec-sheet
peaks, a measured matmul rate, steady training and sampling rates, trial processes sharing a GPU).
Torch only, no Ray or Optuna.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainables.ncsn import runtime as rt
from trainables.ncsn.timing import level_pass, synchronize
from trainables.ncsn.train import TrainConfig, Trainer

# Spec-sheet dense bf16 tensor-core peaks (TFLOP/s) by device name fragment, most specific first.
BF16_PEAK_TFLOPS = (
    ("H200", 989.4),
    ("H100 PCIe", 756.5),
    ("H100", 989.4),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
    ("A10", 125.0),
)


@dataclass(frozen=True)
class CheckSizes:
    """The sizes of one run: the network and batch of the training measurements, the sampler
    batch, timed steps and evaluations, trial processes of the packing measurement and how long
    each trains there, and the network of the accuracy table."""

    ngf: int = 64
    batch: int = 128
    num_levels: int = 10
    sample_batch: int = 1000
    train_steps: int = 30
    sample_evals: int = 10
    processes: int = 4
    process_seconds: float = 15.0
    precision_ngf: int = 64
    precision_images: int = 32
    # past this many seconds the remaining measurements are skipped (the checks always run):
    # the whole check must fit in 5 minutes on one H200
    deadline_s: float = 200.0


SMOKE = CheckSizes(
    ngf=8,
    batch=8,
    num_levels=4,
    sample_batch=16,
    train_steps=3,
    sample_evals=2,
    processes=2,
    process_seconds=2.0,
    precision_ngf=8,
    precision_images=8,
)


@dataclass
class Outcome:
    """One check or measurement: ok (None for a measurement, or not applicable here), what it
    found, the seconds it took."""

    name: str
    ok: bool | None
    detail: str
    values: dict = field(default_factory=dict)
    seconds: float = 0.0


def check_images(n: int, seed: int = 0) -> tuple[torch.Tensor, str]:
    """(uint8 [n, 1, 28, 28] images, where they came from): MNIST from the local cache when it is
    there (no download is tried), else deterministic stroke images in MNIST's range (black
    background, strokes near 1), which is what the precision comparison depends on."""
    from trainables.contract.data import load_mnist

    before = os.environ.get("NCSN_MNIST_SOURCES")
    os.environ["NCSN_MNIST_SOURCES"] = "cache"  # a GPU machine may have no network: never download
    try:
        images, _ = load_mnist(train=True)
        return images[:n], "MNIST (local cache)"
    except Exception as err:  # no cache on this machine: synthetic strokes
        reason = type(err).__name__
    finally:
        if before is None:
            os.environ.pop("NCSN_MNIST_SOURCES", None)
        else:
            os.environ["NCSN_MNIST_SOURCES"] = before
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    out = torch.zeros(n, 1, 28, 28)
    for i in range(n):
        for _ in range(3):
            p, q = torch.rand(2, 2, generator=g) * 18 + 5
            d = q - p
            t = (((xx - p[0]) * d[0] + (yy - p[1]) * d[1]) / d.square().sum().clamp(min=1e-6)).clamp(0, 1)
            dist = ((xx - p[0] - t * d[0]).square() + (yy - p[1] - t * d[1]).square()).sqrt()
            out[i, 0] = torch.maximum(out[i, 0], (1.6 - dist).clamp(0, 1))
    return (out * 255).round().to(torch.uint8), f"synthetic strokes (no MNIST cache: {reason})"


def off_device(trainer: Trainer, device: torch.device) -> list[str]:
    """Names of everything of ``trainer`` that is not on ``device`` (empty when all is)."""
    device = torch.device(device)
    found: list[str] = []

    def same(t: torch.Tensor) -> bool:
        return t.device.type == device.type and (device.index is None or t.device.index == device.index)

    def look(prefix: str, tensors) -> None:
        for name, t in tensors:
            if isinstance(t, torch.Tensor) and not same(t):
                found.append(f"{prefix}{name} on {t.device}")

    look("model.", trainer.model.named_parameters())
    look("model.", trainer.model.named_buffers())
    if trainer.ema is not None:
        look("ema.", trainer.ema.module.named_parameters())
        look("ema.", trainer.ema.module.named_buffers())
    for i, state in enumerate(trainer.optimizer.state.values()):
        look(f"optimizer.state[{i}].", state.items())
    look("", [("images", trainer.images), ("sigmas", trainer.sigmas), ("split_weights", trainer._split_weights)])
    if trainer.scaler is not None:
        look("scaler.", [("scale", trainer.scaler._scale)])
    look("accumulator.", [(n, getattr(trainer, n)) for n in ("_loss_sum", "_nonfinite", "_level_sum", "_level_count")])
    if trainer.generator.device.type != device.type:
        found.append(f"generator on {trainer.generator.device}")
    return found


def train_flops(trainer: Trainer) -> int:
    """FLOPs of one training step (forward and backward, as torch.utils.flop_counter counts them)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        trainer.train(1)
    return int(counter.get_total_flops())


def forward_flops(trainer: Trainer, batch: int = 1) -> int:
    """FLOPs of one network forward pass on ``batch`` images."""
    from torch.utils.flop_counter import FlopCounterMode

    size = trainer.config.image_size
    x = torch.rand(batch, 1, size, size, device=trainer.device)
    idx = torch.zeros(batch, dtype=torch.long, device=trainer.device)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        trainer.model(x, idx)
    return int(counter.get_total_flops())


def spec_peak_tflops(name: str) -> float | None:
    for fragment, peak in BF16_PEAK_TFLOPS:
        if fragment in name:
            return peak
    return None


def matmul_tflops(device: torch.device, n: int = 8192, repeats: int = 20) -> float:
    """A measured bf16 matmul rate (TFLOP/s): the yardstick for MFU where no spec sheet is known."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def trainer_for(sizes: CheckSizes, device: str, images: torch.Tensor, **runtime: Any) -> Trainer:
    """A trainer of the measured size: the 2019 ladder (1 -> 0.01), EMA 0.999, the given runtime."""
    cfg = TrainConfig(
        ngf=sizes.ngf,
        batch_size=sizes.batch,
        num_levels=sizes.num_levels,
        sigma_begin=1.0,
        sigma_end=0.01,
        ema=0.999,
        device=device,
        **runtime,
    )
    return Trainer(cfg, images)


def sync_guard(device: torch.device) -> Callable[[], contextlib.AbstractContextManager] | None:
    """The step guard that makes a host sync raise (CUDA), None elsewhere."""
    return (lambda: rt.sync_debug("error")) if device.type == "cuda" else None


def steady_rate(trainer: Trainer, steps: int) -> tuple[float, float]:
    """(steady it/s over ``steps`` steps, seconds of the trainer's warm-up: compilation,
    autotuning, the capture of the step)."""
    warm = trainer.train(trainer._warmup_left + 1)  # the warm-up and a steady step
    return trainer.train(steps)["iters_per_s"], warm["warmup_seconds"]


def sample_rate(score, device: torch.device, batch: int, level: int, evals: int, size: int = 28) -> tuple[float, float]:
    """(network evaluations x images / s at ``level``, seconds of the warm-up of its graph)."""
    seconds, warm = level_pass(score, device, batch, level, evals, size)
    return batch / seconds, warm


def mps_running() -> bool:
    pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")
    return Path(pipe, "control").exists()


# ------------------------------------------------------------------------- packing processes
def run_processes(n: int, device: str, sizes: CheckSizes, cache: str, runtime: dict | None = None) -> list[float]:
    """Training it/s of each of ``n`` processes training at once (this module's ``--worker``):
    each builds a trainer with the device's defaults (``runtime`` overrides some), warms up
    (compile cache ``cache``), waits for the common start and trains for ``sizes.process_seconds``."""
    env = dict(os.environ, **{rt.INDUCTOR_CACHE_ENV: cache})
    go = Path(tempfile.mkdtemp(prefix="ncsn-gpu-check-go-")) / "go"
    spec = json.dumps({"sizes": asdict(sizes), "runtime": runtime or {}})
    args = [sys.executable, "-m", "trainables.tools.gpu_probes", "--worker", device, spec, str(go)]
    # stderr to files: a pipe nobody reads while the workers warm up could fill and block them
    logs = [go.with_name(f"worker{i}.err") for i in range(n)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=env) for log in logs]
    ready = [p.stdout.readline() for p in procs]  # each prints "ready" after its warm-up
    if not all(r.strip() == "ready" for r in ready):
        for p in procs:
            p.kill()
        raise RuntimeError(f"a worker failed before training: {[log.read_text()[-500:] for log in logs]}")
    go.write_text(str(time.time()))  # every worker starts its timed window now
    rates = []
    for p, log in zip(procs, logs):
        out, _ = p.communicate(timeout=sizes.process_seconds * 10 + 120)
        if p.returncode != 0:
            raise RuntimeError(f"worker exited {p.returncode}: {log.read_text()[-500:]}")
        rates.append(float(json.loads(out.strip().splitlines()[-1])["iters_per_s"]))
    return rates


def _worker(device: str, spec: str, go: str) -> int:
    spec = json.loads(spec)
    sizes = CheckSizes(**spec["sizes"])
    images, _ = check_images(sizes.batch * 4)
    trainer = trainer_for(sizes, device, images, **spec["runtime"])
    trainer.train(trainer._warmup_left + 1)  # compile (from the shared cache), autotune, capture
    print("ready", flush=True)
    while not Path(go).exists():
        time.sleep(0.01)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < sizes.process_seconds:
        trainer.train(5)
        steps += 5
    print(json.dumps({"iters_per_s": steps / (time.perf_counter() - start)}), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        sys.exit(_worker(*sys.argv[2:]))
    print("usage: python platform/benchmark.py --device cuda --check (this module is its worker)", file=sys.stderr)
    sys.exit(2)
