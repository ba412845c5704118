"""The GPU check: one command that asserts the CUDA path works as designed and
measures it, without Ray or Optuna (torch, torchvision and numpy only).

    python platform/benchmark.py --device cuda --check            # the check, < 5 min on an H200
    python platform/benchmark.py --device cpu --check --smoke-test   # the same flow, tiny, on a CPU

MNIST comes from the local cache or from ``NCSN_DATA_DIR`` (never downloaded here: a GPU machine
may have no network), else synthetic strokes. The JSON report is rewritten after every step, so a
run cut off at a time limit keeps what it measured.

Checks (each passes or fails, with what it measured):

- ``cuda``: CUDA usable (the driver's reason otherwise, and nothing else runs), device name,
  capability, native bf16;
- ``placement``: every parameter, buffer, optimiser state, EMA weight, loss scale, generator,
  dataset, ladder and accumulator of a trainer that trained, and every tensor a Langevin chain
  returns, on the device;
- ``no_sync_train`` / ``no_sync_langevin``: steady training steps (the captured step's replays)
  and Langevin steps under ``torch.cuda.set_sync_debug_mode("error")``: a host sync raises;
- ``precision_table``: :mod:`trainables.tools.precision`'s per-level error table of every design at
  ngf 64 on the device; the default design within :data:`trainables.tools.precision.SCORE_BOUND` /
  ``LOSS_BOUND`` at every level down to sigma 0.005. Beside the GPU's own TF32, the CPU's
  emulation of it run on the same GPU: how well the CPU's TF32 prediction holds;
- ``compile_agreement``: compiled vs eager scores (the largest and smallest level) and training
  loss within :data:`COMPILE_TOLERANCE`.

Measurements: training it/s, warm-up seconds and MFU (FLOPs counted by ``torch.utils.flop_counter``
over one step, against the spec-sheet dense bf16 peak where the GPU is known and against a
measured bf16 matmul rate) at ngf 64 batch 128 for the default (compile + captured step), the
captured eager step, plain eager and fp32 eager; sampler network evaluations x images / s at batch
1000 per precision (fp16, bf16, tf32, fp32; CUDA graphs, and compiled + graphs for the default),
with each graph's warm-up seconds; a profile of the eager step's kernels (the top ones by CUDA
time); peak memory; the aggregate training throughput of 4 trial processes sharing the GPU
against 1 (processes started by this module, the compile cache shared as a search shares it).
Prints a table; exit status 1 when a check fails.

On a CPU (``--device cpu``) the CUDA-only parts (the sync checks, CUDA graphs, TF32, peak memory,
MFU against a GPU peak, the profile) are reported as not applicable; everything else runs.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainables.ncsn import runtime as rt
from trainables.ncsn.langevin import anneal_langevin
from trainables.ncsn.train import Trainer
from trainables.tools.gpu_probes import (
    CheckSizes,
    Outcome,
    check_images,
    matmul_tflops,
    mps_running,
    off_device,
    rel_diff,
    run_processes,
    sample_rate,
    spec_peak_tflops,
    steady_rate,
    sync_guard,
    train_flops,
    trainer_for,
)

# Relative L2 differences allowed between compiled and eager (same weights and inputs): fp32
# differs by summation order only; bf16 by where inductor keeps fp32 intermediates between fused
# ops, a few bf16 roundings more or less (8 significant bits: 2^-8 = 0.4% per rounding).
# fp16 convolutions: inductor may round a conv's fp16 output at another point of a fused kernel
# (11 significant bits: 2^-11 = 0.05% per rounding).
COMPILE_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 3e-2, "tf32": 1e-2, "loss": 1e-3}


@dataclass
class Run:
    """One run of the check: where, at what sizes, what to skip, the images and the trainer with
    the device's defaults (what trials run), the report so far and the shared compile cache."""

    device: torch.device
    sizes: CheckSizes
    skip: tuple[str, ...]
    report: dict
    cache: str
    images: torch.Tensor | None = None
    default: Trainer | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    began: float = field(default_factory=time.perf_counter)
    out: str | None = None  # the JSON report, rewritten after every step

    @property
    def on_cuda(self) -> bool:
        return self.device.type == "cuda"

    def trainer(self, **runtime: Any) -> Trainer:
        return trainer_for(self.sizes, str(self.device), self.images, **runtime)

    def sample_input(self) -> tuple[torch.Tensor, torch.Generator]:
        gen = torch.Generator(device=self.device).manual_seed(0)
        return torch.rand(self.sizes.sample_batch, 1, 28, 28, device=self.device, generator=gen), gen

    def step(self, name: str, fn: Callable[[Run], Outcome], measurement: bool = False) -> Outcome | None:
        """Run one check or measurement: skipped when named in ``skip`` (or, for a measurement,
        past the deadline); an exception is a failed outcome, and the others still run."""
        if name in self.skip:
            self.outcomes.append(Outcome(name, None, "skipped (--skip)"))
            return None
        elapsed = time.perf_counter() - self.began
        if measurement and elapsed > self.sizes.deadline_s:
            self.outcomes.append(
                Outcome(name, None, f"skipped: out of time ({elapsed:.0f} s > {self.sizes.deadline_s:.0f} s)")
            )
            return None
        start = time.perf_counter()
        try:
            outcome = fn(self)
        except Exception as err:  # a failing check is a result, and the others still run
            outcome = Outcome(name, False, f"{type(err).__name__}: {' '.join(str(err).split())[:400]}")
        outcome.seconds = time.perf_counter() - start
        self.outcomes.append(outcome)
        if self.out is not None:
            write(_finish(self.report, self.outcomes), self.out)
        print(
            f"[{outcome.seconds:6.1f} s] {name}: {_verdict(outcome.ok)} {outcome.detail}", file=sys.stderr, flush=True
        )
        return outcome


