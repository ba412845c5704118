"""Training loop for one NCSN: typed config, on-device data, DSM steps, EMA, checkpoints.

Design:
- the whole training set lives on the device as one uint8 tensor; batches are drawn by indexing
  with the trainer's own torch.Generator and dequantised on the device (no DataLoader);
- nothing in a step reads a value back to the host: loss sums, per-level sums and counts and a
  non-finite counter accumulate on the device and are read once per ``train(n)`` call;
- the runtime settings (device, amp, compile, channels_last, cuda_graphs) are resolved per
  device by :mod:`trainables.ncsn.runtime`, which says why each default is what it is: the reduced
  precision of :mod:`trainables.ncsn.arithmetic` (on a GPU fp16 convolutions at every level, the loss
  scaled by a GradScaler; a design with fp32 levels splits the batch by level into two parts of
  fixed sizes; the loss itself is always fp32), separate static-shape compilations for training
  and sampling, fused Adam on CUDA;
- on CUDA with ``cuda_graphs`` the steady step (draw, forward, backward, unscale, clip, Adam,
  EMA, accumulators) is captured once as a CUDA graph and replayed (:class:`CapturedStep`);
- the first steps of a trainer (compilation, cuDNN autotuning) are timed apart and left out of
  the reported rate;
- on a CPU, with a fixed seed, training is deterministic and a save/load round trip resumes
  bit-identically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from trainables.contract.params import SETTINGS, check_keys, noise_seed
from trainables.ncsn import runtime as rt
from trainables.ncsn.arithmetic import computing, needs_grad_scaler
from trainables.ncsn.captured import CapturedStep, adam_kernel
from trainables.ncsn.checkpoint import CheckpointError, first_line, read_state
from trainables.ncsn.ema import EMA
from trainables.ncsn.loss import dequantize, dsm_loss
from trainables.ncsn.model import CondRefineNetDilated
from trainables.ncsn.sigmas import geometric_sigmas
from trainables.ncsn.timing import synchronize

CHECKPOINT_FORMAT = 1
# Fields that fix the network's shape or meaning: a checkpoint only loads into a trainer that
# agrees on all of them.
_ARCH_FIELDS = ("ngf", "num_levels", "sigma_begin", "sigma_end", "image_size", "noise_conditioning")


def _default(name: str) -> Any:
    return SETTINGS[name].default


@dataclass
class TrainConfig:
    """Every training and runtime setting of one trainer, typed. Meanings, defaults (the 2019
    MNIST settings) and bounds are those of :data:`trainables.contract.params.SETTINGS`.

    Build from a plain dict (the Tune boundary) with ``TrainConfig.from_dict``, which rejects
    unknown keys. Every field is validated; a bad value raises ValueError naming the field.
    """

    ngf: int = _default("ngf")
    num_levels: int = _default("num_levels")
    sigma_begin: float = _default("sigma_begin")
    sigma_end: float = _default("sigma_end")
    batch_size: int = _default("batch_size")
    lr: float = _default("lr")
    beta1: float = _default("beta1")
    beta2: float = _default("beta2")
    weight_decay: float = _default("weight_decay")
    anneal_power: float = _default("anneal_power")
    ema: float = _default("ema")
    grad_clip: float = _default("grad_clip")
    image_size: int = _default("image_size")
    noise_conditioning: str = _default("noise_conditioning")
    seed: int = _default("seed")
    device: str = _default("device")
    amp: str = _default("amp")
    amp_min_sigma: float = _default("amp_min_sigma")
    compile: str = _default("compile")
    channels_last: bool = _default("channels_last")
    cuda_graphs: str = _default("cuda_graphs")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            try:
                setattr(self, f.name, SETTINGS[f.name].coerce(f.name, getattr(self, f.name)))
            except ValueError as err:
                raise ValueError(f"TrainConfig.{err}") from None
        if not self.sigma_begin > self.sigma_end:
            raise ValueError(f"TrainConfig.sigma_begin={self.sigma_begin!r}: must be > sigma_end={self.sigma_end!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a plain dict; unknown keys are a ValueError naming them."""
        check_keys(values, (f.name for f in dataclasses.fields(cls)), "TrainConfig")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when usable else CPU; 'cuda' without usable CUDA is a ValueError giving the
    reason. Outside Ray; a trial's device comes from its assignment (:func:`trainables.ncsn.runtime.trial_device`)."""
    return rt.local_device(name)


