"""Residual curves and solver traces.

- :func:`plot_residuals` — a residual (or any per-iteration quantity) against the iteration number;
- :func:`plot_solver_trace` — the per-sample residual curves of one solver call, with a marker where each stopped;
- :func:`solver_trace_grid` — their small multiples (the static counterpart of
  :func:`deqlib.widgets.solver_explorer`);
- :func:`plot_steps_histogram` — how many steps each sample took, one outline per solver;
- :func:`plot_damped_eigenvalues` — eigenvalues of J and of the damped map, with the unit circle;
- :func:`residuals_and_eigenvalues` — per example, its residual curves and those eigenvalues side by side.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple, Union

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._common import ArrayLike, color_cycle, curves, new_axes, to_numpy
from .style import PALETTE

__all__ = [
    "plot_residuals",
    "plot_solver_trace",
    "solver_trace_grid",
    "plot_steps_histogram",
    "plot_damped_eigenvalues",
    "residuals_and_eigenvalues",
]


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
    tol: Optional[float] = None,
    **line_kw,
) -> Axes:
    """Residual (or any per-iteration quantity) against the iteration number, one line per curve.

    Args:
        traces: a 1-D array, a 2-D array whose rows are curves (e.g. ``info.trace``), or a list of 1-D arrays.
            NaNs (a sample that stopped) are left as gaps.
        labels: one label per curve; a legend is drawn when given.
        logy: logarithmic y axis (zeros are not drawn).
        start: iteration number of the first entry.
        tol: draw a dashed horizontal line at this tolerance.
    """
    ax = new_axes(ax)
    lines = curves(traces)
    if labels is not None and len(labels) != len(lines):
        raise ValueError(f"{len(labels)} labels for {len(lines)} curves")
    for i, c in enumerate(lines):
        y = np.where(c > 0, c, np.nan) if logy else c
        kw = dict(lw=1.5)
        kw.update(line_kw)
        if colors is not None:
            kw["color"] = colors[i % len(colors)]
        ax.plot(np.arange(start, start + len(c)), y, label=None if labels is None else labels[i], **kw)
    if tol is not None:
        ax.axhline(tol, color="black", lw=0.8, ls="--")
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


def _trace_arrays(info) -> Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray], Optional[float]]:
    """(trace (N, K), converged (N,) or None, diverged (N,) or None, tol or None) from a SolverInfo or an array."""
    if hasattr(info, "trace") and hasattr(info, "steps"):  # a SolverInfo (arrays and tensors have .trace())
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


def _draw_traces(ax: Axes, trace: np.ndarray, conv, div, max_lines: int, color: str) -> None:
    """At most ``max_lines`` samples, evenly spread: a thin line each, and its end marker."""
    n, k = trace.shape
    idx = np.unique(np.linspace(0, n - 1, min(n, max(1, int(max_lines)))).round().astype(int)) if n else []
    iters = np.arange(1, k + 1)
    for i in idx:
        y = np.where(trace[i] > 0, trace[i], np.nan)
        ax.plot(iters, y, color=color, lw=0.8, alpha=0.45)
        last = np.flatnonzero(np.isfinite(y))
        if len(last):
            j = last[-1]
            if div is not None and div[i]:
                ax.plot(iters[j], y[j], "x", color=PALETTE[5], ms=5, mew=1.2, zorder=4)
            elif conv is not None and conv[i]:
                ax.plot(iters[j], y[j], "o", color=color, ms=3, mec="black", mew=0.3, zorder=4)
            else:
                ax.plot(iters[j], y[j], "x", color="black", ms=4, mew=1.0, zorder=4)


def _annotate_counts(ax: Axes, info, conv: np.ndarray, div: Optional[np.ndarray], n: int, k: int) -> None:
    """ "converged a/N, nfev K" (and the diverged count) in the lower left corner."""
    text = f"converged {int(conv.sum())}/{n}\nnfev {int(getattr(info, 'nfev', k))}"
    if div is not None and div.any():
        text += f"\ndiverged {int(div.sum())}"
    bbox = dict(boxstyle="round,pad=0.25", fc="white", ec="0.7", alpha=0.85)
    ax.text(0.03, 0.04, text, transform=ax.transAxes, ha="left", va="bottom", fontsize=9, bbox=bbox)


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

    Example:
        >>> import torch
        >>> from deqlib.solvers import fixed_point
        >>> _, info = fixed_point(lambda z: 0.5 * z + 1.0, torch.zeros(3, 2), tol=1e-6, stop_mode="abs")
        >>> ax = plot_solver_trace(info)
    """
    ax = new_axes(ax)
    trace, conv, div, info_tol = _trace_arrays(info)
    tol = info_tol if tol is None else tol
    _draw_traces(ax, trace, conv, div, max_lines, color or color_cycle()[0])
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
        _annotate_counts(ax, info, conv, div, *trace.shape)
    ax.grid(True, which="major", alpha=0.3)
    return ax


