"""The parameter schema: every setting a trial understands, in one table.

Each :class:`Setting` gives its kind, default, bounds, meaning and scope:

- ``training``: shapes or trains the network (read by :class:`trainables.ncsn.train.TrainConfig`);
- ``sampler``: changes only annealed Langevin sampling (read by both trainables; the ones marked
  ``frozen_only`` exist only in a sampler search on frozen checkpoints, where the sampler may
  visit fewer levels than the network was trained on);
- ``runtime``: how a trial runs, not what it computes (device, precision, memory format).

The search-space validator (:mod:`search_spaces.validate`), ``TrainConfig``, the warm starts and
the sampler trainable all read this table; nothing else lists parameter names, defaults or
bounds. Defaults are the 2019 NCSN MNIST setting (Song & Ermon 2019) where it has one. Torch-free.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

TRAINING, SAMPLER, RUNTIME = "training", "sampler", "runtime"
SCOPES = (TRAINING, SAMPLER, RUNTIME)


@dataclass(frozen=True)
class Setting:
    """What a trial accepts for one config key.

    kind is the Python type of a value (float, int, bool, str); nullable allows None as well.
    low/high bound numeric values (inclusive unless the matching *_open is set); values, where
    given, lists every allowed value; pattern, where given, is a regular expression a text value
    may match instead of being one of ``values``.
    """

    kind: type
    default: Any
    meaning: str
    scope: str
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False
    values: tuple | None = None
    pattern: str | None = None
    nullable: bool = False
    frozen_only: bool = False
    # (alias, value) pairs a value may be written as: YAML 1.1 reads off/on as false/true, and
    # checkpoints of earlier versions hold booleans or null for settings that are now text.
    aliases: tuple = ()

    def canonical(self, value: Any) -> Any:
        """``value`` with an alias replaced by what it stands for (type-exact: 1 is not true)."""
        for alias, meant in self.aliases:
            if type(alias) is type(value) and alias == value:
                return meant
        return value

    def kind_problem(self, value: Any) -> str | None:
        """Why ``value`` is not of this setting's kind, or None when it is (ints pass as floats)."""
        if value is None and self.nullable:
            return None
        if self.kind is bool:
            return None if isinstance(value, bool) else "must be true or false"
        if self.kind is str:
            return None if isinstance(value, str) else "must be text"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be an integer" if self.kind is int else "must be a finite number"
        if self.kind is int and not isinstance(value, int):
            return "must be an integer"
        if not math.isfinite(value):
            return "must be a finite number"
        return None

    def problem(self, value: Any) -> str | None:
        """Why ``value`` (already of the right kind) is not allowed, or None when it is."""
        if value is None and self.nullable:
            return None
        if self.values is not None and value not in self.values:
            if self.pattern is None or not re.fullmatch(self.pattern, str(value)):
                return f"must be one of {', '.join(map(repr, self.values))}" + (
                    f" or match {self.pattern}" if self.pattern else ""
                )
        if self.low is not None:
            if value < self.low or (self.low_open and value == self.low):
                return f"must be {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            if value > self.high or (self.high_open and value == self.high):
                return f"must be {'<' if self.high_open else '<='} {self.high:g}"
        return None

    def coerce(self, name: str, value: Any) -> Any:
        """``value`` checked and in this setting's kind (an int becomes a float for a float
        setting, an alias its value); ``ValueError`` ``"name=value: problem (meaning)"`` otherwise."""
        original, value = value, self.canonical(value)
        problem = self.kind_problem(value) or self.problem(value)
        if problem:
            raise ValueError(f"{name}={original!r}: {problem} ({self.meaning})")
        if self.kind is float and value is not None:
            return float(value)
        return value


