"""The parameter table (trainables/contract/params.py) is the one schema: TrainConfig, the trial's config
mapping and the 2019 setting agree with it, and the torch-free modules stay torch-free."""

import dataclasses
import math
import subprocess
import sys

import pytest

from trainables.contract import params
from trainables.contract.params import RUNTIME, SAMPLER, SETTINGS, TRAINING
from trainables.ncsn.recommend import NCSN_2019_MNIST
from trainables.ncsn.train import TrainConfig
from trainables.tune_trainable import Budget, train_config_from

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
NUMERIC = [name for name, s in SETTINGS.items() if s.kind in (int, float)]
# (setting, "low" or "high") for every numeric bound of the table.
BOUNDS = [(name, side) for name in NUMERIC for side in ("low", "high") if getattr(SETTINGS[name], side) is not None]


def test_train_config_fields_are_the_training_and_runtime_settings():
    assert set(FIELDS) == set(params.names(TRAINING, RUNTIME))
    assert not set(FIELDS) & set(params.names(SAMPLER))
    assert set(params.SPEC_PARAMS) | set(params.names(RUNTIME)) | set(params.SAMPLER_PARAMS) == set(SETTINGS)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_train_config_defaults_are_the_table_defaults(name):
    assert FIELDS[name].default == SETTINGS[name].default
    assert getattr(TrainConfig(), name) == SETTINGS[name].default


def test_the_table_has_open_and_closed_bounds_on_both_sides():
    # Otherwise the bound tests below would check less than they claim.
    sides = {(side, getattr(SETTINGS[name], f"{side}_open")) for name, side in BOUNDS}
    assert sides == {("low", True), ("low", False), ("high", True)}


def outside(name: str, side: str):
    """The value just beyond a bound: the next integer, or the next float."""
    s = SETTINGS[name]
    bound = getattr(s, side)
    if s.kind is int:
        return int(bound) - 1 if side == "low" else int(bound) + 1
    return math.nextafter(float(bound), -math.inf if side == "low" else math.inf)


def refused_by_train_config(name: str, value) -> bool:
    with pytest.raises(ValueError, match=f"TrainConfig.{name}="):
        TrainConfig(**{name: value})
    return True


@pytest.mark.parametrize(("name", "side"), BOUNDS)
def test_a_value_just_outside_a_bound_is_refused(name, side):
    value = outside(name, side)
    with pytest.raises(ValueError, match=f"^{name}="):
        SETTINGS[name].coerce(name, value)
    if name in FIELDS:
        assert refused_by_train_config(name, value)


@pytest.mark.parametrize(("name", "side"), BOUNDS)
def test_the_bound_itself_is_allowed_unless_the_bound_is_open(name, side):
    s = SETTINGS[name]
    bound = s.kind(getattr(s, side))
    if getattr(s, f"{side}_open"):
        with pytest.raises(ValueError, match=f"^{name}="):
            s.coerce(name, bound)
        if name in FIELDS:
            assert refused_by_train_config(name, bound)
    else:
        assert s.coerce(name, bound) == bound
        if name in FIELDS:
            assert getattr(TrainConfig(**{name: bound}), name) == bound


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("image_size", 30),
        ("noise_conditioning", "noise"),
        ("device", "tpu"),
        ("ngf", 16.5),
        ("lr", "0.1"),
        ("compile", 1),
        ("amp", "yes"),
    ],
)
def test_values_outside_the_listed_ones_or_of_the_wrong_kind_are_refused(name, value):
    with pytest.raises(ValueError, match=f"^{name}="):
        SETTINGS[name].coerce(name, value)
    assert refused_by_train_config(name, value)


def test_kinds_convert_only_where_nothing_is_lost():
    assert TrainConfig(lr=1).lr == 1.0 and isinstance(TrainConfig(lr=1).lr, float)
    assert TrainConfig(device="cuda:3").device == "cuda:3"  # the pattern beside the listed values
    # aliases: what YAML makes of off/on, and what checkpoints of earlier versions hold
    assert (TrainConfig(amp=None).amp, TrainConfig(amp=True).amp, TrainConfig(amp=False).amp) == ("auto", "bf16", "off")
    assert (TrainConfig(compile=False).compile, TrainConfig(cuda_graphs=True).cuda_graphs) == ("off", "on")
    with pytest.raises(ValueError, match="sigma_begin=0.01: must be > sigma_end"):
        TrainConfig(sigma_begin=0.01, sigma_end=0.01)


def test_from_dict_names_unknown_keys():
    assert TrainConfig.from_dict({"lr": 1e-4}).lr == 1e-4
    with pytest.raises(ValueError, match=r"TrainConfig: unknown setting\(s\) \['learning_rate', 'step_lr'\]"):
        TrainConfig.from_dict({"learning_rate": 1e-4, "step_lr": 2e-5, "lr": 1e-4})


BUDGET = Budget(iterations=4, eval_every=2, eval_samples=16, seed=7, device="cpu")


def test_trial_config_passes_sampler_settings_by_and_fills_the_budget_runtime():
    config = {"sigma_begin": 2.0, "num_levels": 4, "ngf": 8, "step_lr": 1e-5, "n_steps_each": 3, "denoise": True}
    cfg = train_config_from(config, BUDGET)
    assert isinstance(cfg, TrainConfig)
    assert (cfg.sigma_begin, cfg.num_levels, cfg.ngf) == (2.0, 4, 8)
    assert (cfg.seed, cfg.device) == (7, "cpu")  # from the budget when the trial does not say
    assert train_config_from({**config, "seed": 3, "device": "auto"}, BUDGET).seed == 3
    assert config == {
        "sigma_begin": 2.0,
        "num_levels": 4,
        "ngf": 8,
        "step_lr": 1e-5,
        "n_steps_each": 3,
        "denoise": True,
    }  # the caller's dict is left alone


@pytest.mark.parametrize("key", ["learning_rate", "skip_levels", "level_stride", "_inject_nan_at"])
def test_trial_config_with_a_key_that_is_no_joint_setting_is_an_error(key):
    # skip_levels and level_stride exist only in a sampler search on frozen checkpoints.
    with pytest.raises(ValueError, match=f"trial config: unknown setting.*'{key}'"):
        train_config_from({"lr": 1e-3, key: 1}, BUDGET)


def test_the_2019_setting_is_the_table_default_and_the_published_one():
    assert NCSN_2019_MNIST == params.defaults(NCSN_2019_MNIST)
    # Song & Ermon 2019, MNIST: sigma 1 -> 0.01 over L = 10 levels, T = 100 steps per level with
    # eps = 2e-5 (code convention), batch 128, Adam lr 1e-3, no EMA and no final denoising.
    assert NCSN_2019_MNIST == {
        "sigma_begin": 1.0,
        "sigma_end": 0.01,
        "num_levels": 10,
        "step_lr": 2e-5,
        "n_steps_each": 100,
        "batch_size": 128,
        "lr": 1e-3,
        "ema": 0.0,
        "denoise": False,
    }


def test_schema_modules_do_not_import_torch():
    code = (
        "import sys, trainables.contract.layout, trainables.contract.params, trainables.contract.metrics; "
        "print(sorted(m for m in ('torch', 'ray', 'pandas', 'optuna') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
