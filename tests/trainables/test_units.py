"""Durations as every message prints them (trainables/contract/units.py): each unit's range and rounding."""

import pytest

from trainables.contract.units import duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (119.4, "119 s"), (120, "2.0 min"), (7199, "120.0 min"), (7200, "2.0 h"), (3 * 86400 - 1, "72.0 h")]
    + [(3 * 86400, "3.0 days"), (10.25 * 86400, "10.2 days")],
)
def test_duration_units(seconds, text):
    assert duration(seconds) == text
