"""The Ray Tune function trainable: train an NCSN, sample, score, report, checkpoint.

One trial = one NCSN trained with the trial's config. Every ``eval_every`` training iterations it
samples ``eval_samples`` images by annealed Langevin dynamics (EMA weights where enabled), scores
them with :mod:`trainables.scoring.quality` and reports one flat result together with a checkpoint that
holds the full training state, the scored sample grid and the full metric record.

The trial config is a flat dict of NCSN settings (what the searcher proposes plus the spec's fixed
values); the search budget (iterations, eval_every, eval_samples, seed) arrives separately through
``tune.with_parameters`` so that it does not pollute the HParams comparison.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainables import sampling
from trainables.contract import params
from trainables.contract.data import load_mnist
from trainables.contract.layout import (
    COMPILE_CACHE_DIR,
    METRICS_FILE,
    RUNTIME_KEY,
    SAMPLES_FILE,
    STATE_FILE,
    TRAIN_TIME_ATTR,
    TRAJECTORY_FILE,
    surviving_checkpoint,
)
from trainables.contract.metrics import hi_key, interval_keys, lo_key
from trainables.contract.params import noise_seed
from trainables.ncsn import runtime as rt
from trainables.ncsn.checkpoint import CheckpointError, read_state
from trainables.ncsn.sigmas import snr_of_step
from trainables.ncsn.train import TrainConfig, Trainer
from trainables.scoring import intervals, quality

# What a joint trial's config may hold: the spec's parameters (training and sampler settings)
# and the runtime settings. Anything else is a mistake upstream.
TRIAL_KEYS = (*params.SPEC_PARAMS, *params.names(params.RUNTIME))


@dataclass(frozen=True)
class Budget:
    """Per-trial budget shared by every trial of a search."""

    iterations: int
    eval_every: int
    eval_samples: int
    seed: int = 0
    device: str = "auto"
    n_frames: int = 8


def train_config_from(config: dict[str, Any], budget: Budget) -> TrainConfig:
    """Map a flat trial config onto the trainer's typed config: its training and runtime settings
    (the sampler settings are read at sampling time). ``ValueError`` naming any key that is no
    setting of a joint trial."""
    params.check_keys(config, TRIAL_KEYS, "trial config")
    values = {k: v for k, v in config.items() if params.SETTINGS[k].scope != params.SAMPLER}
    values.setdefault("seed", budget.seed)
    values.setdefault("device", budget.device)
    return TrainConfig.from_dict(values)


def sample_and_score(trainer: Trainer, config: dict[str, Any], budget: Budget, eval_index: int) -> dict | None:
    """Draw ``budget.eval_samples`` images with the trial's sampler settings and score them
    (None when the Langevin chain produced non-finite values).

    The sampler's random stream depends only on the search seed and the evaluation index, so two
    trials evaluated at the same point start from the same noise.
    """
    step_lr = float(config["step_lr"])
    drawn = sampling.draw(
        trainer.score_fn(use_ema=True),
        trainer.sigmas,
        budget.eval_samples,
        trainer.config.image_size,
        sampling.SamplerSettings.of(config),
        lambda chunk: noise_seed(budget.seed, "evaluation", eval_index, chunk),
        trainer.device,
        n_frames=min(budget.n_frames, trainer.config.num_levels * int(config["n_steps_each"])),
    )
    if not drawn.finite:
        return None  # the chain blew up (step_lr too large for this ladder)
    samples = drawn.samples
    start = time.perf_counter()
    metrics = intervals.evaluate(
        samples, seed=budget.seed, precision=rt.protocol_precision(trainer.runtime, trainer.amp_levels)
    )
    score_seconds = time.perf_counter() - start
    snr = drawn.snr.float().cpu()
    return {
        "metrics": metrics,
        "samples": samples,
        "frames": [f[:8].float().clamp(0, 1).cpu() for f in drawn.frames],
        "n_evals": drawn.n_evals,
        "sample_seconds": drawn.sample_seconds,
        "sample_warmup_seconds": drawn.warmup_seconds,
        "score_seconds": score_seconds,
        "snr_first": float(snr[0]),
        "snr_last": float(snr[-1]),
        "snr_target": snr_of_step(step_lr, float(trainer.sigmas[-1])),
    }


def _grid(images: torch.Tensor, nrow: int) -> torch.Tensor:
    from torchvision.utils import make_grid

    return make_grid(images, nrow=nrow, padding=2, pad_value=1.0)


def _trajectory_strip(frames: list[torch.Tensor]) -> torch.Tensor:
    """Rows = chains, columns = Langevin frames from noise to sample."""
    stacked = torch.stack(frames, dim=1)  # [B, F, C, H, W]
    b, f = stacked.shape[:2]
    return _grid(stacked.reshape(b * f, *stacked.shape[2:]), nrow=f)


def _flat_result(summary: dict, evaluation: dict, counters: dict, config: dict) -> dict:
    m = evaluation["metrics"]
    result = {name: float(m[name]) for name in quality.METRICS if name in m}
    result.update({key: float(m[key]) for key in interval_keys() if key in m})  # the 95% intervals
    result["kid_std"] = float(m.get("kid_std", float("nan")))
    result["protocol_id"] = quality.protocol_id(m["protocol"])
    per_level = summary.get("per_level_loss")
    result.update(
        iterations=summary["iterations"],
        loss=float(summary["loss"]),
        loss_sigma_max=float(per_level[0]) if per_level is not None else float("nan"),
        loss_sigma_min=float(per_level[-1]) if per_level is not None else float("nan"),
        train_iters_per_s=float(summary.get("iters_per_s", 0.0)),
        nfe_per_sample=evaluation["n_evals"],
        sample_evals_per_s=evaluation["n_evals"] * len(evaluation["samples"]) / max(evaluation["sample_seconds"], 1e-9),
        snr_first_level=evaluation["snr_first"],
        snr_last_level=evaluation["snr_last"],
        snr_nominal=evaluation["snr_target"],
        diverged=False,
        stop_reason="",
        **counters,
    )
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else _json_safe(v)) for k, v in result.items()}


def interval_layout(prefix: str = "quality/") -> dict:
    """TensorBoard's Custom Scalars layout: every metric as a band (a Margin chart of its value and
    95% interval: the scalars ``<prefix><metric>``, ``_lo``, ``_hi``; here those of
    :func:`_write_interval_scalars`, for a sampler trial the ones Ray logs under ``ray/tune/``)."""
    return {
        "quality (95% interval)": {
            name: ["Margin", [f"{prefix}{name}", f"{prefix}{lo_key(name)}", f"{prefix}{hi_key(name)}"]]
            for name in quality.METRICS
        }
    }


def _write_interval_scalars(writer, result: dict, step: int) -> None:
    for name in quality.METRICS:
        for key in (name, lo_key(name), hi_key(name)):
            if key in result and math.isfinite(result[key]):
                writer.add_scalar(f"quality/{key}", result[key], step)


def _json_safe(value: float) -> float:
    # inf is a legal "worst" value for Tune and Optuna; NaN never is.
    return float("inf") if math.isnan(value) else value


def _write_checkpoint_dir(folder: Path, trainer: Trainer, evaluation: dict, counters: dict, config: dict) -> None:
    from torchvision.utils import save_image

    trainer.save(folder / STATE_FILE)
    n = min(64, len(evaluation["samples"]))
    save_image(evaluation["samples"][:n], folder / SAMPLES_FILE, nrow=8, padding=2, pad_value=1.0)
    if evaluation["frames"]:
        save_image(_trajectory_strip(evaluation["frames"]), folder / TRAJECTORY_FILE)
    record = {"metrics": evaluation["metrics"], "counters": counters, "config": config}
    record[RUNTIME_KEY] = runtime_record(trainer)
    (folder / METRICS_FILE).write_text(json.dumps(record, indent=1, default=float))


def use_search_compile_cache(trainer: Trainer) -> None:
    """With compile on, point inductor at the search's cache folder (next to the trial folders),
    so every trial after the first loads the compiled graphs instead of compiling again. Called
    before the first compiled call (torch.compile itself is lazy)."""
    from ray import tune

    if trainer.runtime.compile_train or trainer.runtime.compile_sample:
        rt.use_compile_cache(Path(tune.get_context().get_trial_dir()).parent / COMPILE_CACHE_DIR)


def runtime_record(trainer: Trainer) -> dict:
    """How the trial ran, as resolved on its device (the report shows it): device and its name,
    amp, the levels in the amp precision, compile modes, channels_last, cuda_graphs."""
    record = trainer.runtime.record()
    device = trainer.device
    record["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    record["amp_levels"] = trainer.amp_levels
    record["threads"] = torch.get_num_threads()
    return record


@contextlib.contextmanager
def restored_folder(marker: str) -> Iterator[Path | None]:
    """The folder of the checkpoint Tune restores this trial from (None: a fresh start). On local
    or shared storage, a checkpoint deleted since Ray's snapshot named it gives way to the
    trial's newest surviving one (:func:`trainables.contract.layout.surviving_checkpoint`), or to none."""
    import pyarrow.fs
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        yield None
    elif isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        yield surviving_checkpoint(checkpoint.path, marker)
    else:
        with checkpoint.as_directory() as folder:
            yield Path(folder)


