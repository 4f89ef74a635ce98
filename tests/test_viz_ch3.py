"""Chapter 3's figures: phantom-gradient errors, memory, training histories, adversarial digits."""

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


def _history(offset: float = 0.0) -> dict:
    return {
        "epoch": [1, 2, 3],
        "train_loss": [1.0, 0.5, 0.25],
        "train_acc": [0.5, 0.7, 0.9],
        "val_acc": [0.6, 0.8, 0.85],
        "solver_steps": [10.0 + offset, 9.0 + offset, 8.0 + offset],
        "backward_steps": [9.0 + offset, 8.0 + offset, 7.0 + offset],
    }


def test_phantom_errors_draws_measured_and_predicted_lines():
    steps = [1, 2, 3, 4]
    errors = {1.0: [0.5, 0.2, 0.1, 0.05], 0.5: torch.tensor([0.7, 0.5, 0.35, 0.25])}
    rates = {1.0: 0.5, 0.5: 0.7}
    ax = viz.plot_phantom_errors(steps, errors, rates, title="t")
    assert len(ax.lines) == 4 and ax.get_yscale() == "log" and ax.get_title() == "t"
    measured, predicted = ax.lines[0], ax.lines[1]
    np.testing.assert_allclose(measured.get_ydata(), errors[1.0])
    np.testing.assert_allclose(predicted.get_ydata(), 0.5 ** np.array(steps, dtype=float))
    np.testing.assert_allclose(ax.lines[3].get_ydata(), 0.7 ** np.array(steps, dtype=float))
    assert measured.get_color() == predicted.get_color() != ax.lines[2].get_color()
    assert predicted.get_linestyle() == ":"
    assert "S" in ax.get_xlabel()


def test_phantom_errors_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="errors"):
        viz.plot_phantom_errors([1, 2, 3], {1.0: [0.5, 0.2]}, {1.0: 0.5})


def test_memory_plots_one_loglog_line_per_gradient():
    ks = [10, 30, 100]
    memory = {"unrolled": [1.5, 4.0, 12.8], "implicit (IFT)": np.array([0.4, 0.4, 0.4])}
    ax = viz.plot_memory(ks, memory, title="m")
    assert len(ax.lines) == 2
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    np.testing.assert_allclose(ax.lines[0].get_xdata(), ks)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), memory["unrolled"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["10", "30", "100"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(memory)
    with pytest.raises(ValueError):
        viz.plot_memory(ks, {"short": [1.0]})


def test_training_history_has_three_panels_with_the_right_curves():
    hist = _history()
    fig = viz.plot_training_history(hist)
    loss, acc, steps = fig.axes
    assert len(fig.axes) == 3
    np.testing.assert_allclose(loss.lines[0].get_ydata(), hist["train_loss"])
    assert len(acc.lines) == 2
    np.testing.assert_allclose(acc.lines[1].get_ydata(), hist["val_acc"])
    assert len(steps.lines) == 2
    np.testing.assert_allclose(steps.lines[0].get_ydata(), hist["solver_steps"])
    np.testing.assert_allclose(steps.lines[1].get_ydata(), hist["backward_steps"])
    assert steps.get_ylim()[0] == 0
    with pytest.raises(KeyError, match="val_acc"):
        viz.plot_training_history({k: v for k, v in hist.items() if k != "val_acc"})


def test_solver_steps_two_lines_per_training_one_colour_each():
    ax = viz.plot_solver_steps({"a": _history(), "b": _history(5.0)})
    assert len(ax.lines) == 4
    fwd_a, bwd_a, fwd_b, bwd_b = ax.lines
    np.testing.assert_allclose(fwd_b.get_ydata(), _history(5.0)["solver_steps"])
    np.testing.assert_allclose(bwd_a.get_ydata(), _history()["backward_steps"])
    assert fwd_a.get_color() == bwd_a.get_color() != fwd_b.get_color()
    assert fwd_a.get_linestyle() == "-" and bwd_a.get_linestyle() == "--"
    assert [t.get_text() for t in ax.get_legend().get_texts()][1] == "a: backward"


def test_adversarial_examples_rows_of_clean_perturbation_perturbed():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 8, 8, generator=gen)
    x_adv = (x + 0.1 * torch.randn(2, 1, 8, 8, generator=gen).sign()).clamp(0, 1)
    fig = viz.plot_adversarial_examples(x, x_adv, torch.tensor([3, 7]), [5, 1], eps=0.1)
    images = [ax for ax in fig.axes if ax.get_images()]
    assert len(fig.axes) == len(images) == 6  # 2 rows x 3 columns
    np.testing.assert_allclose(images[0].get_images()[0].get_array(), x[0, 0].numpy())
    np.testing.assert_allclose(images[1].get_images()[0].get_array(), (x_adv - x)[0, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(images[5].get_images()[0].get_array(), x_adv[1, 0].numpy())
    assert images[1].get_images()[0].get_clim() == (-0.1, 0.1)
    titles = [ax.get_title() for ax in images]
    assert "3" in titles[0] and "5" in titles[2] and "7" in titles[3] and "1" in titles[5]
    assert "0.1" in titles[1]


def test_adversarial_examples_refuses_mismatched_inputs():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError):
        viz.plot_adversarial_examples(x, x[:1], [1, 2], [1, 2])
    with pytest.raises(ValueError):
        viz.plot_adversarial_examples(x, x, [1], [1, 2])
