"""Measurements of a LyaDEQ: how far apart its equilibria are, and whether its Lyapunov certificate holds.

Taught in chapter 6 (not yet written). Background and measured numbers:
``experiments/results/lyadeq_reconstruction.md``.

API:
    * :func:`fixed_point_spread` — the mean pairwise distance of the equilibria, with and without the projection
      (the origin variant's collapse).
    * :func:`certificate_check` — ``W_{k+1} <= (1 - α h) W_k`` along the model's discrete trajectory.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import Tensor, nn

from .._validate import check_choice, check_int, check_positive
from ..deq import DEQ
from ..lyapunov import lyapunov_decrease
from ..solvers import get_solver
from .lyadeq import LyapunovStableCell

__all__ = ["fixed_point_spread", "certificate_check", "SOURCES"]

#: Where :func:`certificate_check` takes its states: the stabilised cell's own iteration, or the model's solver.
SOURCES = ("dynamics", "solver")


def _deq_and_injection(model: nn.Module, x: Tensor, where: str) -> Tuple[DEQ, Tensor]:
    """``(deq, u)``: a DEQ classifier's DEQ and injection of images x, or a bare DEQ and x itself."""
    if isinstance(model, DEQ):
        return model, x
    deq = getattr(model, "deq", None)
    if not isinstance(deq, DEQ) or not callable(getattr(model, "inject", None)):
        raise TypeError(
            f"{where}: model must be a DEQ classifier (with .deq and .inject) or a DEQ, got {type(model).__name__}"
        )
    with torch.no_grad():
        return deq, model.inject(x)


def _mean_pairwise_distance(z: Tensor) -> float:
    flat = z.reshape(z.shape[0], -1).to(torch.float64)
    return float(torch.pdist(flat).mean())


def fixed_point_spread(model: nn.Module, x: Tensor, **solver_overrides: Any) -> dict:
    """How far apart the equilibria of different inputs are, with and without the Lyapunov projection.

    Solves the model's DEQ for the inputs ``x`` (a batch of at least two), and the same DEQ with the NOMINAL cell
    (the projection removed; same solver and settings), and reports the mean pairwise Euclidean distance of the
    flattened ``z*``. With ``center="origin"`` the projected equilibria collapse towards ``V``'s minimiser ``0``:
    ``ratio`` ≪ 1. With ``center="residual"`` the equilibria are the nominal ones: ``ratio`` ≈ 1.

    Args:
        model: a :class:`~deqlib.defenses.LyaDEQClassifier` (or any DEQ classifier / ``DEQ`` whose cell is a
            :class:`~deqlib.defenses.LyapunovStableCell`; with another cell both measurements coincide).
        x: images for a classifier, injections for a bare ``DEQ``; ``N >= 2``.
        **solver_overrides: replace solver settings for both solves (e.g. ``max_iter=200``).

    Returns:
        ``{"spread", "spread_nominal", "ratio", "norm", "norm_nominal", "converged", "converged_nominal"}``:
        mean pairwise distances, ``ratio = spread / spread_nominal``, mean ``||z*||`` (the distance to the origin
        variant's collapse point), and the fraction of samples whose solve converged.
    """
    deq, u = _deq_and_injection(model, x, "fixed_point_spread")
    if u.shape[0] < 2:
        raise ValueError(f"fixed_point_spread needs at least two inputs, got {u.shape[0]}")
    cell = deq.cell
    nominal = cell.cell if isinstance(cell, LyapunovStableCell) else cell
    opts = {"max_iter": deq.max_iter, "tol": deq.tol, "stop_mode": deq.stop_mode, **deq.solver_options}
    opts.update(solver_overrides)
    solver = get_solver(deq.solver)
    z0 = deq.initial_state(u)
    with torch.no_grad():
        z, info = solver(lambda s: cell(s, u), z0, record=False, **opts)
        zn, info_n = solver(lambda s: nominal(s, u), z0, record=False, **opts)
    spread, spread_n = _mean_pairwise_distance(z), _mean_pairwise_distance(zn)
    n = u.shape[0]
    return {
        "spread": spread,
        "spread_nominal": spread_n,
        "ratio": spread / spread_n if spread_n > 0 else float("nan"),
        "norm": float(z.reshape(n, -1).norm(dim=1).mean()),
        "norm_nominal": float(zn.reshape(n, -1).norm(dim=1).mean()),
        "converged": float(info.converged.float().mean()),
        "converged_nominal": float(info_n.converged.float().mean()),
    }


