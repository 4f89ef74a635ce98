"""The two code paths of each solver give the same iteration.

Without autograd, Anderson and Broyden keep their history in preallocated buffers written in place; with autograd
(``grad="unroll"``) they keep it in lists, so that the graph sees every step. Both paths must compute the same
iterates: same states, same per-sample steps, residual traces and convergence flags, in float64 to round-off.
fixed_point has one path; it is pinned here too, so a future buffer path for it is covered from the start.
"""

import pytest
import torch

from deqlib.solvers import anderson, broyden, fixed_point

CASES = [
    (fixed_point, {"tau": 0.7}),
    (anderson, {"m": 3, "beta": 0.8, "lam": 1e-6}),
    (anderson, {"m": 6, "beta": 1.0, "lam": 1e-4}),
    (broyden, {"memory": 4}),
    (broyden, {"memory": 30}),
]


def _problem(gain: float, n: int = 6, d: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, d, generator=g, dtype=torch.float64)
    w = gain * w / torch.linalg.matrix_norm(w, ord=2)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return w, x


def _run(solver, opts, w, x, *, autograd: bool, max_iter: int = 40, tol: float = 1e-10):
    x = x.clone().requires_grad_(autograd)

    def f(z):
        return torch.tanh(z @ w.T + x)

    with torch.set_grad_enabled(autograd):
        z, info = solver(f, torch.zeros_like(x), max_iter=max_iter, tol=tol, stop_mode="abs", record=True, **opts)
    if autograd:
        assert z.requires_grad, "the autograd path must keep the graph"
    return z.detach(), info


@pytest.mark.parametrize("gain", [0.9, 1.3])  # contractive, and one where plain iteration does not converge
@pytest.mark.parametrize("solver,opts", CASES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_buffer_and_autograd_paths_agree(solver, opts, gain):
    w, x = _problem(gain)
    z_buf, info_buf = _run(solver, opts, w, x, autograd=False)
    z_ag, info_ag = _run(solver, opts, w, x, autograd=True)
    torch.testing.assert_close(z_ag, z_buf, rtol=0, atol=1e-12)
    assert torch.equal(info_ag.steps, info_buf.steps)
    assert torch.equal(info_ag.converged, info_buf.converged)
    assert info_ag.nfev == info_buf.nfev
    torch.testing.assert_close(info_ag.trace, info_buf.trace, rtol=1e-9, atol=1e-13, equal_nan=True)
    torch.testing.assert_close(info_ag.trajectory.detach(), info_buf.trajectory, rtol=0, atol=1e-12)


def test_the_paths_take_many_steps_so_that_the_history_wraps():
    """The comparison above is only worth something if the ring buffers fill and wrap: check the step counts."""
    w, x = _problem(1.3)
    _, info = _run(anderson, {"m": 3, "beta": 0.8, "lam": 1e-6}, w, x, autograd=False)
    assert int(info.steps.max()) > 2 * 3
    _, info = _run(broyden, {"memory": 4}, w, x, autograd=False)
    assert int(info.steps.max()) > 4


def _dense_broyden(f, z0, steps, memory):
    """Good Broyden on one sample with a dense inverse-Jacobian estimate, restarted from -I when ``memory`` updates
    have been made; the update of the restart step is computed from -I, so the estimate always satisfies the
    newest secant condition B^{-1} dg = dz. Returns the iterates z_0 .. z_steps."""
    d = z0.numel()
    B = -torch.eye(d, dtype=z0.dtype)
    z, n = z0.clone(), 0
    gz = f(z) - z
    states = [z]
    for _ in range(steps):
        z_next = z - B @ gz
        gz_next = f(z_next) - z_next
        dz, dg = z_next - z, gz_next - gz
        if n == memory:
            B, n = -torch.eye(d, dtype=z0.dtype), 0
        B = B + torch.outer(dz - B @ dg, dz @ B) / (dz @ B @ dg)
        n += 1
        torch.testing.assert_close(B @ dg, dz, rtol=1e-9, atol=1e-12)  # the secant condition, restart or not
        z, gz = z_next, gz_next
        states.append(z)
    return torch.stack(states)


@pytest.mark.parametrize("memory", [1, 2, 3])
@pytest.mark.parametrize("autograd", [False, True], ids=["buffers", "lists"])
def test_broyden_restart_keeps_the_secant_condition(memory, autograd):
    """After a restart the rank-one pair is recomputed from -I (issue 9, finding 8): both paths follow the dense
    reference iterate by iterate, through several restarts."""
    w, x = _problem(0.9, n=3, d=5)
    steps = 9  # 8 updates: restarts after every `memory` of them
    _, info = _run(broyden, {"memory": memory}, w, x, autograd=autograd, max_iter=steps + 1, tol=1e-300)
    for i in range(x.shape[0]):
        ref = _dense_broyden(lambda z: torch.tanh(w @ z + x[i]), torch.zeros(5, dtype=torch.float64), steps, memory)
        torch.testing.assert_close(info.trajectory[: steps + 1, i].detach(), ref, rtol=1e-9, atol=1e-11)
