"""Limited-memory ("good") Broyden's method for the root of g(z) = f(z) - z."""

from __future__ import annotations

from typing import Callable, List, Tuple

import torch
from torch import Tensor

from .._validate import check_int
from .info import SolverInfo, Tracker, check_common, flat_function


def low_rank_product(us: List[Tensor], vs: List[Tensor], x: Tensor, transpose: bool = False) -> Tensor:
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
    single old updates instead breaks the secant conditions and can diverge), and that step's rank-one update is
    computed from -I, so that the restarted estimate satisfies the newest secant condition B^{-1} dg = dz. The
    first step is a plain fixed-point step. An update whose denominator vanishes is skipped for that sample.

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
    check_common("broyden", z0, max_iter, tol, stop_mode, f=f, record=record)
    memory = check_int(memory, "memory", "broyden", minimum=1)
    g = flat_function("broyden", f, z0.shape)
    z = z0.reshape(z0.shape[0], -1)
    track = Tracker("broyden", z, tol, stop_mode, record, z0.shape, max_iter=max_iter)
    fz = g(z)
    if torch.is_grad_enabled() and (z.requires_grad or fz.requires_grad):
        # Autograd records the solve (grad="unroll" differentiates through it): out-of-place history.
        return _broyden_lists(g, z, fz, track, max_iter, memory)
    return _broyden_buffers(g, z, fz, track, max_iter, memory)


def _update_pair(
    track: Tracker, dz: Tensor, dg: Tensor, vt: Tensor, binv_dg: Tensor, eps: float
) -> Tuple[Tensor, Tensor]:
    """The rank-one update (u, v) of the inverse-Jacobian estimate, zero for samples where it is skipped."""
    den = (vt * dg).sum(dim=1)
    ok = track.active & torch.isfinite(den) & (den.abs() > eps * vt.norm(dim=1) * dg.norm(dim=1))
    safe_den = torch.where(ok, den, 1.0)
    ok = ok.unsqueeze(1)
    u = torch.where(ok, (dz - binv_dg) / safe_den.unsqueeze(1), 0.0)
    v = torch.where(ok, vt, 0.0)
    return u, v


def _broyden_lists(g: Callable[[Tensor], Tensor], z: Tensor, fz: Tensor, track: Tracker, max_iter: int, memory: int):
    """Broyden with the rank-one updates kept as lists and stacked at each use: autograd can go through it."""
    eps = torch.finfo(z.dtype).eps
    us: List[Tensor] = []
    vs: List[Tensor] = []
    gz = fz - z
    go_on = track.update(z, fz, gz)
    z_next = fz
    for _ in range(max_iter - 1):
        if not go_on:
            break
        # Newton-like step: z_next = z - B^{-1} g(z), with B^{-1} = -I + U V^T.
        step = gz - low_rank_product(us, vs, gz)
        z_next = track.freeze(z + step)
        fz_next = g(z_next)
        gz_next = fz_next - z_next
        go_on = track.update(z_next, fz_next, gz_next)
        if not go_on:  # every sample stopped: the update would not be used
            break
        dz = z_next - z
        dg = gz_next - gz
        if len(us) == memory:  # restart from -I (rather than drop single updates), before this step's update
            us.clear()
            vs.clear()
        # Good Broyden: B^{-1} += (dz - B^{-1} dg) (dz^T B^{-1}) / (dz^T B^{-1} dg), with the estimate in force.
        vt = -dz + low_rank_product(us, vs, dz, transpose=True)  # dz^T B^{-1}
        binv_dg = -dg + low_rank_product(us, vs, dg)
        u, v = _update_pair(track, dz, dg, vt, binv_dg, eps)
        us.append(u)
        vs.append(v)
        z, gz = z_next, gz_next
    if go_on:
        z_next = z + (gz - low_rank_product(us, vs, gz))
    return track.finish(z_next)


def _broyden_buffers(g: Callable[[Tensor], Tensor], z: Tensor, fz: Tensor, track: Tracker, max_iter: int, memory: int):
    """The same iteration without autograd, with the rank-one updates in preallocated (N, memory, d) buffers.

    The list version stacks its history into new (N, n, d) tensors for each of its three low-rank products per
    step. Here the products read the buffers in place, u and v are written into them, and one product per step
    is saved: B^{-1} g(z) of the next step is B^{-1} g(z_next) of this one plus the new rank-one term, and
    B^{-1} (g(z_next) - g(z)) is the difference of the two. Same iterates up to rounding.
    """
    eps = torch.finfo(z.dtype).eps
    n_batch, dim = z.shape
    cap = max(1, min(memory, max_iter - 1))  # at most max_iter - 1 updates are ever made
    U = z.new_empty(n_batch, cap, dim)
    V = z.new_empty(n_batch, cap, dim)
    # Views made once: row i of the buffers, their first n rows and those transposed.
    U_row, V_row = [U[:, i] for i in range(cap)], [V[:, i] for i in range(cap)]
    U_first, V_first = [U[:, :n] for n in range(cap + 1)], [V[:, :n] for n in range(cap + 1)]
    UT_first = [u.transpose(1, 2) for u in U_first]
    VT_first = [v.transpose(1, 2) for v in V_first]
    n = 0

    def low_rank(x: Tensor, transpose: bool = False) -> Tensor:
        """sum_i u_i (v_i . x), or sum_i v_i (u_i . x) when transpose; zero with no history."""
        if n == 0:
            return torch.zeros_like(x)
        # Row vector times A^T (not A @ column vector: that form is many times slower on CPU).
        if transpose:
            return torch.bmm(torch.bmm(x.unsqueeze(1), UT_first[n]), V_first[n]).squeeze(1)
        return torch.bmm(torch.bmm(x.unsqueeze(1), VT_first[n]), U_first[n]).squeeze(1)

    gz = fz - z
    go_on = track.update(z, fz, gz)
    lr_gz = torch.zeros_like(gz)  # U V^T g(z) with the current history
    z_next = fz
    for _ in range(max_iter - 1):
        if not go_on:
            break
        step = gz - lr_gz
        z_next = track.freeze(z + step)
        fz_next = g(z_next)
        gz_next = fz_next - z_next
        go_on = track.update(z_next, fz_next, gz_next)
        if not go_on:  # every sample stopped: the update would not be used
            break
        dz = z_next - z
        dg = gz_next - gz
        if n == memory:  # restart from -I (rather than drop single updates): this step's update is made from -I
            n, lr_gz = 0, torch.zeros_like(gz)
        lr_gz_next = low_rank(gz_next)
        vt = -dz + low_rank(dz, transpose=True)
        binv_dg = -dg + (lr_gz_next - lr_gz)
        u, v = _update_pair(track, dz, dg, vt, binv_dg, eps)
        U_row[n].copy_(u)
        V_row[n].copy_(v)
        n += 1
        lr_gz_next = lr_gz_next + u * (v * gz_next).sum(dim=1, keepdim=True)
        z, gz, lr_gz = z_next, gz_next, lr_gz_next
    if go_on:
        z_next = z + (gz - lr_gz)
    return track.finish(z_next)
