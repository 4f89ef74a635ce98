"""The DEQ layer: z* = f(z*, x), solved without a graph, with a gradient attached afterwards.

The forward value is z*, the solver's result, whatever the gradient: the gradient mode changes only the backward
(so an attack under one gradient optimises the function that ``predict`` evaluates). Gradients:

- ``"ift"``: implicit function theorem. The backward replaces the incoming gradient v by the solution g of the
  adjoint fixed point g = J^T g + v (J = df/dz at z*), solved by a configurable solver with vector-Jacobian
  products; autograd then carries g^T df/dtheta and g^T df/dx (through one application of f at z*, whose
  value is not used). Memory does not grow with the number of forward iterations.
- ``"phantom"``: the gradient of k damped steps z <- (1 - tau) z + tau f(z, x) from the detached z*
  (Geng et al. 2021), attached to z* (the value of those steps is not used).
- ``"unroll"``: the solver itself runs with autograd on, so the gradient is exact for the iterations taken.

The forward value does not depend on ``train()`` / ``eval()``, nor on whether autograd is on, except by round-off
for ``grad="unroll"`` with Anderson or Broyden, which then iterate with their list-based (autograd) implementation
instead of the in-place buffers (measured: at most 7e-7 in float32, 4e-16 in float64).

Non-convergence is not silent: a forward or adjoint solve in which some samples stop at their budget without
reaching the tolerance emits one :class:`~deqlib.solvers.SolverConvergenceWarning`, and every DEQ counts them in
``deq.convergence`` (see :mod:`deqlib.solvers.convergence`).
"""

from __future__ import annotations

import contextlib
import inspect
from collections import OrderedDict
from typing import Any, Callable, ContextManager, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ._validate import (
    check_bool,
    check_callable,
    check_choice,
    check_fraction,
    check_int,
    check_matches,
    check_positive,
    check_tensor,
)
from .diagnostics import jacobian_frobenius, spectral_radius
from .solvers import (
    ConvergenceCounts,
    SolverInfo,
    available_solvers,
    check_solver_options,
    damped_steps,
    get_solver,
    warn_not_converged,
)
from .solvers.info import check_settings, check_solver_result, without_traces
from .solvers.registry import check_signature

#: The tags a solve listener receives: a forward solve (``forward`` or ``solve``) and an adjoint solve (IFT backward).
SOLVE_TAGS = ("forward", "backward")
SolveListener = Callable[[str, SolverInfo], None]

GRADS = ("ift", "phantom", "unroll")

#: The adjoint's default budget is this many times the forward's ``max_iter`` (see :class:`DEQ`).
BACKWARD_MAX_ITER_FACTOR = 2


class _ImplicitBackward(torch.autograd.Function):
    """Returns z* (the value of ``z_in``); in the backward, solves g = J^T g + v and passes g on to f(z*)."""

    @staticmethod
    def forward(ctx: Any, f_out: Tensor, z_in: Tensor, deq: "DEQ", warm: Any) -> Tensor:  # type: ignore[override]
        ctx.deq = deq
        ctx.z_in = z_in
        ctx.f_out = f_out
        ctx.warm = warm  # None, or (pool, slots): start the adjoint solve from the pool's last adjoint solutions
        return z_in.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tuple[Optional[Tensor], None, None, None]:  # type: ignore[override]
        deq: DEQ = ctx.deq
        f_out, z_in = ctx.f_out, ctx.z_in

        def adjoint(y: Tensor) -> Tensor:
            (vjp,) = torch.autograd.grad(f_out, z_in, y, retain_graph=True)
            return vjp + grad

        solver = get_solver(deq.backward_solver)
        g0 = grad if ctx.warm is None else ctx.warm[0].initial_adjoint(ctx.warm[1], grad)
        with deq._traces():
            result = solver(adjoint, g0, **{"record": False, **deq.backward_options})
        g, info = check_solver_result(result, grad, "DEQ (IFT backward)", deq._solver_label("backward"))
        if ctx.warm is not None:
            ctx.warm[0].store_adjoint(ctx.warm[1], g)
        deq._last_backward_info = info
        deq._report("backward", info)
        return g, None, None, None