# ------------------------------------------------------------------------------------- checks
def cuda_usable(run: Run) -> Outcome:
    if not run.on_cuda:
        return Outcome("cuda", None, f"not applicable: running on {run.device}")
    problem = rt.cuda_problem()
    if problem is not None:
        return Outcome("cuda", False, problem)
    props = torch.cuda.get_device_properties(run.device)
    values = {
        "name": props.name,
        "capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "native_bf16": rt.native_bf16(run.device),
        "cuda": torch.version.cuda,
    }
    return Outcome("cuda", True, f"{props.name}, capability {props.major}.{props.minor}", values)


def placement(run: Run) -> Outcome:
    default = run.default
    default.train(2)
    missing = off_device(default, run.device)
    x, gen = run.sample_input()
    result = anneal_langevin(default.score_fn(), x, default.sigmas, 2e-5, 1, denoise=True, generator=gen)
    for name in ("samples", "snr"):
        t = getattr(result, name)
        if t.device.type != run.device.type:
            missing.append(f"langevin.{name} on {t.device}")
    n = sum(1 for _ in default.model.parameters()) * (2 if default.ema is not None else 1)
    return Outcome(
        "placement", not missing, "; ".join(missing) or f"all on {run.device} ({n} weight tensors and the rest)"
    )


def no_sync_train(run: Run) -> Outcome:
    if not run.on_cuda:
        return Outcome("no_sync_train", None, "not applicable: CUDA only")
    run.default.train(2)  # past the warm-up
    run.default.train(3, step_guard=sync_guard(run.device))
    return Outcome("no_sync_train", True, f"3 steps ({run.default.runtime.compile_train or 'eager'}), no host sync")


def no_sync_langevin(run: Run) -> Outcome:
    if not run.on_cuda:
        return Outcome("no_sync_langevin", None, "not applicable: CUDA only")
    default = run.default
    score = default.score_fn()
    x, gen = run.sample_input()
    score.warm(x)  # capture / compile outside the guarded steps
    anneal_langevin(score, x, default.sigmas, 2e-5, 2, denoise=True, generator=gen, step_guard=sync_guard(run.device))
    how = ("CUDA graphs" if default.runtime.cuda_graphs else "eager") + f", compile {default.runtime.compile_sample}"
    return Outcome("no_sync_langevin", True, f"{2 * run.sizes.num_levels + 1} steps ({how}), no host sync")


def precision_table(run: Run) -> Outcome:
    from trainables.tools import precision

    images = run.images[: run.sizes.precision_images]
    table = precision.error_table(images, ngf=run.sizes.precision_ngf, device=str(run.device))
    default = table[precision.DEFAULT_DESIGN.name]
    ok = precision.within_bounds(default)
    run.report["precision_table"] = table
    run.report["precision_table_text"] = precision.format_table(table)
    worst = max(r["score_err"] for r in default)
    values = {f"{name} worst score_err": max(r["score_err"] for r in rows) for name, rows in table.items()}
    detail = (
        f"default ({precision.DEFAULT_DESIGN.name}): worst score error {worst:.2%} (bound {precision.SCORE_BOUND:.0%})"
    )
    if "tf32-emulated" in table:  # the CPU's TF32 prediction against the tensor cores' own
        ratios = [e["score_err"] / r["score_err"] for e, r in zip(table["tf32-emulated"], table["tf32"])]
        values["tf32 emulated / real score_err"] = (min(ratios), max(ratios))
        detail += f"; TF32 emulated/real score error {min(ratios):.2f}-{max(ratios):.2f}x"
    return Outcome("precision_table", ok, detail, values)


