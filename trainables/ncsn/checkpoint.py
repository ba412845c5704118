"""Reading a trainer's ``state.pt``: the one function every loader of a training state calls,
``weights_only=True`` always, with one line naming the file for whatever is wrong with it.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch


class CheckpointError(ValueError):
    """A training state file that cannot be used, and why, in one line."""


def first_line(err: BaseException) -> str:
    """The line of an error that says what is wrong (torch heads a list of problems with a line
    ending in a colon: the first problem is that line)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        lines = lines[1:]
    return (lines[0] if lines else err.__class__.__name__)[:240]


def read_state(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """A ``state.pt`` written by :meth:`Trainer.save`, loaded with ``weights_only=True``: a file
    that would build other objects (a pickle that runs code) is refused, never executed. A file
    cut short, not a torch file, or not a training state raises :class:`CheckpointError` naming
    it, in one line."""
    import pickle

    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol: what is refused says enough
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)  # torch's advice first; what it refused follows "WeightsUnpickler error:"
        after = text.split("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler error:" in text else text
        what = next((line.strip() for line in after.splitlines() if line.strip()), err.__class__.__name__)
        raise CheckpointError(
            f"{path}: holds objects other than tensors and numbers, which a safe load refuses "
            f"(never executed: {what[:200]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: cut short or not a torch checkpoint ({first_line(err)})") from None
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict) or "model" not in state:
        raise CheckpointError(f"{path}: a torch file, but not a training state (no config and model)")
    return state
