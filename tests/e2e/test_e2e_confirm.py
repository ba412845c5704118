"""The confirmation stage end to end on a copy of the shared smoke search: real Ray tasks, real
checkpoints, real MNIST scoring; then a second run that adds a seed and samples only that seed.
And every evaluation of the search carries its intervals, in result.json and in TensorBoard."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import REPO

from trainables.contract.metrics import METRICS, VERDICTS, hi_key, lo_key


def _confirm(exp_dir: Path, ray_dir: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", RAY_TMPDIR=ray_dir)  # its own Ray temp folder
    return subprocess.run(
        [sys.executable, "platform/confirm.py", str(exp_dir), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_confirmation_samples_the_top_trial_and_the_warm_starts_pairs_them_and_resumes(smoke_experiment, tmp_path):
    assert smoke_experiment.returncode == 0, smoke_experiment.output[-3000:]
    exp = tmp_path / "smoke"
    shutil.copytree(smoke_experiment.exp_dir, exp)  # the shared folder stays as the search left it
    ray_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    try:
        first = _confirm(exp, ray_dir, "--top-k", "1", "--seeds", "1", "--samples", "48", "--resamples", "200")
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        plan = json.loads((exp / "confirm" / "plan.json").read_text())
        trials = plan["trials"]
        # the search's best trial, then the 2019 and NCSNv2 warm starts (the smoke space holds both)
        roles = sorted(role for t in trials for role in t["roles"])
        assert roles == sorted(["top", "ncsn_2019_mnist", "ncsnv2_mnist"])
        assert f"confirmation: 0 of {len(trials)} (trial, seed) results already on disk" in first.stdout
        records = {}
        for t in trials:
            folder = exp / "confirm" / f"trial_{t['trial_id']}"
            for suffix in (".json", ".pt", ".png"):
                assert (folder / f"seed0_n48{suffix}").stat().st_size > 0
            records[t["trial_id"]] = json.loads((folder / "seed0_n48.json").read_text())
        noise = {json.dumps(r["noise"], sort_keys=True) for r in records.values()}
        assert len(noise) == 1  # one noise stream for every trial of a seed: paired
        for record in records.values():
            assert record["samples"] == 48 and not record["diverged"]
            assert record["sampler"]["n_steps_each"] == 2 and record["nfe_per_sample"] == 4 * 2 + 1
            assert record["metrics"]["protocol"]["n"] == 48
        protocols = {r["metrics"]["protocol_id"] for r in records.values()}
        assert len(protocols) == 1
        summary = json.loads((exp / "confirm" / "summary.json").read_text())
        assert summary["best"] in records and summary["incomplete"] == []
        for entry in summary["trials"]:
            if entry["trial_id"] != summary["best"]:
                assert entry["versus_best"]["kid"]["verdict"] in VERDICTS
        assert "confirmed ranking by kid (1 seeds x 48 samples per trial" in first.stdout
        report = (exp / "report" / "report.md").read_text()
        assert "## Confirmation: the top trials sampled again" in report
        assert "## A pipeline check, not a result" in report  # ngf 8, 40 iterations: no digits
        stamps = {p: p.stat().st_mtime_ns for p in (exp / "confirm").glob("trial_*/seed0_n48.*")}

        second = _confirm(exp, ray_dir, "--top-k", "1", "--seeds", "2", "--samples", "48", "--resamples", "200")
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        n = len(trials)
        assert f"confirmation: {n} of {2 * n} (trial, seed) results already on disk; {n} to sample" in second.stdout
        assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # seed 0 was not sampled again
        assert all((exp / "confirm" / f"trial_{t['trial_id']}" / "seed1_n48.json").exists() for t in trials)
        summary = json.loads((exp / "confirm" / "summary.json").read_text())
        assert summary["settings"]["seeds"] == 2
        assert all(len(e["values"]["kid"]["per_seed"]) == 2 for e in summary["trials"])
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)


def test_every_evaluation_carries_its_intervals_on_disk_and_in_tensorboard(smoke_experiment):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trials = sorted(p for p in smoke_experiment.exp_dir.iterdir() if p.name.startswith("trial_"))
    for trial in trials:
        rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines() if line.strip()]
        for row in rows:
            for name in METRICS:
                assert row[lo_key(name)] <= row[hi_key(name)], (trial.name, name)
        checkpoint = sorted(trial.glob("checkpoint_*"))[-1]
        stored = json.loads((checkpoint / "metrics.json").read_text())["metrics"]
        assert stored["intervals"]["level"] == 0.95 and lo_key("kid") in stored
        acc = EventAccumulator(str(trial), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        scalars = set(acc.Tags()["scalars"])
        assert {"quality/kid", "quality/kid_lo", "quality/kid_hi"} <= scalars
        assert len(acc.Scalars("quality/kid_lo")) == len(rows)
        assert "custom_scalars__config__" in acc.Tags()["tensors"]  # the band's layout
