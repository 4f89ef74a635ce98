"""Anderson acceleration (type II, "Anderson mixing") with a per-sample history of m states."""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Tuple

import torch
from torch import Tensor

from .._validate import check_fraction, check_int, check_nonnegative
from .info import SolverInfo, Tracker, check_common, flat_function


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
    # Contiguous: the solver returns column-major solutions, with which batched products fall back to a slow loop.
    return torch.where(bad.unsqueeze(1), fallback, alpha).contiguous()


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
    check_common("anderson", z0, max_iter, tol, stop_mode, f=f, record=record)
    m = check_int(m, "m", "anderson", minimum=1)
    beta = check_fraction(beta, "beta", "anderson")
    lam = check_nonnegative(lam, "lam", "anderson")
    g = flat_function("anderson", f, z0.shape)
    z = z0.reshape(z0.shape[0], -1)
    track = Tracker("anderson", z, tol, stop_mode, record, z0.shape, max_iter=max_iter)
    fz = g(z)
    if torch.is_grad_enabled() and (z.requires_grad or fz.requires_grad):
        # Autograd records the solve (grad="unroll" differentiates through it): out-of-place history.
        return _anderson_lists(g, z, fz, track, max_iter, m, float(beta), float(lam))
    return _anderson_buffers(g, z, fz, track, max_iter, m, float(beta), float(lam))


def _anderson_lists(
    g: Callable[[Tensor], Tensor], z: Tensor, fz: Tensor, track: Tracker, max_iter: int, m: int, beta: float, lam: float
):
    """Anderson with the history kept as lists of tensors and stacked each step: autograd can go through it."""
    xs: List[Tensor] = []
    fs: List[Tensor] = []
    z_next = z
    for k in range(max_iter):
        if k:  # the first evaluation, f(z0), was made by the caller
            fz = g(z)
        go_on = track.update(z, fz)
        xs.append(z)
        fs.append(fz)
        if len(xs) > m:
            xs.pop(0)
            fs.pop(0)
        if not go_on:  # every sample stopped: the next iterate would be discarded
            return track.finish()
        if len(xs) == 1:
            z_next = fz if beta == 1.0 else z + beta * (fz - z)
        else:
            X = torch.stack(xs, dim=1)
            F = torch.stack(fs, dim=1)
            alpha = anderson_weights(F - X, lam).unsqueeze(1)  # (N, 1, n)
            mixed_f = (alpha @ F).squeeze(1)
            z_next = mixed_f if beta == 1.0 else beta * mixed_f + (1.0 - beta) * (alpha @ X).squeeze(1)
        z = track.freeze(z_next)
    return track.finish(z_next)


# size: one hot loop over views of the ring buffers; pieces would pass a dozen views per step.
def _anderson_buffers(
    g: Callable[[Tensor], Tensor], z: Tensor, fz: Tensor, track: Tracker, max_iter: int, m: int, beta: float, lam: float
):
    """The same iteration without autograd: the history lives in preallocated ring buffers written in place.

    The residuals G = f(z) - z are stored (computed once, shared with the tracker) next to f(z); the Gram matrix
    G G^T is updated one row per step inside a preallocated bordered system instead of recomputed; each view of
    the buffers is made once, when first needed; the fallback test costs two reductions unless it triggers. The order of the
    history columns is a rotation of the list version's, which changes nothing but rounding (the least-squares
    problem does not depend on the order of its columns).
    """
    n_batch, dim = z.shape
    mm = min(m, max_iter)
    F = z.new_empty(n_batch, mm, dim)
    G = z.new_empty(n_batch, mm, dim)
    X = z.new_empty(n_batch, mm, dim) if beta != 1.0 else None
    # Bordered system [[0, 1^T], [1, G G^T]] (the regularisation is added to a copy at each step).
    T = z.new_zeros(n_batch, mm + 1, mm + 1)
    T[:, 0, 1:] = 1.0
    T[:, 1:, 0] = 1.0
    gram = T[:, 1:, 1:]
    rhs = z.new_zeros(n_batch, mm + 1)
    rhs[:, 0] = 1.0
    onehot = torch.eye(mm, dtype=z.dtype, device=z.device)
    tiny = torch.finfo(z.dtype).tiny ** 0.5
    # Views made once, when first needed (a warm-started solve takes a few steps, and making every view of the
    # history up front cost more than those steps): column j of the buffers, the first n columns, and the pieces
    # of the bordered system.
    views: Dict[Tuple[int, int], Tuple[Tensor, ...]] = {}

    def view(j: int, n: int) -> Tuple[Tensor, ...]:
        got = views.get((j, n))
        if got is None:
            got = views[(j, n)] = (
                F[:, j],
                G[:, j],
                X[:, j] if X is not None else None,
                F[:, :n],
                X[:, :n] if X is not None else None,
                G[:, :n].transpose(1, 2),
                T[:, : n + 1, : n + 1],
                gram[:, j, :n],
                gram[:, :n, j],
                rhs[:, : n + 1],
            )
        return got

    z_next = z
    for k in range(max_iter):
        if k:  # the first evaluation, f(z0), was made by the caller
            fz = g(z)
        j = k % mm
        n = min(k + 1, mm)
        f_j, gj, x_j, f_first, x_first, gt_first, t_first, gram_row, gram_col, rhs_first = view(j, n)
        torch.sub(fz, z, out=gj)
        go_on = track.update(z, fz, gj)
        if not go_on:  # every sample stopped: the next iterate would be discarded
            return track.finish()
        f_j.copy_(fz)
        if x_j is not None:
            x_j.copy_(z)
        # (N, n): G_i . G_j for the stored columns i. Written as a row vector times G^T: on CPU the batched
        # matrix-vector product G @ g_j is up to 20x slower than g_j^T @ G^T (same numbers up to rounding).
        row = torch.bmm(gj.unsqueeze(1), gt_first).squeeze(1)
        gram_row.copy_(row)
        gram_col.copy_(row)
        if n == 1:
            z_next = fz if beta == 1.0 else z + beta * gj
        else:
            An = t_first.clone()
            H = An[:, 1:, 1:]
            diag = H.diagonal(dim1=1, dim2=2)
            scale = diag.mean(dim=1)
            diag.add_((lam * scale + tiny).unsqueeze(1))
            sol, status = torch.linalg.solve_ex(An, rhs_first)
            # Contiguous: solve_ex returns column-major solutions (batch stride 1), with which the batched
            # products below fall back to a per-sample loop, ~15x slower at batch 256.
            alpha = sol[:, 1:].contiguous()
            if bool(status.any()) or not math.isfinite(float(alpha.sum())):
                # Fallback where the system is singular: a plain fixed-point step from the newest iterate (column j).
                bad = (status != 0) | ~torch.isfinite(alpha).all(dim=1)
                alpha = torch.where(bad.unsqueeze(1), onehot[j, :n], alpha)
            alpha = alpha.unsqueeze(1)  # (N, 1, n)
            mixed_f = torch.bmm(alpha, f_first).squeeze(1)
            if beta == 1.0:
                z_next = mixed_f
            else:
                z_next = beta * mixed_f + (1.0 - beta) * torch.bmm(alpha, x_first).squeeze(1)
        z = track.freeze(z_next)
    return track.finish(z_next)
