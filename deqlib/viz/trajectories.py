"""The raw weight-tied iteration and its trajectories, for pictures.

- :func:`iterate` — every state of z_{k+1} = f(z_k) (no stopping rule, no damping);
- :func:`step_sizes` — ||z_{k+1} - z_k|| per sample and step;
- :func:`project_2d` — high-dimensional states onto their two principal directions;
- :func:`plot_trajectories_2d` — one polyline per sample through its iterates, in the plane.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch
from matplotlib.axes import Axes

from ._common import ArrayLike, as_tensor, color_cycle, new_axes, to_numpy

__all__ = ["iterate", "step_sizes", "project_2d", "plot_trajectories_2d"]


@torch.no_grad()
def iterate(f: Callable[[torch.Tensor], torch.Tensor], z0: ArrayLike, n_iter: int) -> torch.Tensor:
    """Apply ``f`` ``n_iter`` times from ``z0`` and return every state, ``(n_iter + 1, *z0.shape)``.

    No stopping rule, no damping: the raw weight-tied dynamics z_{k+1} = f(z_k), for pictures.
    Use :mod:`deqlib.solvers` to *solve* for a fixed point.
    """
    if int(n_iter) < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    z = as_tensor(z0)
    states = [z]
    for _ in range(int(n_iter)):
        z = f(z)
        states.append(z)
    return torch.stack(states)


def step_sizes(traj: ArrayLike) -> np.ndarray:
    """||z_{k+1} - z_k|| per sample and step of a trajectory (K+1, N, ...): an (N, K) array.

    For the plain iteration z_{k+1} = f(z_k) this is the absolute residual ||f(z_k) - z_k||.
    """
    t = to_numpy(traj).astype(float)
    if t.ndim < 2:
        raise ValueError(f"expected a trajectory (K+1, N, ...), got shape {t.shape}")
    diff = np.diff(t.reshape(t.shape[0], t.shape[1], -1), axis=0)
    return np.linalg.norm(diff, axis=-1).T


def project_2d(traj: ArrayLike, *, center: bool = True) -> np.ndarray:
    """Project a trajectory of high-dimensional states ``(K+1, N, *state)`` onto its two principal directions.

    All states of all samples share one projection, so distances are comparable across samples.
    Returns a (K+1, N, 2) array.
    """
    t = to_numpy(traj).astype(float)
    if t.ndim < 3:
        raise ValueError(f"expected (K+1, N, *state), got shape {t.shape}")
    flat = t.reshape(t.shape[0] * t.shape[1], -1)
    mean = flat.mean(axis=0) if center else np.zeros(flat.shape[1])
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
    basis = vt[:2].T
    if basis.shape[1] < 2:
        basis = np.pad(basis, ((0, 0), (0, 2 - basis.shape[1])))
    return ((flat - mean) @ basis).reshape(t.shape[0], t.shape[1], 2)


def plot_trajectories_2d(
    traj: ArrayLike,
    ax: Optional[Axes] = None,
    *,
    colors: Optional[Sequence] = None,
    labels: Optional[Sequence[str]] = None,
    lw: float = 0.9,
    ms: float = 2.5,
    show_start: bool = True,
    show_end: bool = True,
    xlim: Optional[Tuple[float, float]] = None,
    ylim: Optional[Tuple[float, float]] = None,
) -> Axes:
    """Draw trajectories in the plane: one polyline per sample through its iterates.

    Args:
        traj: (K+1, N, 2) states; higher-dimensional states should go through :func:`project_2d` first.
        colors: one colour per sample (default: the colour cycle).
        show_start, show_end: open circle at z_0, filled dot at z_K.
    """
    ax = new_axes(ax, (4.0, 4.0))
    t = to_numpy(traj).astype(float)
    if t.ndim != 3 or t.shape[-1] != 2:
        raise ValueError(f"expected a trajectory of shape (K+1, N, 2), got {t.shape}")
    cycle = color_cycle()
    for i in range(t.shape[1]):
        c = colors[i % len(colors)] if colors is not None else cycle[i % len(cycle)]
        ax.plot(t[:, i, 0], t[:, i, 1], "-", color=c, lw=lw, alpha=0.8, label=None if labels is None else labels[i])
        ax.plot(t[1:, i, 0], t[1:, i, 1], ".", color=c, ms=ms)
        if show_start:
            ax.plot(t[0, i, 0], t[0, i, 1], "o", mfc="white", mec=c, ms=5, mew=1.2)
        if show_end:
            ax.plot(t[-1, i, 0], t[-1, i, 1], "o", color=c, ms=6, mec="black", mew=0.6, zorder=5)
    if xlim:
        ax.set_xlim(*xlim)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    if labels is not None:
        ax.legend(fontsize="small")
    return ax
