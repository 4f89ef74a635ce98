"""Chapter 8's figures: robust accuracy against the radius for every defence, one panel per family.

- :func:`head_to_head_curves` — per row of the head-to-head table, the accuracy at radius 0 (clean) and at each
  radius: the mean over training seeds and its 95 % t interval (or the one seed's Wilson interval);
- :func:`plot_head_to_head` — those curves in small multiples, one panel per family of defences, each with the
  reference row (the PGD-AT DEQ) drawn in grey for comparison.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

from .style import PALETTE

__all__ = ["head_to_head_curves", "plot_head_to_head"]


def _point(summary: Optional[Mapping[str, Any]], single: Optional[Sequence[float]]) -> Optional[tuple]:
    """(mean, low, high) from a seed summary, or from one seed's Wilson interval."""
    if not summary:
        return None
    if summary.get("interval"):
        lo, hi = summary["interval"]
    elif single is not None:
        lo, hi = single
    else:
        lo = hi = summary["mean"]
    return summary["mean"], max(lo, 0.0), min(hi, 1.0)


def head_to_head_curves(table: Mapping[str, Any], eps: Sequence[float]) -> Dict[str, Dict[str, Any]]:
    """Per row with at least one seed: ``radii`` (0 then ``eps``), ``mean``, ``low``, ``high`` (fractions) and
    ``seeds`` (how many). The interval is the t interval over seeds, or with one seed its Wilson interval (the
    clean point then has none).

    Args:
        table: ``summary["table"]`` of ``experiments/results/head_to_head.json``.
        eps: the radii of the table.
    """
    out: Dict[str, Dict[str, Any]] = {}
    for name, row in table.items():
        if not row.get("seeds"):
            continue
        first = next(iter(row["seeds"].values()))
        points = [_point(row["clean"], None)]
        points += [_point(row["eps"][str(e)], first["eps"][str(e)]["ci95"]) for e in eps]
        mean, low, high = (np.array([p[i] for p in points]) for i in range(3))
        out[name] = {"radii": np.array([0.0, *eps]), "mean": mean, "low": low, "high": high, "seeds": len(row["seeds"])}
    return out


def _panel(ax: Any, family: str, members: Mapping[str, Any], rows: Mapping[str, Any], ref: Any, ref_name: str) -> None:
    """One family's curves with their intervals, and the reference curve in grey."""
    if ref is not None:
        ax.plot(
            ref["radii"],
            100 * ref["mean"],
            color="0.6",
            ls="--",
            lw=1.2,
            label=f"{rows[ref_name]['label']} (reference)",
        )
    for k, (name, c) in enumerate(members.items()):
        err = 100 * np.stack([c["mean"] - c["low"], c["high"] - c["mean"]])
        label = f"{rows[name]['label']} ({c['seeds']} seed{'s' if c['seeds'] > 1 else ''})"
        color = PALETTE[k % len(PALETTE)]
        ax.errorbar(
            c["radii"], 100 * c["mean"], yerr=err, color=color, marker="o", ms=3.5, capsize=2, lw=1.2, label=label
        )
    ax.set_title(family, fontsize="medium")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)


def plot_head_to_head(
    table: Mapping[str, Any],
    rows: Mapping[str, Mapping[str, Any]],
    eps: Sequence[float],
    *,
    reference: str = "deq-pgdat",
    ncols: int = 3,
) -> Figure:
    """Robust accuracy (%) against the radius, one panel per family of rows, the ``reference`` row in grey in each.

    Args:
        table: ``summary["table"]`` of the head-to-head results.
        rows: row name -> its description (``label``, ``family``), as in the results file's ``rows``.
        eps: the radii.
        reference: the row drawn in every panel for comparison.
        ncols: panels per row of the figure.
    """
    import matplotlib.pyplot as plt

    curves = head_to_head_curves(table, eps)
    families: List[str] = []
    for name, row in rows.items():
        if name in curves and row["family"] not in families:
            families.append(row["family"])
    if not families:
        raise ValueError("plot_head_to_head: no row of the table has a finished seed yet")
    nrows = -(-len(families) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.4 * ncols, 4.2 * nrows), sharex=True, sharey=True, layout="constrained"
    )
    axes = np.atleast_1d(axes).ravel()
    for ax, family in zip(axes, families):
        members = [n for n, r in rows.items() if r["family"] == family and n in curves and n != reference]
        _panel(ax, family, {n: curves[n] for n in members}, rows, curves.get(reference), reference)
    for ax in axes[len(families) :]:
        ax.set_visible(False)
    for ax in axes[::ncols]:
        ax.set_ylabel("accuracy (%)")
    for ax in axes[: len(families)]:
        ax.set_xlabel(r"$\varepsilon$ ($L_\infty$)")
        ax.xaxis.set_tick_params(labelbottom=True)
    return fig
