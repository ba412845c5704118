"""Search-space files: shipped files load, malformed files fail with one line naming the key,
the Optuna space stays inside the file's ranges, warm starts are proposed exactly when inside."""

from __future__ import annotations

import math
import pickle
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from search.searcher import make_sampler
from search_spaces import (
    SPACES_DIR,
    SpecError,
    load_spec,
    make_space_fn,
    override,
    parse_spec,
    parse_spec_text,
    shipped_spaces,
    tune_settings,
    warm_start_points,
    warm_starts,
    with_preview,
)
from search_spaces.spec import main
from trainables.contract.metrics import metric_mode
from trainables.contract.params import SETTINGS as PARAMS
from trainables.contract.params import SPEC_PARAMS
from trainables.ncsn.recommend import NCSN_2019_MNIST, ncsnv2_mnist_setting

optuna.logging.set_verbosity(optuna.logging.WARNING)

REPO = Path(__file__).resolve().parents[2]
BAD_SPECS = sorted((REPO / "tests" / "data" / "bad_specs").glob("*.yaml"))
SMOKE = (SPACES_DIR / "smoke.yaml").read_text()
REQUIRED = ("sigmas.yaml", "langevin.yaml", "batch.yaml", "smoke.yaml")


def _spec_text(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def _sample_configs(spec, n: int, seed: int = 0) -> list[dict]:
    """n configs from the define-by-run space with an in-memory RandomSampler study."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    space = make_space_fn(spec)
    return [space(study.ask()) for _ in range(n)]


# ---------------------------------------------------------------- shipped files


def test_required_spaces_are_shipped():
    assert set(REQUIRED) <= set(shipped_spaces())


@pytest.mark.parametrize("name", shipped_spaces())
def test_shipped_space_loads_by_name_stem_and_path(name):
    by_name = load_spec(name)
    assert load_spec(Path(name).stem) == by_name
    assert load_spec(SPACES_DIR / name) == by_name
    assert by_name.name == Path(name).stem and by_name.dataset == "mnist"
    assert by_name.mode == metric_mode(by_name.metric)
    # The file form written back loads into the same spec (what run_search stores per experiment).
    assert parse_spec(by_name.to_dict()) == by_name
    preview = with_preview(by_name)
    assert preview.previewed and not preview.preview
    for key, value in by_name.preview.items():
        assert (
            getattr(preview.budget, key, None) == value
            or getattr(preview.scheduler, key, None) == value
            or preview.fixed.get(key) == value
        )


def test_sigmas_space_matches_design_and_holds_both_warm_starts():
    spec = load_spec("sigmas.yaml")
    assert list(spec.params) == ["sigma_begin", "sigma_end", "num_levels", "step_lr", "batch_size"]
    assert spec.metric == "kid" and spec.mode == "min"
    assert [w.label for w in warm_starts(spec) if w.inside] == ["ncsn_2019_mnist", "ncsnv2_mnist"]
    assert [w.label for w in warm_starts(with_preview(spec)) if w.inside] == ["ncsn_2019_mnist", "ncsnv2_mnist"]
    preview = with_preview(spec)
    assert preview.budget.num_trials == 6 and preview.budget.max_concurrent == 2
    assert preview.fixed["ngf"] == 8 and spec.fixed["ngf"] == 64


def test_unknown_file_names_the_shipped_spaces():
    with pytest.raises(SpecError) as err:
        load_spec("no_such_space.yaml")
    assert "no_such_space.yaml" in str(err.value) and "sigmas.yaml" in str(err.value)


def test_defaults_are_the_2019_mnist_setting():
    for name, value in NCSN_2019_MNIST.items():
        assert PARAMS[name].default == value, name
        assert type(PARAMS[name].default) is PARAMS[name].kind


# ---------------------------------------------------------------- malformed files


def test_at_least_ten_distinct_malformed_files():
    keys = {path.read_text().splitlines()[0] for path in BAD_SPECS}
    assert len(BAD_SPECS) >= 10 and len(keys) >= 10


@pytest.mark.parametrize("path", BAD_SPECS, ids=[p.stem for p in BAD_SPECS])
def test_malformed_file_fails_with_one_line_naming_file_and_key(path):
    header = path.read_text().splitlines()[0]
    expected_key = re.fullmatch(r"# expect: (.+)", header).group(1)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert err.value.key == expected_key, message
    assert expected_key in message and path.name in message
    assert "\n" not in message and len(message) < 400
    assert isinstance(err.value, ValueError)


def test_error_line_points_at_the_offending_line():
    text = _spec_text(SMOKE, "[0.005, 0.05]", "[0.05, 0.005]")
    with pytest.raises(SpecError) as err:
        parse_spec_text(text, file="bad.yaml")
    expected = 1 + next(i for i, line in enumerate(text.splitlines()) if "[0.05, 0.005]" in line)
    assert err.value.line == expected
    assert str(err.value).startswith(f"bad.yaml:{expected}: params.sigma_end.loguniform:")


@pytest.mark.parametrize(
    "begin, end, ok",
    [
        ("{loguniform: [0.1, 1.0]}", "{loguniform: [0.01, 0.0999]}", True),
        ("{loguniform: [0.1, 1.0]}", "{loguniform: [0.01, 0.1]}", False),  # both could be 0.1
        ("{choice: [0.5, 2.0]}", "0.4", True),
        ("{choice: [0.5, 2.0]}", "0.5", False),
        ("0.3", "{uniform: [0.01, 0.29]}", True),
        ("0.3", "{uniform: [0.01, 0.3]}", False),
    ],
)
def test_sigma_order_is_checked_over_whole_ranges(begin, end, ok):
    text = SMOKE.replace("  sigma_begin: {loguniform: [0.5, 20.0]}\n", "").replace(
        "  sigma_end:   {loguniform: [0.005, 0.05]}\n", ""
    )
    for name, form in (("sigma_begin", begin), ("sigma_end", end)):
        section = "params:\n" if form.startswith("{") else "fixed:\n"  # searched or fixed
        text = _spec_text(text, section, f"{section}  {name}: {form}\n")
    if ok:
        parse_spec_text(text)
    else:
        with pytest.raises(SpecError, match="could launch sigma_begin <= sigma_end"):
            parse_spec_text(text)


def test_cli_check_prints_ok_or_one_line_and_exits_2(tmp_path, capsys):
    assert main(["check", "smoke.yaml", "sigmas"]) == 0
    assert capsys.readouterr().out.count("OK ") == 2
    bad = BAD_SPECS[0]
    run = subprocess.run(
        [sys.executable, "-m", "search_spaces.spec", "check", "smoke.yaml", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stdout.startswith("OK smoke.yaml")
    assert run.stderr.count("\n") == 1 and bad.name in run.stderr
    assert "Traceback" not in run.stderr and "Warning" not in run.stderr


# ---------------------------------------------------------------- variants


def test_override_revalidates():
    spec = load_spec("smoke")
    changed = override(spec, num_trials=3, name="smoke_b", seed=7, iterations=None)
    assert (changed.budget.num_trials, changed.name, changed.searcher.seed) == (3, "smoke_b", 7)
    assert changed.budget.iterations == spec.budget.iterations
    assert override(spec, budget={"num_trials": 3}).budget == changed.budget
    small = override(spec, budget={"iterations": 20}, fixed={"ngf": 16}, scheduler={"grace_period": 5})
    assert (small.budget.iterations, small.fixed["ngf"], small.scheduler.grace_period) == (20, 16, 5)
    for kwargs, key in [
        ({"num_trials": 0}, "budget.num_trials"),
        ({"name": "../escape"}, "name"),
        ({"fixed": {"sigma_begin": 2.0}}, "fixed.sigma_begin"),  # searched
        ({"budget": {"iterations": 5, "eval_every": 5}}, "scheduler.grace_period"),
    ]:
        with pytest.raises(SpecError) as err:
            override(spec, **kwargs)
        assert err.value.key == key
    with pytest.raises(TypeError):
        override(spec, colour="red")


def test_mode_is_implied_by_the_metric():
    spec = parse_spec_text(SMOKE.replace("metric: kid", "metric: inception_score").replace("mode: min\n", ""))
    assert spec.mode == "max"


def test_tune_settings():
    spec = with_preview(load_spec("sigmas"))
    settings = tune_settings(spec)
    assert settings["asha"] == {"time_attr": "iterations", "max_t": 100, "grace_period": 50, "reduction_factor": 2}
    assert (settings["metric"], settings["mode"]) == ("kid", "min")
    assert (settings["num_trials"], settings["max_concurrent"]) == (6, 2)
    assert settings["resources"] == {"cpu": 1, "gpu": 0.25}
    assert tune_settings(spec, gpu_available=False)["resources"] == {"cpu": 1}


# ---------------------------------------------------------------- the Optuna space


@pytest.mark.parametrize("name", REQUIRED)
def test_space_proposes_values_inside_the_file_and_sigma_begin_above_sigma_end(name):
    spec = load_spec(name)
    configs = _sample_configs(spec, 300)
    for config in configs:
        assert set(config) == set(spec.params) | set(spec.fixed)
        for pname, param in spec.params.items():
            assert param.contains(config[pname]), (pname, config[pname])
            assert type(config[pname]) is PARAMS[pname].kind
        assert all(config[k] == v for k, v in spec.fixed.items())
        begin = config.get("sigma_begin", PARAMS["sigma_begin"].default)
        end = config.get("sigma_end", PARAMS["sigma_end"].default)
        assert begin > end
    for pname, param in spec.params.items():
        values = [c[pname] for c in configs]
        if param.form == "choice":
            assert set(values) == set(param.choices)  # every choice is reachable
        else:  # a 300-draw sample spans most of the range (log-spaced where log)
            scale = math.log if param.log else float
            lo, hi = scale(param.low), scale(param.high)
            fractions = [(scale(v) - lo) / (hi - lo) for v in values]
            assert min(fractions) < 0.1 and max(fractions) > 0.9


def test_space_is_seeded_and_picklable():
    spec = load_spec("sigmas")
    space = pickle.loads(pickle.dumps(make_space_fn(spec, constants={"eval_every": 50})))
    runs = []
    for _ in range(2):
        study = optuna.create_study(sampler=make_sampler(spec))
        runs.append([space(study.ask()) for _ in range(5)])
    assert runs[0] == runs[1] and runs[0][0]["eval_every"] == 50
    assert make_sampler(spec).algorithm == "tpe"
    random_spec = parse_spec_text(SMOKE.replace("algorithm: tpe", "algorithm: random"))
    assert make_sampler(random_spec).algorithm == "random"
    with pytest.raises(ValueError):
        make_space_fn(spec, constants={"step_lr": 1.0})


def test_space_with_defaults_completes_the_config():
    spec = load_spec("smoke")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    config = make_space_fn(spec, with_defaults=True)(study.ask())
    assert set(config) == set(SPEC_PARAMS)
    assert config["ngf"] == 8 and config["anneal_power"] == PARAMS["anneal_power"].default
    assert config["step_lr"] == study.trials[0].params["step_lr"]


def test_ray_optuna_search_runs_the_space_and_warm_starts_first():
    from ray import cloudpickle
    from ray.tune.search.optuna import OptunaSearch

    spec = load_spec("smoke")
    searcher = OptunaSearch(
        space=make_space_fn(spec),
        metric=spec.metric,
        mode=spec.mode,
        points_to_evaluate=[p for _, p in warm_start_points(spec)],
        sampler=make_sampler(spec),
    )
    searcher = cloudpickle.loads(cloudpickle.dumps(searcher))  # as Ray checkpoints it
    configs = []
    for i in range(4):
        configs.append(searcher.suggest(f"t{i}"))
        searcher.on_trial_complete(f"t{i}", {"kid": 0.1 * i})
    points = [point for _, point in warm_start_points(spec)]
    for config, point in zip(configs, points):
        assert {k: config[k] for k in point} == point
    for config in configs:
        assert config["ngf"] == 8 and config["sigma_begin"] > config["sigma_end"]
    assert len(points) == 2


# ---------------------------------------------------------------- warm starts


def test_warm_start_points_are_the_published_settings_restricted_to_the_search():
    spec = load_spec("sigmas")
    searched = list(spec.params)
    v2 = ncsnv2_mnist_setting(n_steps_each=spec.fixed["n_steps_each"])
    assert warm_start_points(spec) == [
        ("ncsn_2019_mnist", {k: NCSN_2019_MNIST[k] for k in searched}),
        ("ncsnv2_mnist", {k: v2[k] for k in searched}),
    ]
    # The preview fixes T = 1, so the NCSNv2 step is technique 4's for T = 1.
    preview_v2 = warm_starts(with_preview(spec))[1]
    assert preview_v2.point["step_lr"] == ncsnv2_mnist_setting(n_steps_each=1)["step_lr"]
    assert preview_v2.point["step_lr"] != v2["step_lr"]
    # Fixed values that disagree with a setting are reported, not hidden.
    assert warm_starts(spec)[0].differs["ema"] == (0.999, 0.0)


def test_warm_starts_outside_the_space_are_left_out_with_a_reason():
    v2_levels = ncsnv2_mnist_setting()["num_levels"]
    text = SMOKE.replace("  num_levels: 4\n", "").replace(
        "params:\n", f"params:\n  num_levels: {{int: [8, {v2_levels - 1}], log: true}}\n"
    )
    spec = parse_spec_text(text)
    first, second = warm_starts(spec)
    assert first.inside and first.point["num_levels"] == 10
    assert not second.inside and "num_levels=95" in second.reason
    assert warm_start_points(spec) == [(first.label, first.point)]
    # One level more and it is inside; ints must match exactly.
    wider = parse_spec_text(text.replace(f"{v2_levels - 1}]", f"{v2_levels}]"))
    assert all(w.inside for w in warm_starts(wider))
    # A choice must hold the exact value: 128 is missing from [32, 64].
    text = SMOKE.replace("  batch_size: 16\n", "").replace("params:\n", "params:\n  batch_size: {choice: [32, 64]}\n")
    assert warm_start_points(parse_spec_text(text)) == []
    # Real-valued ranges are inclusive: the 2019 sigma_begin 1.0 at the range's low end is in.
    edge = parse_spec_text(SMOKE.replace("[0.5, 20.0]", "[1.0, 20.0]"))
    assert [w.inside for w in warm_starts(edge)] == [True, True]
    edge = parse_spec_text(SMOKE.replace("[0.5, 20.0]", "[1.01, 20.0]"))
    assert [w.inside for w in warm_starts(edge)] == [False, True]
