"""The DEQ layer: z* = f(z*, x), solved without a graph, with a gradient attached afterwards.

Gradients:
    ``"ift"``: implicit function theorem. The returned state is f(z*, x); its backward replaces the incoming
        gradient v by the solution g of the adjoint fixed point g = J^T g + v (J = df/dz at z*), solved by a
        configurable solver with vector-Jacobian products; autograd then carries g^T df/dtheta and g^T df/dx.
        Memory does not grow with the number of forward iterations.
    ``"phantom"``: k damped steps z <- (1 - tau) z + tau f(z, x) from the detached z*, back-propagated through
        those steps only (Geng et al. 2021).
    ``"unroll"``: the solver itself runs with autograd on, so the gradient is exact for the iterations taken.

The forward value does not depend on whether autograd is on, nor on ``train()`` / ``eval()``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from .diagnostics import jacobian_frobenius, spectral_radius
from .solvers import SolverInfo, check_solver_options, get_solver

GRADS = ("ift", "phantom", "unroll")


class _ImplicitBackward(torch.autograd.Function):
    """Identity in the forward; in the backward, solves g = J^T g + v and passes g on."""

    @staticmethod
    def forward(ctx: Any, f_out: Tensor, z_in: Tensor, deq: "DEQ") -> Tensor:  # type: ignore[override]
        ctx.deq = deq
        ctx.z_in = z_in
        ctx.f_out = f_out
        return f_out.view_as(f_out)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tuple[Optional[Tensor], None, None]:  # type: ignore[override]
        deq: DEQ = ctx.deq
        f_out, z_in = ctx.f_out, ctx.z_in

        def adjoint(y: Tensor) -> Tensor:
            (vjp,) = torch.autograd.grad(f_out, z_in, y, retain_graph=True)
            return vjp + grad

        solver = get_solver(deq.backward_solver)
        g, info = solver(adjoint, grad, **deq.backward_options)
        deq._last_backward_info = info
        return g, None, None


class DEQ(nn.Module):
    """A deep equilibrium layer around a cell ``cell(z, x) -> next z``.

    Calling it on x returns the equilibrium state (N, *state). The initial state is zeros of
    ``cell.state_shape(x)`` when the cell defines it, else of x's shape, unless ``z0`` is given.

    Args:
        cell: module computing the next state from (z, x). No BatchNorm inside: it couples samples.
        solver: a registered solver name ("fixed_point", "anderson", "broyden") or a solver callable.
        grad: "ift", "phantom" or "unroll".
        max_iter, tol, stop_mode: forward solver settings.
        backward_solver: solver for the adjoint fixed point (IFT); default: the forward solver.
        backward_max_iter, backward_tol: adjoint solver settings; default: the forward ones.
        backward_options: extra options of the backward solver.
        phantom_steps, phantom_tau: k and tau of the phantom gradient.
        jac_reg_samples: if > 0, each forward with autograd on stores a differentiable Hutchinson estimate of
            ||df/dz||_F^2 / dim in ``last_jacobian_loss`` (Jacobian regularisation).
        record: keep the trajectory of states of each call in ``last_trajectory``.
        **solver_options: options of the forward solver (e.g. ``m=5`` for Anderson); unknown ones raise TypeError.

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
        if not callable(cell):
            raise TypeError(f"DEQ: cell must be callable as cell(z, x), got {type(cell).__name__}")
        self.cell = cell
        get_solver(solver)  # unknown names raise ValueError here
        check_solver_options(solver, solver_options)
        self.solver = solver
        self.solver_options = dict(solver_options)
        self.max_iter, self.tol, self.stop_mode = max_iter, tol, stop_mode
        self.backward_solver = solver if backward_solver is None else backward_solver
        get_solver(self.backward_solver)
        extra = dict(backward_options or {})
        if backward_solver is None and not extra:
            extra = dict(solver_options)
        check_solver_options(self.backward_solver, extra)
        self.backward_options = {
            "max_iter": max_iter if backward_max_iter is None else backward_max_iter,
            "tol": tol if backward_tol is None else backward_tol,
            "stop_mode": stop_mode,
            **extra,
        }
        self.grad = grad
        if isinstance(phantom_steps, bool) or not isinstance(phantom_steps, int) or phantom_steps < 1:
            raise ValueError(f"DEQ: phantom_steps must be a positive int, got {phantom_steps!r}")
        if not 0.0 < float(phantom_tau) <= 1.0:
            raise ValueError(f"DEQ: phantom_tau must be in (0, 1], got {phantom_tau!r}")
        self.phantom_steps, self.phantom_tau = phantom_steps, float(phantom_tau)
        if isinstance(jac_reg_samples, bool) or not isinstance(jac_reg_samples, int) or jac_reg_samples < 0:
            raise ValueError(f"DEQ: jac_reg_samples must be an int >= 0, got {jac_reg_samples!r}")
        self.jac_reg_samples = jac_reg_samples
        self.record = bool(record)
        # Check the shared options now rather than at the first call.
        from .solvers.info import check_common

        check_common("DEQ", torch.zeros(1), max_iter, tol, stop_mode)
        self.last_info: Optional[SolverInfo] = None
        self.last_trajectory: Optional[Tensor] = None
        self.last_jacobian_loss: Optional[Tensor] = None
        self._last_backward_info: Optional[SolverInfo] = None

    # ------------------------------------------------------------------ settings
    @property
    def grad(self) -> str:
        """The gradient attached to the output: "ift", "phantom" or "unroll" (may be changed at any time)."""
        return self._grad

    @grad.setter
    def grad(self, value: str) -> None:
        if value not in GRADS:
            raise ValueError(f"DEQ: unknown grad {value!r}; expected one of {GRADS}")
        self._grad = value

    @property
    def last_backward_info(self) -> Optional[SolverInfo]:
        """The adjoint solver's report of the last IFT backward pass."""
        return self._last_backward_info

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
        if not isinstance(x, Tensor):
            raise TypeError(f"DEQ: x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 1 or x.shape[0] == 0:
            raise ValueError(f"DEQ: x must have a non-empty batch dimension first, got shape {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("DEQ: the input contains NaN or Inf")
        init = self.initial_state(x)
        if z0 is None:
            return init
        if not isinstance(z0, Tensor):
            raise TypeError(f"DEQ: z0 must be a torch.Tensor, got {type(z0).__name__}")
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
        return get_solver(self.solver)(f, z0, record=record, **opts)

    def _phantom(self, z: Tensor, x: Tensor) -> Tensor:
        for _ in range(self.phantom_steps):
            fz = self.cell(z, x)
            z = fz if self.phantom_tau == 1.0 else z + self.phantom_tau * (fz - z)
        return z

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, z0: Optional[Tensor] = None) -> Tensor:
        """Return the equilibrium state for input x (batch first), with the configured gradient attached."""
        z_init = self._check(x, z0)

        def f(z: Tensor) -> Tensor:
            return self.cell(z, x)

        self.last_jacobian_loss = None
        if self.grad == "unroll" and torch.is_grad_enabled():
            z_star, info = self._solve(f, z_init, self.record)
            self._store(info)
            if self.jac_reg_samples:
                self._jacobian_loss(z_star.detach(), x)
            return z_star

        with torch.no_grad():
            z_star, info = self._solve(f, z_init, self.record)
        self._store(info)
        if self.grad == "unroll":
            return z_star
        if self.grad == "phantom":
            out = self._phantom(z_star.detach(), x)
            if self.jac_reg_samples and torch.is_grad_enabled():
                self._jacobian_loss(z_star.detach(), x)
            return out
        # IFT: output f(z*, x) and replace its incoming gradient by the adjoint solution.
        if not torch.is_grad_enabled():
            return self.cell(z_star, x)
        z_in = z_star.detach().requires_grad_()
        f_out = self.cell(z_in, x)
        if self.jac_reg_samples:
            self._jacobian_loss(z_in, x, f_out)
        return _ImplicitBackward.apply(f_out, z_in, self)

    def _store(self, info: SolverInfo) -> None:
        self.last_info = info
        self.last_trajectory = info.trajectory

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

        ``overrides`` replace forward solver settings for this call (e.g. ``max_iter=100``).
        """
        z_init = self._check(x, z0)
        solver = get_solver(self.solver)
        known = set(inspect.signature(solver).parameters)
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"DEQ.solve: unknown option(s) {unknown}")
        return self._solve(lambda z: self.cell(z, x), z_init, record, **overrides)

    def spectral_radius(self, x: Tensor, z: Optional[Tensor] = None, *, n_iter: int = 50) -> Tensor:
        """Spectral radius of df/dz at the fixed point for input x (solved first unless ``z`` is given), per sample."""
        if z is None:
            z, _ = self.solve(x, record=False)
        x = x.detach()
        return spectral_radius(lambda s: self.cell(s, x), z, n_iter=n_iter)
