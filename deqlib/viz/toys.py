"""Pictures of toy dynamics: maps of the plane and scalar maps.

- :func:`plot_vector_field` — the residual field F(z) = f(z) - z of a map of the plane;
- :func:`plot_level_sets` — level sets of a scalar function of the plane (e.g. a Lyapunov function);
- :func:`plot_cobweb` — the cobweb diagram of a scalar iteration z_{k+1} = g(z_k);
- :func:`plot_fixed_point_panel` — the fixed-point iteration of a map of the plane (field, trajectories, steps),
  what :func:`deqlib.widgets.fixed_point_explorer` redraws; its static counterparts for the web book:
  :func:`fixed_point_small_multiples` and :func:`fixed_point_animation`.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple, Union

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import animation as mpl_animation
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._common import ArrayLike, PlaneMap, as_tensor, color_cycle, new_axes, plane_grid, to_numpy
from .solvers import plot_residuals
from .trajectories import iterate, plot_trajectories_2d, step_sizes

__all__ = [
    "plot_vector_field",
    "plot_level_sets",
    "plot_cobweb",
    "plot_fixed_point_panel",
    "fixed_point_small_multiples",
    "fixed_point_animation",
]


@torch.no_grad()
def plot_vector_field(
    f: PlaneMap,
    ax: Optional[Axes] = None,
    *,
    xlim: Tuple[float, float] = (-1.0, 1.0),
    ylim: Tuple[float, float] = (-1.0, 1.0),
    n: int = 15,
    color: str = "0.65",
    normalize: bool = True,
) -> Axes:
    """Arrows of the residual map F(z) = f(z) - z on an n x n grid: where one iteration moves each point.

    Args:
        f: a map of the plane, called once on an (n*n, 2) float64 tensor.
        normalize: draw unit arrows (directions only) so that short steps near a fixed point stay visible.
    """
    ax = new_axes(ax, (4.0, 4.0))
    gx, gy, pts = plane_grid(xlim, ylim, n)
    step = to_numpy(f(pts)).astype(float) - to_numpy(pts)
    u, v = step[:, 0].reshape(gx.shape), step[:, 1].reshape(gx.shape)
    if normalize:
        norm = np.hypot(u, v)
        norm[norm == 0] = 1.0
        u, v = u / norm, v / norm
    arrows = dict(angles="xy", pivot="mid", width=0.004, headwidth=3.5, zorder=0)
    ax.quiver(gx, gy, u, v, color=color, scale=n * 1.3 if normalize else None, **arrows)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal", adjustable="box")
    return ax


@torch.no_grad()
def plot_level_sets(
    V: Callable[[torch.Tensor], ArrayLike],
    ax: Optional[Axes] = None,
    *,
    xlim: Tuple[float, float] = (-1.0, 1.0),
    ylim: Tuple[float, float] = (-1.0, 1.0),
    n: int = 101,
    levels: Union[int, Sequence[float]] = 10,
    filled: bool = True,
    cmap: str = "Blues",
    colorbar: bool = False,
) -> Axes:
    """Level sets of a scalar function of the plane (e.g. a Lyapunov function V: (M, 2) -> (M,))."""
    ax = new_axes(ax, (4.0, 4.0))
    gx, gy, pts = plane_grid(xlim, ylim, n)
    vals = to_numpy(V(pts)).astype(float).reshape(gx.shape)
    if filled:
        cs = ax.contourf(gx, gy, vals, levels=levels, cmap=cmap, alpha=0.8)
        ax.contour(gx, gy, vals, levels=cs.levels, colors="k", linewidths=0.3, alpha=0.5)
    else:
        cs = ax.contour(gx, gy, vals, levels=levels, cmap=cmap)
    if colorbar:
        ax.figure.colorbar(cs, ax=ax, shrink=0.8)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal", adjustable="box")
    return ax


def plot_cobweb(
    g: Callable[[np.ndarray], np.ndarray],
    z0: Union[float, Sequence[float]],
    n_iter: int,
    ax: Optional[Axes] = None,
    *,
    zlim: Tuple[float, float] = (-1.2, 1.2),
    title: Optional[str] = None,
    colors: Optional[Sequence] = None,
) -> Axes:
    """Cobweb diagram of the scalar iteration z_{k+1} = g(z_k): the graph of g, the diagonal, and the path.

    Fixed points are where the graph of g meets the diagonal; the path of each start in ``z0`` alternates
    vertical moves (apply g) and horizontal moves (back to the diagonal).

    Args:
        g: vectorised scalar map on NumPy arrays.
        z0: one start or several.
    """
    ax = new_axes(ax, (3.6, 3.6))
    zz = np.linspace(*zlim, 400)
    ax.plot(zz, g(zz), color="black", lw=1.6, label="$g(z)$")
    ax.plot(zz, zz, color="0.5", lw=1.0, ls="--", label="$z$")
    cycle = color_cycle()
    for j, start in enumerate(np.atleast_1d(np.asarray(z0, dtype=float))):
        c = colors[j % len(colors)] if colors is not None else cycle[(j + 1) % len(cycle)]
        z = start
        xs, ys = [z], [z]
        for _ in range(int(n_iter)):
            z_next = float(g(np.asarray(z)))
            xs += [z, z_next]
            ys += [z_next, z_next]
            z = z_next
        ax.plot(xs, ys, color=c, lw=1.0, alpha=0.9)
        ax.plot(start, start, "o", mfc="white", mec=c, ms=5)
        ax.plot(z, z, "o", color=c, mec="black", mew=0.6, ms=6, zorder=5)
    ax.set_xlim(*zlim)
    ax.set_ylim(*zlim)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("$z_k$")
    ax.set_ylabel("$z_{k+1}$")
    if title:
        ax.set_title(title)
    return ax


def plot_fixed_point_panel(
    f: PlaneMap,
    z0: ArrayLike,
    n_iter: int,
    ax_plane: Optional[Axes] = None,
    ax_residual: Optional[Axes] = None,
    *,
    xlim: Tuple[float, float] = (-1.05, 1.05),
    ylim: Tuple[float, float] = (-1.05, 1.05),
    title: Optional[str] = None,
    residual_ylim: Tuple[float, float] = (1e-8, 10.0),
    field: bool = True,
) -> torch.Tensor:
    """The fixed-point iteration of a map of the plane, seen two ways.

    Left (``ax_plane``): the residual field F(z) = f(z) - z and the trajectories z_0, ..., z_K from each start.
    Right (``ax_residual``, optional): the step ||z_{k+1} - z_k|| of each trajectory against k.

    Returns:
        the trajectory, (n_iter + 1, N, 2).
    """
    ax_plane = new_axes(ax_plane, (4.0, 4.0))
    traj = iterate(f, as_tensor(z0), n_iter)
    if field:
        plot_vector_field(f, ax_plane, xlim=xlim, ylim=ylim)
    plot_trajectories_2d(traj, ax_plane, xlim=xlim, ylim=ylim)
    if title:
        ax_plane.set_title(title)
    if ax_residual is not None and n_iter > 0:
        plot_residuals(
            step_sizes(traj), ax=ax_residual, start=0, lw=1.0, ylabel=r"$\|z_{k+1} - z_k\|$", xlabel="iteration $k$"
        )
        ax_residual.set_ylim(*residual_ylim)
        ax_residual.set_xlim(0, max(n_iter, 1))
    return traj


def fixed_point_small_multiples(
    make_f: Callable[[float], PlaneMap],
    z0: ArrayLike,
    values: Sequence[float],
    n_iter: int,
    *,
    label: str = "s",
    ncols: int = 4,
    panel_size: float = 2.6,
    **panel_kw,
) -> Figure:
    """One plane panel per parameter value (e.g. the weight scale): the static view of an explorer."""
    values = list(values)
    nrows = int(np.ceil(len(values) / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel_size * ncols, panel_size * nrows), layout="constrained", squeeze=False
    )
    for ax, v in zip(axes.ravel(), values):
        plot_fixed_point_panel(make_f(v), z0, n_iter, ax, title=f"${label} = {v:g}$", **panel_kw)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(labelsize="small")
    for ax in axes.ravel()[len(values) :]:
        ax.axis("off")
    return fig


def fixed_point_animation(
    make_f: Callable[[float], PlaneMap],
    z0: ArrayLike,
    values: Sequence[float],
    n_iter: int,
    *,
    label: str = "s",
    figsize: Tuple[float, float] = (7.0, 3.2),
    dpi: int = 72,
    interval_ms: int = 900,
    **panel_kw,
) -> mpl_animation.FuncAnimation:
    """An animation over a parameter (e.g. the weight scale): each frame is :func:`plot_fixed_point_panel`.

    Keep it small for the web book: few ``values`` (frames) and a low ``dpi``. In a notebook, close its figure
    (it is only the frame buffer) and display the player: ``plt.close(); HTML(anim.to_jshtml())``. The web
    book's build makes that player load nothing from another host (``book/_ext/book_html.py``).
    """
    values = list(values)
    if not values:
        raise ValueError("values must not be empty")
    fig, (ax_p, ax_r) = plt.subplots(
        1, 2, figsize=figsize, dpi=dpi, layout="constrained", gridspec_kw={"width_ratios": [1, 1.25]}
    )

    def draw(i: int):
        ax_p.clear()
        ax_r.clear()
        v = values[i]
        plot_fixed_point_panel(make_f(v), z0, n_iter, ax_p, ax_r, title=f"${label} = {v:g}$", **panel_kw)
        ax_r.set_title(f"{n_iter} iterations")
        return []

    draw(0)
    return mpl_animation.FuncAnimation(fig, draw, frames=len(values), interval=interval_ms, blit=False)