def compile_agreement(run: Run) -> Outcome:
    eager = run.trainer(compile="off", cuda_graphs="off")
    compiled = run.trainer(compile="default", cuda_graphs="off")
    diffs = {}
    batch = run.sizes.sample_batch
    # the sampler's batch: the compiled graphs of the placement check, loaded from the cache
    x = torch.rand(batch, 1, 28, 28, device=run.device)
    with torch.inference_mode():
        for level in (0, run.sizes.num_levels - 1):
            idx = torch.full((batch,), level, dtype=torch.long, device=run.device)
            a = compiled.score_fn(use_ema=False).at_level(level)(x, idx)
            b = eager.score_fn(use_ema=False).at_level(level)(x, idx)
            used = eager.runtime.precision if level < eager.amp_levels else "fp32"
            diffs[f"score_level{level}_{used}"] = (rel_diff(a, b), COMPILE_TOLERANCE[used])
    la, lb = compiled.train(1)["loss"], eager.train(1)["loss"]
    diffs["loss"] = (abs(la - lb) / abs(lb), COMPILE_TOLERANCE["loss"])
    ok = all(d <= tol for d, tol in diffs.values())
    text = ", ".join(f"{k} {d:.1e} (tol {tol:.0e})" for k, (d, tol) in diffs.items())
    return Outcome("compile_agreement", ok, text, {k: d for k, (d, _) in diffs.items()})


CHECKS = (
    ("placement", placement),
    ("no_sync_train", no_sync_train),
    ("no_sync_langevin", no_sync_langevin),
    ("precision_table", precision_table),
    ("compile_agreement", compile_agreement),
)


# ------------------------------------------------------------------------------- measurements
def train_throughput(run: Run) -> Outcome:
    values: dict[str, Any] = {}
    flops = train_flops(run.trainer(compile="off", cuda_graphs="off"))
    values["train_gflop_per_step"] = flops / 1e9
    if run.on_cuda:  # what trials run (the captured eager step), then without graphs, then fp32
        variants = [
            ("default", {}),
            ("eager", {"cuda_graphs": "off"}),
            ("fp32 eager", {"cuda_graphs": "off", "amp": "off"}),
        ]
    else:
        variants = [("eager", {}), ("fp32 eager", {"amp": "off"})]
    if "compile" not in run.skip:
        variants.insert(0, ("compiled", {"compile": "default"}))  # captured too, where graphs are on
    for label, kw in variants:
        trainer = run.trainer(**kw)
        if run.on_cuda:
            torch.cuda.reset_peak_memory_stats(run.device)
        rate, warmup = steady_rate(trainer, run.sizes.train_steps)
        values[f"{label} it/s"], values[f"{label} warmup_s"] = rate, warmup
        if trainer._captured is not None and trainer._captured.capture_seconds is not None:
            values[f"{label} capture_s"] = trainer._captured.capture_seconds
        if run.on_cuda:
            values[f"{label} peak_gib"] = torch.cuda.max_memory_allocated(run.device) / 2**30
        del trainer
    if run.on_cuda:
        measured = matmul_tflops(run.device)
        values["matmul_bf16_tflops"] = measured
        peak = spec_peak_tflops(torch.cuda.get_device_name(run.device))
        best = max(v for k, v in values.items() if k.endswith(" it/s"))
        values["mfu_vs_measured_matmul"] = flops * best / 1e12 / measured
        if peak:
            values["mfu_vs_spec_peak"] = flops * best / 1e12 / peak
    text = ", ".join(f"{k} {v:.3g}" for k, v in values.items())
    return Outcome("train_throughput", None, text, values)


SAMPLER_PRECISIONS = ("fp16", "bf16", "tf32", "fp32")


