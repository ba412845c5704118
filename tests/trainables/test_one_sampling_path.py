"""trainables/sampling.py and the noise streams: one path draws samples for every trial and task,
and two trials at the same point start from the same noise whichever path draws them."""

from __future__ import annotations

import pytest
import torch

from trainables import sampling
from trainables.contract.params import NOISE_STREAMS, noise_seed
from trainables.ncsn.sigmas import geometric_sigmas


def test_the_streams_keep_the_seeds_every_earlier_result_was_drawn_with():
    # closed forms: the formulas each path used before the streams had one function
    assert noise_seed(3, "evaluation", 5) == 3 * 1_000_003 + 5
    assert noise_seed(3, "training", 77) == 3 * 1_000_003 + 77
    assert noise_seed(3, "sampler", 2, 7) == 3 * 1_000_003 + 100_000 + 1_000 * 2 + 7
    assert noise_seed(3, "confirmation", 4, 1) == 3 * 1_000_003 + 500_000 + 1_000 * 4 + 1
    assert noise_seed(0, "proposals", 9) == 9
    with pytest.raises(ValueError, match="sampler noise: index=0, chunk=1000"):
        noise_seed(0, "sampler", 0, 1_000)  # would run into the next look's noise
    with pytest.raises(ValueError, match="evaluation noise is drawn in one chunk"):
        noise_seed(0, "evaluation", 1, 1)
    with pytest.raises(KeyError):
        noise_seed(0, "elsewhere", 0)
    assert set(NOISE_STREAMS) == {"training", "evaluation", "sampler", "confirmation", "proposals"}


class _Recording:
    """A score function (a linear pull towards ``centre``) that keeps the first input of every
    chunk: the initial noise a chain started from."""

    def __init__(self, centre: float):
        self.centre, self.starts, self.calls = centre, [], 0

    def __call__(self, x: torch.Tensor, level_idx: torch.Tensor) -> torch.Tensor:
        if self.calls == 0 or getattr(self, "_new_chunk", False):
            self.starts.append(x.clone())
            self._new_chunk = False
        self.calls += 1
        return self.centre - x

    def warm(self, x: torch.Tensor) -> float:
        self._new_chunk = True
        return 0.0


@pytest.mark.parametrize(
    "stream, index, max_batch, levels",
    [("evaluation", 3, None, None), ("sampler", 1, 4, (1, 3)), ("confirmation", 2, 4, None)],
    ids=["joint evaluation", "sampler look", "confirmation seed"],
)
def test_two_trials_at_the_same_point_start_from_the_same_noise_on_every_path(stream, index, max_batch, levels):
    sigmas = geometric_sigmas(1.0, 0.01, 4)
    settings = sampling.SamplerSettings(step_lr=1e-4, n_steps_each=2, denoise=True)
    drawn = {}
    for name, centre in (("trial a", 0.2), ("trial b", 0.8)):  # two networks, one point
        score = _Recording(centre)
        result = sampling.draw(
            score, sigmas, 10, 32, settings, lambda chunk: noise_seed(7, stream, index, chunk), "cpu", levels, max_batch
        )
        drawn[name] = (score.starts, result)
    (starts_a, a), (starts_b, b) = drawn["trial a"], drawn["trial b"]
    chunks = 1 if max_batch is None else 3  # 10 chains, 4 at a time: 4 + 4 + 2
    assert len(starts_a) == len(starts_b) == chunks
    assert all(torch.equal(x, y) for x, y in zip(starts_a, starts_b))  # the same initial noise, chunk by chunk
    assert not torch.equal(a.samples, b.samples)  # from which the two networks went apart
    assert a.samples.shape == (10, 1, 28, 28) and float(a.samples.min()) >= 0.0 and float(a.samples.max()) <= 1.0
    assert a.n_evals == (len(levels) if levels else 4) * 2 + 1 and a.finite
    other = _Recording(0.2)
    sampling.draw(
        other, sigmas, 10, 32, settings, lambda chunk: noise_seed(8, stream, index, chunk), "cpu", levels, max_batch
    )
    assert not torch.equal(other.starts[0], starts_a[0])  # another search seed: other noise


def test_a_chain_that_goes_non_finite_is_reported_as_such():
    sigmas = geometric_sigmas(1.0, 0.01, 3)
    settings = sampling.SamplerSettings(step_lr=1e-3, n_steps_each=1)
    drawn = sampling.draw(lambda x, i: x * float("inf"), sigmas, 4, 28, settings, lambda c: 1, "cpu")
    assert drawn.finite is False


def test_sampler_settings_read_a_config_and_count_the_network_evaluations():
    settings = sampling.SamplerSettings.of({"step_lr": "2e-5", "n_steps_each": 3, "denoise": 1, "level_stride": 2})
    assert settings == sampling.SamplerSettings(2e-5, 3, True, 0, 2)
    assert settings.levels(5) == (0, 2, 4) and settings.nfe(5) == 3 * 3 + 1
    assert sampling.SamplerSettings.of({"step_lr": 1e-5, "n_steps_each": 2}).levels(4) == (0, 1, 2, 3)
