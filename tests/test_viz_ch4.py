"""Chapter 4's figures (deqlib.viz.dynamics): they draw the data they are given."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from deqlib import viz  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _curve(acc, ent):
    return {"accuracy": acc, "entropy_mean": ent, "accuracy_ci95": [[a - 0.1, a + 0.1] for a in acc]}


def test_plot_state_readouts_draws_each_curve_up_to_k_max():
    curves = {
        "clean": _curve([0.1, 0.8, 0.9, 0.9], [2.3, 0.5, 0.2, 0.2]),
        "adv": _curve([0.1, 0.3, 0.2, 0.2], [2.3, 1, 1, 1]),
    }
    ax_a, ax_h = viz.plot_state_readouts(curves, k_max=2, mark_k=1)
    lines = [ln for ln in ax_a.get_lines() if ln.get_label() in curves]
    assert [ln.get_label() for ln in lines] == ["clean", "adv"]
    assert np.allclose(lines[1].get_ydata(), [0.1, 0.3, 0.2]) and np.allclose(lines[0].get_xdata(), [0, 1, 2])
    hl = [ln for ln in ax_h.get_lines() if ln.get_label() == "adv"][0]
    assert np.allclose(hl.get_ydata(), [2.3, 1, 1])
    assert len(ax_a.collections) == 2 and len(ax_h.collections) == 0  # bands only where intervals are given
    with pytest.raises(ValueError, match="entropy_mean"):
        viz.plot_state_readouts({"x": {"accuracy": [0.1]}})


def test_plot_distributions_one_histogram_per_group_and_its_median():
    g = {"standard": {"rho": [0.2, 0.4, 0.9], "s": [1.0, 2.0, 4.0]}, "pgdat": {"rho": [0.1, 0.2, 0.6], "s": [1, 1, 2]}}
    axes = viz.plot_distributions(g, log=("s",), reference={"rho": 1.0})
    assert len(axes) == 2 and axes[1].get_xscale() == "log" and axes[0].get_xscale() == "linear"
    assert len(axes[0].patches) == 2  # two step histograms
    medians = sorted(ln.get_xdata()[0] for ln in axes[0].get_lines())
    assert np.allclose(medians, [0.2, 0.4, 1.0])  # the two medians and the reference
    with pytest.raises(ValueError, match="same quantities"):
        viz.plot_distributions({"a": {"rho": [1]}, "b": {"s": [1]}})


def test_plot_segment_scan_marks_non_converged_solves():
    scan = {
        "t": torch.linspace(0, 1, 5),
        "rho": torch.tensor([0.5, 0.7, 1.1, 0.7, 0.5]),
        "jump": torch.tensor([0.0, 0.1, 2.0, 0.1, 0.1]),
        "converged": torch.tensor([1, 1, 0, 1, 1]).bool(),
    }
    ax_r, ax_j = viz.plot_segment_scan({"digit": scan})
    rho_line, cross = ax_r.get_lines()[:2]
    assert np.allclose(rho_line.get_ydata(), scan["rho"]) and np.allclose(cross.get_ydata(), [1.1])
    assert np.allclose(ax_j.get_lines()[0].get_ydata(), [0.1, 2.0, 0.1, 0.1])  # t = 0 has no jump
    assert ax_j.get_yscale() == "log"


def _readout(p_true_adv):
    k, c = len(p_true_adv), 3
    probs_adv = torch.zeros(k, 1, c)
    probs_adv[:, 0, 1] = torch.tensor(p_true_adv)
    probs_adv[:, 0, 2] = 1 - probs_adv[:, 0, 1]
    probs_clean = torch.zeros(k, 1, c)
    probs_clean[:, 0, 1] = 1.0
    ent = lambda p: -(p.clamp_min(1e-12).log() * p).sum(-1)  # noqa: E731
    r = lambda p: {"probs": p, "entropy": ent(p), "predictions": p.argmax(-1)}  # noqa: E731
    return {
        "x_adv": torch.rand(1, 1, 4, 4),
        "y": torch.tensor([1]),
        "clean": r(probs_clean),
        "adversarial": r(probs_adv),
    }


def test_plot_digit_readout_and_its_small_multiples():
    r = _readout([0.9, 0.6, 0.3, 0.2])
    ax_img, ax_p, ax_h = viz.plot_digit_readout(r, 0, k_max=2)
    clean, adv = ax_p.get_lines()
    assert np.allclose(adv.get_ydata(), [0.9, 0.6, 0.3]) and np.allclose(clean.get_ydata(), [1, 1, 1])
    assert "clean → 1, attacked → 2" in ax_img.get_title()
    fig = viz.digit_readout_small_multiples({"a": r, "b": _readout([0.9, 0.8, 0.7, 0.6])}, k_max=3)
    assert len(fig.axes) == 6
    assert np.allclose(fig.axes[4].get_lines()[1].get_ydata(), [0.9, 0.8, 0.7, 0.6])
    with pytest.raises(ValueError, match="empty"):
        viz.digit_readout_small_multiples({})


def test_plot_hysteresis_draws_both_branches_between_the_end_equilibria():
    t = torch.linspace(0, 1, 5)
    zf = torch.tensor([[0.0], [0.1], [0.2], [0.3], [1.0]])  # jumps late going forward
    zb = torch.tensor([[0.0], [0.7], [0.8], [0.9], [1.0]])  # and early coming back: a loop
    result = {
        "t": t,
        "z_forward": zf[None],
        "z_backward": zb[None],
        "gap": (zf - zb).abs().T,
        "converged": torch.tensor([[True, True, False, True, True]]),
    }
    ax_b, ax_g = viz.plot_hysteresis(result, 0)
    fwd, bwd = ax_b.get_lines()
    assert np.allclose(fwd.get_ydata(), [0, 0.1, 0.2, 0.3, 1]) and np.allclose(bwd.get_ydata(), [0, 0.7, 0.8, 0.9, 1])
    gap_line, cross = ax_g.get_lines()
    assert np.allclose(gap_line.get_ydata()[1:4], [0.6, 0.6, 0.6]) and np.allclose(cross.get_xdata(), [0.5])
    assert ax_g.get_yscale() == "log"
