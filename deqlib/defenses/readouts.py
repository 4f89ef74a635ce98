"""Early-state and averaged-state readouts of a DEQ classifier (Yang, Pang, Liu, NeurIPS 2022).

Defences that read out an early solver iterate, or the average of several, instead of the equilibrium. Both are
modules mapping [0, 1] images to logits whose VALUES are exactly the head on those iterates and whose GRADIENT (so
that attacks can target them) is a surrogate attached straight-through:

* ``grad="phantom"``: back-propagate through ``phantom_steps`` damped steps z <- (1 - τ) z + τ f(z, u)
  (:func:`deqlib.solvers.damped_steps`, τ = ``phantom_tau``) from the detached iterate;
* ``grad="unroll"``: back-propagate through i plain steps z <- f(z, u) from z_0.

API: :class:`EarlyStateClassifier`, :class:`AveragedStateClassifier`, :data:`READOUT_GRADS`. Chapter 5 attacks them
both ways: through these surrogates (the state actually read) and by transfer from the final state
(:class:`~deqlib.attacks.TransferAttack`), which is no evaluation of a readout.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .._validate import check_choice, check_deq_classifier, check_fraction, check_int
from ..dynamics import solver_trajectory
from ..solvers import damped_steps
from ._common import straight_through

__all__ = ["READOUT_GRADS", "EarlyStateClassifier", "AveragedStateClassifier"]

#: The surrogate gradients of a readout (``deqlib.deq.GRADS`` are the DEQ's own: "ift", "phantom", "unroll").
READOUT_GRADS = ("phantom", "unroll")


class _StateReadout(nn.Module):
    """Shared machinery: exact iterates of the model's solver, each given a surrogate gradient."""

    name = "readout"

    def __init__(self, model: nn.Module, grad: str, phantom_steps: Optional[int], phantom_tau: Optional[float]) -> None:
        super().__init__()
        where = self.name
        self.model = check_deq_classifier(model, where)
        self.grad = check_choice(grad, "grad", where, READOUT_GRADS)
        steps = model.deq.phantom_steps if phantom_steps is None else phantom_steps
        tau = model.deq.phantom_tau if phantom_tau is None else phantom_tau
        self.phantom_steps = check_int(steps, "phantom_steps", where, minimum=1)
        self.phantom_tau = check_fraction(tau, "phantom_tau", where)

    def _check_index(self, i: object) -> int:
        i = check_int(i, "a state index", self.name)
        if i < 1:
            raise ValueError(f"{self.name}: state indices must be >= 1 (z_0 = 0 does not depend on the input), got {i}")
        return i

    def _states(self, x: Tensor, indices: Sequence[int]) -> List[Tensor]:
        """z_i for i in indices: exact values, with the surrogate gradient attached when autograd is on."""
        u = self.model.inject(x)
        traj, _ = solver_trajectory(self.model, u, max(indices))
        values = [traj[i] for i in indices]
        if not torch.is_grad_enabled():
            return values
        cell = self.model.deq.cell
        if self.grad == "phantom":
            return [
                straight_through(v, damped_steps(lambda s: cell(s, u), v, self.phantom_steps, self.phantom_tau))
                for v in values
            ]
        # "unroll": plain steps z <- f(z, u) from z_0 with the graph, read at each index.
        wanted, unrolled = set(indices), {}
        z = traj[0]
        for k in range(1, max(indices) + 1):
            z = cell(z, u)
            if k in wanted:
                unrolled[k] = z
        return [straight_through(v, unrolled[i]) for v, i in zip(values, indices)]

    def extra_repr(self) -> str:
        return f"grad={self.grad!r}, phantom_steps={self.phantom_steps}, phantom_tau={self.phantom_tau:g}"


