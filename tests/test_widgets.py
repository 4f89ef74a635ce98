"""The chapter 4 explorer (deqlib.widgets.trajectory_explorer), built headless: a control changes what it draws."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from _digits_deq import digits_fixture, trained_fixture  # noqa: E402, F401 (fixtures)

pytest.importorskip("ipywidgets")

from deqlib import widgets  # noqa: E402


def _controls(w):
    return {c._kwarg: c for c in w.kwargs_widgets}


def test_trajectory_explorer_redraws_for_each_control(digits, trained):
    _, _, (x, y) = digits
    w = widgets.trajectory_explorer({"a": trained}, x[:5], y[:5], eps_values=(0.0, 0.3), steps=6)
    c = _controls(w)
    assert set(c) == {"model", "digit", "eps", "attack", "gradient"}
    first = w.last["adversarial"]["probs"].clone()
    assert w.last["settings"]["eps"] == 0.3 and first.shape == (7, 1, 10)
    c["eps"].value = 0.0  # no attack: the attacked readout is the clean one
    assert w.last["settings"]["eps"] == 0.0
    assert torch.equal(w.last["x_adv"], x[:1]) and not torch.equal(w.last["adversarial"]["probs"], first)
    c["digit"].value = 3
    assert torch.equal(w.last["x_adv"], x[3:4])
    c["gradient"].value = "unroll"
    assert w.last["settings"]["gradient"] == "unroll"


def test_trajectory_explorer_rejects_bad_input(digits, trained):
    _, _, (x, y) = digits
    with pytest.raises(TypeError, match="mapping"):
        widgets.trajectory_explorer([trained], x[:2], y[:2])
    with pytest.raises(ValueError, match="labels|y"):
        widgets.trajectory_explorer({"a": trained}, x[:2], y[:3])
    with pytest.raises(ValueError, match="eps_values"):
        widgets.trajectory_explorer({"a": trained}, x[:2], y[:2], eps_values=())


def test_entropy_explorer_follows_the_defence_radius_and_the_attack(digits, trained):
    _, _, (x, y) = digits
    w = widgets.entropy_explorer(trained, x[:4], y[:4], eps_def=(0.0, 0.3, 0.1, 0.2))
    c = _controls(w)
    assert set(c) == {"digit", "radius", "attack"}
    run = w.last["run"]
    assert run["on"].shape == (4, 11, 1) and run["off"].shape == (4, 1, 1)
    assert run["on"][0, -1, 0] < run["on"][0, 0, 0]  # the input steps lower the entropy
    assert 0 < (run["x_T"] - x[:1]).abs().max() <= 0.2 + 1e-6
    c["radius"].value = 0.0  # no ball: the input never moves and the defence is its idle twin
    run = w.last["run"]
    assert torch.equal(run["x_T"], x[:1])
    assert torch.allclose(run["on"][:, -1, 0], run["off"][:, 0, 0], atol=1e-6)
    c["attack"].value = 0.2
    assert not torch.equal(w.last["run"]["x"], x[:1])  # the digit the defence receives is the attacked one
    assert (w.last["run"]["x"] - x[:1]).abs().max() <= 0.2 + 1e-6


def test_chapter7_static_figures_draw_what_they_are_given(digits, trained):
    import matplotlib.pyplot as plt

    from deqlib import viz
    from deqlib.defenses import EntropyReductionDefense

    _, _, (x, y) = digits
    d = EntropyReductionDefense.as_released(trained, eps=0.1, eta=0.025)
    fig = viz.entropy_defence_small_multiples({"a": viz.entropy_with_defence(d, x[:2], y[:2])}, 1)
    ax_h = fig.axes[2]
    assert len(ax_h.lines) == 2 * d.rounds  # on and off, per round
    plt.close(fig)
    rows = {"m": {0: {"n": 100, "E1": 0.8, "E3": 0.7, "E2": 0.5}, 1: {"n": 100, "E1": 0.6, "E2": 0.4}}}
    ax = viz.plot_evaluations(rows)
    ys = sorted(round(float(c.lines[0].get_ydata()[0]), 3) for c in ax.containers)
    assert ys == [0.4, 0.5, 0.6, 0.7, 0.8]  # one marker per (evaluation, seed) given
    plt.close(ax.figure)
    with pytest.raises(ValueError):
        viz.plot_evaluations({})
    with pytest.raises(ValueError):
        viz.entropy_defence_small_multiples({})
