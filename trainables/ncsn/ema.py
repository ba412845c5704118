"""Exponential moving average of a model's weights (NCSNv2 technique 5), used for sampling.

After every optimiser step: theta_ema <- momentum * theta_ema + (1 - momentum) * theta.
momentum = 0 switches it off: the EMA weights are then always a copy of the model's.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    """EMA of ``model``'s parameters, held in a frozen copy of the model (``self.module``).

    Args:
        model: the trained network; its current weights seed the average.
        momentum: in [0, 1); 0.999 in NCSNv2, 0 = off.

    Buffers (not trained) are copied as they are at each update. ``self.module`` is ready to call
    for sampling; ``copy_to(model)`` / ``swapped(model)`` put the EMA weights into another instance.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.999):
        momentum = float(momentum)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"EMA momentum must be in [0, 1), got {momentum!r}")
        self.momentum = momentum
        self.num_updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def _params(self, model: nn.Module):
        own = [p for p in self.module.parameters()]
        theirs = [p for p in model.parameters()]
        if len(own) != len(theirs):
            raise ValueError(f"EMA.update: model has {len(theirs)} parameters, EMA has {len(own)}")
        return own, theirs

    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s current weights into the average (no host sync) and count it."""
        self.fold(model)
        self.num_updates += 1

    @torch.no_grad()
    def fold(self, model: nn.Module) -> None:
        """The device work of :meth:`update` alone (a captured training step replays it; the
        trainer counts the updates)."""
        own, theirs = self._params(model)
        if self.momentum == 0.0:
            torch._foreach_copy_(own, [p.detach() for p in theirs])
        else:
            # lerp(ema, theta, 1 - m) = m * ema + (1 - m) * theta, one fused kernel per group.
            torch._foreach_lerp_(own, [p.detach() for p in theirs], 1.0 - self.momentum)
        for b_own, b_theirs in zip(self.module.buffers(), model.buffers()):
            b_own.copy_(b_theirs)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite ``model``'s parameters and buffers with the EMA ones."""
        model.load_state_dict(self.module.state_dict())

    def model_copy(self) -> nn.Module:
        """A new, independent module holding the EMA weights (frozen, eval mode)."""
        return copy.deepcopy(self.module)

    class _Swap:
        def __init__(self, ema: EMA, model: nn.Module):
            self.ema, self.model, self.saved = ema, model, None

        def __enter__(self):
            self.saved = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.ema.copy_to(self.model)
            return self.model

        def __exit__(self, *exc):
            self.model.load_state_dict(self.saved)
            return False

    def swapped(self, model: nn.Module) -> EMA._Swap:
        """Context manager: ``model`` holds the EMA weights inside, its own weights again after."""
        return EMA._Swap(self, model)

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and numbers only, so that torch.load(weights_only=True) reads it."""
        return {
            "momentum": self.momentum,
            "num_updates": self.num_updates,
            "weights": {k: v.detach().clone() for k, v in self.module.state_dict().items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.momentum = float(state["momentum"])
        self.num_updates = int(state["num_updates"])
        self.module.load_state_dict(state["weights"])
