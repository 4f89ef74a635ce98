"""Training objectives of two LyaDEQ readings: stability as a loss term instead of a projection.

Taught in chapter 6 (``notebooks/06_lyapunov_stability_and_lyadeq.ipynb``). Both wrap a base loss of
:mod:`deqlib.losses` (cross-entropy, PGD-AT or TRADES) and add a penalty; ``weight=0`` gives the control, trained
identically without it.

* **R4** :class:`AttractorRegulariser` (SODEF-style, our discrete version): on the state the head reads, ``z_K`` of a
  :class:`~deqlib.defenses.HorizonClassifier`, penalise the residual ``||step(z_K) - z_K||²`` (the state read is an
  equilibrium) and a Jacobian of the step whose norm along a random direction exceeds ``rho`` (the equilibrium is
  locally a contraction, so ``V(z) = ||z - z_K||²`` decreases on a ball around it: a basin). SODEF itself
  regularises a neural ODE's Jacobian towards strict diagonal dominance with a negative diagonal; the decrease must
  hold on the map actually iterated, so we regularise the discrete step.
* **R5** :class:`LyapunovDecreaseLoss`: on the model's own solver iterates ``z_k`` (and on states started a random
  distance from ``z*``), penalise ``V(f(z_k) - f(z*)) > (1 - c) V(z_k - z*)``, with ``V`` a learned
  :class:`~deqlib.lyapunov.LyapunovFunction` of the displacement that trains jointly with the DEQ
  (:class:`LyapunovRegularisedDEQ` holds it). The model's solver must iterate ``f`` itself (``"fixed_point"``,
  undamped): then the decrease is checked on the map the model actually iterates.

API:
    * :class:`AttractorRegulariser`, :class:`LyapunovDecreaseLoss` — ``loss(model, x, y) -> (loss, logits)``.
    * :class:`LyapunovRegularisedDEQ` — a DEQ classifier that carries the ``V`` of :class:`LyapunovDecreaseLoss`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Tuple

import torch
from torch import Tensor, nn

from .._validate import check_callable, check_fraction, check_nonnegative, check_positive
from ..cells import DEQClassifier
from ..lyapunov import LyapunovFunction
from .horizon import HorizonClassifier

__all__ = ["AttractorRegulariser", "LyapunovDecreaseLoss", "LyapunovRegularisedDEQ"]

Loss = Callable[[nn.Module, Tensor, Tensor], Any]


def _split(out: Any) -> Tuple[Tensor, Any]:
    return (out[0], out[1]) if isinstance(out, (tuple, list)) else (out, None)


def _unit(v: Tensor) -> Tensor:
    n = v.shape[0]
    return v / v.reshape(n, -1).norm(dim=1).clamp_min(1e-12).reshape((n,) + (1,) * (v.dim() - 1))


class AttractorRegulariser:
    """``base(model, x, y) + weight * (||step(z_K) - z_K||² + ReLU(||Jᵀv|| - rho)²)``, per-sample means (R4).

    ``J`` is the Jacobian of the model's step at ``z_K`` and ``v`` a random unit direction (one probe per sample,
    drawn from the global generator: seed it, as :func:`deqlib.train.fit` does every epoch).

    Args:
        base: the base loss (``loss(model, x, y) -> loss`` or ``(loss, logits)``).
        weight: the penalty's weight (>= 0; 0: the control).
        rho: the contraction factor asked of the step at the equilibrium, in (0, 1].
    """

    def __init__(self, base: Loss, weight: float = 1.0, rho: float = 0.5) -> None:
        where = "AttractorRegulariser"
        self.base = check_callable(base, "base", where, "as loss(model, x, y)")
        self.weight = check_nonnegative(weight, "weight", where)
        self.rho = check_fraction(rho, "rho", where)

    def __repr__(self) -> str:
        return f"AttractorRegulariser(base={self.base!r}, weight={self.weight}, rho={self.rho})"

    def penalty(self, model: HorizonClassifier, x: Tensor) -> Tensor:
        """The per-batch mean penalty on clean ``x``."""
        if not isinstance(model, HorizonClassifier):
            raise TypeError(f"AttractorRegulariser: the model must be a HorizonClassifier, got {type(model).__name__}")
        u = model.inject(x)
        z = model.run(u)[-1]
        zz = z.detach().requires_grad_(True)
        out = model.step(zz, model.injection_scale * u)
        residual = (out - zz).reshape(z.shape[0], -1).pow(2).sum(dim=1)
        v = _unit(torch.randn_like(zz))
        (jtv,) = torch.autograd.grad(out, zz, v, create_graph=True)
        gain = jtv.reshape(z.shape[0], -1).norm(dim=1)
        residual_at_read = (model.step(z, model.injection_scale * u) - z).reshape(z.shape[0], -1).pow(2).sum(dim=1)
        return (residual + residual_at_read + torch.relu(gain - self.rho).pow(2)).mean()

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tuple[Tensor, Any]:
        loss, logits = _split(self.base(model, x, y))
        if self.weight == 0:
            return loss, logits
        return loss + self.weight * self.penalty(model, x), logits


class LyapunovRegularisedDEQ(DEQClassifier):
    """A :class:`~deqlib.cells.DEQClassifier` that also holds the Lyapunov function ``V`` of the displacement
    ``z - z*`` that :class:`LyapunovDecreaseLoss` trains with it. Its forward is the DEQ classifier's; ``V`` only
    enters the loss (and the certificate the chapter checks).

    Args:
        model: a DEQ classifier whose parts (injection, cell, head, solver settings) are taken over.
        lyapunov_hidden: hidden widths of ``V``'s ICNN.
    """

    def __init__(self, model: DEQClassifier, lyapunov_hidden: Sequence[int] = (64, 64)) -> None:
        if not isinstance(model, DEQClassifier):
            raise TypeError(f"LyapunovRegularisedDEQ: model must be a DEQClassifier, got {type(model).__name__}")
        nn.Module.__init__(self)
        self.image_shape, self.normalize = model.image_shape, model.normalize
        self.injection, self.deq, self.head = model.injection, model.deq, model.head
        with torch.no_grad():
            n_state = int(model.inject(torch.zeros(1, *model.image_shape))[0].numel())
        self.lyapunov = LyapunovFunction(n_state, hidden=tuple(lyapunov_hidden))


class LyapunovDecreaseLoss:
    """``base(model, x, y) + weight * mean ReLU(V(f(z_k) - f(z*)) / V(z_k - z*) - (1 - rate))`` (R5).

    The states ``z_k`` are the model's own solver iterates on clean ``x`` (recorded, detached) and ``starts``
    states ``z* + r e`` at random unit directions ``e`` (``r = radius * ||z*||`` per sample, stability w.r.t. the
    initial state); ``f(z_k)`` is recomputed with a graph, so the penalty trains the cell, the injection and ``V``.
    ``z*`` is the solver's result, detached; ``f(z*)`` is recomputed with a graph (its value is ``z*``), so
    the penalty asks the map to contract the displacement rather than to reach a fixed target.

    Args:
        base: the base loss.
        weight: the penalty's weight (>= 0; 0: the control).
        rate: the decrease asked per step, ``c`` in (0, 1].
        starts: random starts around ``z*`` per sample (>= 0).
        radius: their distance from ``z*``, relative to ``||z*||`` (> 0).
    """

    def __init__(self, base: Loss, weight: float = 1.0, rate: float = 0.5, starts: int = 1, radius: float = 0.5):
        where = "LyapunovDecreaseLoss"
        self.base = check_callable(base, "base", where, "as loss(model, x, y)")
        self.weight = check_nonnegative(weight, "weight", where)
        self.rate = check_fraction(rate, "rate", where)
        self.starts = int(check_nonnegative(starts, "starts", where))
        self.radius = check_positive(radius, "radius", where)

    def __repr__(self) -> str:
        return (
            f"LyapunovDecreaseLoss(base={self.base!r}, weight={self.weight}, rate={self.rate}, "
            f"starts={self.starts}, radius={self.radius})"
        )

    def _states(self, model: LyapunovRegularisedDEQ, u: Tensor) -> Tuple[Tensor, Tensor]:
        """(the states to check, flattened to (M, *state); z* repeated to match)."""
        with torch.no_grad():
            z_star, info = model.deq.solve(u, record=True)
        traj = info.trajectory[:-1]  # z_0 .. z_{K-1}: each has a successor f(z_k)
        states = [traj.reshape(-1, *z_star.shape[1:])]
        for _ in range(self.starts):
            n = z_star.shape[0]
            r = self.radius * z_star.reshape(n, -1).norm(dim=1).clamp_min(1e-6)
            states.append(z_star + r.reshape((n,) + (1,) * (z_star.dim() - 1)) * _unit(torch.randn_like(z_star)))
        reps = traj.shape[0] + self.starts
        return torch.cat(states), z_star.repeat(reps, *([1] * (z_star.dim() - 1)))

    def penalty(self, model: nn.Module, x: Tensor) -> Tensor:
        """The mean relative violation of the decrease on the iterates of clean ``x``."""
        if not isinstance(model, LyapunovRegularisedDEQ):
            raise TypeError(
                f"LyapunovDecreaseLoss: the model must be a LyapunovRegularisedDEQ, got {type(model).__name__}"
            )
        u = model.inject(x)
        z, z_star = self._states(model, u)
        reps = z.shape[0] // u.shape[0]
        uu = u.repeat(reps, *([1] * (u.dim() - 1)))
        fz, f_star = model.deq.cell(z, uu), model.deq.cell(z_star, uu)
        V = model.lyapunov
        before = V(z - z_star)
        # f(z*) (= z* in value) carries the graph: the displacement after one step is f(z_k) - f(z*), so the loss
        # asks the map to contract; against a detached z* it would rather drag the iterates to that target
        after = V(fz - f_star)
        moving = before.detach() > 1e-8  # converged iterates (z_k = z*) have nothing to decrease
        if not bool(moving.any()):
            return fz.sum() * 0.0
        ratio = after[moving] / before[moving]
        return torch.relu(ratio - (1.0 - self.rate)).mean()

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tuple[Tensor, Any]:
        loss, logits = _split(self.base(model, x, y))
        if self.weight == 0:
            return loss, logits
        return loss + self.weight * self.penalty(model, x), logits
