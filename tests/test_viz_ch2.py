"""The figures of chapter 2 (solvers): deqlib.viz.solvers."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from deqlib import viz
from deqlib.solvers import fixed_point


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _dashed(ax):
    return [line for line in ax.lines if line.get_linestyle() == "--"]


def test_plot_residuals_draws_one_line_per_curve_and_the_tolerance():
    curves = [np.logspace(0, -6, 20), np.logspace(0, -3, 8)]
    ax = viz.plot_residuals(curves, ["a", "b"], tol=1e-5)
    (tol_line,) = _dashed(ax)
    assert np.allclose(tol_line.get_ydata(), 1e-5)
    solid = [line for line in ax.lines if line not in _dashed(ax)]
    assert [len(line.get_xdata()) for line in solid] == [20, 8]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    assert not _dashed(viz.plot_residuals(curves))  # no tolerance, no line


def test_plot_steps_histogram_one_outline_per_solver_with_its_mean():
    steps = {"fixed_point": torch.tensor([3, 4, 4, 9]), "anderson": np.array([2, 2, 3, 3])}
    ax = viz.plot_steps_histogram(steps, ylabel="digits")
    assert len(ax.patches) == 2  # histtype="step": one polygon per solver
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["fixed_point (mean 5.0)", "anderson (mean 2.5)"]
    # one bin per step count, up to the largest one; the outline's heights are the counts
    xy = ax.patches[0].get_xy()
    assert xy[:, 0].min() == pytest.approx(0.5) and xy[:, 0].max() == pytest.approx(9.5)
    assert xy[:, 1].max() == 2  # two samples took 4 steps
    assert ax.get_ylabel() == "digits"
    with pytest.raises(ValueError):
        viz.plot_steps_histogram({})


def test_plot_damped_eigenvalues_moves_each_eigenvalue_a_fraction_tau_towards_one():
    mu = torch.tensor([1.5 + 0.0j, -1.2 + 0.3j, 0.2 - 0.9j])
    ax = viz.plot_damped_eigenvalues(mu, 0.5)
    dots, crosses = ax.collections
    assert np.allclose(dots.get_offsets(), [[1.5, 0.0], [-1.2, 0.3], [0.2, -0.9]])
    assert np.allclose(crosses.get_offsets(), [[1.25, 0.0], [-0.1, 0.15], [0.6, -0.45]])
    circle = ax.lines[0]
    assert np.allclose(np.hypot(circle.get_xdata(), circle.get_ydata()), 1.0)


def test_residuals_and_eigenvalues_one_row_per_example():
    mu = np.array([0.5, 1.2 + 0.1j])
    examples = [
        ("digit 1", [np.logspace(0, -6, 10), np.logspace(0, -2, 30)], mu),
        ("digit 2", [np.logspace(0, -1, 5), np.logspace(0, -6, 7)], mu),
    ]
    fig = viz.residuals_and_eigenvalues(examples, ["fixed_point", "anderson"], tau=0.5, tol=1e-5)
    assert len(fig.axes) == 4
    left, right = fig.axes[0::2], fig.axes[1::2]
    assert [ax.get_title() for ax in left] == ["digit 1", "digit 2"]
    for ax, (_, traces, _) in zip(left, examples):
        solid = [line for line in ax.lines if line not in _dashed(ax)]
        assert [len(line.get_xdata()) for line in solid] == [len(t) for t in traces]
        assert len(_dashed(ax)) == 1
    assert all(len(ax.collections) == 2 for ax in right)
    with pytest.raises(ValueError):
        viz.residuals_and_eigenvalues([], ["a"], tau=0.5)


def test_solver_trace_annotation_is_readable():
    _, info = fixed_point(lambda z: 0.5 * z + 1.0, torch.zeros(3, 2), tol=1e-6, stop_mode="abs")
    ax = viz.plot_solver_trace(info)
    (box,) = ax.texts
    assert "converged 3/3" in box.get_text()
    assert box.get_fontsize() >= 9  # the book's smallest text


def _trace_colors(ax):
    return {line.get_color() for line in ax.lines if line.get_linestyle() == "-"}


def test_solver_trace_grid_colours_by_row_or_column():
    infos = [[np.logspace(0, -k - j, 5)[None] for j in range(3)] for k in range(2)]
    colors = ["#111111", "#222222", "#333333"]
    by_col = viz.solver_trace_grid(infos, ["a", "b"], ["x", "y", "z"], colors=colors)
    assert len(by_col.axes) == 6
    assert [_trace_colors(ax) for ax in by_col.axes[:3]] == [{c} for c in colors]
    by_row = viz.solver_trace_grid(infos, ["a", "b"], ["x", "y", "z"], colors=colors, color_by="row")
    assert [_trace_colors(ax) for ax in by_row.axes] == [{colors[0]}] * 3 + [{colors[1]}] * 3
    assert by_row.axes[3].get_ylabel() == "b\nresidual"
    with pytest.raises(ValueError):
        viz.solver_trace_grid(infos, ["a", "b"], ["x", "y", "z"], color_by="solver")
