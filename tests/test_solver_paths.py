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
