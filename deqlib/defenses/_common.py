"""What several defences share (private): the straight-through combination of a value and a surrogate gradient."""

from __future__ import annotations

from torch import Tensor


def straight_through(value: Tensor, surrogate: Tensor) -> Tensor:
    """``value`` exactly in the forward, the gradient of ``surrogate`` in the backward."""
    return value + (surrogate - surrogate.detach())
