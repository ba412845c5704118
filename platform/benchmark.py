"""Training and sampling throughput of this project's NCSN code against a seed-style baseline.

Both sides run the same network (CondRefineNetDilated: same architecture, same parameters, same
initial weights; the report gives the relative difference of their scores), batch size, noise
ladder and device. They differ in how the work is written and fed:

- baseline (the seed's code and habits): the network's norm and activation computed as the seed
  wrote them (InstanceNorm2d + torch.var of the channel means, nn.ELU), fp32 eager, contiguous
  tensors, a torchvision-style Dataset (PIL image + ToTensor per item) behind a DataLoader with 2
  workers, a ``.item()`` log line per step; sampling under ``torch.no_grad`` with per-step
  ``.item()`` logging;
- optimized (trainables.train.Trainer + trainables.langevin.anneal_langevin): the dataset as one
  uint8 tensor on the device, batches by indexing, no host sync per step, the trainer's memory
  format / autocast / fused-Adam / compile settings, sampling under ``torch.inference_mode``.

``--variants`` adds rows that split the gain (the seed loop around this project's network code,
the other memory format); ``--bf16`` adds bf16 autocast. Repeats alternate the contenders, so a shared
machine's load hits all alike; the table shows medians and the ratio to the baseline. Training is
reported in iterations/s, sampling in network evaluations x images / s.

    python platform/benchmark.py                    # ngf 32, batch 64, default device
    python platform/benchmark.py --smoke-test       # tiny, seconds
    python platform/benchmark.py --variants --bf16  # also the rows that split the gain, and bf16

The script sets OMP_WAIT_POLICY=PASSIVE unless the environment already sets it (both sides alike):
on a machine shared with other jobs, spinning OpenMP threads make timings meaningless.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

# Before torch loads OpenMP: idle OpenMP threads that spin fight every other job on a shared
# machine, and one stalled thread stalls each parallel op (seen here: 5-10x slower steps, wildly
# varying). Sleeping threads make repeats comparable; export OMP_WAIT_POLICY=ACTIVE to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from trainables.data import load_mnist  # noqa: E402
from trainables.langevin import anneal_langevin  # noqa: E402
from trainables.model import ELU, CondInstanceNormPlus, CondRefineNetDilated  # noqa: E402
from trainables.train import TrainConfig, Trainer, resolve_device  # noqa: E402


# ------------------------------------------------------------------------------ seed baseline
class SeedCondInstanceNormPlus(CondInstanceNormPlus):
    """The seed's conditional instance norm++: InstanceNorm2d, then the channel means
    standardised with torch.mean / torch.var, then gamma, beta. Same parameters as ours."""

    def forward(self, x, y):
        means = torch.mean(x, dim=(2, 3))
        m = torch.mean(means, dim=-1, keepdim=True)
        v = torch.var(means, dim=-1, keepdim=True)
        means = (means - m) / torch.sqrt(v + 1e-5)
        h = F.instance_norm(x, eps=1e-5)
        gamma, alpha, beta = self.embed(y).chunk(3, dim=-1)
        h = h + means[..., None, None] * alpha[..., None, None]
        return gamma.view(-1, self.num_features, 1, 1) * h + beta.view(-1, self.num_features, 1, 1)


class SeedELU(ELU):
    """The seed's activation: nn.ELU."""

    def forward(self, x):
        return F.elu(x)


def seed_network(ngf: int, num_levels: int, image_size: int) -> CondRefineNetDilated:
    """The same architecture and parameters, computed the seed's way (its norm and ELU)."""
    model = CondRefineNetDilated(ngf, num_levels, 1, image_size)
    for module in model.modules():
        if type(module) is CondInstanceNormPlus:
            module.__class__ = SeedCondInstanceNormPlus
        elif type(module) is ELU:
            module.__class__ = SeedELU
    return model


