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
    if not isinstance(name, str):
        raise TypeError(f"register_solver: name must be a non-empty str, got {type(name).__name__} {name!r}")
    if not name:
        raise ValueError("register_solver: name must be a non-empty str, got ''")

    def add(func: SolverFn) -> SolverFn:
        if not callable(func):
            raise TypeError(f"register_solver: solver {name!r} must be callable, got {type(func).__name__}")
        check_signature(func, "register_solver", name)
        if name in _SOLVERS and not overwrite and _SOLVERS[name] is not func:
            raise ValueError(f"a solver named {name!r} is already registered (pass overwrite=True to replace it)")
        _SOLVERS[name] = func
        return func

    return add if fn is None else add(fn)


def check_signature(func: SolverFn, where: str, label: Optional[str] = None) -> SolverFn:
    """Raise TypeError unless ``func`` takes the keyword arguments every solver is called with.

    (A solver whose signature Python cannot inspect, e.g. some C functions, is accepted as it is.)
    """
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return func
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return func
    missing = [p for p in _REQUIRED if p not in params]
    if missing:
        label = label or getattr(func, "__name__", type(func).__name__)
        raise TypeError(
            f"{where}: solver {label!r} lacks the keyword arguments {missing}: a solver is called as "
            "solver(f, z0, *, max_iter, tol, stop_mode, record) and returns (z, info) (see "
            "deqlib.solvers.register_solver)"
        )
    return func


def get_solver(name_or_fn: str | SolverFn) -> SolverFn:
    """The solver registered as ``name_or_fn``, or the callable itself (its signature checked).

    Raises:
        TypeError: neither a name nor a callable, or a callable without the solver's keyword arguments.
        ValueError: an unknown name.
    """
    if callable(name_or_fn):
        return check_signature(name_or_fn, "get_solver")
    if not isinstance(name_or_fn, str):
        raise TypeError(
            f"get_solver: solver must be a registered name ({', '.join(sorted(_SOLVERS))}) or a solver callable, "
            f"got {type(name_or_fn).__name__} {name_or_fn!r}"
        )
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
