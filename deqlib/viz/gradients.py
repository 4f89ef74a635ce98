"""Figures of chapter 3: gradients through the equilibrium, their memory, and training a DEQ.

- :func:`plot_phantom_errors` — the phantom gradient's relative error against its number of steps S, with the
  predicted rates rho(A_tau)^S;
- :func:`plot_memory` — the memory autograd keeps for the backward pass against the forward solver's steps K;
- :func:`plot_training_history` — loss, accuracy and solver steps per epoch of :func:`deqlib.train.fit`;
- :func:`plot_solver_steps` — the mean solver steps per epoch, forward and backward, of several trainings.

Example:
    >>> from deqlib import viz
    >>> ax = viz.plot_phantom_errors([1, 2, 3], {1.0: [0.5, 0.25, 0.125]}, {1.0: 0.5})
    >>> len(ax.lines)
    2
    >>> import matplotlib.pyplot as plt; plt.close("all")
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._common import ArrayLike, color_cycle, new_axes, to_numpy

__all__ = ["plot_phantom_errors", "plot_memory", "plot_training_history", "plot_solver_steps"]


def plot_phantom_errors(
    steps: Sequence[int],
    errors: Mapping[float, ArrayLike],
    rates: Mapping[float, float],
    ax: Optional[Axes] = None,
    *,
    title: Optional[str] = None,
) -> Axes:
    """The phantom gradient's relative error against its steps S, one solid line per damping tau, and the
    predicted geometric decay rho(A_tau)^S as a dotted line of the same colour.

    Args:
        steps: the numbers of phantom steps S (x axis).
        errors: tau -> the relative errors to the implicit gradient, one per S.
        rates: tau -> rho(A_tau), the spectral radius of one damped step's Jacobian.
        ax: the axes to draw into (default: a new figure).
        title: the axes title.

    Returns:
        The axes (log-scale y).
    """
    ax = new_axes(ax, (6.0, 3.8))
    s = np.asarray(steps, dtype=float)
    for (tau, err), color in zip(errors.items(), color_cycle()):
        e = to_numpy(err).astype(float)
        if e.shape != s.shape:
            raise ValueError(f"tau = {tau}: {e.shape} errors for {s.shape} step counts")
        ax.semilogy(s, e, "o-", ms=3, color=color, label=f"phantom, $\\tau = {tau:g}$")
        r = float(rates[tau])
        ax.semilogy(s, r**s, ":", color=color, label=f"$\\rho(A_\\tau)^S = {r:.2f}^S$")
    ax.set(xlabel="phantom steps $S$", ylabel="relative error to the IFT gradient")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def plot_memory(
    solver_steps: Sequence[int],
    memory: Mapping[str, ArrayLike],
    ax: Optional[Axes] = None,
    *,
    title: Optional[str] = None,
) -> Axes:
    """Memory saved for the backward pass (MiB) against the forward solver's steps K, log-log, one line per
    kind of gradient.

    Args:
        solver_steps: the numbers of forward steps K (x axis; also the tick labels).
        memory: label -> MiB saved, one value per K.
        ax: the axes to draw into (default: a new figure).
        title: the axes title.

    Returns:
        The axes.
    """
    ax = new_axes(ax, (6.0, 3.8))
    k = np.asarray(solver_steps, dtype=float)
    for label, mib in memory.items():
        m = to_numpy(mib).astype(float)
        if m.shape != k.shape:
            raise ValueError(f"{label!r}: {m.shape} values for {k.shape} step counts")
        ax.loglog(k, m, "o-", label=label)
    ax.set(xlabel="forward solver steps $K$", ylabel="saved for backward (MiB)")
    ax.set_xticks(k, [f"{int(v)}" for v in k])
    ax.minorticks_off()
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def plot_training_history(history: Mapping[str, Sequence[float]], figsize: Tuple[float, float] = (10.0, 3.2)) -> Figure:
    """Three panels of a :func:`deqlib.train.fit` history against the epoch: the training loss; the accuracy
    (training, running, and ``val_acc`` at the end of each epoch); the mean solver steps per sample, forward and
    backward.

    Args:
        history: needs ``epoch``, ``train_loss``, ``train_acc``, ``val_acc``, ``solver_steps``, ``backward_steps``.
        figsize: the figure size in inches.

    Returns:
        The figure.
    """
    keys = ["epoch", "train_loss", "train_acc", "val_acc", "solver_steps", "backward_steps"]
    missing = [key for key in keys if key not in history]
    if missing:
        raise KeyError(f"plot_training_history: the history lacks {missing}")
    epochs = np.asarray(history["epoch"], dtype=float)
    fig, (loss, acc, steps) = plt.subplots(1, 3, figsize=figsize, layout="constrained")
    loss.plot(epochs, history["train_loss"], "o-")
    loss.set(xlabel="epoch", ylabel="training loss (cross-entropy)")
    acc.plot(epochs, history["train_acc"], "o-", label="train (running)")
    acc.plot(epochs, history["val_acc"], "o-", label="test (end of epoch)")
    acc.set(xlabel="epoch", ylabel="accuracy")
    steps.plot(epochs, history["solver_steps"], "o-", label="forward")
    steps.plot(epochs, history["backward_steps"], "o-", label="backward (adjoint)")
    steps.set(xlabel="epoch", ylabel="mean solver steps per sample", ylim=(0, None))
    for ax in (acc, steps):
        ax.legend(fontsize="small")
    for ax in (loss, acc, steps):
        ax.grid(True, alpha=0.3)
    return fig


def plot_solver_steps(histories: Mapping[str, Mapping[str, Sequence[float]]], ax: Optional[Axes] = None) -> Axes:
    """The mean solver steps per sample against the epoch for several trainings: one colour per training, the
    forward solve solid with circles, the backward (adjoint) solve dashed with squares.

    Args:
        histories: name -> a :func:`deqlib.train.fit` history (``epoch``, ``solver_steps``, ``backward_steps``).
        ax: the axes to draw into (default: a new figure).

    Returns:
        The axes.
    """
    ax = new_axes(ax, (6.0, 3.6))
    for (name, hist), color in zip(histories.items(), color_cycle()):
        ax.plot(hist["epoch"], hist["solver_steps"], "o-", color=color, label=f"{name}: forward")
        ax.plot(hist["epoch"], hist["backward_steps"], "s--", color=color, label=f"{name}: backward")
    ax.set(xlabel="epoch", ylabel="mean solver steps per sample", ylim=(0, None))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return ax
