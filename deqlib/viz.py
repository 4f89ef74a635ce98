"""Matplotlib figures for deep equilibrium models.

Plain matplotlib: nothing here knows about notebooks or widgets (``deqlib.widgets`` builds on these
functions). Every ``plot_*`` function draws into the axes it is given (or a new one) and returns them;
functions that make whole figures return the figure. Inputs may be torch tensors or NumPy arrays.

- residual curves: :func:`plot_residuals`
- trajectories of a solver in the plane, or projected onto two principal components:
  :func:`plot_trajectories_2d`, :func:`project_2d`
- 2-D toy dynamics: :func:`plot_vector_field`, :func:`plot_level_sets`, :func:`plot_fixed_point_panel`,
  their static counterparts for the web book :func:`fixed_point_small_multiples`,
  :func:`fixed_point_animation` and :func:`animation_to_html`
- 1-D maps: :func:`plot_cobweb`
- solver residual traces, per sample: :func:`plot_solver_trace`, and their small multiples
  :func:`solver_trace_grid` (the static counterpart of :func:`deqlib.widgets.solver_explorer`)
- robustness: :func:`plot_entropy_along_iterations`, :func:`plot_robust_accuracy`

Example:
    >>> import torch
    >>> from deqlib import viz
    >>> traj = viz.iterate(lambda z: torch.tanh(0.5 * z + 0.3), torch.zeros(4, 2), n_iter=10)
    >>> tuple(traj.shape)
    (11, 4, 2)
    >>> ax = viz.plot_trajectories_2d(traj)
"""

from __future__ import annotations

import re
from typing import Callable, List, Mapping, Optional, Sequence, Tuple, Union

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import animation as mpl_animation
from matplotlib.axes import Axes
from matplotlib.figure import Figure

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[float]]
#: A map of the plane: (M, 2) float64 tensor -> (M, 2) tensor (or array).
PlaneMap = Callable[[torch.Tensor], ArrayLike]

__all__ = [
    "to_numpy",
    "iterate",
    "step_sizes",
    "plot_residuals",
    "plot_trajectories_2d",
    "project_2d",
    "plot_vector_field",
    "plot_level_sets",
    "plot_cobweb",
    "plot_fixed_point_panel",
    "fixed_point_small_multiples",
    "fixed_point_animation",
    "animation_to_html",
    "plot_entropy_along_iterations",
    "plot_robust_accuracy",
    "plot_solver_trace",
    "solver_trace_grid",
]


# ------------------------------------------------------------------------------------------ helpers
def to_numpy(a: ArrayLike) -> np.ndarray:
    """A NumPy copy of a tensor (detached, on the CPU) or array-like."""
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _axes(ax: Optional[Axes], figsize: Tuple[float, float] = (5.0, 3.5)) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _curves(data: Union[ArrayLike, Sequence[ArrayLike]]) -> List[np.ndarray]:
    """One 1-D array per curve, from a 1-D array, a 2-D array (rows are curves) or a list of 1-D arrays."""
    if isinstance(data, (np.ndarray, torch.Tensor)):
        arr = to_numpy(data).astype(float)
        if arr.ndim == 1:
            return [arr]
        if arr.ndim == 2:
            return [row for row in arr]
        raise ValueError(f"expected a 1-D or 2-D array of curves, got shape {arr.shape}")
    return [to_numpy(c).astype(float).reshape(-1) for c in data]


@torch.no_grad()
def iterate(f: Callable[[torch.Tensor], torch.Tensor], z0: ArrayLike, n_iter: int) -> torch.Tensor:
    """Apply ``f`` ``n_iter`` times from ``z0`` and return every state, (n_iter + 1, *z0.shape).

    No stopping rule, no damping: the raw weight-tied dynamics z_{k+1} = f(z_k), for pictures.
    Use :mod:`deqlib.solvers` to *solve* for a fixed point.
    """
    if int(n_iter) < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    z = z0 if isinstance(z0, torch.Tensor) else torch.as_tensor(np.asarray(z0), dtype=torch.float64)
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