def _check_solver(solver: object, name: str) -> str | Callable:
    """A registered solver's name or a callable with the solver's keyword arguments (TypeError / ValueError)."""
    if isinstance(solver, str):
        get_solver(solver)  # unknown names raise ValueError, listing the registered ones
        return solver
    if not callable(solver):
        raise TypeError(
            f"DEQ: {name} must be a registered solver name ({', '.join(available_solvers())}) or a solver callable, "
            f"got {type(solver).__name__} {solver!r}"
        )
    return check_signature(solver, "DEQ", getattr(solver, "__name__", name))


def _first_floating_tensor(cell: object) -> Optional[Tensor]:
    """A floating-point parameter (else buffer) of the cell, whose dtype and device the input must share."""
    if not isinstance(cell, nn.Module):
        return None
    for t in cell.parameters():
        if t.is_floating_point():
            return t
    for t in cell.buffers():
        if t.is_floating_point():
            return t
    return None


class DEQ(nn.Module):
    """A deep equilibrium layer around a cell ``cell(z, x) -> next z``.

    Calling it on x returns the equilibrium state ``(N, *state)``. The initial state is zeros of
    ``cell.state_shape(x)`` when the cell defines it, else of x's shape, unless ``z0`` is given.

    Args:
        cell: module computing the next state from (z, x). No BatchNorm inside: it couples samples.
        solver: a registered solver name ("fixed_point", "anderson", "broyden") or a solver callable.
        grad: "ift", "phantom" or "unroll".
        max_iter, tol, stop_mode: forward solver settings.
        backward_solver: solver for the adjoint fixed point (IFT); default: the forward solver.
        backward_max_iter: the adjoint's iteration budget; default ``2 * max_iter``
            (:data:`BACKWARD_MAX_ITER_FACTOR`). The adjoint is linear, with the Jacobian of the forward's last
            iterations, but it can need more steps than the forward to reach the same relative tolerance: on tanh
            MLP cells (gains 0.5-1.3, budgets 10-50, tol 1e-3-1e-6; 2,500-3,300 forward-converged samples per
            solver) a budget of ``max_iter`` left 9-39 of them unconverged in the adjoint, ``2 * max_iter`` 0-1
            (``experiments/nonconvergence.py``). The adjoint stops per sample, so the larger budget costs only
            where it is needed.
        backward_tol: the adjoint's tolerance; default: the forward ``tol``.
        backward_options: extra options of the backward solver.
        phantom_steps, phantom_tau: k and tau of the phantom gradient (:func:`~deqlib.solvers.damped_steps`).
        jac_reg_samples: if > 0, each forward with autograd on stores a differentiable Hutchinson estimate of
            ||df/dz||_F^2 / dim in ``last_jacobian_loss`` (Jacobian regularisation).
        record: keep the trajectory of states of each call in ``last_trajectory``, and the per-iteration residual
            traces in ``last_info.trace`` / ``last_backward_info.trace`` (without it they are empty, (N, 0): the
            forward and adjoint solves run inside :func:`~deqlib.solvers.without_traces`; :meth:`solve` keeps
            them always).
        **solver_options: options of the forward solver (e.g. ``m=5`` for Anderson); unknown ones raise TypeError.

    Solver statistics: ``last_info`` / ``last_backward_info`` hold the reports of the LAST forward and adjoint
    solves; to see every solve (an adversarial-training batch makes several), register a listener with
    :meth:`add_solve_listener`. ``convergence`` (a :class:`~deqlib.solvers.ConvergenceCounts`) counts the samples
    of every forward and adjoint solve and those that did not converge; each solve with such samples also emits a
    :class:`~deqlib.solvers.SolverConvergenceWarning` (silenced inside :func:`~deqlib.solvers.quiet_convergence`).

    Example:
        >>> import torch
        >>> from deqlib.cells import MLPCell
        >>> deq = DEQ(MLPCell(16), solver="anderson", grad="ift", tol=1e-5)
        >>> z = deq(torch.randn(4, 16))
        >>> deq.last_info.converged.all().item()
        True
    """

    def __init__(
        self,
        cell: nn.Module,
        solver: str | Callable = "anderson",
        grad: str = "ift",
        *,
        max_iter: int = 30,
        tol: float = 1e-4,
        stop_mode: str = "rel",
        backward_solver: str | Callable | None = None,
        backward_max_iter: Optional[int] = None,
        backward_tol: Optional[float] = None,
        backward_options: Optional[Dict[str, Any]] = None,
        phantom_steps: int = 5,
        phantom_tau: float = 0.5,
        jac_reg_samples: int = 0,
        record: bool = False,
        **solver_options: Any,
    ) -> None:
        super().__init__()
        self.cell = check_callable(cell, "cell", "DEQ", "as cell(z, x)")
        check_settings("DEQ", max_iter, tol, stop_mode)
        self.solver = _check_solver(solver, "solver")
        check_solver_options(solver, solver_options)
        self.solver_options = dict(solver_options)
        self.max_iter, self.tol, self.stop_mode = max_iter, tol, stop_mode
        self.backward_solver = solver if backward_solver is None else _check_solver(backward_solver, "backward_solver")
        if backward_options is not None and not isinstance(backward_options, Mapping):
            raise TypeError(f"DEQ: backward_options must be a dict of solver options, got {backward_options!r}")
        extra = dict(backward_options or {})
        if backward_solver is None and not extra:
            extra = dict(solver_options)
        check_solver_options(self.backward_solver, extra)
        if backward_max_iter is not None:
            check_int(backward_max_iter, "backward_max_iter", "DEQ", minimum=1)
        if backward_tol is not None:
            check_positive(backward_tol, "backward_tol", "DEQ")
        self.backward_options = {
            "max_iter": BACKWARD_MAX_ITER_FACTOR * max_iter if backward_max_iter is None else backward_max_iter,
            "tol": tol if backward_tol is None else backward_tol,
            "stop_mode": stop_mode,
            **extra,
        }
        self.grad = grad
        self.phantom_steps = check_int(phantom_steps, "phantom_steps", "DEQ", minimum=1)
        self.phantom_tau = check_fraction(phantom_tau, "phantom_tau", "DEQ")
        self.jac_reg_samples = check_int(jac_reg_samples, "jac_reg_samples", "DEQ", minimum=0)
        self.record = check_bool(record, "record", "DEQ")
        bo = self.backward_options  # backward_options may set max_iter, tol or stop_mode itself
        check_settings("DEQ (backward_options)", bo["max_iter"], bo["tol"], bo["stop_mode"])
        self._solve_listeners: "OrderedDict[int, SolveListener]" = OrderedDict()
        self.convergence = ConvergenceCounts()
        self.last_info: Optional[SolverInfo] = None
        self.last_trajectory: Optional[Tensor] = None
        self.last_jacobian_loss: Optional[Tensor] = None
        self._last_backward_info: Optional[SolverInfo] = None
        # deqlib.warm_start: the pool of recent solutions inside a warm_starts() block (None outside), and whether
        # an enclosing warm_starts(model, enabled=False) forbids one.
        self.warm_start: Optional[Any] = None
        self.warm_start_allowed = True

    # ------------------------------------------------------------------ settings
    @property
    def grad(self) -> str:
        """The gradient attached to the output: "ift", "phantom" or "unroll" (may be changed at any time)."""
        return self._grad

    @grad.setter
    def grad(self, value: str) -> None:
        self._grad = check_choice(value, "grad", "DEQ", GRADS)

    @property
    def last_backward_info(self) -> Optional[SolverInfo]:
        """The adjoint solver's report of the last IFT backward pass."""
        return self._last_backward_info

    def add_solve_listener(self, listener: SolveListener) -> RemovableHandle:
        """Call ``listener(tag, info)`` after every solve: tag "forward" (``forward`` and ``solve``) or "backward".

        (``convergence`` counts the solves of ``forward`` and the adjoint, not those of the analysis ``solve``.)

        Returns a handle whose ``remove()`` unregisters it (as torch's hooks). Listeners are not saved in the
        state dict.

        Example:
            >>> import torch
            >>> from deqlib.cells import MLPCell
            >>> deq, seen = DEQ(MLPCell(8)), []
            >>> handle = deq.add_solve_listener(lambda tag, info: seen.append(tag))
            >>> deq(torch.randn(2, 8, requires_grad=True)).sum().backward()
            >>> handle.remove(); seen
            ['forward', 'backward']
        """
        check_callable(listener, "listener", "DEQ.add_solve_listener", "as listener(tag, info)")
        handle = RemovableHandle(self._solve_listeners)
        self._solve_listeners[handle.id] = listener
        return handle

    def _notify(self, tag: str, info: SolverInfo) -> None:
        for listener in list(self._solve_listeners.values()):
            listener(tag, info)

    def _solver_name(self, tag: str) -> str:
        solver = self.solver if tag == "forward" else self.backward_solver
        return solver if isinstance(solver, str) else getattr(solver, "__name__", "solver")

    def _solver_label(self, tag: str) -> str:
        """How an error names the solver: ``solver 'anderson'`` or ``backward_solver 'my_solver'``."""
        return f"{'solver' if tag == 'forward' else 'backward_solver'} {self._solver_name(tag)!r}"

    def _report(self, tag: str, info: SolverInfo) -> None:
        """A forward or adjoint solve is done: count it, warn if some samples did not converge, notify."""
        self.convergence.add(tag, info)
        budget = self.max_iter if tag == "forward" else self.backward_options["max_iter"]
        where = "DEQ forward solve" if tag == "forward" else "DEQ adjoint solve (IFT backward)"
        warn_not_converged(where, info, solver=self._solver_name(tag), max_iter=budget, stacklevel=3)
        self._notify(tag, info)

    def extra_repr(self) -> str:
        name = self.solver if isinstance(self.solver, str) else getattr(self.solver, "__name__", "solver")
        return f"solver={name}, grad={self.grad}, max_iter={self.max_iter}, tol={self.tol}, stop_mode={self.stop_mode}"

    # ------------------------------------------------------------------ helpers
    def initial_state(self, x: Tensor) -> Tensor:
        """Zeros of the state's shape for input x."""
        shape_fn = getattr(self.cell, "state_shape", None)
        shape = tuple(shape_fn(x)) if shape_fn is not None else tuple(x.shape)
        return torch.zeros(shape, dtype=x.dtype, device=x.device)

    def _check(self, x: Tensor, z0: Optional[Tensor]) -> Tensor:
        check_tensor(x, "x", "DEQ", floating=True, batch=True)
        reference = _first_floating_tensor(self.cell)
        if reference is not None:
            check_matches(x, reference, "DEQ", "x", "the cell")
        check_tensor(x, "x", "DEQ", finite=True)
        init = self.initial_state(x)
        if z0 is None:
            return init
        check_tensor(z0, "z0", "DEQ")
        if z0.shape != init.shape:
            raise ValueError(f"DEQ: z0 has shape {tuple(z0.shape)}, the state has shape {tuple(init.shape)}")
        if z0.dtype != x.dtype:
            raise TypeError(f"DEQ: z0 has dtype {z0.dtype}, the input has dtype {x.dtype}")
        if z0.device != x.device:
            raise ValueError(f"DEQ: z0 is on {z0.device}, the input is on {x.device}")
        return z0.detach()

    def _solve(self, f: Callable[[Tensor], Tensor], z0: Tensor, record: bool, **overrides: Any):
        opts = {"max_iter": self.max_iter, "tol": self.tol, "stop_mode": self.stop_mode, **self.solver_options}
        opts.update(overrides)
        result = get_solver(self.solver)(f, z0, record=record, **opts)
        return check_solver_result(result, z0, "DEQ", self._solver_label("forward"))

    def _traces(self) -> ContextManager[None]:
        """The forward and adjoint solves keep no per-iteration trace unless ``record`` (nothing reads it)."""
        return contextlib.nullcontext() if self.record else without_traces()

    def _phantom(self, z: Tensor, x: Tensor) -> Tensor:
        return damped_steps(lambda s: self.cell(s, x), z, self.phantom_steps, self.phantom_tau)

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, z0: Optional[Tensor] = None) -> Tensor:
        """Return the equilibrium state z* for input x (batch first), with the configured gradient attached.

        The value is the solver's result in every gradient mode; only the backward differs.
        """
        z_init = self._check(x, z0)

        def f(z: Tensor) -> Tensor:
            return self.cell(z, x)

        self.last_jacobian_loss = None
        if self.grad == "unroll" and torch.is_grad_enabled():  # never warm-started: the gradient is of these steps
            with self._traces():
                z_star, info = self._solve(f, z_init, self.record)
            self._store(info)
            if self.jac_reg_samples:
                self._jacobian_loss(z_star.detach(), x)
            return z_star

        pool = self.warm_start if z0 is None else None
        if pool is not None:
            z_init, slots = pool.initial_state(x, z_init)
        with torch.no_grad(), self._traces():
            z_star, info = self._solve(f, z_init, self.record)
        self._store(info)
        warm = None if pool is None else (pool, pool.store(x, z_star, slots))
        if self.grad == "unroll" or not torch.is_grad_enabled():
            return z_star
        if self.grad == "phantom":
            steps = self._phantom(z_star, x)
            if self.jac_reg_samples:
                self._jacobian_loss(z_star, x)
            return z_star + (steps - steps.detach())  # the value of z*, the gradient of the k steps
        # IFT: the value of z*; the backward replaces the incoming gradient by the adjoint solution and carries it
        # through one application of f at z*.
        z_in = z_star.detach().requires_grad_()
        f_out = self.cell(z_in, x)
        if self.jac_reg_samples:
            self._jacobian_loss(z_in, x, f_out)
        return _ImplicitBackward.apply(f_out, z_in, self, warm)

    def _store(self, info: SolverInfo) -> None:
        self.last_info = info
        self.last_trajectory = info.trajectory
        self._report("forward", info)

    def _jacobian_loss(self, z_in: Tensor, x: Tensor, f_out: Optional[Tensor] = None) -> None:
        if f_out is None:
            z_in = z_in.detach().requires_grad_()
            f_out = self.cell(z_in, x)
        est = jacobian_frobenius(f_out, z_in, n_samples=self.jac_reg_samples, create_graph=True)
        self.last_jacobian_loss = est.mean() / z_in[0].numel()

    # ------------------------------------------------------------------ analysis
    @torch.no_grad()
    def solve(self, x: Tensor, z0: Optional[Tensor] = None, *, record: bool = True, **overrides: Any):
        """Solve without any gradient and return ``(z*, info)``; ``info.trajectory`` holds z_0..z_K if record.

        ``overrides`` replace forward solver settings for this call (e.g. ``max_iter=100``). An analysis solve is
        often truncated on purpose (a trajectory of k states) and returns its report: it is not counted in
        ``convergence`` and emits no convergence warning (listeners hear it, with the tag "forward").
        """
        z_init = self._check(x, z0)
        solver = get_solver(self.solver)
        known = set(inspect.signature(solver).parameters)
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"DEQ.solve: unknown option(s) {unknown}")
        z_star, info = self._solve(lambda z: self.cell(z, x), z_init, record, **overrides)
        self._notify("forward", info)
        return z_star, info

    def spectral_radius(self, x: Tensor, z: Optional[Tensor] = None, *, n_iter: int = 50) -> Tensor:
        """Spectral radius of df/dz at the fixed point for input x (solved first unless ``z`` is given), per sample."""
        if z is None:
            z, _ = self.solve(x, record=False)
        x = x.detach()
        return spectral_radius(lambda s: self.cell(s, x), z, n_iter=n_iter)
