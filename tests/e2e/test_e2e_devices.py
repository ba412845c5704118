"""Devices inside trials and the estimate on a Ray cluster that declares fake GPUs (this machine
has none and no usable CUDA): a trial given GPUs names the ids Ray assigned and fails with the
reason instead of training on the CPU; a trial without a GPU runs on the CPU; the cost estimate
is measured in a Ray task holding one trial's resources, as many at once as trials share a GPU."""

from __future__ import annotations

import os
import re

import pytest

from search_spaces.schema import SPACES_DIR
from search_spaces.spec import parse_spec_text

TINY = {
    "sigma_begin": 1.0,
    "sigma_end": 0.05,
    "num_levels": 3,
    "ngf": 8,
    "batch_size": 4,
    "lr": 1e-3,
    "ema": 0.0,
    "step_lr": 2e-5,
    "n_steps_each": 1,
    "denoise": False,
    "device": "auto",
}


@pytest.fixture(scope="module")
def fake_gpu_cluster(tmp_path_factory):
    import ray

    temp = tmp_path_factory.mktemp("ray")
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, _temp_dir=str(temp), log_to_driver=False)
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()


def run_trials(storage, name: str, resources: dict, n: int):
    from ray import tune

    from trainables.tune_trainable import Budget, ncsn_trainable

    budget = Budget(iterations=2, eval_every=2, eval_samples=8, device="auto")
    trainable = tune.with_resources(tune.with_parameters(ncsn_trainable, budget=budget), resources)
    tuner = tune.Tuner(
        trainable,
        param_space=dict(TINY),
        tune_config=tune.TuneConfig(num_samples=n, max_concurrent_trials=n),
        run_config=tune.RunConfig(
            name=name, storage_path=str(storage), failure_config=tune.FailureConfig(max_failures=0), verbose=0
        ),
    )
    return list(tuner.fit())


def test_trials_given_gpus_fail_naming_the_assigned_ids_and_the_reason(fake_gpu_cluster, tmp_path):
    assert fake_gpu_cluster.get("GPU") == 2
    results = run_trials(tmp_path, "gpus", {"cpu": 1, "gpu": 1}, n=2)
    assert len(results) == 2
    for result in results:
        assert result.error is not None, "a trial with a GPU but no usable CUDA must not train on the CPU"
        text = str(result.error)
        assert "CUDA is not usable in this process" in text and "Refusing to train on the CPU" in text
        found = re.search(r"Ray assigned GPU\(s\) \['(\d)'\] to this trial \(CUDA_VISIBLE_DEVICES='(\d)'\)", text)
        assert found, text[-2000:]
        # the id the trial saw is one Ray has and the one Ray made visible to it
        assert found.group(1) in ("0", "1") and found.group(1) == found.group(2)
        assert not result.metrics or "iterations" not in result.metrics  # it never trained


def test_a_trial_without_gpu_runs_on_the_cpu_on_a_gpu_node(fake_gpu_cluster, tmp_path):
    (result,) = run_trials(tmp_path, "cpu", {"cpu": 1}, n=1)
    assert result.error is None, str(result.error)[-2000:]
    runtime = result.metrics["runtime"]
    assert runtime["device"] == "cpu" and runtime["device_name"] == "cpu"
    assert runtime["amp"] == "off" and runtime["compile_train"] == "off" and runtime["cuda_graphs"] == "off"
    assert result.metrics["iterations"] == 2


def smoke_spec(resources: str):
    text = (SPACES_DIR / "smoke.yaml").read_text().replace("resources: {cpu: 1, gpu: 0}", resources)
    return parse_spec_text(text, file="smoke.yaml")


def test_the_estimate_is_measured_in_a_task_holding_a_trial_s_resources(fake_gpu_cluster):
    from search.estimate import estimate_cost
    from search.joint import trial_budget

    spec = smoke_spec("resources: {cpu: 1, gpu: 0}")
    estimate = estimate_cost(spec, trial_budget(spec), iters=1)
    assert estimate.device == "cpu" and estimate.sharing == 1
    assert estimate.sample_batch == spec.budget.eval_samples  # the real evaluation batch (CPU cap 128)
    assert estimate.seconds_per_iteration > 0 and estimate.seconds_per_image_eval > 0
    assert estimate.runtime["device"] == "cpu"
    assert estimate.measured_in_pid != os.getpid()  # a Ray worker measured it, not the driver


def test_the_estimate_of_gpu_trials_runs_on_their_gpu_share_not_the_driver(fake_gpu_cluster):
    from search.estimate import estimate_cost
    from search.joint import trial_budget

    # two trials share a GPU: two calibration tasks at once on one (fake) GPU; with no usable
    # CUDA there they fail with the reason, where the old estimate timed the driver's CPU
    spec = smoke_spec("resources: {cpu: 1, gpu: 0.5}")
    with pytest.raises(Exception, match="CUDA is not usable in this process") as err:
        estimate_cost(spec, trial_budget(spec), iters=1)
    assert "Ray assigned GPU(s)" in str(err.value)
