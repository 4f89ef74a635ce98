"""Pictures of toy dynamics: maps of the plane and scalar maps.

- :func:`plot_vector_field` — the residual field F(z) = f(z) - z of a map of the plane;
- :func:`plot_level_sets` — level sets of a scalar function of the plane (e.g. a Lyapunov function);
- :func:`plot_cobweb` — the cobweb diagram of a scalar iteration z_{k+1} = g(z_k);
- :func:`plot_fixed_point_panel` — the fixed-point iteration of a map of the plane (field, trajectories, steps),
  what :func:`deqlib.widgets.fixed_point_explorer` redraws; its static counterparts for the web book:
  :func:`fixed_point_small_multiples` and :func:`fixed_point_animation`;
- :func:`cobweb_small_multiples` — several cobweb diagrams side by side;
- :func:`plot_equilibrium_curves` — the equilibrium z*(x) of a map of the plane along the inputs, and rho(J) there;
- :func:`plot_equilibrium_branches`, :func:`plot_sensitivity_blowup` — a fold: the fixed points near an input
  where a branch ends, and ||dz*/dx|| growing as the input approaches it.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import animation as mpl_animation
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._common import ArrayLike, PlaneMap, as_tensor, color_cycle, new_axes, plane_grid, to_numpy
from .solvers import plot_residuals
from .style import PALETTE
from .trajectories import iterate, plot_trajectories_2d, step_sizes

__all__ = [
    "plot_vector_field",
    "plot_level_sets",
    "plot_cobweb",
    "plot_fixed_point_panel",
    "fixed_point_small_multiples",
    "fixed_point_animation",
    "cobweb_small_multiples",
    "plot_equilibrium_curves",
    "plot_equilibrium_branches",
    "plot_sensitivity_blowup",
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


def cobweb_small_multiples(
    maps: Sequence[Tuple[Callable[[np.ndarray], np.ndarray], Sequence[float], str]],
    n_iter: int,
    *,
    panel_size: float = 3.4,
) -> Figure:
    """Cobweb diagrams side by side (at most three across), one per scalar map.

    Args:
        maps: (g, starts, title) per panel: a vectorised scalar map, its starts z_0, the panel's title.
        n_iter: the steps drawn from each start.

    Returns:
        the figure, one axes per map.
    """
    maps = list(maps)
    ncols = min(3, len(maps))
    nrows = int(np.ceil(len(maps) / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel_size * ncols, panel_size * nrows), layout="constrained", squeeze=False
    )
    for ax, (g, z0, title) in zip(axes.ravel(), maps):
        plot_cobweb(g, z0, n_iter, ax, title=title)
    for ax in axes.ravel()[len(maps) :]:
        fig.delaxes(ax)
    return fig


def _break_jumps(x: np.ndarray, y: np.ndarray, jumps: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Insert a NaN after every index in ``jumps`` so that a line plot leaves a gap there."""
    return np.insert(x.astype(float), jumps + 1, np.nan), np.insert(y.astype(float), jumps + 1, np.nan)


def plot_equilibrium_curves(
    xs: ArrayLike,
    curves: Dict[float, ArrayLike],
    rhos: Dict[float, ArrayLike],
    *,
    every: int = 20,
    gap: float = 0.3,
    figsize: Tuple[float, float] = (10.0, 4.2),
) -> Figure:
    """The followed equilibrium z*(x) of a map of the plane, for several weight scales, and rho(J) along it.

    Left: the path of z*(x) in the plane (a dot every ``every`` inputs). Right: rho(J) at z*(x) against x, with
    the line rho = 1 (above it the fixed point repels the plain iteration). Where consecutive equilibria are
    more than ``gap`` apart (a jump), both lines are broken instead of joined.

    Args:
        xs: the inputs, (N,).
        curves: scale -> equilibria, (N, 2); rhos: scale -> spectral radii, (N,).

    Returns:
        the figure, two axes.
    """
    x = to_numpy(xs).astype(float)
    fig, (ax_z, ax_rho) = plt.subplots(1, 2, figsize=figsize, layout="constrained")
    for s, z in curves.items():
        z = to_numpy(z).astype(float)
        jumps = np.flatnonzero(np.linalg.norm(np.diff(z, axis=0), axis=1) > gap)
        (line,) = ax_z.plot(*_break_jumps(z[:, 0], z[:, 1], jumps), label=f"$s = {s:g}$")
        ax_z.scatter(z[::every, 0], z[::every, 1], color=line.get_color(), s=14)
        ax_rho.plot(*_break_jumps(x, to_numpy(rhos[s]), jumps), color=line.get_color(), label=f"$s = {s:g}$")
    step = (x[every] - x[0]) if len(x) > every else 0.0
    ax_z.set(
        xlabel=r"$z^\star_1$",
        ylabel=r"$z^\star_2$",
        title=f"$z^\\star(x)$, $x$ from {x[0]:g} to {x[-1]:g} (dots every {step:g})",
    )
    ax_rho.axhline(1, color="black", lw=0.8, ls="--")
    ax_rho.set(xlabel="input $x$", ylabel=r"$\rho(J)$ at $z^\star(x)$", title="is the fixed point attracting?")
    ax_z.legend()
    ax_rho.legend()
    return fig


