"""Search spaces: the shipped YAML files and the code that validates them and runs searches.

The public names of :mod:`search_spaces.spec` (its ``__all__``) are re-exported from it lazily, so that
``python -m search_spaces.spec`` runs the module once (an eager import here would load it twice).
"""

from __future__ import annotations

import importlib


def __getattr__(name: str):
    spec = importlib.import_module("search_spaces.spec")
    if name in spec.__all__:
        return getattr(spec, name)
    raise AttributeError(f"module 'search_spaces' has no attribute {name!r}")


def __dir__():
    spec = importlib.import_module("search_spaces.spec")
    return sorted(list(globals()) + spec.__all__)
