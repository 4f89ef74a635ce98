"""A frozen copy of deqlib's solvers as of commit 39981e5, before the performance work.

The benchmark times these "baseline" solvers against the current ``deqlib.solvers`` to measure the effect of each
speed-up, and checks that the current solvers return the same results (same steps per sample, same fixed
points up to rounding). Do not edit: it is the reference point of ``benchmarks/results``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import torch
from torch import Tensor

from deqlib.solvers.info import DIVERGENCE_FACTOR, REL_EPS, STOP_MODES, SolverDivergenceWarning, SolverInfo


def check_common(name: str, z0: Tensor, max_iter: int, tol: float, stop_mode: str) -> None:
    """Validate the options every solver shares; raise ValueError / TypeError with a clear message."""
    if not isinstance(z0, Tensor):
        raise TypeError(f"{name}: z0 must be a torch.Tensor, got {type(z0).__name__}")
    if z0.dim() < 1 or z0.shape[0] == 0:
        raise ValueError(f"{name}: z0 must have a non-empty batch dimension first, got shape {tuple(z0.shape)}")
    if not z0.is_floating_point():
        raise TypeError(f"{name}: z0 must be a floating-point tensor, got {z0.dtype}")
    if not bool(torch.isfinite(z0).all()):
        raise ValueError(f"{name}: z0 contains NaN or Inf")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"{name}: max_iter must be a positive int, got {max_iter!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol <= 0:
        raise ValueError(f"{name}: tol must be a positive finite number, got {tol!r}")
    if stop_mode not in STOP_MODES:
        raise ValueError(f"{name}: stop_mode must be one of {STOP_MODES}, got {stop_mode!r}")


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

@dataclass
class Tracker:
    """Per-sample residuals, best iterate, stopping and traces, shared by all solvers."""

    name: str
    z0: Tensor  # (N, d)
    tol: float
    stop_mode: str
    record: bool
    shape: torch.Size
    nfev: int = 0
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

    def update(self, z: Tensor, fz: Tensor) -> bool:
        """Record the evaluation fz = f(z) of the candidates z; return True while some sample is still active."""
        self.nfev += 1
        if self.record:
            self.states.append(z.detach())
        with torch.no_grad():
            abs_r = (fz - z).norm(dim=1)
            rel_r = abs_r / (fz.norm(dim=1) + REL_EPS)
            r = rel_r if self.stop_mode == "rel" else abs_r
            best_r = self.best_rel if self.stop_mode == "rel" else self.best_abs
            finite = torch.isfinite(r)
            if self.initial_abs is None:
                self.initial_abs = torch.where(torch.isfinite(abs_r), abs_r, torch.zeros_like(abs_r))
            act = self.active
            improve = act & finite & (r < best_r)
            conv = act & finite & (r < self.tol)
            blown = abs_r > DIVERGENCE_FACTOR * self.initial_abs.clamp_min(torch.finfo(abs_r.dtype).tiny)
            div = act & ~conv & (~finite | blown)
            self.traces.append(torch.where(act, r, torch.full_like(r, math.nan)))
            self.best_abs = torch.where(improve, abs_r, self.best_abs)
            self.best_rel = torch.where(improve, rel_r, self.best_rel)
            self.steps = self.steps + act.long()
            self.converged = self.converged | conv
            self.diverged = self.diverged | div
            self.active = act & ~conv & ~div
        # z may carry gradients (unrolled differentiation): select without breaking the graph.
        self.best_z = torch.where(improve.unsqueeze(1), z, self.best_z)
        return bool(self.active.any())

    def freeze(self, z_next: Tensor) -> Tensor:
        """Stopped samples keep their best iterate; active ones move on to z_next."""
        return torch.where(self.active.unsqueeze(1), z_next, self.best_z)

    def finish(self, z_last: Optional[Tensor] = None) -> Tuple[Tensor, SolverInfo]:
        """Return (best z in the original shape, SolverInfo); warn once if some samples diverged."""
        if self.record:
            tail = self.best_z if z_last is None else self.freeze(z_last)
            self.states.append(tail.detach())
        n = self.z0.shape[0]
        trace = torch.stack(self.traces, dim=1) if self.traces else self.z0.new_zeros((n, 0))
        if bool(self.diverged.any()):
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
        )
        return self.best_z.view(self.shape), info


def fixed_point(
    f: Callable[[Tensor], Tensor],
    z0: Tensor,
    *,
    max_iter: int = 50,
    tol: float = 1e-4,
    stop_mode: str = "rel",
    record: bool = False,
    tau: float = 1.0,
) -> Tuple[Tensor, SolverInfo]:
    """Iterate z <- (1 - tau) z + tau f(z) until each sample's residual is below ``tol``.

    Args:
        f: maps a state of z0's shape (batch first) to a state of the same shape.
        z0: initial state, (N, ...).
        max_iter: most evaluations of f.
        tol: stopping tolerance on ||f(z) - z|| (``stop_mode="abs"``) or that divided by ||f(z)|| ("rel").
        stop_mode: "rel" or "abs".
        record: keep the trajectory of states in ``info.trajectory``.
        tau: damping, in (0, 1]; tau = 1 is the undamped iteration z <- f(z).

    Returns:
        (z, info): per sample the iterate with the lowest residual, and a :class:`SolverInfo`.

    Example:
        >>> import torch
        >>> z, info = fixed_point(lambda z: 0.5 * z + 1.0, torch.zeros(3, 2), tol=1e-8, stop_mode="abs")
        >>> torch.allclose(z, torch.full((3, 2), 2.0))
        True
    """
    check_common("fixed_point", z0, max_iter, tol, stop_mode)
    if not 0.0 < float(tau) <= 1.0:
        raise ValueError(f"fixed_point: tau must be in (0, 1], got {tau!r}")
    g = flat_function("fixed_point", f, z0.shape)
    z = z0.reshape(z0.shape[0], -1)
    track = Tracker("fixed_point", z, tol, stop_mode, record, z0.shape)
    z_next = z
    for _ in range(max_iter):
        fz = g(z)
        go_on = track.update(z, fz)
        z_next = fz if tau == 1.0 else z + tau * (fz - z)
        if not go_on:
            break
        z = track.freeze(z_next)
    return track.finish(z_next)


def anderson_weights(G: Tensor, lam: float) -> Tensor:
    """Solve min_a ||a^T G||^2 + reg ||a||^2 subject to sum(a) = 1, per sample.

    Args:
        G: (N, n, d) residuals f(z_i) - z_i of the last n iterates.
        lam: regularisation relative to the mean squared residual norm (scale-free).

    Returns:
        (N, n) mixing weights. Where the small bordered system is singular or gives non-finite weights,
        the weights fall back to (0, ..., 0, 1): a plain fixed-point step from the newest iterate.
    """
    n_batch, n, _ = G.shape
    H = G @ G.transpose(1, 2)  # (N, n, n)
    scale = H.diagonal(dim1=1, dim2=2).mean(dim=1)  # (N,)
    tiny = torch.finfo(G.dtype).tiny ** 0.5
    eye = torch.eye(n, dtype=G.dtype, device=G.device)
    H = H + (lam * scale + tiny)[:, None, None] * eye
    # Bordered system [[0, 1^T], [1, H]] [nu, a] = [1, 0].
    A = G.new_zeros(n_batch, n + 1, n + 1)
    A[:, 0, 1:] = 1.0
    A[:, 1:, 0] = 1.0
    A[:, 1:, 1:] = H
    rhs = G.new_zeros(n_batch, n + 1)
    rhs[:, 0] = 1.0
    sol, status = torch.linalg.solve_ex(A, rhs)
    alpha = sol[:, 1:]
    bad = (status != 0) | ~torch.isfinite(alpha).all(dim=1)
    fallback = torch.zeros_like(alpha)
    fallback[:, -1] = 1.0
    return torch.where(bad.unsqueeze(1), fallback, alpha)


def anderson(
    f: Callable[[Tensor], Tensor],
    z0: Tensor,
    *,
    max_iter: int = 50,
    tol: float = 1e-4,
    stop_mode: str = "rel",
    record: bool = False,
    m: int = 5,
    beta: float = 1.0,
    lam: float = 1e-4,
) -> Tuple[Tensor, SolverInfo]:
    """Anderson acceleration: the next iterate mixes the last ``m`` iterates to minimise the residual.

    Args:
        f, z0, max_iter, tol, stop_mode, record: as in :func:`~deqlib.solvers.fixed_point`.
        m: history size (>= 1; m = 1 is plain fixed-point iteration).
        beta: mixing parameter in (0, 1]: z_next = beta * sum a_i f(z_i) + (1 - beta) * sum a_i z_i.
        lam: Tikhonov regularisation of the least-squares system, relative to its scale.

    Returns:
        (z, info) as for every solver: the best iterate per sample and a :class:`SolverInfo`.

    Example:
        >>> import torch
        >>> A = 0.9 * torch.eye(4)
        >>> z, info = anderson(lambda z: z @ A.T + 1.0, torch.zeros(2, 4), tol=1e-8, stop_mode="abs")
        >>> torch.allclose(z, torch.full((2, 4), 10.0), atol=1e-5)
        True
    """
    check_common("anderson", z0, max_iter, tol, stop_mode)
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"anderson: m must be a positive int, got {m!r}")
    if not 0.0 < float(beta) <= 1.0:
        raise ValueError(f"anderson: beta must be in (0, 1], got {beta!r}")
    if not float(lam) >= 0.0:
        raise ValueError(f"anderson: lam must be >= 0, got {lam!r}")
    g = flat_function("anderson", f, z0.shape)
    z = z0.reshape(z0.shape[0], -1)
    track = Tracker("anderson", z, tol, stop_mode, record, z0.shape)
    xs: List[Tensor] = []
    fs: List[Tensor] = []
    z_next = z
    for _ in range(max_iter):
        fz = g(z)
        go_on = track.update(z, fz)
        xs.append(z)
        fs.append(fz)
        if len(xs) > m:
            xs.pop(0)
            fs.pop(0)
        if len(xs) == 1:
            z_next = fz if beta == 1.0 else z + beta * (fz - z)
        else:
            X = torch.stack(xs, dim=1)
            F = torch.stack(fs, dim=1)
            alpha = anderson_weights(F - X, lam).unsqueeze(1)  # (N, 1, n)
            mixed_f = (alpha @ F).squeeze(1)
            z_next = mixed_f if beta == 1.0 else beta * mixed_f + (1.0 - beta) * (alpha @ X).squeeze(1)
        if not go_on:
            break
        z = track.freeze(z_next)
    return track.finish(z_next)


def _low_rank(us: List[Tensor], vs: List[Tensor], x: Tensor, transpose: bool = False) -> Tensor:
    """sum_i u_i (v_i . x)  (or sum_i v_i (u_i . x) when transpose), per sample; zero with no history."""
    if not us:
        return torch.zeros_like(x)
    U = torch.stack(us, dim=1)  # (N, n, d)
    V = torch.stack(vs, dim=1)
    if transpose:
        U, V = V, U
    coeff = torch.einsum("bnd,bd->bn", V, x)
    return torch.einsum("bn,bnd->bd", coeff, U)


def broyden(
    f: Callable[[Tensor], Tensor],
    z0: Tensor,
    *,
    max_iter: int = 50,
    tol: float = 1e-4,
    stop_mode: str = "rel",
    record: bool = False,
    memory: int = 20,
) -> Tuple[Tensor, SolverInfo]:
    """Quasi-Newton root finding on g(z) = f(z) - z with an inverse-Jacobian estimate of bounded memory.

    The inverse Jacobian of g is kept as -I + sum_i u_i v_i^T over at most ``memory`` rank-one updates, so
    memory does not grow with ``max_iter``: when the memory is full the estimate restarts from -I (dropping
    single old updates instead breaks the secant conditions and can diverge). The first step is a plain
    fixed-point step. An update whose denominator vanishes is skipped for that sample.

    Args:
        f, z0, max_iter, tol, stop_mode, record: as in :func:`~deqlib.solvers.fixed_point`.
        memory: number of rank-one updates kept (>= 1).

    Returns:
        (z, info) as for every solver: the best iterate per sample and a :class:`SolverInfo`.

    Example:
        >>> import torch
        >>> A = torch.tensor([[0.5, 0.2], [0.0, 0.8]])
        >>> z, info = broyden(lambda z: z @ A.T + 1.0, torch.zeros(1, 2), tol=1e-10, stop_mode="abs")
        >>> torch.allclose(z, torch.linalg.solve(torch.eye(2) - A, torch.ones(2)).unsqueeze(0), atol=1e-6)
        True
    """
    check_common("broyden", z0, max_iter, tol, stop_mode)
    if isinstance(memory, bool) or not isinstance(memory, int) or memory < 1:
        raise ValueError(f"broyden: memory must be a positive int, got {memory!r}")
    g = flat_function("broyden", f, z0.shape)
    z = z0.reshape(z0.shape[0], -1)
    track = Tracker("broyden", z, tol, stop_mode, record, z0.shape)
    eps = torch.finfo(z.dtype).eps
    us: List[Tensor] = []
    vs: List[Tensor] = []
    fz = g(z)
    gz = fz - z
    go_on = track.update(z, fz)
    z_next = fz
    for _ in range(max_iter - 1):
        if not go_on:
            break
        # Newton-like step: z_next = z - B^{-1} g(z), with B^{-1} = -I + U V^T.
        step = gz - _low_rank(us, vs, gz)
        z_next = track.freeze(z + step)
        fz_next = g(z_next)
        gz_next = fz_next - z_next
        go_on = track.update(z_next, fz_next)
        dz = z_next - z
        dg = gz_next - gz
        # Good Broyden: B^{-1} += (dz - B^{-1} dg) (dz^T B^{-1}) / (dz^T B^{-1} dg).
        vt = -dz + _low_rank(us, vs, dz, transpose=True)  # dz^T B^{-1}
        binv_dg = -dg + _low_rank(us, vs, dg)
        den = (vt * dg).sum(dim=1)
        ok = track.active & torch.isfinite(den) & (den.abs() > eps * vt.norm(dim=1) * dg.norm(dim=1))
        safe_den = torch.where(ok, den, torch.ones_like(den))
        u = torch.where(ok.unsqueeze(1), (dz - binv_dg) / safe_den.unsqueeze(1), torch.zeros_like(dz))
        v = torch.where(ok.unsqueeze(1), vt, torch.zeros_like(vt))
        if len(us) == memory:  # restart: forget the estimate rather than drop single updates
            us.clear()
            vs.clear()
        us.append(u)
        vs.append(v)
        z, gz = z_next, gz_next
    if go_on:
        z_next = z + (gz - _low_rank(us, vs, gz))
    return track.finish(z_next)
