"""Chapter 7's figures: the entropy of the intermediate predictions with the entropy defence on and off, and the
three evaluations (as released, adaptive, black box) side by side.

- :func:`entropy_with_defence` — what the figures draw for some digits: the defence's trace and its idle twin;
- :func:`plot_entropy_with_defence` — one digit: its input, the purified input, and the entropy along the defence;
- :func:`entropy_defence_small_multiples` — one row per setting (the static twin of
  :func:`deqlib.widgets.entropy_explorer`);
- :func:`plot_evaluations` — robust accuracy under E1 / E3 / E2 per model, with Wilson intervals, from chapter 7's
  results file.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from ._common import color_cycle, to_numpy

__all__ = ["entropy_with_defence", "plot_entropy_with_defence", "entropy_defence_small_multiples", "plot_evaluations"]


def entropy_with_defence(defense: Any, x: Tensor, y: Tensor) -> Dict[str, Any]:
    """Run an :class:`~deqlib.defenses.EntropyReductionDefense` on ``x`` with its input steps and without them.

    Returns:
        a dict of detached tensors: ``on``, the (rounds, R + 1, N) entropies with the defence; ``off``, the
        (rounds, 1, N) entropies of the idle readouts (the same solver rounds, the input never moved); ``x``,
        ``x_T`` (the purified input), ``y``, ``pred_on``, ``pred_off``; and the settings ``R``, ``rounds``, ``eps``.
    """
    on, off = defense.trace(x), defense.trace(x, idle=True)
    return {
        "on": on.entropy,
        "off": off.entropy,
        "x": x.detach(),
        "x_T": on.inputs[-1],
        "y": y,
        "pred_on": on.logits.argmax(1),
        "pred_off": off.logits.argmax(1),
        "R": defense.R,
        "rounds": defense.rounds,
        "eps": defense.eps,
    }


def _image(ax: Axes, img: np.ndarray, title: str) -> None:
    ax.imshow(img, cmap="gray_r", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def plot_entropy_with_defence(
    run: Mapping[str, Any], i: int = 0, axes: Optional[Sequence[Axes]] = None, *, title: Optional[str] = None
) -> Sequence[Axes]:
    """One digit: its input, the input the defence ends with, and the prediction entropy along the defence.

    The entropy panel's x axis counts the defence's evaluations of head(f(z, u)): in each round (shaded
    alternately) the first point follows the round's solver steps, the next R the round's input steps. With the
    defence off the input never moves: one point per round, held flat through the round.

    Args:
        run: an :func:`entropy_with_defence` result.
        i: which sample.
        axes: three axes (input, purified input, entropy; default a new figure).
        title: the title of the first panel (default the label and the two predictions).

    Returns:
        the three axes.
    """
    if axes is None:
        _, axes = plt.subplots(
            1, 3, figsize=(9.5, 2.6), layout="constrained", gridspec_kw={"width_ratios": [0.55, 0.55, 1.6]}
        )
    ax_x, ax_t, ax_h = axes
    label = int(run["y"][i])
    _image(ax_x, to_numpy(run["x"][i]).squeeze(), title or f"input, label {label}\noff → {int(run['pred_off'][i])}")
    _image(ax_t, to_numpy(run["x_T"][i]).squeeze(), f"after the defence\non → {int(run['pred_on'][i])}")
    on, off = to_numpy(run["on"][:, :, i]).astype(float), to_numpy(run["off"][:, 0, i]).astype(float)
    per = run["R"] + 1
    colors = color_cycle()
    for r in range(run["rounds"]):
        t = np.arange(r * per, (r + 1) * per)
        if r % 2:
            ax_h.axvspan(t[0] - 0.5, t[-1] + 0.5, color="0.93", lw=0)
        ax_h.plot(t, on[r], color=colors[0], marker="o", ms=2.5, label="defence on" if r == 0 else None)
        ax_h.plot(t, np.full(per, off[r]), color=colors[5], ls="--", label="defence off" if r == 0 else None)
    ax_h.set_xlabel("evaluation of head(f(z, u)) along the defence (one shaded band per round)")
    ax_h.set_ylabel("prediction entropy (nats)")
    ax_h.set_ylim(bottom=0)
    ax_h.legend(fontsize=9)
    return [ax_x, ax_t, ax_h]


def entropy_defence_small_multiples(
    runs: Mapping[str, Mapping[str, Any]], i: int = 0, *, row_height: float = 2.3
) -> Figure:
    """The static twin of :func:`deqlib.widgets.entropy_explorer`: one row of :func:`plot_entropy_with_defence` per
    setting (e.g. clean / attacked, or one radius of the defence each), for the same digit ``i``."""
    if not runs:
        raise ValueError("entropy_defence_small_multiples: runs must not be empty")
    fig, grid = plt.subplots(
        len(runs),
        3,
        figsize=(9.5, row_height * len(runs)),
        layout="constrained",
        squeeze=False,
        gridspec_kw={"width_ratios": [0.55, 0.55, 1.6]},
    )
    for row, (name, run) in zip(grid, runs.items()):
        plot_entropy_with_defence(run, i, list(row))
        row[0].set_title(f"{name}\n{row[0].get_title()}", fontsize=9)
    return fig


_EVALS = (
    ("E1", "E1: as released (best single attack)"),
    ("E3", "E3: Square, 5,000 queries"),
    ("E2", "E2: adaptive worst case"),
)


def _wilson(k: float, n: int) -> tuple:
    from ..evaluate.statistics import wilson_interval

    return wilson_interval(int(round(k * n)), n)


def plot_evaluations(rows: Mapping[str, Mapping[str, Any]], *, eps: str = "0.1", ax: Optional[Axes] = None) -> Axes:
    """Robust accuracy per model under the three evaluations at radius ``eps``, seed by seed.

    Args:
        rows: model name -> ``{seed: {"n": n, "E1": acc, "E3": acc, "E2": acc}}`` (accuracies in [0, 1]; e.g. from
            chapter 7's results file through ``headline``).
        eps: the radius shown (a title).
        ax: the axes (default a new figure).

    Returns:
        the axes: one group per model, one marker per evaluation and seed, with its Wilson 95 % interval.
    """
    if not rows:
        raise ValueError("plot_evaluations: rows must not be empty")
    if ax is None:
        _, ax = plt.subplots(figsize=(9.5, 3.4), layout="constrained")
    colors = color_cycle()
    names = list(rows)
    for g, name in enumerate(names):
        seeds = sorted(rows[name])
        for j, (key, label) in enumerate(_EVALS):
            for s_i, s in enumerate(seeds):
                r = rows[name][s]
                if key not in r:
                    continue
                xpos = g + (j - 1) * 0.25 + (s_i - (len(seeds) - 1) / 2) * 0.06
                lo, hi = _wilson(r[key], r["n"])
                ax.errorbar(
                    xpos,
                    r[key],
                    yerr=[[r[key] - lo], [hi - r[key]]],
                    fmt="o",
                    ms=4,
                    color=colors[j],
                    capsize=2,
                    label=label if g == 0 and s_i == 0 else None,
                )
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel(f"robust accuracy at ε = {eps}")
    ax.legend(fontsize=9, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return ax