def plot_equilibrium_branches(
    x: ArrayLike,
    z: ArrayLike,
    attracting: ArrayLike,
    ax: Optional[Axes] = None,
    *,
    path: Optional[Tuple[ArrayLike, ArrayLike]] = None,
    fold: Optional[Tuple[float, float]] = None,
    ylabel: str = r"$z^\star_1$",
    path_label: str = "followed from the left",
) -> Axes:
    """Every fixed point found at each input: one coordinate against x, filled if it attracts, open if not.

    Args:
        x, z: the input and one coordinate of each fixed point found, (M,) each.
        attracting: (M,) booleans, rho(J) < 1 at that fixed point.
        path: (xs, zs) of the equilibrium a solver follows along the inputs, drawn as a line (``path_label``).
        fold: (x, z) of the point where a branch ends, marked with a cross.
    """
    ax = new_axes(ax, (5.0, 4.0))
    x, z, a = to_numpy(x).astype(float), to_numpy(z).astype(float), to_numpy(attracting).astype(bool)
    if path is not None:
        ax.plot(to_numpy(path[0]), to_numpy(path[1]), color=PALETTE[1], lw=1.5, label=path_label, zorder=1)
    ax.scatter(x[a], z[a], s=16, color=PALETTE[0], label=r"attracting, $\rho(J) < 1$", zorder=2)
    ax.scatter(x[~a], z[~a], s=16, facecolors="white", edgecolors=PALETTE[5], label="not attracting", zorder=2)
    if fold is not None:
        ax.plot(*fold, "x", color="black", ms=9, mew=2, label="fold: an eigenvalue of $J$ is 1", zorder=3)
    ax.set_xlabel("input $x$")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small", loc="lower right")
    return ax


def plot_sensitivity_blowup(
    distance: ArrayLike,
    sensitivity: ArrayLike,
    ax: Optional[Axes] = None,
    *,
    slope: float = -0.5,
) -> Axes:
    """||dz*/dx|| against the distance of the input to a fold, on log-log axes, with a guide of the given slope.

    Args:
        distance: x_fold - x > 0, (N,); sensitivity: ||dz*/dx|| there, (N,).
        slope: the slope of the guide line (a fold: ||dz*/dx|| ~ (x_fold - x)^(-1/2)), through the last point.
    """
    ax = new_axes(ax, (5.0, 4.0))
    dist, sens = to_numpy(distance).astype(float), to_numpy(sensitivity).astype(float)
    ax.loglog(dist, sens, "o-", color=PALETTE[0], ms=3, lw=1.2, label=r"$\|(I - J)^{-1} \partial f / \partial x\|$")
    guide = sens[-1] * (dist / dist[-1]) ** slope
    ax.loglog(dist, guide, "--", color="0.4", lw=1.0, label=f"slope ${slope:g}$")
    ax.invert_xaxis()  # the fold is on the right, as in the branch plot
    ax.set_xlabel(r"distance to the fold, $x_{\mathrm{fold}} - x$")
    ax.set_ylabel(r"$\|\partial z^\star / \partial x\|$")
    ax.legend(fontsize="small")
    return ax
