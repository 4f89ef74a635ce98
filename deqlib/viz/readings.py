"""Chapter 6's figures of the LyaDEQ readings: the collapse of the state, and each reading against its control.

- :func:`plot_collapse` — the state's norm and the spread between inputs along the steps of finite-horizon models;
- :func:`plot_readings_vs_controls` — the recorded robust accuracy of every reading beside its control, with
  Wilson intervals, one panel per training.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ._common import color_cycle, to_numpy

__all__ = ["plot_collapse", "plot_readings_vs_controls"]

TRAININGS = {"standard": "standard training", "pgdat": "PGD-AT"}


def plot_collapse(curves: Mapping[str, Mapping[str, Any]], *, trained_horizon: Optional[int] = None) -> Figure:
    """Two panels over the step ``k = 1, 2, ...``: the mean state norm and the mean pairwise distance.

    Args:
        curves: ``{label: {"norm": (K,), "spread": (K,)}}`` (tensors or arrays), one line per label.
        trained_horizon: a step to mark with a dashed line (the horizon the model was trained for).

    Returns:
        The figure.
    """
    if not curves:
        raise ValueError("plot_collapse: give at least one curve")
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.2))
    for (label, c), color in zip(curves.items(), color_cycle()):
        for ax, key in zip(axes, ("norm", "spread")):
            values = to_numpy(c[key])
            ax.plot(np.arange(1, len(values) + 1), values, color=color, label=label)
    for ax, ylabel in zip(axes, ("mean norm of $z_k$", "mean pairwise distance of $z_k$")):
        ax.set_xlabel("step $k$")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        if trained_horizon is not None:
            ax.axvline(trained_horizon, color="black", ls="--", lw=1)
        ax.grid(True, alpha=0.3)
    axes[0].legend(frameon=False)
    fig.tight_layout()
    return fig


def _pairs(runs: Mapping[str, Mapping[str, Any]], training: str, eps: str):
    """(reading label, reading entry, control entry) of one training, sorted by reading, largest n per model."""
    best = {}
    for run in runs.values():
        if run["name"].endswith(f"-{training}") and run["seed"] == 0:
            if run["name"] not in best or run["n"] > best[run["name"]]["n"]:
                best[run["name"]] = run
    out = []
    for name, run in sorted(best.items()):
        parts = name.split("-")
        if parts[3] == "nominal":
            continue
        control = best.get("-".join(parts[:3] + ["nominal", training]))
        out.append(
            (f"{parts[2].upper()} {parts[3]}", run["report"]["eps"][eps], control and control["report"]["eps"][eps])
        )
    return out


def _dot(ax, y, entry, color, filled: bool) -> None:
    acc, (lo, hi) = 100 * entry["robust_accuracy"], (100 * v for v in entry["ci95"])
    ax.errorbar(
        acc, y, xerr=[[acc - lo], [hi - acc]], fmt="o", color=color, mfc=color if filled else "white", capsize=3, ms=6
    )


def plot_readings_vs_controls(runs: Mapping[str, Mapping[str, Any]], *, eps: str = "0.1") -> Figure:
    """Each reading (filled dot) and its control (open circle), robust accuracy with its 95 % interval.

    Args:
        runs: the ``runs`` of ``experiments/results/lyadeq_readings.json`` (``name``, ``seed``, ``n`` and the
            battery ``report`` of each model; seed 0 and the largest ``n`` are drawn).
        eps: the radius, as its key in the reports (``"0.1"``).

    Returns:
        The figure, one panel per training that has results.
    """
    trainings = [t for t in TRAININGS if _pairs(runs, t, eps)]
    if not trainings:
        raise ValueError("plot_readings_vs_controls: no reading with results")
    fig, axes = plt.subplots(1, len(trainings), figsize=(4.6 * len(trainings), 3.6), squeeze=False, sharey=True)
    reading_color, control_color = color_cycle()[:2]
    for ax, training in zip(axes[0], trainings):
        pairs = _pairs(runs, training, eps)
        ys = np.arange(len(pairs))[::-1]
        for y, (_, reading, control) in zip(ys, pairs):
            _dot(ax, y + 0.12, reading, reading_color, True)
            if control is not None:
                _dot(ax, y - 0.12, control, control_color, False)
        ax.set_yticks(ys, [p[0] for p in pairs])
        ax.set_title(f"{TRAININGS[training]}, eps = {eps}")
        ax.set_xlabel("robust accuracy (%)")
        ax.grid(True, axis="x", alpha=0.3)
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=reading_color, label="reading"),
        plt.Line2D([], [], marker="o", ls="", color=control_color, mfc="white", label="its control"),
    ]
    fig.legend(handles=handles, frameon=False, loc="lower center", ncol=2)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig
