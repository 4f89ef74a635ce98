"""A registry of solvers by name, so that ``DEQ(solver="anderson")`` and user solvers both work."""

from __future__ import annotations

import inspect
from typing import Callable, Dict, Optional, Tuple

from .anderson import anderson
from .broyden import broyden
from .fixed_point import fixed_point

SolverFn = Callable[..., Tuple[object, object]]

_REQUIRED = ("max_iter", "tol", "stop_mode", "record")
_SOLVERS: Dict[str, SolverFn] = {}


def register_solver(name: str, fn: Optional[SolverFn] = None, *, overwrite: bool = False):
    """Register ``fn`` under ``name`` (usable as a decorator).

    A solver has the signature ``fn(f, z0, *, max_iter, tol, stop_mode, record, **its_options) -> (z, info)``
    where ``info`` is a :class:`~deqlib.solvers.SolverInfo`.

    Example:
        >>> @register_solver("my_fp")
        ... def my_fp(f, z0, *, max_iter=50, tol=1e-4, stop_mode="rel", record=False):
        ...     return fixed_point(f, z0, max_iter=max_iter, tol=tol, stop_mode=stop_mode, record=record)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"solver name must be a non-empty string, got {name!r}")

    def add(func: SolverFn) -> SolverFn:
        if not callable(func):
            raise TypeError(f"solver {name!r} must be callable")
        params = inspect.signature(func).parameters
        missing = [p for p in _REQUIRED if p not in params]
        if missing:
            raise TypeError(
                f"solver {name!r} lacks the keyword arguments {missing}: see deqlib.solvers.register_solver"
            )
        if name in _SOLVERS and not overwrite and _SOLVERS[name] is not func:
            raise ValueError(f"a solver named {name!r} is already registered (pass overwrite=True to replace it)")
        _SOLVERS[name] = func
        return func

    return add if fn is None else add(fn)


def get_solver(name_or_fn: str | SolverFn) -> SolverFn:
    """The solver registered as ``name_or_fn``, or the callable itself."""
    if callable(name_or_fn):
        return name_or_fn
    if name_or_fn not in _SOLVERS:
        raise ValueError(f"unknown solver {name_or_fn!r}; available: {', '.join(sorted(_SOLVERS))}")
    return _SOLVERS[name_or_fn]


def available_solvers() -> Tuple[str, ...]:
    """Names of the registered solvers."""
    return tuple(sorted(_SOLVERS))


def solver_options(name_or_fn: str | SolverFn) -> Tuple[str, ...]:
    """The keyword options a solver accepts (beyond f and z0)."""
    params = inspect.signature(get_solver(name_or_fn)).parameters
    return tuple(p for p, v in params.items() if v.kind == inspect.Parameter.KEYWORD_ONLY)


def check_solver_options(name_or_fn: str | SolverFn, options: Dict[str, object]) -> None:
    """Raise TypeError naming any option the solver does not accept."""
    known = solver_options(name_or_fn)
    unknown = sorted(set(options) - set(known))
    if unknown:
        label = name_or_fn if isinstance(name_or_fn, str) else getattr(name_or_fn, "__name__", "solver")
        raise TypeError(f"unknown option(s) {unknown} for solver {label!r}; it accepts {list(known)}")


register_solver("fixed_point", fixed_point)
register_solver("anderson", anderson)
register_solver("broyden", broyden)
