"""The joint search end to end: real Ray cluster, real MNIST, real Optuna SQLite study, real
TensorBoard event files. The expensive search runs once (``smoke_experiment`` in conftest.py)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from conftest import REPO, free_port, result_rows, run_search_cli, start_search, stop_process, trial_dirs

from search_spaces.spec import load_spec, warm_start_points


def study_of(exp_dir: Path) -> optuna.Study:
    record = json.loads((exp_dir / "search.json").read_text())
    return optuna.load_study(study_name=record["study_name"], storage=f"sqlite:///{exp_dir / 'optuna.db'}")


def test_smoke_search_runs_every_trial_and_asha_stops_some(smoke_experiment):
    assert smoke_experiment.returncode == 0, smoke_experiment.output[-3000:]
    spec = load_spec("smoke.yaml")
    trials = trial_dirs(smoke_experiment.exp_dir)
    assert len(trials) == spec.budget.num_trials
    reached = []
    for trial in trials:
        rows = result_rows(trial)
        assert rows, f"{trial.name} reported nothing"
        assert all(r["protocol_id"] == rows[0]["protocol_id"] for r in rows)
        checkpoints = sorted(trial.glob("checkpoint_*"))
        assert checkpoints, f"{trial.name} has no checkpoint"
        for name in ("state.pt", "samples.png", "metrics.json"):
            assert (checkpoints[-1] / name).stat().st_size > 0
        reached.append(rows[-1]["iterations"])
    assert max(reached) == spec.budget.iterations
    assert sum(r < spec.budget.iterations for r in reached) >= 1, f"ASHA stopped nothing: {reached}"


def test_optuna_study_holds_every_trial_complete(smoke_experiment):
    study = study_of(smoke_experiment.exp_dir)
    states = [t.state for t in study.trials]
    assert len(states) == load_spec("smoke.yaml").budget.num_trials
    assert all(s == optuna.trial.TrialState.COMPLETE for s in states)
    finals = sorted(rows[-1]["kid"] for rows in map(result_rows, trial_dirs(smoke_experiment.exp_dir)))
    assert sorted(t.value for t in study.trials) == pytest.approx(finals)


def test_warm_starts_are_the_first_trials(smoke_experiment):
    spec = load_spec("smoke.yaml")
    points = [point for _, point in warm_start_points(spec)]
    assert len(points) == 2
    study = study_of(smoke_experiment.exp_dir)
    first = sorted(study.trials, key=lambda t: t.number)[: len(points)]
    for trial, point in zip(first, points):
        assert trial.params == pytest.approx(point)


def test_tensorboard_has_curves_sample_grids_and_hparams(smoke_experiment):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for trial in trial_dirs(smoke_experiment.exp_dir):
        acc = EventAccumulator(str(trial), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
        acc.Reload()
        tags = acc.Tags()
        assert "samples" in tags["images"] and "langevin_trajectory" in tags["images"]
        assert {"ray/tune/kid", "ray/tune/loss"} <= set(tags["scalars"])
        n_evals = len(result_rows(trial))
        assert len(acc.Images("samples")) == n_evals
        try:
            hparams = acc.PluginTagToContent("hparams")
        except KeyError:
            hparams = {}
        assert hparams, f"{trial.name}: no HParams summary"


def test_closing_summary_names_best_trials_and_commands(smoke_experiment):
    out = smoke_experiment.output
    assert "best trials by kid (min)" in out
    assert f"tensorboard --logdir {smoke_experiment.exp_dir} --host 127.0.0.1" in out
    assert "cost estimate" in out and "notice: no GPU" in out


def test_dashboard_answered_on_loopback_during_the_run(smoke_experiment):
    assert smoke_experiment.dashboard_status == 200
    assert f"Ray dashboard: http://127.0.0.1:{smoke_experiment.dashboard_port}" in smoke_experiment.output


def _finished(rows: list[dict], iterations: int) -> bool:
    """A trial that ended: Ray logged its last result as done, or it reached the budget."""
    return bool(rows) and (rows[-1].get("done") is True or rows[-1]["iterations"] >= iterations)


def test_interrupted_search_resumes_without_repeating_trials(tmp_path):
    storage, trials_wanted, iterations = tmp_path / "runs", 4, 40
    args = [
        "--space",
        "smoke.yaml",
        "--storage-path",
        str(storage),
        "--name",
        "resumable",
        "--num-trials",
        str(trials_wanted),
        "--no-dashboard",
        "--no-calibration",
        "--no-report",
    ]
    exp_dir = storage / "resumable"
    proc = start_search(*args)
    deadline = time.monotonic() + 600
    # Interrupt once some trial has finished but the search is far from done (two run at a time).
    while time.monotonic() < deadline and proc.poll() is None:
        if exp_dir.exists() and any(_finished(result_rows(t), iterations) for t in trial_dirs(exp_dir)):
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the search ended before it could be interrupted:\n" + proc.stdout.read()[-2000:]
    proc.send_signal(signal.SIGINT)
    first_out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, first_out[-2000:]
    before = {t.name: result_rows(t) for t in trial_dirs(exp_dir)}
    finished_before = {name: rows for name, rows in before.items() if _finished(rows, iterations)}
    assert finished_before, "no trial had finished before the interruption:\n" + first_out[-2000:]
    assert len(finished_before) < trials_wanted, first_out[-2000:]

    # the command the closing summary prints: no budget flags (a resumed search keeps its own)
    resume = [a for i, a in enumerate(args) if a != "--num-trials" and (i == 0 or args[i - 1] != "--num-trials")]
    done, _ = run_search_cli(*resume, "--resume", timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    trials = trial_dirs(exp_dir)
    assert len(trials) == trials_wanted
    assert set(before) <= {t.name for t in trials}
    ids = [result_rows(t)[-1]["trial_id"] for t in trials]
    assert len(set(ids)) == trials_wanted
    for name, rows in finished_before.items():  # a finished trial was not run again: not one new row
        assert result_rows(exp_dir / name) == rows, f"{name} ran again after the resume"
    for trial in trials:  # every trial ended, and no evaluation was repeated
        rows = result_rows(trial)
        assert _finished(rows, iterations), f"{trial.name} did not end: {rows[-1:]}"
        steps = [r["iterations"] for r in rows]
        assert steps == sorted(set(steps)), f"{trial.name} repeated evaluations: {steps}"
    study = study_of(exp_dir)
    assert len(study.trials) == trials_wanted
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_diverging_trial_is_stopped_with_its_reason_while_the_other_finishes(tmp_path):
    import ray
    from ray import tune

    from trainables.tune_trainable import Budget, ncsn_trainable

    base = {
        "sigma_begin": 1.0,
        "sigma_end": 0.01,
        "num_levels": 3,
        "step_lr": 2e-5,
        "n_steps_each": 1,
        "batch_size": 8,
        "ngf": 8,
        "lr": 1e-3,
        "ema": 0.0,
        "denoise": False,
    }
    budget = Budget(iterations=6, eval_every=3, eval_samples=16)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(ncsn_trainable, budget=budget), {"cpu": 1}),
            param_space={**base, "_inject_nan_at": tune.grid_search([None, 4])},
            tune_config=tune.TuneConfig(metric="kid", mode="min"),
            run_config=tune.RunConfig(storage_path=str(tmp_path), name="diverge", verbose=0),
        )
        results = tuner.fit()
    finally:
        ray.shutdown()
    assert results.num_errors == 0
    by_injection = {r.config["_inject_nan_at"]: r.metrics for r in results}
    healthy, diverged = by_injection[None], by_injection[4]
    assert healthy["iterations"] == 6 and not healthy["diverged"] and healthy["kid"] < float("inf")
    assert diverged["diverged"] and diverged["kid"] == float("inf")
    assert "non-finite loss" in diverged["stop_reason"] and diverged["iterations"] == 6


def test_search_wrote_its_report(smoke_experiment):
    report = smoke_experiment.exp_dir / "report"
    assert smoke_experiment.returncode == 0, smoke_experiment.output[-3000:]
    for name in ("report.md", "report.html", "leaderboard.csv"):
        assert (report / name).stat().st_size > 0


def test_two_searches_on_one_machine_both_run_with_their_own_dashboards(tmp_path):
    """No --dashboard-port: Ray picks 8265 or the next free port for each local cluster."""
    procs = []
    for i in range(2):
        time.sleep(8 * i)  # the second starts while the first holds its cluster and dashboard
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "platform/run_search.py",
                    "--space",
                    "smoke.yaml",
                    "--smoke-test",
                    "--no-calibration",
                    "--no-report",
                    "--storage-path",
                    str(tmp_path / f"runs{i}"),
                ],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )
        )
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-2000:] for o in outs]
    urls = [next(line for line in o.splitlines() if line.startswith("Ray dashboard: http://127.0.0.1:")) for o in outs]
    assert urls[0] != urls[1], urls


def test_a_trial_whose_worker_dies_resumes_from_its_checkpoint_and_stays_one_optuna_trial(tmp_path):
    """SIGKILL a trial's worker process after its first evaluation: Ray reschedules the trial from
    its last checkpoint (--max-failures, default 2); iterations go on from there, and the study
    holds exactly the requested trials, each COMPLETE once."""
    space = tmp_path / "fault.yaml"
    text = (REPO / "search_spaces" / "smoke.yaml").read_text()
    space.write_text(text.replace("grace_period: 10", "grace_period: 40"))  # ASHA stops nothing early
    storage, wanted = tmp_path / "runs", 2
    args = ["--space", str(space), "--storage-path", str(storage), "--num-trials", str(wanted), "--no-dashboard",
            "--no-calibration", "--no-report"]  # fmt: skip
    exp_dir = storage / "smoke"
    proc = start_search(*args)
    victim, deadline = None, time.monotonic() + 600
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        for trial in trial_dirs(exp_dir) if exp_dir.exists() else []:
            rows = result_rows(trial)
            if rows and rows[-1]["iterations"] < 40:
                victim = (trial, rows[-1]["pid"], len(rows))
                break
        time.sleep(0.2)
    assert victim is not None, "no trial reported before the end:\n" + proc.communicate()[0][-2000:]
    trial, pid, rows_before = victim
    os.kill(pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    rows = result_rows(trial)
    steps = [r["iterations"] for r in rows]
    assert len(rows) > rows_before and steps[-1] == 40, steps
    assert steps == sorted(set(steps)), f"the killed trial restarted from 0: {steps}"
    assert rows[-1]["pid"] != pid  # a new worker finished it
    assert len(trial_dirs(exp_dir)) == wanted
    study = study_of(exp_dir)
    assert len(study.trials) == wanted
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    final = {r["trial_id"]: r["kid"] for t in trial_dirs(exp_dir) for r in result_rows(t)[-1:]}
    assert sorted(t.value for t in study.trials) == pytest.approx(sorted(final.values()))


def readme_dashboard_command(exp_dir: Path, port: int) -> list[str]:
    """The README's optuna-dashboard command line, pointed at ``exp_dir`` and ``port``."""
    lines = [line.strip() for line in (REPO / "README.md").read_text().splitlines()]
    line = next(line for line in lines if line.startswith("optuna-dashboard sqlite:///"))
    assert "$PWD/runs/<name>/optuna.db" in line and "--host 127.0.0.1" in line and "--port 8080" in line, line
    line = line.replace("$PWD/runs/<name>", str(exp_dir.resolve())).replace("--port 8080", f"--port {port}")
    argv = shlex.split(line)
    argv[0] = str(Path(sys.executable).with_name("optuna-dashboard"))  # the venv's, activated or not
    return argv


def get_json(url: str, deadline: float) -> dict:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return json.loads(answer.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_the_readme_s_optuna_dashboard_serves_the_finished_study(smoke_experiment):
    exp_dir = smoke_experiment.exp_dir
    study = study_of(exp_dir)
    port = free_port()
    proc = subprocess.Popen(
        readme_dashboard_command(exp_dir, port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        base = f"http://127.0.0.1:{port}"
        summaries = get_json(f"{base}/api/studies", time.monotonic() + 60)["study_summaries"]
        assert [s["study_name"] for s in summaries] == [study.study_name]
        assert summaries[0]["directions"] == ["minimize"]  # smoke.yaml ranks by kid, mode min
        detail = get_json(f"{base}/api/studies/{summaries[0]['study_id']}", time.monotonic() + 30)
        served = {t["number"]: t for t in detail["trials"]}
        assert sorted(served) == sorted(t.number for t in study.trials)
        for trial in study.trials:
            assert served[trial.number]["state"] == "Complete"
            assert served[trial.number]["values"] == pytest.approx([trial.value])
            assert {p["name"] for p in served[trial.number]["params"]} == set(trial.params)
    finally:
        stop_process(proc)
