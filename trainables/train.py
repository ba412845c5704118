"""Training loop for one NCSN: typed config, on-device data, DSM steps, EMA, checkpoints.

Design:
- the whole training set lives on the device as one uint8 tensor; batches are drawn by indexing
  with the trainer's own torch.Generator and dequantised on the device (no DataLoader);
- nothing in a step reads a value back to the host: loss sums, per-level sums and counts and a
  non-finite counter accumulate on the device and are read once per ``train(n)`` call;
- channels_last everywhere (on this project's AVX2 CPU it makes convolutions ~1.4x and the 5x5
  pooling several times faster); on CUDA also bf16 autocast for the network (the loss itself
  stays fp32) and fused Adam; optionally torch.compile (CUDA graphs for the fixed-shape sampler).
  bf16 autocast is off by default on a CPU: without AVX512-BF16/AMX it is emulated and tens of
  times slower (platform/benchmark.py --variants measures it);
- on a CPU, with a fixed seed, training is deterministic and a save/load round trip resumes
  bit-identically.
"""

from __future__ import annotations

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

from trainables.ema import EMA
from trainables.loss import dequantize, dsm_loss
from trainables.model import CondRefineNetDilated
from trainables.params import SETTINGS, check_keys
from trainables.sigmas import geometric_sigmas

CHECKPOINT_FORMAT = 1
# Fields that fix the network's shape or meaning: a checkpoint only loads into a trainer that
# agrees on all of them.
_ARCH_FIELDS = ("ngf", "num_levels", "sigma_begin", "sigma_end", "image_size", "noise_conditioning")


def _default(name: str) -> Any:
    return SETTINGS[name].default