class SeedStyleMNIST(torch.utils.data.Dataset):
    """What torchvision.datasets.MNIST hands out: a PIL image through ToTensor, per item.

    Built over the uint8 tensor from load_mnist (torchvision cannot download here).
    """

    def __init__(self, images: torch.Tensor):
        import torchvision.transforms as T

        self.images = images[:, 0].numpy()
        self.transform = T.ToTensor()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i], mode="L")), 0


def seed_dsm_loss(model, x, sigmas, labels, anneal_power=2.0):
    """The seed's anneal_dsm_score_estimation: target -(x~ - x) / sigma^2, weighted by sigma^p."""
    used = sigmas[labels].view(x.shape[0], *([1] * (x.dim() - 1)))
    perturbed = x + torch.randn_like(x) * used
    target = -1 / (used**2) * (perturbed - x)
    scores = model(perturbed, labels)
    loss = 1 / 2.0 * ((scores - target) ** 2).sum(dim=(1, 2, 3)) * used.squeeze() ** anneal_power
    return loss.mean()


class SeedLoop:
    """The seed's loop: DataLoader (2 workers), dequantisation per batch, .item() every step,
    fp32 eager, contiguous tensors; sampling under torch.no_grad with .item() logging."""

    def __init__(self, model, cfg: TrainConfig, images: torch.Tensor, device: torch.device, log: list):
        self.model = model.to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        self.sigmas = torch.exp(
            torch.linspace(math.log(cfg.sigma_begin), math.log(cfg.sigma_end), cfg.num_levels)
        ).to(device)
        self.loader = torch.utils.data.DataLoader(
            SeedStyleMNIST(images), batch_size=cfg.batch_size, shuffle=True, num_workers=2, drop_last=True
        )
        self.batches = iter(self.loader)
        self.cfg, self.device, self.log, self.step = cfg, device, log, 0

    def _next(self):
        try:
            return next(self.batches)[0]
        except StopIteration:  # a new epoch, new worker processes, as in the seed
            self.batches = iter(self.loader)
            return next(self.batches)[0]

    def train(self, n_iters: int) -> None:
        for _ in range(n_iters):
            x = self._next().to(self.device)
            x = x / 256.0 * 255.0 + torch.rand_like(x) / 256.0
            labels = torch.randint(0, len(self.sigmas), (x.shape[0],), device=self.device)
            loss = seed_dsm_loss(self.model, x, self.sigmas, labels, self.cfg.anneal_power)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.step += 1
            self.log.append(f"step: {self.step}, loss: {loss.item()}")

    def sample(self, x, step_lr, n_steps_each, levels=None):
        """The seed's anneal_Langevin_dynamics."""
        sigmas = self.sigmas if levels is None else self.sigmas[:levels]
        with torch.no_grad():
            for c, sigma in enumerate(sigmas):
                labels = torch.ones(x.shape[0], device=x.device, dtype=torch.long) * c
                step_size = step_lr * (sigma / self.sigmas[-1]) ** 2
                for _ in range(n_steps_each):
                    noise = torch.randn_like(x) * torch.sqrt(step_size * 2)
                    grad = self.model(x, labels)
                    x = x + step_size * grad + noise
                    self.log.append(
                        f"level: {c}, step_size: {step_size.item()}, grad_norm: {grad.norm().item()}, "
                        f"image_norm: {x.norm().item()}"
                    )
        return x


class FastLoop:
    """This project's path: trainables.train.Trainer and trainables.langevin.anneal_langevin."""

    def __init__(self, cfg: TrainConfig, images: torch.Tensor):
        self.trainer = Trainer(cfg, images)
        self.sigmas = self.trainer.sigmas

    def train(self, n_iters: int) -> None:
        self.trainer.train(n_iters)

    def sample(self, x, step_lr, n_steps_each, levels=None):
        g = torch.Generator(device=x.device).manual_seed(0)
        chosen = None if levels is None else list(range(levels))
        return anneal_langevin(self.trainer.score_fn(use_ema=False), x, self.sigmas, step_lr, n_steps_each,
                               generator=g, levels=chosen).samples


