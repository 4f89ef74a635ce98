"""The book's figure style: a colour-blind-safe palette and fonts that stay readable in multi-panel figures.

The palette is Okabe and Ito's (2008) eight colours, distinguishable under the common forms of colour blindness;
the sequential colour map is ``viridis`` (perceptually uniform, readable in grey). Fonts are sized for a figure
about 10 inches wide shown at the width of a book page: no text below 9 points.

Example:
    >>> import matplotlib.pyplot as plt
    >>> from deqlib import viz
    >>> with viz.book_style():
    ...     fig, ax = plt.subplots()
    >>> len(viz.PALETTE)
    8
    >>> plt.close(fig)
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator

import matplotlib as mpl
from cycler import cycler

__all__ = ["PALETTE", "SEQUENTIAL_CMAP", "BOOK_RC", "book_style", "use_book_style"]

#: Okabe-Ito colours, ordered so that the first few are the most distinct; black last (for references).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
#: The colour map for ordered quantities (levels, scales, iterations).
SEQUENTIAL_CMAP = "viridis"

#: The matplotlib settings of every figure of the book.
BOOK_RC: Dict[str, object] = {
    "axes.prop_cycle": cycler(color=PALETTE),
    "image.cmap": SEQUENTIAL_CMAP,
    "font.size": 11,
    "axes.titlesize": 11,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 9.5,
    "figure.titlesize": 12,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100,
    "savefig.dpi": 100,
}


@contextlib.contextmanager
def book_style() -> Iterator[None]:
    """A context in which matplotlib draws in the book's style (restored on exit)."""
    with mpl.rc_context(BOOK_RC):
        yield


def use_book_style() -> None:
    """Draw every later figure of this session in the book's style (a chapter calls it once, at the top)."""
    mpl.rcParams.update(BOOK_RC)
