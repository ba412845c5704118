"""The GPU check's whole flow on a CPU (``platform/benchmark.py --device cpu --check --smoke-test``):
every check that can run here runs and passes, the CUDA-only ones say so, the packing measurement
starts its trial processes, and the JSON report is written. Compilation is left out (slow on a
CPU; tests/e2e/test_e2e_compile.py covers it)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def test_the_check_runs_on_a_cpu_and_writes_its_report(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(
        [
            sys.executable,
            "platform/benchmark.py",
            "--device",
            "cpu",
            "--check",
            "--smoke-test",
            "--skip",
            "compile_agreement,compile",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    outcomes = {o["name"]: o for o in report["outcomes"]}
    assert report["ok"] and report["device"] == "cpu"
    assert outcomes["placement"]["ok"] is True and outcomes["precision_table"]["ok"] is True
    for name in ("cuda", "no_sync_train", "no_sync_langevin"):
        assert outcomes[name]["ok"] is None and "not applicable" in outcomes[name]["detail"]
    assert outcomes["compile_agreement"]["detail"].startswith("skipped")
    train = outcomes["train_throughput"]["values"]
    assert train["eager it/s"] > 0 and train["fp32 eager it/s"] > 0 and train["eager warmup_s"] > 0
    assert "compiled it/s" not in train and "default it/s" not in train  # compile skipped; no graphs here
    # the sampler per precision a CPU has (no TF32; bf16 left out as slow there)
    sampler = outcomes["sampler_throughput"]["values"]
    assert sampler["fp16 evals*img/s"] > 0 and sampler["fp32 evals*img/s"] > 0 and "tf32 evals*img/s" not in sampler
    packing = outcomes["packing"]["values"]
    assert packing["1 process it/s"] > 0 and packing["2 processes it/s (sum)"] > 0
    assert "fp16: worst score" in done.stdout and "bf16>=0.1" in done.stdout  # the designs' table is printed
    assert outcomes["profile"]["detail"] == "not applicable: CUDA only"
    assert "all checks passed" in done.stdout
