"""The figures of chapter 1 (deqlib.viz.toys): each draws the data it is given, where it belongs."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from deqlib import viz  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_cobweb_small_multiples_one_panel_per_map_at_most_three_across():
    maps = [(lambda z, w=w: np.tanh(w * z), [0.3], f"w = {w}") for w in (0.5, 2.0, -2.0, 1.5)]
    fig = viz.cobweb_small_multiples(maps, n_iter=5)
    assert len(fig.axes) == 4  # the unused fifth and sixth cells are removed
    rows = {round(ax.get_position().y0, 3) for ax in fig.axes}
    cols = {round(ax.get_position().x0, 3) for ax in fig.axes}
    assert len(cols) == 3 and len(rows) == 2
    assert [ax.get_title() for ax in fig.axes] == ["w = 0.5", "w = 2.0", "w = -2.0", "w = 1.5"]
    # each panel draws its own map: the graph of g is the first line
    graph = fig.axes[1].lines[0]
    assert np.allclose(graph.get_ydata(), np.tanh(2.0 * graph.get_xdata()))


def test_plot_equilibrium_curves_draws_each_scale_and_breaks_jumps():
    xs = torch.linspace(-1, 1, 41)
    smooth = torch.stack([0.3 * xs, 0.1 * xs], dim=1)
    jumping = smooth.clone()
    jumping[21:, 0] += 0.9  # a jump between inputs 20 and 21
    rho_smooth, rho_jump = 0.5 + 0 * xs, 0.4 + 0.5 * (xs > 0)
    fig = viz.plot_equilibrium_curves(xs, {1.0: smooth, 2.0: jumping}, {1.0: rho_smooth, 2.0: rho_jump}, every=10)
    ax_z, ax_rho = fig.axes
    assert [t.get_text() for t in ax_z.get_legend().get_texts()] == ["$s = 1$", "$s = 2$"]
    z_smooth, z_jump = ax_z.lines
    assert not np.isnan(z_smooth.get_xdata()).any()
    xj = z_jump.get_xdata()
    assert np.isnan(xj).sum() == 1 and np.isnan(xj[21])  # the gap sits exactly at the jump
    assert len(ax_z.collections) == 2 and len(ax_z.collections[0].get_offsets()) == 5  # a dot every 10 inputs
    rho_lines = [line for line in ax_rho.lines if len(line.get_xdata()) > 2]
    assert np.allclose(rho_lines[0].get_ydata(), 0.5)
    assert np.isnan(rho_lines[1].get_ydata()).sum() == 1
    assert any(np.allclose(line.get_ydata(), 1.0) for line in ax_rho.lines)  # the line rho = 1


def test_plot_equilibrium_branches_splits_attracting_from_repelling():
    x = np.array([0.0, 0.0, 0.0, 1.0])
    z = np.array([-0.5, 0.1, 0.6, 0.4])
    attracting = np.array([True, False, True, False])
    ax = viz.plot_equilibrium_branches(x, z, attracting, path=([0.0, 1.0], [-0.5, 0.4]), fold=(0.5, 0.2))
    filled, hollow = ax.collections
    assert np.allclose(filled.get_offsets(), [[0.0, -0.5], [0.0, 0.6]])
    assert np.allclose(hollow.get_offsets(), [[0.0, 0.1], [1.0, 0.4]])
    (path, fold) = ax.lines
    assert np.allclose(path.get_ydata(), [-0.5, 0.4]) and fold.get_xdata()[0] == 0.5
    assert len(ax.get_legend().get_texts()) == 4


def test_plot_sensitivity_blowup_log_axes_and_guide_through_last_point():
    dist = np.logspace(-1, -5, 9)
    sens = 2.0 * dist**-0.5
    ax = viz.plot_sensitivity_blowup(dist, sens)
    data, guide = ax.lines
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert np.allclose(data.get_ydata(), sens)
    assert np.allclose(guide.get_ydata(), sens)  # the data have slope -1/2 exactly: the guide lies on them
    lo, hi = ax.get_xlim()
    assert lo > hi  # inverted: the fold on the right
