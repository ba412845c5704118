"""The GPU check: one command that asserts the CUDA path works as designed and
measures it, without Ray or Optuna (torch, torchvision and numpy only).

    python platform/benchmark.py --device cuda --check            # the check, < 8 min on an H200
    python platform/benchmark.py --device cpu --check --smoke     # the same flow, tiny, on a CPU

Checks (each passes or fails, with what it measured):

- ``cuda``: CUDA usable (the driver's reason otherwise, and nothing else runs), device name,
  capability, native bf16;
- ``placement``: every parameter, buffer, optimiser state, EMA weight, generator, dataset, ladder
  and accumulator of a trainer that trained, and every tensor a Langevin chain returns, on the
  device;
- ``no_sync_train`` / ``no_sync_langevin``: steady training steps and Langevin steps (the
  compiled / graphed defaults) under ``torch.cuda.set_sync_debug_mode("error")``: a host sync
  inside a step raises;
- ``bf16_accuracy``: :mod:`trainables.precision`'s per-level error table at ngf 64 on the device,
  the default design within :data:`trainables.precision.SCORE_BOUND` / ``LOSS_BOUND`` at every
  level down to sigma 0.005;
- ``compile_agreement``: compiled vs eager scores (a bf16 and an fp32 level) and training loss
  within :data:`COMPILE_TOLERANCE`.

Measurements: training it/s and MFU (FLOPs counted by ``torch.utils.flop_counter`` over one
step, against the spec-sheet dense bf16 peak where the GPU is known and against a measured bf16
matmul rate) at ngf 64 batch 128, eager and compiled; sampler network evaluations x images / s
at batch 1000 (eager, CUDA graphs, compiled + graphs) on a bf16 and an fp32 level; peak memory of
training and sampling; the aggregate training throughput of 4 trial processes sharing the GPU
against 1 (processes started by this module, the compile cache shared as a search shares it).
Writes JSON and prints a table; exit status 1 when a check fails.

On a CPU (``--device cpu``) the CUDA-only parts (the sync checks, CUDA graphs, peak memory, MFU
against a GPU peak) are reported as not applicable; everything else runs.
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

from trainables import runtime as rt
from trainables.langevin import anneal_langevin
from trainables.train import TrainConfig, Trainer

# Relative L2 differences allowed between compiled and eager (same weights and inputs): fp32
# differs by summation order only; bf16 by where inductor keeps fp32 intermediates between fused
# ops, a few bf16 roundings more or less (8 significant bits: 2^-8 = 0.4% per rounding).
COMPILE_TOLERANCE = {"fp32": 1e-4, "bf16": 3e-2, "loss": 1e-3}
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
    # the whole check must fit in 8 minutes on one H200
    deadline_s: float = 420.0


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


# ------------------------------------------------------------------------------------- pieces
def check_images(n: int, seed: int = 0) -> tuple[torch.Tensor, str]:
    """(uint8 [n, 1, 28, 28] images, where they came from): MNIST from the local cache when it is
    there (no download is tried), else deterministic stroke images in MNIST's range (black
    background, strokes near 1), which is what the precision comparison depends on."""
    from trainables.data import load_mnist

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
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def _steady_rate(trainer: Trainer, steps: int) -> float:
    trainer.train(2)  # the warm-up (compilation, autotuning) and a step
    return trainer.train(steps)["iters_per_s"]


def _sample_rate(score, device: torch.device, batch: int, level: int, evals: int, size: int = 28) -> float:
    x = torch.rand(batch, 1, size, size, device=device)
    idx = torch.full((batch,), level, dtype=torch.long, device=device)
    fn = score.at_level(level)
    with torch.inference_mode():
        score.warm(x)
        fn(x, idx)
        _sync(device)
        start = time.perf_counter()
        for _ in range(evals):
            fn(x, idx)
        _sync(device)
    return evals * batch / (time.perf_counter() - start)


# ------------------------------------------------------------------------------------- checks
def run_check(device_name: str = "cuda", sizes: CheckSizes = CheckSizes(), skip: tuple[str, ...] = ()) -> dict:
    """Run every check and measurement (those named in ``skip`` excepted); return the report."""
    device = torch.device(device_name if device_name != "cuda" else "cuda:0")
    on_cuda = device.type == "cuda"
    outcomes: list[Outcome] = []
    report: dict[str, Any] = {"device": str(device), "sizes": asdict(sizes), "torch": torch.__version__}
    cache = tempfile.mkdtemp(prefix="ncsn-gpu-check-inductor-")
    rt.use_compile_cache(cache)  # shared with the packing processes, as a search shares it

    began = time.perf_counter()

    def step(name: str, fn: Callable[[], Outcome], measurement: bool = False) -> Outcome | None:
        if name in skip:
            outcomes.append(Outcome(name, None, "skipped (--skip)"))
            return None
        elapsed = time.perf_counter() - began
        if measurement and elapsed > sizes.deadline_s:
            outcomes.append(Outcome(name, None, f"skipped: out of time ({elapsed:.0f} s > {sizes.deadline_s:.0f} s)"))
            return None
        start = time.perf_counter()
        try:
            outcome = fn()
        except Exception as err:  # a failing check is a result, and the others still run
            outcome = Outcome(name, False, f"{type(err).__name__}: {' '.join(str(err).split())[:400]}")
        outcome.seconds = time.perf_counter() - start
        outcomes.append(outcome)
        print(
            f"[{outcome.seconds:6.1f} s] {name}: {_verdict(outcome.ok)} {outcome.detail}", file=sys.stderr, flush=True
        )
        return outcome

    def cuda_usable() -> Outcome:
        if not on_cuda:
            return Outcome("cuda", None, f"not applicable: running on {device}")
        problem = rt.cuda_problem()
        if problem is not None:
            return Outcome("cuda", False, problem)
        props = torch.cuda.get_device_properties(device)
        values = {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "native_bf16": rt.native_bf16(device),
            "cuda": torch.version.cuda,
        }
        return Outcome("cuda", True, f"{props.name}, capability {props.major}.{props.minor}", values)

    first = step("cuda", cuda_usable)
    if first is not None and first.ok is False:
        return _finish(report, outcomes)
    images, source = check_images(max(sizes.batch, sizes.precision_images) * 4)
    report["images"] = source
    default = trainer_for(sizes, str(device), images)  # the device's defaults: what trials run
    report["defaults"] = default.runtime.record()

    def placement() -> Outcome:
        default.train(2)
        missing = off_device(default, device)
        gen = torch.Generator(device=device).manual_seed(0)
        x = torch.rand(sizes.sample_batch, 1, 28, 28, device=device, generator=gen)
        result = anneal_langevin(default.score_fn(), x, default.sigmas, 2e-5, 1, denoise=True, generator=gen)
        for name in ("samples", "snr"):
            t = getattr(result, name)
            if t.device.type != device.type:
                missing.append(f"langevin.{name} on {t.device}")
        n = sum(1 for _ in default.model.parameters()) * (2 if default.ema is not None else 1)
        return Outcome(
            "placement", not missing, "; ".join(missing) or f"all on {device} ({n} weight tensors and the rest)"
        )

    def no_sync_train() -> Outcome:
        if not on_cuda:
            return Outcome("no_sync_train", None, "not applicable: CUDA only")
        default.train(2)  # past the warm-up
        default.train(3, step_guard=sync_guard(device))
        return Outcome("no_sync_train", True, f"3 steps ({default.runtime.compile_train or 'eager'}), no host sync")

    def no_sync_langevin() -> Outcome:
        if not on_cuda:
            return Outcome("no_sync_langevin", None, "not applicable: CUDA only")
        score = default.score_fn()
        gen = torch.Generator(device=device).manual_seed(0)
        x = torch.rand(sizes.sample_batch, 1, 28, 28, device=device, generator=gen)
        score.warm(x)  # capture / compile outside the guarded steps
        anneal_langevin(score, x, default.sigmas, 2e-5, 2, denoise=True, generator=gen, step_guard=sync_guard(device))
        how = (
            "CUDA graphs" if default.runtime.cuda_graphs else "eager"
        ) + f", compile {default.runtime.compile_sample}"
        return Outcome("no_sync_langevin", True, f"{2 * sizes.num_levels + 1} steps ({how}), no host sync")

    def bf16_accuracy() -> Outcome:
        from trainables import precision

        pair_images = images[: sizes.precision_images]
        table = {}
        for design in (0.0, rt_default_min_sigma()):
            amp, fp32 = precision.trainer_pair(sizes.precision_ngf, str(device), design)
            table[design] = precision.level_errors(amp, fp32, pair_images)
        ok = precision.within_bounds(table[rt_default_min_sigma()])
        report["bf16_table"] = {str(k): v for k, v in table.items()}
        report["bf16_table_text"] = precision.format_table(table)
        worst = max(r["score_err"] for r in table[rt_default_min_sigma()])
        return Outcome(
            "bf16_accuracy", ok, f"default design: worst score error {worst:.2%} (bound {precision.SCORE_BOUND:.0%})"
        )

    def compile_agreement() -> Outcome:
        eager = trainer_for(sizes, str(device), images, compile="off", cuda_graphs="off")
        compiled = trainer_for(sizes, str(device), images, compile="default", cuda_graphs="off")
        diffs = {}
        # the sampler's batch: the compiled graphs of the placement check, loaded from the cache
        x = torch.rand(sizes.sample_batch, 1, 28, 28, device=device)
        with torch.inference_mode():
            for level in (0, sizes.num_levels - 1):
                idx = torch.full((sizes.sample_batch,), level, dtype=torch.long, device=device)
                a = compiled.score_fn(use_ema=False).at_level(level)(x, idx)
                b = eager.score_fn(use_ema=False).at_level(level)(x, idx)
                precision_used = "bf16" if level < eager.bf16_levels else "fp32"
                diffs[f"score_level{level}_{precision_used}"] = (rel_diff(a, b), COMPILE_TOLERANCE[precision_used])
        la, lb = compiled.train(1)["loss"], eager.train(1)["loss"]
        diffs["loss"] = (abs(la - lb) / abs(lb), COMPILE_TOLERANCE["loss"])
        ok = all(d <= tol for d, tol in diffs.values())
        text = ", ".join(f"{k} {d:.1e} (tol {tol:.0e})" for k, (d, tol) in diffs.items())
        return Outcome("compile_agreement", ok, text, {k: d for k, (d, _) in diffs.items()})

    def train_throughput() -> Outcome:
        values: dict[str, Any] = {}
        flops = train_flops(trainer_for(sizes, str(device), images, compile="off"))
        values["train_gflop_per_step"] = flops / 1e9
        variants = [("eager", {"compile": "off"}), ("fp32 eager", {"compile": "off", "amp": "off"})]
        if "compile" not in skip:
            variants.insert(1, ("compiled", {"compile": "default"}))
        for label, kw in variants:
            trainer = trainer_for(sizes, str(device), images, **kw)
            if on_cuda:
                torch.cuda.reset_peak_memory_stats(device)
            rate = _steady_rate(trainer, sizes.train_steps)
            values[f"{label} it/s"] = rate
            if on_cuda:
                values[f"{label} peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            del trainer
        if on_cuda:
            name = torch.cuda.get_device_name(device)
            measured = matmul_tflops(device)
            values["matmul_bf16_tflops"] = measured
            peak = spec_peak_tflops(name)
            best = max(values["eager it/s"], values.get("compiled it/s", 0.0))
            values["mfu_vs_measured_matmul"] = flops * best / 1e12 / measured
            if peak:
                values["mfu_vs_spec_peak"] = flops * best / 1e12 / peak
        text = ", ".join(f"{k} {v:.3g}" for k, v in values.items())
        return Outcome("train_throughput", None, text, values)

    def sampler_throughput() -> Outcome:
        values: dict[str, Any] = {}
        variants = [("eager", {"compile": "off", "cuda_graphs": "off"})]
        if on_cuda:
            variants.append(("graphs", {"compile": "off", "cuda_graphs": "on"}))
            if "compile" not in skip:
                variants.append(("compiled+graphs", {"compile": "default", "cuda_graphs": "on"}))
        for label, kw in variants:
            trainer = trainer_for(sizes, str(device), images, **kw)
            score = trainer.score_fn()
            if on_cuda:
                torch.cuda.reset_peak_memory_stats(device)
            for level in sorted({0, sizes.num_levels - 1}):
                prec = "bf16" if level < trainer.bf16_levels else "fp32"
                values[f"{label} {prec} evals*img/s"] = _sample_rate(
                    score, device, sizes.sample_batch, level, sizes.sample_evals
                )
            if on_cuda:
                values[f"{label} peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            del trainer, score
        text = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
        return Outcome("sampler_throughput", None, text, values)

    def packing() -> Outcome:
        runtime = {"compile": "off"} if "compile" in skip else {}
        one = run_processes(1, str(device), sizes, cache, runtime)
        many = run_processes(sizes.processes, str(device), sizes, cache, runtime)
        values = {"1 process it/s": sum(one), f"{sizes.processes} processes it/s (sum)": sum(many)}
        values["aggregate x"] = sum(many) / sum(one)
        mps = "MPS on" if _mps_running() else "no MPS"
        return Outcome(
            "packing", None, f"{values['aggregate x']:.2f}x with {sizes.processes} processes ({mps})", values
        )

    for name, fn in (
        ("placement", placement),
        ("no_sync_train", no_sync_train),
        ("no_sync_langevin", no_sync_langevin),
        ("bf16_accuracy", bf16_accuracy),
        ("compile_agreement", compile_agreement),
    ):
        step(name, fn)
    for name, fn in (("train_throughput", train_throughput), ("sampler_throughput", sampler_throughput)):
        step(name, fn, measurement=True)
    step("packing", packing, measurement=True)
    return _finish(report, outcomes)


def rt_default_min_sigma() -> float:
    from trainables.params import SETTINGS

    return SETTINGS["amp_min_sigma"].default


def _mps_running() -> bool:
    pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")
    return Path(pipe, "control").exists()


def _verdict(ok: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "----"}[ok]


def _finish(report: dict, outcomes: list[Outcome]) -> dict:
    report["outcomes"] = [asdict(o) for o in outcomes]
    report["ok"] = all(o.ok is not False for o in outcomes)
    return report


def format_report(report: dict) -> str:
    lines = [f"GPU check on {report['device']} (torch {report['torch']}; images: {report.get('images', '-')})"]
    if "defaults" in report:
        lines.append(f"defaults here: {report['defaults']}")
    for o in report["outcomes"]:
        lines.append(f"{_verdict(o['ok'])}  {o['name']:20s} {o['seconds']:6.1f} s  {o['detail']}")
    if "bf16_table_text" in report:
        lines += ["", report["bf16_table_text"]]
    lines.append("all checks passed" if report["ok"] else "SOME CHECKS FAILED")
    return "\n".join(lines)


# ------------------------------------------------------------------------- packing processes
def run_processes(n: int, device: str, sizes: CheckSizes, cache: str, runtime: dict | None = None) -> list[float]:
    """Training it/s of each of ``n`` processes training at once (this module's ``--worker``):
    each builds a trainer with the device's defaults (``runtime`` overrides some), warms up
    (compile cache ``cache``), waits for the common start and trains for ``sizes.process_seconds``."""
    env = dict(os.environ, **{rt.INDUCTOR_CACHE_ENV: cache})
    go = Path(tempfile.mkdtemp(prefix="ncsn-gpu-check-go-")) / "go"
    spec = json.dumps({"sizes": asdict(sizes), "runtime": runtime or {}})
    args = [sys.executable, "-m", "trainables.gpu_check", "--worker", device, spec, str(go)]
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
    trainer.train(3)  # compile (from the shared cache), autotune
    print("ready", flush=True)
    while not Path(go).exists():
        time.sleep(0.01)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < sizes.process_seconds:
        trainer.train(5)
        steps += 5
    print(json.dumps({"iters_per_s": steps / (time.perf_counter() - start)}), flush=True)
    return 0


def write(report: dict, path: str | os.PathLike) -> None:
    Path(path).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        sys.exit(_worker(*sys.argv[2:]))
    print("usage: python platform/benchmark.py --device cuda --check", file=sys.stderr)
    sys.exit(2)