@dataclass
class TrainConfig:
    """Every training and runtime setting of one trainer, typed. Meanings, defaults (the 2019
    MNIST settings) and bounds are those of :data:`trainables.params.SETTINGS`.

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
    amp: bool | None = _default("amp")
    compile: bool = _default("compile")
    channels_last: bool = _default("channels_last")

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
    """'auto' -> CUDA when available else CPU; 'cuda' without a GPU is a ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"TrainConfig.device={name!r}: CUDA is not available on this machine")
    return torch.device(name)


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
        on_cuda = self.device.type == "cuda"
        self.amp = on_cuda if cfg.amp is None else cfg.amp
        self.channels_last = cfg.channels_last
        self.images = prepare_images(images, cfg.image_size).to(self.device)
        self.image_shape = tuple(self.images.shape[1:])
        self.sigmas = geometric_sigmas(cfg.sigma_begin, cfg.sigma_end, cfg.num_levels, device=self.device)
        if on_cuda:
            torch.backends.cudnn.benchmark = True

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
            **_adam_kernel(self.device),
        )
        self.ema = EMA(self.model, cfg.ema) if cfg.ema > 0 else None
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(cfg.seed)
        self.step = 0
        self._train_forward = torch.compile(self.model) if cfg.compile else self.model
        self._sample_forwards: dict[int, Callable] = {}
        self._reset_accumulators()

    # ----------------------------------------------------------------------------- training
    def _reset_accumulators(self) -> None:
        L, dev = self.config.num_levels, self.device
        # float64: thousands of steps of sums of ~D/2-sized losses keep their digits.
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        self._nonfinite = torch.zeros((), dtype=torch.float64, device=dev)
        self._level_sum = torch.zeros(L, dtype=torch.float64, device=dev)
        self._level_count = torch.zeros(L, dtype=torch.float64, device=dev)
        self._steps_since = 0

    def _network(self, x: torch.Tensor, level_idx: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return self._train_forward(x, level_idx)

    def _train_step(self) -> None:
        cfg = self.config
        idx = torch.randint(0, self.images.shape[0], (cfg.batch_size,), generator=self.generator, device=self.device)
        x = dequantize(self.images[idx], generator=self.generator)
        loss, per_example, level_idx = dsm_loss(
            self._network, x, self.sigmas, cfg.anneal_power, generator=self.generator, return_parts=True
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip, foreach=True)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        per_example = per_example.detach().double()
        self._loss_sum += loss.detach()
        self._nonfinite += (~torch.isfinite(loss.detach())).double()
        self._level_sum.index_add_(0, level_idx, per_example)
        self._level_count.index_add_(0, level_idx, torch.ones_like(per_example))
        self._steps_since += 1
        self.step += 1

    def train(self, n_iters: int) -> dict[str, Any]:
        """Run ``n_iters`` optimiser steps; return a summary of the steps since the last call.

        Keys: loss (mean batch loss), per_level_loss (list of L per-example means, NaN for a
        level not drawn), per_level_count (examples drawn per level), finite (False if any step's
        loss was NaN/inf), nonfinite_steps, iterations (total steps so far), iterations_run,
        seconds, iters_per_s.
        """
        if isinstance(n_iters, bool) or not isinstance(n_iters, int) or n_iters < 0:
            raise ValueError(f"n_iters must be a non-negative integer, got {n_iters!r}")
        self.model.train()
        start = time.perf_counter()
        for _ in range(n_iters):
            self._train_step()
        summary = self._read_accumulators()  # the only host sync
        seconds = time.perf_counter() - start
        summary.update(seconds=seconds, iters_per_s=n_iters / seconds if seconds > 0 else float("nan"))
        return summary

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
    def score_fn(self, use_ema: bool = True) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The score s(x, i) for the sampler: (x float [B, C, H, W] in [0, 1] units, level_idx
        int64 [B]) -> float32 [B, C, H, W]. Uses the EMA weights when ``use_ema`` and EMA is on,
        the trained weights otherwise. Runs with the trainer's autocast/memory format settings.
        """
        module = self.ema.module if (use_ema and self.ema is not None) else self.model
        forward = self._sample_forward(module)
        graphs = self.config.compile and self.device.type == "cuda"

        def score(x: torch.Tensor, level_idx: torch.Tensor) -> torch.Tensor:
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                out = forward(x, level_idx)
            # A CUDA-graph output is overwritten by the next replay: hand out a copy.
            return out.float().clone() if graphs and out.dtype == torch.float32 else out.float()

        return score

    def _sample_forward(self, module: torch.nn.Module) -> Callable:
        if not self.config.compile:
            return module
        key = id(module)
        if key not in self._sample_forwards:
            # Sampling calls the network hundreds of times on one fixed shape: CUDA graphs
            # ("reduce-overhead") remove the per-kernel launch cost there.
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self._sample_forwards[key] = torch.compile(module, mode=mode)
        return self._sample_forwards[key]

    # ---------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: config, step, model, EMA, optimiser and RNG states.

        Only tensors, numbers, strings and containers, so torch.load(weights_only=True) reads it.
        """
        rng = {
            "device_type": self.device.type,
            "torch": torch.get_rng_state(),
            "generator": self.generator.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict()``; the architecture fields of the configs must agree."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {state.get('format')!r} is not {CHECKPOINT_FORMAT}")
        saved = state["config"]
        for name in _ARCH_FIELDS:
            if saved[name] != getattr(self.config, name):
                raise ValueError(
                    f"checkpoint has {name}={saved[name]!r}, this trainer has {getattr(self.config, name)!r}"
                )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
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
            self.generator.manual_seed(self.config.seed * 1_000_003 + self.step)
        if rng.get("cuda") is not None and torch.cuda.is_available():
            cuda_states = [s.cpu() for s in rng["cuda"]]
            if len(cuda_states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda_states)
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
        state = torch.load(path, map_location="cpu", weights_only=True)
        values = dict(state["config"])
        if device is not None:
            values["device"] = device
        trainer = cls(TrainConfig.from_dict(values), images)
        trainer.load_state_dict(state)
        return trainer


def _adam_kernel(device: torch.device) -> dict[str, bool]:
    """Fused Adam (one kernel for all parameters) where the build has it, else foreach."""
    if device.type == "cuda":
        return {"fused": True}
    return {"foreach": True}
