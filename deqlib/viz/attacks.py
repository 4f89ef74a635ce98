"""Chapter 5's figures: robust accuracy with intervals, attacks side by side, which attack broke which digit.

- :func:`plot_accuracy_intervals` — robust accuracy against epsilon, one line per model or attack, with its 95 %
  interval as a band;
- :func:`plot_attack_intervals` — one dot per attack with its 95 % interval, attacks as rows (a forest plot);
- :func:`plot_broken_by` — for each model or radius, a bar split by the attack that broke each sample first;
- :func:`plot_broken_digits` — a few digits per attack, each shown once, under the attack that broke it first.

Inputs are the plain dicts and lists of :mod:`deqlib.evaluate` (e.g. :func:`~deqlib.evaluate.broken_by_counts`,
:func:`~deqlib.evaluate.paired_rows`); accuracies are fractions in [0, 1], drawn in percent.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._common import ArrayLike, color_cycle, new_axes, to_numpy

__all__ = ["plot_accuracy_intervals", "plot_attack_intervals", "plot_broken_by", "plot_broken_digits"]

#: Colours of the two non-attack outcomes of :func:`plot_broken_by`.
CLEAN_COLOUR, ROBUST_COLOUR = "#BBBBBB", "#000000"


def _intervals(ci: Any, n: int, name: str, where: str) -> np.ndarray:
    arr = np.asarray(ci, dtype=float)
    if arr.shape != (n, 2):
        raise ValueError(f"{where}: {name} needs {n} intervals [lo, hi], got shape {arr.shape}")
    if np.any(arr[:, 0] > arr[:, 1]):
        raise ValueError(f"{where}: {name} has an interval with lo > hi")
    return arr


def plot_accuracy_intervals(
    eps: ArrayLike,
    curves: Mapping[str, Mapping[str, Any]],
    ax: Optional[Axes] = None,
    *,
    eps_scale: Optional[float] = None,
    title: Optional[str] = None,
) -> Axes:
    """Robust accuracy against epsilon with 95 % interval bands, one line per model or attack.

    Args:
        eps: the radii (pixel scale of [0, 1]).
        curves: name -> ``{"accuracy": [...], "ci95": [[lo, hi], ...]}``, one entry per radius.
        eps_scale: label the x axis in units of 1/eps_scale (e.g. 255); None for raw values.
        title: the axes title.

    Returns:
        The axes (one line and one band per curve, in the order given).
    """
    where = "plot_accuracy_intervals"
    ax = new_axes(ax)
    e = to_numpy(eps).astype(float).reshape(-1)
    x = e * eps_scale if eps_scale else e
    colours = color_cycle()
    for k, (name, c) in enumerate(curves.items()):
        if not isinstance(c, Mapping) or "accuracy" not in c or "ci95" not in c:
            raise TypeError(f"{where}: curve {name!r} must be a dict with 'accuracy' and 'ci95'")
        acc = to_numpy(c["accuracy"]).astype(float).reshape(-1)
        if acc.shape != e.shape:
            raise ValueError(f"{where}: curve {name!r} has {acc.size} accuracies for {e.size} radii")
        ci = _intervals(c["ci95"], e.size, f"curve {name!r}", where)
        colour = colours[k % len(colours)]
        ax.fill_between(x, 100 * ci[:, 0], 100 * ci[:, 1], color=colour, alpha=0.2, linewidth=0)
        ax.plot(x, 100 * acc, marker="o", ms=4, color=colour, label=name)
    ax.set_xlabel(f"$\\varepsilon$ (x 1/{eps_scale:g})" if eps_scale else "$\\varepsilon$")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return ax


def plot_attack_intervals(
    rows: Sequence[Mapping[str, Any]],
    ax: Optional[Axes] = None,
    *,
    reference: Optional[str] = None,
    title: Optional[str] = None,
) -> Axes:
    """A forest plot: one row per attack, its robust accuracy (dot) and 95 % interval (bar), the first on top.

    Args:
        rows: dicts with ``attack``, ``robust_accuracy`` and ``ci95`` (e.g. :func:`~deqlib.evaluate.paired_rows`).
        reference: an attack whose accuracy is also drawn as a dashed vertical line (e.g. the worst case).
        title: the axes title.
    """
    where = "plot_attack_intervals"
    if not rows:
        raise ValueError(f"{where}: give at least one row")
    ax = new_axes(ax, figsize=(5.0, 0.35 * len(rows) + 1.0))
    names = [str(r["attack"]) for r in rows]
    acc = np.array([float(r["robust_accuracy"]) for r in rows])
    ci = _intervals([r["ci95"] for r in rows], len(rows), "rows", where)
    ypos = np.arange(len(rows))[::-1]
    err = np.abs(np.stack([acc - ci[:, 0], ci[:, 1] - acc]))
    ax.errorbar(100 * acc, ypos, xerr=100 * err, fmt="o", color=color_cycle()[0], capsize=3, ms=5)
    ax.set_yticks(ypos, names)
    if reference is not None:
        if reference not in names:
            raise ValueError(f"{where}: the reference {reference!r} is not among the rows {names}")
        ax.axvline(100 * acc[names.index(reference)], color="black", ls="--", lw=1)
    ax.set_xlabel("robust accuracy (%)")
    ax.grid(True, axis="x", alpha=0.3)
    if title:
        ax.set_title(title)
    return ax


def plot_broken_by(
    counts: Mapping[str, Mapping[str, int]], ax: Optional[Axes] = None, *, title: Optional[str] = None
) -> Axes:
    """One horizontal bar per model (or radius), split by the attack that broke each sample first.

    Args:
        counts: label -> {outcome: number of samples}, as :func:`~deqlib.evaluate.broken_by_counts` gives
            (``"clean"`` is drawn grey, ``"robust"`` black, each attack in its own colour, the same in every bar).
        title: the axes title.

    Returns:
        The axes; the bars' lengths are percentages of each label's samples.
    """
    where = "plot_broken_by"
    if not counts:
        raise ValueError(f"{where}: give at least one bar")
    outcomes: list = []
    for label, c in counts.items():
        if not isinstance(c, Mapping) or any(int(v) < 0 for v in c.values()) or sum(c.values()) == 0:
            raise ValueError(f"{where}: bar {label!r} must map outcomes to counts >= 0, not all 0")
        outcomes += [k for k in c if k not in outcomes]
    attacks = [k for k in outcomes if k not in ("clean", "robust")]
    order = (["clean"] if "clean" in outcomes else []) + attacks + (["robust"] if "robust" in outcomes else [])
    palette = color_cycle()
    colour = {a: palette[i % len(palette)] for i, a in enumerate(attacks)}
    colour.update(clean=CLEAN_COLOUR, robust=ROBUST_COLOUR)
    labels = list(counts)
    ax = new_axes(ax, figsize=(7.0, 0.5 * len(labels) + 1.5))
    ypos = np.arange(len(labels))[::-1]
    left = np.zeros(len(labels))
    for outcome in order:
        width = np.array([100 * counts[lb].get(outcome, 0) / sum(counts[lb].values()) for lb in labels])
        ax.barh(ypos, width, left=left, color=colour[outcome], label=outcome, height=0.6)
        left += width
    ax.set_yticks(ypos, labels)
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of the samples (%)")
    ax.legend(ncols=min(4, len(order)), fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.25))
    if title:
        ax.set_title(title)
    return ax


def plot_broken_digits(
    x: ArrayLike,
    broken_by: Sequence[Optional[str]],
    *,
    order: Optional[Sequence[str]] = None,
    per_attack: int = 6,
    labels: Optional[ArrayLike] = None,
) -> Figure:
    """A few digits per attack: row r shows up to ``per_attack`` digits that attack r broke first.

    Args:
        x: images in [0, 1]: grey (N, 1, H, W) or (N, H, W), or colour (N, 3, H, W).
        broken_by: one entry per image (None: robust; ``"clean"``: misclassified without attack; else an attack).
        order: the rows, top to bottom (default: the attacks in order of first appearance); attacks that broke
            nothing are left out.
        per_attack: digits per row.
        labels: the true labels, shown above each digit.

    Returns:
        The figure (one row per attack that broke a digit; its name on the left).
    """
    where = "plot_broken_digits"
    img = to_numpy(x).astype(float)
    if img.ndim == 4 and img.shape[1] in (1, 3):  # grey: (N, H, W); colour: (N, H, W, 3)
        img = img[:, 0] if img.shape[1] == 1 else img.transpose(0, 2, 3, 1)
    if img.ndim not in (3, 4) or len(broken_by) != len(img):
        raise ValueError(f"{where}: {img.shape} images for {len(broken_by)} broken_by entries")
    names = [b for b in broken_by if b not in (None, "clean")]
    rows = [a for a in (order or dict.fromkeys(names)) if a in names]
    if not rows:
        raise ValueError(f"{where}: no attack broke any digit")
    per_attack = max(1, int(per_attack))
    y = None if labels is None else to_numpy(labels).reshape(-1)
    fig, axes = plt.subplots(
        len(rows), per_attack, figsize=(1.2 * per_attack + 1.2, 1.35 * len(rows)), squeeze=False, layout="constrained"
    )
    for r, attack in enumerate(rows):
        idx = [i for i, b in enumerate(broken_by) if b == attack][:per_attack]
        for c in range(per_attack):
            a = axes[r, c]
            a.set_xticks([])
            a.set_yticks([])
            for side in a.spines.values():
                side.set_visible(False)
            if c < len(idx):
                a.imshow(img[idx[c]], cmap="gray", vmin=0, vmax=1)
                if y is not None:
                    a.set_title(f"{int(y[idx[c]])}", fontsize=9)
        axes[r, 0].set_ylabel(attack, rotation=0, ha="right", va="center", fontsize=9)
    return fig