SETTINGS: dict[str, Setting] = {
    # --- training ---------------------------------------------------------------------------
    "sigma_begin": Setting(
        float, 1.0, "largest noise level sigma_1, in [0, 1] pixel units", TRAINING, low=0.0, low_open=True
    ),
    "sigma_end": Setting(
        float, 0.01, "smallest noise level sigma_L, in [0, 1] pixel units", TRAINING, low=0.0, low_open=True
    ),
    "num_levels": Setting(int, 10, "number L of geometric noise levels", TRAINING, low=2),
    "batch_size": Setting(int, 128, "training images per step", TRAINING, low=1),
    "lr": Setting(float, 1e-3, "Adam learning rate", TRAINING, low=0.0, low_open=True),
    "beta1": Setting(float, 0.9, "Adam beta1", TRAINING, low=0.0, high=1.0, high_open=True),
    "beta2": Setting(float, 0.999, "Adam beta2", TRAINING, low=0.0, high=1.0, high_open=True),
    "weight_decay": Setting(float, 0.0, "Adam (L2) weight decay", TRAINING, low=0.0),
    "anneal_power": Setting(float, 2.0, "loss weight sigma_i^p; 2 weights levels equally", TRAINING, low=0.0),
    "ema": Setting(
        float,
        0.0,
        "EMA momentum of the weights used for sampling; 0 = off",
        TRAINING,
        low=0.0,
        high=1.0,
        high_open=True,
    ),
    "grad_clip": Setting(float, 0.0, "max global gradient norm; 0 = no clipping", TRAINING, low=0.0),
    "ngf": Setting(int, 64, "base width of the score network", TRAINING, low=8),
    "image_size": Setting(int, 28, "H = W of the network input (32 pads MNIST)", TRAINING, values=(28, 32)),
    "noise_conditioning": Setting(
        str,
        "level",
        "'level': conditional norms (NCSN); 'sigma': output / sigma_i (NCSNv2)",
        TRAINING,
        values=("level", "sigma"),
    ),
    # --- sampler ----------------------------------------------------------------------------
    "step_lr": Setting(
        float,
        2e-5,
        "Langevin step eps, code convention: alpha_i = eps * (sigma_i / sigma_L)^2",
        SAMPLER,
        low=0.0,
        low_open=True,
    ),
    "n_steps_each": Setting(int, 100, "Langevin steps T per noise level", SAMPLER, low=1),
    "denoise": Setting(bool, False, "final denoising step x + sigma_L^2 s(x, L-1)", SAMPLER),
    "skip_levels": Setting(
        int, 0, "largest noise levels the sampler skips (truncated ladder)", SAMPLER, low=0, frozen_only=True
    ),
    "level_stride": Setting(
        int,
        1,
        "the sampler visits every k-th level, always ending at sigma_L (sub-sampled ladder)",
        SAMPLER,
        low=1,
        frozen_only=True,
    ),
    # --- runtime ----------------------------------------------------------------------------
    "seed": Setting(int, 0, "seeds weights, batches, noise levels and noise", RUNTIME, low=0),
    "device": Setting(
        str,
        "auto",
        "'auto' (in a trial: the GPU Ray assigned it, else the CPU; outside Ray: CUDA if usable), "
        "'cpu', 'cuda' or 'cuda:N'",
        RUNTIME,
        values=("auto", "cpu", "cuda"),
        pattern=r"cuda:\d+",
    ),
    # Per-device defaults of the "auto" values below, and why: trainables/ncsn/runtime.py.
    "amp": Setting(
        str,
        "auto",
        "precision of the levels with sigma >= amp_min_sigma, fp32 below (trainables/ncsn/arithmetic.py); "
        "'auto': fp16 on a GPU with tensor cores, off elsewhere",
        RUNTIME,
        values=("auto", "off", "fp16", "bf16", "tf32"),
        aliases=((None, "auto"), (False, "off"), (True, "bf16")),
    ),
    "amp_min_sigma": Setting(
        float,
        None,
        "under amp, levels with a smaller sigma run in fp32; null: the precision's own floor "
        "(fp16 and tf32 hold the accuracy bounds at every level: 0; bf16's rounding swamps the "
        "response to small noise: 0.1; python -m trainables.tools.precision)",
        RUNTIME,
        low=0.0,
        nullable=True,
    ),
    "compile": Setting(
        str,
        "auto",
        "torch.compile mode of the network ('off', 'default', 'reduce-overhead', 'max-autotune', "
        "'max-autotune-no-cudagraphs'); separate static-shape compilations for training and sampling; "
        "'auto': 'off' (on CUDA the training step is a captured CUDA graph instead; trainables/ncsn/runtime.py)",
        RUNTIME,
        values=("auto", "off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
        aliases=((False, "off"), (True, "default")),
    ),
    "channels_last": Setting(bool, True, "NHWC memory format (faster convs and pooling on CPU and CUDA)", RUNTIME),
    "cuda_graphs": Setting(
        str,
        "auto",
        "replay each sampler network evaluation as a CUDA graph (one launch instead of ~2,000 kernels); "
        "'auto': on for CUDA",
        RUNTIME,
        values=("auto", "off", "on"),
        aliases=((False, "off"), (True, "on")),
    ),
}


def names(*scopes: str, frozen_only: bool | None = None) -> tuple[str, ...]:
    """Names of the settings in ``scopes`` (all when none is given), in table order.
    frozen_only=False leaves out the frozen-checkpoint-only settings, True keeps only those."""
    return tuple(
        name
        for name, s in SETTINGS.items()
        if (not scopes or s.scope in scopes) and (frozen_only is None or s.frozen_only == frozen_only)
    )


# A search-space file may search or fix these: every training setting and the sampler settings
# of a joint search.
SPEC_PARAMS = names(TRAINING, SAMPLER, frozen_only=False)
# What a spec's ``runtime:`` section may set (never searched: how a trial runs, the same for all
# trials of a search); the seed is the searcher's (``searcher.seed``).
SPEC_RUNTIME = tuple(name for name in names(RUNTIME) if name != "seed")
# What a sampler search may search: the sampler settings, the ladder truncation included.
SAMPLER_PARAMS = names(SAMPLER)
# The sampler settings a joint trial samples with (and a checkpoint was scored with).
JOINT_SAMPLER_PARAMS = names(SAMPLER, frozen_only=False)


def defaults(keys: Iterable[str] = SPEC_PARAMS) -> dict:
    """{name: default} of ``keys`` (default: every spec parameter, i.e. the 2019 MNIST setting)."""
    return {name: SETTINGS[name].default for name in keys}


def as_kind(name: str, value: Any) -> Any:
    """``value`` in setting ``name``'s kind where that loses nothing (1 -> 1.0 for a float,
    101.0 -> 101 for an int); anything else unchanged."""
    kind = SETTINGS[name].kind
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value == int(value):
        return int(value)
    return value


def check_keys(config: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    """``ValueError`` naming every key of ``config`` outside ``allowed``: a key that reaches a
    trial without meaning anything there is a mistake upstream, never dropped silently."""
    allowed = set(allowed)
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {unknown}; known: {sorted(allowed)}")


def ladder_levels(num_levels: int, skip_levels: int = 0, level_stride: int = 1) -> tuple[int, ...]:
    """Ladder indices a truncated / sub-sampled sampler visits (0 = largest sigma).

    Levels ``skip_levels``, ``skip_levels + level_stride``, ... below ``num_levels``, then the last
    level L - 1 if the stride stepped over it: the chain always ends at sigma_L, where the step
    sizes are anchored (alpha_i = step_lr (sigma_i / sigma_L)^2 on the full ladder).
    ``ValueError`` naming the key for a skip that leaves no level or a stride below 1.
    """
    if isinstance(skip_levels, bool) or not isinstance(skip_levels, int) or not 0 <= skip_levels < num_levels:
        raise ValueError(
            f"skip_levels={skip_levels!r}: must be an integer in [0, {num_levels - 1}] "
            f"for a ladder of {num_levels} levels"
        )
    if isinstance(level_stride, bool) or not isinstance(level_stride, int) or level_stride < 1:
        raise ValueError(f"level_stride={level_stride!r}: must be an integer >= 1")
    levels = list(range(skip_levels, num_levels, level_stride))
    if levels[-1] != num_levels - 1:
        levels.append(num_levels - 1)
    return tuple(levels)


def nfe_per_sample(num_levels: int, settings: dict) -> int:
    """Network evaluations per sample of a sampler setting on a ladder of ``num_levels``: the
    levels it visits (:func:`ladder_levels`) x ``n_steps_each``, +1 for the final denoising step."""
    levels = ladder_levels(num_levels, int(settings.get("skip_levels", 0)), int(settings.get("level_stride", 1)))
    return len(levels) * int(settings["n_steps_each"]) + int(bool(settings.get("denoise")))


# The noise streams of a search: seed = search seed x 1_000_003 + offset + stride x index + chunk.
# Every trial and task of a search draws a stream's numbers alike, so two trials evaluated at the
# same point start from the same noise (common random numbers), whichever code draws them; the
# offsets keep the streams apart (the confirmation never reuses the noise a trial was ranked on).
NOISE_STREAMS = {
    "training": (0, 1),  # the trainer's generator after a resume: index = the step
    "evaluation": (0, 1),  # a joint trial's evaluation: index = the evaluation's number, one chunk
    "sampler": (100_000, 1_000),  # a sampler trial's look: index = the look, chunks of max_batch
    "confirmation": (500_000, 1_000),  # a confirmation seed: index = the seed's number
    "proposals": (0, 1),  # Optuna's sampler for trial number index (search.searcher.NumberSeeded)
}
NOISE_INDICES = 100  # indices of a chunked stream below this keep the streams apart
NOISE_CHUNKS = 1_000  # chunks per index of a chunked stream


def noise_seed(search_seed: int, stream: str, index: int, chunk: int = 0) -> int:
    """The seed of chunk ``chunk`` of item ``index`` of the noise stream ``stream``
    (:data:`NOISE_STREAMS`) of a search seeded ``search_seed``: the one place these seeds are
    made. ``ValueError`` for an index or chunk that would run into another stream."""
    offset, stride = NOISE_STREAMS[stream]
    if stride > 1 and not (0 <= index < NOISE_INDICES and 0 <= chunk < NOISE_CHUNKS):
        raise ValueError(
            f"{stream} noise: index={index}, chunk={chunk} must lie in [0, {NOISE_INDICES}) and [0, {NOISE_CHUNKS})"
        )
    if stride == 1 and chunk:
        raise ValueError(f"{stream} noise is drawn in one chunk (chunk={chunk})")
    return int(search_seed) * 1_000_003 + offset + stride * int(index) + int(chunk)
