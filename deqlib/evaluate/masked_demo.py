"""A deliberately masked model, for teaching and for testing the gradient-masking checks.

:class:`QuantisedInput` wraps any classifier and rounds its input to a few grey levels before the classifier sees
it. Rounding is flat almost everywhere, so the input gradient is **exactly zero**: PGD, APGD and FGSM take no step,
and the model *looks* robust to every gradient attack while being no more robust than the classifier inside (a
black-box attack such as Square, which only reads the logits, still breaks it). It is the textbook case of
*gradient masking* (Athalye, Carlini & Wagner 2018, "Obfuscated Gradients Give a False Sense of Security"), and
:func:`~deqlib.evaluate.masking_checks` fails it on every one of its six checks.

``straight_through=True`` gives the same function (identical logits) with the gradient of the identity in place of
the rounding's zero: the BPDA attack of Athalye et al. An attack on it is a valid attack on the masked model,
since the two compute the same function, and it shows the robustness was never there.

Do not use it as a defence: it is one by no measure.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validate import check_bool, check_int, check_module

__all__ = ["QuantisedInput"]


class QuantisedInput(nn.Module):
    """``forward(x) = model(round(x (L - 1)) / (L - 1))``: the input rounded to ``levels`` grey levels.

    Args:
        model: the classifier inside (maps [0, 1] images to logits).
        levels: L >= 2, the grey levels kept (L = 4: 0, 1/3, 2/3, 1).
        straight_through: if True, back-propagate through the rounding as if it were the identity (BPDA); the
            forward value is the same either way.

    Example:
        >>> import torch
        >>> from deqlib.cells import mlp_classifier
        >>> inner = mlp_classifier((1, 8, 8), 10, mean=(0.3,), std=(0.4,), width=8)
        >>> masked = QuantisedInput(inner, levels=4)
        >>> x = torch.rand(2, 1, 8, 8, requires_grad=True)
        >>> masked(x).sum().backward()
        >>> float(x.grad.abs().max())
        0.0
        >>> bpda = QuantisedInput(inner, levels=4, straight_through=True)
        >>> bool(torch.equal(bpda(x), masked(x)))
        True
    """

    def __init__(self, model: nn.Module, levels: int = 4, *, straight_through: bool = False) -> None:
        super().__init__()
        where = "QuantisedInput"
        self.model = check_module(model, where)
        self.levels = check_int(levels, "levels", where, minimum=2)
        self.straight_through = check_bool(straight_through, "straight_through", where)

    def quantise(self, x: Tensor) -> Tensor:
        """The rounded input; with ``straight_through`` its gradient is the identity's."""
        step = self.levels - 1
        rounded = torch.round(x * step) / step
        if self.straight_through:
            return x + (rounded - x).detach()
        return rounded

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.quantise(x))

    def extra_repr(self) -> str:
        return f"levels={self.levels}, straight_through={self.straight_through}"
