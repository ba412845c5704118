"""The benchmark's report: its arithmetic on known numbers, its shape on a tiny real run, and the
command line's flags. Nothing here asserts a timing."""

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from trainables.tools.benchmark import (
    BASELINE,
    BF16,
    MEASURES,
    OPTIMIZED,
    RESULT_KEYS,
    SEED_LOOP_OUR_NETWORK,
    BenchmarkSettings,
    format_table,
    run_benchmark,
    summarize,
)

REPO = Path(__file__).resolve().parents[2]


def test_summary_gives_medians_and_ratios_to_the_baseline():
    rows = {
        BASELINE: {
            "train": [1.0, 3.0, 2.0],
            "sample": [10.0, 30.0, 20.0],
            "train_cpu": [4.0, 4.0, 5.0],
            "sample_cpu": [8.0, 6.0, 7.0],
        },
        OPTIMIZED: {
            "train": [5.0, 4.0, 6.0],
            "sample": [50.0, 90.0, 70.0],
            "train_cpu": [1.0, 2.0, 2.0],
            "sample_cpu": [1.0, 2.0, 3.0],
        },
    }
    table = summarize(rows)
    assert list(table) == [BASELINE, OPTIMIZED]
    base, fast = table[BASELINE], table[OPTIMIZED]
    assert tuple(fast) == RESULT_KEYS
    assert fast["train_iters_per_s"] == [5.0, 4.0, 6.0]  # the repeats as measured, in order
    assert (base["train_median"], base["sample_median"], base["train_cpu_median"], base["sample_cpu_median"]) == (
        2.0,
        20.0,
        4.0,
        7.0,
    )
    assert all(base[k] == 1.0 for k in ("train_ratio", "sample_ratio", "train_cpu_ratio", "sample_cpu_ratio"))
    # Speeds: faster is > 1 (5 / 2); CPU cost per unit: cheaper is > 1 (4 / 2, 7 / 2).
    assert (fast["train_ratio"], fast["sample_ratio"]) == (2.5, 3.5)
    assert (fast["train_cpu_ratio"], fast["sample_cpu_ratio"]) == (2.0, 3.5)


@pytest.fixture(scope="module")
def tiny_report():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8)
    settings = BenchmarkSettings(
        ngf=8, batch=4, num_levels=2, device="cpu", repeats=2, iters=1, n_steps_each=1, variants=True, bf16=True
    )
    return run_benchmark(settings, images=images, progress=None)


def test_tiny_run_reports_every_row_and_column(tiny_report):
    report = json.loads(json.dumps(tiny_report))  # what the command line writes, read back
    assert set(report) == {
        "settings",
        "machine",
        "optimized_settings",
        "seed_vs_optimized_score_rel_diff",
        "results",
        "guards",
    }
    assert report["settings"] == {
        "ngf": 8,
        "batch": 4,
        "num_levels": 2,
        "iters": 1,
        "n_steps_each": 1,
        "evals_per_sample_run": 2,
        "repeats": 2,
        "step_lr": 2e-5,
    }
    assert report["machine"]["device"] == "cpu" and "OMP_WAIT_POLICY" in report["machine"]
    assert report["optimized_settings"]["adam"] == "fused"
    results = report["results"]
    other_format = f"optimized, channels_last={not report['optimized_settings']['channels_last']}"
    assert list(results) == [BASELINE, OPTIMIZED, SEED_LOOP_OUR_NETWORK, other_format, BF16]
    for name, row in results.items():
        assert tuple(row) == RESULT_KEYS, name
        runs = 1 if name == BF16 else 2  # bf16: one repeat of one iteration and one level
        assert all(len(row[k]) == runs for k in RESULT_KEYS[: len(MEASURES)]), name
        assert all(v > 0 for k in RESULT_KEYS if k.endswith(("_median", "_ratio")) for v in [row[k]]), name
    assert all(results[BASELINE][k] == 1.0 for k in RESULT_KEYS if k.endswith("_ratio"))
    # Same weights on both sides: the scores agree (and the number is a real comparison, not 0).
    assert 0 < report["seed_vs_optimized_score_rel_diff"] < 1e-5


def test_table_has_a_line_per_row_under_the_header(tiny_report):
    lines = format_table(tiny_report).splitlines()
    assert lines[0].startswith("NCSN benchmark: ngf=8 batch=4 L=2 on cpu") and "medians of 2 repeats" in lines[0]
    assert "seed vs optimized scores differ by" in lines[1]
    assert lines[2].split() == [
        "code",
        "train",
        "it/s",
        "x",
        "base",
        "CPU-s/it",
        "x",
        "base",
        "sample",
        "evals*img/s",
        "x",
        "base",
        "CPU-ms",
        "x",
        "base",
    ]
    assert set(lines[3]) == {"-"} and len(lines[3]) == len(lines[2])
    end = next(i for i, line in enumerate(lines) if line.startswith("x base:"))
    body = lines[4:end]
    assert [line[:32].rstrip() for line in body] == list(tiny_report["results"])
    base = tiny_report["results"][BASELINE]
    shown = [
        base["train_median"],
        1.0,
        base["train_cpu_median"],
        1.0,
        base["sample_median"],
        1.0,
        base["sample_cpu_median"],
        1.0,
    ]
    assert body[0][32:].split() == [f"{v:.{d}f}" for v, d in zip(shown, (3, 2, 2, 2, 1, 2, 2, 2))]
    # then the CPU guards of the GPU path, one row per design
    guards = lines[end + 2 :]
    assert guards[0].startswith("guards (CPU census, ngf 8, batch 4, L 2)")
    assert [line.split("  ")[0] for line in guards[2:5]] == ["gpu default (fp16)", "bf16>=0.1 split", "fp32"]
    assert guards[-1].startswith("training forward under dynamo: 1 graph(s), 0 break(s)")


def load_script(monkeypatch, omp_policy):
    if omp_policy is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", omp_policy)
    spec = importlib.util.spec_from_file_location("benchmark_cli", REPO / "platform" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("before", "after"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_script_sets_a_passive_omp_wait_policy_unless_one_is_set(monkeypatch, before, after):
    load_script(monkeypatch, before)
    assert os.environ["OMP_WAIT_POLICY"] == after


def test_script_flags_map_onto_the_settings(monkeypatch):
    cli = load_script(monkeypatch, "PASSIVE")
    assert cli.settings_from(cli.parse_args([])) == BenchmarkSettings()
    args = cli.parse_args(["--ngf", "16", "--num-levels", "4", "--variants", "--bf16", "--threads", "2"])
    assert cli.settings_from(args) == BenchmarkSettings(ngf=16, num_levels=4, variants=True, bf16=True, threads=2)
    assert args.out == "benchmark.json"
    smoke = cli.settings_from(cli.parse_args(["--smoke-test"]))
    assert (smoke.ngf, smoke.batch, smoke.repeats, smoke.iters, smoke.n_steps_each) == (8, 8, 1, 2, 1)


@pytest.mark.parametrize("argv", [["--ngf", "4"], ["--batch", "0"], ["--repeats", "0"], ["--step-lr", "0"]])
def test_script_refuses_bad_sizes(monkeypatch, capsys, argv):
    cli = load_script(monkeypatch, "PASSIVE")
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(argv)
    assert exit_info.value.code == 2 and argv[0] in capsys.readouterr().err
