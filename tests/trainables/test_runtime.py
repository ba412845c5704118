"""Runtime settings (trainables/ncsn/runtime.py): the device a trial gets from Ray's assignment, the
per-device defaults, the warm-up left out of reported rates, the step guards, and a CPU trainer
that never touches CUDA."""

import math

import pytest
import torch

from trainables.ncsn import runtime as rt
from trainables.ncsn.langevin import anneal_langevin
from trainables.ncsn.train import TrainConfig, Trainer

torch.set_num_threads(1)
IMAGES = torch.randint(0, 256, (16, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def never_called():
    raise AssertionError("a trial without a GPU must not probe CUDA")


def test_a_trial_without_gpus_runs_on_the_cpu_without_touching_cuda():
    assert rt.trial_device("auto", [], problem=never_called, count=never_called) == "cpu"
    assert rt.trial_device("cpu", [], problem=never_called) == "cpu"
    with pytest.raises(ValueError, match="device='cuda': this trial was given no GPU"):
        rt.trial_device("cuda", [], problem=never_called)


def test_a_trial_with_gpus_uses_them_or_fails_naming_ids_and_reason():
    ok = lambda: None  # noqa: E731
    assert rt.trial_device("auto", [3], problem=ok, count=lambda: 1) == "cuda:0"  # Ray's id 3 is cuda:0 here
    assert rt.trial_device("cuda:1", [2, 5], problem=ok, count=lambda: 2) == "cuda:1"
    with pytest.raises(ValueError, match=r"cuda:2.*GPU\(s\) \['2', '5'\]"):
        rt.trial_device("cuda:2", [2, 5], problem=ok, count=lambda: 2)
    with pytest.raises(RuntimeError, match=r"Ray assigned GPU\(s\) \['1'\].*driver too old") as err:
        rt.trial_device("auto", [1], problem=lambda: "RuntimeError: driver too old", count=lambda: 1)
    assert "Refusing to train on the CPU" in str(err.value)
    with pytest.raises(ValueError, match="device='cpu': Ray assigned"):
        rt.trial_device("cpu", [0], problem=ok)


def test_cuda_problem_gives_the_reason_on_this_machine():
    reason = rt.cuda_problem()
    # this CPU-only machine: the driver's own words; where CUDA works this is None
    assert (reason is None) == torch.cuda.is_available()
    if reason is not None:
        assert len(reason) > 10


def test_cpu_defaults_and_what_a_cpu_cannot_do():
    cpu = torch.device("cpu")
    r = rt.resolve(TrainConfig(device="cpu"), cpu)
    assert (r.amp, r.compile_train, r.compile_sample, r.cuda_graphs, r.channels_last) == (
        "off",
        None,
        None,
        False,
        True,
    )
    assert rt.resolve(TrainConfig(amp="bf16", compile="default"), cpu).amp == "bf16"
    with pytest.raises(ValueError, match="cuda_graphs='on': needs a CUDA device"):
        rt.resolve(TrainConfig(cuda_graphs="on"), cpu)
    with pytest.raises(ValueError, match=r"TrainConfig\.cuda_graphs='on'"):
        Trainer(TrainConfig(cuda_graphs="on", device="cpu"), IMAGES)


def test_cuda_defaults_capture_instead_of_compiling_and_compile_modes_keep_their_graphs():
    # amp off: resolving touches no GPU, so this runs on a CPU machine too
    cuda = torch.device("cuda")
    r = rt.resolve(TrainConfig(amp="off"), cuda)
    assert (r.compile_train, r.compile_sample, r.cuda_graphs, r.captured_training) == (None, None, True, True)
    r = rt.resolve(TrainConfig(amp="off", compile="default"), cuda)
    assert (r.compile_train, r.compile_sample, r.captured_training) == ("default", "default", True)
    r = rt.resolve(TrainConfig(amp="off", compile="reduce-overhead"), cuda)
    # the sampler replays its own graphs around a graph-free compilation
    assert (r.compile_train, r.compile_sample) == ("reduce-overhead", "default")
    r = rt.resolve(TrainConfig(amp="off", compile="max-autotune", cuda_graphs="off"), cuda)
    assert (r.compile_sample, r.cuda_graphs) == ("max-autotune-no-cudagraphs", False)
    assert rt.resolve(TrainConfig(amp="off", compile="off"), cuda).record()["compile_train"] == "off"


def test_amp_levels_are_the_prefix_at_or_above_amp_min_sigma():
    ladder = [1.0, 0.5, 0.1, 0.05, 0.01]
    assert rt.amp_levels(ladder, "bf16", 0.1) == 3
    assert rt.amp_levels(ladder, "fp16", 0.0) == 5
    assert rt.amp_levels(ladder, "off", 0.1) == 0


def test_cuda_auto_is_fp16_at_every_level_and_a_captured_step(monkeypatch):
    # resolving touches no GPU once the capability probe answers: this runs on a CPU machine too
    cuda = torch.device("cuda")
    monkeypatch.setattr(rt, "fp16_tensor_cores", lambda device: True)
    r = rt.resolve(TrainConfig(), cuda)
    assert (r.amp, r.amp_min_sigma, r.cuda_graphs, r.captured_training) == ("fp16", 0.0, True, True)
    # a compile mode that captures its own CUDA graphs leaves the training step to inductor
    assert not rt.resolve(TrainConfig(compile="reduce-overhead"), cuda).captured_training
    assert rt.resolve(TrainConfig(amp_min_sigma=0.02), cuda).amp_min_sigma == 0.02  # the user's floor wins
    monkeypatch.setattr(rt, "fp16_tensor_cores", lambda device: False)
    assert rt.resolve(TrainConfig(), cuda).amp == "off"  # no tensor cores: fp32


def test_reported_rate_leaves_the_warm_up_out():
    trainer = Trainer(TrainConfig(ngf=8, num_levels=3, batch_size=4, device="cpu"), IMAGES)
    first = trainer.train(4)
    assert first["warmup_steps"] == 1 and first["iterations_run"] == 4
    steady = first["seconds"] - first["warmup_seconds"]
    assert 0 < steady < first["seconds"]
    assert math.isclose(first["iters_per_s"], 3 / steady, rel_tol=1e-3)
    later = trainer.train(2)
    assert later["warmup_steps"] == 0 and math.isclose(later["iters_per_s"], 2 / later["seconds"], rel_tol=1e-6)
    only = Trainer(TrainConfig(ngf=8, num_levels=3, batch_size=4, device="cpu"), IMAGES).train(1)
    assert only["warmup_steps"] == 1 and math.isclose(only["iters_per_s"], 1 / only["seconds"], rel_tol=1e-6)


class CountingGuard:
    def __init__(self):
        self.entered = 0

    def __call__(self):
        guard = self

        class _Ctx:
            def __enter__(self):
                guard.entered += 1

            def __exit__(self, *exc):
                return False

        return _Ctx()


def test_step_guards_wrap_every_training_and_langevin_step():
    trainer = Trainer(TrainConfig(ngf=8, num_levels=3, batch_size=4, device="cpu"), IMAGES)
    guard = CountingGuard()
    trainer.train(4, step_guard=guard)
    assert guard.entered == 3  # the warm-up step runs outside: compilation syncs
    guard = CountingGuard()
    x = torch.rand(2, 1, 28, 28)
    anneal_langevin(trainer.score_fn(), x, trainer.sigmas, 2e-5, 2, denoise=True, step_guard=guard)
    assert guard.entered == 3 * 2 + 1


def test_a_cpu_trainer_never_touches_cuda(monkeypatch, tmp_path):
    trainer = Trainer(TrainConfig(ngf=8, num_levels=3, batch_size=4, device="cpu"), IMAGES)
    # what creates a CUDA context or reads GPU state (the old state_dict read every GPU's RNG
    # whenever CUDA was available); asking whether CUDA exists is no touch
    for name in ("get_rng_state_all", "get_rng_state", "set_rng_state", "set_rng_state_all", "init", "_lazy_init"):
        monkeypatch.setattr(torch.cuda, name, never_called)
    trainer.train(2)
    trainer.save(tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["rng"]["cuda"] is None
    resumed = Trainer.load(tmp_path / "state.pt", IMAGES, device="cpu")
    assert resumed.step == 2


def test_the_sampler_takes_runtime_settings_from_its_trial_not_the_checkpoint(tmp_path):
    import json

    from trainables.contract.layout import METRICS_FILE, STATE_FILE
    from trainables.sampler_trainable import FrozenCheckpoint

    trained = Trainer(TrainConfig(ngf=8, num_levels=3, batch_size=4, device="cpu", amp="bf16", seed=5), IMAGES)
    trained.save(tmp_path / STATE_FILE)
    (tmp_path / METRICS_FILE).write_text(json.dumps({"metrics": {}, "counters": {}, "config": {}}))
    frozen = FrozenCheckpoint(tmp_path, "cpu", runtime={"amp": "off", "channels_last": False})
    assert frozen.trainer.runtime.amp == "off" and frozen.trainer.amp_levels == 0
    assert frozen.trainer.channels_last is False and frozen.trainer.config.seed == 5
    assert FrozenCheckpoint(tmp_path, "cpu").trainer.runtime.amp == "off"  # the defaults: CPU -> off
