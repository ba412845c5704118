"""The sampler-only Ray Tune trainable: a frozen NCSN checkpoint, sampled with the trial's sampler.

The step size, steps per level and the final denoising step change only sampling, so a trial here
loads a trained network once (its EMA weights where the run kept an average) and never trains it:
it draws samples by annealed Langevin dynamics with its own ``step_lr``, ``n_steps_each``,
``denoise`` and, where asked, a truncated noise ladder (``skip_levels`` largest levels skipped,
every ``level_stride``-th level visited, always ending at sigma_L), and scores them with the same
quality protocol as the training trainable (:func:`trainables.scoring.intervals.evaluate`, seed = the
search seed).

ASHA's fidelity is the number of samples scored: the trial reports after each count of
``SamplerBudget.samples`` (e.g. 250, 1000, 4000), drawing only the new samples each time and
scoring all of them, so a bad sampler is dropped after a cheap look. Every report carries the
network evaluations spent and the checkpoint sampled from, and a digest of the sampling weights,
checked unchanged before each report (an ``AssertionError`` ends the trial otherwise).

Trial config (flat, from the sampler search): ``checkpoint`` (a checkpoint folder holding
``state.pt`` and ``metrics.json`` as written by :mod:`trainables.tune_trainable`) and any of
:data:`SAMPLER_SETTINGS`; a setting the trial leaves out is the checkpoint's trained-with value
(``skip_levels`` 0 and ``level_stride`` 1: the full ladder).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainables import sampling
from trainables.contract.layout import (
    METRICS_FILE,
    RUNTIME_KEY,
    SAMPLER_TIME_ATTR,
    SAMPLES_FILE,
    SAMPLES_TENSOR,
    STATE_FILE,
)
from trainables.contract.metrics import interval_keys
from trainables.contract.params import (
    JOINT_SAMPLER_PARAMS,
    RUNTIME,
    SAMPLER_PARAMS,
    SETTINGS,
    SPEC_RUNTIME,
    check_keys,
    ladder_levels,
    names,
    noise_seed,
)
from trainables.ncsn import runtime as rt
from trainables.ncsn.checkpoint import CheckpointError, read_state
from trainables.ncsn.sigmas import snr_of_step
from trainables.ncsn.train import TrainConfig, Trainer
from trainables.scoring import intervals, quality
from trainables.tune_trainable import restored_folder

# What a sampler trial's config may hold: the frozen checkpoint's folder, sampler settings and the
# search's runtime settings (how this trial samples, whatever the training run used).
CHECKPOINT_KEY = "checkpoint"
TRIAL_KEYS = (CHECKPOINT_KEY, *SAMPLER_PARAMS, *SPEC_RUNTIME)
_RUNTIME_FIELDS = names(RUNTIME)


@dataclass(frozen=True)
class SamplerBudget:
    """Per-trial budget shared by every trial of a sampler search.

    samples: ASHA's looks, the cumulative number of samples scored at each report (increasing).
    seed: search seed (noise streams and the quality protocol's seed). max_batch: chains run at
    once (bounds memory). metric: the search's ranking metric (named in the report rows).
    """

    samples: tuple[int, ...]
    seed: int = 0
    device: str = "auto"
    max_batch: int = 500
    metric: str = "kid"

    def __post_init__(self) -> None:
        counts = tuple(self.samples)
        increasing = all(b > a for a, b in zip(counts, counts[1:]))
        if not counts or not increasing or counts[0] <= max(quality.PR_K, quality.DC_K):
            raise ValueError(
                f"SamplerBudget.samples={self.samples!r}: must be increasing counts above "
                f"{max(quality.PR_K, quality.DC_K)}"
            )
        if self.max_batch < 1:
            raise ValueError(f"SamplerBudget.max_batch={self.max_batch!r}: must be >= 1")


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and raw values (any device or memory
    format), in name order: equal digests mean identical weights."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def sampling_weights(state: Mapping[str, Any]) -> Mapping[str, torch.Tensor]:
    """The weights a ``Trainer.state_dict()`` samples with: the EMA average where the run kept
    one, else the trained weights."""
    return state["ema"]["weights"] if state.get("ema") is not None else state["model"]


def read_checkpoint_record(folder: str | Path) -> dict:
    """``metrics.json`` of a training checkpoint: {"metrics", "counters", "config"}.
    ``ValueError`` naming the folder when it is not a training checkpoint."""
    folder = Path(folder)
    if not (folder / STATE_FILE).is_file() or not (folder / METRICS_FILE).is_file():
        raise ValueError(
            f"checkpoint {str(folder)!r}: not a training checkpoint (needs {STATE_FILE} and {METRICS_FILE})"
        )
    return json.loads((folder / METRICS_FILE).read_text())


class FrozenCheckpoint:
    """A trained network loaded for sampling only.

    Attributes: folder, record (its metrics.json), trainer (the restored Trainer, never trained),
    module (the network sampled: EMA weights where present), used_ema, digest (weights_digest of
    ``module`` at load time), trained_with (the sampler settings the run was scored with).
    """

    def __init__(self, folder: str | Path, device: str = "auto", runtime: Mapping[str, Any] | None = None):
        self.folder = Path(folder).resolve()
        self.record = read_checkpoint_record(self.folder)
        state = read_state(self.folder / STATE_FILE)
        # How to run is decided where the sampling runs (``runtime``: the sampler search's runtime
        # settings, defaults for the rest), never by the machine that trained; the seed stays;
        # fields this version does not know are not the network's shape.
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        values = {k: v for k, v in state["config"].items() if k in known and (k not in _RUNTIME_FIELDS or k == "seed")}
        values.update({k: v for k, v in (runtime or {}).items() if k in _RUNTIME_FIELDS and k != "seed"})
        values["device"] = device
        # The Trainer needs images to build; sampling reads none, so one blank image will do.
        placeholder = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
        self.trainer = Trainer(TrainConfig.from_dict(values), placeholder)
        try:
            self.trainer.load_state_dict(state)
        except CheckpointError as err:
            raise CheckpointError(f"{self.folder / STATE_FILE}: {err}") from None
        self.used_ema = self.trainer.ema is not None
        self.module = self.trainer.ema.module if self.used_ema else self.trainer.model
        for net in (self.trainer.model, self.module):
            net.eval().requires_grad_(False)
        self.digest = weights_digest(self.module.state_dict())
        config = self.record.get("config") or {}
        self.trained_with = {key: config[key] for key in JOINT_SAMPLER_PARAMS if key in config}

    def assert_untouched(self) -> None:
        """The sampling weights are byte-identical to those loaded (AssertionError otherwise)."""
        now = weights_digest(self.module.state_dict())
        assert now == self.digest, f"sampling weights of {self.folder} changed: {self.digest} -> {now}"

    @property
    def num_levels(self) -> int:
        return self.trainer.config.num_levels

    def score_fn(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return self.trainer.score_fn(use_ema=True)


def sampler_settings(trained_with: Mapping[str, Any], config: Mapping[str, Any]) -> dict:
    """The trial's effective sampler: its config's values of the sampler settings, the
    checkpoint's trained-with values for the rest (the full ladder where the trial names none).
    ``ValueError`` when neither gives step_lr or n_steps_each."""
    settings = {key: SETTINGS[key].default for key in SAMPLER_PARAMS if key not in ("step_lr", "n_steps_each")}
    settings.update(trained_with)
    settings.update({key: config[key] for key in SAMPLER_PARAMS if key in config})
    for key in ("step_lr", "n_steps_each"):
        if key not in settings:
            raise ValueError(f"{key}: neither the trial config nor the checkpoint's metrics.json gives it")
    settings["step_lr"] = float(settings["step_lr"])
    settings["n_steps_each"] = int(settings["n_steps_each"])
    settings["denoise"] = bool(settings["denoise"])
    return settings


def _finite_or_worst(name: str, value: float) -> float:
    # Optuna rejects NaN and would leave the trial RUNNING forever.
    value = float(value)
    return quality.worst_value(name) if math.isnan(value) else value


def _restore() -> tuple[torch.Tensor | None, dict]:
    """Samples drawn and counters saved by the latest Tune checkpoint (None, fresh counters if none)."""

    counters = {"looks": 0, "sample_seconds": 0.0, "score_seconds": 0.0, "sample_evals_total": 0, "warmup_seconds": 0.0}
    with restored_folder(SAMPLES_TENSOR) as folder:
        if folder is None:
            return None, counters
        samples = torch.load(folder / SAMPLES_TENSOR, map_location="cpu", weights_only=True)
        counters.update(json.loads((folder / METRICS_FILE).read_text())["counters"])
    return samples, counters


def _write_look(
    folder: Path,
    samples: torch.Tensor,
    metrics: dict,
    counters: dict,
    config: dict,
    settings: dict,
    runtime: dict | None = None,
) -> None:
    from torchvision.utils import save_image

    save_image(samples[:64], folder / SAMPLES_FILE, nrow=8, padding=2, pad_value=1.0)
    torch.save(samples, folder / SAMPLES_TENSOR)  # float32: a resumed trial scores the same set
    record = {"metrics": metrics, "counters": counters, "config": config, "sampler": settings, RUNTIME_KEY: runtime}
    (folder / METRICS_FILE).write_text(json.dumps(record, indent=1, default=float))


def _write_interval_layout() -> None:
    """The TensorBoard layout that draws each metric Ray logs with its 95% interval as a band."""
    from ray import tune
    from torch.utils.tensorboard import SummaryWriter

    from trainables.tune_trainable import interval_layout

    with SummaryWriter(tune.get_context().get_trial_dir()) as writer:
        writer.add_custom_scalars(interval_layout("ray/tune/"))


def sampler_trainable(config: dict[str, Any], budget: SamplerBudget) -> None:
    """Ray Tune function trainable (wrap with ``tune.with_parameters(sampler_trainable, budget=...)``).

    Reports once per count in ``budget.samples`` (``samples_scored``, ASHA's time attribute):
    every quality metric, ``nfe_per_sample`` and ``sample_evals_total`` (network evaluations per
    image, all samples so far), the effective sampler settings, ``checkpoint`` (the folder
    sampled from), ``checkpoint_trial``, ``checkpoint_iterations``, ``used_ema`` and
    ``weights_sha256`` (:func:`weights_digest` of the sampling weights, unchanged throughout).
    """
    import ray
    from ray import tune

    from trainables.tune_trainable import runtime_record, use_search_compile_cache

    config = dict(config)
    check_keys(config, TRIAL_KEYS, "sampler trial config")
    # The GPUs Ray assigned, and only those; none: the CPU, and CUDA is never touched.
    device = rt.trial_device(str(config.get("device", budget.device)), ray.get_gpu_ids())
    frozen = FrozenCheckpoint(config[CHECKPOINT_KEY], device, runtime=config)
    use_search_compile_cache(frozen.trainer)
    settings = sampler_settings(frozen.trained_with, config)
    levels = ladder_levels(frozen.num_levels, int(settings["skip_levels"]), int(settings["level_stride"]))
    trainer = frozen.trainer
    source = frozen.record.get("config") or {}
    trained = frozen.record.get("counters") or {}
    batch = int(source.get("batch_size", trainer.config.batch_size))
    fixed = {
        "checkpoint": str(frozen.folder),
        "checkpoint_trial": frozen.folder.parent.name,
        # the training trainable counts batch_size network evaluations per iteration
        "checkpoint_iterations": int(trained.get("train_evals_total", 0)) // max(batch, 1),
        "used_ema": frozen.used_ema,
        "weights_sha256": frozen.digest,
        **settings,
        "levels": ",".join(map(str, levels)),
        "levels_visited": len(levels),
        "snr_nominal": snr_of_step(settings["step_lr"], float(trainer.sigmas[-1])),
    }
    samples, counters = _restore()
    counters.setdefault("warmup_seconds", 0.0)
    _write_interval_layout()
    score_fn = frozen.score_fn()
    precision = rt.protocol_precision(trainer.runtime, trainer.amp_levels)
    ran_with = runtime_record(trainer)
    n_evals = len(levels) * settings["n_steps_each"] + int(settings["denoise"])
    for look, target in enumerate(budget.samples):
        if look < counters["looks"]:
            continue  # scored before an interruption: its samples came back from the checkpoint
        have = 0 if samples is None else len(samples)
        drawn = sampling.draw(
            score_fn,
            trainer.sigmas,
            target - have,
            trainer.config.image_size,
            sampling.SamplerSettings.of(settings),
            lambda chunk, look=look: noise_seed(budget.seed, "sampler", look, chunk),
            trainer.device,
            levels=levels,
            max_batch=budget.max_batch,
        )
        samples = drawn.samples if samples is None else torch.cat([samples, drawn.samples])
        n_evals = drawn.n_evals
        counters["sample_seconds"] += drawn.sample_seconds
        counters["warmup_seconds"] += drawn.warmup_seconds
        counters["sample_evals_total"] += n_evals * (target - have)
        frozen.assert_untouched()
        if not drawn.finite or not torch.isfinite(samples).all():
            # A step too large for the score sends the chain to NaN: the worst value, never a
            # NaN, goes to the searcher, and the trial ends here.
            worst = {name: quality.worst_value(name) for name in quality.METRICS}
            tune.report(
                {
                    **worst,
                    SAMPLER_TIME_ATTR: target,
                    "nfe_per_sample": n_evals,
                    "diverged": True,
                    "stop_reason": f"non-finite samples at look {look + 1} ({target} samples)",
                    **counters,
                    **fixed,
                }
            )
            return
        start = time.perf_counter()
        metrics = intervals.evaluate(samples, seed=budget.seed, precision=precision)
        counters["score_seconds"] += time.perf_counter() - start
        counters["looks"] = look + 1
        result = {name: _finite_or_worst(name, metrics[name]) for name in quality.METRICS}
        result.update({key: float(metrics[key]) for key in interval_keys() if key in metrics})  # 95% intervals
        result.update(
            kid_std=float(metrics["kid_std"]),
            protocol_id=metrics["protocol_id"],
            nfe_per_sample=n_evals,
            **{SAMPLER_TIME_ATTR: target},
            diverged=False,
            stop_reason="",
            **counters,
            **fixed,
        )
        result[RUNTIME_KEY] = ran_with
        with tempfile.TemporaryDirectory(prefix="ncsn-sampler-") as tmp:
            _write_look(Path(tmp), samples, metrics, counters, config, settings, ran_with)
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(tmp))