def _shared_ylim(infos: Sequence[Sequence]) -> Tuple[float, float]:
    """Decades around every positive finite residual of the grid (1e-8 to 10 when there is none)."""
    vals = np.concatenate([_trace_arrays(i)[0].ravel() for row in infos for i in row])
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if not len(vals):
        return (1e-8, 10.0)
    return (10 ** np.floor(np.log10(vals.min())), 10 ** np.ceil(np.log10(vals.max())))


def solver_trace_grid(
    infos: Sequence[Sequence],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    panel_size: Tuple[float, float] = (2.6, 2.1),
    max_lines: int = 24,
    ylim: Optional[Tuple[float, float]] = None,
    colors: Optional[Sequence[str]] = None,
    color_by: str = "column",
) -> Figure:
    """Small multiples of :func:`plot_solver_trace`: one panel per (row, column), e.g. weight scale x solver.

    The static counterpart of :func:`deqlib.widgets.solver_explorer` for the web book.

    Args:
        infos: ``infos[i][j]`` is the SolverInfo (or residual array) of row i and column j.
        row_labels, col_labels: written left of each row and above each column.
        ylim: shared y limits (default: from the data, shared by all panels).
        colors: one colour per column, or per row with ``color_by="row"`` (default: the colour cycle).
        color_by: ``"column"`` or ``"row"``: which of the two the colours tell apart (e.g. the solver).
    """
    nrows, ncols = len(infos), (len(infos[0]) if len(infos) else 0)
    if nrows == 0 or ncols == 0 or any(len(row) != ncols for row in infos):
        raise ValueError("infos must be a non-empty rectangular grid (a list of rows of equal length)")
    if len(row_labels) != nrows or len(col_labels) != ncols:
        raise ValueError(
            f"{len(row_labels)} row labels and {len(col_labels)} column labels for a {nrows} x {ncols} grid"
        )
    if color_by not in ("column", "row"):
        raise ValueError(f'color_by must be "column" or "row", got {color_by!r}')
    ylim = _shared_ylim(infos) if ylim is None else ylim
    cycle = colors or color_cycle()
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
            title = col_labels[j] if i == 0 else None
            color = cycle[(j if color_by == "column" else i) % len(cycle)]
            plot_solver_trace(info, ax, max_lines=max_lines, color=color, ylim=ylim, title=title)
            ax.set_xlabel("iteration" if i == nrows - 1 else "")
            ax.set_ylabel(f"{row_labels[i]}\nresidual" if j == 0 else "")
            ax.tick_params(labelsize="small")
    return fig


