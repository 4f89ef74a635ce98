"""Tests for deqlib.defenses.lyadeq and lyadeq_checks: the Lyapunov-stable cell, LyaDEQ classifier, fixed-point
collapse, certificate check."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
from torch import nn

import deqlib.defenses as defenses_package
import deqlib.defenses.lyadeq as lyadeq_module
import deqlib.defenses.lyadeq_checks as lyadeq_checks_module
from deqlib.cells import MLPCell
from deqlib.data import load
from deqlib.defenses import (
    LyaDEQClassifier,
    LyapunovStableCell,
    certificate_check,
    fixed_point_spread,
    lyadeq_classifier,
    orthogonal_head,
    orthogonal_linear,
)
from deqlib.deq import DEQ
from deqlib.lyapunov import LyapunovFunction
from deqlib.solvers import get_solver

DT = torch.float64
N_STATE = 4


@pytest.fixture(scope="module")
def digits():
    return load("digits", "train")


def _cell(center="residual", alpha=3.0, h=0.2, n=N_STATE, weight_scale=0.9, seed=0, dtype=DT):
    """A small tanh MLP cell (contractive: ||W|| = weight_scale) wrapped in the stable projection."""
    torch.manual_seed(seed)
    nominal = MLPCell(n, activation="tanh", norm=False, weight_scale=weight_scale)
    V = LyapunovFunction(n, hidden=(8,))
    return LyapunovStableCell(nominal, V, alpha=alpha, h=h, center=center).to(dtype)


def _model(digits, seed=0, **kw):
    torch.manual_seed(seed)
    opts = dict(
        width=16, activation="tanh", norm=False, lyapunov_hidden=(16,), solver="fixed_point", max_iter=30, tol=1e-5
    )
    opts.update(kw)
    return lyadeq_classifier(digits, **opts)


def _flat_grad_norm(params):
    gs = [p.grad.reshape(-1) for p in params if p.grad is not None]
    return float(torch.cat(gs).norm()) if gs else 0.0


# ---------------------------------------------------------------- the cell inside DEQ


# origin + IFT: no true fixed point (the iterates chatter around 0), so the adjoint iteration may diverge and warn
@pytest.mark.filterwarnings("ignore::deqlib.solvers.SolverDivergenceWarning")
@pytest.mark.parametrize("center", ["origin", "residual"])
@pytest.mark.parametrize("grad", ["ift", "phantom", "unroll"])
def test_stable_cell_in_deq_gradients_reach_everything(center, grad):
    # alpha = 3: the projection acts in the transient (with alpha <~ 1 it rarely does for a contractive cell)
    cell = _cell(center, alpha=3.0, h=0.2, dtype=torch.float32)
    deq = DEQ(cell, solver="fixed_point", grad=grad, max_iter=25, tol=1e-5, phantom_steps=3)
    u = torch.randn(3, N_STATE, requires_grad=True)
    out = deq(u)
    assert out.shape == (3, N_STATE)
    (out * torch.linspace(-1, 1, N_STATE)).sum().backward()
    assert u.grad is not None and torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0
    nominal_params = list(cell.cell.parameters())
    icnn_params = list(cell.lyapunov.parameters())
    for p in nominal_params + icnn_params:
        assert p.grad is None or torch.isfinite(p.grad).all()
    assert _flat_grad_norm(nominal_params) > 0
    if grad != "ift":
        # finite-step gradients see the projection acting along the way: the loss trains the Lyapunov network.
        # (IFT: for "residual" V's gradient is O(residual), see the next test; for "origin" the solver's best
        # iterate may be the initial state z = 0 itself, the collapse point, where ∇V = 0 and V drops out.)
        assert _flat_grad_norm(icnn_params) > 0


def test_residual_ift_gradient_is_the_nominal_one_and_ignores_V():
    """Same fixed points => same implicit derivative; the loss does not depend on V's parameters (O(residual))."""
    cell = _cell("residual", alpha=3.0, h=0.2)
    opts = dict(solver="anderson", grad="ift", max_iter=200, tol=1e-13, stop_mode="abs", backward_tol=1e-13)
    deq, nominal = DEQ(cell, **opts), DEQ(cell.cell, **opts)
    u = torch.randn(3, N_STATE, dtype=DT)
    w = torch.randn(3, N_STATE, dtype=DT)
    grads = []
    for model in (deq, nominal):
        uu = u.clone().requires_grad_(True)
        cell.zero_grad()
        (model(uu) * w).sum().backward()
        grads.append((uu.grad.clone(), cell.cell.linear.weight.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-7, atol=1e-10)
    # run the projected one again for the Lyapunov parameters
    cell.zero_grad()
    (deq(u.clone().requires_grad_(True)) * w).sum().backward()
    icnn = _flat_grad_norm(cell.lyapunov.parameters())
    assert icnn < 1e-8 * max(1.0, grads[0][1].norm().item())


def test_ift_gradcheck_through_stable_cell_float64():
    # alpha = 3 makes the projection active near the fixed points of this contractive cell (checked below)
    cell = _cell("residual", alpha=3.0, h=0.5, seed=1)
    deq = DEQ(cell, solver="broyden", grad="ift", max_iter=300, tol=1e-14, stop_mode="abs", backward_tol=1e-14)
    u = torch.randn(1, N_STATE, dtype=DT, requires_grad=True)
    z, _ = deq.solve(u.detach())
    with torch.no_grad():
        near = cell.field(z + 1e-3 * torch.randn(z.shape, dtype=DT), u.detach())
    assert near["active"].any(), "the projection should act near z* for this test to mean something"
    assert torch.autograd.gradcheck(lambda v: deq(v), (u,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_cell_under_no_grad_and_inference_mode_match(digits):
    cell = _cell("residual", alpha=3.0, h=0.2)
    z, u = torch.randn(5, N_STATE, dtype=DT), torch.randn(5, N_STATE, dtype=DT)
    with_grad = cell(z, u)
    assert with_grad.requires_grad
    with torch.no_grad():
        no_grad = cell(z, u)
    with torch.inference_mode():
        inference = cell(z, u)
    assert not no_grad.requires_grad
    torch.testing.assert_close(no_grad, with_grad.detach())
    torch.testing.assert_close(inference.clone(), with_grad.detach())
    model = _model(digits)
    with torch.inference_mode():
        assert model(digits.images[:3]).shape == (3, 10)


# ---------------------------------------------------------------- residual variant: fixed points kept, decrease


def test_residual_keeps_every_fixed_point_and_adds_none():
    cell = _cell("residual", alpha=3.0, h=0.2)
    u = torch.randn(6, N_STATE, dtype=DT)
    opts = dict(solver="anderson", max_iter=300, tol=1e-13, stop_mode="abs")
    z_nom, info_nom = DEQ(cell.cell, **opts).solve(u)
    assert info_nom.all_converged
    with torch.no_grad():
        fl = cell.field(z_nom, u)
    F_norm = fl["F"].norm(dim=1)
    assert (F_norm < 1e-12).all()
    assert (fl["F_hat"].norm(dim=1) <= 10 * F_norm + 1e-14).all()  # F̂ = 0 where F = 0
    # the projected dynamics, from zeros, end at the nominal fixed point (no other equilibrium)
    z_proj, info = DEQ(cell, **opts).solve(u)
    assert info.all_converged
    torch.testing.assert_close(z_proj, z_nom, rtol=0, atol=1e-9)


def test_residual_projected_dynamics_decrease_V_of_residual_at_rate_alpha():
    alpha = 3.0
    cell = _cell("residual", alpha=alpha, h=1e-3)
    g = torch.Generator().manual_seed(3)
    z = 2 * torch.randn(64, N_STATE, dtype=DT, generator=g)
    u = torch.randn(64, N_STATE, dtype=DT, generator=g)
    with torch.no_grad():
        fl = cell.field(z, u)
    W, gW, F, Fhat = fl["W"], fl["grad_W"], fl["F"], fl["F_hat"]
    assert (W > 0).all()
    active = fl["active"]
    # not vacuous: on many states the nominal field does NOT decrease W at rate alpha, and those get projected
    nominal_rate = (gW * F).sum(1)
    assert active.float().mean() > 0.25
    assert (nominal_rate[active] > -alpha * W[active]).all()
    # continuous time: dW/dt = ∇Wᵀ F̂ <= -alpha W, with equality where the projection acts
    dW = (gW * Fhat).sum(1)
    assert (dW <= -alpha * W * (1 - 1e-9) + 1e-15).all()
    torch.testing.assert_close(dW[active], -alpha * W[active], rtol=1e-8, atol=1e-14)
    # a small-step rollout of the dynamics from these states: W_{k+1} <= (1 - alpha h) W_k up to O(h^2)
    report = certificate_check(DEQ(cell), u, steps=50, z0=z, rtol=1e-5, source="dynamics")
    assert report["violations"] == 0, report
    assert report["nominal"]["violations"] > 0, report["nominal"]  # the unprojected map does not pass
    assert report["V_final"] < math.exp(-alpha * 50 * 1e-3) * report["V_initial"] * 1.01


# ---------------------------------------------------------------- origin variant: the collapse


def test_origin_variant_collapses_fixed_points(digits):
    x = digits.images[:48]
    spreads = {}
    for center, max_iter in (("origin", 100), ("residual", 400)):  # h = 0.1: the residual variant converges slowly
        model = _model(digits, width=32, center=center, alpha=1.0, h=0.1, max_iter=max_iter)
        spreads[center] = fixed_point_spread(model, x)
    origin, residual = spreads["origin"], spreads["residual"]
    # without projection the inputs have well separated equilibria
    assert origin["spread_nominal"] > 1.0 and origin["converged_nominal"] == 1.0
    # origin-centred V: every input's iterate ends in a small ball around 0 (the discrete iteration chatters there
    # and never converges): the spread shrinks by more than 10x
    assert origin["ratio"] < 0.1, origin
    assert origin["norm"] < 0.1 * origin["norm_nominal"], origin
    assert origin["converged"] < 0.5
    # residual-centred V keeps the equilibria
    assert abs(residual["ratio"] - 1.0) < 1e-3, residual
    assert residual["converged"] == 1.0


def test_fixed_point_spread_of_plain_deq_is_ratio_one():
    deq = DEQ(MLPCell(6, activation="tanh", norm=False), solver="anderson", tol=1e-6)
    r = fixed_point_spread(deq, torch.randn(5, 6))
    assert r["ratio"] == pytest.approx(1.0)


# ---------------------------------------------------------------- classifier, orthogonal layer


@pytest.mark.parametrize(
    "features,readout", [(None, "orthogonal+linear"), (12, "orthogonal+linear"), (None, "orthogonal")]
)
def test_orthogonal_layer_stays_orthogonal_while_training(digits, features, readout):
    model = _model(digits, features=features, readout=readout, grad="phantom", phantom_steps=3)
    assert isinstance(model, LyaDEQClassifier)
    lin = model.orthogonal
    assert lin is not None and lin.bias is None
    before = lin.weight.detach().clone()
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    x, y = digits.images[:32], digits.labels[:32]
    for _ in range(5):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    W = lin.weight.detach()
    assert not torch.allclose(W, before), "the orthogonal layer should have been trained"
    eye = torch.eye(W.shape[0])
    torch.testing.assert_close(W @ W.T, eye, rtol=0, atol=1e-5)
    assert W.shape == (features or (10 if readout == "orthogonal" else 16), 16)


def test_conv_builder_and_head(digits):
    torch.manual_seed(0)
    model = lyadeq_classifier(digits, "conv", channels=8, downsample=1, lyapunov_hidden=(16,), max_iter=8, tol=1e-3)
    x = digits.images[:2].clone().requires_grad_(True)
    logits = model(x)
    assert logits.shape == (2, 10)
    logits.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert model.lyapunov.g.in_features == 8 * 4 * 4
    assert model.orthogonal.weight.shape == (32, 32)
    head = orthogonal_head(6, 3, readout="orthogonal")
    assert head(torch.randn(2, 6)).shape == (2, 3)


def test_orthogonal_linear_shapes():
    wide = orthogonal_linear(6, 4)
    torch.testing.assert_close(wide.weight @ wide.weight.T, torch.eye(4), rtol=0, atol=1e-5)
    tall = orthogonal_linear(3, 5)
    torch.testing.assert_close(tall.weight.T @ tall.weight, torch.eye(3), rtol=0, atol=1e-5)


# ---------------------------------------------------------------- certificate check


def _steps_taken(deq, u, steps):
    """(step, sample) pairs the model's solver computes in ``steps`` iterations: a stopped sample's end there."""
    _, info = deq.solve(u, record=True, max_iter=steps)
    k = info.trajectory.shape[0] - 1
    running = ~info.converged & ~info.diverged & (info.steps == k)
    return int(torch.where(running, info.steps, info.steps - 1).sum())


def test_certificate_check_on_trained_model(digits):
    """The projection must be what passes the certificate: its nominal control, on the same solver iterates, fails.

    alpha = 4, h = 0.1: the nominal step z + h (f - z) shrinks the residual by about 1 - h (1 - rho) per step, far
    slower than the certified factor 1 - 2 h (checked at alpha = 2: where the projection acts W shrinks by about
    exp(-4 h) < 1 - 2 h); the projected cell passes. With the projection replaced by the identity both fail.
    """
    model = _model(digits, center="residual", alpha=4.0, h=0.1, grad="phantom", phantom_steps=5, max_iter=40)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = digits.images[:64], digits.labels[:64]
    for _ in range(8):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    report = certificate_check(model, x[:16], alpha=2.0)
    expected = {
        "map",
        "source",
        "solver",
        "violations",
        "steps",
        "rate",
        "max_excess",
        "per_step",
        "V_initial",
        "V_final",
        "converged",
        "projection_active",
        "nominal",
        "alpha",
        "dt",
        "factor",
        "max_iter",
        "center",
        "rtol",
        "atol",
    }
    assert expected <= set(report)
    nominal = report["nominal"]
    assert report["source"] == "solver" and report["solver"] == "fixed_point" and report["max_iter"] == 40
    assert report["map"].startswith("fixed_point iterates of the projected cell"), report["map"]
    assert "nominal cell" in nominal["map"] and "no projection" in nominal["map"]
    # the steps checked are those the model's solver takes (a sample that stopped takes no more)
    u = model.inject(x[:16])
    assert report["steps"] == _steps_taken(model.deq, u, 40) > 0
    assert report["alpha"] == 2.0 and report["dt"] == 0.1 and report["factor"] == pytest.approx(0.8)
    assert report["center"] == "residual"
    # the control violates on this setup, the projected map does not: the certificate is the projection's doing
    assert report["projection_active"] > 0.5, report
    assert nominal["rate"] > 0.5, nominal
    assert report["rate"] <= 0.01 and report["violations"] <= 0.02 * nominal["violations"], report
    assert report["V_final"] < 0.05 * report["V_initial"] and report["V_final"] < nominal["V_final"]
    # a fixed_point solver iterates the cell itself: plain iterations ("dynamics") see the same steps
    dynamics = certificate_check(model, x[:4], steps=5, alpha=2.0, source="dynamics")
    solver = certificate_check(model, x[:4], steps=5, alpha=2.0)
    assert dynamics["source"] == "dynamics" and dynamics["solver"] is None and dynamics["converged"] is None
    assert "plain iterations of the projected cell" in dynamics["map"]
    for key in ("violations", "steps", "per_step", "V_initial", "V_final"):
        assert dynamics[key] == solver[key], key
        assert dynamics["nominal"][key] == solver["nominal"][key], key


def _decrease_by_hand(values, taken, running, factor, rtol=1e-6, atol=0.0):
    """Violations and steps of W_{k+1} <= factor W_k, sample by sample, up to where each one's solve stopped."""
    violations = steps = 0
    for n in range(values.shape[1]):
        last = values.shape[0] - 1 if running[n] else int(taken[n]) - 1
        for k in range(last):
            steps += 1
            prev, nxt = float(values[k, n]), float(values[k + 1, n])
            violations += not (nxt - factor * prev <= rtol * abs(prev) + atol)
    return violations, steps


def test_certificate_check_defaults_to_the_solvers_own_iterates():
    """An Anderson model: the default certifies Anderson's iterates (not the Euler map), and its nominal control."""
    cell = _cell("residual", alpha=3.0, h=0.5, seed=2)
    deq = DEQ(cell, solver="anderson", max_iter=25, tol=1e-6)
    u = torch.randn(6, N_STATE, dtype=DT)
    report = certificate_check(deq, u, alpha=1.0, atol=0.0)
    assert report["source"] == "solver" and report["solver"] == "anderson"
    assert report["map"].startswith("anderson iterates of the projected cell")
    assert report["nominal"]["map"].startswith("anderson iterates of the nominal cell")
    for name, step in (("projected", lambda s: cell(s, u)), ("nominal", lambda s: cell.nominal_step(s, u))):
        _, info = get_solver("anderson")(step, torch.zeros_like(u), record=True, max_iter=25, tol=1e-6)
        values = torch.stack([cell.lyapunov_value(s, u) for s in info.trajectory]).double()
        k = info.trajectory.shape[0] - 1
        running = ~info.converged & ~info.diverged & (info.steps == k)
        part = report if name == "projected" else report["nominal"]
        assert (part["violations"], part["steps"]) == _decrease_by_hand(values, info.steps, running, 0.5), name
        assert part["converged"] == float(info.converged.float().mean())
    # not the Euler map: plain iterations of the same cell give other states, hence other numbers
    euler = certificate_check(deq, u, alpha=1.0, atol=0.0, source="dynamics")
    assert (euler["steps"], euler["V_final"]) != (report["steps"], report["V_final"])


def test_nominal_step_is_the_cell_without_the_projection():
    cell = _cell("residual", alpha=3.0, h=0.2)
    z, u = torch.randn(32, N_STATE, dtype=DT), torch.randn(32, N_STATE, dtype=DT)
    with torch.no_grad():
        fz = cell.cell(z, u)
        torch.testing.assert_close(cell.nominal_step(z, u), z + 0.2 * (fz - z))
        active = cell.field(z, u)["active"]
        projected = cell(z, u)
    assert active.any() and not active.all()
    torch.testing.assert_close(projected[~active], cell.nominal_step(z, u)[~active])
    assert not torch.allclose(projected[active], cell.nominal_step(z, u)[active])
    one = LyapunovStableCell(cell.cell, cell.lyapunov, alpha=3.0, h=1.0)
    assert torch.equal(one.nominal_step(z, u), fz)


def test_certificate_check_can_fail_in_discrete_time(digits):
    """The guarantee is for continuous time: the origin variant's Euler iterates chatter around 0 and violate."""
    model = _model(digits, center="origin", alpha=1.0, h=1.0)
    report = certificate_check(model, digits.images[:8], steps=10)
    assert report["rate"] > 0.5


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"center": "middle"}, ValueError),
        ({"center": None}, TypeError),  # not a name at all: a wrong type
        ({"alpha": 0.0}, ValueError),
        ({"alpha": -1.0}, ValueError),
        ({"alpha": float("nan")}, ValueError),
        ({"h": 0.0}, ValueError),
        ({"h": 1.5}, ValueError),
        ({"h": -0.1}, ValueError),
        ({"h": float("inf")}, ValueError),
    ],
)
def test_bad_settings_raise(kwargs, error, digits):
    opts = dict(center="residual", alpha=0.1, h=1.0)
    opts.update(kwargs)
    with pytest.raises(error):
        LyapunovStableCell(MLPCell(4), LyapunovFunction(4, hidden=(4,)), **opts)
    with pytest.raises(error):
        lyadeq_classifier(digits, width=8, lyapunov_hidden=(4,), **opts)


