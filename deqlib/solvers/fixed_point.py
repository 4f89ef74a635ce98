"""Plain (optionally damped) fixed-point iteration, and k damped steps with the graph (:func:`damped_steps`)."""

from __future__ import annotations

from typing import Callable, Tuple

from torch import Tensor

from .._validate import check_fraction, check_int
from .info import SolverInfo, Tracker, check_common, flat_function


def fixed_point(
    f: Callable[[Tensor], Tensor],
    z0: Tensor,
    *,
    max_iter: int = 50,
    tol: float = 1e-4,
    stop_mode: str = "rel",
    record: bool = False,
    tau: float = 1.0,
) -> Tuple[Tensor, SolverInfo]:
    """Iterate z <- (1 - tau) z + tau f(z) until each sample's residual is below ``tol``.

    Args:
        f: maps a state of z0's shape (batch first) to a state of the same shape.
        z0: initial state, (N, ...).
        max_iter: most evaluations of f.
        tol: stopping tolerance on ||f(z) - z|| (``stop_mode="abs"``) or that divided by ||f(z)|| ("rel").
        stop_mode: "rel" or "abs".
        record: keep the trajectory of states in ``info.trajectory``.
        tau: damping, in (0, 1]; tau = 1 is the undamped iteration z <- f(z).

    Returns:
        (z, info): per sample the iterate with the lowest residual, and a :class:`SolverInfo`.

    Example:
        >>> import torch
        >>> z, info = fixed_point(lambda z: 0.5 * z + 1.0, torch.zeros(3, 2), tol=1e-8, stop_mode="abs")
        >>> torch.allclose(z, torch.full((3, 2), 2.0))
        True
    """
    check_common("fixed_point", z0, max_iter, tol, stop_mode, f=f, record=record)
    tau = check_fraction(tau, "tau", "fixed_point")
    g = flat_function("fixed_point", f, z0.shape)
    z = z0.reshape(z0.shape[0], -1)
    track = Tracker("fixed_point", z, tol, stop_mode, record, z0.shape, max_iter=max_iter)
    z_next = z
    for _ in range(max_iter):
        fz = g(z)
        if tau == 1.0:
            go_on = track.update(z, fz)
            z_next = fz
        else:
            diff = fz - z
            go_on = track.update(z, fz, diff)
            z_next = z + tau * diff
        if not go_on:
            break
        z = track.freeze(z_next)
    return track.finish(z_next)


def damped_steps(f: Callable[[Tensor], Tensor], z: Tensor, steps: int, tau: float = 1.0) -> Tensor:
    """``steps`` damped steps z <- (1 - tau) z + tau f(z) from ``z``, recorded by autograd when it is on.

    This is the one "k damped steps from a state" of deqlib: the phantom gradient of :class:`~deqlib.deq.DEQ`
    (``phantom_steps``, ``phantom_tau``), the readout of the random-depth model and the unroll of the
    intermediate-state attack all call it. No stopping test, no bookkeeping: exactly ``steps`` evaluations of f.

    Args:
        f: maps a state to a state of the same shape.
        z: the state to start from.
        steps: number of steps, >= 0 (0 returns ``z``).
        tau: damping in (0, 1]; 1 is the plain step z <- f(z).

    Example:
        >>> import torch
        >>> damped_steps(lambda z: 0.5 * z + 1.0, torch.zeros(1), steps=2, tau=1.0)
        tensor([1.5000])
    """
    steps = check_int(steps, "steps", "damped_steps", minimum=0)
    tau = check_fraction(tau, "tau", "damped_steps")
    for _ in range(steps):
        fz = f(z)
        z = fz if tau == 1.0 else z + tau * (fz - z)
    return z
