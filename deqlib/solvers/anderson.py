"""Anderson acceleration (type II, "Anderson mixing") with a per-sample history of m states."""

from __future__ import annotations

from typing import Callable, List, Tuple

import torch
from torch import Tensor

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
