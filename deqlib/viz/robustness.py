"""Robustness figures.

- :func:`plot_entropy_along_iterations` — the entropy of the predictions read from the states z_k against k;
- :func:`plot_robust_accuracy` — accuracy against the attack budget epsilon, one line per model or attack.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

from matplotlib.axes import Axes

from ._common import ArrayLike, new_axes, to_numpy
from .solvers import plot_residuals

__all__ = ["plot_entropy_along_iterations", "plot_robust_accuracy"]


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
    ax = new_axes(ax)
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
