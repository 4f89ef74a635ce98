"""Chapter 5's figures: robust accuracy with intervals, forest plots, which attack broke which digit."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from deqlib import viz  # noqa: E402
from deqlib.evaluate import broken_by_counts, paired_rows  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_accuracy_intervals_draw_a_band_around_each_line():
    curves = {
        "a": {"accuracy": [0.9, 0.5, 0.1], "ci95": [[0.8, 0.97], [0.4, 0.6], [0.02, 0.2]]},
        "b": {"accuracy": [0.8, 0.7, 0.6], "ci95": [[0.7, 0.9], [0.6, 0.8], [0.5, 0.7]]},
    }
    ax = viz.plot_accuracy_intervals([0.0, 0.1, 0.2], curves, eps_scale=255, title="t")
    assert [line.get_label() for line in ax.lines] == ["a", "b"]
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [0.0, 25.5, 51.0])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [80.0, 70.0, 60.0])
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(2.0) and band.max() == pytest.approx(97.0)  # the first curve's interval
    assert ax.lines[0].get_color() != ax.lines[1].get_color() and ax.get_title() == "t"


def test_accuracy_intervals_refuse_bad_curves():
    with pytest.raises(ValueError, match="2 accuracies for 3 radii"):
        viz.plot_accuracy_intervals([0, 0.1, 0.2], {"a": {"accuracy": [1, 0.5], "ci95": [[0, 1]] * 2}})
    with pytest.raises(ValueError, match="lo > hi"):
        viz.plot_accuracy_intervals([0], {"a": {"accuracy": [0.5], "ci95": [[0.6, 0.4]]}})
    with pytest.raises(TypeError, match="'accuracy' and 'ci95'"):
        viz.plot_accuracy_intervals([0], {"a": [0.5]})


def test_attack_intervals_put_the_first_row_on_top_with_its_interval():
    masks = {"worst": [True, False, False, False], "pgd": [True, True, True, False]}
    rows = paired_rows(masks, "worst")
    ax = viz.plot_attack_intervals(rows, reference="worst")
    labels = [t.get_text() for t in ax.get_yticklabels()]
    ticks = list(ax.get_yticks())
    assert labels[ticks.index(max(ticks))] == "worst"  # the first row at the top
    dots = ax.lines[0]
    np.testing.assert_allclose(dots.get_xdata(), [25.0, 75.0])
    ref = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    assert len(ref) == 1 and ref[0].get_xdata()[0] == pytest.approx(25.0)
    with pytest.raises(ValueError, match="not among the rows"):
        viz.plot_attack_intervals(rows, reference="nope")


def test_broken_by_bars_add_up_to_100_percent_in_a_fixed_order():
    counts = {
        "standard": broken_by_counts(["clean", "apgd_ce", "apgd_ce", None], ["apgd_ce", "square"]),
        "pgd-at": broken_by_counts(["square", None, None, None], ["apgd_ce", "square"]),
    }
    ax = viz.plot_broken_by(counts)
    patches = ax.patches
    # four outcomes (clean, apgd_ce, square, robust) x two bars
    assert len(patches) == 8
    total = sum(p.get_width() for p in patches)
    assert total == pytest.approx(200.0)
    widths = [p.get_width() for p in patches]
    # bar order: clean, apgd_ce, square, robust; first bar of each is "standard" (top row)
    assert widths[:2] == [25.0, 0.0] and widths[2:4] == [50.0, 0.0] and widths[4:6] == [0.0, 25.0]
    assert widths[6:] == [25.0, 75.0]
    # the segments are stacked: "robust" starts where the attacks' segments end
    assert patches[6].get_x() == pytest.approx(75.0) and patches[7].get_x() == pytest.approx(25.0)
    assert patches[0].get_facecolor()[:3] == pytest.approx(matplotlib.colors.to_rgb(viz.attacks.CLEAN_COLOUR))
    with pytest.raises(ValueError, match="not all 0"):
        viz.plot_broken_by({"a": {"clean": 0}})


def test_broken_digits_show_each_digit_under_the_attack_that_broke_it():
    x = torch.stack([torch.full((1, 4, 4), v) for v in (0.1, 0.2, 0.3, 0.4, 0.5)])
    broken = ["apgd_ce", None, "square", "apgd_ce", "clean"]
    fig = viz.plot_broken_digits(x, broken, order=["apgd_ce", "apgd_t", "square"], per_attack=2, labels=[1, 2, 3, 4, 5])
    axes = np.array(fig.axes).reshape(2, 2)  # apgd_t broke nothing: two rows
    assert axes[0, 0].get_ylabel() == "apgd_ce" and axes[1, 0].get_ylabel() == "square"
    assert axes[0, 0].images[0].get_array()[0, 0] == pytest.approx(0.1)
    assert axes[0, 1].images[0].get_array()[0, 0] == pytest.approx(0.4)
    assert axes[1, 0].images[0].get_array()[0, 0] == pytest.approx(0.3) and not axes[1, 1].images
    assert axes[0, 1].get_title() == "4"
    colour = viz.plot_broken_digits(torch.rand(2, 3, 4, 4), ["pgd", "pgd"])
    assert colour.axes[0].images[0].get_array().shape == (4, 4, 3)
    with pytest.raises(ValueError, match="no attack broke"):
        viz.plot_broken_digits(x, [None, None, "clean", None, None])
    with pytest.raises(ValueError, match="broken_by entries"):
        viz.plot_broken_digits(x, ["pgd"])
