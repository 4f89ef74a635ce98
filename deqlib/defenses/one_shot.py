"""R3, the one-shot Lyapunov correction of a DEQ's final state (a reading of LyaDEQ after its first author's later code).

Taught in chapter 6 (``notebooks/06_lyapunov_stability_and_lyadeq.ipynb``). What we know of that code (PAPERS.md §2,
a hint at habits, not LyaDEQ's code): a Lyapunov function ``V`` centred at the ORIGIN, applied ONCE to the solver's
final state,

    z  <-  z - ∇V(z) · ReLU(∇V(z)ᵀ F + α V(z)) / ||∇V(z)||²,     α = 0.9,

with ``∇V`` taken in the forward pass WITHOUT ``create_graph`` (so autograd treats it as a constant: the gradient an
attacker gets omits ``∂∇V/∂x``); a bias-free orthogonal classifier; two-stage training (the base model first, then
frozen while ``V`` and the classifier train). The code's ``F`` is not known to us: we take ``F = z`` (the solver's
output passed as both the point and its "dynamics", which is what a one-shot call on the final state can do), and we
take the norm per sample (the code sums it over the batch, a bug). Because ``V`` is convex with ``V(0) = 0``,
``∇Vᵀ z >= V(z) > 0``, so the ReLU is always active and the step always pulls ``z`` towards the origin.

Built twice: ``exact=True`` (``∇V`` with ``create_graph``: the gradient of the function computed) and ``exact=False``
(detached, as in that code). ``correct=False`` gives the control: the same frozen base and orthogonal classifier,
trained the same way, without the correction.

API:
    * :class:`OneShotLyapunovClassifier` — base DEQ (frozen) → one-shot correction → orthogonal classifier.

Example:
    >>> import torch
    >>> from deqlib.cells import mlp_classifier
    >>> base = mlp_classifier((1, 8, 8), 10, mean=(0.3,), std=(0.4,), width=16, max_iter=20)
    >>> model = OneShotLyapunovClassifier(base, lyapunov_hidden=(16,))
    >>> model(torch.rand(3, 1, 8, 8)).shape, sum(p.requires_grad for p in model.base.parameters())
    (torch.Size([3, 10]), 0)
"""

from __future__ import annotations

from typing import Any, Dict, Sequence

import torch
from torch import Tensor, nn

from .._validate import check_bool, check_positive
from ..cells import DEQClassifier
from ..lyapunov import LyapunovFunction
from .lyadeq import orthogonal_linear

__all__ = ["OneShotLyapunovClassifier"]


class OneShotLyapunovClassifier(nn.Module):
    """A frozen DEQ classifier's equilibrium ``z*``, corrected once by an origin-centred ``V``, read by a bias-free
    orthogonal classifier.

    Args:
        base: a trained :class:`~deqlib.cells.DEQClassifier` (its parameters are frozen here: stage one is done).
        alpha: the rate α of the correction (default 0.9, as in the later code).
        exact: take ``∇V`` with ``create_graph=True`` (exact gradients) or detached (the later code's choice).
        correct: apply the correction (False: the control, the orthogonal classifier on ``z*``).
        lyapunov_hidden: hidden widths of the ICNN of ``V``.

    Raises:
        TypeError: ``base`` is not a DEQ classifier, or a setting of the wrong type.
        ValueError: ``alpha <= 0``.
    """

    def __init__(
        self,
        base: DEQClassifier,
        *,
        alpha: float = 0.9,
        exact: bool = True,
        correct: bool = True,
        lyapunov_hidden: Sequence[int] = (64, 64),
    ) -> None:
        super().__init__()
        where = "OneShotLyapunovClassifier"
        if not isinstance(base, DEQClassifier):
            raise TypeError(f"{where}: base must be a DEQClassifier, got {type(base).__name__}")
        self.alpha = check_positive(alpha, "alpha", where)
        self.exact = check_bool(exact, "exact", where)
        self.correct = check_bool(correct, "correct", where)
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        width = int(base.head.in_features) if isinstance(base.head, nn.Linear) else None
        if width is None:
            raise TypeError(f"{where}: base.head must be the nn.Linear of an MLP DEQ classifier")
        self.lyapunov = LyapunovFunction(width, hidden=tuple(lyapunov_hidden))
        self.classifier = orthogonal_linear(width, int(base.head.out_features))

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, exact={self.exact}, correct={self.correct}"

    def train(self, mode: bool = True) -> "OneShotLyapunovClassifier":
        super().train(mode)
        self.base.eval()  # stage one is over: the base model is frozen, in eval mode
        return self

    def equilibrium(self, x: Tensor) -> Tensor:
        """The frozen base's ``z*`` (differentiable w.r.t. ``x`` through the base's own DEQ gradient)."""
        return self.base.deq(self.base.inject(x))

    def correction(self, z: Tensor, exact: bool | None = None) -> Tensor:
        """``z - ∇V ReLU(∇Vᵀ z + α V) / ||∇V||²`` per sample (``z`` itself for the control)."""
        if not self.correct:
            return z
        exact = self.exact if exact is None else exact
        grad_on = torch.is_grad_enabled()
        v, g = self.lyapunov.gradient(z, create_graph=exact and grad_on)
        if grad_on and not exact:
            v = self.lyapunov(z)  # V's value keeps its graph (so V trains); its gradient g is a constant
        n = z.shape[0]
        flat, gf = z.reshape(n, -1), g.reshape(n, -1)
        sq = (gf * gf).sum(dim=1).clamp_min(torch.finfo(z.dtype).tiny)
        coef = torch.relu((gf * flat).sum(dim=1) + self.alpha * v) / sq
        return z - coef.reshape((n,) + (1,) * (z.dim() - 1)) * g

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.correction(self.equilibrium(x)))

    def exact_twin(self) -> "_ExactTwin":
        """The same weights with the exact gradient (``∇V`` with ``create_graph``): the same function, the gradient
        an attacker of the detached model should use."""
        return _ExactTwin(self)

    def adaptive_attacks(
        self, eps: float, *, norm: str = "Linf", preset: str = "reduced", seed: int = 0
    ) -> Dict[str, Any]:
        """For the detached reading: APGD-CE and APGD-T on the exact twin (the true gradient of the function this
        model computes), judged on this model. None for the exact reading (its own gradient is exact)."""
        if self.exact or not self.correct:
            return {}
        from ..attacks import TransferAttack, apgd_ce, apgd_t

        steps, targets = (100, 9) if preset == "full" else (20, 3)
        twin = self.exact_twin()
        return {
            "exact_grad_apgd_ce": TransferAttack(self, apgd_ce(twin, eps, norm=norm, steps=steps, seed=seed)),
            "exact_grad_apgd_t": TransferAttack(
                self, apgd_t(twin, eps, norm=norm, steps=steps, n_target_classes=targets, seed=seed)
            ),
        }


class _ExactTwin(nn.Module):
    def __init__(self, model: OneShotLyapunovClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        m = self.model
        return m.classifier(m.correction(m.equilibrium(x), exact=True))
