"""The sampler-only search on frozen checkpoints, for real: checkpoint resolution on the shared
smoke search's folders, the trained-with sampler reproducing a score, and one real search (Ray,
Optuna SQLite, ASHA on samples scored) on the best checkpoint."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import math
import re
from pathlib import Path

import optuna
import pytest
import torch
from conftest import REPO, result_rows, run_search_cli, trial_dirs

from search.checkpoints import CheckpointInfo, resolve_checkpoints
from search_spaces.spec import SPACES_DIR
from trainables.contract.layout import WARM_TECHNIQUE4 as WARM_NCSNV2
from trainables.contract.layout import WARM_TRAINED_WITH as WARM_TRAINED
from trainables.ncsn.sigmas import ladder_ratio, ncsnv2_step_lr
from trainables.sampler_trainable import ladder_levels, sampling_weights, weights_digest

SMOKE = (SPACES_DIR / "smoke.yaml").read_text()
SECTION = """sampler_search:
  num_trials: {trials}
  max_concurrent: 1
  samples: [16, 32, 64]
  params:
    n_steps_each: {{int: [1, 4]}}
    skip_levels: {{int: [0, 1]}}
"""
TRIALS = 5


def folder_sha256(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def best_checkpoint_by_results(exp_dir: Path) -> tuple[Path, float]:
    """Independently of the code under test: the lowest kid any report reached whose checkpoint
    folder Ray kept, read from the trials' result.json files."""
    best = None
    for trial in trial_dirs(exp_dir):
        for row in result_rows(trial):
            folder = trial / str(row.get("checkpoint_dir_name"))
            if folder.is_dir() and math.isfinite(row["kid"]) and (best is None or row["kid"] < best[1]):
                best = (folder, row["kid"])
    return best


# ------------------------------------------------------------------------------ on the smoke search


def test_checkpoint_resolution_from_experiment_trial_and_checkpoint_folders(smoke_experiment):
    exp_dir = smoke_experiment.exp_dir
    expected, value = best_checkpoint_by_results(exp_dir)
    [best] = resolve_checkpoints(exp_dir, "kid", "min")
    assert (best.path, best.value) == (expected.resolve(), value)
    assert resolve_checkpoints(expected.parent, "kid", "min")[0].path == expected.resolve()
    assert resolve_checkpoints(expected, "kid", "min")[0].path == expected.resolve()
    top = resolve_checkpoints(exp_dir, "kid", "min", top_k=3)
    assert top[0] == best and len({c.trial for c in top}) == 3
    assert [c.value for c in top] == sorted(c.value for c in top)
    for path, top_k, words in [
        (exp_dir / "nowhere", 1, "no such folder"),
        (expected, 2, "single trial"),
        (exp_dir, 99, "only"),
        (exp_dir.parent, 1, "holds no training checkpoint"),
    ]:
        with pytest.raises(ValueError, match=words):
            resolve_checkpoints(path, "kid", "min", top_k)


def test_trained_with_sampler_reproduces_the_original_score(smoke_experiment):
    """Same network, same sampler, same noise stream, same protocol: the sampler trial's
    machinery scores exactly what the joint search scored."""
    [best] = resolve_checkpoints(smoke_experiment.exp_dir, "kid", "min")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a one-CPU trial; two threads on two busy cores crawl
    try:
        _reproduce(best)
    finally:
        torch.set_num_threads(threads)


def _reproduce(best: CheckpointInfo) -> None:
    from trainables import sampling
    from trainables.contract.params import noise_seed
    from trainables.sampler_trainable import FrozenCheckpoint
    from trainables.scoring import quality

    frozen = FrozenCheckpoint(best.path, "cpu")
    record = json.loads((best.path / "metrics.json").read_text())
    evaluation = record["counters"]["evaluations"]  # the frozen path, on the joint trial's stream of that evaluation
    drawn = sampling.draw(
        frozen.score_fn(),
        frozen.trainer.sigmas,
        best.samples,
        28,
        sampling.SamplerSettings.of(record["config"]),
        lambda chunk: noise_seed(0, "evaluation", evaluation, chunk),
        frozen.trainer.device,
    )
    samples, n_evals = drawn.samples, drawn.n_evals
    scores = quality.point_metrics(samples, seed=0)
    assert scores["protocol_id"] == best.protocol_id
    assert scores["kid"] == pytest.approx(best.value, rel=1e-4)
    assert n_evals == best.num_levels * record["config"]["n_steps_each"] + int(record["config"]["denoise"])
    frozen.assert_untouched()


