"""The sampler-only search's spec section, its space and warm starts on given checkpoints
(no Ray, no network: checkpoints are described by their metrics.json contents)."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.checkpoints import CheckpointInfo
from search.sampler import TIME_ATTR, ncsnv2_step, plan_sampler_search
from search_spaces.spec import SPACES_DIR, SpecError, load_spec, parse_spec, parse_spec_text, with_preview
from search_spaces.tuning import runtime_config
from trainables.contract.layout import WARM_TECHNIQUE4 as WARM_NCSNV2
from trainables.contract.layout import WARM_TRAINED_WITH as WARM_TRAINED
from trainables.ncsn.sigmas import ladder_ratio, ncsnv2_step_lr

SMOKE = (SPACES_DIR / "smoke.yaml").read_text()
SECTION = """sampler_search:
  num_trials: {trials}
  max_concurrent: 1
  samples: [16, 32, 64]
  params:
    n_steps_each: {{int: [1, 4]}}
    skip_levels: {{int: [0, 1]}}
"""


# ------------------------------------------------------------------------------ spec section


def _with_section(section: str) -> str:
    return SMOKE + section


def test_langevin_space_has_a_sampler_section_with_a_cpu_preview():
    spec = load_spec("langevin.yaml")
    section = spec.sampler_search
    assert section.samples == (250, 1000, 4000) and section.reduction_factor == 4
    assert set(section.params) == {"skip_levels", "level_stride"}
    preview = with_preview(spec).sampler_search
    assert (preview.num_trials, preview.samples) == (8, (64, 256))
    # the preview narrows T per name and keeps the section's other params
    assert preview.params["n_steps_each"].bounds() == (1, 10) and preview.params["n_steps_each"].log
    assert {k: v for k, v in preview.params.items() if k != "n_steps_each"} == section.params
    assert parse_spec(spec.to_dict()) == spec
    assert with_preview(spec).to_dict()["sampler_search"]["samples"] == [64, 256]


@pytest.mark.parametrize(
    "section, key",
    [
        ("sampler_search: {num_trials: 4, max_concurrent: 1, samples: [16, 40]}", "sampler_search.samples"),
        ("sampler_search: {num_trials: 4, max_concurrent: 1, samples: [16, 32, 48]}", "sampler_search.samples"),
        ("sampler_search: {num_trials: 4, max_concurrent: 1, samples: [4, 8]}", "sampler_search.samples[0]"),
        ("sampler_search: {num_trials: 0, max_concurrent: 1, samples: [16]}", "sampler_search.num_trials"),
        ("sampler_search: {num_trials: 4, max_concurrent: 1}", "sampler_search.samples"),
        (
            "sampler_search: {num_trials: 4, max_concurrent: 1, samples: [16], "
            "params: {lr: {loguniform: [1.0e-4, 1.0e-3]}}}",
            "sampler_search.params.lr",
        ),
        (
            "sampler_search: {num_trials: 4, max_concurrent: 1, samples: [16], params: {skip_levels: {int: [-1, 2]}}}",
            "sampler_search.params.skip_levels.int[0]",
        ),
        (
            "sampler_search: {num_trials: 4, max_concurrent: 1, samples: [16], preview: {samples: [16, 20]}}",
            "sampler_search.preview.samples",
        ),
        ("sampler_search: {num_trials: 4, max_concurrent: 1, samples: [16], colour: red}", "sampler_search.colour"),
        (
            "sampler_search: {num_trials: 4, max_concurrent: 1, samples: [16], "
            "preview: {params: {lr: {choice: [1, 2]}}}}",
            "sampler_search.preview.params.lr",
        ),
    ],
)
def test_bad_sampler_sections_name_their_key(section, key):
    with pytest.raises(SpecError) as err:
        parse_spec_text(_with_section(section + "\n"), file="s.yaml")
    assert err.value.key == key, str(err.value)
    assert "\n" not in str(err.value)


def test_a_sampler_section_must_search_something():
    text = SMOKE.replace("  step_lr:     {loguniform: [1.0e-6, 1.0e-4]}\n", "")
    with pytest.raises(SpecError) as err:
        parse_spec_text(text + "sampler_search: {num_trials: 2, max_concurrent: 1, samples: [16]}\n")
    assert err.value.key == "sampler_search"
    parse_spec_text(SMOKE + "sampler_search: {num_trials: 2, max_concurrent: 1, samples: [16]}\n")


@pytest.mark.parametrize("samples", [(250, 1000, 4000), (16, 32, 64), (64,)])
def test_asha_rungs_fall_on_the_looks(samples):
    from ray.tune.schedulers import ASHAScheduler

    from search.sampler import asha_settings
    from search_spaces.spec import SamplerSearchSpec

    settings = asha_settings(SamplerSearchSpec(num_trials=4, max_concurrent=1, samples=samples))
    assert settings["time_attr"] == TIME_ATTR == "samples_scored"
    scheduler = ASHAScheduler(metric="kid", mode="min", **settings)
    assert sorted(m for m, _ in scheduler._brackets[0]._rungs) == list(samples)


def test_a_spec_without_sampler_section_searches_its_step_on_one_look():
    from search.sampler import sampler_params, sampler_section

    spec = load_spec("sigmas.yaml")
    section = sampler_section(spec)
    assert (section.num_trials, section.samples) == (spec.budget.num_trials, (spec.budget.eval_samples,))
    assert list(sampler_params(spec)) == ["step_lr"]


def test_ladder_params_are_only_accepted_in_the_sampler_section():
    with pytest.raises(SpecError) as err:
        parse_spec_text(SMOKE.replace("params:\n", "params:\n  skip_levels: {int: [0, 2]}\n"))
    assert err.value.key == "params.skip_levels"


def _info(path: str, sigma_begin: float, sigma_end: float, num_levels: int, **sampler) -> CheckpointInfo:
    config = {
        "sigma_begin": sigma_begin,
        "sigma_end": sigma_end,
        "num_levels": num_levels,
        "step_lr": 2e-5,
        "n_steps_each": 5,
        "denoise": False,
        **sampler,
    }
    return CheckpointInfo(Path(path), "trial_x", "exp", "kid", 1.0, 64, "p", 100, config)


def test_ncsnv2_warm_start_step_is_the_published_one_for_the_checkpoint_ladder():
    # docs/NCSN.md: MNIST, sigma 16.88 -> 0.01 with L = 101 (gamma 1.077), T = 5: eps = 1.07e-5.
    info = _info("/a", 16.875761961808387, 0.01, 101)
    assert ladder_ratio(16.875761961808387, 0.01, 101) == pytest.approx(1.077, abs=1e-3)
    assert ncsnv2_step(info, 5) == pytest.approx(1.07e-5, rel=0.02)


def test_plan_enqueues_both_warm_starts_of_every_checkpoint_even_outside_the_ranges():
    spec = parse_spec_text(_with_section(SECTION.format(trials=4)))
    a, b = _info("/a/ckpt", 1.0, 0.01, 10), _info("/b/ckpt", 2.0, 0.05, 4, step_lr=3e-5, n_steps_each=2)
    plan = plan_sampler_search(spec, [a])
    # every trial runs with the spec's runtime settings (defaults here)
    assert plan.constants == {"checkpoint": "/a/ckpt", **runtime_config(spec)} and "checkpoint" not in plan.params
    labels = [w["label"] for w in plan.warm_starts]
    assert labels == [WARM_TRAINED, WARM_NCSNV2]
    trained, ncsnv2 = (w["params"] for w in plan.warm_starts)
    assert trained == {"step_lr": 2e-5, "n_steps_each": 5, "skip_levels": 0}
    assert ncsnv2["step_lr"] == ncsnv2_step_lr(0.01, ladder_ratio(1.0, 0.01, 10), 5)
    # n_steps_each 5 lies outside the section's [1, 4]: it runs as it is, the range stays, a notice says so
    assert plan.params["n_steps_each"].bounds() == (1, 4)
    assert [n for n in plan.notices if "n_steps_each=5 outside" in n] and len(plan.notices) == 2

    both = plan_sampler_search(spec, [a, b])
    assert both.params["checkpoint"].choices == ("/a/ckpt", "/b/ckpt")
    assert [(w["label"], w["params"]["checkpoint"]) for w in both.warm_starts] == [
        (WARM_TRAINED, "/a/ckpt"),
        (WARM_NCSNV2, "/a/ckpt"),
        (WARM_TRAINED, "/b/ckpt"),
        (WARM_NCSNV2, "/b/ckpt"),
    ]

    deep = parse_spec_text(_with_section(SECTION.format(trials=4).replace("[0, 1]", "[0, 5]")))
    with pytest.raises(ValueError, match="skip_levels"):
        plan_sampler_search(deep, [b])  # b has 4 levels: skipping 5 leaves none
