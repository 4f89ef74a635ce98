"""What a solver reports, and the per-sample bookkeeping every solver shares.

Each sample of a batch stops on its own: once its residual is below ``tol`` (or it diverged) it is frozen,
so a sample's result does not depend on the other samples in the batch. Each solver returns, per sample,
the iterate with the lowest residual it evaluated.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Tuple

import torch
from torch import Tensor

from .._validate import check_bool, check_callable, check_choice, check_int, check_positive, check_tensor
from .convergence import SolverConvergenceWarning, convergence_warnings_quiet

STOP_MODES = ("rel", "abs")
#: A sample whose absolute residual grows beyond this factor times its initial residual is declared diverged.
DIVERGENCE_FACTOR = 1e4
#: Added to ||f(z)|| in the relative residual ||f(z) - z|| / (||f(z)|| + REL_EPS).
REL_EPS = 1e-8


# A plain module-level depth (as for quiet_convergence): the adjoint solves of implicit gradients may run in
# autograd's threads, which must see the setting of the thread that called ``backward()``.
_NO_TRACES = [0]


@contextmanager
def without_traces() -> Iterator[None]:
    """Inside the block, the solvers keep no per-iteration residual trace (``info.trace`` is empty, (N, 0)).

    Re-entrant. Everything else of the report (steps, residuals, converged and diverged flags, warnings) is
    unchanged; ``record=True`` keeps the trace anyway. :class:`~deqlib.deq.DEQ` solves inside it unless built
    with ``record=True``: the trace is 4 bytes per sample and step that nothing reads there, and it is the only
    part of an implicit gradient's memory that grows with the number of iterations.

    Example:
        >>> import torch
        >>> from deqlib.solvers import fixed_point
        >>> with without_traces():
        ...     _, info = fixed_point(lambda z: 0.5 * z + 1.0, torch.zeros(3, 2), tol=1e-6, stop_mode="abs")
        >>> tuple(info.trace.shape), bool(info.converged.all())
        ((3, 0), True)
    """
    _NO_TRACES[0] += 1
    try:
        yield
    finally:
        _NO_TRACES[0] -= 1


def traces_kept() -> bool:
    """Whether a solve started now keeps its per-iteration trace (False inside :func:`~deqlib.solvers.without_traces`)."""
    return _NO_TRACES[0] == 0


class SolverDivergenceWarning(SolverConvergenceWarning):
    """Some samples produced non-finite values or a residual that blew up; their best iterate is returned.

    A special case of non-convergence: a filter on :class:`~deqlib.solvers.SolverConvergenceWarning` covers it, and
    it is not emitted inside :func:`~deqlib.solvers.quiet_convergence`.
    """


@dataclass
class SolverInfo:
    """Per-sample report of one solver call.

    Attributes:
        steps: (N,) int64, iterations (= f evaluations) the sample took before it stopped.
        abs_residual: (N,) ||f(z) - z|| of the returned z.
        rel_residual: (N,) ||f(z) - z|| / (||f(z)|| + 1e-8) of the returned z.
        converged: (N,) bool, residual (in ``stop_mode``) below ``tol``.
        diverged: (N,) bool, stopped because of non-finite values or a residual blow-up.
        trace: (N, K) residual (in ``stop_mode``) at each iteration; NaN after the sample stopped. Empty, (N, 0),
            for a solve made inside :func:`~deqlib.solvers.without_traces` (the forward and adjoint solves of a
            :class:`~deqlib.deq.DEQ` built without ``record=True``): nothing is kept per iteration then.
        nfev: number of calls of f on the whole batch.
        stop_mode, tol, solver: the settings of the call.
        trajectory: ``(K+1, N, *state)`` states z_0..z_K when ``record=True`` (a stopped sample repeats its result).
        max_iter: the iteration budget of the call (``None`` from a solver that does not say).
    """

    steps: Tensor
    abs_residual: Tensor
    rel_residual: Tensor
    converged: Tensor
    diverged: Tensor
    trace: Tensor
    nfev: int
    stop_mode: str
    tol: float
    solver: str
    trajectory: Optional[Tensor] = None
    max_iter: Optional[int] = None

    @property
    def residual(self) -> Tensor:
        """The residual used for stopping (relative or absolute), per sample."""
        return self.rel_residual if self.stop_mode == "rel" else self.abs_residual

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())

    def summary(self) -> str:
        """One line: solver, convergence, steps and residuals."""
        n = self.steps.numel()
        return (
            f"{self.solver}: {int(self.converged.sum())}/{n} converged (tol={self.tol:g}, {self.stop_mode}), "
            f"steps mean {self.steps.float().mean().item():.1f} max {int(self.steps.max()) if n else 0}, "
            f"nfev {self.nfev}, max residual {self.residual.max().item() if n else float('nan'):.3g}"
        )

    def to_dict(self) -> dict:
        """Plain Python numbers and lists (JSON-ready), without the trajectory."""
        return {
            "solver": self.solver,
            "stop_mode": self.stop_mode,
            "tol": self.tol,
            "max_iter": self.max_iter,
            "nfev": self.nfev,
            "steps": self.steps.tolist(),
            "abs_residual": self.abs_residual.tolist(),
            "rel_residual": self.rel_residual.tolist(),
            "converged": self.converged.tolist(),
            "diverged": self.diverged.tolist(),
        }


def check_settings(where: str, max_iter: object, tol: object, stop_mode: object) -> None:
    """Validate the settings every solver shares (no state needed): ``max_iter`` an int >= 1, ``tol`` > 0, a stop mode."""
    check_int(max_iter, "max_iter", where, minimum=1)
    check_positive(tol, "tol", where)
    check_choice(stop_mode, "stop_mode", where, STOP_MODES)


def check_solver_result(result: object, z0: Tensor, where: str, solver: str) -> Tuple[Tensor, SolverInfo]:
    """What a solver returned, checked against its contract: ``(z, info)``, z a tensor of z0's shape and dtype,
    info a :class:`SolverInfo` (the contract of :func:`~deqlib.solvers.register_solver`)."""
    contract = (
        f"{where}: the {solver} must return (z, info) with z a tensor of the state's shape {tuple(z0.shape)} and info "
        "a deqlib.solvers.SolverInfo (see deqlib.solvers.register_solver)"
    )
    if not isinstance(result, tuple) or len(result) != 2:
        got = f"a tuple of {len(result)}" if isinstance(result, tuple) else type(result).__name__
        raise TypeError(f"{contract}; got {got}")
    z, info = result
    if not isinstance(z, Tensor) or not isinstance(info, SolverInfo):
        raise TypeError(f"{contract}; got ({type(z).__name__}, {type(info).__name__})")
    if z.shape != z0.shape or z.dtype != z0.dtype:
        raise ValueError(f"{contract}; got z of shape {tuple(z.shape)} and dtype {z.dtype} (state: {z0.dtype})")
    return z, info


def check_state(where: str, z0: object) -> Tensor:
    """Validate an initial state: a finite floating-point tensor with a non-empty batch dimension first."""
    return check_tensor(z0, "z0", where, floating=True, batch=True, finite=True)


def check_common(
    name: str, z0: Tensor, max_iter: int, tol: float, stop_mode: str, *, f: object, record: object
) -> None:
    """Validate a solver call: f, the initial state and the shared settings (TypeError / ValueError, clear message)."""
    check_callable(f, "f", name, "as f(z) -> the next state")
    check_bool(record, "record", name)
    check_state(name, z0)
    check_settings(name, max_iter, tol, stop_mode)


def flat_function(name: str, f: Callable[[Tensor], Tensor], shape: torch.Size) -> Callable[[Tensor], Tensor]:
    """Wrap f (on states of ``shape``) as a function on flattened (N, d) states, checking its output."""

    def g(z_flat: Tensor) -> Tensor:
        out = f(z_flat.view(shape))
        if not isinstance(out, Tensor):
            raise TypeError(f"{name}: f must return a tensor, got {type(out).__name__}")
        if out.shape != shape:
            raise ValueError(f"{name}: f changed the state's shape from {tuple(shape)} to {tuple(out.shape)}")
        if out.dtype != z_flat.dtype:
            raise TypeError(f"{name}: f returned dtype {out.dtype} for a state of dtype {z_flat.dtype}")
        return out.reshape(z_flat.shape)

    return g


#: States with at least this many elements pay one extra host sync per step to skip a full-size select when every
#: active sample improved (cheaper than the select on large states; on small ones the sync would cost more).
_SKIP_SELECT_NUMEL = 16384


@dataclass
class Tracker:
    """Per-sample residuals, best iterate, stopping and traces, shared by all solvers.

    Performance notes (the semantics are those of the straightforward version kept in
    ``benchmarks/baseline_solvers.py``, with the same results): the solver may pass the difference ``f(z) - z``
    it already computed; the divergence threshold and the NaN filler of the traces are computed once; NaN and
    Inf residuals are excluded by the comparisons themselves (``nan < x`` and ``inf < x`` are False), with the
    stopped samples' residuals set to NaN; when every sample is still active (or, on large states, every active
    sample improved) the full-size selects are skipped, which gives the same values. One host sync per step
    (the number of active samples, and on large states the number that improved) decides whether to go on. The
    per-iteration trace is kept unless the solve runs inside :func:`without_traces` (and ``record`` is off).
    """

    name: str
    z0: Tensor  # (N, d)
    tol: float
    stop_mode: str
    record: bool
    shape: torch.Size
    nfev: int = 0
    max_iter: Optional[int] = None  # reported in the SolverInfo
    best_z: Tensor = field(init=False)
    best_abs: Tensor = field(init=False)
    best_rel: Tensor = field(init=False)
    active: Tensor = field(init=False)
    steps: Tensor = field(init=False)
    converged: Tensor = field(init=False)
    diverged: Tensor = field(init=False)
    initial_abs: Optional[Tensor] = field(init=False, default=None)
    traces: List[Tensor] = field(init=False, default_factory=list)
    states: List[Tensor] = field(init=False, default_factory=list)
    n_active: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        n = self.z0.shape[0]
        dev = self.z0.device
        inf = torch.full((n,), math.inf, dtype=self.z0.dtype, device=dev)
        self.best_z = self.z0
        self.best_abs = inf
        self.best_rel = inf.clone()
        self.active = torch.ones(n, dtype=torch.bool, device=dev)
        self.steps = torch.zeros(n, dtype=torch.long, device=dev)
        self.converged = torch.zeros(n, dtype=torch.bool, device=dev)
        self.diverged = torch.zeros(n, dtype=torch.bool, device=dev)
        self.n_active = n
        self._rel = self.stop_mode == "rel"
        self._threshold: Optional[Tensor] = None
        self._nan = torch.full((n,), math.nan, dtype=self.z0.dtype, device=dev)
        self._check_all_improve = self.z0.numel() >= _SKIP_SELECT_NUMEL
        self._keep_trace = self.record or traces_kept()

    def update(self, z: Tensor, fz: Tensor, diff: Optional[Tensor] = None) -> bool:
        """Record the evaluation fz = f(z) of the candidates z; return True while some sample is still active.

        ``diff``, if given, must be ``fz - z`` (the solver often needs it anyway).
        """
        self.nfev += 1
        if self.record:
            self.states.append(z.detach())
        with torch.no_grad():
            abs_r = (fz - z if diff is None else diff).norm(dim=1)
            rel_r = abs_r / (fz.norm(dim=1) + REL_EPS)
            r, best_r = (rel_r, self.best_rel) if self._rel else (abs_r, self.best_abs)
            if self._threshold is None:
                self.initial_abs = torch.where(torch.isfinite(abs_r), abs_r, torch.zeros_like(abs_r))
                self._threshold = DIVERGENCE_FACTOR * self.initial_abs.clamp_min(torch.finfo(abs_r.dtype).tiny)
            act = self.active
            # The residual of the active samples, NaN for the stopped ones: it is the trace entry, and since NaN
            # (like Inf) never compares below a bound, "r_act < x" is "active, finite and below x".
            r_act = torch.where(act, r, self._nan)
            if self._keep_trace:
                self.traces.append(r_act)
            improve = r_act < best_r
            conv = r_act < self.tol
            still = act > conv  # active and not converged (on booleans, a > b is a & ~b)
            # Not diverged: a finite absolute residual (NaN and Inf fail the comparison; the relative residual is
            # then finite too) without a blow-up. Diverged samples are those neither converged nor active at the end.
            good = abs_r <= self._threshold
            self.best_abs = torch.where(improve, abs_r, self.best_abs)
            self.best_rel = torch.where(improve, rel_r, self.best_rel)
            self.steps += act
            self.converged |= conv
            self.active = still & good
            if self._check_all_improve:  # one host sync for both counts (improving implies active)
                n_active, n_improve = torch.stack((self.active.sum(), improve.sum())).tolist()
                all_improve = n_improve == improve.shape[0]
            else:
                n_active, all_improve = int(self.active.sum()), False
            self.n_active = n_active
        # z may carry gradients (unrolled differentiation): select without breaking the graph.
        if all_improve:
            self.best_z = z
        else:
            self.best_z = torch.where(improve.unsqueeze(1), z, self.best_z)
        return self.n_active > 0

    def freeze(self, z_next: Tensor) -> Tensor:
        """Stopped samples keep their best iterate; active ones move on to z_next."""
        if self.n_active == self.active.shape[0]:
            return z_next
        return torch.where(self.active.unsqueeze(1), z_next, self.best_z)

    def finish(self, z_last: Optional[Tensor] = None) -> Tuple[Tensor, SolverInfo]:
        """Return (best z in the original shape, SolverInfo); warn once if some samples diverged (unless quiet)."""
        if self.record:
            tail = self.best_z if z_last is None else self.freeze(z_last)
            self.states.append(tail.detach())
        n = self.z0.shape[0]
        trace = torch.stack(self.traces, dim=1) if self.traces else self.z0.new_zeros((n, 0))
        # A sample stops by converging, by diverging, or not at all (the budget ran out, it is still active).
        self.diverged = ~(self.converged | self.active)
        if bool(self.diverged.any()) and not convergence_warnings_quiet():
            idx = torch.nonzero(self.diverged).flatten().tolist()
            shown = ", ".join(f"{i}: {self.best_abs[i].item():.3g}" for i in idx[:8])
            warnings.warn(
                f"{self.name}: {len(idx)} of {n} samples diverged (non-finite values or a residual above "
                f"{DIVERGENCE_FACTOR:g} times the initial one); returning each one's best iterate "
                f"(sample: best absolute residual) {shown}{' ...' if len(idx) > 8 else ''}",
                SolverDivergenceWarning,
                stacklevel=3,
            )
        info = SolverInfo(
            steps=self.steps,
            abs_residual=self.best_abs,
            rel_residual=self.best_rel,
            converged=self.converged,
            diverged=self.diverged,
            trace=trace,
            nfev=self.nfev,
            stop_mode=self.stop_mode,
            tol=float(self.tol),
            solver=self.name,
            trajectory=(torch.stack(self.states).view(len(self.states), *self.shape) if self.record else None),
            max_iter=self.max_iter,
        )
        return self.best_z.view(self.shape), info
