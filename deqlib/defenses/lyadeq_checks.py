"""Measurements of a LyaDEQ: how far apart its equilibria are, and whether its Lyapunov certificate holds.

Taught in chapter 6 (not yet written). Background and measured numbers:
``experiments/results/lyadeq_reconstruction.md``.

API:
    * :func:`fixed_point_spread` — the mean pairwise distance of the equilibria, with and without the projection
      (the origin variant's collapse).
    * :func:`certificate_check` — ``W_{k+1} <= (1 - α h) W_k`` on the iterates the model's solver computes, beside
      the same check on the nominal (unprojected) map as a control.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import torch
from torch import Tensor, nn

from .._validate import check_choice, check_int, check_positive, check_tensor
from ..deq import DEQ
from ..solvers import get_solver
from .lyadeq import LyapunovStableCell

__all__ = ["fixed_point_spread", "certificate_check", "SOURCES"]

#: Where :func:`certificate_check` takes its states: the model's own solver (default), or plain iterations of the cell.
SOURCES = ("solver", "dynamics")


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


def _solver_label(deq: DEQ) -> str:
    return deq.solver if isinstance(deq.solver, str) else getattr(deq.solver, "__name__", "solver")


def _map_name(deq: DEQ, cell: LyapunovStableCell, source: str, steps: int, projected: bool) -> str:
    """Words for the map whose states are checked (the report's ``"map"``)."""
    if projected:
        what = f"the projected cell z <- z + h·F̂(z, u), h = {cell.h:g}"
    elif cell.h == 1.0:
        what = "the nominal cell z <- f(z, u) (no projection)"
    else:
        what = f"the nominal cell z <- z + h·(f(z, u) - z), h = {cell.h:g} (no projection)"
    if source == "solver":
        return (
            f"{_solver_label(deq)} iterates of {what} (the model's solver: max_iter {steps}, tol {deq.tol:g}, "
            f"stop_mode {deq.stop_mode}; a sample's steps end where it stopped)"
        )
    return f"{steps} plain iterations of {what} from z0, no stopping (forward Euler of dz/dt = F̂ or F)"


def _run(deq: DEQ, step: Callable[[Tensor], Tensor], z0: Tensor, steps: int, source: str):
    """``(states (K+1, N, *state), counted (K, N) bool, converged (N,) bool or None)`` of one map.

    ``counted[k, n]``: the step k -> k+1 of sample n was computed. The solver freezes a sample once it stopped
    (converged or diverged) and its trajectory then repeats the result: those entries are not steps of the map.
    """
    if source == "dynamics":
        traj = [z0]
        for _ in range(steps):
            traj.append(step(traj[-1]))
        states = torch.stack(traj)
        return states, torch.ones(states.shape[:2], dtype=torch.bool)[1:], None
    opts = {"tol": deq.tol, "stop_mode": deq.stop_mode, **deq.solver_options, "max_iter": steps}
    _, info = get_solver(deq.solver)(step, z0, record=True, **opts)
    states = info.trajectory
    k = states.shape[0] - 1
    target = torch.arange(1, k + 1, device=states.device).unsqueeze(1)  # the state each step arrives at
    taken = info.steps.to(states.device)  # evaluations made while active: states 0 .. taken-1 are iterates
    running = ~info.converged & ~info.diverged & (taken == k)  # still iterating at the end: the last state is new
    counted = (target < taken) | ((target == k) & running.to(states.device))
    return states, counted, info.converged.clone()


def _decrease(values: Tensor, counted: Tensor, factor: float, rtol: float, atol: float) -> dict:
    """``W_{k+1} <= factor · W_k`` on the counted steps, with the tolerance of ``lyapunov_decrease``."""
    prev, nxt = values[:-1], values[1:]
    excess = nxt - factor * prev
    violated = ~(excess <= rtol * prev.abs() + atol) & counted  # NaN / inf: a violation
    n = int(counted.sum())
    return {
        "violations": int(violated.sum()),
        "steps": n,
        "rate": int(violated.sum()) / n if n else 0.0,
        "max_excess": float(excess[counted].max()) if n else float("nan"),
        "per_step": [int(c) for c in violated.sum(dim=1)],
    }


def _active_fraction(cell: LyapunovStableCell, states: Tensor, counted: Tensor, u: Tensor) -> float:
    """The fraction of counted steps taken from a state where the projection changes ``F`` (0: it never acted)."""
    n = int(counted.sum())
    if n == 0:
        return 0.0
    active = torch.stack([cell.field(s, u)["active"] for s in states[:-1].unbind(0)])
    return float((active & counted).sum()) / n


# size: most of it is the docstring (what is checked, the control, the discrete-time caveat, the report's fields)
def certificate_check(
    model: nn.Module,
    x: Tensor,
    *,
    steps: Optional[int] = None,
    alpha: Optional[float] = None,
    source: str = "solver",
    z0: Optional[Tensor] = None,
    rtol: float = 1e-6,
    atol: Optional[float] = None,
) -> dict:
    """Check the discrete Lyapunov decrease ``W(z_{k+1}) <= (1 - α h) W(z_k)`` on the iterates the model computes.

    ``W`` is the cell's certified quantity (``V(z)`` for ``center="origin"``, ``V(f(z, u) - z)`` for
    ``"residual"``). The states are, with ``source="solver"`` (default), the iterates of the model's OWN solver
    (its name, ``tol``, ``stop_mode`` and options; ``steps`` is its ``max_iter``, default the DEQ's), each sample's
    steps ending where the solver stopped it; with ``source="dynamics"``, ``steps`` plain iterations of the cell
    ``z <- z + h F̂(z, u)`` (the forward-Euler discretisation of ``ż = F̂``; the map a ``"fixed_point"`` solver
    iterates, not the map Anderson or Broyden iterate).

    The NOMINAL CONTROL is always reported beside it: the same check, same states' source, same ``W``, on the map
    without the projection (:meth:`~deqlib.defenses.LyapunovStableCell.nominal_step`, ``z <- z + h (f(z, u) - z)``).
    A certificate means something only where the control violates and the projected map does not: equal numbers
    say that the projection did not act (see ``projection_active``) or that the nominal map already decreases ``W``.

    The guarantee ``dW/dt <= -α W`` is for CONTINUOUS time: the discrete check can legitimately fail for large ``h``
    (an ``O(h²)`` Euler error against an ``O(α h)`` margin; where the projection acts, ``W`` shrinks by about
    ``exp(-α h) > 1 - α h``: pass a smaller ``alpha`` to ask for less), for solver iterates that are not Euler steps
    (Anderson, Broyden), and for the origin variant, whose iterates chatter around the discontinuity of ``F̂`` at 0.

    Args:
        model: a :class:`~deqlib.defenses.LyaDEQClassifier`, a DEQ classifier or a ``DEQ`` whose cell is a
            :class:`~deqlib.defenses.LyapunovStableCell`.
        x: images (classifier) or injections (bare ``DEQ``).
        steps: ``K >= 1``, the solver's ``max_iter`` or the number of iterations (default: the DEQ's ``max_iter``).
        alpha: rate to check (default: the cell's α); ``alpha * h <= 1``.
        source: ``"solver"`` or ``"dynamics"`` (:data:`SOURCES`).
        z0: initial state (default: the DEQ's, zeros).
        rtol: relative tolerance, as in :func:`~deqlib.lyapunov.lyapunov_decrease` (float rounding).
        atol: absolute tolerance; default ``eps(dtype) * max W`` over both maps' states, the level below which ``W``
            is rounding noise.

    Returns:
        ``{"map", "source", "solver", "violations", "steps", "rate", "max_excess", "per_step", "V_initial",
        "V_final", "converged", "projection_active", "nominal", "alpha", "dt", "factor", "max_iter", "center",
        "rtol", "atol"}``: ``map`` says in words which map was certified; ``steps`` the number of (step, sample)
        pairs checked (only the steps the map took), ``rate = violations / steps``, ``max_excess`` the largest
        ``W_{k+1} - factor·W_k``, ``per_step[k]`` the violating samples at step ``k -> k+1``; ``V_initial`` /
        ``V_final`` the batch means of ``W`` at the first and last state; ``converged`` the fraction of samples the
        solver converged (``None`` for ``"dynamics"``); ``projection_active`` the fraction of checked steps taken
        from a state where the projection changes ``F``. ``nominal``: the same fields for the control map
        (without ``projection_active``). ``factor = 1 - alpha·dt``, ``dt = h``.

    Raises:
        TypeError: if the model's cell is not a :class:`~deqlib.defenses.LyapunovStableCell`, or a setting of the
            wrong type. ValueError: bad ``steps``, ``source``, ``alpha``, ``alpha * h > 1``, or ``z0`` of another shape.

    Example:
        >>> from deqlib.cells import MLPCell
        >>> from deqlib.lyapunov import LyapunovFunction
        >>> _ = torch.manual_seed(0)
        >>> cell = LyapunovStableCell(MLPCell(4, activation="tanh", norm=False), LyapunovFunction(4, hidden=(8,)),
        ...                           alpha=3.0, h=0.1)
        >>> report = certificate_check(DEQ(cell, solver="fixed_point", max_iter=20), torch.randn(8, 4), alpha=1.5)
        >>> report["source"], report["violations"] < report["nominal"]["violations"]
        ('solver', True)
    """
    where = "certificate_check"
    deq, u = _deq_and_injection(model, x, where)
    cell = deq.cell
    if not isinstance(cell, LyapunovStableCell):
        raise TypeError(f"{where} needs a LyapunovStableCell in the DEQ, got {type(cell).__name__}")
    steps = deq.max_iter if steps is None else check_int(steps, "steps", where, minimum=1)
    source = check_choice(source, "source", where, SOURCES)
    a = cell.alpha if alpha is None else check_positive(alpha, "alpha", where)
    if a * cell.h > 1:
        raise ValueError(f"{where}: alpha * h must be <= 1 for the discrete check, got {a} * {cell.h}")
    start = deq.initial_state(u)
    if z0 is not None:
        check_tensor(z0, "z0", where, floating=True, finite=True)
        if z0.shape != start.shape:
            raise ValueError(f"{where}: z0 has shape {tuple(z0.shape)}, the state has shape {tuple(start.shape)}")
        start = z0.detach().to(start.dtype)
    maps = {"projected": lambda s: cell(s, u), "nominal": lambda s: cell.nominal_step(s, u)}
    runs, values = {}, {}
    with torch.no_grad():
        for name, step in maps.items():
            runs[name] = _run(deq, step, start, steps, source)
            values[name] = torch.stack([cell.lyapunov_value(s, u) for s in runs[name][0].unbind(0)]).double()
        active = _active_fraction(cell, runs["projected"][0], runs["projected"][1], u)
    if atol is None:
        every = torch.cat([v.flatten() for v in values.values()])
        finite = every[torch.isfinite(every)]
        atol = float(torch.finfo(start.dtype).eps) * (float(finite.max()) if finite.numel() else 0.0)
    factor = 1.0 - a * cell.h
    parts = {}
    for name in maps:
        states, counted, converged = runs[name]
        parts[name] = {
            "map": _map_name(deq, cell, source, steps, projected=name == "projected"),
            **_decrease(values[name], counted.to(values[name].device), factor, rtol, atol),
            "V_initial": float(values[name][0].mean()),
            "V_final": float(values[name][-1].mean()),
            "converged": None if converged is None else float(converged.float().mean()),
        }
    report = {"source": source, "solver": _solver_label(deq) if source == "solver" else None, **parts["projected"]}
    report.update(projection_active=active, nominal=parts["nominal"], alpha=a, dt=cell.h, factor=factor)
    report.update(max_iter=steps, center=cell.center, rtol=rtol, atol=atol)
    return report
