"""Training checkpoints on disk: what ``--checkpoint`` names, read without loading a network.

A sampler-only search starts from checkpoints of a joint search: an experiment folder (the best
checkpoint of each of its best trials), a trial folder (its best checkpoint) or one checkpoint
folder (``checkpoint_NNNNNN`` holding state.pt and metrics.json). Torch-free: only metrics.json
is read here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from trainables.contract.layout import CHECKPOINT_GLOB, METRICS_FILE, STATE_FILE
from trainables.contract.params import JOINT_SAMPLER_PARAMS, SETTINGS


@dataclass(frozen=True)
class CheckpointInfo:
    """A training checkpoint and its original score, read from its metrics.json.

    path: the checkpoint folder; trial: its trial folder name; experiment: its experiment
    folder name; metric/value: the ranking metric and the checkpoint's original value of it;
    samples: how many samples that value was scored on; protocol_id: the scoring protocol;
    iterations: training iterations; config: the trial's flat config (ladder and trained-with
    sampler); metrics: every original metric (numbers only).
    """

    path: Path
    trial: str
    experiment: str
    metric: str
    value: float
    samples: int
    protocol_id: str
    iterations: int
    config: dict
    metrics: dict = field(default_factory=dict)

    @property
    def num_levels(self) -> int:
        return int(self.config.get("num_levels", SETTINGS["num_levels"].default))

    @property
    def ladder(self) -> tuple[float, float, int]:
        """(sigma_begin, sigma_end, num_levels) the network was trained on."""
        return (
            float(self.config.get("sigma_begin", SETTINGS["sigma_begin"].default)),
            float(self.config.get("sigma_end", SETTINGS["sigma_end"].default)),
            self.num_levels,
        )

    @property
    def trained_with(self) -> dict:
        """The sampler settings the checkpoint was scored with (defaults where the config has none)."""
        return {key: self.config.get(key, SETTINGS[key].default) for key in JOINT_SAMPLER_PARAMS}

    def to_record(self) -> dict:
        """JSON form for search.json (``from_record`` reads it back)."""
        out = dataclasses.asdict(self)
        out["path"] = str(self.path)
        return out

    @classmethod
    def from_record(cls, record: dict) -> CheckpointInfo:
        return cls(**{**record, "path": Path(record["path"])})


def checkpoint_info(folder: str | Path, metric: str) -> CheckpointInfo:
    """Read one checkpoint folder. ``ValueError`` naming the folder when it is not a training
    checkpoint (state.pt and metrics.json) or its metrics.json lacks ``metric``."""
    folder = Path(folder).expanduser().resolve()
    if not (folder / STATE_FILE).is_file() or not (folder / METRICS_FILE).is_file():
        raise ValueError(
            f"--checkpoint {str(folder)!r}: not a training checkpoint ({STATE_FILE} and {METRICS_FILE} missing)"
        )
    try:
        record = json.loads((folder / METRICS_FILE).read_text())
        metrics = record["metrics"]
        value = float(metrics[metric])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"--checkpoint {str(folder)!r}: {METRICS_FILE} holds no {metric} ({err.__class__.__name__}: {err})"
        ) from None
    config = dict(record.get("config") or {})
    counters = record.get("counters") or {}
    batch = int(config.get("batch_size", SETTINGS["batch_size"].default))
    protocol = metrics.get("protocol") or {}
    return CheckpointInfo(
        path=folder,
        trial=folder.parent.name,
        experiment=folder.parent.parent.name,
        metric=metric,
        value=value,
        samples=int(protocol.get("n", 0)),
        protocol_id=str(metrics.get("protocol_id", "")),
        # the training trainable counts batch_size network evaluations per iteration
        iterations=int(counters.get("train_evals_total", 0)) // max(batch, 1),
        config=config,
        metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
    )


def _better(a: CheckpointInfo, mode: str) -> tuple:
    """Sort key: best value first (non-finite last), then trial and folder name for ties."""
    value = a.value if math.isfinite(a.value) else math.inf if mode == "min" else -math.inf
    return (value if mode == "min" else -value, a.trial, a.path.name)


def _checkpoint_folders(trial_dir: Path) -> list[Path]:
    return sorted(
        p for p in trial_dir.glob(CHECKPOINT_GLOB) if (p / STATE_FILE).is_file() and (p / METRICS_FILE).is_file()
    )


def _best_of(folders: list[Path], metric: str, mode: str) -> CheckpointInfo | None:
    infos = [checkpoint_info(f, metric) for f in folders]
    infos = [i for i in infos if math.isfinite(i.value)]
    return min(infos, key=lambda i: _better(i, mode)) if infos else None


def resolve_checkpoints(path: str | Path, metric: str, mode: str, top_k: int = 1) -> list[CheckpointInfo]:
    """The checkpoint(s) a ``--checkpoint`` path names, best first.

    A checkpoint folder: itself. A trial folder: its best kept checkpoint by ``metric``. An
    experiment folder: the best checkpoint of each of its ``top_k`` best trials (ranked by that
    checkpoint's value; Ray keeps each trial's best-scored checkpoints, so it is the trial's best
    evaluation). ``ValueError`` (one line, naming the path) for a path that holds none, ``top_k``
    above the trials available or with a single checkpoint, and checkpoints scored under
    different protocols (their values are not comparable).
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"--top-k {top_k!r}: must be an integer >= 1")
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise ValueError(f"--checkpoint {str(path)!r}: no such folder")
    single = (folder / STATE_FILE).exists() or bool(_checkpoint_folders(folder))
    if single and top_k > 1:
        raise ValueError(
            f"--top-k {top_k}: {str(folder)!r} is a single trial or checkpoint; "
            f"give the experiment folder to take the top {top_k} trials"
        )
    if (folder / STATE_FILE).exists():
        return [checkpoint_info(folder, metric)]
    if single:
        best = _best_of(_checkpoint_folders(folder), metric, mode)
        if best is None:
            raise ValueError(f"--checkpoint {str(folder)!r}: no checkpoint of this trial has a finite {metric}")
        return [best]
    trials = [
        best
        for trial in sorted(p for p in folder.iterdir() if p.is_dir())
        if (best := _best_of(_checkpoint_folders(trial), metric, mode)) is not None
    ]
    if not trials:
        raise ValueError(
            f"--checkpoint {str(folder)!r}: holds no training checkpoint ({STATE_FILE} and "
            f"{METRICS_FILE} in <trial>/{CHECKPOINT_GLOB}/ with a finite {metric}); give an "
            f"experiment folder of a joint search, a trial folder or a checkpoint folder"
        )
    protocols = sorted({t.protocol_id for t in trials})
    if len(protocols) > 1:
        raise ValueError(
            f"--checkpoint {str(folder)!r}: its checkpoints were scored under "
            f"{len(protocols)} protocols ({', '.join(protocols)}); their {metric} values "
            f"cannot rank them: pass one trial's checkpoint"
        )
    if top_k > len(trials):
        raise ValueError(f"--top-k {top_k}: {str(folder)!r} has only {len(trials)} trial(s) with a scored checkpoint")
    return sorted(trials, key=lambda t: _better(t, mode))[:top_k]