def test_bad_calls_raise(digits):
    with pytest.raises(ValueError):
        lyadeq_classifier(digits, "rnn")
    with pytest.raises(ValueError):
        orthogonal_head(4, 3, readout="softmax")
    with pytest.raises(ValueError):
        orthogonal_head(4, 3, features=2, readout="orthogonal")
    model = _model(digits)
    x = digits.images[:2]
    with pytest.raises(ValueError):
        certificate_check(model, x, steps=0)
    with pytest.raises(ValueError):
        certificate_check(model, x, source="anderson")
    with pytest.raises(ValueError):
        certificate_check(model, x, alpha=2.0)  # alpha * h = 2 > 1
    with pytest.raises(ValueError, match="z0"):
        certificate_check(model, x, z0=torch.zeros(2, 3))
    with pytest.raises(TypeError):
        certificate_check(DEQ(MLPCell(4)), torch.randn(2, 4))
    with pytest.raises(ValueError):
        fixed_point_spread(model, x[:1])
    with pytest.raises(ValueError):  # the Lyapunov function does not match the state size
        _ = LyapunovStableCell(MLPCell(4), LyapunovFunction(5, hidden=(4,)))(torch.zeros(2, 4), torch.zeros(2, 4))


@pytest.mark.parametrize("module", [lyadeq_module, lyadeq_checks_module, defenses_package], ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    if module is lyadeq_module:
        assert result.attempted > 0