# ------------------------------------------------------------------------------------------ curves
def plot_residuals(
    traces: Union[ArrayLike, Sequence[ArrayLike]],
    labels: Optional[Sequence[str]] = None,
    ax: Optional[Axes] = None,
    *,
    logy: bool = True,
    start: int = 0,
    xlabel: str = "iteration $k$",
    ylabel: str = "residual",
    title: Optional[str] = None,
    colors: Optional[Sequence] = None,
    **line_kw,
) -> Axes:
    """Residual (or any per-iteration quantity) against the iteration number, one line per curve.

    Args:
        traces: a 1-D array, a 2-D array whose rows are curves (e.g. ``info.trace``), or a list of 1-D arrays.
            NaNs (a sample that stopped) are left as gaps.
        labels: one label per curve; a legend is drawn when given.
        logy: logarithmic y axis (zeros are not drawn).
        start: iteration number of the first entry.
    """
    ax = _axes(ax)
    curves = _curves(traces)
    if labels is not None and len(labels) != len(curves):
        raise ValueError(f"{len(labels)} labels for {len(curves)} curves")
    for i, c in enumerate(curves):
        y = np.where(c > 0, c, np.nan) if logy else c
        kw = dict(lw=1.5)
        kw.update(line_kw)
        if colors is not None:
            kw["color"] = colors[i % len(colors)]
        ax.plot(np.arange(start, start + len(c)), y, label=None if labels is None else labels[i], **kw)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if labels is not None:
        ax.legend(fontsize="small")
    ax.grid(True, which="major", alpha=0.3)
    return ax


def plot_entropy_along_iterations(
    entropy: Union[ArrayLike, Sequence[ArrayLike]],
    labels: Optional[Sequence[str]] = None,
    ax: Optional[Axes] = None,
    *,
    start: int = 1,
    ylabel: str = "prediction entropy (nats)",
    title: Optional[str] = None,
) -> Axes:
    """Entropy of the predictions read from the intermediate states z_k against k (one line per curve)."""
    return plot_residuals(entropy, labels, ax, logy=False, start=start, ylabel=ylabel, title=title, marker="o", ms=3)


def plot_robust_accuracy(
    eps: ArrayLike,
    curves: Mapping[str, ArrayLike],
    ax: Optional[Axes] = None,
    *,
    eps_scale: Optional[float] = 255.0,
    percent: bool = True,
    title: Optional[str] = None,
) -> Axes:
    """Accuracy against the attack budget epsilon, one line per model or attack.

    Args:
        eps: the budgets, in pixel units of [0, 1].
        curves: name -> accuracies (fractions in [0, 1]), one per budget.
        eps_scale: label the x axis in units of 1/eps_scale (e.g. "8/255"); None for raw values.
        percent: show accuracies in percent.
    """
    ax = _axes(ax)
    e = to_numpy(eps).astype(float)
    x = e * eps_scale if eps_scale else e
    for name, acc in curves.items():
        a = to_numpy(acc).astype(float)
        if a.shape != e.shape:
            raise ValueError(f"curve {name!r} has {a.shape} values for {e.shape} budgets")
        ax.plot(x, 100 * a if percent else a, marker="o", ms=4, label=name)
    ax.set_xlabel(f"$\\varepsilon$ (x 1/{eps_scale:g})" if eps_scale else "$\\varepsilon$")
    ax.set_ylabel("accuracy (%)" if percent else "accuracy")
    ax.set_ylim(0, 100 if percent else 1)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return ax


