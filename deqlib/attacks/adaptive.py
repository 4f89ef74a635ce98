"""An adaptive attack through the input-entropy-reduction defence: L∞ PGD with BPDA (and optional EOT).

Taught in chapter 7 (not yet written). API: :class:`AdaptiveEntropyAttack`, a ``torchattacks.Attack`` on a
:class:`deqlib.defenses.EntropyReductionDefense`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchattacks.attack import Attack

from .._validate import check_int
from ..defenses.entropy_reduction import EntropyReductionDefense
from ..threat import check_eps, check_step, project, random_start

__all__ = ["AdaptiveEntropyAttack"]


class AdaptiveEntropyAttack(Attack):
    """L∞ PGD through :class:`~deqlib.defenses.EntropyReductionDefense` with BPDA, optionally averaged over EOT samples.

    Each step differentiates the cross-entropy of ``defense.forward_differentiable`` (see there for the BPDA
    surrogate), averages ``eot`` gradients (useful only if the defence is randomised: ours is deterministic, so
    eot = 1 suffices), and takes a signed step, projected onto the ε-ball ∩ [0, 1]. Supports torchattacks'
    targeted modes. The model mode is handled by torchattacks (``eval()`` during the attack, then restored).

    Args:
        defense: an :class:`~deqlib.defenses.EntropyReductionDefense`.
        eps: L∞ radius.
        alpha: step size.
        steps: PGD steps.
        eot: gradient samples per step.
        random_start: start from a uniform point of the ball.

    Example:
        >>> # atk = AdaptiveEntropyAttack(EntropyReductionDefense(model, dataset="mnist5k"), 0.3, 0.01, 40)
        >>> # x_adv = atk(x, y)
    """

    def __init__(
        self,
        defense: EntropyReductionDefense,
        eps: float,
        alpha: float,
        steps: int,
        eot: int = 1,
        random_start: bool = True,
    ) -> None:
        where = "AdaptiveEntropyAttack"
        if not isinstance(defense, EntropyReductionDefense):
            raise TypeError(f"{where}: defense must be an EntropyReductionDefense, got {type(defense).__name__}")
        eps = check_eps(eps, "Linf", where)
        alpha = check_step(alpha, "alpha", where, norm="Linf")
        steps = check_int(steps, "steps", where, minimum=1)
        eot = check_int(eot, "eot", where, minimum=1)
        super().__init__(where, defense)
        self.eps, self.alpha, self.steps, self.eot = eps, alpha, steps, eot
        self.random_start = bool(random_start)
        self.supported_mode = ["default", "targeted"]

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        target = self.get_target_label(images, labels) if self.targeted else labels
        sign = -1.0 if self.targeted else 1.0
        adv = random_start(images, self.eps, "Linf") if self.random_start else images.clone()
        for _ in range(self.steps):
            grad = torch.zeros_like(adv)
            for _ in range(self.eot):
                adv.requires_grad_(True)
                cost = sign * F.cross_entropy(self.model.forward_differentiable(adv), target)
                grad = grad + torch.autograd.grad(cost, adv)[0]
                adv = adv.detach()
            adv = project(adv + self.alpha * grad.sign(), images, self.eps, "Linf")
        return adv.detach()
