"""Which gradient the attacker differentiates through: the implicit (IFT), phantom or unrolled one.

A DEQ's forward value does not depend on the gradient choice, but its input gradient does, and an attack is
only as strong as the gradient it follows. ``attack_gradient`` switches every DEQ inside a model for the
duration of a ``with`` block and restores the previous settings afterwards, even on an exception.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional

from torch import nn

from ..deq import DEQ, GRADS


def deq_modules(model: nn.Module) -> List[DEQ]:
    """All :class:`~deqlib.deq.DEQ` submodules of ``model`` (the model itself included)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    return [m for m in model.modules() if isinstance(m, DEQ)]


def check_gradient(gradient: Optional[str], where: str = "attack") -> Optional[str]:
    """None (leave the model's setting alone) or one of "ift", "phantom", "unroll"."""
    if gradient is None or gradient in GRADS:
        return gradient
    raise ValueError(f"{where}: unknown gradient {gradient!r}; expected None or one of {GRADS}")


@contextlib.contextmanager
def attack_gradient(model: nn.Module, gradient: Optional[str]) -> Iterator[nn.Module]:
    """Set ``.grad`` of every DEQ in ``model`` to ``gradient`` inside the block; restore it afterwards.

    Args:
        model: a module containing one or more :class:`~deqlib.deq.DEQ` layers.
        gradient: "ift", "phantom" or "unroll"; ``None`` changes nothing (the model's own setting is used).

    Raises:
        ValueError: unknown gradient, or a gradient asked of a model without any DEQ layer.

    Example:
        >>> from deqlib.cells import mlp_classifier
        >>> model = mlp_classifier((1, 8, 8), 10, mean=(0.3,), std=(0.4,), width=8)
        >>> with attack_gradient(model, "unroll"):
        ...     model.deq.grad
        'unroll'
        >>> model.deq.grad
        'ift'
    """
    check_gradient(gradient, "attack_gradient")
    if gradient is None:
        yield model
        return
    deqs = deq_modules(model)
    if not deqs:
        raise ValueError(
            f"attack_gradient: {type(model).__name__} has no DEQ layer, so gradient={gradient!r} means nothing"
        )
    saved = [d.grad for d in deqs]
    try:
        for d in deqs:
            d.grad = gradient
        yield model
    finally:
        for d, g in zip(deqs, saved):
            d.grad = g
