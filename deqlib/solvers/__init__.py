"""Fixed-point solvers with one signature: ``solver(f, z0, *, max_iter, tol, stop_mode, record) -> (z, info)``."""

from .anderson import anderson
from .broyden import broyden
from .continued import ContinuedBroyden
from .convergence import (
    ConvergenceCounts,
    SolverConvergenceWarning,
    convergence_warnings_quiet,
    quiet_convergence,
    warn_counts,
    warn_not_converged,
)
from .fixed_point import damped_steps, fixed_point
from .info import DIVERGENCE_FACTOR, SolverDivergenceWarning, SolverInfo, traces_kept, without_traces
from .registry import (
    available_solvers,
    check_solver_options,
    get_solver,
    register_solver,
    solver_options,
)

__all__ = [
    "fixed_point",
    "damped_steps",
    "anderson",
    "broyden",
    "ContinuedBroyden",
    "SolverInfo",
    "SolverDivergenceWarning",
    "SolverConvergenceWarning",
    "quiet_convergence",
    "convergence_warnings_quiet",
    "ConvergenceCounts",
    "warn_not_converged",
    "warn_counts",
    "DIVERGENCE_FACTOR",
    "without_traces",
    "traces_kept",
    "register_solver",
    "get_solver",
    "available_solvers",
    "solver_options",
    "check_solver_options",
]