def prepare_images(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """Check uint8 [N, C, H, W] images and zero-pad 28x28 to 32x32 when image_size is 32."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        got = (getattr(images, "dtype", type(images).__name__), tuple(getattr(images, "shape", ())))
        raise ValueError(f"images must be a uint8 tensor [N, C, H, W], got {got}")
    if images.shape[0] < 1:
        raise ValueError("images must hold at least one image, got N=0")
    h, w = images.shape[2:]
    if h != w:
        raise ValueError(f"images must be square, got {h}x{w}")
    if h == image_size:
        return images.contiguous()
    if h == 28 and image_size == 32:
        return F.pad(images, (2, 2, 2, 2)).contiguous()  # zeros = MNIST's black background
    raise ValueError(f"image_size={image_size} does not fit images of {h}x{w}")


class Trainer:
    """Trains one NCSN from a TrainConfig (or plain dict) and uint8 images [N, C, H, W].

    Attributes: config, device, images (uint8 on device, padded to image_size), sigmas (float32
    [L] on device, largest first), model, ema (EMA or None), optimizer, generator, step.
    """

    def __init__(self, config: TrainConfig | dict[str, Any], images: torch.Tensor):
        if isinstance(config, dict):
            config = TrainConfig.from_dict(config)
        self.config = cfg = config
        self.device = resolve_device(cfg.device)
        try:
            self.runtime = rt.resolve(cfg, self.device)
        except ValueError as err:
            raise ValueError(f"TrainConfig.{err}") from None
        self.channels_last = cfg.channels_last
        self.images = prepare_images(images, cfg.image_size).to(self.device)
        self.image_shape = tuple(self.images.shape[1:])
        self.sigmas = geometric_sigmas(cfg.sigma_begin, cfg.sigma_end, cfg.num_levels, device=self.device)
        rt.set_fp32_precision(self.device)
        # The amp precision for the k largest levels, fp32 for the rest (trainables/ncsn/runtime.py).
        self.amp_levels = rt.amp_levels(self.sigmas.tolist(), self.runtime.amp, self.runtime.amp_min_sigma)
        self._split = rt.batch_split(cfg.batch_size, self.amp_levels, cfg.num_levels)
        self._split_weights = None
        if self._split is not None:
            w_amp, w_fp32 = self._split.weights
            n = self._split.n_amp
            weights = [torch.full((n,), w_amp), torch.full((cfg.batch_size - n,), w_fp32)]
            self._split_weights = torch.cat(weights).to(self.device)

        # Weights depend on the seed only, and the caller's global RNG is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = CondRefineNetDilated(
                ngf=cfg.ngf,
                num_levels=cfg.num_levels,
                channels=self.image_shape[0],
                image_size=cfg.image_size,
                noise_conditioning=cfg.noise_conditioning,
                sigmas=self.sigmas.cpu(),
            )
        self.model = model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=cfg.lr,
            betas=(cfg.beta1, cfg.beta2),
            weight_decay=cfg.weight_decay,
            **adam_kernel(self.device, captured=self.runtime.captured_training),
        )
        # fp16's exponent range: the small levels' gradients (~sigma / batch per pixel) would
        # underflow. Dynamic loss scale, all on the device (fused Adam skips a step with an inf).
        scaled = self.amp_levels > 0 and needs_grad_scaler(self.runtime.precision)
        self.scaler = torch.amp.GradScaler(self.device.type) if scaled else None
        self.ema = EMA(self.model, cfg.ema) if cfg.ema > 0 else None
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(cfg.seed)
        self.step = 0
        mode = self.runtime.compile_train
        self._train_forward = self.model if mode is None else rt.compile_for_training(self.model, mode)
        self._scores: dict[int, rt.LevelScore] = {}
        # Compilation, autotuning and the capture of the step happen in the first steps: timed
        # apart, not in the rate.
        self._captured = CapturedStep(self) if self.runtime.captured_training else None
        self._warmup_left = CapturedStep.WARMUP + 1 if self._captured else (2 if mode is not None else 1)
        self._new_accumulators()

    # ----------------------------------------------------------------------------- training
    def _new_accumulators(self) -> None:
        L, dev = self.config.num_levels, self.device
        # float64: thousands of steps of sums of ~D/2-sized losses keep their digits.
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        self._nonfinite = torch.zeros((), dtype=torch.float64, device=dev)
        self._level_sum = torch.zeros(L, dtype=torch.float64, device=dev)
        self._level_count = torch.zeros(L, dtype=torch.float64, device=dev)
        self._steps_since = 0

    def _reset_accumulators(self) -> None:
        # In place: a captured step holds these tensors' addresses.
        for t in (self._loss_sum, self._nonfinite, self._level_sum, self._level_count):
            t.zero_()
        self._steps_since = 0

    def _forward(self, x: torch.Tensor, level_idx: torch.Tensor, precision: str) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with computing(precision, self.device.type):
            return self._train_forward(x, level_idx)

    def _network(self, x: torch.Tensor, level_idx: torch.Tensor) -> torch.Tensor:
        """The training forward: one precision for the batch, or the split's amp head and fp32
        tail (static sizes; instance norms act per example, so splitting changes nothing else)."""
        split = self._split
        if split is None:
            whole = self.runtime.precision if self.amp_levels >= self.config.num_levels else "fp32"
            return self._forward(x, level_idx, whole)
        n = split.n_amp
        head = self._forward(x[:n], level_idx[:n], self.runtime.precision).float()
        tail = self._forward(x[n:], level_idx[n:], "fp32").float()
        return torch.cat([head, tail])

    def _draw_levels(self, batch: int) -> torch.Tensor | None:
        """The split's stratified levels (amp levels first), or None for the uniform draw."""
        split = self._split
        if split is None:
            return None
        g, dev = self.generator, self.device
        head = torch.randint(0, split.k, (split.n_amp,), generator=g, device=dev)
        tail = torch.randint(split.k, split.num_levels, (batch - split.n_amp,), generator=g, device=dev)
        return torch.cat([head, tail])

    def _train_step(self) -> None:
        """One optimiser step: replayed from the captured graph once there is one, else run."""
        if self._captured is not None:
            self._captured.step()
        else:
            self._step_kernels()
        if self.ema is not None:
            self.ema.num_updates += 1
        self._steps_since += 1
        self.step += 1

    def _step_kernels(self) -> None:
        """The device work of one step, no host sync and no Python state that a CUDA-graph
        replay would not repeat (the counters are :meth:`_train_step`'s)."""
        cfg = self.config
        idx = torch.randint(0, self.images.shape[0], (cfg.batch_size,), generator=self.generator, device=self.device)
        x = dequantize(self.images[idx], generator=self.generator)
        loss, per_example, level_idx = dsm_loss(
            self._network,
            x,
            self.sigmas,
            cfg.anneal_power,
            generator=self.generator,
            return_parts=True,
            level_idx=self._draw_levels(cfg.batch_size),
            weights=self._split_weights,
        )
        self.optimizer.zero_grad(set_to_none=True)
        scaler = self.scaler
        (loss if scaler is None else scaler.scale(loss)).backward()
        if scaler is not None:
            scaler.unscale_(self.optimizer)  # clip the true gradients; a found inf skips the step
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip, foreach=True)
        if scaler is None:
            self.optimizer.step()
        else:
            scaler.step(self.optimizer)
            scaler.update()
        if self.ema is not None:
            self.ema.fold(self.model)
        per_example = per_example.detach().double()
        self._loss_sum += loss.detach()
        self._nonfinite += (~torch.isfinite(loss.detach())).double()
        self._level_sum.index_add_(0, level_idx, per_example)
        self._level_count.index_add_(0, level_idx, torch.ones_like(per_example))

    def train(self, n_iters: int, step_guard: Callable[[], Any] | None = None) -> dict[str, Any]:
        """Run ``n_iters`` optimiser steps; return a summary of the steps since the last call.

        Keys: loss (mean batch loss), per_level_loss (list of L per-example means, NaN for a
        level not drawn), per_level_count (examples drawn per level), finite (False if any step's
        loss was NaN/inf), nonfinite_steps, iterations (total steps so far), iterations_run,
        seconds (all steps), warmup_steps and warmup_seconds (a new trainer's first steps:
        compilation, autotuning), iters_per_s (the steps after the warm-up; all steps when the
        call ran no other). ``step_guard``: a context manager factory every steady step runs
        inside (the GPU check: ``torch.cuda.set_sync_debug_mode("error")``).
        """
        if isinstance(n_iters, bool) or not isinstance(n_iters, int) or n_iters < 0:
            raise ValueError(f"n_iters must be a non-negative integer, got {n_iters!r}")
        self.model.train()
        start = time.perf_counter()
        warmup = min(self._warmup_left, n_iters)
        for _ in range(warmup):
            self._train_step()
        if warmup:
            self._sync()  # the warm-up's end, timed apart
        self._warmup_left -= warmup
        warm_end = time.perf_counter()
        guard = step_guard or contextlib.nullcontext
        for _ in range(n_iters - warmup):
            with guard():
                self._train_step()
        summary = self._read_accumulators()  # the host sync of the steady steps
        end = time.perf_counter()
        steady, steady_s = n_iters - warmup, end - (warm_end if warmup else start)
        if steady == 0:
            steady, steady_s = n_iters, end - start
        summary.update(
            seconds=end - start,
            warmup_steps=warmup,
            warmup_seconds=warm_end - start,
            iters_per_s=steady / steady_s if steady_s > 0 else float("nan"),
        )
        return summary

    def _sync(self) -> None:
        synchronize(self.device)

    def _read_accumulators(self) -> dict[str, Any]:
        packed = torch.cat([self._loss_sum.view(1), self._nonfinite.view(1), self._level_sum, self._level_count]).cpu()
        L, n = self.config.num_levels, self._steps_since
        sums, counts = packed[2 : 2 + L], packed[2 + L :]
        per_level = [float(s / c) if c > 0 else float("nan") for s, c in zip(sums, counts)]
        loss = float(packed[0]) / n if n else float("nan")
        nonfinite = int(packed[1])
        self._reset_accumulators()
        return {
            "loss": loss,
            "per_level_loss": per_level,
            "per_level_count": [int(c) for c in counts],
            "finite": nonfinite == 0 and (n == 0 or math.isfinite(loss)),
            "nonfinite_steps": nonfinite,
            "iterations": self.step,
            "iterations_run": n,
        }

    @torch.no_grad()
    def poison_weights(self) -> None:
        """Fault injection for tests of the divergence path: NaN into the output conv's bias."""
        self.model.end_conv.bias.fill_(float("nan"))

    # ----------------------------------------------------------------------------- sampling
    def score_fn(self, use_ema: bool = True) -> rt.LevelScore:
        """The score s(x, i) for the sampler: (x float [B, C, H, W] in [0, 1] units, level_idx
        int64 [B]) -> float32 [B, C, H, W]. Uses the EMA weights when ``use_ema`` and EMA is on,
        the trained weights otherwise. The amp precision for the trainer's amp levels, fp32 for the others
        (``at_level(i)`` picks without a host sync), channels_last as the trainer; compiled for
        sampling (its own static-shape compilation) where compile is on, and replayed as CUDA
        graphs where cuda_graphs is on. Built once per module and reused.
        """
        module = self.ema.module if (use_ema and self.ema is not None) else self.model
        key = id(module)
        if key not in self._scores:
            self._scores[key] = rt.sampler_score(module, self.runtime, self.amp_levels, self.config.num_levels)
        return self._scores[key]

    # ---------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: config, step, model, EMA, optimiser and RNG states.

        Only tensors, numbers, strings and containers, so torch.load(weights_only=True) reads it.
        """
        rng = {
            "device_type": self.device.type,
            "torch": torch.get_rng_state(),
            "generator": self.generator.get_state(),
            # Only this trainer's device: a CPU trial never touches CUDA, a GPU trial only its GPU.
            "cuda": [torch.cuda.get_rng_state(self.device)] if self.device.type == "cuda" else None,
        }
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "rng": rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict()``; the architecture fields of the configs must agree, and the
        weights must fit them (:class:`CheckpointError` otherwise)."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {state.get('format')!r} is not {CHECKPOINT_FORMAT}")
        saved = state["config"]
        for name in _ARCH_FIELDS:
            if saved[name] != getattr(self.config, name):
                raise ValueError(
                    f"checkpoint has {name}={saved[name]!r}, this trainer has {getattr(self.config, name)!r}"
                )
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])  # new state tensors: capture again
        except (RuntimeError, KeyError, ValueError) as err:
            raise CheckpointError(
                f"holds weights of another network shape than its config says ({first_line(err)})"
            ) from None
        if self._captured is not None:
            self._captured = CapturedStep(self)
            self._warmup_left = max(self._warmup_left, CapturedStep.WARMUP + 1)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if state["ema"] is not None:
                self.ema.load_state_dict(state["ema"])
            else:  # EMA switched on at resume: start the average from the current weights
                self.ema = EMA(self.model, self.config.ema)
        self.step = int(state["step"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        if rng["device_type"] == self.device.type:
            self.generator.set_state(rng["generator"].cpu())
        else:
            warnings.warn(
                f"checkpoint RNG is from a {rng['device_type']} generator, this trainer runs on "
                f"{self.device.type}: reseeding from (seed, step); the run will not repeat bit for bit",
                stacklevel=2,
            )
            self.generator.manual_seed(noise_seed(self.config.seed, "training", self.step))
        if rng.get("cuda") and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"][0].cpu(), self.device)
        self._reset_accumulators()

    def save(self, path: str | os.PathLike) -> None:
        """Write state_dict() to ``path`` atomically (a temporary file, then os.replace)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(self.state_dict(), f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    @classmethod
    def load(cls, path: str | os.PathLike, images: torch.Tensor, device: str | None = None) -> Trainer:
        """A Trainer resumed from ``save(path)``; ``device`` overrides the saved config's."""
        state = read_state(path)
        values = dict(state["config"])
        if device is not None:
            values["device"] = device
        trainer = cls(TrainConfig.from_dict(values), images)
        trainer.load_state_dict(state)
        return trainer
