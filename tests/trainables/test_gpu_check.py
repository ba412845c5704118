"""The GPU check's CPU-runnable parts (trainables/tools/gpu_check.py): the report and its verdict.
Its CUDA-only assertions run only on a GPU machine
(``python platform/benchmark.py --device cuda --check``); the whole flow on a CPU is
tests/e2e/test_e2e_gpu_check.py."""

import subprocess
import sys

import torch

from trainables.tools import gpu_check

torch.set_num_threads(1)


def test_report_fails_when_a_check_fails():
    outcomes = [gpu_check.Outcome("cuda", True, "ok"), gpu_check.Outcome("placement", False, "ema.w on cpu")]
    report = gpu_check._finish({"device": "cuda:0", "torch": torch.__version__}, outcomes)
    assert report["ok"] is False
    text = gpu_check.format_report(report)
    assert "FAIL  placement" in text and "SOME CHECKS FAILED" in text
    na = gpu_check._finish({"device": "cpu", "torch": "x"}, [gpu_check.Outcome("no_sync_train", None, "n/a")])
    assert na["ok"] is True  # not applicable is no failure


def test_the_check_needs_neither_ray_nor_optuna():
    code = (
        "import sys, trainables.tools.gpu_check, trainables.tools.precision; "
        "print(sorted(m for m in ('ray', 'optuna') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
