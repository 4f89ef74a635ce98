"""Schematic figures: pictures of a computation, drawn with matplotlib (no data).

- :func:`deep_vs_deq` — an explicit deep network, the same network with its weights tied, and a DEQ;
- :func:`solve_then_differentiate` — a DEQ's forward solve and its implicit backward pass.

Example:
    >>> from deqlib import viz
    >>> fig = viz.deep_vs_deq()
    >>> len(fig.axes)
    3
    >>> import matplotlib.pyplot as plt; plt.close(fig)
"""

from __future__ import annotations

from typing import Optional, Tuple

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from .style import PALETTE, book_style

__all__ = ["deep_vs_deq", "solve_then_differentiate"]

_FORWARD, _BACKWARD, _NEUTRAL = PALETTE[0], PALETTE[5], "0.35"


def _box(ax: Axes, xy: Tuple[float, float], text: str, color: str, width: float = 1.5, height: float = 0.62) -> None:
    """A rounded box centred at ``xy`` with ``text`` inside."""
    x, y = xy
    patch = FancyBboxPatch(
        (x - width / 2, y - height / 2),
        width,
        height,
        boxstyle="round,pad=0.04,rounding_size=0.12",
        facecolor=color,
        edgecolor="black",
        linewidth=0.8,
        alpha=0.9,
    )
    ax.add_patch(patch)
    ax.text(x, y, text, ha="center", va="center", fontsize=10.5)


def _arrow(ax: Axes, start, end, color: str = _NEUTRAL, text: Optional[str] = None, bend: float = 0.0, **kw) -> None:
    """An arrow from ``start`` to ``end`` (optionally curved, optionally labelled at its middle)."""
    style = f"arc3,rad={bend}"
    ax.add_patch(
        FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color=color, lw=1.3, connectionstyle=style)
    )
    if text:
        mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        ax.text(mx, my + kw.get("dy", 0.22), text, ha="center", va="bottom", fontsize=9.5, color=color)


def _blank(ax: Axes, title: str, xlim: Tuple[float, float], ylim: Tuple[float, float]) -> None:
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=11)


def _column(ax: Axes, labels, color: str, x: float = 0.0) -> None:
    """A stack of boxes from the input (bottom) to the prediction (top), joined by arrows."""
    for i, label in enumerate(labels):
        _box(ax, (x, i), label, "white" if i in (0, len(labels) - 1) else color)
        if i:
            _arrow(ax, (x, i - 1 + 0.33), (x, i - 0.33))


def deep_vs_deq(figsize: Tuple[float, float] = (10.0, 4.4)) -> Figure:
    """Three networks side by side: explicit (K different layers), weight-tied (one layer K times), a DEQ.

    The DEQ box replaces the stack by its limit: the equilibrium z* = f(z*, x), found by a solver; the input x
    enters every layer (input injection) in the last two.
    """
    with book_style():
        fig, axes = plt.subplots(1, 3, figsize=figsize, layout="constrained")
        lims = ((-1.6, 1.6), (-0.6, 5.6))
        explicit, tied, deq = axes
        _blank(explicit, "explicit: K different layers", *lims)
        _column(explicit, ["$x$", "$f_1$", "$f_2$", r"$\vdots$", "$f_K$", "$y = h(z_K)$"], PALETTE[4])
        _blank(tied, "weight-tied: one layer, K times", *lims)
        _column(tied, ["$x$", "$f_\\theta$", "$f_\\theta$", r"$\vdots$", "$f_\\theta$", "$y = h(z_K)$"], PALETTE[1])
        for i in (1, 2, 4):  # input injection into every layer
            _arrow(tied, (-0.78, 0.1), (-0.76, i), color=_FORWARD, bend=-0.35)
        _blank(deq, "deep equilibrium: its limit", *lims)
        _box(deq, (0, 0), "$x$", "white")
        _box(deq, (0, 2.5), "solve\n$z^\\star = f_\\theta(z^\\star, x)$", PALETTE[2], width=2.3, height=1.3)
        _box(deq, (0, 5), "$y = h(z^\\star)$", "white")
        _arrow(deq, (0, 0.33), (0, 1.82), color=_FORWARD, text="$x$ enters $f$")
        _arrow(deq, (0, 3.18), (0, 4.67))
        deq.add_patch(
            FancyArrowPatch(
                (1.17, 2.9), (1.17, 2.1), arrowstyle="-|>", mutation_scale=11, lw=1.1, connectionstyle="arc3,rad=-1.4"
            )
        )
        deq.text(1.55, 2.5, "iterate", fontsize=9.5, va="center")
    return fig


def solve_then_differentiate(figsize: Tuple[float, float] = (10.0, 3.6)) -> Figure:
    """A DEQ's training step: the forward solve (kept out of autograd), then the implicit backward pass.

    Forward (top): a solver finds z* without recording its iterations; the head and the loss see only z*.
    Backward (bottom): the loss's gradient at z* goes through a second fixed-point solve, the adjoint
    g = J^T g + dl/dz*, and one vector-Jacobian product of f turns g into the gradients of the weights and input.
    """
    with book_style():
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        _blank(ax, "", (-0.9, 12.3), (-2.3, 2.2))
        top, bottom = 1.2, -1.2
        _box(ax, (0, top), "$x$", "white", width=1.0)
        _box(ax, (3.1, top), "solver\n(no graph kept)", PALETTE[2], width=2.4, height=0.95)
        _box(ax, (6.6, top), "$z^\\star$", "white", width=1.0)
        _box(ax, (9.2, top), "head $h$, loss $\\ell$", "white", width=2.3)
        for a, b in [((0.5, top), (1.9, top)), ((4.3, top), (6.1, top)), ((7.1, top), (8.05, top))]:
            _arrow(ax, a, b, color=_FORWARD)
        ax.text(11.6, top, "forward", color=_FORWARD, fontsize=10.5, va="center", ha="center", rotation=90)
        _box(ax, (9.2, bottom), "$\\partial \\ell / \\partial z^\\star$", "white", width=2.3)
        _box(
            ax,
            (5.4, bottom),
            "adjoint solve\n$g = J^\\top g + \\partial \\ell / \\partial z^\\star$",
            PALETTE[1],
            3.6,
            0.95,
        )
        _box(ax, (0.9, bottom), "$g^\\top \\partial f / \\partial(\\theta, x)$", "white", width=2.6)
        _arrow(ax, (9.2, top - 0.33), (9.2, bottom + 0.33), color=_BACKWARD)
        _arrow(ax, (8.05, bottom), (7.2, bottom), color=_BACKWARD)
        _arrow(ax, (3.6, bottom), (2.2, bottom), color=_BACKWARD)
        _arrow(ax, (6.6, top - 0.33), (5.6, bottom + 0.5), color=_NEUTRAL, text="$J$ at $z^\\star$", dy=-0.05)
        ax.text(11.6, bottom, "backward", color=_BACKWARD, fontsize=10.5, va="center", ha="center", rotation=90)
    return fig