class EarlyStateClassifier(_StateReadout):
    """Read out the ``state_index``-th solver iterate: ``forward(x) = head(z_i)`` (the 2022 paper's early state).

    The value is exactly ``state_predictions(model, x, i)["logits"][i]``. The gradient is a surrogate (module
    docstring): ``grad="phantom"`` (default) is like the intermediate-state attack of Yang et al. (2022), whose
    λ = 0.5 or 1 is our ``phantom_tau``; ``grad="unroll"`` is the exact gradient of the readout when the model's
    solver is plain fixed-point iteration (``solver="fixed_point"``, ``tau=1``) and no sample stops before i; for
    Anderson / Broyden iterates it is an approximation.

    Args:
        model: a :class:`~deqlib.cells.DEQClassifier`.
        state_index: i >= 1 (Yang et al. 2023 read out "the last but one" state).
        grad: "phantom" or "unroll".
        phantom_steps, phantom_tau: k and τ of the phantom surrogate (default the model's ``deq.phantom_steps`` /
            ``deq.phantom_tau``).
    """

    name = "EarlyStateClassifier"

    def __init__(
        self,
        model: nn.Module,
        state_index: int,
        *,
        grad: str = "phantom",
        phantom_steps: Optional[int] = None,
        phantom_tau: Optional[float] = None,
    ) -> None:
        super().__init__(model, grad, phantom_steps, phantom_tau)
        self.state_index = self._check_index(state_index)

    def forward(self, x: Tensor) -> Tensor:
        (z,) = self._states(x, [self.state_index])
        return self.model.logits_from_state(z)

    def extra_repr(self) -> str:
        return f"state_index={self.state_index}, " + super().extra_repr()


class AveragedStateClassifier(_StateReadout):
    """Read out the average of several solver iterates: ``forward(x) = head(mean_i z_i)`` (Yang et al. 2022).

    We average the states, then apply the head (for the linear heads of :mod:`deqlib.cells`, which pool
    and then apply a linear map, this equals averaging the logits). Each z_i gets the surrogate gradient
    described in :class:`EarlyStateClassifier`.

    Args:
        model: a :class:`~deqlib.cells.DEQClassifier`.
        indices: the iterates to average (ints >= 1); or
        last_k: average the last k iterates z_{K-k+1}..z_K, with K = ``steps``.
        steps: K for ``last_k`` (default the model's ``deq.max_iter``).
        grad, phantom_steps, phantom_tau: as in :class:`EarlyStateClassifier`.
    """

    name = "AveragedStateClassifier"

    def __init__(
        self,
        model: nn.Module,
        indices: Optional[Sequence[int]] = None,
        *,
        last_k: Optional[int] = None,
        steps: Optional[int] = None,
        grad: str = "phantom",
        phantom_steps: Optional[int] = None,
        phantom_tau: Optional[float] = None,
    ) -> None:
        super().__init__(model, grad, phantom_steps, phantom_tau)
        if (indices is None) == (last_k is None):
            raise ValueError(f"{self.name}: give exactly one of indices and last_k")
        if indices is not None:
            self.indices: Tuple[int, ...] = self._explicit_indices(indices, steps)
        else:
            self.indices = self._last_indices(last_k, steps)

    def _explicit_indices(self, indices: Sequence[int], steps: Optional[int]) -> Tuple[int, ...]:
        if steps is not None:
            raise ValueError(f"{self.name}: steps only applies to last_k")
        if isinstance(indices, (str, bytes)) or not hasattr(indices, "__iter__"):
            raise TypeError(f"{self.name}: indices must be a sequence of ints, got {type(indices).__name__}")
        idx = [self._check_index(i) for i in indices]
        if not idx or len(set(idx)) != len(idx):
            raise ValueError(f"{self.name}: indices must be non-empty and distinct, got {list(indices)}")
        return tuple(idx)

    def _last_indices(self, last_k: int, steps: Optional[int]) -> Tuple[int, ...]:
        k_total = self.model.deq.max_iter if steps is None else check_int(steps, "steps", self.name, minimum=1)
        last_k = check_int(last_k, "last_k", self.name, minimum=1)
        if last_k > k_total:
            raise ValueError(f"{self.name}: last_k={last_k} exceeds the {k_total} solver steps")
        return tuple(range(k_total - last_k + 1, k_total + 1))

    def forward(self, x: Tensor) -> Tensor:
        states = self._states(x, self.indices)
        return self.model.logits_from_state(torch.stack(states).mean(dim=0))

    def extra_repr(self) -> str:
        return f"indices={self.indices}, " + super().extra_repr()
