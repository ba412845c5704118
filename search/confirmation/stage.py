"""The confirmation stage: sample the best checkpoints of the top trials again, several seeds each,
and call which differences are real.

A search ranks trials by one evaluation each (a few hundred samples from one sampler seed).
Afterwards (automatically when the spec has a ``confirm`` section or ``run_search.py --confirm``
is given, or on demand with ``python platform/confirm.py <experiment> --top-k K --seeds S
--samples N``) this stage takes the best checkpoint of each of the top K trials and of the warm
starts' trials (the 2019 and NCSNv2 settings of a joint search; the trained-with and technique-4
samplers of a sampler search), and samples each again with S sampler seeds of N images: seed s
of every trial starts from the same initial noise (:func:`trainables.contract.params.noise_seed`,
stream "confirmation"), so the trials are paired. It never trains.

Each (trial, seed) is one Ray task with the trials' resources
(:func:`trainables.confirm_task.confirm_sample`); the driver writes its result into
``<experiment>/confirm/trial_<id>/`` as soon as it returns (record, features, sample grid; the
record last, atomically), so an interrupted stage resumes where it stopped: a (trial, seed, N)
already on disk is never sampled again. When every task is in, :func:`summarise` pools the seeds
and compares every trial with the best by a paired bootstrap (:func:`trainables.scoring.compare.compare_samples`)
into ``confirm/summary.json``. File names: :mod:`trainables.contract.layout`.

Settings, the choice of trials and the cost estimate: :mod:`search.confirmation.select`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from search.confirmation.results import confirm_dir, json_bytes, read_result, result_paths, write_atomic, write_result
from search.confirmation.select import ConfirmTrial, Say, cost, select_trials
from search_spaces.confirm_settings import ConfirmSettings, pipeline_sized, requested, settings_for
from trainables.contract.layout import (
    CONFIRM_PLAN,
    CONFIRM_SUMMARY,
    CONFIRM_TOP,
    read_search_record,
)
from trainables.contract.metrics import METRICS, far_from_digits
from trainables.contract.units import duration


@dataclass
class ConfirmPlan:
    """What a confirmation samples: the experiment, its kind and ranking metric, the settings, the
    trials, the search seed (noise streams and quality protocol), the trial resources, the
    notices and the cost."""

    exp_dir: Path
    kind: str
    metric: str
    mode: str
    settings: ConfirmSettings
    trials: list[ConfirmTrial]
    search_seed: int
    resources: dict
    notices: list[str]
    cost: dict

    def jobs(self) -> list[tuple[ConfirmTrial, int]]:
        return [(t, s) for t in self.trials for s in range(self.settings.seeds)]

    def record(self) -> dict:
        return {
            "kind": self.kind,
            "metric": self.metric,
            "mode": self.mode,
            "settings": asdict(self.settings),
            "search_seed": self.search_seed,
            "resources": self.resources,
            "protocol": {
                "samples": self.settings.samples,
                "seeds": self.settings.seeds,
                "quality_seed": self.search_seed,
                "noise": "seed s of every trial: noise_seed(search seed, 'confirmation', s, chunk)",
                "sampling": "a joint trial's trained-with sampler on its full ladder; a sampler trial's own",
                "weights": "the EMA weights where the run kept an average",
                "intervals": f"bootstrap over the generated images, {self.settings.resamples} draws, paired per seed",
            },
            "trials": [asdict(t) for t in self.trials],
            "notices": self.notices,
            "cost": self.cost,
            "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        }


def plan_confirmation(
    exp_dir: str | Path, settings: ConfirmSettings, seconds_per_image_eval: float | None = None
) -> ConfirmPlan:
    """Everything the stage needs, read from the folder before any cluster starts (``ValueError``,
    one line, for a folder it cannot confirm)."""
    from search.folder import resources_for
    from search_spaces.loading import parse_spec

    exp_dir = Path(exp_dir).expanduser().resolve()
    if not exp_dir.is_dir():
        raise ValueError(f"{exp_dir}: no such folder; give the experiment folder run_search.py printed")
    kind, metric, mode, trials, notices = select_trials(exp_dir, settings.top_k)
    search = read_search_record(exp_dir)
    seed = int(((search.get("spec") or {}).get("searcher") or {}).get("seed", 0))
    try:
        spec = parse_spec(search["spec"], file=str(exp_dir / "search.json"), source=search.get("source"))
        resources = resources_for(spec, 1.0)
    except (KeyError, TypeError, ValueError):
        resources = {"cpu": 1.0}
    return ConfirmPlan(
        exp_dir,
        kind,
        metric,
        mode,
        settings,
        trials,
        seed,
        resources,
        notices,
        cost(trials, settings.seeds, settings.samples, seconds_per_image_eval),
    )


def check_checkpoints(trials: list[ConfirmTrial]) -> None:
    """Load every checkpoint the stage is about to sample, on the driver's CPU, before any cluster starts:
    a state.pt cut short, one that would build objects other than tensors (never executed), or
    weights of another shape than its config say so in one line (``ValueError``) instead of
    failing their tasks one by one."""
    from trainables.ncsn.checkpoint import CheckpointError
    from trainables.sampler_trainable import FrozenCheckpoint

    for trial in trials:
        try:
            FrozenCheckpoint(trial.checkpoint, "cpu")
        except CheckpointError as err:
            raise ValueError(
                f"trial {trial.trial_id}: {err}; nothing was sampled: put back a whole copy of that checkpoint"
            ) from None


def plan_lines(plan: ConfirmPlan) -> list[str]:
    """What the stage will do, for the terminal."""
    s = plan.settings
    lines = [
        f"confirmation of {plan.exp_dir}: {len(plan.trials)} trials x {s.seeds} seeds x {s.samples} samples "
        f"(paired noise per seed), ranked by {plan.metric} ({plan.mode})"
    ]
    for t in plan.trials:
        why = ", ".join(f"top {s.top_k}" if r == CONFIRM_TOP else r for r in t.roles)
        lines.append(
            f"  {t.trial_id} ({why}; search rank {t.search_rank}, {plan.metric} {t.search_value:.4g}): "
            f"{t.nfe_per_sample} network evaluations per sample"
        )
    c = plan.cost
    line = f"cost: {c['network_evals']:,} network evaluations in {c['tasks']} tasks"
    if "sampling_seconds" in c:
        line += (
            f", ~{duration(c['sampling_seconds'])} of sampling at the measured "
            f"{c['seconds_per_image_eval'] * 1e3:.3g} ms per image per pass (one task's share), plus scoring"
        )
    lines.append(line)
    return lines + [f"notice: {n}" for n in plan.notices]


def run_confirmation(plan: ConfirmPlan, options, say: Say = print) -> Path:
    """Run the tasks of ``plan`` that are not on disk yet on a Ray cluster (``options``: a
    :class:`search.options.SearchOptions`, for --address and the dashboard), write each
    result as it arrives, then :func:`summarise`. Returns the path of summary.json."""
    exp_dir = plan.exp_dir
    out = confirm_dir(exp_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / CONFIRM_PLAN, json_bytes(plan.record()))
    s = plan.settings
    missing = [
        (t, seed) for t, seed in plan.jobs() if read_result(exp_dir, t, seed, s.samples, plan.search_seed) is None
    ]
    done = len(plan.jobs()) - len(missing)
    say(f"confirmation: {done} of {len(plan.jobs())} (trial, seed) results already on disk; {len(missing)} to sample")
    failures: list[str] = []
    if missing:
        check_checkpoints(list({t.trial_id: t for t, _ in missing}.values()))
        failures = _run_tasks(plan, missing, options, say)
    path = summarise(exp_dir, plan)
    for failure in failures:
        say(f"confirmation: task failed: {failure}")
    return path


def _job(plan: ConfirmPlan, trial: ConfirmTrial, seed: int) -> dict:
    return {
        "trial_id": trial.trial_id,
        "checkpoint": trial.checkpoint,
        "config": trial.config,
        "use_config_sampler": trial.use_config_sampler,
        "samples": plan.settings.samples,
        "seed": seed,
        "search_seed": plan.search_seed,
        "resamples": 500,
        "threads": max(1, int(plan.resources.get("cpu", 1))),
    }


def _run_tasks(plan: ConfirmPlan, missing: list[tuple[ConfirmTrial, int]], options, say: Say) -> list[str]:
    import ray

    from search.cluster import ray_cluster
    from search.folder import resources_for
    from search_spaces.loading import parse_spec
    from trainables.confirm_task import confirm_sample

    failures = []
    with ray_cluster(options, say) as resources:
        gpus = float(resources.get("GPU", 0))
        search = read_search_record(plan.exp_dir)
        try:
            spec = parse_spec(search["spec"], file=str(plan.exp_dir / "search.json"), source=search.get("source"))
            task_resources = resources_for(spec, gpus)
        except (KeyError, TypeError, ValueError):
            task_resources = {"cpu": 1.0}
        plan.resources = task_resources
        _time_a_pass(plan, missing, _parallel(resources, task_resources, len(missing)), say)
        remote = ray.remote(_task).options(
            num_cpus=float(task_resources.get("cpu", 1)), num_gpus=float(task_resources.get("gpu", 0)), max_retries=1
        )
        pending = {remote.remote(confirm_sample, _job(plan, t, seed)): (t, seed) for t, seed in missing}
        finished = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            trial, seed = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except Exception as err:  # a task's own error (Ray wraps it): note it, go on with the rest
                failures.append(f"{trial.trial_id} seed {seed}: {str(err).strip().splitlines()[-1][:300]}")
                continue
            write_result(plan.exp_dir, trial.trial_id, seed, plan.settings.samples, result)
            finished += 1
            record = result["record"]
            value = (record.get("metrics") or {}).get(plan.metric)
            say(
                f"confirmation: {finished}/{len(missing)} {trial.trial_id} seed {seed}: {plan.metric} "
                f"{value:.4g}" + (" (diverged)" if record.get("diverged") else "")
            )
    return failures


def _parallel(cluster: dict, task: dict, tasks: int) -> int:
    """How many of ``tasks`` tasks holding ``task`` resources the ``cluster`` runs at once."""
    fits = [math.floor(float(cluster.get(k.upper(), 0)) / float(v)) for k, v in task.items() if float(v) > 0]
    return max(1, min([tasks, *fits]))


def _time_a_pass(plan: ConfirmPlan, missing: list[tuple[ConfirmTrial, int]], parallel: int, say: Say) -> None:
    """Time a network pass of the first checkpoint in a task with the trials' resources (as the
    search's cost estimate does) and say what the remaining tasks cost, ``parallel`` at a time;
    plan.json keeps it."""
    from trainables.calibrate import measure_frozen, on_trial_resources
    from trainables.confirm_task import MAX_BATCH

    trial = missing[0][0]
    args = (trial.checkpoint, trial.config, max(1, int(plan.resources.get("cpu", 1))), MAX_BATCH)
    try:
        timing = on_trial_resources(measure_frozen, plan.resources, 1, *args)
    except Exception as err:  # the timing is only a forecast: the tasks themselves still run
        say(f"confirmation: could not time a network pass ({err.__class__.__name__}: {err})")
        return
    seconds = float(timing[0]["seconds_per_image_eval"])
    plan.cost = cost(plan.trials, plan.settings.seeds, plan.settings.samples, seconds)
    left = sum(plan.settings.samples * t.nfe_per_sample for t, _ in missing)
    say(
        f"confirmation: {left:,} network evaluations to go, ~{duration(left * seconds / parallel)} of sampling "
        f"with {parallel} task(s) at a time, at {seconds * 1e3:.3g} ms per image per pass on "
        f"{timing[0].get('device', '?')} (one task's share), plus scoring"
    )
    write_atomic(confirm_dir(plan.exp_dir) / CONFIRM_PLAN, json_bytes(plan.record()))


def _task(function, job: dict) -> dict:
    """The Ray task: one thread per CPU the task was given, then the job."""
    import torch

    torch.set_num_threads(int(job["threads"]))
    return function(job)


# ---------------------------------------------------------------------------------------------
# Pooling and verdicts


def summarise(exp_dir: str | Path, plan: ConfirmPlan) -> Path:
    """Pool the seeds of every trial whose S results are all on disk, compare each with the best by
    the paired bootstrap and write ``confirm/summary.json``; return its path. Trials with a
    missing seed are listed as incomplete, a trial whose chain diverged ranks last."""
    import torch

    from trainables.scoring import compare, intervals

    exp_dir = Path(exp_dir)
    s = plan.settings
    records: dict[str, list[dict]] = {}
    incomplete = []
    for t in plan.trials:
        found = [read_result(exp_dir, t, seed, s.samples, plan.search_seed) for seed in range(s.seeds)]
        if any(r is None for r in found):
            incomplete.append(t.trial_id)
        else:
            records[t.trial_id] = found
    diverged = [tid for tid, recs in records.items() if any(r.get("diverged") for r in recs)]
    scored = [tid for tid in records if tid not in diverged]
    protocols = sorted({(r.get("metrics") or {}).get("protocol_id") for tid in scored for r in records[tid]})
    comparison: dict[str, Any] = {"best": None, "values": {}, "versus_best": {}}
    if scored:
        if len(protocols) > 1:
            raise ValueError(
                f"{confirm_dir(exp_dir)}: its results were scored under {len(protocols)} protocols "
                f"({', '.join(map(str, protocols))}); remove the folder and confirm again"
            )
        device = "cuda" if torch.cuda.is_available() else "cpu"
        side = intervals.reference_side(s.samples, plan.search_seed, device=device)
        samples = {}
        for tid in scored:
            pairs = []
            for seed in range(s.seeds):
                features = result_paths(exp_dir, tid, seed, s.samples)[1]
                blob = torch.load(features, map_location=device, weights_only=True)
                pairs.append((blob["features"], blob["logits"]))
            samples[tid] = pairs
        comparison = compare.compare_samples(samples, side, plan.metric, s.resamples)
    trials = []
    for t in plan.trials:
        recs = records.get(t.trial_id) or []
        fid_inf = [r["fid_inf"]["fid_inf"] for r in recs if r.get("fid_inf")]
        entry = {
            **{k: getattr(t, k) for k in ("trial_id", "roles", "search_rank", "search_value", "nfe_per_sample")},
            "checkpoint": t.checkpoint,
            "sampler": t.sampler,
            "status": "incomplete" if t.trial_id in incomplete else "diverged" if t.trial_id in diverged else "scored",
            "values": comparison["values"].get(t.trial_id),
            "versus_best": comparison["versus_best"].get(t.trial_id),
            "fid_inf": _mean_sd(fid_inf),
            "network_evals": sum(int(r.get("network_evals", 0)) for r in recs),
            "sample_seconds": sum(float(r.get("sample_seconds") or 0.0) for r in recs),
            "score_seconds": sum(float(r.get("score_seconds") or 0.0) for r in recs),
        }
        trials.append(entry)
    sign = 1.0 if plan.mode == "min" else -1.0

    def order(entry: dict) -> tuple:
        values = entry["values"]
        if values is None:
            return (1 if entry["status"] == "diverged" else 2, 0.0, entry["trial_id"])
        return (0, sign * values[plan.metric]["value"], entry["trial_id"])

    trials.sort(key=order)
    summary = {
        "kind": plan.kind,
        "metric": plan.metric,
        "mode": plan.mode,
        "settings": asdict(s),
        "protocol_id": protocols[0] if len(protocols) == 1 else None,
        "best": comparison["best"],
        "trials": trials,
        "incomplete": incomplete,
        "network_evals": sum(t["network_evals"] for t in trials),
        "seconds": sum(t["sample_seconds"] + t["score_seconds"] for t in trials),
        "level": comparison.get("level"),
        "resamples": comparison.get("resamples"),
        "metrics": list(METRICS),
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    path = confirm_dir(exp_dir) / CONFIRM_SUMMARY
    write_atomic(path, json_bytes(summary))
    return path


def _mean_sd(values: list[float]) -> dict | None:
    if not values:
        return None
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return {"mean": mean, "sd": sd, "per_seed": values}


def pipeline_size(plan: ConfirmPlan, section: Any, eval_samples: int) -> tuple[ConfirmSettings | None, str]:
    """(the settings of a confirmation sized for a pipeline check, the line that says why) when
    the search's best trial's samples are far from digits (trainables.contract.metrics.far_from_digits on
    its checkpoint's scores) and the spec's confirm ``section`` sets no sample count; (None, "")
    otherwise. A full-size stage would then spend minutes confirming a ranking of noise."""
    best = next((t for t in plan.trials if t.search_rank == 1), None)
    reasons = far_from_digits(best.metrics) if best is not None else []
    if not reasons or (section is not None and section.samples):
        return None, ""
    full, small = plan.settings, pipeline_sized(plan.settings, eval_samples)
    return small, (
        f"confirmation: sized as a pipeline check ({small.seeds} seeds x {small.samples} samples, not "
        f"{full.seeds} x {full.samples}): the search's best samples are far from digits ({'; '.join(reasons)}), "
        f"so a full-size stage would rank noise. The full size on demand: python platform/confirm.py "
        f"{plan.exp_dir} --seeds {full.seeds} --samples {full.samples}"
    )


def confirm_after_search(spec: Any, exp_dir: Path, options: Any, say: Say = print) -> bool:
    """Run the stage after a search that ended when the spec or ``options.confirm`` asks for it;
    False when it was asked for and could not run (the reason is said), True otherwise."""
    if not requested(spec.confirm, getattr(options, "confirm", None)):
        return True
    try:
        plan = plan_confirmation(exp_dir, settings_for(read_search_record(exp_dir)))
        small, why = pipeline_size(plan, spec.confirm, spec.budget.eval_samples)
        if small is not None:
            say(why)
            plan = plan_confirmation(exp_dir, small)
        for line in plan_lines(plan):
            say(line)
        run_confirmation(plan, options, say)
    except ValueError as err:
        say(f"confirmation: not run: {err}")
        return False
    return True
