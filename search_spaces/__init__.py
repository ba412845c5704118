"""Search spaces: the shipped YAML files and the code that validates them and runs searches.

Public names of the spec are re-exported from :mod:`search_spaces.spec` lazily, so that
``python -m search_spaces.spec`` runs the module once (an eager import here would load it twice).
"""

from __future__ import annotations

__all__ = [
    "BUDGET_KEYS",
    "SPACES_DIR",
    "Budget",
    "OptunaSpace",
    "ParamSpec",
    "Resources",
    "SamplerSearchSpec",
    "SchedulerSpec",
    "SearchSpec",
    "SearcherSpec",
    "SpecError",
    "WarmStart",
    "load_spec",
    "make_sampler",
    "make_space_fn",
    "override",
    "parse_spec",
    "parse_spec_text",
    "resolve_spec_path",
    "shipped_spaces",
    "tune_settings",
    "warm_start_points",
    "warm_starts",
    "with_preview",
]


def __getattr__(name: str):
    if name in __all__:
        from search_spaces import spec

        return getattr(spec, name)
    raise AttributeError(f"module 'search_spaces' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
