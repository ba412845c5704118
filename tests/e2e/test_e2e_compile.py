"""torch.compile done right, on CPU where inductor works: the compiled training
loss and the compiled sampler's scores equal eager within the GPU check's tolerances, training and
sampling are separate static compilations, and a second trial process reuses the first one's
inductor cache instead of compiling again. Slow on a CPU (one full compilation of the smallest
network), hence here among the end-to-end tests."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO

from trainables.tools.gpu_check import COMPILE_TOLERANCE

TRIAL = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
from trainables.ncsn import runtime as rt
from trainables.ncsn.train import TrainConfig, Trainer

rt.use_compile_cache(sys.argv[1])
images = torch.randint(0, 256, (16, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
cfg = dict(ngf=8, num_levels=3, batch_size=4, sigma_end=0.05, device="cpu", amp="off")
eager, compiled = (Trainer(TrainConfig(**cfg, compile=mode), images) for mode in ("off", "default"))
x, levels = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 0])
start = time.perf_counter()
with torch.inference_mode():
    s_eager, s_compiled = eager.score_fn()(x, levels), compiled.score_fn()(x, levels)
loss_eager, first, second = eager.train(2)["loss"], compiled.train(2), compiled.train(1)
loss_compiled = first["loss"]
import torch._dynamo.utils as du
print(json.dumps({
    "score_rel": float((s_compiled - s_eager).norm() / s_eager.norm()),
    "loss_rel": abs(loss_compiled - loss_eager) / abs(loss_eager),
    "compile_seconds": time.perf_counter() - start,
    "warmup_steps": first["warmup_steps"],
    "later_warmup_steps": second["warmup_steps"],
    "counters": rt.compile_counters(),
    "frames": sorted({k for k in du.counters["stats"]}),
    "separate": compiled._train_forward is not compiled.score_fn().fp32.fn,
}))
"""


def run_trial(cache) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", TRIAL, str(cache)], cwd=REPO, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_compiled_equals_eager_and_a_second_trial_reuses_the_cache(tmp_path):
    cache = tmp_path / "compile_cache"
    first = run_trial(cache)
    assert first["score_rel"] <= COMPILE_TOLERANCE["fp32"], first
    assert first["loss_rel"] <= COMPILE_TOLERANCE["loss"], first
    assert first["separate"]  # training and sampling: two compiled callables
    assert first["warmup_steps"] == 2 and first["later_warmup_steps"] == 0  # compilation left out of the rate
    assert first["counters"]["fxgraph_cache_miss"] >= 2, first  # compiled here: training and sampling graphs
    second = run_trial(cache)
    assert second["counters"]["fxgraph_cache_hit"] >= 2, second  # loaded, not compiled again
    assert second["counters"]["fxgraph_cache_miss"] < first["counters"]["fxgraph_cache_miss"], (first, second)
    assert second["compile_seconds"] < first["compile_seconds"], (first, second)
    assert second["score_rel"] == first["score_rel"] and second["loss_rel"] == first["loss_rel"]