# ------------------------------------------------------------------------------------------ planes
def project_2d(traj: ArrayLike, *, center: bool = True) -> np.ndarray:
    """Project a trajectory of high-dimensional states (K+1, N, *state) onto its two principal directions.

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
    ax = _axes(ax, (4.0, 4.0))
    t = to_numpy(traj).astype(float)
    if t.ndim != 3 or t.shape[-1] != 2:
        raise ValueError(f"expected a trajectory of shape (K+1, N, 2), got {t.shape}")
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
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


def _grid(xlim: Tuple[float, float], ylim: Tuple[float, float], n: int) -> Tuple[np.ndarray, np.ndarray, torch.Tensor]:
    gx, gy = np.meshgrid(np.linspace(*xlim, n), np.linspace(*ylim, n))
    pts = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], axis=1), dtype=torch.float64)
    return gx, gy, pts


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
    ax = _axes(ax, (4.0, 4.0))
    gx, gy, pts = _grid(xlim, ylim, n)
    step = to_numpy(f(pts)).astype(float) - to_numpy(pts)
    u, v = step[:, 0].reshape(gx.shape), step[:, 1].reshape(gx.shape)
    if normalize:
        norm = np.hypot(u, v)
        norm[norm == 0] = 1.0
        u, v = u / norm, v / norm
    ax.quiver(
        gx,
        gy,
        u,
        v,
        color=color,
        angles="xy",
        pivot="mid",
        width=0.004,
        headwidth=3.5,
        scale=n * 1.3 if normalize else None,
        zorder=0,
    )
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
    ax = _axes(ax, (4.0, 4.0))
    gx, gy, pts = _grid(xlim, ylim, n)
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


# ------------------------------------------------------------------------------------------ 1-D maps
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
    ax = _axes(ax, (3.6, 3.6))
    zz = np.linspace(*zlim, 400)
    ax.plot(zz, g(zz), color="black", lw=1.6, label="$g(z)$")
    ax.plot(zz, zz, color="0.5", lw=1.0, ls="--", label="$z$")
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
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


# ------------------------------------------------------------------------------------------ toy panels
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
    ax_plane = _axes(ax_plane, (4.0, 4.0))
    z0_t = z0 if isinstance(z0, torch.Tensor) else torch.as_tensor(np.asarray(z0), dtype=torch.float64)
    traj = iterate(f, z0_t, n_iter)
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

    Keep it small for the web book: few ``values`` (frames) and a low ``dpi``; render it with
    :func:`animation_to_html`.
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


#: Text symbols for the player buttons of ``to_jshtml`` (matplotlib draws them with Font Awesome from a CDN).
_PLAYER_ICONS = {
    "fa-minus": "&minus;",
    "fa-fast-backward": "&#x21E4;",  # leftwards arrow to bar
    "fa-step-backward": "&lsaquo;",
    "fa-play fa-flip-horizontal": "&#x25C0;",  # black left-pointing triangle
    "fa-pause": "&#x275A;&#x275A;",
    "fa-play": "&#x25B6;",
    "fa-step-forward": "&rsaquo;",
    "fa-fast-forward": "&#x21E5;",  # rightwards arrow to bar
    "fa-plus": "+",
}


def animation_to_html(anim: mpl_animation.Animation, *, default_mode: str = "loop") -> str:
    """Self-contained HTML for an animation (frames embedded as PNG, JavaScript player); closes its figure.

    Unlike plain ``anim.to_jshtml()``, the result loads nothing from another host: matplotlib's player links
    a Font Awesome stylesheet on a CDN for its button icons, which are replaced here by text symbols.
    """
    try:
        html = anim.to_jshtml(default_mode=default_mode)
    finally:
        plt.close(anim._fig)  # the figure is only a frame buffer: do not show it a second time
    html = re.sub(r"<link[^>]*font-awesome[^>]*>\s*", "", html)
    for cls, symbol in _PLAYER_ICONS.items():
        html = html.replace(f'<i class="fa {cls}"></i>', f'<span class="anim-icon" aria-hidden="true">{symbol}</span>')
    return html


# ------------------------------------------------------------------------------------------ solver traces
def _trace_arrays(info) -> Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray], Optional[float]]:
    """(trace (N, K), converged (N,) or None, diverged (N,) or None, tol or None) from a SolverInfo or an array."""
    if hasattr(info, "trace"):
        trace = to_numpy(info.trace).astype(float)
        conv = to_numpy(info.converged).astype(bool) if getattr(info, "converged", None) is not None else None
        div = to_numpy(info.diverged).astype(bool) if getattr(info, "diverged", None) is not None else None
        return trace, conv, div, getattr(info, "tol", None)
    trace = to_numpy(info).astype(float)
    if trace.ndim == 1:
        trace = trace[None]
    if trace.ndim != 2:
        raise ValueError(f"expected a SolverInfo or an (N, K) array of residuals, got shape {trace.shape}")
    return trace, None, None, None


def plot_solver_trace(
    info,
    ax: Optional[Axes] = None,
    *,
    tol: Optional[float] = None,
    max_lines: int = 32,
    color: Optional[str] = None,
    title: Optional[str] = None,
    ylim: Optional[Tuple[float, float]] = None,
    xlim: Optional[Tuple[float, float]] = None,
    ylabel: str = "residual",
    annotate: bool = True,
) -> Axes:
    """Per-sample residual curves of one solver call: one thin line per sample, a marker where it stopped.

    A line ends where its sample stopped (the trace holds NaN afterwards). The end marker is a dot for a
    sample that converged, a cross for one that used up ``max_iter``, and a red cross for one declared
    diverged. The dashed line is the tolerance.

    Args:
        info: a :class:`~deqlib.solvers.SolverInfo` (its ``trace``, ``converged``, ``diverged`` and ``tol``
            are used) or an (N, K) array of residuals (NaN after a sample stopped).
        tol: the tolerance line (default: ``info.tol``; none for a bare array).
        max_lines: draw at most this many samples, evenly spread over the batch (the markers too).
        annotate: write "converged a/N, nfev K" (from all samples, not only the ones drawn) in the lower left
            corner, where residual curves, which start high, rarely pass.

    Returns:
        the axes.

    Example:
        >>> import torch
        >>> from deqlib.solvers import fixed_point
        >>> _, info = fixed_point(lambda z: 0.5 * z + 1.0, torch.zeros(3, 2), tol=1e-6, stop_mode="abs")
        >>> ax = plot_solver_trace(info)
    """
    ax = _axes(ax)
    trace, conv, div, info_tol = _trace_arrays(info)
    tol = info_tol if tol is None else tol
    n, k = trace.shape
    idx = (
        np.unique(np.linspace(0, n - 1, min(n, max(1, int(max_lines)))).round().astype(int)) if n else np.array([], int)
    )
    c = color or plt.rcParams["axes.prop_cycle"].by_key()["color"][0]
    iters = np.arange(1, k + 1)
    for i in idx:
        y = np.where(trace[i] > 0, trace[i], np.nan)
        ax.plot(iters, y, color=c, lw=0.8, alpha=0.45)
        last = np.flatnonzero(np.isfinite(y))
        if len(last):
            j = last[-1]
            if div is not None and div[i]:
                ax.plot(iters[j], y[j], "x", color="tab:red", ms=5, mew=1.2, zorder=4)
            elif conv is not None and conv[i]:
                ax.plot(iters[j], y[j], "o", color=c, ms=3, mec="black", mew=0.3, zorder=4)
            else:
                ax.plot(iters[j], y[j], "x", color="black", ms=4, mew=1.0, zorder=4)
    if tol is not None:
        ax.axhline(tol, color="black", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("iteration (evaluations of $f$)")
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    if xlim:
        ax.set_xlim(*xlim)
    if title:
        ax.set_title(title)
    if annotate and conv is not None:
        text = f"converged {int(conv.sum())}/{n}\nnfev {int(getattr(info, 'nfev', k))}"
        if div is not None and div.any():
            text += f"\ndiverged {int(div.sum())}"
        ax.text(
            0.03,
            0.04,
            text,
            transform=ax.transAxes,
            ha="left",
            va="bottom",
            fontsize="x-small",
            bbox=dict(boxstyle="round,pad=0.25", fc="white", ec="0.7", alpha=0.85),
        )
    ax.grid(True, which="major", alpha=0.3)
    return ax


def solver_trace_grid(
    infos: Sequence[Sequence],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    panel_size: Tuple[float, float] = (2.6, 2.1),
    max_lines: int = 24,
    ylim: Optional[Tuple[float, float]] = None,
    colors: Optional[Sequence[str]] = None,
) -> Figure:
    """Small multiples of :func:`plot_solver_trace`: one panel per (row, column), e.g. weight scale x solver.

    The static counterpart of :func:`deqlib.widgets.solver_explorer` for the web book.

    Args:
        infos: ``infos[i][j]`` is the SolverInfo (or residual array) of row i and column j.
        row_labels, col_labels: written left of each row and above each column.
        ylim: shared y limits (default: from the data, shared by all panels).
        colors: one colour per column (default: the colour cycle).
    """
    nrows, ncols = len(infos), (len(infos[0]) if len(infos) else 0)
    if nrows == 0 or ncols == 0 or any(len(row) != ncols for row in infos):
        raise ValueError("infos must be a non-empty rectangular grid (a list of rows of equal length)")
    if len(row_labels) != nrows or len(col_labels) != ncols:
        raise ValueError(
            f"{len(row_labels)} row labels and {len(col_labels)} column labels for a {nrows} x {ncols} grid"
        )
    if ylim is None:
        vals = np.concatenate([_trace_arrays(i)[0].ravel() for row in infos for i in row])
        vals = vals[np.isfinite(vals) & (vals > 0)]
        ylim = (
            (10 ** np.floor(np.log10(vals.min())), 10 ** np.ceil(np.log10(vals.max()))) if len(vals) else (1e-8, 10.0)
        )
    cycle = colors or plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
        layout="constrained",
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for i, row in enumerate(infos):
        for j, info in enumerate(row):
            ax = axes[i, j]
            plot_solver_trace(
                info,
                ax,
                max_lines=max_lines,
                color=cycle[j % len(cycle)],
                ylim=ylim,
                title=col_labels[j] if i == 0 else None,
            )
            ax.set_xlabel("iteration" if i == nrows - 1 else "")
            ax.set_ylabel(f"{row_labels[i]}\nresidual" if j == 0 else "")
            ax.tick_params(labelsize="small")
    return fig