# ------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds). CPU time is steadier on a shared machine;
    it leaves out DataLoader worker processes, which flatters the baseline."""
    _sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - start, time.process_time() - cpu_start


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _network_agreement(seed_model, fast: FastLoop, shape, device) -> float:
    """Relative L2 difference of the two implementations' scores on one batch (same weights)."""
    x = torch.rand(shape, device=device)
    levels = torch.arange(shape[0], device=device) % len(fast.sigmas)
    with torch.inference_mode():
        a = seed_model(x, levels).float()
        b = fast.trainer.score_fn(use_ema=False)(x, levels)
    return float((a - b).norm() / a.norm())


def run(args) -> dict:
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    images, _ = load_mnist(train=True)
    cfg = TrainConfig(ngf=args.ngf, batch_size=args.batch, num_levels=args.num_levels, sigma_begin=1.0,
                      sigma_end=0.01, seed=0, device=str(device), compile=args.compile)
    log: list[str] = []

    def fast(**overrides):
        return FastLoop(TrainConfig(**{**cfg.to_dict(), **overrides}), images)

    optimized = fast()

    def seed(network):
        network.load_state_dict(optimized.trainer.model.state_dict())  # the same initial weights
        return SeedLoop(network, cfg, images, device, log)

    contenders = {"baseline (seed code)": seed(seed_network(cfg.ngf, cfg.num_levels, cfg.image_size)),
                  "optimized": optimized}
    # name -> (training iterations, sampler levels) per repeat; the slow extra rows do less work.
    work = {name: (args.iters, args.num_levels) for name in contenders}
    if args.variants:
        contenders["seed loop + this network"] = seed(CondRefineNetDilated(cfg.ngf, cfg.num_levels, 1, cfg.image_size))
        other = not cfg.channels_last
        contenders[f"optimized, channels_last={other}"] = fast(channels_last=other)
        work.update({name: (args.iters, args.num_levels) for name in list(contenders)[2:]})
    if args.bf16 and not (device.type == "cuda" and contenders["optimized"].trainer.amp):
        contenders["optimized + bf16 autocast"] = fast(amp=True)
        # Emulated bf16 on a CPU without AVX512-BF16/AMX is very slow: one repeat of little work.
        work["optimized + bf16 autocast"] = (1, 1)
    shape = (args.batch, 1, cfg.image_size, cfg.image_size)
    agreement = _network_agreement(contenders["baseline (seed code)"].model, contenders["optimized"], shape, device)
    n_evals = args.num_levels * args.n_steps_each

    for loop in contenders.values():  # warm-up: workers, allocator, oneDNN primitives, compilation
        loop.train(1)
        loop.sample(torch.rand(shape, device=device), args.step_lr, 1, levels=1)

    rows = {name: {k: [] for k in ("train", "sample", "train_cpu", "sample_cpu")} for name in contenders}
    for r in range(args.repeats):
        for name, loop in contenders.items():
            if name == "optimized + bf16 autocast" and r > 0:
                continue
            iters, levels = work[name]
            images_evals = levels * args.n_steps_each * args.batch
            wall, cpu = _timed(lambda: loop.train(iters), device)
            rows[name]["train"].append(iters / wall)
            rows[name]["train_cpu"].append(cpu / iters)
            x0 = torch.rand(shape, device=device)
            wall, cpu = _timed(lambda: loop.sample(x0, args.step_lr, args.n_steps_each, levels=levels), device)
            rows[name]["sample"].append(images_evals / wall)
            rows[name]["sample_cpu"].append(cpu / images_evals * 1e3)
            print(f"repeat {r + 1}/{args.repeats}: {name}: {rows[name]['train'][-1]:.3f} it/s, "
                  f"{rows[name]['sample'][-1]:.1f} evals*img/s", file=sys.stderr, flush=True)

    table = {}
    for name, measured in rows.items():
        table[name] = {
            "train_iters_per_s": measured["train"],
            "sample_evals_images_per_s": measured["sample"],
            "train_cpu_s_per_iter": measured["train_cpu"],
            "sample_cpu_ms_per_eval_image": measured["sample_cpu"],
            **{f"{k}_median": statistics.median(v) for k, v in measured.items()},
        }
    base = table["baseline (seed code)"]
    for entry in table.values():
        entry["train_ratio"] = entry["train_median"] / base["train_median"]
        entry["sample_ratio"] = entry["sample_median"] / base["sample_median"]
        entry["train_cpu_ratio"] = base["train_cpu_median"] / entry["train_cpu_median"]
        entry["sample_cpu_ratio"] = base["sample_cpu_median"] / entry["sample_cpu_median"]
    trainer = contenders["optimized"].trainer
    return {
        "settings": {
            "ngf": args.ngf, "batch": args.batch, "num_levels": args.num_levels, "iters": args.iters,
            "n_steps_each": args.n_steps_each, "evals_per_sample_run": n_evals, "repeats": args.repeats,
            "step_lr": args.step_lr,
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
            "channels_last": trainer.channels_last, "amp_bf16": trainer.amp, "compile": trainer.config.compile,
            "adam": "fused" if device.type == "cuda" else "foreach",
        },
        "seed_vs_optimized_score_rel_diff": agreement,
        "results": table,
    }


