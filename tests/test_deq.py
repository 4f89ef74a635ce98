"""The DEQ layer: implicit gradients against finite differences and unrolling, phantom gradients, diagnostics."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

import deqlib
from deqlib.cells import ConvCell, MLPCell, mlp_classifier
from deqlib.deq import DEQ
from deqlib.diagnostics import jacobian_frobenius, spectral_radius
from deqlib.solvers import damped_steps

TIGHT = dict(tol=1e-12, max_iter=300, backward_tol=1e-12, backward_max_iter=300)


def tanh_cell(width=6, scale=0.8, seed=0):
    torch.manual_seed(seed)
    return MLPCell(width, activation="tanh", norm=False, weight_scale=scale).double()


def loss_of(z):
    w = torch.linspace(-1, 1, z[0].numel(), dtype=z.dtype).view(z[0].shape)
    return (z * w).sum() + 0.5 * (z**2).sum()


@pytest.mark.parametrize("solver", ["fixed_point", "anderson", "broyden"])
@pytest.mark.parametrize("train_mode", [True, False])
def test_ift_gradcheck_input_and_parameters(solver, train_mode):
    cell = tanh_cell()
    deq = DEQ(cell, solver=solver, grad="ift", **TIGHT)
    deq.train(train_mode)
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: deq(inp), (x,))
    names = [n for n, _ in deq.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for _, p in deq.named_parameters())

    def with_params(*ps):
        return functional_call(deq, dict(zip(names, ps)), (x.detach(),))

    assert torch.autograd.gradcheck(with_params, params)


def test_ift_gradient_equals_full_unrolling_to_convergence():
    torch.manual_seed(0)
    cell = MLPCell(16, activation="tanh", norm=False, weight_scale=0.95).double()
    x = torch.randn(5, 16, dtype=torch.float64, requires_grad=True)
    grads = {}
    for grad in ["ift", "unroll"]:
        deq = DEQ(cell, solver="fixed_point", grad=grad, **TIGHT)
        z = deq(x)
        assert deq.last_info.converged.all()
        grads[grad] = torch.autograd.grad(loss_of(z), [x, *cell.parameters()])
    for g_ift, g_unroll in zip(grads["ift"], grads["unroll"]):
        rel = (g_ift - g_unroll).norm() / g_unroll.norm()
        assert rel < 1e-4


def test_ift_gradient_on_a_conv_cell_equals_unrolling():
    torch.manual_seed(0)
    cell = ConvCell(4, hidden=8, groups=2, weight_scale=0.1).double()
    u = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    grads = {}
    for grad in ["ift", "unroll"]:
        deq = DEQ(cell, solver="anderson", grad=grad, **TIGHT)
        grads[grad] = torch.autograd.grad(loss_of(deq(u)), [u, cell.conv1.weight])
    for a, b in zip(grads["ift"], grads["unroll"]):
        assert (a - b).norm() / b.norm() < 1e-4


def test_phantom_gradient_approaches_ift_as_k_grows():
    cell = tanh_cell(width=10, scale=0.9)
    x = torch.randn(4, 10, dtype=torch.float64, requires_grad=True)
    (g_ift,) = torch.autograd.grad(loss_of(DEQ(cell, grad="ift", **TIGHT)(x)), [x])
    errors = []
    for k in [1, 3, 10, 30, 100]:
        deq = DEQ(cell, grad="phantom", phantom_steps=k, phantom_tau=0.5, **TIGHT)
        (g,) = torch.autograd.grad(loss_of(deq(x)), [x])
        errors.append(((g - g_ift).norm() / g_ift.norm()).item())
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-6


@pytest.mark.parametrize("grad", ["ift", "phantom", "unroll"])
def test_gradients_reach_input_and_parameters_in_eval_mode(grad):
    torch.manual_seed(0)
    model = mlp_classifier((1, 8, 8), 10, mean=(0.3,), std=(0.4,), width=16, grad=grad, tol=1e-4)
    model.eval()
    x = torch.rand(3, 1, 8, 8, requires_grad=True)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2]))
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.deq.cell.linear.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("grad", ["ift", "phantom", "unroll"])
def test_output_value_does_not_depend_on_grad_mode(grad):
    cell = tanh_cell()
    deq = DEQ(cell, grad=grad, tol=1e-6)
    x = torch.randn(3, 6, dtype=torch.float64)
    with torch.no_grad():
        a = deq(x)
    b = deq(x.requires_grad_())
    assert torch.allclose(a, b, atol=1e-12)


def test_forward_value_is_z_star_in_every_gradient_mode_off_convergence():
    """The gradient mode changes only the backward (issue 9, finding 2): on a cell NOT converged within the budget,
    ift (formerly f(z*)), phantom (formerly k damped steps from z*) and unroll all return the solver's z*."""
    torch.manual_seed(0)
    cell = MLPCell(16, activation="tanh", norm=False, weight_scale=1.02).double()
    x = 0.3 * torch.randn(4, 16, dtype=torch.float64)
    z_star, info = DEQ(cell, max_iter=5).solve(x, record=False)
    assert not info.converged.any()
    step = (cell(z_star, x) - z_star).abs().max()
    assert step > 1e-3  # f(z*) and damped steps from z* are far from z*: the comparison below can tell them apart
    values = {}
    for grad in ["ift", "phantom", "unroll"]:
        deq = DEQ(cell, grad=grad, max_iter=5)
        with deqlib.solvers.quiet_convergence():
            with torch.no_grad():
                values[grad, "no_grad"] = deq(x)
            values[grad, "grad"] = deq(x.clone().requires_grad_())
        assert values[grad, "grad"].requires_grad
    for key, value in values.items():
        torch.testing.assert_close(value.detach(), z_star, rtol=0, atol=1e-12, msg=str(key))


