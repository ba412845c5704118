"""Search spaces: the shipped YAML files and the code that validates them (see spec.py).

Public names are re-exported from :mod:`search_spaces.spec` lazily, so that
``python -m search_spaces.spec`` runs the module once (an eager import here would load it twice).
"""

from __future__ import annotations

__all__ = [
    "BUDGET_KEYS",
    "PARAMS",
    "SPACES_DIR",
    "Budget",
    "KnownParam",
    "OptunaSpace",
    "ParamSpec",
    "Resources",
    "SchedulerSpec",
    "SearchSpec",
    "SearcherSpec",
    "SpecError",
    "WarmStart",
    "default_config",
    "load_spec",
    "make_sampler",
    "make_space_fn",
    "parse_spec",
    "parse_spec_text",
    "resolve_spec_path",
    "shipped_spaces",
    "tune_settings",
    "warm_start_points",
    "warm_starts",
]


def __getattr__(name: str):
    if name in __all__:
        from search_spaces import spec

        return getattr(spec, name)
    raise AttributeError(f"module 'search_spaces' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
