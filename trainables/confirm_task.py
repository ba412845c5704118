"""One task of the confirmation stage: sample a frozen checkpoint with one sampler seed, score it.

The confirmation stage (:mod:`search.confirmation.stage`) runs one :func:`confirm_sample` per
(trial, seed) as a Ray task with the trials' resources. A task never trains: it loads the trial's
checkpoint as a :class:`trainables.sampler_trainable.FrozenCheckpoint` (the EMA weights where the
run kept an average; their digest is checked unchanged before the task returns), samples N images
with the trial's sampler (a joint trial's trained-with settings on its full ladder; a sampler
trial's own settings) and scores them with :func:`trainables.scoring.intervals.evaluate` under the search's
protocol seed, intervals included, plus FID_inf (:func:`trainables.scoring.compare.fid_infinity`).

Paired noise: seed s of every trial starts from the same initial noise (and the same Langevin noise
where the samplers take the same steps): chunk c of seed s is drawn by :func:`trainables.sampling.draw` with
``noise_seed(search seed, "confirmation", s, c)`` (:func:`trainables.contract.params.noise_seed`),
which depends only on the search seed, s and c, never on the trial. The task returns its record,
the features and logits of its samples (the driver bootstraps trials against each other on them)
and a PNG of the first 64 samples; the driver writes them into the experiment folder.
"""

from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Any

import torch

from trainables.contract.metrics import METRICS
from trainables.contract.params import NOISE_STREAMS
from trainables.scoring import compare, intervals, quality

MAX_BATCH = 500  # chains sampled at once (bounds memory); part of the noise stream's definition


def _png(images: torch.Tensor) -> bytes:
    from torchvision.utils import save_image

    buffer = io.BytesIO()
    save_image(images[:64], buffer, format="png", nrow=8, padding=2, pad_value=1.0)
    return buffer.getvalue()


def confirm_sample(job: dict[str, Any]) -> dict[str, Any]:
    """Sample and score one (trial, seed) of the confirmation stage.

    ``job``: trial_id, checkpoint (a training checkpoint folder), config (the trial's params.json:
    its sampler settings override the checkpoint's trained-with ones only for a sampler trial,
    ``use_config_sampler``; its runtime settings say how to run), samples (N), seed (the seed
    index s), search_seed (noise streams and the quality protocol's seed), resamples (bootstrap
    draws of the per-seed intervals), device ("auto": the GPU Ray assigned, else the CPU).

    Returns {"record": JSON-ready dict, "features": float32 [N, 64], "logits": float32 [N, 10],
    "grid": PNG bytes}; a chain that went non-finite gives a record with ``diverged`` and no
    features.
    """
    from trainables import sampling
    from trainables.contract.params import noise_seed
    from trainables.ncsn import runtime as rt
    from trainables.sampler_trainable import FrozenCheckpoint, ladder_levels, sampler_settings

    gpu_ids: list = []
    try:
        import ray

        if ray.is_initialized():
            gpu_ids = ray.get_gpu_ids()
    except ImportError:  # a plain process (tests): the CPU
        pass
    device = rt.trial_device(str(job.get("device", "auto")), gpu_ids)
    config = dict(job.get("config") or {})
    frozen = FrozenCheckpoint(job["checkpoint"], device, runtime=config)
    settings = sampler_settings(frozen.trained_with, config if job.get("use_config_sampler") else {})
    levels = ladder_levels(frozen.num_levels, int(settings["skip_levels"]), int(settings["level_stride"]))
    trainer = frozen.trainer
    score_fn = frozen.score_fn()
    n, seed = int(job["samples"]), int(job["seed"])
    size = trainer.config.image_size
    drawn = sampling.draw(
        score_fn,
        trainer.sigmas,
        n,
        size,
        sampling.SamplerSettings.of(settings),
        lambda chunk: noise_seed(int(job["search_seed"]), "confirmation", seed, chunk),
        trainer.device,
        levels=levels,
        max_batch=MAX_BATCH,
    )
    samples, n_evals = drawn.samples, drawn.n_evals
    warmup, sample_seconds = drawn.warmup_seconds, drawn.sample_seconds
    frozen.assert_untouched()
    record: dict[str, Any] = {
        "trial_id": job["trial_id"],
        "seed": seed,
        "samples": n,
        "checkpoint": str(frozen.folder),
        "weights_sha256": frozen.digest,
        "used_ema": frozen.used_ema,
        "sampler": settings,
        "levels": ",".join(map(str, levels)),
        "nfe_per_sample": n_evals,
        "network_evals": n_evals * n,
        "sample_seconds": sample_seconds,
        "warmup_seconds": warmup,
        "device": str(trainer.device),
        "noise": {
            "search_seed": int(job["search_seed"]),
            "max_batch": MAX_BATCH,
            "offset": NOISE_STREAMS["confirmation"][0],
        },
    }
    if not drawn.finite or not bool(torch.isfinite(samples).all()):
        record.update(diverged=True, stop_reason=f"non-finite samples (seed {seed})")
        record["metrics"] = {name: quality.worst_value(name) for name in METRICS}
        return {"record": record, "features": None, "logits": None, "grid": None}
    start = time.perf_counter()
    precision = rt.protocol_precision(trainer.runtime, trainer.amp_levels)
    score_device = str(trainer.device) if trainer.device.type == "cuda" else "cpu"
    quality.check_images(samples)
    features, logits = quality.embed(samples, score_device)
    reference = quality.mnist_test_reference(score_device)
    metrics = intervals.evaluate_features(
        features,
        logits,
        reference,
        seed=int(job["search_seed"]),
        resamples=int(job.get("resamples", intervals.DEFAULT_RESAMPLES)),
        precision=precision,
    )
    fid_inf = compare.fid_infinity(features, reference, seed=seed)
    record.update(
        diverged=False,
        stop_reason="",
        metrics=metrics,
        fid_inf=fid_inf,
        score_seconds=time.perf_counter() - start,
    )
    return {
        "record": _json_ready(record),
        "features": features.float().cpu(),
        "logits": logits.float().cpu(),
        "grid": _png(samples),
    }


def _json_ready(value: Any) -> Any:
    """NaN (never valid JSON for the readers) as None; everything else as it is."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
