"""The spec's ``runtime:`` section and GPU packing: runtime settings
are validated from the parameter table, reach every trial's config (joint and sampler-only) and
the estimate's typical trial, and trials at once are sized from the cluster's GPUs.
Malformed runtime/packing files are in tests/data/bad_specs (runtime_*.yaml, packing_*.yaml)."""

from __future__ import annotations

import optuna
import pytest
import yaml

from search.estimate import gpu_sharing, typical_config
from search.folder import SearchOptions, resources_for
from search.joint import plan as joint_plan
from search.packing import pack, packed_concurrency
from search_spaces.schema import SPACES_DIR
from search_spaces.spec import SpecError, load_spec, parse_spec_text
from search_spaces.tuning import runtime_config
from trainables.contract.params import SPEC_RUNTIME

SMOKE = (SPACES_DIR / "smoke.yaml").read_text()


def spec_with(runtime: str = "", resources: str = "resources: {cpu: 1, gpu: 0}"):
    text = SMOKE.replace("resources: {cpu: 1, gpu: 0}", resources) + runtime
    return parse_spec_text(text, file="s.yaml")


def test_runtime_values_are_canonical_and_yaml_s_off_means_off():
    spec = spec_with("runtime:\n  amp: off\n  compile: max-autotune\n  amp_min_sigma: 0.05\n", "resources: {gpu: 1}")
    assert spec.runtime == {"amp": "off", "compile": "max-autotune", "amp_min_sigma": 0.05}
    # the spec written back loads to the same spec (search.json)
    assert parse_spec_text(yaml.safe_dump(spec.to_dict()), file="again.yaml").runtime == spec.runtime


def test_a_bad_runtime_value_is_one_line_naming_file_line_and_key():
    with pytest.raises(SpecError) as err:
        spec_with("runtime:\n  compile: fast\n")
    message = str(err.value)
    assert message.startswith(f"s.yaml:{SMOKE.count(chr(10)) + 2}: runtime.compile: ")
    assert "'fast'" in message and "\n" not in message


def test_runtime_reaches_every_joint_trial_and_the_estimate():
    spec = spec_with("runtime: {amp: bf16, channels_last: false}\n")
    config = runtime_config(spec)
    assert set(config) == set(SPEC_RUNTIME) and config["amp"] == "bf16" and config["channels_last"] is False
    assert config["compile"] == "auto"  # what the file leaves out keeps the table's default
    plan = joint_plan(spec, None, SearchOptions(calibrate=False))
    trial = plan.space(optuna.create_study().ask())
    assert {k: trial[k] for k in SPEC_RUNTIME} == config  # in params.json of every trial
    assert {k: typical_config(spec)[k] for k in SPEC_RUNTIME} == config


def test_trials_per_gpu_sizes_concurrency_from_the_cluster():
    spec = load_spec("sigmas.yaml")  # 24 trials, 4 per GPU, max_concurrent 4
    assert spec.resources.trials_per_gpu == 4 and spec.resources.gpu == 0.25
    assert resources_for(spec, 8) == {"cpu": 1.0, "gpu": 0.25}
    assert pack(spec, 8).budget.max_concurrent == 24  # 8 GPUs hold 32: all 24 trials at once
    assert pack(spec, 2).budget.max_concurrent == 8  # 2 GPUs x 4
    assert pack(spec, 0) is spec  # no GPU: the spec's (preview's) own
    lines = []
    pack(spec, 2, lines.append)
    assert "2 GPU(s) x 4 trials per GPU -> up to 8 trials at once" in lines[0]
    plain = spec_with(resources="resources: {cpu: 1, gpu: 0.25}")
    assert packed_concurrency(plain, 8, 6) is None and pack(plain, 8) is plain  # a fixed share stays as it was


def test_the_sampler_section_is_packed_too():
    spec = load_spec("langevin.yaml")
    packed = pack(spec, 3)
    assert packed.sampler_search.max_concurrent == min(spec.sampler_search.num_trials, 12)
    assert packed.budget.max_concurrent == min(spec.budget.num_trials, 12)


def test_the_estimate_measures_as_many_at_once_as_share_a_gpu():
    assert gpu_sharing({"cpu": 1, "gpu": 0.25}, concurrent=8) == 4
    assert gpu_sharing({"cpu": 1, "gpu": 0.25}, concurrent=2) == 2
    assert gpu_sharing({"cpu": 1, "gpu": 1}, concurrent=8) == 1
    assert gpu_sharing({"cpu": 1}, concurrent=8) == 1
