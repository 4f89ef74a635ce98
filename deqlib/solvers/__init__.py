"""Fixed-point solvers with one signature: ``solver(f, z0, *, max_iter, tol, stop_mode, record) -> (z, info)``."""

from .anderson import anderson
from .broyden import broyden
from .fixed_point import damped_steps, fixed_point
from .info import DIVERGENCE_FACTOR, SolverDivergenceWarning, SolverInfo
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
    "SolverInfo",
    "SolverDivergenceWarning",
    "DIVERGENCE_FACTOR",
    "register_solver",
    "get_solver",
    "available_solvers",
    "solver_options",
    "check_solver_options",
]
