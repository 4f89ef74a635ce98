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
    report = certificate_check(DEQ(cell), u, steps=50, z0=z, rtol=1e-5)
    assert report["violations"] == 0, report
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


def test_certificate_check_on_trained_model(digits):
    model = _model(digits, center="residual", alpha=0.5, h=0.1, grad="phantom", phantom_steps=5, max_iter=60)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = digits.images[:64], digits.labels[:64]
    for _ in range(8):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    report = certificate_check(model, x[:16], steps=40)
    expected = {
        "violations",
        "steps",
        "rate",
        "max_excess",
        "per_step",
        "alpha",
        "dt",
        "center",
        "source",
        "rtol",
        "atol",
        "V_initial",
        "V_final",
    }
    assert expected <= set(report)
    assert report["steps"] == 40 * 16 and 0.0 <= report["rate"] <= 1.0
    assert report["alpha"] == 0.5 and report["dt"] == 0.1 and report["center"] == "residual"
    assert report["rate"] <= 0.01, report
    assert report["V_final"] < report["V_initial"]
    solver = certificate_check(model, x[:4], steps=5, source="solver")
    assert 0.0 <= solver["rate"] <= 1.0 and solver["source"] == "solver"


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