def test_cli_refuses_bad_checkpoint_arguments_before_ray_starts(smoke_experiment, tmp_path):
    import ray

    spec = importlib.util.spec_from_file_location("run_search_cli", REPO / "platform" / "run_search.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    storage = tmp_path / "runs"
    for args in (
        ["--top-k", "2"],
        ["--checkpoint", str(tmp_path / "missing")],
        ["--checkpoint", str(smoke_experiment.exp_dir), "--top-k", "0"],
    ):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            status = cli.main(["--space", "langevin.yaml", "--storage-path", str(storage), *args])
        lines = err.getvalue().strip().splitlines()
        assert status == 2 and len(lines) == 1 and "Traceback" not in lines[0], lines
        assert not ray.is_initialized() and not storage.exists()


# ------------------------------------------------------------------------------ a real sampler search


@pytest.fixture(scope="module")
def sampler_run(smoke_experiment, tmp_path_factory):
    assert smoke_experiment.returncode == 0, smoke_experiment.output[-2000:]
    root = tmp_path_factory.mktemp("sampler")
    space = root / "sampler.yaml"
    space.write_text(SMOKE + SECTION.format(trials=TRIALS))
    source, _ = best_checkpoint_by_results(smoke_experiment.exp_dir)
    before = folder_sha256(source)
    done, _ = run_search_cli(
        "--space",
        str(space),
        "--checkpoint",
        str(smoke_experiment.exp_dir),
        "--storage-path",
        str(root / "runs"),
        "--no-dashboard",
        "--no-calibration",
        "--name",
        "tune",
        timeout=600,
    )
    exp_dir = root / "runs" / "tune"
    return {
        "done": done,
        "exp_dir": exp_dir,
        "source": source.resolve(),
        "before": before,
        "record": json.loads((exp_dir / "search.json").read_text()),
    }


def test_sampler_search_runs_end_to_end(sampler_run):
    done, exp_dir = sampler_run["done"], sampler_run["exp_dir"]
    assert done.returncode == 0, done.stdout[-3000:]
    assert sampler_run["record"]["kind"] == "sampler"
    trials = trial_dirs(exp_dir)
    assert len(trials) == TRIALS
    study = optuna.load_study(
        study_name=sampler_run["record"]["study_name"], storage=f"sqlite:///{exp_dir / 'optuna.db'}"
    )
    assert len(study.trials) == TRIALS
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for trial in trials:
        for row in result_rows(trial):
            assert row["samples_scored"] in (16, 32, 64) and math.isfinite(row["kid"])
            # network evaluations spent: every sample drawn so far, levels x T (+1 with denoising)
            levels = len(ladder_levels(4, row["skip_levels"], row["level_stride"]))
            assert row["nfe_per_sample"] == levels * row["n_steps_each"] + int(row["denoise"])
            assert row["sample_evals_total"] == row["samples_scored"] * row["nfe_per_sample"]
    spent = sum(result_rows(t)[-1]["sample_evals_total"] for t in trials)
    assert f"network evaluations spent: {spent:,}" in done.stdout


def test_sampler_search_never_trains(sampler_run):
    source = sampler_run["source"]
    assert folder_sha256(source) == sampler_run["before"]  # state.pt and every other file byte-identical
    state = torch.load(source / "state.pt", map_location="cpu", weights_only=True)
    assert state["ema"] is not None  # smoke trains with EMA: the sampler must use the average
    expected = weights_digest(sampling_weights(state))
    rows = [row for trial in trial_dirs(sampler_run["exp_dir"]) for row in result_rows(trial)]
    assert rows and all(row["weights_sha256"] == expected and row["used_ema"] for row in rows)


def test_asha_stopped_trials_scored_fewer_samples_than_promoted_ones(sampler_run):
    from analysis.load import read_trial_states

    states = read_trial_states(sampler_run["exp_dir"])
    reached = {t.name: max(r["samples_scored"] for r in result_rows(t)) for t in trial_dirs(sampler_run["exp_dir"])}
    assert all(states[name]["status"] == "TERMINATED" for name in reached)
    stopped = [n for n, s in reached.items() if s < 64]
    promoted = [n for n, s in reached.items() if s == 64]
    assert stopped and promoted, reached
    assert max(reached[n] for n in stopped) < min(reached[n] for n in promoted)


def test_warm_start_trials_are_the_first_and_come_from_the_checkpoint(sampler_run):
    record = sampler_run["record"]
    config = json.loads((sampler_run["source"] / "metrics.json").read_text())["config"]
    sigma_begin, sigma_end, num_levels, steps = (
        config[k] for k in ("sigma_begin", "sigma_end", "num_levels", "n_steps_each")
    )
    expected = [
        (WARM_TRAINED, {"step_lr": config["step_lr"], "n_steps_each": steps, "skip_levels": 0}),
        (
            WARM_NCSNV2,
            {
                "step_lr": ncsnv2_step_lr(sigma_end, ladder_ratio(sigma_begin, sigma_end, num_levels), steps),
                "n_steps_each": steps,
                "skip_levels": 0,
            },
        ),
    ]
    assert [(w["label"], w["params"]) for w in record["warm_start"]] == expected
    study = optuna.load_study(
        study_name=record["study_name"], storage=f"sqlite:///{sampler_run['exp_dir'] / 'optuna.db'}"
    )
    first = sorted(study.trials, key=lambda t: t.number)[:2]
    for trial, (_, point) in zip(first, expected):
        assert trial.params == pytest.approx(point)
    configs = [json.loads((t / "params.json").read_text()) for t in trial_dirs(sampler_run["exp_dir"])]
    for _, point in expected:
        assert sum(all(c[k] == pytest.approx(v) for k, v in point.items()) for c in configs) == 1


def test_result_rows_carry_the_checkpoint_they_sampled_from(sampler_run):
    source = str(sampler_run["source"])
    for trial in trial_dirs(sampler_run["exp_dir"]):
        rows = result_rows(trial)
        assert rows and all(r["checkpoint"] == source and r["config"]["checkpoint"] == source for r in rows)
        assert all(r["checkpoint_trial"] == sampler_run["source"].parent.name for r in rows)


def test_report_shows_quality_against_step_and_compute_beside_the_original_score(sampler_run):
    import pandas as pd

    report = sampler_run["exp_dir"] / "report"
    html, md = (report / "report.html").read_text(), (report / "report.md").read_text()
    for name in ("sampler_vs_step.png", "sampler_front.png", "sampler_samples.png"):
        assert (report / name).stat().st_size > 0 and f'data-file="{name}"' in html and f"({name})" in md
    original = json.loads((sampler_run["source"] / "metrics.json").read_text())["metrics"]["kid"]
    from analysis.reporting.report import fmt

    assert re.search(rf"original score from the joint search \(kid {re.escape(fmt(original))} on 64 samples", md)
    board = pd.read_csv(report / "leaderboard.csv", dtype={"trial_id": str})
    assert len(board) == TRIALS
    finals = {t.name.removeprefix("trial_"): result_rows(t)[-1] for t in trial_dirs(sampler_run["exp_dir"])}
    # ranked ASHA's way: further first, then by kid at the last look reached
    order = sorted(finals, key=lambda i: (-finals[i]["samples_scored"], finals[i]["kid"]))
    assert list(board["trial_id"]) == order
    assert set(board["warm_start"].dropna()) == {WARM_TRAINED, WARM_NCSNV2}
