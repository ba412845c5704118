"""The sampler trainable's pure parts: truncated ladders and the weights digest."""

from __future__ import annotations

import pytest
import torch

from trainables.sampler_trainable import ladder_levels, weights_digest


@pytest.mark.parametrize(
    "num_levels, skip, stride, expected",
    [
        (10, 0, 1, tuple(range(10))),
        (10, 3, 1, (3, 4, 5, 6, 7, 8, 9)),
        (10, 0, 4, (0, 4, 8, 9)),  # the stride steps over sigma_L: it is added
        (10, 1, 3, (1, 4, 7, 9)),
        (10, 0, 3, (0, 3, 6, 9)),
        (10, 9, 2, (9,)),
    ],
)
def test_truncated_ladder_visits_the_named_levels_and_ends_at_sigma_l(num_levels, skip, stride, expected):
    assert ladder_levels(num_levels, skip, stride) == expected


@pytest.mark.parametrize("skip, stride, key", [(10, 1, "skip_levels"), (-1, 1, "skip_levels"), (0, 0, "level_stride")])
def test_bad_ladder_settings_name_the_key(skip, stride, key):
    with pytest.raises(ValueError, match=key):
        ladder_levels(10, skip, stride)


def test_weights_digest_sees_one_changed_value_and_ignores_memory_format():
    state = {"w": torch.randn(2, 3, 4, 4), "b": torch.zeros(3)}
    same = {"w": state["w"].contiguous(memory_format=torch.channels_last), "b": state["b"].clone()}
    assert weights_digest(same) == weights_digest(state)
    changed = {k: v.clone() for k, v in state.items()}
    changed["w"][1, 2, 3, 0] += 1e-6
    assert weights_digest(changed) != weights_digest(state)
