"""Chapter 4's figures: the readouts along the solver's iterates, stability in numbers, the fold on a trained model.

- :func:`plot_state_readouts` — accuracy and mean entropy of head(z_k) against k, one line per condition, with
  95 % bands;
- :func:`plot_distributions` — per-sample distributions of a few quantities (e.g. ρ(J), ‖∂z*/∂x‖), one histogram
  per group and panel;
- :func:`plot_segment_scan` — ρ(J) and the jump of z* along a path of inputs or weight scales;
- :func:`plot_hysteresis` — the equilibria followed from either end of a path, and their gap (a fold's test);
- :func:`plot_digit_readout` — one digit: the probability of its class and the entropy at every state, clean and
  attacked (what :func:`deqlib.widgets.trajectory_explorer` draws), and its static twin
  :func:`digit_readout_small_multiples`.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Tuple

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._common import ArrayLike, color_cycle, to_numpy

__all__ = [
    "plot_state_readouts",
    "plot_distributions",
    "plot_segment_scan",
    "plot_hysteresis",
    "plot_digit_readout",
    "digit_readout_small_multiples",
]


def _axes(axes: Optional[Sequence[Axes]], n: int, figsize: Tuple[float, float]) -> Sequence[Axes]:
    if axes is None:
        _, axes = plt.subplots(1, n, figsize=figsize, layout="constrained", squeeze=False)
        axes = list(axes[0])
    if len(axes) != n:
        raise ValueError(f"expected {n} axes, got {len(axes)}")
    return axes


def plot_state_readouts(
    curves: Mapping[str, Mapping[str, Any]],
    axes: Optional[Sequence[Axes]] = None,
    *,
    k_max: Optional[int] = None,
    styles: Optional[Mapping[str, Mapping[str, Any]]] = None,
    mark_k: Optional[int] = None,
    title: Optional[str] = None,
) -> Sequence[Axes]:
    """Accuracy (left) and mean prediction entropy (right) of the head at each state z_k against k.

    Args:
        curves: label -> a :func:`deqlib.state_statistics.readout_curves` dict (``accuracy``, ``entropy_mean``,
            optionally ``accuracy_ci95`` and ``entropy_ci95``, drawn as bands).
        axes: two axes (default a new figure).
        k_max: the last state shown (default all).
        styles: label -> keyword arguments of ``plot`` (colour, line style).
        mark_k: a state to mark with a vertical dotted line (e.g. the intermediate state of a test).
        title: the figure's title.

    Returns:
        the two axes.
    """
    if not curves:
        raise ValueError("plot_state_readouts: curves must not be empty")
    ax_a, ax_h = _axes(axes, 2, (9.0, 3.4))
    colors = color_cycle()
    for i, (label, c) in enumerate(curves.items()):
        style = {"color": colors[i % len(colors)], "marker": "o", "ms": 3, **((styles or {}).get(label, {}))}
        for ax, key in ((ax_a, "accuracy"), (ax_h, "entropy_mean")):
            if key not in c:
                raise ValueError(f"plot_state_readouts: curve {label!r} has no {key!r}")
            v = to_numpy(c[key]).astype(float)[: None if k_max is None else k_max + 1]
            k = np.arange(len(v))
            ax.plot(k, v, label=label, **style)
            band = c.get("accuracy_ci95" if key == "accuracy" else "entropy_ci95")
            if band is not None:
                b = np.asarray(band, dtype=float)[: len(v)]
                ax.fill_between(k, b[:, 0], b[:, 1], color=style["color"], alpha=0.15, lw=0)
    for ax, ylabel in ((ax_a, "accuracy of head($z_k$)"), (ax_h, "mean entropy of head($z_k$) (nats)")):
        ax.set_xlabel("solver iteration $k$")
        ax.set_ylabel(ylabel)
        if mark_k is not None:
            ax.axvline(mark_k, color="0.5", ls=":", lw=1)
    ax_a.set_ylim(-0.02, 1.02)
    ax_h.legend(fontsize=9, loc="upper right")
    if title:
        ax_a.figure.suptitle(title)
    return [ax_a, ax_h]


def plot_distributions(
    groups: Mapping[str, Mapping[str, ArrayLike]],
    axes: Optional[Sequence[Axes]] = None,
    *,
    log: Sequence[str] = (),
    bins: int = 30,
    reference: Optional[Mapping[str, float]] = None,
) -> Sequence[Axes]:
    """Per-sample distributions: one panel per quantity, one step histogram per group, a dashed line at its median.

    Args:
        groups: group label -> {quantity label -> per-sample values}; every group has the same quantities.
        axes: one axes per quantity (default a new figure, at most three across).
        log: quantities drawn on a logarithmic x axis (their bins are logarithmic).
        bins: histogram bins.
        reference: quantity -> a value to mark with a dotted grey line (e.g. 1 for ρ(J)).

    Returns:
        the axes.
    """
    if not groups:
        raise ValueError("plot_distributions: groups must not be empty")
    quantities = list(next(iter(groups.values())))
    if any(list(g) != quantities for g in groups.values()):
        raise ValueError("plot_distributions: every group must have the same quantities, in the same order")
    axes = _axes(axes, len(quantities), (3.3 * len(quantities), 3.0))
    colors = color_cycle()
    for ax, q in zip(axes, quantities):
        values = {g: to_numpy(v[q]).astype(float).ravel() for g, v in groups.items()}
        allv = np.concatenate(list(values.values()))
        allv = allv[np.isfinite(allv)]
        lo, hi = float(allv.min()), float(allv.max())
        edges = np.geomspace(max(lo, 1e-12), hi, bins + 1) if q in log else np.linspace(lo, hi, bins + 1)
        for i, (g, v) in enumerate(values.items()):
            v = v[np.isfinite(v)]
            ax.hist(v, bins=edges, histtype="step", lw=1.6, color=colors[i % len(colors)], label=g)
            ax.axvline(np.median(v), color=colors[i % len(colors)], ls="--", lw=1)
        if reference and q in reference:
            ax.axvline(reference[q], color="0.4", ls=":", lw=1.2)
        if q in log:
            ax.set_xscale("log")
        ax.set_xlabel(q)
        ax.set_ylabel("samples")
    axes[0].legend(fontsize=9)
    return axes


def plot_segment_scan(
    scans: Mapping[str, Mapping[str, ArrayLike]],
    axes: Optional[Sequence[Axes]] = None,
    *,
    x_key: str = "t",
    xlabel: str = "position on the segment $t$",
    logy_jump: bool = True,
) -> Sequence[Axes]:
    """ρ(J) at z*(x_t) (left, a dotted line at 1) and the jump ‖z*(x_t) − z*(x_{t−1})‖ (right) along a path.

    Args:
        scans: label -> a :func:`deqlib.sensitivity.segment_scan` result (or any dict with ``x_key``, ``rho``,
            ``jump``; an optional ``converged`` marks non-converged solves with crosses).
        axes: two axes (default a new figure).
        x_key, xlabel: the path parameter (``"t"``, or e.g. ``"scale"`` for a weight scale) and its label.
        logy_jump: the jump on a log scale.

    Returns:
        the two axes.
    """
    if not scans:
        raise ValueError("plot_segment_scan: scans must not be empty")
    ax_r, ax_j = _axes(axes, 2, (9.0, 3.2))
    colors = color_cycle()
    for i, (label, s) in enumerate(scans.items()):
        c = colors[i % len(colors)]
        t, rho, jump = (to_numpy(s[k]).astype(float) for k in (x_key, "rho", "jump"))
        ax_r.plot(t, rho, color=c, marker="o", ms=2.5, label=label)
        ax_j.plot(t[1:], jump[1:], color=c, marker="o", ms=2.5, label=label)
        if "converged" in s:
            bad = ~to_numpy(s["converged"]).astype(bool)
            ax_r.plot(t[bad], rho[bad], "x", color=c, ms=7)
    ax_r.axhline(1.0, color="0.4", ls=":", lw=1.2)
    ax_r.set_ylabel(r"$\rho(J)$ at $z^\star$")
    ax_j.set_ylabel(r"jump $\|z^\star_t - z^\star_{t-1}\|$")
    if logy_jump:
        ax_j.set_yscale("log")
    for ax in (ax_r, ax_j):
        ax.set_xlabel(xlabel)
    ax_r.legend(fontsize=9)
    return [ax_r, ax_j]


def plot_hysteresis(
    result: Mapping[str, Any], i: int = 0, axes: Optional[Sequence[Axes]] = None, *, title: Optional[str] = None
) -> Sequence[Axes]:
    """The two continuations of :func:`deqlib.sensitivity.hysteresis_gap` for segment ``i``, and their gap.

    Left: each branch's position between the two end equilibria, (z(t) − a) · (b − a) / ‖b − a‖² with
    a = z_forward(0) and b = z_backward(1) (0 at the start's equilibrium, 1 at the end's): the forward branch
    (solid) and the backward one (dashed) coincide on a single-valued branch and form a loop across a fold.
    Right: the gap ‖z_forward(t) − z_backward(t)‖ on a log scale; crosses mark points where a solve did not
    converge.

    Returns:
        the two axes.
    """
    ax_b, ax_g = _axes(axes, 2, (9.0, 3.2))
    t = to_numpy(result["t"]).astype(float)
    zf = to_numpy(result["z_forward"][i]).reshape(len(t), -1).astype(float)
    zb = to_numpy(result["z_backward"][i]).reshape(len(t), -1).astype(float)
    a, d = zf[0], zb[-1] - zf[0]
    scale = float(d @ d) or 1.0
    colors = color_cycle()
    ax_b.plot(t, (zf - a) @ d / scale, color=colors[0], marker="o", ms=3, label="from $t = 0$ (forward)")
    ax_b.plot(t, (zb - a) @ d / scale, color=colors[5], ls="--", marker="s", ms=3, label="from $t = 1$ (backward)")
    ax_b.set_ylabel("position between the end equilibria")
    ax_b.legend(fontsize=9)
    gap = to_numpy(result["gap"][i]).astype(float)
    ax_g.semilogy(t, np.maximum(gap, 1e-12), color="0.3", marker="o", ms=3)
    bad = ~to_numpy(result["converged"][i]).astype(bool)
    ax_g.plot(t[bad], np.maximum(gap[bad], 1e-12), "x", color=colors[5], ms=7)
    ax_g.set_ylabel(r"gap $\|z^\star_{\rightarrow}(t) - z^\star_{\leftarrow}(t)\|$")
    for ax in (ax_b, ax_g):
        ax.set_xlabel("position on the segment $t$")
    if title:
        ax_b.figure.suptitle(title)
    return [ax_b, ax_g]


def plot_digit_readout(
    readout: Mapping[str, Any],
    i: int = 0,
    axes: Optional[Sequence[Axes]] = None,
    *,
    k_max: Optional[int] = 12,
    title: Optional[str] = None,
) -> Sequence[Axes]:
    """One digit along the iterations: the attacked image, p(its class | z_k) and the entropy of head(z_k).

    Args:
        readout: a :func:`deqlib.dynamics.attacked_readouts` result.
        i: which sample of it.
        axes: three axes (image, probability, entropy; default a new figure).
        k_max: the last state shown.
        title: the title of the image panel (default the label and the final predictions).

    Returns:
        the three axes.
    """
    ax_img, ax_p, ax_h = _axes(axes, 3, (9.5, 2.8))
    clean, adv = readout["clean"], readout["adversarial"]
    label = int(readout["y"][i])
    end = None if k_max is None else k_max + 1
    img = to_numpy(readout["x_adv"][i]).squeeze()
    ax_img.imshow(img, cmap="gray_r", vmin=0, vmax=1)
    ax_img.set_xticks([])
    ax_img.set_yticks([])
    pa, pc = int(adv["predictions"][-1, i]), int(clean["predictions"][-1, i])
    ax_img.set_title(title or f"label {label}\nclean → {pc}, attacked → {pa}", fontsize=9)
    colors = color_cycle()
    for name, r, c, ls in (("clean", clean, colors[0], "-"), ("attacked", adv, colors[5], "--")):
        p = to_numpy(r["probs"][:end, i, label]).astype(float)
        h = to_numpy(r["entropy"][:end, i]).astype(float)
        k = np.arange(len(p))
        ax_p.plot(k, p, color=c, ls=ls, marker="o", ms=3, label=name)
        ax_h.plot(k, h, color=c, ls=ls, marker="o", ms=3, label=name)
    ax_p.set_ylim(-0.02, 1.02)
    ax_p.set_ylabel(f"p(class {label} | $z_k$)")
    ax_h.set_ylabel("entropy of head($z_k$)")
    for ax in (ax_p, ax_h):
        ax.set_xlabel("solver iteration $k$")
    ax_p.legend(fontsize=9)
    return [ax_img, ax_p, ax_h]


def digit_readout_small_multiples(
    readouts: Mapping[str, Mapping[str, Any]], i: int = 0, *, k_max: Optional[int] = 12, row_height: float = 2.4
) -> Figure:
    """The static twin of :func:`deqlib.widgets.trajectory_explorer`: one row of :func:`plot_digit_readout` per
    setting (e.g. model × ε), for the same digit ``i``.

    Args:
        readouts: row title -> a :func:`deqlib.dynamics.attacked_readouts` result.
        i: the sample shown in every row.
        k_max, row_height: the last state shown; the height of a row in inches.

    Returns:
        the figure.
    """
    if not readouts:
        raise ValueError("digit_readout_small_multiples: readouts must not be empty")
    fig, grid = plt.subplots(
        len(readouts),
        3,
        figsize=(9.5, row_height * len(readouts)),
        layout="constrained",
        squeeze=False,
        gridspec_kw={"width_ratios": [0.6, 1, 1]},
    )
    for row, (name, r) in zip(grid, readouts.items()):
        plot_digit_readout(r, i, list(row), k_max=k_max)
        row[0].set_title(f"{name}\n{row[0].get_title()}", fontsize=9)
    return fig
