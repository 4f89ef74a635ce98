"""Intermediate-state attacks on DEQs (Yang, Pang & Liu, "A Closer Look at the Adversarial Robustness of Deep
Equilibrium Models", NeurIPS 2022).

API map: :class:`IntermediateStateAttack` (one state index) and :class:`EnsembleIntermediateAttack` (several,
their input gradients summed before the step), registered as "intermediate" and "ensemble_intermediate".

The attacker does not differentiate through the whole solver. At each PGD step it runs the model's own solver
(without gradient) for ``i`` iterations from the usual initial state, takes that iterate z_i (detached), and
takes k = ``phantom_steps`` damped steps (:func:`deqlib.solvers.damped_steps`, τ = ``phantom_tau``)

    z <- (1 - τ) z + τ f(z, u),   u = model.inject(x)

*with* gradient; the loss is the cross-entropy of ``model.logits_from_state(z)``. The gradient reaches x only
through the injection u inside those k steps. With z_i at the fixed point, τ = 1 and k large this is the
truncated Neumann series of the implicit gradient, so the attack then agrees with PGD on the exact (IFT or
unrolled) gradient; with an early i it attacks the early states that early-exit defences read out.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchattacks.attack import Attack

from .._validate import check_bool, check_fraction, check_int
from ..solvers import damped_steps
from ..threat import ascent_step, check_eps, check_l2_scale, check_norm, check_step, project
from ..threat import random_start as random_ball_point
from .guarded import CallChecks
from .registry import register_attack

__all__ = ["IntermediateStateAttack", "EnsembleIntermediateAttack"]


def _check_deq_model(model: object, where: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{where}: model must be a torch.nn.Module, got {type(model).__name__}")
    missing = [a for a in ("inject", "solve", "logits_from_state") if not callable(getattr(model, a, None))]
    cell = getattr(getattr(model, "deq", None), "cell", None)
    if missing or not callable(cell):
        raise TypeError(
            f"{where}: needs a DEQ classifier with inject(x), solve(x, record=True, max_iter=i), "
            f"logits_from_state(z) and deq.cell(z, u) (e.g. deqlib.cells.DEQClassifier); "
            f"{type(model).__name__} lacks {missing + ([] if callable(cell) else ['deq.cell'])}"
        )
    if next(model.parameters(), None) is None:
        raise ValueError(f"{where}: the model has no parameters")
    return model


class _IntermediateBase(CallChecks, Attack):
    """The validation, the intermediate-state gradient and the PGD loop shared by the two attacks below."""

    def __init__(
        self,
        name: str,
        model: nn.Module,
        eps: float,
        alpha: Optional[float],
        steps: int,
        state_indices: Sequence[int],
        phantom_steps: int,
        phantom_tau: float,
        random_start: bool,
        norm: str,
    ) -> None:
        where = name
        _check_deq_model(model, where)
        norm = check_norm(norm, where)
        eps = check_eps(eps, norm, where)
        steps = check_int(steps, "steps", where, minimum=1)
        alpha = 2.5 * eps / steps if alpha is None else check_step(alpha, "alpha (step size)", where, norm=norm)
        if isinstance(state_indices, (str, bytes)) or not hasattr(state_indices, "__iter__"):
            raise TypeError(f"{where}: state_indices must be a sequence of ints, got {state_indices!r}")
        idx = tuple(check_int(i, "state index", where, minimum=0) for i in state_indices)
        if not idx:
            raise ValueError(f"{where}: give at least one state index")
        phantom_steps = check_int(phantom_steps, "phantom_steps", where, minimum=1)
        phantom_tau = check_fraction(phantom_tau, "phantom_tau", where)
        random_start = check_bool(random_start, "random_start", where)
        super().__init__(name, model)
        self.eps, self.alpha, self.steps, self.norm = eps, alpha, steps, norm
        self.state_indices: Tuple[int, ...] = idx
        self.phantom_steps, self.phantom_tau, self.random_start = phantom_steps, phantom_tau, random_start
        self.supported_mode = ["default"]
        self._deqlib_name = "intermediate" if name == "IntermediateStateAttack" else "ensemble_intermediate"
        self._deqlib_params = {
            "eps": eps,
            "norm": norm,
            "alpha": alpha,
            "steps": steps,
            "state_indices": list(idx),
            "phantom_steps": phantom_steps,
            "phantom_tau": phantom_tau,
            "random_start": self.random_start,
            "gradient": "intermediate",
        }

    # ------------------------------------------------------------------ the gradient
    def intermediate_states(self, x: Tensor) -> Tuple[Tensor, ...]:
        """The detached solver iterates z_i for each state index i (the last one if the solver stopped earlier)."""
        k = max(self.state_indices)
        _, info = self.model.solve(x.detach(), record=True, max_iter=max(k, 1))
        traj = info.trajectory
        if traj is None:  # pragma: no cover - solve(record=True) always records
            raise RuntimeError(f"{self.attack}: the model's solve() returned no trajectory")
        return tuple(traj[min(i, traj.shape[0] - 1)].detach() for i in self.state_indices)

    def loss(self, x: Tensor, y: Tensor, states: Optional[Sequence[Tensor]] = None) -> Tensor:
        """Sum over state indices of the summed cross-entropy after k damped steps (differentiable in x)."""
        if states is None:
            states = self.intermediate_states(x)
        u = self.model.inject(x)
        cell = self.model.deq.cell
        total = x.new_zeros(())
        for z in states:
            z = damped_steps(lambda v: cell(v, u), z, self.phantom_steps, self.phantom_tau)
            logits = self.check_logits_once(self.model.logits_from_state(z), x.shape[0])
            total = total + F.cross_entropy(logits, y, reduction="sum")
        return total

    def input_gradient(self, x: Tensor, y: Tensor) -> Tensor:
        """d loss / d x at x (the ascent direction before the sign / normalisation)."""
        states = self.intermediate_states(x)
        x_req = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            total = self.loss(x_req, y, states)
            (g,) = torch.autograd.grad(total, x_req)
        return g.detach()

    # ------------------------------------------------------------------ PGD around it
    def forward(self, images: Tensor, labels: Tensor) -> Tensor:  # type: ignore[override]
        images, labels = self.start_call(images, labels)
        try:
            return self._pgd(images.clone().detach().to(self.device), labels.clone().detach().to(self.device))
        finally:
            self.end_call()

    def _pgd(self, images: Tensor, labels: Tensor) -> Tensor:
        if self.norm == "L2":
            check_l2_scale(self.eps, images, self.attack)
        if self.eps == 0:
            return images
        # the same random draws as torchattacks.PGD (uniform per pixel) and PGDL2 (a normal direction, a uniform radius)
        adv = random_ball_point(images, self.eps, self.norm).detach() if self.random_start else images.clone()
        for _ in range(self.steps):
            g = self.input_gradient(adv, labels)
            adv = project(ascent_step(adv, g, self.alpha, self.norm), images, self.eps, self.norm).detach()
        return adv


class IntermediateStateAttack(_IntermediateBase):
    """PGD whose gradient goes through k damped steps taken from the solver's i-th iterate.

    Args:
        model: a DEQ classifier with ``inject``, ``solve``, ``logits_from_state`` and ``deq.cell``
            (:class:`deqlib.cells.DEQClassifier`).
        eps: radius on the [0, 1] pixel scale.
        alpha: step size (default 2.5 * eps / steps).
        steps: PGD steps.
        state_index: i, the number of solver iterations (the model's own solver, from its usual initial state)
            before the damped steps; an i past convergence gives the solver's final state.
        phantom_steps: k, the damped steps back-propagated through.
        phantom_tau: τ, their damping in (0, 1] (τ = 1: plain f-iterations).
        random_start: start uniformly in the ball (global torch generator, as torchattacks.PGD).
        norm: "Linf" (signed steps) or "L2" (normalised steps).
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        alpha: Optional[float] = None,
        steps: int = 10,
        *,
        state_index: int,
        phantom_steps: int = 5,
        phantom_tau: float = 0.5,
        random_start: bool = True,
        norm: str = "Linf",
    ) -> None:
        super().__init__(
            "IntermediateStateAttack",
            model,
            eps,
            alpha,
            steps,
            (state_index,),
            phantom_steps,
            phantom_tau,
            random_start,
            norm,
        )
        self.state_index = self.state_indices[0]


class EnsembleIntermediateAttack(_IntermediateBase):
    """The intermediate-state attack with the input gradients for several state indices summed before the step.

    Args: as :class:`IntermediateStateAttack`, with ``state_indices`` (a non-empty sequence) instead of one index.
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        alpha: Optional[float] = None,
        steps: int = 10,
        *,
        state_indices: Sequence[int],
        phantom_steps: int = 5,
        phantom_tau: float = 0.5,
        random_start: bool = True,
        norm: str = "Linf",
    ) -> None:
        super().__init__(
            "EnsembleIntermediateAttack",
            model,
            eps,
            alpha,
            steps,
            state_indices,
            phantom_steps,
            phantom_tau,
            random_start,
            norm,
        )


register_attack("intermediate", IntermediateStateAttack, aliases=("intermediate_state", "intermediate_state_attack"))
register_attack("ensemble_intermediate", EnsembleIntermediateAttack, aliases=("intermediate_ensemble",))
