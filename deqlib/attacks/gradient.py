"""Which gradient the attacker differentiates through: the implicit (IFT), phantom or unrolled one.

A DEQ's forward value does not depend on the gradient choice, but its input gradient does, and an attack is
only as strong as the gradient it follows. API map: :func:`attack_gradient` switches every DEQ inside a model for
the duration of a ``with`` block and restores the previous settings afterwards, even on an exception;
:func:`check_gradient` validates a ``gradient=`` argument (None or one of :data:`deqlib.deq.GRADS`).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

from torch import nn

from .._modules import deq_modules
from .._validate import check_choice
from ..deq import GRADS

__all__ = ["attack_gradient", "check_gradient"]


def check_gradient(gradient: object, where: str = "attack") -> Optional[str]:
    """None (leave the model's setting alone) or one of "ift", "phantom", "unroll"."""
    return check_choice(gradient, "gradient", where, (None, *GRADS))


@contextlib.contextmanager
def attack_gradient(model: nn.Module, gradient: Optional[str]) -> Iterator[nn.Module]:
    """Set ``.grad`` of every DEQ in ``model`` to ``gradient`` inside the block; restore it afterwards.

    Args:
        model: a module containing one or more :class:`~deqlib.deq.DEQ` layers.
        gradient: "ift", "phantom" or "unroll"; ``None`` changes nothing (the model's own setting is used).

    Raises:
        ValueError: unknown gradient, or a gradient asked of a model without any DEQ layer.
        TypeError: ``model`` is not a module.

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
    if not isinstance(model, nn.Module):
        raise TypeError(f"attack_gradient: model must be a torch.nn.Module, got {type(model).__name__}")
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
