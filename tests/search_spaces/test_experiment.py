"""The experiment-folder code both kinds of search share, and the choice of kind (no Ray)."""

from __future__ import annotations

import json

import pytest

from search import joint, sampler
from search.folder import (
    SearchOptions,
    base_record,
    budget_mode,
    check_folder,
    choose_budget,
    experiment_dir,
    recorded_spec,
    write_record,
)
from search.runner import kind_of
from search_spaces.spec import SPACES_DIR, load_spec, with_preview
from trainables.contract.layout import JOINT, SAMPLER, SEARCH_FILE, SPEC_COPY, TRAIN_TIME_ATTR, experiment_kind


def _options(tmp_path, **changes) -> SearchOptions:
    return SearchOptions(storage_path=str(tmp_path / "runs"), **changes)


def test_each_kind_names_its_folder_and_the_name_option_wins(tmp_path):
    spec = load_spec("langevin.yaml")
    options = _options(tmp_path)
    assert experiment_dir(options, joint.default_name(spec)) == (tmp_path / "runs" / "langevin").resolve()
    assert experiment_dir(options, sampler.default_name(spec)).name == "langevin-sampler"
    assert experiment_dir(_options(tmp_path, name="mine"), sampler.default_name(spec)).name == "mine"


def test_record_holds_the_kind_and_reloads_to_the_spec_that_ran(tmp_path):
    spec = with_preview(load_spec("smoke.yaml"))
    exp_dir = tmp_path / "runs" / "smoke"
    record = base_record(spec, JOINT, _options(tmp_path), gpus=0, study_name="smoke-1", time_attr=TRAIN_TIME_ATTR)
    write_record(exp_dir, spec, {**record, "warm_start": []})
    on_disk = json.loads((exp_dir / SEARCH_FILE).read_text())
    assert on_disk["kind"] == JOINT and on_disk["time_attr"] == "iterations" and on_disk["budget_mode"] == "preview"
    assert on_disk["resources"] == {"cpu": 1.0}
    assert (exp_dir / SPEC_COPY).read_text() == (SPACES_DIR / "smoke.yaml").read_text()
    assert not list(exp_dir.glob("*.tmp"))  # written atomically: no temporary left behind
    again, _ = recorded_spec(exp_dir)
    assert again.to_dict() == spec.to_dict() and not again.preview and experiment_kind(exp_dir) == JOINT


def test_a_folder_is_refused_unless_resumed_and_a_resume_needs_its_kind(tmp_path):
    spec = load_spec("smoke.yaml")
    exp_dir = tmp_path / "runs" / "smoke"
    check_folder(exp_dir, _options(tmp_path), JOINT)  # missing: fine to start
    with pytest.raises(ValueError, match="holds no search"):
        check_folder(exp_dir, _options(tmp_path, resume=True), JOINT)
    record = base_record(spec, SAMPLER, _options(tmp_path), 0, "s-1", "samples_scored")
    write_record(exp_dir, spec, record)
    with pytest.raises(ValueError, match="already exists; pass --resume"):
        check_folder(exp_dir, _options(tmp_path), JOINT)
    with pytest.raises(ValueError, match="a sampler search, not a joint one"):
        check_folder(exp_dir, _options(tmp_path, resume=True), JOINT)
    check_folder(exp_dir, _options(tmp_path, resume=True), SAMPLER)


def test_kind_is_sampler_with_a_checkpoint_or_when_resuming_a_sampler_folder(tmp_path):
    spec = load_spec("smoke.yaml")
    assert kind_of(spec, _options(tmp_path)) is joint
    assert kind_of(spec, _options(tmp_path, checkpoint="anything")) is sampler
    assert kind_of(spec, _options(tmp_path, resume=True)) is joint  # nothing there yet
    write_record(tmp_path / "runs" / "smoke", spec, base_record(spec, SAMPLER, _options(tmp_path), 0, "s", "x"))
    assert kind_of(spec, _options(tmp_path, resume=True)) is sampler


def test_budget_choice_previews_without_gpu_unless_told_and_applies_overrides(tmp_path):
    spec = load_spec("sigmas.yaml")
    said = []
    preview = choose_budget(spec, _options(tmp_path), gpus=0, say=said.append)
    assert preview == with_preview(spec) and said and "CPU preview" in said[0]
    assert choose_budget(spec, _options(tmp_path, budget="full"), gpus=0, say=said.append).budget == spec.budget
    assert choose_budget(spec, _options(tmp_path), gpus=1, say=said.append).budget == spec.budget
    smoke = choose_budget(spec, _options(tmp_path, smoke_test=True, num_trials=3, name="tiny"), 1, said.append)
    assert (smoke.budget.num_trials, smoke.budget.iterations, smoke.name) == (3, 20, "tiny")
    assert smoke.fixed["ngf"] == 8
    assert [
        budget_mode(_options(tmp_path, **o), g)
        for o, g in (({}, 0), ({}, 1), ({"budget": "full"}, 0), ({"smoke_test": True}, 1))
    ] == ["preview", "full", "full", "smoke"]


def test_joint_plan_proposes_the_warm_starts_first_and_keeps_two_checkpoints(tmp_path):
    spec = with_preview(load_spec("sigmas.yaml"))
    plan = joint.plan(spec, None, _options(tmp_path, calibrate=False))
    assert [w["label"] for w in plan.record["warm_start"]] == ["ncsn_2019_mnist", "ncsnv2_mnist"]
    assert plan.points == [w["params"] for w in plan.record["warm_start"]]
    assert plan.asha == {
        "time_attr": "iterations",
        "max_t": spec.budget.iterations,
        "grace_period": spec.scheduler.grace_period,
        "reduction_factor": spec.scheduler.reduction_factor,
    }
    assert (plan.num_trials, plan.max_concurrent) == (spec.budget.num_trials, spec.budget.max_concurrent)
    assert plan.keep == {"num_to_keep": 2, "checkpoint_score_attribute": "kid", "checkpoint_score_order": "min"}
    assert plan.budget.iterations == spec.budget.iterations and plan.messages == []


def test_sampler_search_is_refused_before_ray_without_a_usable_checkpoint(tmp_path):
    spec = load_spec("langevin.yaml")
    with pytest.raises(ValueError, match="needs --checkpoint"):
        sampler.prepare(spec, _options(tmp_path))
    with pytest.raises(ValueError, match="no such folder"):
        sampler.prepare(spec, _options(tmp_path, checkpoint=str(tmp_path / "missing")))
