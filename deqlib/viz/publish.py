"""Hand a computed value to the web book's prose (myst-nb's ``glue``), and do nothing where there is no book.

The chapters write every number of their prose as ``{glue:text}`key:.2f``` and glue it from the cell that computed
it. The book build has myst-nb; a reader on Colab does not need it (and need not install it). Colab shows the prose's
roles unrendered, as ``{glue:text}`ch3_rho:.2f```, so there :func:`glue` prints ``ch3_rho = 0.83...`` under the cell
that computed it: the number a role names is always in the output just above it.

Example:
    >>> from deqlib import viz
    >>> viz.glue("ch0_answer", 42)  # returns nothing: a cell ending with it shows no output
"""

from __future__ import annotations

import sys
from numbers import Number
from typing import Any

__all__ = ["glue"]


def glue(name: str, value: Any, display: bool = False) -> None:
    """Glue ``value`` under ``name`` for the book's ``{glue}`` roles (with myst-nb).

    Args:
        name: the key the prose uses; by the book's convention it starts with the chapter (``ch3_rho``).
        value: a number (NumPy scalars and 0-d tensors are glued as Python numbers), string, DataFrame or figure.
        display: also show the value in the cell's output.

    Returns:
        None, so that a cell ending with a ``glue`` call shows no output on the page (the value is the prose's).
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"glue: name must be a non-empty string, got {name!r}")
    if "google.colab" in sys.modules:  # the prose's roles are not rendered there: show what they name
        plain = _plain(value)
        if isinstance(plain, (Number, str)):
            print(f"{name} = {plain!r}")
        return None
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # no book build here (e.g. Colab): nothing to hand the value to
        return None
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    if get_ipython() is not None:  # glue writes into a notebook cell's outputs; outside a kernel there are none
        myst_glue(name, _plain(value), display=display)
    return None


def _plain(value: Any) -> Any:
    """A NumPy scalar or a one-element tensor as a Python number: the prose's ``:.2f`` formats need ``float(repr)``,
    and ``repr(np.float64(0.5))`` is ``'np.float64(0.5)'``."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    return value