def sampler_throughput(run: Run) -> Outcome:
    """Evaluations x images / s at the smallest level, per precision (every level of a ladder
    runs at one of these), and each graph's warm-up (capture, compile) seconds."""
    values: dict[str, Any] = {}
    graphs = {"compile": "off", "cuda_graphs": "on"} if run.on_cuda else {"compile": "off"}
    variants = [(p, {"amp": "off" if p == "fp32" else p, **graphs}) for p in SAMPLER_PRECISIONS]
    if not run.on_cuda:
        variants = [(p, kw) for p, kw in variants if p in ("fp16", "fp32")]  # no TF32 on a CPU, bf16 slow
    if run.on_cuda and "compile" not in run.skip:
        variants.insert(0, ("fp16 compiled", {"amp": "fp16", "compile": "default", "cuda_graphs": "on"}))
    level = run.sizes.num_levels - 1
    for label, kw in variants:
        trainer = run.trainer(**kw)
        score = trainer.score_fn()
        if run.on_cuda:
            torch.cuda.reset_peak_memory_stats(run.device)
        rate, warm = sample_rate(score, run.device, run.sizes.sample_batch, level, run.sizes.sample_evals)
        values[f"{label} evals*img/s"], values[f"{label} warmup_s"] = rate, warm
        if run.on_cuda:
            values[f"{label} peak_gib"] = torch.cuda.max_memory_allocated(run.device) / 2**30
        del trainer, score
    text = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
    return Outcome("sampler_throughput", None, text, values)


def profile(run: Run) -> Outcome:
    """The eager default-precision step's kernels by CUDA time (what a capture replays)."""
    if not run.on_cuda:
        return Outcome("profile", None, "not applicable: CUDA only")
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    trainer = run.trainer(compile="off", cuda_graphs="off")
    trainer.train(3)
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        trainer.train(5)
    cuda = torch.autograd.DeviceType.CUDA
    kernels = [e for e in prof.key_averages() if getattr(e, "device_type", None) == cuda]
    kernels.sort(key=lambda e: e.self_device_time_total, reverse=True)
    top = [
        {"name": e.key[:80], "cuda_ms_per_step": e.self_device_time_total / 5e3, "calls_per_step": e.count / 5}
        for e in kernels[:20]
    ]
    launches = sum(e.count for e in kernels) / 5
    total_ms = sum(e.self_device_time_total for e in kernels) / 5e3
    run.report["profile_top"] = top
    values = {"kernels_per_step": launches, "kernel_ms_per_step": total_ms, "top": top[:10]}
    return Outcome("profile", None, f"{launches:.0f} kernels, {total_ms:.1f} ms of kernels per step", values)


def packing(run: Run) -> Outcome:
    runtime = {"compile": "off"} if "compile" in run.skip else {}
    one = run_processes(1, str(run.device), run.sizes, run.cache, runtime)
    many = run_processes(run.sizes.processes, str(run.device), run.sizes, run.cache, runtime)
    values = {"1 process it/s": sum(one), f"{run.sizes.processes} processes it/s (sum)": sum(many)}
    values["aggregate x"] = sum(many) / sum(one)
    mps = "MPS on" if mps_running() else "no MPS"
    return Outcome(
        "packing", None, f"{values['aggregate x']:.2f}x with {run.sizes.processes} processes ({mps})", values
    )


MEASUREMENTS = (
    ("train_throughput", train_throughput),
    ("sampler_throughput", sampler_throughput),
    ("packing", packing),
    ("profile", profile),
)


def run_check(
    device_name: str = "cuda", sizes: CheckSizes | None = None, skip: tuple[str, ...] = (), out: str | None = None
) -> dict:
    """Run every check and measurement (those named in ``skip`` excepted) at ``sizes`` (default:
    the full :class:`CheckSizes`); return the report, written to ``out`` after every step."""
    sizes = sizes or CheckSizes()
    device = torch.device(device_name if device_name != "cuda" else "cuda:0")
    report: dict[str, Any] = {"device": str(device), "sizes": asdict(sizes), "torch": torch.__version__}
    run = Run(device, sizes, tuple(skip), report, cache=tempfile.mkdtemp(prefix="ncsn-gpu-check-inductor-"), out=out)
    rt.use_compile_cache(run.cache)  # shared with the packing processes, as a search shares it
    first = run.step("cuda", cuda_usable)
    if first is not None and first.ok is False:
        return _finish(report, run.outcomes)  # no usable CUDA: nothing else can run
    run.images, report["images"] = check_images(max(sizes.batch, sizes.precision_images) * 4)
    run.default = run.trainer()  # the device's defaults: what trials run
    report["defaults"] = run.default.runtime.record()
    for name, fn in CHECKS:
        run.step(name, fn)
    for name, fn in MEASUREMENTS:
        run.step(name, fn, measurement=True)
    return _finish(report, run.outcomes)


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
    if "precision_table_text" in report:
        lines += ["", report["precision_table_text"]]
    lines.append("all checks passed" if report["ok"] else "SOME CHECKS FAILED")
    return "\n".join(lines)


def write(report: dict, path: str | os.PathLike) -> None:
    Path(path).write_text(json.dumps(report, indent=1, default=str))
