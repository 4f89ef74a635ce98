"""Limited-memory ("good") Broyden's method for the root of g(z) = f(z) - z."""

from __future__ import annotations

from typing import Callable, List, Tuple

import torch
from torch import Tensor

from .info import SolverInfo, Tracker, check_common, flat_function


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