def _restore(trainer: Trainer) -> dict:
    """Load the latest Tune checkpoint into ``trainer``; return the saved counters (or fresh ones)."""

    counters = {
        "evaluations": 0,
        "train_seconds": 0.0,
        "sample_seconds": 0.0,
        "score_seconds": 0.0,
        "sample_evals_total": 0,
        "train_evals_total": 0,
        "warmup_seconds": 0.0,
    }
    with restored_folder(STATE_FILE) as folder:
        if folder is None:
            return counters
        state = read_state(folder / STATE_FILE, map_location=trainer.device)
        try:
            trainer.load_state_dict(state)
        except CheckpointError as err:
            raise CheckpointError(f"{folder / STATE_FILE}: {err}") from None
        record = json.loads((folder / METRICS_FILE).read_text())
    counters.update(record["counters"])
    return counters


def _report_divergence(reason: str, iterations: int, loss: float, counters: dict, writer) -> None:
    """End a trial that went non-finite: the worst value of every metric, never a NaN (Optuna
    would leave a NaN trial RUNNING forever), and the reason on record."""
    from ray import tune

    worst = {name: quality.worst_value(name) for name in quality.METRICS}
    tune.report(
        {
            **worst,
            TRAIN_TIME_ATTR: iterations,
            "loss": _json_safe(loss),
            "diverged": True,
            "stop_reason": reason,
            **counters,
        }
    )
    writer.add_text("stop_reason", reason, iterations)


