"""Tests for deqlib.lyapunov: ReHU, ICNN, Lyapunov function, stable projection, decrease check."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deqlib.lyapunov import (
    ICNN,
    LyapunovFunction,
    ReHU,
    StableDynamics,
    lyapunov_decrease,
    stable_projection,
)

DT = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rehu_grad(s: torch.Tensor, d: float) -> torch.Tensor:
    s = s.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(ReHU(d)(s).sum(), s)
    return g


class _Nominal(nn.Module):
    """A small nominal dynamics F(z, x) = tanh(A z + B x) + c·z (c > 0 makes it expanding)."""

    def __init__(self, n: int, m: int, expand: float = 0.5) -> None:
        super().__init__()
        self.A = nn.Linear(n, n)
        self.B = nn.Linear(m, n, bias=False)
        self.expand = expand

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.A(z) + self.B(x)) + self.expand * z


# ---------------------------------------------------------------- ReHU


@pytest.mark.parametrize("d", [1.0, 0.3, 2.5])
def test_rehu_values(d):
    s = torch.tensor([-3.0, -1e-3, 0.0, d / 2, d, 2 * d, 10 * d], dtype=DT)
    want = torch.tensor([0.0, 0.0, 0.0, d / 8, d / 2, 1.5 * d, 9.5 * d], dtype=DT)
    torch.testing.assert_close(ReHU(d)(s), want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("d", [1.0, 0.3])
def test_rehu_continuous_value_and_derivative(d):
    rehu = ReHU(d)
    h = 1e-9
    for knot in (0.0, d):
        s = torch.tensor([knot - h, knot, knot + h], dtype=DT)
        v = rehu(s)
        assert (v.max() - v.min()).item() < 1e-8
        g = _rehu_grad(s, d)
        assert (g.max() - g.min()).item() < 1e-8
    # the derivative is 0 at 0, exactly 1 at d
    torch.testing.assert_close(_rehu_grad(torch.tensor([0.0, d], dtype=DT), d), torch.tensor([0.0, 1.0], dtype=DT))


def test_rehu_non_decreasing_and_convex():
    s = torch.linspace(-3, 5, 2001, dtype=DT)
    v = ReHU(1.3)(s)
    assert (v.diff() >= 0).all()
    assert (v.diff().diff() >= -1e-12).all()
    assert (v >= 0).all()


@pytest.mark.parametrize("d", [0.0, -1.0, float("nan"), float("inf")])
def test_rehu_bad_d(d):
    with pytest.raises(ValueError):
        ReHU(d)


# ---------------------------------------------------------------- ICNN


def _convexity_gap(g: nn.Module, n: int, seed: int, shape=None) -> float:
    """max over random lines of g(t z1 + (1-t) z2) - [t g(z1) + (1-t) g(z2)]; <= 0 for convex g."""
    gen = _gen(seed)
    m = 256
    shape = shape or (n,)
    z1 = 3 * torch.randn((m, *shape), generator=gen, dtype=DT)
    z2 = 3 * torch.randn((m, *shape), generator=gen, dtype=DT)
    t = torch.rand(m, generator=gen, dtype=DT)
    tb = t.reshape((m,) + (1,) * len(shape))
    with torch.no_grad():
        lhs = g(tb * z1 + (1 - tb) * z2)
        rhs = t * g(z1) + (1 - t) * g(z2)
    return (lhs - rhs).max().item()


@pytest.mark.parametrize("activation", ["softplus", "rehu", "relu"])
def test_icnn_convex_fresh(activation):
    torch.manual_seed(0)
    g = ICNN(5, hidden=(32, 32, 16), activation=activation).to(DT)
    assert _convexity_gap(g, 5, seed=1) <= 1e-9


def test_convexity_check_detects_a_non_convex_network():
    # negative control for the check above: a concave activation breaks convexity, and the check sees it
    torch.manual_seed(0)
    g = ICNN(5, hidden=(32, 32, 16), activation=torch.tanh).to(DT)
    assert _convexity_gap(g, 5, seed=1) > 1e-3


def test_icnn_shapes_and_flattening():
    torch.manual_seed(0)
    g = ICNN(12, hidden=(8,))
    z = torch.randn(4, 3, 2, 2)
    out = g(z)
    assert out.shape == (4,)
    torch.testing.assert_close(out, g(z.reshape(4, 12)))
    assert _convexity_gap(g.to(DT), 12, seed=3, shape=(3, 2, 2)) <= 1e-9


def test_icnn_stays_convex_after_training():
    torch.manual_seed(0)
    g = ICNN(4, hidden=(16, 16)).to(DT)
    opt = torch.optim.Adam(g.parameters(), lr=0.5)  # large steps: push hard against the constraint
    gen = _gen(2)
    for _ in range(15):
        z = torch.randn(64, 4, generator=gen, dtype=DT)
        # an arbitrary loss that rewards a concave-looking g (negative pass-through weights would help it)
        loss = (g(z) + (z**2).sum(1)).pow(2).mean() - g(torch.zeros(1, 4, dtype=DT)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all((u >= 0).all() for u in g.nonnegative_weights())
    assert _convexity_gap(g, 4, seed=4) <= 1e-9


def test_icnn_bad_input():
    with pytest.raises(ValueError):
        ICNN(0)
    with pytest.raises(ValueError):
        ICNN(3, hidden=())
    with pytest.raises(ValueError):
        ICNN(3, hidden=(4, 0))
    with pytest.raises(ValueError):
        ICNN(3, activation="tanh")
    g = ICNN(3, hidden=(4,))
    with pytest.raises(ValueError):
        g(torch.randn(2, 4))
    with pytest.raises(ValueError):
        g(torch.randn(3))  # no batch dimension


# ---------------------------------------------------------------- Lyapunov function


def _lyap(n=3, seed=0, **kw) -> LyapunovFunction:
    torch.manual_seed(seed)
    return LyapunovFunction(n, hidden=(16, 16), **kw).to(DT)


def test_V_zero_at_origin_positive_elsewhere():
    V = _lyap()
    with torch.no_grad():
        assert torch.equal(V(torch.zeros(5, 3, dtype=DT)), torch.zeros(5, dtype=DT))
        z = torch.randn(200, 3, generator=_gen(1), dtype=DT) * torch.logspace(-3, 1, 200, dtype=DT)[:, None]
        v = V(z)
        assert v.shape == (200,)
        assert (v > 0).all()
        # V >= eps ||z||^2
        assert (v >= 0.01 * (z**2).sum(1) * (1 - 1e-12)).all()


def test_V_custom_center():
    V = _lyap()
    c = torch.randn(6, 3, generator=_gen(2), dtype=DT)
    z = torch.randn(6, 3, generator=_gen(3), dtype=DT)
    with torch.no_grad():
        assert torch.equal(V(c, center=c), torch.zeros(6, dtype=DT))
        assert (V(z, center=c) > 0).all()
        # a single centre for the whole batch broadcasts
        one = c[0]
        torch.testing.assert_close(V(z, center=one), V(z, center=one.expand(6, 3)))
        assert V(one.expand(6, 3), center=one).abs().max().item() == 0.0
    with pytest.raises(ValueError):
        V(z, center=torch.zeros(5, 3, dtype=DT))


def test_V_gradient_matches_autograd_and_is_per_sample():
    V = _lyap()
    z = torch.randn(7, 3, generator=_gen(4), dtype=DT)
    v, dv = V.gradient(z)
    assert v.shape == (7,) and dv.shape == (7, 3)
    assert not v.requires_grad and not dv.requires_grad
    for i in range(7):
        vi, dvi = V.gradient(z[i : i + 1])
        torch.testing.assert_close(vi, v[i : i + 1], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(dvi, dv[i : i + 1], rtol=1e-12, atol=1e-14)
    # finite differences on one sample
    h = 1e-6
    for j in range(3):
        e = torch.zeros(1, 3, dtype=DT)
        e[0, j] = h
        with torch.no_grad():
            fd = (V(z[:1] + e) - V(z[:1] - e)) / (2 * h)
        assert abs(fd.item() - dv[0, j].item()) < 1e-6
    # at the centre the gradient is zero
    _, d0 = V.gradient(torch.zeros(2, 3, dtype=DT))
    assert torch.equal(d0, torch.zeros(2, 3, dtype=DT))
    # under no_grad as well
    with torch.no_grad():
        v2, dv2 = V.gradient(z)
    torch.testing.assert_close(dv2, dv)


def test_V_gradient_create_graph_trains_g():
    V = _lyap()
    z = torch.randn(5, 3, generator=_gen(5), dtype=DT)
    v, dv = V.gradient(z, create_graph=True)
    assert v.requires_grad and dv.requires_grad
    (dv**2).sum().backward()
    assert all(p.grad is not None for p in V.parameters())


def test_V_bad_input():
    with pytest.raises(ValueError):
        LyapunovFunction(3, d=0.0)
    with pytest.raises(ValueError):
        LyapunovFunction(3, d=-1.0)
    with pytest.raises(ValueError):
        LyapunovFunction(3, eps=0.0)
    with pytest.raises(ValueError):
        LyapunovFunction()
    with pytest.raises(ValueError):
        LyapunovFunction(4, icnn=ICNN(3, hidden=(4,)))


# ---------------------------------------------------------------- stable projection

ALPHA = 0.3


def _random_F(V, z, seed):
    """Random nominal F, with about a third of the samples already decreasing V faster than -alpha V."""
    v, dv = V.gradient(z)
    F = torch.randn(z.shape, generator=_gen(seed), dtype=DT)
    n = z.shape[0]
    good = torch.arange(n) % 3 == 0
    sq = (dv * dv).sum(1)
    # F = -dv (alpha V + 1) / ||dv||^2 + (component orthogonal to dv): dV/dt = -alpha V - 1
    ortho = F - dv * ((dv * F).sum(1) / sq)[:, None]
    F_good = -dv * ((ALPHA * v + 1.0) / sq)[:, None] + ortho
    return torch.where(good[:, None], F_good, F), good, v, dv


def test_projection_certificate_per_sample():
    V = _lyap(n=4)
    z = torch.randn(90, 4, generator=_gen(6), dtype=DT) * 2
    F, good, v, dv = _random_F(V, z, seed=7)
    Fh = stable_projection(F, v, dv, ALPHA)
    rate = (dv * Fh).sum(1)
    assert (rate <= -ALPHA * v + 1e-6).all()
    # samples that already decreased V are left exactly unchanged
    assert good.any()
    assert torch.equal(Fh[good], F[good])
    # the others that violated end exactly on the boundary dV/dt = -alpha V
    active = (dv * F).sum(1) + ALPHA * v > 0
    assert active.any()
    torch.testing.assert_close(rate[active], -ALPHA * v[active], rtol=1e-9, atol=1e-10)
    # only the component along grad V changes
    delta = Fh - F
    cos = (delta * dv).sum(1).abs() / (delta.norm(dim=1) * dv.norm(dim=1)).clamp_min(1e-300)
    assert torch.allclose(cos[active], torch.ones_like(cos[active]))


def test_projection_no_cross_sample_coupling():
    V = _lyap(n=4)
    z = torch.randn(12, 2, 2, generator=_gen(8), dtype=DT)  # non-flat states
    v, dv = V.gradient(z)
    F = torch.randn(z.shape, generator=_gen(9), dtype=DT) * torch.logspace(-2, 2, 12, dtype=DT)[:, None, None]
    batch = stable_projection(F, v, dv, ALPHA)
    for i in range(12):
        one = stable_projection(F[i : i + 1], v[i : i + 1], dv[i : i + 1], ALPHA)
        torch.testing.assert_close(one, batch[i : i + 1], rtol=1e-13, atol=1e-15)


def test_projection_at_center_is_finite_and_unchanged():
    V = _lyap()
    z = torch.zeros(3, 3, dtype=DT)
    v, dv = V.gradient(z)
    F = torch.randn(3, 3, generator=_gen(10), dtype=DT)
    Fh = stable_projection(F, v, dv, ALPHA)
    assert torch.isfinite(Fh).all()
    assert torch.equal(Fh, F)


def test_projection_bad_input():
    F = torch.randn(4, 3)
    v = torch.rand(4)
    dv = torch.randn(4, 3)
    with pytest.raises(ValueError):
        stable_projection(F, v, torch.randn(4, 2), 0.1)
    with pytest.raises(ValueError):
        stable_projection(F, torch.rand(3), dv, 0.1)
    with pytest.raises(ValueError):
        stable_projection(F, v.unsqueeze(1), dv, 0.1)
    with pytest.raises(ValueError):
        stable_projection(F[0], v[0], dv[0], 0.1)
    for alpha in (0.0, -0.5, float("nan")):
        with pytest.raises(ValueError):
            stable_projection(F, v, dv, alpha)


# ---------------------------------------------------------------- StableDynamics


def _stable(n=3, m=2, alpha=ALPHA, seed=0):
    torch.manual_seed(seed)
    V = LyapunovFunction(n, hidden=(8, 8))
    return StableDynamics(_Nominal(n, m), V, alpha=alpha).to(DT)


def test_stable_dynamics_no_grad_and_grad_agree():
    sd = _stable()
    z = torch.randn(10, 3, generator=_gen(11), dtype=DT)
    x = torch.randn(10, 2, generator=_gen(12), dtype=DT)
    with torch.no_grad():
        out_ng = sd(z, x)
    assert not out_ng.requires_grad
    out = sd(z, x)
    assert out.requires_grad
    torch.testing.assert_close(out_ng, out.detach(), rtol=1e-12, atol=1e-14)
    v, dv = sd.lyapunov.gradient(z)
    assert ((dv * out_ng).sum(1) <= -ALPHA * v + 1e-6).all()
    # the nominal dynamics expands, so the projection must have acted on some samples
    assert not torch.allclose(out_ng, sd.dynamics(z, x))
    # training signal reaches both the nominal dynamics and the Lyapunov function
    (out**2).sum().backward()
    assert all(p.grad is not None for p in sd.parameters())
    output_bias = sd.lyapunov.g.input_layers[-1].bias  # cancels in g(z) - g(center): no gradient, by design
    assert all(p.grad.abs().sum() > 0 for p in sd.lyapunov.parameters() if p is not output_bias)
    assert output_bias.grad.abs().sum() == 0
    # per sample: batch of one equals the batch
    with torch.no_grad():
        for i in (0, 5, 9):
            torch.testing.assert_close(sd(z[i : i + 1], x[i : i + 1]), out_ng[i : i + 1], rtol=1e-12, atol=1e-14)


def test_stable_dynamics_inference_mode():
    sd = _stable()
    z = torch.randn(4, 3, generator=_gen(13), dtype=DT)
    x = torch.randn(4, 2, generator=_gen(14), dtype=DT)
    with torch.no_grad():
        ref = sd(z, x)
    with torch.inference_mode():
        out = sd(z.clone(), x.clone())
    torch.testing.assert_close(out, ref)


def test_stable_dynamics_gradcheck_wrt_z():
    sd = _stable(n=2, m=2, alpha=0.5, seed=1)
    z = torch.tensor([[0.7, -1.1], [1.5, 0.4], [-0.3, 0.9]], dtype=DT, requires_grad=True)
    x = torch.tensor([[0.2, -0.5], [0.1, 0.3], [-0.4, 0.6]], dtype=DT)
    c = torch.tensor([[0.1, 0.0], [0.0, -0.2], [0.3, 0.1]], dtype=DT)
    with torch.no_grad():
        v, dv = sd.lyapunov.gradient(z, c)
        margin = (dv * sd.dynamics(z, x)).sum(1) + 0.5 * v
    assert (margin.abs() > 1e-3).all()  # away from the ReLU kink, where the map is not differentiable
    assert torch.autograd.gradcheck(lambda zz: sd(zz, x, center=c), (z,), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_stable_dynamics_callable_without_input_and_bad_output():
    torch.manual_seed(0)
    V = LyapunovFunction(3, hidden=(8,)).to(DT)
    sd = StableDynamics(lambda z: 2 * z, V, alpha=0.1)
    z = torch.randn(4, 3, generator=_gen(15), dtype=DT)
    with torch.no_grad():
        out = sd(z)
        v, dv = V.gradient(z)
    assert ((dv * out).sum(1) <= -0.1 * v + 1e-6).all()
    with pytest.raises(ValueError):
        StableDynamics(lambda z: z[:, :2], V)(z)
    with pytest.raises(ValueError):
        StableDynamics(lambda z: z, V, alpha=0.0)
    with pytest.raises(ValueError):
        StableDynamics(lambda z: z, V, alpha=-1.0)


def test_euler_trajectory_of_projected_dynamics_decreases_V():
    # A forward-Euler rollout of the projected (nominally expanding) dynamics passes the discrete check.
    # The guarantee dV/dt <= -alpha V is for continuous time: an Euler step adds an O(dt^2) error against a margin
    # O(dt) (here (0.5 - 0.45) dt V), so dt must be small; with dt = 0.01 this case has 3 of 480 violating steps.
    sd = _stable(alpha=0.5, seed=2)
    z = torch.randn(16, 3, generator=_gen(16), dtype=DT)
    x = torch.randn(16, 2, generator=_gen(17), dtype=DT)
    dt = 0.001
    traj = [z]
    with torch.no_grad():
        for _ in range(30):
            traj.append(traj[-1] + dt * sd(traj[-1], x))
        nominal = [z]
        for _ in range(30):
            nominal.append(nominal[-1] + dt * sd.dynamics(nominal[-1], x))
    # continuous time guarantees exp(-alpha dt) per step; check against a slightly weaker rate
    rep = lyapunov_decrease(sd.lyapunov, traj, alpha=0.45, dt=dt)
    assert rep["violations"] == 0 and rep["steps"] == 30 * 16
    assert lyapunov_decrease(sd.lyapunov, nominal, alpha=0.45, dt=dt)["violations"] > 0


# ---------------------------------------------------------------- lyapunov_decrease


def _sq(z):
    return (z**2).flatten(1).sum(1)


def test_decrease_geometric_passes():
    z0 = torch.randn(5, 2, 3, generator=_gen(18), dtype=DT) + 0.1
    traj = torch.stack([z0 * 0.9**k for k in range(8)])  # V shrinks by 0.81 per step
    rep = lyapunov_decrease(_sq, traj, alpha=0.19)  # exactly the bound: passes within the tolerance
    assert rep["violations"] == 0
    assert rep["steps"] == 7 * 5
    assert rep["rate"] == 0.0
    assert rep["max_excess"] <= 1e-12
    assert rep["per_step"] == [0] * 7
    # a rate it does not reach is violated everywhere
    rep = lyapunov_decrease(_sq, traj, alpha=0.25)
    assert rep["violations"] == 35 and rep["rate"] == 1.0 and rep["max_excess"] > 0


def test_decrease_counts_hand_made_violations():
    # V values per sample along 4 states (3 steps); alpha = 0.5: need V_{k+1} <= 0.5 V_k
    values = torch.tensor(
        [
            [8.0, 8.0, 0.0],
            [4.0, 5.0, 0.0],  # sample 1 violates (5 > 4)
            [2.0, 2.5, 0.0],
            [3.0, 1.0, 0.0],  # sample 0 increases V: violates by 3 - 1 = 2
        ],
        dtype=DT,
    )
    traj = [v[:, None].sqrt() for v in values]  # states with V = z^2
    rep = lyapunov_decrease(_sq, traj, alpha=0.5)
    assert rep["violations"] == 2
    assert rep["steps"] == 9
    assert rep["rate"] == pytest.approx(2 / 9)
    assert rep["max_excess"] == pytest.approx(2.0)
    assert rep["per_step"] == [1, 0, 1]
    # atol lets a converged (noise-floor) step pass
    flat = [torch.full((1, 1), 1e-7, dtype=DT)] * 3
    assert lyapunov_decrease(_sq, flat, alpha=0.5)["violations"] == 2
    assert lyapunov_decrease(_sq, flat, alpha=0.5, atol=1e-12)["violations"] == 0


def test_decrease_nan_counts_as_violation():
    traj = [torch.ones(2, 1, dtype=DT), torch.tensor([[float("nan")], [0.5]], dtype=DT)]
    rep = lyapunov_decrease(_sq, traj, alpha=0.5)
    assert rep["violations"] == 1


def test_decrease_bad_input():
    traj = [torch.ones(2, 3), torch.ones(2, 3)]
    for kw in ({"alpha": 0.0}, {"alpha": -1.0}, {"alpha": 0.5, "dt": 0.0}, {"alpha": 0.5, "dt": 3.0}):
        with pytest.raises(ValueError):
            lyapunov_decrease(_sq, traj, **kw)
    with pytest.raises(ValueError):
        lyapunov_decrease(_sq, traj[:1], alpha=0.1)
    with pytest.raises(ValueError):
        lyapunov_decrease(_sq, [torch.ones(2, 3), torch.ones(3, 3)], alpha=0.1)
    with pytest.raises(ValueError):
        lyapunov_decrease(lambda z: z, traj, alpha=0.1)  # V_fn must return (N,)
    with pytest.raises(ValueError):
        lyapunov_decrease(_sq, torch.ones(3, 4), alpha=0.1)  # stacked needs (K+1, N, *state)
    with pytest.raises(ValueError):
        lyapunov_decrease(_sq, traj, alpha=0.1, rtol=-1.0)