def print_table(report: dict) -> None:
    s, m = report["settings"], report["machine"]
    print(f"NCSN benchmark: ngf={s['ngf']} batch={s['batch']} L={s['num_levels']} on {m['device']} "
          f"({m['device_name'] or m['cpu_capability']}, {m['cpu_capability']}, {m['threads']} threads), "
          f"medians of {s['repeats']} repeats")
    print(f"optimized path: {report['optimized_settings']}; seed vs optimized scores differ by "
          f"{report['seed_vs_optimized_score_rel_diff']:.1e} (relative L2)")
    header = (f"{'code':32s} {'train it/s':>10s} {'x base':>6s} {'CPU-s/it':>8s} {'x base':>6s}   "
              f"{'sample evals*img/s':>18s} {'x base':>6s} {'CPU-ms':>6s} {'x base':>6s}")
    print(header)
    print("-" * len(header))
    for name, e in report["results"].items():
        print(f"{name:32s} {e['train_median']:10.3f} {e['train_ratio']:6.2f} {e['train_cpu_median']:8.2f} "
              f"{e['train_cpu_ratio']:6.2f}   {e['sample_median']:18.1f} {e['sample_ratio']:6.2f} "
              f"{e['sample_cpu_median']:6.2f} {e['sample_cpu_ratio']:6.2f}")
    print("x base: speed relative to the baseline (wall clock; CPU: this process's CPU time, which "
          "leaves out the baseline's DataLoader workers)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ngf", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--num-levels", type=int, default=10)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iters", type=int, default=5, help="training iterations per repeat")
    parser.add_argument("--n-steps-each", type=int, default=1, help="Langevin steps per level per repeat")
    parser.add_argument("--step-lr", type=float, default=2e-5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--compile", action="store_true", help="torch.compile in the optimized path")
    parser.add_argument("--variants", action="store_true",
                        help="also time the seed loop around this network and the other memory format")
    parser.add_argument("--bf16", action="store_true",
                        help="also time bf16 autocast (1 iteration, 1 sampler level per repeat)")
    parser.add_argument("--out", default="benchmark.json")
    parser.add_argument("--smoke-test", action="store_true", help="tiny sizes, one repeat, seconds")
    args = parser.parse_args(argv)
    for name in ("ngf", "batch", "num_levels", "repeats", "iters", "n_steps_each"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.step_lr <= 0:
        parser.error(f"--step-lr must be > 0, got {args.step_lr}")
    if args.ngf < 8:
        parser.error(f"--ngf must be >= 8, got {args.ngf}")
    if args.smoke_test:
        args.ngf, args.batch, args.repeats, args.iters, args.n_steps_each = 8, 8, 1, 2, 1
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        report = run(args)
    except ValueError as err:
        print(f"benchmark: {err}", file=sys.stderr)
        return 2
    print_table(report)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