def test_phantom_gradient_is_the_gradient_of_the_k_steps_at_z_star():
    """The value is z*; the backward is that of the k damped steps from z*, with the incoming gradient at z*."""
    cell = tanh_cell(width=6, scale=0.9)
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    deq = DEQ(cell, grad="phantom", phantom_steps=3, phantom_tau=0.5, tol=1e-10, max_iter=200)
    z = deq(x)
    v = torch.randn_like(z)
    (g,) = torch.autograd.grad(z, x, v)
    z_star = z.detach()
    steps = damped_steps(lambda s: cell(s, x), z_star, 3, 0.5)
    (g_ref,) = torch.autograd.grad(steps, x, v)
    torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-14)


def test_deq_sample_alone_equals_sample_in_batch():
    torch.manual_seed(0)
    model = mlp_classifier((1, 8, 8), 10, mean=(0.3,), std=(0.4,), width=32, tol=1e-5)
    x = torch.rand(8, 1, 8, 8)
    with torch.no_grad():
        batch = model(x)
        for i in range(8):
            assert torch.allclose(model(x[i : i + 1])[0], batch[i], atol=1e-6)


def test_trajectory_and_info_without_changing_forward_return_type():
    cell = tanh_cell()
    deq = DEQ(cell, solver="anderson", tol=1e-8, record=True)
    x = torch.randn(2, 6, dtype=torch.float64)
    z = deq(x)
    assert isinstance(z, torch.Tensor) and z.shape == (2, 6)
    assert deq.last_info is not None and deq.last_info.converged.all()
    assert deq.last_trajectory.shape[1:] == (2, 6)
    assert deq.last_trajectory.shape[0] == int(deq.last_info.steps.max()) + 1
    z2, info = deq.solve(x, max_iter=5)
    assert info.trajectory.shape[0] <= 6
    loss_of(deq(x.requires_grad_())).backward()
    assert deq.last_backward_info is not None and deq.last_backward_info.converged.all()


def test_spectral_radius_of_a_linear_cell_matches_eigenvalues():
    torch.manual_seed(0)
    W = torch.randn(8, 8, dtype=torch.float64) * 0.3
    x = torch.randn(2, 8, dtype=torch.float64)
    est = spectral_radius(lambda z: z @ W.T + x, torch.zeros(2, 8, dtype=torch.float64), n_iter=400)
    true = torch.linalg.eigvals(W).abs().max()
    assert torch.allclose(est, true.expand(2), rtol=0.05)


def test_jacobian_frobenius_matches_exact_and_regularises():
    torch.manual_seed(0)
    W = torch.randn(5, 5, dtype=torch.float64, requires_grad=True)
    z = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    f_out = torch.tanh(z @ W.T)
    est = jacobian_frobenius(f_out, z, n_samples=4000)
    exact = torch.stack(
        [torch.autograd.functional.jacobian(lambda s: torch.tanh(W @ s), z[i]).pow(2).sum() for i in range(3)]
    )
    assert torch.allclose(est, exact, rtol=0.1)
    est.sum().backward()  # differentiable w.r.t. the weights
    assert W.grad is not None and W.grad.abs().sum() > 0
    deq = DEQ(tanh_cell(), grad="ift", jac_reg_samples=2, tol=1e-6)
    deq(torch.randn(2, 6, dtype=torch.float64))
    assert deq.last_jacobian_loss is not None and deq.last_jacobian_loss.requires_grad


def test_custom_backward_solver_gets_every_solver_keyword():
    """A custom solver has the signature solver(f, z0, *, max_iter, tol, stop_mode, record): the IFT backward used not to
    pass ``record``, so a custom backward solver without a default for it failed with a missing-argument TypeError."""
    from deqlib.solvers import fixed_point

    calls = []

    def my_solver(f, z0, *, max_iter, tol, stop_mode, record):
        calls.append(record)
        return fixed_point(f, z0, max_iter=max_iter, tol=tol, stop_mode=stop_mode, record=record)

    torch.manual_seed(0)
    x = torch.randn(3, 4, requires_grad=True)
    DEQ(MLPCell(4), solver=my_solver, tol=1e-6)(x).sum().backward()
    assert calls == [False, False] and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("grad", ["ift", "unroll"])
def test_forward_and_adjoint_keep_no_trace_unless_record(grad):
    """A DEQ's forward and adjoint solves keep no per-iteration trace (the one part of the IFT's memory that grows
    with the iterations), unless built with record=True; the analysis solve keeps it; warnings still come."""
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    plain, recorded = (DEQ(tanh_cell(), grad=grad, tol=1e-10, max_iter=100, record=r) for r in (False, True))
    loss_of(plain(x)).backward()
    g_plain, x.grad = x.grad.clone(), None
    assert plain.last_info.trace.shape == (4, 0)
    loss_of(recorded(x)).backward()
    torch.testing.assert_close(x.grad, g_plain, rtol=0, atol=0)  # the same solve, the same gradient
    steps = recorded.last_info.steps
    assert recorded.last_info.trace.shape == (4, int(steps.max()))
    assert torch.isfinite(recorded.last_info.trace[torch.arange(4), steps - 1]).all()
    torch.testing.assert_close(plain.last_info.steps, steps, rtol=0, atol=0)
    if grad == "ift":
        assert plain.last_backward_info.trace.shape == (4, 0)
        assert recorded.last_backward_info.trace.shape[1] == int(recorded.last_backward_info.steps.max())
    _, info = plain.solve(x.detach(), record=False)
    assert info.trace.shape == (4, int(info.steps.max())), "DEQ.solve (analysis) keeps the trace"
    short = DEQ(tanh_cell(), grad=grad, tol=1e-12, max_iter=2)
    with pytest.warns(deqlib.SolverConvergenceWarning):
        short(x)