def _certified_trajectory(
    deq: DEQ, cell: LyapunovStableCell, u: Tensor, steps: int, source: str, z0: Optional[Tensor]
) -> Tuple[Tensor, Tensor]:
    """The states (K+1, N, *state) from ``source`` and the certified quantity W on each, (K+1, N) in float64."""
    with torch.no_grad():
        if source == "dynamics":
            z = deq.initial_state(u) if z0 is None else z0.detach()
            traj = [z]
            for _ in range(steps):
                z = cell(z, u)
                traj.append(z)
            states = torch.stack(traj)
        else:
            _, info = deq.solve(u, z0, record=True, max_iter=steps)
            states = info.trajectory
        values = torch.stack([cell.lyapunov_value(s, u) for s in states.unbind(0)]).to(torch.float64)
    return states, values


# size: most of it is the docstring (what is checked, the continuous-time caveat, the report's fields)
def certificate_check(
    model: nn.Module,
    x: Tensor,
    *,
    steps: int = 20,
    alpha: Optional[float] = None,
    source: str = "dynamics",
    z0: Optional[Tensor] = None,
    rtol: float = 1e-6,
    atol: Optional[float] = None,
) -> dict:
    """Check the Lyapunov certificate along the model's discrete trajectory: ``W_{k+1} <= (1 - α h) W_k``.

    ``W`` is the cell's certified quantity (``V(z)`` for ``center="origin"``, ``V(f(z, u) - z)`` for
    ``"residual"``), evaluated along ``source="dynamics"`` (default): ``steps`` iterations of the stabilised cell
    ``z <- z + h F̂(z, u)`` from the DEQ's initial state (or ``z0``), i.e. the forward-Euler discretisation of
    ``ż = F̂`` with ``dt = h``; or ``source="solver"``: the states the model's own solver visits (``steps`` is its
    ``max_iter``; Anderson or Broyden states are not a trajectory of the dynamics and the certificate makes no
    promise about them). Checked with :func:`deqlib.lyapunov.lyapunov_decrease` at ``dt = h``.

    The guarantee ``dW/dt <= -α W`` is for CONTINUOUS time: the discrete check can legitimately fail for large ``h``
    (an ``O(h²)`` Euler error against an ``O(α h)`` margin), and for the origin variant, whose iterates chatter around
    the discontinuity of ``F̂`` at 0. Small ``h`` should pass.

    Args:
        model: a :class:`~deqlib.defenses.LyaDEQClassifier`, a DEQ classifier or a ``DEQ`` whose cell is a
            :class:`~deqlib.defenses.LyapunovStableCell`.
        x: images (classifier) or injections (bare ``DEQ``).
        steps: number of steps ``K >= 1``.
        alpha: rate to check (default: the cell's α); ``alpha * h <= 1``.
        source: ``"dynamics"`` or ``"solver"``.
        z0: initial state (default: the DEQ's, zeros).
        rtol: relative tolerance of :func:`~deqlib.lyapunov.lyapunov_decrease` (float rounding).
        atol: absolute tolerance; default ``eps(dtype) * max W`` over the trajectory, the level below which ``W``
            is rounding noise (a converged trajectory stalls there).

    Returns:
        ``{"violations", "steps", "rate", "max_excess", "per_step", "alpha", "dt", "center", "source", "rtol",
        "atol", "V_initial", "V_final"}``: the first five from :func:`~deqlib.lyapunov.lyapunov_decrease`
        (``rate`` = violations / steps in [0, 1], ``steps`` = K·N (step, sample) pairs), the settings used, and the
        batch means of ``W`` at the first and last state.

    Raises:
        TypeError: if the model's cell is not a :class:`~deqlib.defenses.LyapunovStableCell`, or a setting of the
            wrong type. ValueError: bad ``steps``, ``source``, ``alpha`` or ``alpha * h > 1``.
    """
    where = "certificate_check"
    deq, u = _deq_and_injection(model, x, where)
    cell = deq.cell
    if not isinstance(cell, LyapunovStableCell):
        raise TypeError(f"{where} needs a LyapunovStableCell in the DEQ, got {type(cell).__name__}")
    steps = check_int(steps, "steps", where, minimum=1)
    source = check_choice(source, "source", where, SOURCES)
    a = cell.alpha if alpha is None else check_positive(alpha, "alpha", where)
    dt = cell.h
    if a * dt > 1:
        raise ValueError(f"{where}: alpha * h must be <= 1 for the discrete check, got {a} * {dt}")
    states, values = _certified_trajectory(deq, cell, u, steps, source, z0)
    if atol is None:
        vmax = float(values[torch.isfinite(values)].max()) if bool(torch.isfinite(values).any()) else 0.0
        atol = float(torch.finfo(states.dtype).eps) * vmax
    # lyapunov_decrease evaluates V_fn on the states in order: hand it the values computed above.
    cached = iter(values.unbind(0))
    report = lyapunov_decrease(lambda s: next(cached), states, a, dt, rtol=rtol, atol=atol)
    report.update(
        alpha=a,
        dt=dt,
        center=cell.center,
        source=source,
        rtol=rtol,
        atol=atol,
        V_initial=float(values[0].mean()),
        V_final=float(values[-1].mean()),
    )
    return report
