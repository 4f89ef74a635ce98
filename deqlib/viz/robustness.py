"""Robustness figures.

- :func:`plot_entropy_along_iterations` — the entropy of the predictions read from the states z_k against k;
- :func:`plot_robust_accuracy` — accuracy against the attack budget epsilon, one line per model or attack;
- :func:`plot_adversarial_examples` — images, their perturbations and the perturbed images, with predictions.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._common import ArrayLike, new_axes, to_numpy
from .solvers import plot_residuals

__all__ = ["plot_entropy_along_iterations", "plot_robust_accuracy", "plot_adversarial_examples"]


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


def _grey_images(x: ArrayLike, name: str) -> np.ndarray:
    """(N, H, W) from (N, H, W) or (N, 1, H, W) grey images."""
    a = to_numpy(x).astype(float)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3:
        raise ValueError(f"plot_adversarial_examples: {name} must be (N, 1, H, W) or (N, H, W), got {a.shape}")
    return a


def plot_adversarial_examples(
    x: ArrayLike,
    x_adv: ArrayLike,
    pred: ArrayLike,
    pred_adv: ArrayLike,
    *,
    eps: Optional[float] = None,
    row_height: float = 2.3,
) -> Figure:
    """One row per image, three columns: the clean image with its predicted label, the perturbation
    x_adv - x (colour map PuOr from -eps, orange, through 0, white, to +eps, purple), and the perturbed image
    with its predicted label.

    Args:
        x, x_adv: grey images in [0, 1], (N, 1, H, W) or (N, H, W), the same shape.
        pred, pred_adv: the predicted labels of x and x_adv, N each.
        eps: the perturbation's budget, for the colour scale and the title (default: its largest entry).
        row_height: inches per row (the figure is 7.5 inches wide).

    Returns:
        The figure (3 N axes, row by row).
    """
    clean, adv = _grey_images(x, "x"), _grey_images(x_adv, "x_adv")
    p, q = to_numpy(pred).reshape(-1), to_numpy(pred_adv).reshape(-1)
    if clean.shape != adv.shape or not len(p) == len(q) == len(clean):
        raise ValueError(
            f"plot_adversarial_examples: {clean.shape} images, {adv.shape} perturbed, {len(p)} and {len(q)} labels"
        )
    delta = adv - clean
    scale = float(eps) if eps is not None else max(float(np.abs(delta).max()), 1e-12)
    n = len(clean)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, row_height * n), layout="constrained", squeeze=False)
    budget = f" ($\\varepsilon = {scale:g}$)" if eps is not None else ""
    for i in range(n):
        axes[i, 0].imshow(clean[i], cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_title(f"clean: predicted {p[i]}")
        axes[i, 1].imshow(delta[i], cmap="PuOr", vmin=-scale, vmax=scale)
        axes[i, 1].set_title("perturbation" + budget)
        axes[i, 2].imshow(adv[i], cmap="gray", vmin=0, vmax=1)
        axes[i, 2].set_title(f"perturbed: predicted {q[i]}")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig
