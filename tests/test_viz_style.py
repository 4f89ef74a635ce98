"""The book style (palette, fonts) and the schematic figures of deqlib.viz."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from deqlib import viz  # noqa: E402


def test_book_style_draws_in_the_palette_and_restores_settings():
    before = dict(matplotlib.rcParams)
    with viz.book_style():
        fig, ax = plt.subplots()
        lines = [ax.plot([0, 1], [0, i])[0] for i in range(3)]
        assert [to_hex(line.get_color()) for line in lines] == [c.lower() for c in viz.PALETTE[:3]]
        assert matplotlib.rcParams["font.size"] >= 9 and matplotlib.rcParams["legend.fontsize"] >= 9
        plt.close(fig)
    assert dict(matplotlib.rcParams) == before, "book_style() must not leak its settings"


def test_palette_colours_are_distinct_and_not_matplotlib_defaults():
    assert len({c.lower() for c in viz.PALETTE}) == len(viz.PALETTE) == 8
    assert to_hex("tab:red") not in {c.lower() for c in viz.PALETTE}


def _texts(fig):
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts + [ax.title])


def test_deep_vs_deq_draws_three_networks():
    fig = viz.deep_vs_deq()
    assert len(fig.axes) == 3
    text = _texts(fig)
    assert "$f_1$" in text and "$f_K$" in text and r"z^\star = f_\theta(z^\star, x)" in text
    plt.close(fig)


def test_solve_then_differentiate_has_forward_and_backward():
    fig = viz.solve_then_differentiate()
    text = _texts(fig)
    assert "forward" in text and "backward" in text and r"g = J^\top g" in text
    assert len(fig.axes[0].patches) >= 10  # boxes and arrows
    plt.close(fig)
