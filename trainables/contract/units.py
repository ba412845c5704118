"""How durations read in every message and report (torch-free): the cost estimate before a
search, the confirmation plan, and the report's cost sections print the same units."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """``seconds`` as people read it: 45 s, 12.5 min, 3.2 h, 4.5 days."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
