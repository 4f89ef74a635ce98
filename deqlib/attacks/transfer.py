"""Transfer attacks: adversarial examples crafted on one model, judged on another.

:class:`TransferAttack` runs a ``source`` attack (built for a *source* model) and returns its adversarial images
unchanged, as a ``torchattacks.Attack`` of the *target* model, so that every evaluation of deqlib
(:func:`~deqlib.attacks.robust_accuracy`, :func:`~deqlib.evaluate.evaluate_robustness`, the battery) can judge the
target on them. It is how a defence is evaluated by an attacker who ignores it: crafted on the undefended DEQ's
final state, then handed to an early-state or averaged-state readout. A transfer attack is never an adaptive one,
and a robustness number it gives is an upper bound at best.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchattacks.attack import Attack

from .._validate import check_module
from .guarded import CallChecks
from .registry import attack_name, attack_params

__all__ = ["TransferAttack"]


class TransferAttack(CallChecks, Attack):
    """The adversarial images of ``source`` (crafted on its own model), as an attack on ``model``.

    Args:
        model: the target model, on which the images are judged (torchattacks needs it for the device).
        source: any ``torchattacks.Attack`` with ``eps`` (and ``norm``) set, e.g. :func:`~deqlib.attacks.pgd` of
            the source model.

    ``eps`` and ``norm`` are the source's; the report's name is ``"transfer:<source name>"``.

    Example:
        >>> from deqlib.attacks import pgd
        >>> from deqlib.cells import mlp_classifier
        >>> a = mlp_classifier((1, 8, 8), 10, mean=(0.3,), std=(0.4,), width=8)
        >>> b = mlp_classifier((1, 8, 8), 10, mean=(0.3,), std=(0.4,), width=8)
        >>> atk = TransferAttack(b, pgd(a, 0.1, steps=3))
        >>> atk._deqlib_name, atk.eps
        ('transfer:pgd', 0.1)
    """

    def __init__(self, model: nn.Module, source: Attack) -> None:
        check_module(model, "TransferAttack")
        if not isinstance(source, Attack):
            raise TypeError(f"TransferAttack: source must be a torchattacks.Attack, got {type(source).__name__}")
        if getattr(source, "eps", None) is None:
            raise ValueError(f"TransferAttack: the source attack {attack_name(source)} has no eps")
        super().__init__("TransferAttack", model)
        self.source = source
        self.eps = source.eps
        self.norm = getattr(source, "norm", None) or "Linf"
        self.supported_mode = ["default"]
        self._deqlib_name = f"transfer:{attack_name(source)}"
        self._deqlib_params = {
            "eps": self.eps,
            "norm": self.norm,
            "source": attack_params(source) | {"name": attack_name(source)},
            "gradient": "transfer",
        }

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:  # type: ignore[override]
        images, labels = self.start_call(images, labels)
        try:
            return self.source(images, labels).detach()
        finally:
            self.end_call()