def ncsn_trainable(config: dict[str, Any], budget: Budget) -> None:
    """Ray Tune function trainable (wrap with ``tune.with_parameters(ncsn_trainable, budget=...)``)."""
    import ray
    from ray import tune
    from torch.utils.tensorboard import SummaryWriter

    config = dict(config)
    inject_nan_at = config.pop("_inject_nan_at", None)  # fault injection for tests of the divergence path
    # The GPUs Ray assigned, and only those; none: the CPU, and CUDA is never touched.
    device = rt.trial_device(str(config.get("device", budget.device)), ray.get_gpu_ids())
    images, _ = load_mnist(train=True)
    trainer = Trainer(train_config_from({**config, "device": device}, budget), images)
    use_search_compile_cache(trainer)
    counters = _restore(trainer)
    counters.setdefault("warmup_seconds", 0.0)
    writer = SummaryWriter(tune.get_context().get_trial_dir())
    writer.add_custom_scalars(interval_layout())
    try:
        while trainer.step < budget.iterations:
            n = min(budget.eval_every, budget.iterations - trainer.step)
            if inject_nan_at is not None and trainer.step <= inject_nan_at < trainer.step + n:
                trainer.poison_weights()
            summary = trainer.train(n)
            counters["train_seconds"] += summary["seconds"]
            counters["warmup_seconds"] += summary["warmup_seconds"]
            counters["train_evals_total"] = trainer.step * trainer.config.batch_size
            if not summary["finite"]:
                reason = f"non-finite loss within iterations {trainer.step - n}..{trainer.step}"
                _report_divergence(reason, trainer.step, float("inf"), counters, writer)
                return
            counters["evaluations"] += 1
            evaluation = sample_and_score(trainer, config, budget, counters["evaluations"])
            if evaluation is None:
                reason = (
                    f"non-finite Langevin samples at iteration {trainer.step} "
                    f"(step_lr {config['step_lr']:g} too large for this ladder?)"
                )
                _report_divergence(reason, trainer.step, float(summary["loss"]), counters, writer)
                return
            counters["sample_seconds"] += evaluation["sample_seconds"]
            counters["warmup_seconds"] += evaluation["sample_warmup_seconds"]
            counters["score_seconds"] += evaluation["score_seconds"]
            counters["sample_evals_total"] += evaluation["n_evals"] * len(evaluation["samples"])
            result = _flat_result(summary, evaluation, counters, config)
            result[RUNTIME_KEY] = runtime_record(trainer)
            _write_interval_scalars(writer, result, trainer.step)
            writer.add_image("samples", _grid(evaluation["samples"][:64], nrow=8), trainer.step)
            if evaluation["frames"]:
                writer.add_image("langevin_trajectory", _trajectory_strip(evaluation["frames"]), trainer.step)
            writer.flush()
            with tempfile.TemporaryDirectory(prefix="ncsn-ckpt-") as tmp:
                _write_checkpoint_dir(Path(tmp), trainer, evaluation, counters, config)
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(tmp))
    finally:
        writer.close()
