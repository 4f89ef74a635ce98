"""Finite-horizon readings of LyaDEQ: a weight-tied network run for a fixed number of steps, read at the last.

Taught in chapter 6 (``notebooks/06_lyapunov_stability_and_lyadeq.ipynb``). Two readings of the LyaDEQ paper
(PAPERS.md §2) are finite-horizon models, not equilibrium models: their state after ``K`` steps is read, whether or
not the iteration has converged, and the gradient is that of the steps actually taken (exact, by unrolling), so
there is no convergence claim to warn about and no implicit gradient to trust.

* **R1** (origin-centred projection inside the iteration): the step is
  :class:`~deqlib.defenses.LyapunovStableCell` with ``center="origin"``; with ``K`` growing every input's state
  collapses towards the minimiser of ``V``.
* **R4** (SODEF-style attractors): the input enters through the initial state, ``z_0 = u(x)``, the cell sees a weak
  or no injection (``injection_scale``), and a regulariser
  (:class:`~deqlib.defenses.lyadeq_losses.AttractorRegulariser`) makes the state read a locally stable
  equilibrium — the construction in which stability in ``z`` can buy robustness in ``x``.

Their controls are the same classes with the nominal step :class:`EulerCell` (no projection, no regulariser).

API:
    * :class:`EulerCell` — the nominal step ``z + h (f(z, u) - z)``.
    * :class:`HorizonClassifier` — images → normalise → injection ``u`` → ``K`` steps → head.
    * :data:`STARTS`, :data:`HORIZON_GRADS` — where the iteration starts; which steps carry the gradient.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from deqlib.cells import MLPCell
    >>> model = HorizonClassifier(
    ...     nn.Sequential(nn.Flatten(), nn.Linear(64, 16)), EulerCell(MLPCell(16), h=0.5), nn.Linear(16, 10),
    ...     image_shape=(1, 8, 8), mean=(0.3,), std=(0.4,), steps=6)
    >>> model(torch.rand(2, 1, 8, 8)).shape, len(model.states(torch.rand(2, 1, 8, 8)))
    (torch.Size([2, 10]), 7)
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch
from torch import Tensor, nn

from .._validate import (
    check_callable,
    check_choice,
    check_fraction,
    check_image_shape,
    check_images,
    check_int,
    check_nonnegative,
    check_tensor,
)
from ..cells import Normalize

__all__ = ["EulerCell", "HorizonClassifier", "STARTS", "HORIZON_GRADS"]

#: Where the iteration starts: the zero state (as a DEQ), or the injection itself (``z_0 = u(x)``, SODEF-style).
STARTS = ("zero", "injection")
#: Which steps carry the gradient: all of them (exact), or only the last ``phantom_steps`` (truncated).
HORIZON_GRADS = ("unroll", "truncated")


class EulerCell(nn.Module):
    """The nominal Euler step ``z <- z + h (f(z, u) - z)`` of a DEQ cell ``f`` (``f`` itself for ``h = 1``).

    Args:
        cell: the nominal cell ``f(z, u)``.
        h: the step, in (0, 1].
    """

    def __init__(self, cell: nn.Module, h: float = 1.0) -> None:
        super().__init__()
        self.cell = check_callable(cell, "cell", "EulerCell", "as cell(z, u)")
        self.h = check_fraction(h, "h", "EulerCell")

    def extra_repr(self) -> str:
        return f"h={self.h}"

    def forward(self, z: Tensor, u: Tensor) -> Tensor:
        fz = self.cell(z, u)
        return fz if self.h == 1.0 else z + self.h * (fz - z)


class HorizonClassifier(nn.Module):
    """[0, 1] images → normalise → injection ``u`` → ``K`` steps ``z_{k+1} = step(z_k, β u)`` → ``head(z_K)``.

    Args:
        injection: maps normalised images to the injection ``u``.
        step: the map iterated, ``step(z, u) -> next z``: an :class:`EulerCell` (nominal) or a
            :class:`~deqlib.defenses.LyapunovStableCell` (projected; its own ``h`` is the Euler step).
        head: maps a state to logits.
        image_shape, mean, std: as for :class:`~deqlib.cells.DEQClassifier`.
        steps: the horizon ``K`` (>= 1).
        start: ``"zero"`` (``z_0 = 0``) or ``"injection"`` (``z_0 = u``); see :data:`STARTS`.
        injection_scale: ``β >= 0``, the weight of the injection inside every step (0: the input enters only
            through ``z_0``).
        grad: ``"unroll"`` (every step carries the gradient: exact) or ``"truncated"`` (only the last
            ``phantom_steps``; cheaper, inexact); an attacker should set ``"unroll"``.
        phantom_steps: the steps with a gradient under ``"truncated"``.

    Raises:
        TypeError: a setting of the wrong type.
        ValueError: a setting out of range; images of the wrong shape, or not finite in [0, 1].
    """

    def __init__(
        self,
        injection: nn.Module,
        step: nn.Module,
        head: nn.Module,
        *,
        image_shape: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        steps: int = 10,
        start: str = "zero",
        injection_scale: float = 1.0,
        grad: str = "unroll",
        phantom_steps: int = 5,
    ) -> None:
        super().__init__()
        where = "HorizonClassifier"
        self.image_shape = check_image_shape(image_shape, where)
        self.normalize = Normalize(mean, std)
        self.injection = check_callable(injection, "injection", where, "as injection(x)")
        self.step = check_callable(step, "step", where, "as step(z, u)")
        self.head = check_callable(head, "head", where, "as head(z)")
        self.steps = check_int(steps, "steps", where, minimum=1)
        self.start = check_choice(start, "start", where, STARTS)
        self.injection_scale = check_nonnegative(injection_scale, "injection_scale", where)
        self.grad = check_choice(grad, "grad", where, HORIZON_GRADS)
        self.phantom_steps = check_int(phantom_steps, "phantom_steps", where, minimum=1)

    def extra_repr(self) -> str:
        return f"steps={self.steps}, start={self.start!r}, injection_scale={self.injection_scale}, grad={self.grad!r}"

    def inject(self, x: Tensor) -> Tensor:
        """The injection ``u`` of images ``x`` (checked: ``(N, *image_shape)``, finite)."""
        check_tensor(x, "x (float images in [0, 1])", "HorizonClassifier", floating=True)
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape or x.shape[0] == 0:
            raise ValueError(
                f"HorizonClassifier: expected images of shape (N, {', '.join(map(str, self.image_shape))}), "
                f"got {tuple(x.shape)}"
            )
        check_images(x.detach(), "HorizonClassifier")
        return self.injection(self.normalize(x))

    def initial_state(self, u: Tensor) -> Tensor:
        return u if self.start == "injection" else torch.zeros_like(u)

    def run(self, u: Tensor, steps: int | None = None) -> List[Tensor]:
        """The states ``[z_0, ..., z_k]`` from injection ``u`` (``k = steps``, default ``K``), with the gradient
        the ``grad`` setting gives (none under ``torch.no_grad()``)."""
        k = self.steps if steps is None else check_int(steps, "steps", "HorizonClassifier.run", minimum=0)
        z, drive = self.initial_state(u), self.injection_scale * u
        states = [z]
        cut = k - self.phantom_steps if self.grad == "truncated" and torch.is_grad_enabled() else 0
        for i in range(k):
            if i < cut:
                with torch.no_grad():
                    z = self.step(z, drive.detach())
                z = z.detach()
            else:
                z = self.step(z, drive)
            states.append(z)
        return states

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.run(self.inject(x))[-1])

    def logits_from_state(self, z: Tensor) -> Tensor:
        return self.head(z)

    @torch.no_grad()
    def states(self, x: Tensor, steps: int | None = None) -> List[Tensor]:
        """``[z_0, ..., z_K]`` for images ``x``, without a graph (the measurements' input)."""
        return self.run(self.inject(x), steps)

    def truncated(self, steps: int) -> "TruncatedHorizon":
        """The same weights read after ``steps`` steps instead of ``K``: a surrogate for a transfer attack."""
        return TruncatedHorizon(self, steps)

    def adaptive_attacks(
        self, eps: float, *, norm: str = "Linf", preset: str = "reduced", seed: int = 0
    ) -> Dict[str, Any]:
        """Attacks adapted to a finite horizon, each judged on this model: APGD-CE on the model read after
        ``K/4``, ``K/2`` and ``2K`` steps (transfer from shorter and longer horizons: a gradient that vanishes
        over ``K`` steps of a contraction does not vanish over fewer), with exact (unrolled) gradients."""
        from ..attacks import TransferAttack, apgd_ce

        steps = 100 if preset == "full" else 20
        out = {}
        for k in sorted({max(1, self.steps // 4), max(1, self.steps // 2), 2 * self.steps}):
            source = apgd_ce(self.truncated(k), eps, norm=norm, steps=steps, seed=seed)
            out[f"transfer_horizon_{k}"] = TransferAttack(self, source)
        return out


class TruncatedHorizon(nn.Module):
    """A :class:`HorizonClassifier` read after another number of steps (shares its weights; exact gradient)."""

    def __init__(self, model: HorizonClassifier, steps: int) -> None:
        super().__init__()
        self.model = model
        self.k = check_int(steps, "steps", "HorizonClassifier.truncated", minimum=1)

    def forward(self, x: Tensor) -> Tensor:
        m = self.model
        grad, m.grad = m.grad, "unroll"
        try:
            return m.head(m.run(m.inject(x), self.k)[-1])
        finally:
            m.grad = grad
