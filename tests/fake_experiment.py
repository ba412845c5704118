"""Small experiment folders in the real on-disk format, written without Ray or torch, for the
analysis tests (the way Ray tests its schedulers with fake results).

:class:`FakeExperiment` writes what a search leaves on disk (the layout: trainables/contract/layout.py):
``search.json`` as the searches write it (kind, spec, source, study name, warm starts; a sampler
search adds its looks, source checkpoints and notices), one ``trial_<id>/`` folder per trial with
Ray's ``result.json`` (the fields trainables/tune_trainable.py and trainables/sampler_trainable.py
report, plus the ones Ray adds), ``params.json``, ``error.txt`` for a trial that raised and the
``checkpoint_NNNNNN/`` folders Ray keeps (metrics.json, a real samples.png), Ray's
``experiment_state-*.json`` and, on request, ``optuna.db`` made with real Optuna and the
confirmation stage's ``confirm/plan.json`` and ``summary.json`` (:meth:`FakeExperiment.confirmation`).
Every scored row carries the 95% intervals an evaluation reports (:func:`intervals_of`).

How a trial ends shapes its files as in a real run: ASHA's STOP decision (at a rung, or at max_t
for a trial that ran to the end) marks the last logged row ``done``; a diverged trial's last row
is the trainable's divergence record (worst value of every metric, the reason); an errored trial
has error.txt and Ray status ERROR; an interrupted one has no final row (optionally a line cut
short) and Ray status RUNNING.

The readers at the end (:func:`json_rows`, :func:`independent_ranking`) read the same files with
plain ``json``, independently of ``analysis/``, for tests to compare against.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainables.contract.layout import (
    CONFIRM_DIR,
    CONFIRM_PLAN,
    CONFIRM_SUMMARY,
    DIVERGED,
    ERROR_FILE,
    ERRORED,
    FINISHED,
    JOINT,
    METRICS_FILE,
    PARAMS_FILE,
    RESULT_FILE,
    SAMPLER,
    SAMPLES_FILE,
    SAMPLES_TENSOR,
    SEARCH_FILE,
    STATE_FILE,
    STOPPED,
    STUDY_FILE,
    TRAJECTORY_FILE,
    UNFINISHED,
    WARM_2019,
    WARM_NCSNV2,
    WARM_TECHNIQUE4,
    WARM_TRAINED_WITH,
    trial_dirname,
)
from trainables.contract.metrics import (
    BETTER,
    METRICS,
    TIED,
    WORSE,
    hi_key,
    lo_key,
    metric_mode,
    protocol_id,
    worst_value,
)

PROTOCOL = protocol_id({"feature_net": "fake", "reference": "mnist-test", "n": 64, "seed": 0})
OTHER_PROTOCOL = "0123456789ab"
ERROR_LINE = "RuntimeError: simulated failure in the training loop"

# search_spaces/smoke.yaml as spec.to_dict() writes it into search.json
SMOKE_SPEC = {
    "name": "smoke",
    "dataset": "mnist",
    "metric": "kid",
    "mode": "min",
    "searcher": {"algorithm": "tpe", "seed": 0},
    "scheduler": {"name": "asha", "grace_period": 10, "reduction_factor": 2},
    "budget": {"num_trials": 6, "max_concurrent": 2, "iterations": 40, "eval_every": 10, "eval_samples": 64},
    "params": {
        "sigma_begin": {"loguniform": [0.5, 20.0]},
        "sigma_end": {"loguniform": [0.005, 0.05]},
        "step_lr": {"loguniform": [1.0e-6, 1.0e-4]},
    },
    "fixed": {
        "num_levels": 4,
        "n_steps_each": 2,
        "batch_size": 16,
        "lr": 0.001,
        "ngf": 8,
        "ema": 0.9,
        "denoise": True,
        "image_size": 28,
    },
    "resources": {"cpu": 1, "gpu": 0},
}
# the warm-start points search_spaces writes for smoke.yaml
SMOKE_WARM = [
    {"label": WARM_2019, "params": {"sigma_begin": 1.0, "sigma_end": 0.01, "step_lr": 2e-05}},
    {
        "label": WARM_NCSNV2,
        "params": {"sigma_begin": 16.875761961808387, "sigma_end": 0.01, "step_lr": 1.3571612977682585e-05},
    },
]
LOOKS = [16, 32, 64]
SAMPLER_SECTION_PARAMS = {
    "n_steps_each": {"int": [1, 4], "log": False},
    "skip_levels": {"int": [0, 1], "log": False},
    "step_lr": {"loguniform": [1.0e-6, 1.0e-4]},
}
_RAY_STATUS = {
    FINISHED: "TERMINATED",
    STOPPED: "TERMINATED",
    DIVERGED: "TERMINATED",
    ERRORED: "ERROR",
    UNFINISHED: "RUNNING",
}


def write_png(path: Path, seed: int) -> Path:
    """A real greyscale PNG of an 8 x 8 grid of 28 x 28 tiles (the layout of samples.png)."""
    from matplotlib.image import imsave

    grid = np.random.default_rng(seed).random((8 * 30 + 2, 8 * 30 + 2))
    imsave(path, grid, cmap="gray", vmin=0.0, vmax=1.0, format="png")
    return path


def _other_metrics(kid: float, rng: random.Random) -> dict:
    """The metrics beside kid, drawn so that their order differs from kid's across trials; recall
    and class coverage stay where digits score (analysis.reporting.confirm's pipeline check stays quiet
    unless a test asks for samples far from digits)."""
    return {
        "fid": round(80 * kid + rng.uniform(0, 12), 4),
        "inception_score": round(rng.uniform(1, 9), 4),
        "precision": round(rng.uniform(0, 1), 4),
        "recall": round(rng.uniform(0.05, 1), 4),
        "density": round(rng.uniform(0, 1.5), 4),
        "coverage": 0.0,
        "class_coverage": round(rng.uniform(0.6, 1), 4),
    }


def intervals_of(values: dict, width: float = 0.1) -> dict:
    """<metric>_lo / <metric>_hi as an evaluation reports them: here value -+ width x |value|
    (kid: -+ 2 x kid / 10, the fake kid_std)."""
    out = {}
    for name, value in values.items():
        if name in METRICS and isinstance(value, (int, float)) and math.isfinite(value):
            half = 2 * value / 10 if name == "kid" else width * abs(value)
            out[lo_key(name)], out[hi_key(name)] = round(value - half, 6), round(value + half, 6)
    return out


def _ray_fields(trial_id: str, index: int, config: dict, checkpoint: str | None, done: bool) -> dict:
    return {
        "timestamp": 1767225600 + index,
        "checkpoint_dir_name": checkpoint,
        "done": done,
        "training_iteration": index + 1,
        "trial_id": trial_id,
        "date": "2026-01-01_00-00-00",
        "time_this_iter_s": 1.5,
        "time_total_s": 1.5 * (index + 1),
        "pid": 4242,
        "hostname": "fake",
        "node_ip": "127.0.0.1",
        "config": config,
        "time_since_restore": 1.5 * (index + 1),
        "iterations_since_restore": index + 1,
    }


@dataclass
class Trial:
    trial_id: str
    end: str
    folder: Path


class FakeExperiment:
    """One experiment folder under ``root/name``; add trials, then :meth:`finish`."""

    def __init__(
        self,
        root: Path,
        name: str = "fake",
        kind: str = JOINT,
        spec: dict | None = None,
        warm_start: list[dict] | None = None,
        write_kind: bool = True,
        **record,
    ):
        self.exp_dir = Path(root) / name
        self.exp_dir.mkdir(parents=True)
        self.kind = kind
        self.spec = json.loads(json.dumps(spec or SMOKE_SPEC))
        self.trials: list[Trial] = []
        self.search = {
            "spec": self.spec,
            "source": str(Path(root) / "smoke.yaml"),
            "budget_mode": "smoke",
            "study_name": f"{name}-0a1b2c3d",
            "warm_start": warm_start if warm_start is not None else (SMOKE_WARM if kind == JOINT else []),
            "resources": {"cpu": 1.0},
            "started": "2026-01-01 00:00:00",
            **record,
        }
        if write_kind:
            self.search = {"kind": kind, **self.search}
        self.write_search()

    @property
    def metric(self) -> str:
        return self.spec["metric"]

    def write_search(self) -> None:
        (self.exp_dir / SEARCH_FILE).write_text(json.dumps(self.search, indent=1))

    def _trial_folder(self, trial_id: str, config: dict, end: str) -> Path:
        folder = self.exp_dir / trial_dirname(trial_id)
        folder.mkdir()
        (folder / PARAMS_FILE).write_text(json.dumps(config))
        self.trials.append(Trial(trial_id, end, folder))
        return folder

    def _write_rows(self, folder: Path, rows: list[dict], end: str, cut_line: bool) -> None:
        text = "".join(json.dumps(r) + "\n" for r in rows)
        if cut_line:  # killed while Ray wrote the next line
            extra = json.dumps(rows[-1])
            text += extra[: len(extra) // 2]
        (folder / RESULT_FILE).write_text(text)
        if end == ERRORED:
            (folder / ERROR_FILE).write_text(
                "Failure # 1 (occurred at 2026-01-01_00-00-00)\nTraceback (most recent call last):\n"
                '  File "tune_trainable.py", line 1, in ncsn_trainable\n' + ERROR_LINE + "\n"
            )

    # --- joint trials -------------------------------------------------------------------------

    def joint_trial(
        self,
        trial_id: str,
        params: dict,
        kids: list[float],
        end: str = FINISHED,
        protocol: str = PROTOCOL,
        keep: int = 2,
        cut_line: bool = False,
        metrics: list[dict] | None = None,
    ) -> Path:
        """A joint trial that evaluated every eval_every iterations with these kid values.

        ``end``: FINISHED / STOPPED (ASHA's STOP marks the last row done), DIVERGED (a non-finite
        loss after the last evaluation: the divergence record), ERRORED (error.txt), UNFINISHED
        (no final row; ``cut_line`` adds half a line). Ray keeps the ``keep`` best checkpoints by
        kid on disk. ``metrics`` overrides metric values per evaluation.
        """
        budget = self.spec["budget"]
        config = {**self.spec["fixed"], **params}
        folder = self._trial_folder(trial_id, config, end)
        rng = random.Random(trial_id)
        nfe = config["num_levels"] * config["n_steps_each"] + int(config["denoise"])
        rows, counters = (
            [],
            {
                "evaluations": 0,
                "train_seconds": 0.0,
                "sample_seconds": 0.0,
                "score_seconds": 0.0,
                "sample_evals_total": 0,
                "train_evals_total": 0,
            },
        )
        for i, kid in enumerate(kids):
            iterations = budget["eval_every"] * (i + 1)
            counters = {
                **counters,
                "evaluations": i + 1,
                "train_seconds": 1.0 * (i + 1),
                "sample_seconds": 0.4 * (i + 1),
                "score_seconds": 0.1 * (i + 1),
                "train_evals_total": iterations * config["batch_size"],
                "sample_evals_total": (i + 1) * nfe * budget["eval_samples"],
            }
            values = {"kid": kid, **_other_metrics(kid, rng), **((metrics or [{}] * len(kids))[i])}
            row = {
                **values,
                **intervals_of(values),
                "kid_std": round(kid / 10, 6),
                "protocol_id": protocol,
                "iterations": iterations,
                "loss": 10.0 / (i + 2),
                "loss_sigma_max": 0.5,
                "loss_sigma_min": 30.0,
                "train_iters_per_s": 12.5,
                "nfe_per_sample": nfe,
                "sample_evals_per_s": 900.0,
                "snr_first_level": 0.01,
                "snr_last_level": 0.2,
                "snr_nominal": 0.0063,
                "diverged": False,
                "stop_reason": "",
                **counters,
            }
            last = i == len(kids) - 1 and end in (FINISHED, STOPPED)
            rows.append({**row, **_ray_fields(trial_id, i, config, f"checkpoint_{i:06d}", done=last)})
        if end == DIVERGED:
            rows.append(self.divergence_record(trial_id, rows, config, counters))
        self._joint_checkpoints(folder, rows, config, keep, end)
        self._write_rows(folder, rows, end, cut_line)
        return folder

    def divergence_record(self, trial_id: str, rows: list[dict], config: dict, counters: dict) -> dict:
        last = rows[-1]["iterations"] if rows else 0
        step = self.spec["budget"]["eval_every"]
        reason = f"non-finite loss within iterations {last}..{last + step}"
        record = {
            **{m: worst_value(m) for m in METRICS},
            "iterations": last + step,
            "loss": math.inf,
            "diverged": True,
            "stop_reason": reason,
            **counters,
        }
        return {**record, **_ray_fields(trial_id, len(rows), config, None, done=False)}

    def _joint_checkpoints(self, folder: Path, rows: list[dict], config: dict, keep: int, end: str) -> None:
        scored = [r for r in rows if not r["diverged"]]
        if end == UNFINISHED:
            keep = 0 if len(scored) < 2 else keep  # interrupted early: Ray had not synced one yet
        best = sorted(scored, key=lambda r: r["kid"])[:keep]
        for row in best:
            ckpt = folder / row["checkpoint_dir_name"]
            ckpt.mkdir()
            (ckpt / STATE_FILE).write_bytes(b"not a real state dict: analysis never opens it")
            metrics = {m: row[m] for m in METRICS} | {
                "kid_std": row["kid_std"],
                "protocol_id": row["protocol_id"],
                "protocol": {"n": self.spec["budget"]["eval_samples"]},
                "class_histogram": [7, 6, 6, 7, 6, 6, 7, 6, 6, 7],
            }
            counters = {
                k: row[k]
                for k in (
                    "evaluations",
                    "train_seconds",
                    "sample_seconds",
                    "score_seconds",
                    "sample_evals_total",
                    "train_evals_total",
                )
            }
            (ckpt / METRICS_FILE).write_text(json.dumps({"metrics": metrics, "counters": counters, "config": config}))
            write_png(ckpt / SAMPLES_FILE, row["training_iteration"])
            write_png(ckpt / TRAJECTORY_FILE, 100 + row["training_iteration"])

    # --- sampler trials ------------------------------------------------------------------------

    def sampler_trial(
        self,
        trial_id: str,
        params: dict,
        kids: list[float],
        end: str = FINISHED,
        family: str = "p",
        source: dict | None = None,
        metrics: list[dict] | None = None,
    ) -> Path:
        """A sampler trial on ``source`` (an entry of search.json's checkpoints; default: the
        first) that scored ``kids`` at the first looks; ``end`` as for :meth:`joint_trial` (a
        diverged trial's record sits at the next look). ``family`` picks the protocol ids (one per
        look: the sample count is part of the protocol)."""
        source = source or self.search["checkpoints"][0]
        trained = source["config"]
        config = {"checkpoint": source["path"], **params}
        folder = self._trial_folder(trial_id, config, end)
        settings = {k: config.get(k, trained.get(k)) for k in ("step_lr", "n_steps_each", "denoise")}
        settings.update(skip_levels=config.get("skip_levels", 0), level_stride=config.get("level_stride", 1))
        levels = list(range(settings["skip_levels"], trained["num_levels"], settings["level_stride"]))
        nfe = len(levels) * settings["n_steps_each"] + int(settings["denoise"])
        fixed = {
            "checkpoint": source["path"],
            "checkpoint_trial": source["trial"],
            "checkpoint_iterations": source["iterations"],
            "used_ema": True,
            "weights_sha256": "ab" * 32,
            **settings,
            "levels": ",".join(map(str, levels)),
            "levels_visited": len(levels),
            "snr_nominal": 0.006,
        }
        rng, looks, rows = random.Random(trial_id), self.search["sampler"]["samples"], []
        for i, kid in enumerate(kids):
            counters = {
                "looks": i + 1,
                "sample_seconds": 0.2 * (i + 1),
                "score_seconds": 0.1 * (i + 1),
                "sample_evals_total": looks[i] * nfe,
            }
            values = {"kid": kid, **_other_metrics(kid, rng), **((metrics or [{}] * len(kids))[i])}
            row = {
                **values,
                **intervals_of(values),
                "kid_std": round(kid / 10, 6),
                "protocol_id": self.look_protocol(family, looks[i]),
                "nfe_per_sample": nfe,
                "samples_scored": looks[i],
                "diverged": False,
                "stop_reason": "",
                **counters,
                **fixed,
            }
            last = i == len(kids) - 1 and end in (FINISHED, STOPPED)
            rows.append({**row, **_ray_fields(trial_id, i, config, f"checkpoint_{i:06d}", done=last)})
            self._look_checkpoint(folder / f"checkpoint_{i:06d}", row, config, settings)
        if end == DIVERGED:
            look = looks[len(kids)]
            counters = {
                "looks": len(kids),
                "sample_seconds": 0.2 * (len(kids) + 1),
                "score_seconds": 0.1 * len(kids),
                "sample_evals_total": look * nfe,
            }
            record = {
                **{m: worst_value(m) for m in METRICS},
                "samples_scored": look,
                "nfe_per_sample": nfe,
                "diverged": True,
                "stop_reason": f"non-finite samples at look {len(kids) + 1} ({look} samples)",
                **counters,
                **fixed,
            }
            rows.append({**record, **_ray_fields(trial_id, len(kids), config, None, done=False)})
        self._write_rows(folder, rows, end, cut_line=False)
        return folder

    @staticmethod
    def look_protocol(family: str, look: int) -> str:
        return protocol_id({"family": family, "n": look})

    def _look_checkpoint(self, ckpt: Path, row: dict, config: dict, settings: dict) -> None:
        ckpt.mkdir()
        (ckpt / SAMPLES_TENSOR).write_bytes(b"not a real tensor")
        metrics = {m: row[m] for m in METRICS} | {
            "kid_std": row["kid_std"],
            "protocol_id": row["protocol_id"],
            "protocol": {"n": row["samples_scored"]},
        }
        counters = {k: row[k] for k in ("looks", "sample_seconds", "score_seconds", "sample_evals_total")}
        (ckpt / METRICS_FILE).write_text(
            json.dumps({"metrics": metrics, "counters": counters, "config": config, "sampler": settings})
        )
        write_png(ckpt / SAMPLES_FILE, row["looks"] * 7 + len(config))

    def fresh_trial(self, trial_id: str, params: dict) -> Path:
        """A trial that had just started: its config written, an empty result.json, no entry in
        the experiment state Ray last wrote."""
        folder = self.exp_dir / trial_dirname(trial_id)
        folder.mkdir()
        (folder / PARAMS_FILE).write_text(json.dumps({**self.spec["fixed"], **params}))
        (folder / RESULT_FILE).write_text("")
        return folder

    # --- the confirmation stage ------------------------------------------------------------------

    def confirmation(
        self,
        entries: list[dict],
        seeds: int = 3,
        samples: int = 256,
        top_k: int = 3,
        incomplete: tuple[str, ...] = (),
        summary: bool = True,
    ) -> Path:
        """``confirm/plan.json`` and ``confirm/summary.json`` as search/confirmation/stage.py writes
        them. ``entries``, best first: {"trial_id", "roles", "search_rank", "value" (the ranking
        metric's mean), "half" (its interval's half-width), "verdict" (against the best; None for
        the best), optional "metrics" (other means), "status"}. Differences to the best get an
        interval of the difference -+ 1.2 x half; the ranking metric's verdict is the one given."""
        metric, mode = self.metric, self.spec["mode"]
        folder = self.exp_dir / CONFIRM_DIR
        folder.mkdir(exist_ok=True)
        best = entries[0]

        def values(entry: dict) -> dict:
            means = {"fid": 30.0 * entry["value"], "recall": 0.5, "class_coverage": 0.9, **(entry.get("metrics") or {})}
            means[metric] = entry["value"]
            out = {}
            for name in METRICS:
                v = means.get(name, 0.4)
                out[name] = {"value": v, "lo": v - entry["half"], "hi": v + entry["half"], "per_seed": [v] * seeds}
            return out

        best_values = values(best)
        trials = []
        for entry in entries:
            vals = values(entry) if entry.get("status", "scored") == "scored" else None
            versus = None
            if vals is not None and entry is not best:
                versus = {}
                for name in METRICS:
                    diff = vals[name]["value"] - best_values[name]["value"]
                    lo, hi = diff - 1.2 * entry["half"], diff + 1.2 * entry["half"]
                    verdict = TIED if lo <= 0 <= hi else BETTER if (lo > 0) == (metric_mode(name) == "max") else WORSE
                    if name == metric:
                        verdict = entry["verdict"]
                    versus[name] = {"difference": diff, "lo": lo, "hi": hi, "verdict": verdict}
            trials.append(
                {
                    "trial_id": entry["trial_id"],
                    "roles": entry["roles"],
                    "search_rank": entry["search_rank"],
                    "search_value": entry.get("search_value", entry["value"]),
                    "nfe_per_sample": 9,
                    "checkpoint": str(self.exp_dir / trial_dirname(entry["trial_id"]) / "checkpoint_000003"),
                    "sampler": {"step_lr": 2e-5, "n_steps_each": 2, "denoise": True},
                    "status": entry.get("status", "scored"),
                    "values": vals,
                    "versus_best": versus,
                    "fid_inf": {"mean": 25.0 * entry["value"], "sd": 0.5, "per_seed": [25.0 * entry["value"]] * seeds}
                    if vals
                    else None,
                    "network_evals": seeds * samples * 9,
                    "sample_seconds": 2.0 * seeds,
                    "score_seconds": 1.0 * seeds,
                }
            )
        settings = {"top_k": top_k, "seeds": seeds, "samples": samples, "resamples": 2000}
        plan = {
            "kind": self.kind,
            "metric": metric,
            "mode": mode,
            "settings": settings,
            "protocol": {"samples": samples, "seeds": seeds, "sampling": "trained-with"},
            "trials": [{"trial_id": t["trial_id"], "roles": t["roles"]} for t in trials],
            "cost": {"network_evals": len(trials) * seeds * samples * 9, "tasks": len(trials) * seeds},
        }
        (folder / CONFIRM_PLAN).write_text(json.dumps(plan))
        if summary:
            record = {
                "kind": self.kind,
                "metric": metric,
                "mode": mode,
                "settings": settings,
                "protocol_id": "c0ffee123456",
                "best": best["trial_id"],
                "trials": trials,
                "incomplete": list(incomplete),
                "network_evals": sum(t["network_evals"] for t in trials),
                "seconds": sum(t["sample_seconds"] + t["score_seconds"] for t in trials),
                "level": 0.95,
                "resamples": 2000,
            }
            (folder / CONFIRM_SUMMARY).write_text(json.dumps(record))
        return folder

    # --- the experiment's own files -------------------------------------------------------------

    def finish(self, study: bool = True, state: bool = True) -> Path:
        """Write Ray's experiment state and (``study``) the Optuna study; return the folder."""
        if state:
            self.write_state()
        if study:
            self.write_study()
        return self.exp_dir

    def write_state(self, overrides: dict[str, str] | None = None) -> Path:
        """``experiment_state-*.json`` as Ray's TuneController writes it: ``trial_data`` holds one
        [trial JSON text, runtime-metadata JSON text] pair per trial."""
        overrides = overrides or {}
        data = []
        for t in self.trials:
            trial = {
                "trial_id": t.trial_id,
                "status": overrides.get(t.trial_id, _RAY_STATUS[t.end]),
                "relative_logdir": t.folder.name,
                "trainable_name": "ncsn_trainable",
                "config": json.loads((t.folder / PARAMS_FILE).read_text()),
                "experiment_tag": t.trial_id,
            }
            data.append([json.dumps(trial, indent=2), json.dumps({"num_failures": int(t.end == ERRORED)})])
        path = self.exp_dir / "experiment_state-2026-01-01_00-00-00.json"
        path.write_text(
            json.dumps({"trial_data": data, "runner_data": {"_iteration": 42}, "stats": {"start_time": 1767225600.0}})
        )
        return path

    def write_study(self) -> Path:
        """``optuna.db`` with one Optuna trial per Ray trial: its searched params and, as Ray's
        OptunaSearch records it, the last reported value of the spec's metric."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        forms = self.spec["params"] if self.kind == JOINT else self.search["sampler"]["params"]
        storage = f"sqlite:///{self.exp_dir / STUDY_FILE}"
        direction = "minimize" if self.spec["mode"] == "min" else "maximize"
        study = optuna.create_study(study_name=self.search["study_name"], storage=storage, direction=direction)
        for t in self.trials:
            config = json.loads((t.folder / PARAMS_FILE).read_text())
            rows = json_rows(t.folder)
            params = {k: config[k] for k in forms if k in config}
            state = {ERRORED: optuna.trial.TrialState.FAIL, UNFINISHED: optuna.trial.TrialState.RUNNING}.get(
                t.end, optuna.trial.TrialState.COMPLETE
            )
            value = rows[-1][self.metric] if rows and state == optuna.trial.TrialState.COMPLETE else None
            study.add_trial(
                optuna.trial.create_trial(
                    params=params, distributions={k: _distribution(forms[k]) for k in params}, value=value, state=state
                )
            )
        return self.exp_dir / STUDY_FILE


def _distribution(form: dict):
    import optuna

    if "loguniform" in form:
        return optuna.distributions.FloatDistribution(*form["loguniform"], log=True)
    if "uniform" in form:
        return optuna.distributions.FloatDistribution(*form["uniform"])
    if "int" in form:
        return optuna.distributions.IntDistribution(*form["int"], log=bool(form.get("log")))
    return optuna.distributions.CategoricalDistribution(form["choice"])


def source_checkpoint(root: Path, kid: float = 0.2, fid: float = 30.0, samples: int = 64) -> dict:
    """A joint search's checkpoint folder to sample from, and its entry in a sampler search's
    search.json (search_spaces' CheckpointInfo record)."""
    folder = Path(root) / "joint" / "trial_src00_00003" / "checkpoint_000003"
    folder.mkdir(parents=True)
    config = {**SMOKE_SPEC["fixed"], "sigma_begin": 1.0, "sigma_end": 0.01, "step_lr": 2e-05}
    metrics = {"kid": kid, "fid": fid, "coverage": 0.0, "protocol_id": PROTOCOL, "protocol": {"n": samples}}
    counters = {"train_evals_total": 40 * config["batch_size"]}
    (folder / STATE_FILE).write_bytes(b"not a real state dict")
    (folder / METRICS_FILE).write_text(json.dumps({"metrics": metrics, "counters": counters, "config": config}))
    write_png(folder / SAMPLES_FILE, 999)
    return {
        "path": str(folder),
        "trial": folder.parent.name,
        "experiment": "joint",
        "metric": "kid",
        "value": kid,
        "samples": samples,
        "protocol_id": PROTOCOL,
        "iterations": 40,
        "config": config,
        "metrics": {"kid": kid, "fid": fid, "coverage": 0.0},
    }


def sampler_experiment(
    root: Path, name: str = "fake-sampler", checkpoint: dict | None = None, num_trials: int = 5
) -> FakeExperiment:
    """A sampler search folder (no trials yet) on ``checkpoint`` (default: :func:`source_checkpoint`),
    looks :data:`LOOKS`, with the two warm starts search_spaces writes for it."""
    checkpoint = checkpoint or source_checkpoint(root)
    trained = {k: checkpoint["config"][k] for k in ("step_lr", "n_steps_each", "denoise")}
    technique4 = {**trained, "step_lr": 1.3e-5, "denoise": True}
    warm = [
        {
            "label": label,
            "checkpoint": checkpoint["path"],
            "params": {k: setting[k] for k in ("step_lr", "n_steps_each")} | {"skip_levels": 0},
            "setting": {**setting, "skip_levels": 0, "level_stride": 1},
        }
        for label, setting in ((WARM_TRAINED_WITH, trained), (WARM_TECHNIQUE4, technique4))
    ]
    spec = {**SMOKE_SPEC, "budget": {**SMOKE_SPEC["budget"], "num_trials": num_trials, "max_concurrent": 1}}
    section = {
        "samples": LOOKS,
        "num_trials": num_trials,
        "max_concurrent": 1,
        "time_attr": "samples_scored",
        "params": SAMPLER_SECTION_PARAMS,
        "constants": {"checkpoint": checkpoint["path"]},
    }
    return FakeExperiment(
        root,
        name,
        SAMPLER,
        spec=spec,
        warm_start=warm,
        checkpoints=[checkpoint],
        sampler=section,
        notices=["warm start trained_with of trial_src00_00003 runs with n_steps_each=2 outside {int: [1, 4]}"],
    )


def warm_config(exp: FakeExperiment, label: str) -> dict:
    """The searched params a warm start proposes (what its trial's config holds)."""
    return dict(next(w for w in exp.search["warm_start"] if w["label"] == label)["params"])


# ---------------------------------------------------------------------------------------------
# Scenarios shared by the test modules

# (trial id, searched params, kid at each evaluation, how it ended): a finished smoke search
# (two warm starts first, ASHA stopping some at its rungs 10 and 20)
SMOKE_TRIALS = [
    ("5d0b1_00000", SMOKE_WARM[0]["params"], [0.30, 0.20, 0.15, 0.12], FINISHED),
    ("5d0b1_00001", SMOKE_WARM[1]["params"], [0.25, 0.22], STOPPED),
    ("5d0b1_00002", {"sigma_begin": 3.0, "sigma_end": 0.02, "step_lr": 5e-05}, [0.28, 0.18, 0.14, 0.10], FINISHED),
    ("5d0b1_00003", {"sigma_begin": 6.0, "sigma_end": 0.03, "step_lr": 7e-06}, [0.40, 0.35], STOPPED),
    ("5d0b1_00004", {"sigma_begin": 0.7, "sigma_end": 0.006, "step_lr": 9e-05}, [0.50], STOPPED),
    ("5d0b1_00005", {"sigma_begin": 12.0, "sigma_end": 0.04, "step_lr": 3e-06}, [0.26, 0.21, 0.13, 0.11], FINISHED),
]


def smoke_like(
    root: Path, name: str = "smoke", study: bool = True, protocols: dict | None = None, **options
) -> FakeExperiment:
    """The folder a finished smoke search leaves (:data:`SMOKE_TRIALS`), Optuna study included;
    ``protocols`` {trial id: protocol id} scores some trials under another protocol."""
    exp = FakeExperiment(root, name, **options)
    for trial_id, params, kids, end in SMOKE_TRIALS:
        exp.joint_trial(trial_id, params, kids, end, protocol=(protocols or {}).get(trial_id, PROTOCOL))
    exp.finish(study=study)
    return exp


# (trial id, searched params or a warm-start label, kid at each look, fid at each look, end)
SAMPLER_TRIALS = [
    ("6e1c2_00000", WARM_TRAINED_WITH, [0.30, 0.28, 0.27], [40.0, 30.0, 20.0], FINISHED),
    ("6e1c2_00001", WARM_TECHNIQUE4, [0.20, 0.18, 0.15], [30.0, 20.0, 10.0], FINISHED),
    ("6e1c2_00002", {"step_lr": 5e-05, "n_steps_each": 3, "skip_levels": 1}, [0.25, 0.22], [35.0, 33.0], STOPPED),
    ("6e1c2_00003", {"step_lr": 9e-05, "n_steps_each": 1, "skip_levels": 0}, [0.50], [60.0], STOPPED),
    (
        "6e1c2_00004",
        {"step_lr": 3e-05, "n_steps_each": 4, "skip_levels": 0},
        [0.22, 0.16, 0.14],
        [45.0, 40.0, 30.0],
        FINISHED,
    ),
    ("6e1c2_00005", {"step_lr": 1e-04, "n_steps_each": 4, "skip_levels": 1}, [0.60], [70.0], DIVERGED),
]


def sampler_like(root: Path, name: str = "smoke-sampler", families: dict | None = None) -> FakeExperiment:
    """The folder a finished sampler search leaves (:data:`SAMPLER_TRIALS`: both warm starts, ASHA
    stops at 16 and 32 samples, one diverged sampler); by kid the best at the last look is
    6e1c2_00004, by fid 6e1c2_00001. ``families`` {trial id: family} scores some trials under
    another protocol."""
    exp = sampler_experiment(root, name, num_trials=len(SAMPLER_TRIALS))
    for trial_id, params, kids, fids, end in SAMPLER_TRIALS:
        params = warm_config(exp, params) if isinstance(params, str) else params
        exp.sampler_trial(
            trial_id, params, kids, end, family=(families or {}).get(trial_id, "p"), metrics=[{"fid": f} for f in fids]
        )
    exp.finish(study=False)
    return exp


# ---------------------------------------------------------------------------------------------
# Independent readers (plain json over the trial folders; no analysis/ code)


def trial_folders(exp_dir: Path) -> list[Path]:
    return sorted(p.parent for p in Path(exp_dir).glob(f"*/{RESULT_FILE}"))


def json_rows(folder: Path) -> list[dict]:
    rows = []
    for line in (Path(folder) / RESULT_FILE).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def independent_ranking(exp_dir: Path, metric: str) -> list[tuple[str, float]]:
    """Joint trial ids best first: each trial's best non-diverged value (the first one on equal
    values), ties broken by the compute (train + sample evaluations) at that value, then by id."""
    sign = 1.0 if metric_mode(metric) == "min" else -1.0
    keyed = []
    for folder in trial_folders(exp_dir):
        rows = [r for r in json_rows(folder) if not r.get("diverged") and math.isfinite(r.get(metric, math.nan))]
        if not rows:
            continue
        best = min(rows, key=lambda r: sign * r[metric])  # min() keeps the first of equal values
        compute = best["train_evals_total"] + best["sample_evals_total"]
        keyed.append((sign * best[metric], compute, best["trial_id"], best[metric]))
    return [(tid, value) for _, _, tid, value in sorted(keyed)]


def independent_sampler_order(exp_dir: Path, metric: str) -> list[str]:
    """Sampler trial ids ASHA's way: the further the trial got (samples scored) the higher, then
    by ``metric`` at its last look (non-finite last), then by network evaluations spent."""
    sign = 1.0 if metric_mode(metric) == "min" else -1.0
    finals = {}
    for folder in trial_folders(exp_dir):
        rows = json_rows(folder)
        if rows:
            last = rows[-1]
            value = last[metric] if math.isfinite(last[metric]) else math.inf * sign
            finals[last["trial_id"]] = (-last["samples_scored"], sign * value, last["sample_evals_total"])
    return sorted(finals, key=lambda t: (*finals[t], t))
