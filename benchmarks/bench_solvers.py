"""Solver speed: deqlib against torchdeq 0.1.0, and deqlib's own solver overhead.

What "reaching the tolerance" means, for each library (both in ``stop_mode="rel"`` with the same ``tol``):

* deqlib: after each evaluation f(z), each sample's relative residual ||f(z) - z|| / (||f(z)|| + 1e-8) is compared
  with ``tol``; a sample below it stops (it is frozen and its later evaluations are ignored); the solver returns
  when every sample has stopped, and gives per sample the evaluated iterate z with the lowest residual.
* torchdeq: after each evaluation it computes the same relative residual (with 1e-9 instead of 1e-8) per sample
  and stops when the batch maximum is below ``tol`` at one evaluation; it returns per sample the lowest-residual
  evaluation (``fixed_point_iter`` and ``anderson_solver`` return f(z) of it, ``broyden_solver`` returns z).
  Its Anderson does not test the residual of its first two evaluations, and its Broyden keeps going on the
  whole batch (no per-sample freezing).

For a monotone solver the two criteria stop at the same evaluation (the batch is done when its slowest sample
is); deqlib's per-sample freezing changes nothing for the other samples. Both are run with the same
``max_iter``, the same zero initial state, the same f (the cell with the injection precomputed) under
``torch.no_grad()``. The options that both have are set equal: Anderson history m = 5 and mixing 1, Broyden
with the whole history (torchdeq's default ``LBFGS_thres = max_iter``; deqlib ``memory = max_iter``), no line
search. Anderson's regularisation differs by definition and is left at each library's default: deqlib
lam = 1e-4 relative to the mean squared residual, torchdeq lam = 1e-4 absolute (near convergence the absolute
one dominates the tiny Gram matrix and slows torchdeq's Anderson down: see the nfev columns).

The number of f evaluations (nfev) is counted by the same wrapper for both; the ratio of times is reported
both as is and per evaluation (which isolates the per-step overhead from the number of steps).

Correctness guard (before timing): a float64 reference fixed point z_ref is computed with a tight tolerance;
each library's result must be within ``GUARD_FACTOR * tol`` of it in per-sample relative norm
(||z - z_ref|| / ||z_ref||; a contraction of rate L gives at most tol / (1 - L)), and every sample must have
reached the tolerance. A failure raises before anything is timed.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Dict, List, Tuple

import torch
from torch import Tensor

from deqlib.solvers import anderson, broyden, fixed_point

from .common import log, median, time_per_call, timed
from .problems import CELLS, Problem, counting, problem

TOL = 1e-4
MAX_ITER = 50
GUARD_FACTOR = 20.0
MAX_REPEATS = 41
TARGET_S = 1.0
SOLVERS = ("fixed_point", "anderson", "broyden")
BATCHES = (1, 64, 256)

#: The torchdeq counterpart of each deqlib solver and the options given to both.
SETTINGS: Dict[str, Dict[str, Any]] = {
    "fixed_point": {"deqlib": {}, "torchdeq_name": "fixed_point_iter", "torchdeq": {}},
    "anderson": {"deqlib": {"m": 5, "beta": 1.0}, "torchdeq_name": "anderson", "torchdeq": {"m": 5, "tau": 1.0}},
    "broyden": {"deqlib": {"memory": MAX_ITER}, "torchdeq_name": "broyden", "torchdeq": {"ls": False}},
}

DEQLIB = {"fixed_point": fixed_point, "anderson": anderson, "broyden": broyden}


def deqlib_solve(solver: str, f: Callable[[Tensor], Tensor], z0: Tensor, **extra: Any) -> Tuple[Tensor, Any]:
    with torch.no_grad():
        return DEQLIB[solver](f, z0, max_iter=MAX_ITER, tol=TOL, stop_mode="rel", **SETTINGS[solver]["deqlib"], **extra)


def torchdeq_solve(solver: str, f: Callable[[Tensor], Tensor], z0: Tensor) -> Tuple[Tensor, Any]:
    from torchdeq.solver import get_solver

    fn = get_solver(SETTINGS[solver]["torchdeq_name"])
    with torch.no_grad():
        z, _, info = fn(f, z0, max_iter=MAX_ITER, tol=TOL, stop_mode="rel", **SETTINGS[solver]["torchdeq"])
    return z, info


def bare_loop(f: Callable[[Tensor], Tensor], z0: Tensor) -> Tuple[Tensor, int]:
    """The least a monitored fixed-point iteration can do: f, the batch's relative residuals, one sync per step.

    Its overhead over nfev x t_f is the price of checking convergence at all (the residual norms), which every
    solver pays; a solver's overhead above it is its own bookkeeping.
    """
    z = z0.flatten(1)
    with torch.no_grad():
        for k in range(MAX_ITER):
            fz = f(z.view_as(z0)).flatten(1)
            d = fz - z
            r = d.norm(dim=1) / (fz.norm(dim=1) + 1e-8)
            z = fz
            if float(r.max()) < TOL:
                break
    return z.view_as(z0), k + 1


def reference_fixed_point(p: Problem) -> Tensor:
    """The fixed point in float64 to a tight tolerance (plain iteration, many steps)."""
    cell64 = copy.deepcopy(p.model.deq.cell).double()
    u64 = p.u.double()
    with torch.no_grad():
        z, info = fixed_point(lambda z: cell64(z, u64), p.z0.double(), max_iter=3000, tol=1e-11, stop_mode="rel")
    if not bool(info.converged.all()):
        raise AssertionError(f"reference solve of {p.name} did not converge: {info.summary()}")
    return z.float()


def rel_err(z: Tensor, ref: Tensor) -> Tensor:
    return (z - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1).clamp_min(1e-30)


def true_rel_residual(f: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    with torch.no_grad():
        fz = f(z)
    return (fz - z).flatten(1).norm(dim=1) / (fz.flatten(1).norm(dim=1) + 1e-8)


def guard(p: Problem, solver: str, z_ref: Tensor) -> Dict[str, Any]:
    """Run both libraries once (untimed, also a warm-up) and check they reach the same fixed point."""
    g, calls = counting(p.f)
    t_d, (z_d, info_d) = timed(lambda: deqlib_solve(solver, g, p.z0))
    nfev_d = calls[0]
    g, calls = counting(p.f)
    t_t, (z_t, info_t) = timed(lambda: torchdeq_solve(solver, g, p.z0))
    nfev_t = calls[0]
    err_d = rel_err(z_d, z_ref)
    err_t = rel_err(z_t, z_ref)
    diff = rel_err(z_d, z_t)
    res_d = true_rel_residual(p.f, z_d)
    res_t = true_rel_residual(p.f, z_t)
    td_reached = bool((info_t["rel_lowest"] < TOL).all())
    bound = GUARD_FACTOR * TOL
    out = {
        "deqlib_nfev": nfev_d,
        "deqlib_info_nfev": info_d.nfev,
        "deqlib_steps_max": int(info_d.steps.max()),
        "deqlib_steps_mean": float(info_d.steps.float().mean()),
        "deqlib_all_converged": bool(info_d.converged.all()),
        "deqlib_rel_residual_max": float(res_d.max()),
        "torchdeq_nfev": nfev_t,
        "torchdeq_all_reached_tol": td_reached,
        "torchdeq_rel_lowest_max": float(info_t["rel_lowest"].max()),
        "torchdeq_rel_residual_of_returned_max": float(res_t.max()),
        "err_deqlib_vs_reference_max": float(err_d.max()),
        "err_torchdeq_vs_reference_max": float(err_t.max()),
        "diff_deqlib_vs_torchdeq_max": float(diff.max()),
        "bound": bound,
        "warmup_s": max(t_d, t_t),
    }
    out["passed"] = bool(
        out["deqlib_all_converged"]
        and td_reached
        and out["err_deqlib_vs_reference_max"] < bound
        and out["err_torchdeq_vs_reference_max"] < bound
        and out["diff_deqlib_vs_torchdeq_max"] < 2 * bound
    )
    if not out["passed"]:
        raise AssertionError(f"correctness guard failed for {p.name} batch {p.batch} {solver}: {out}")
    return out


def run(
    *, quick: bool = False, repeats: int = 5, batches: Tuple[int, ...] = BATCHES, cells: Tuple[str, ...] = CELLS
) -> Dict[str, Any]:
    """Time deqlib against torchdeq, interleaved, and return the JSON-ready results."""
    if quick:
        batches, repeats = (1, 16), 3
    cases: List[Dict[str, Any]] = []
    for cell in cells:
        for batch in batches:
            p = problem(cell, batch)
            z_ref = reference_fixed_point(p)
            with torch.no_grad():
                t_f_point = z_ref.clone()
            for solver in SOLVERS:
                g = guard(p, solver, z_ref)
                times: Dict[str, List[float]] = {"deqlib": [], "torchdeq": []}
                t_fs: List[float] = []
                # Cheap cases get more repeats (up to MAX_REPEATS, about TARGET_S seconds per library): their
                # medians are otherwise at the mercy of the machine's other processes.
                n_rep = max(repeats, min(MAX_REPEATS, int(TARGET_S / max(g["warmup_s"], 1e-4))))
                n_rep += 1 - n_rep % 2  # odd: the median is one of the measurements
                for rep in range(n_rep):
                    order = ("deqlib", "torchdeq") if rep % 2 == 0 else ("torchdeq", "deqlib")
                    for lib in order:
                        if lib == "deqlib":
                            t, _ = timed(lambda: deqlib_solve(solver, p.f, p.z0))
                        else:
                            t, _ = timed(lambda: torchdeq_solve(solver, p.f, p.z0))
                        times[lib].append(t)
                    if solver == "fixed_point":
                        t, (_, n_bare) = timed(lambda: bare_loop(p.f, p.z0))
                        times.setdefault("bare", []).append(t)
                    with torch.no_grad():
                        t_fs.append(time_per_call(lambda: p.f(t_f_point), min_seconds=0.02, max_calls=50))
                t_d, t_t, t_f = median(times["deqlib"]), median(times["torchdeq"]), median(t_fs)
                n_d, n_t = g["deqlib_nfev"], g["torchdeq_nfev"]
                case = {
                    "cell": cell,
                    "batch": batch,
                    "state_shape": list(p.state_shape),
                    "solver": solver,
                    "torchdeq_solver": SETTINGS[solver]["torchdeq_name"],
                    "repeats": n_rep,
                    "deqlib_times_s": times["deqlib"],
                    "torchdeq_times_s": times["torchdeq"],
                    "deqlib_median_s": t_d,
                    "torchdeq_median_s": t_t,
                    "deqlib_nfev": n_d,
                    "torchdeq_nfev": n_t,
                    "ratio": t_d / t_t,
                    "ratio_per_evaluation": (t_d / n_d) / (t_t / n_t),
                    "t_f_s": t_f,
                    "overhead_deqlib": t_d / (n_d * t_f),
                    "overhead_torchdeq": t_t / (n_t * t_f),
                    "guard": g,
                }
                if "bare" in times:
                    case["bare_loop_median_s"] = median(times["bare"])
                    case["bare_loop_nfev"] = n_bare
                    case["overhead_bare_loop"] = case["bare_loop_median_s"] / (n_bare * t_f)
                cases.append(case)
                log(
                    f"solvers {cell:6s} B={batch:<3d} {solver:11s} deqlib {t_d * 1e3:8.1f} ms ({n_d} f) torchdeq "
                    f"{t_t * 1e3:8.1f} ms ({n_t} f) ratio {case['ratio']:.2f} per-f {case['ratio_per_evaluation']:.2f} "
                    f"overhead {case['overhead_deqlib']:.2f}"
                )
    return {
        "settings": {
            "tol": TOL,
            "stop_mode": "rel",
            "max_iter": MAX_ITER,
            "repeats": f"at least {repeats} (odd), up to {MAX_REPEATS} for cheap cases (about {TARGET_S:g} s per library)",
            "batches": list(batches),
            "cells": list(cells),
            "solvers": {
                k: {"deqlib": v["deqlib"], "torchdeq": {"name": v["torchdeq_name"], **v["torchdeq"]}}
                for k, v in SETTINGS.items()
            },
            "guard_factor": GUARD_FACTOR,
            "timing": "median of the repeats; deqlib and torchdeq alternate within each repeat (order flipped every repeat)",
            "t_f": "seconds per f evaluation at the fixed point, median over the repeats (measured between the solves)",
        },
        "cases": cases,
    }


def geometric_mean(values: List[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")
