"""Chapter 6's 2-D toys: the Lyapunov projection's two centrings, the Euler map's discrete decrease, the ICNN V."""

from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from deqlib import viz  # noqa: E402
from deqlib.viz.style import BOOK_RC  # noqa: E402

U_A, U_B = (0.6, -0.4), (-0.5, 0.7)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def toy():
    return viz.lyapunov_toy(alpha=0.5, centre="origin", h=0.3, u=U_A, seed=0)


def _grid(n=21, lim=2.0):
    g = torch.linspace(-lim, lim, n, dtype=torch.float64)
    return torch.cartesian_prod(g, g)


def test_the_toy_is_deterministic_and_its_fixed_point_moves_with_u(toy):
    again = viz.lyapunov_toy(alpha=0.5, centre="origin", h=0.3, u=U_A, seed=0)
    z = _grid(7)
    assert torch.equal(toy.V(z), again.V(z))
    a, b = toy.fixed_point(), dataclasses.replace(toy, u=torch.tensor(U_B, dtype=torch.float64)).fixed_point()
    assert torch.allclose(toy.f(a[None])[0], a, atol=1e-10)
    assert (a - b).norm() > 0.5
    assert torch.linalg.matrix_norm(toy.weight, ord=2) > 1.0  # the plain iteration is not a contraction


@pytest.mark.parametrize("u", [U_A, U_B])
def test_origin_centring_collapses_the_fixed_point_residual_keeps_it(toy, u):
    """The ODE (Euler with h = 0.01 up to t = 30): origin-centred ends near 0 whatever u; residual at z*(u)."""
    base = dataclasses.replace(toy, u=torch.tensor(u, dtype=torch.float64), h=0.01)
    z0 = torch.tensor(viz.lyapunov.DEFAULT_STARTS)
    star = base.fixed_point()
    end = {c: dataclasses.replace(base, centre=c).euler(z0, 3000)[-1] for c in viz.CENTRES}
    assert end["origin"].norm(dim=1).max() < 0.05  # measured 0.021 (A), 0.008 (B)
    assert (end["residual"] - star).norm(dim=1).max() < 1e-3  # measured 9e-6, 6e-6
    assert (end["none"] - star).norm(dim=1).max() < 1e-2
    assert (end["origin"] - star).norm(dim=1).min() > 0.5


@pytest.mark.parametrize("centre", ["origin", "residual"])
def test_the_projected_field_decreases_V_c_at_rate_alpha_and_is_F_where_F_already_does(toy, centre):
    t = dataclasses.replace(toy, centre=centre)
    z = _grid()
    v, grad = t.certificate(z, with_grad=True)
    F, Fhat = t.nominal(z), t.field(z)
    assert ((grad * Fhat).sum(dim=1) <= -t.alpha * v + 1e-10).all()
    inactive = (grad * F).sum(dim=1) + t.alpha * v < 0
    assert 0 < int(inactive.sum()) < len(z)  # the projection is active somewhere, not everywhere
    assert torch.equal(Fhat[inactive], F[inactive])
    assert not torch.allclose(Fhat[~inactive], F[~inactive])


def test_the_euler_map_breaks_the_discrete_check_by_an_excess_that_shrinks_with_h(toy):
    res = viz.discrete_decrease(dataclasses.replace(toy, centre="residual"), hs=(0.01, 0.05, 0.3, 1.0), horizon=30)
    runs = res["runs"]
    excess = [r["max_relative_excess"] for r in runs]  # measured 0.22, 1.06, 7.37, 10.6
    assert all(r["violations"] > 0 for r in runs)  # an active projection plus a convex V_c: O(h²) over the bound
    assert excess == sorted(excess) and excess[0] < 0.5 and excess[-1] > 5
    assert runs[0]["ball_radius"] < 1e-3 < 0.1 < runs[-1]["ball_radius"]  # h = 1 does not converge
    assert runs[0]["values"].shape == (3001, 6) and runs[-1]["steps"] == 30 * 6


def test_origin_centring_chatters_in_a_ball_that_grows_with_h(toy):
    res = viz.discrete_decrease(toy, hs=(0.05, 0.3, 1.0), horizon=30)
    radii = [r["ball_radius"] for r in res["runs"]]  # measured 0.092, 0.34, 0.65
    assert radii == sorted(radii) and radii[0] < 0.15 and radii[-1] > 0.4
    fails = [r["violations"] / r["steps"] for r in res["runs"]]
    assert min(fails) > 0.9  # in the ball V_c no longer decreases


def test_the_icnn_V_is_positive_definite_and_convex(toy):
    checks = viz.icnn_lyapunov_checks(toy.V)
    assert checks["V_at_0"] == 0.0 and checks["min_off_origin"] > 0
    assert checks["min_ratio_to_quadratic"] >= 1.0 - 1e-12 and checks["convexity_violations"] == 0
    fig = viz.plot_icnn_lyapunov(toy.V, n=41)
    assert len(fig.axes) == 3  # two panels and a colour bar


def test_the_figures_have_their_panels_and_readable_fonts(toy):
    with viz.book_style():
        fields = viz.plot_lyapunov_fields(toy, horizon=3)
        assert [ax.get_title().split(":")[0].split(",")[0] for ax in fields.axes] == [
            "nominal $F$",
            "origin",
            "residual",
        ]
        small = viz.lyapunov_small_multiples(toy, centres=("origin", "residual"), hs=(0.1, 0.5, 1.0), horizon=2)
        assert len(small.axes) == 6 and small.axes[2].get_title().endswith("$h = 1$")
        res = [
            viz.discrete_decrease(dataclasses.replace(toy, centre=c), hs=(0.3, 1.0), horizon=3)
            for c in ("origin", "residual")
        ]
        decrease = viz.plot_discrete_decrease(res)
        assert len(decrease.axes) == 3 and len(decrease.axes[0].get_lines()) == 3
        assert "steps fail" in decrease.axes[0].get_legend().get_texts()[0].get_text()
        for fig in (fields, small, decrease):
            assert fig.get_figwidth() <= 10.0
            sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]
            assert min(sizes) >= 9, min(sizes)
    assert BOOK_RC["font.size"] >= 9


def test_bad_settings_are_refused(toy):
    with pytest.raises(ValueError, match="centre"):
        viz.lyapunov_toy(centre="center")
    with pytest.raises(ValueError, match="h in"):
        viz.lyapunov_toy(h=1.5)
    with pytest.raises(ValueError, match="1 to 3 hs"):
        viz.lyapunov_small_multiples(toy, hs=(0.1, 0.2, 0.3, 0.4))


def test_the_explorer_redraws_for_each_control():
    pytest.importorskip("ipywidgets")
    from deqlib import widgets

    w = widgets.lyapunov_explorer(horizon=3)
    c = {ctl._kwarg: ctl for ctl in w.kwargs_widgets}
    assert set(c) == {"centre", "alpha", "h", "u1", "u2"}
    end = w.last["trajectory"][-1].clone()
    c["centre"].value = "residual"
    assert w.last["settings"]["centre"] == "residual" and not torch.equal(w.last["trajectory"][-1], end)
    c["h"].value = 1.0
    assert w.last["decrease"]["runs"][0]["h"] == 1.0 and w.last["trajectory"].shape == (4, 6, 2)