def plot_steps_histogram(
    steps: Mapping[str, ArrayLike],
    ax: Optional[Axes] = None,
    *,
    xlabel: str = "steps (evaluations of $f$)",
    ylabel: str = "samples",
    colors: Optional[Sequence[str]] = None,
) -> Axes:
    """Histogram of the steps each sample took: one outline per solver, labelled with its mean.

    Args:
        steps: solver name -> (N,) steps per sample (e.g. ``info.steps``); one bin per step count.
        xlabel, ylabel: the axis labels.
        colors: one colour per solver (default: the colour cycle).

    Returns:
        The axes.
    """
    arrays = {name: to_numpy(s).astype(int).ravel() for name, s in steps.items()}
    if not arrays or not all(a.size for a in arrays.values()):
        raise ValueError("steps must map each solver name to a non-empty array of step counts")
    ax = new_axes(ax, figsize=(6.0, 3.0))
    bins = np.arange(0.5, max(int(a.max()) for a in arrays.values()) + 1.5)
    cycle = colors or color_cycle()
    for i, (name, a) in enumerate(arrays.items()):
        label = f"{name} (mean {a.mean():.1f})"
        ax.hist(a, bins=bins, histtype="step", lw=1.6, color=cycle[i % len(cycle)], label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.legend(fontsize="small")
    return ax


def plot_damped_eigenvalues(
    mu: ArrayLike,
    tau: float,
    ax: Optional[Axes] = None,
    *,
    title: Optional[str] = None,
) -> Axes:
    """Eigenvalues mu of J (dots) and 1 - tau + tau mu of the damped map (crosses), with the unit circle.

    The dotted vertical line is Re = 1: an eigenvalue outside the circle to its right stays outside for
    every damping tau (the segment from 1 to mu never enters the disc).

    Args:
        mu: the (complex) eigenvalues of J, e.g. ``torch.linalg.eigvals(J)``.
        tau: the damping of z -> (1 - tau) z + tau f(z).

    Returns:
        The axes.
    """
    ax = new_axes(ax, figsize=(4.0, 4.0))
    mu = to_numpy(mu).astype(complex).ravel()
    damped = 1 - tau + tau * mu
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(t), np.sin(t), color="black", lw=0.8)
    ax.scatter(mu.real, mu.imag, s=12, color=PALETTE[0], label=r"$\mu$, eigenvalues of $J$")
    label = rf"$1 - \tau + \tau\mu$, $\tau = {tau:g}$"
    ax.scatter(damped.real, damped.imag, s=14, marker="x", color=PALETTE[5], label=label)
    ax.axvline(1, color="0.6", lw=0.8, ls=":")
    ax.set(xlabel="real part", ylabel="imaginary part", aspect="equal")
    if title:
        ax.set_title(title)
    # below the axes: the eigenvalues fill the disc, a legend inside would hide some
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.2))
    return ax


def residuals_and_eigenvalues(
    examples: Sequence[Tuple[str, Sequence[ArrayLike], ArrayLike]],
    labels: Sequence[str],
    *,
    tau: float,
    tol: Optional[float] = None,
    ylabel: str = "relative residual",
) -> Figure:
    """One row per example: its residual under each solver (left), the eigenvalues of J at its fixed point (right).

    Args:
        examples: ``(title, traces, mu)`` per row: ``traces`` holds one residual curve per solver, in the order
            of ``labels``; ``mu`` the eigenvalues of J (see :func:`plot_damped_eigenvalues`).
        labels: the solvers' names, for the legend.
        tau: the damping whose map's eigenvalues are drawn.
        tol: a dashed line at the tolerance in the residual panels.

    Returns:
        The figure: ``len(examples)`` rows of two panels.
    """
    if not examples:
        raise ValueError("no examples to draw")
    fig, axes = plt.subplots(
        len(examples),
        2,
        figsize=(10, 3.7 * len(examples)),
        layout="constrained",
        gridspec_kw={"width_ratios": [1.4, 1]},
        squeeze=False,
    )
    for (ax_r, ax_e), (title, traces, mu) in zip(axes, examples):
        xlabel = "iteration (evaluations of $f$)"
        plot_residuals(traces, labels, ax=ax_r, tol=tol, xlabel=xlabel, ylabel=ylabel, title=title)
        plot_damped_eigenvalues(mu, tau, ax_e, title="eigenvalues")
    return fig
