"""Solvers: known fixed points, per-sample stopping, best iterate, divergence, registry, cost."""

import warnings

import pytest
import torch

from deqlib.cells import MLPCell
from deqlib.solvers import (
    SolverDivergenceWarning,
    anderson,
    available_solvers,
    broyden,
    fixed_point,
    get_solver,
    register_solver,
)

SOLVERS = [fixed_point, anderson, broyden]


def linear_problem(d=16, n=4, radius=0.9, seed=0, dtype=torch.float64):
    """z = A z + b with ||A||_2 = radius < 1 and its exact solution."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=dtype)
    A = radius * A / torch.linalg.matrix_norm(A, 2)
    b = torch.randn(n, d, generator=g, dtype=dtype)
    z_star = torch.linalg.solve(torch.eye(d, dtype=dtype) - A, b.T).T
    return (lambda z: z @ A.T + b), z_star


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: s.__name__)
@pytest.mark.parametrize("stop_mode", ["abs", "rel"])
def test_linear_contraction_reaches_known_fixed_point(solver, stop_mode):
    f, z_star = linear_problem()
    z, info = solver(f, torch.zeros_like(z_star), max_iter=500, tol=1e-10, stop_mode=stop_mode)
    assert info.converged.all()
    assert not info.diverged.any()
    assert (info.residual < 1e-10).all()
    # ||z - z*|| <= residual / (1 - ||A||) for a contraction.
    assert torch.allclose(z, z_star, atol=1e-8)
    # The reported residuals are those of the returned iterate.
    assert torch.allclose(info.abs_residual, (f(z) - z).norm(dim=1), rtol=1e-6, atol=1e-14)


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: s.__name__)
def test_any_state_shape_batch_first(solver):
    f_flat, z_star = linear_problem(d=12, n=3)
    f = lambda z: f_flat(z.reshape(3, 12)).reshape(3, 3, 2, 2)  # noqa: E731
    z, info = solver(f, torch.zeros(3, 3, 2, 2, dtype=torch.float64), max_iter=300, tol=1e-10)
    assert z.shape == (3, 3, 2, 2)
    assert torch.allclose(z.reshape(3, 12), z_star, atol=1e-8)
    assert info.steps.shape == (3,)


def test_damped_fixed_point_converges_where_plain_iteration_oscillates():
    # f(z) = -1.5 z + 1 has fixed point 0.4 but slope -1.5: plain iteration diverges, damping tau=0.5 converges.
    f = lambda z: -1.5 * z + 1.0  # noqa: E731
    z0 = torch.zeros(2, 1, dtype=torch.float64)
    with pytest.warns(SolverDivergenceWarning):
        _, plain = fixed_point(f, z0, max_iter=100, tol=1e-10, stop_mode="abs")
    assert not plain.converged.any()
    z, damped = fixed_point(f, z0, max_iter=100, tol=1e-10, stop_mode="abs", tau=0.5)
    assert damped.converged.all()
    assert torch.allclose(z, torch.full_like(z, 0.4), atol=1e-9)


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: s.__name__)
def test_sample_alone_equals_sample_in_batch(solver):
    torch.manual_seed(0)
    cell = MLPCell(32, activation="tanh", norm=False, weight_scale=0.9)
    u = torch.randn(16, 32) * 2
    with torch.no_grad():
        z_batch, info_batch = solver(lambda z: cell(z, u), torch.zeros_like(u), max_iter=100, tol=1e-5)
        for i in [0, 5, 15]:
            ui = u[i : i + 1]
            z_i, info_i = solver(lambda z: cell(z, ui), torch.zeros_like(ui), max_iter=100, tol=1e-5)
            assert torch.allclose(z_i[0], z_batch[i], atol=1e-6)
            assert info_i.steps[0] == info_batch.steps[i]
    # Samples stop on their own: not all took the same number of steps.
    assert info_batch.steps.unique().numel() > 1


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: s.__name__)
def test_info_contents_and_trajectory(solver):
    f, z_star = linear_problem(n=3)
    z, info = solver(f, torch.zeros_like(z_star), max_iter=200, tol=1e-8, record=True)
    k = int(info.steps.max())
    assert info.trace.shape == (3, k)
    assert info.nfev >= k
    for i in range(3):
        s = int(info.steps[i])
        assert torch.isfinite(info.trace[i, :s]).all()
        assert torch.isnan(info.trace[i, s:]).all()
        assert info.trace[i, s - 1] < 1e-8
    traj = info.trajectory
    assert traj.shape[1:] == z_star.shape and traj.shape[0] >= 2
    assert torch.equal(traj[0], torch.zeros_like(z_star))
    assert torch.allclose(traj[-1], z, atol=1e-12)
    d = info.to_dict()
    assert d["solver"] == solver.__name__ and len(d["steps"]) == 3
    assert "converged" in info.summary()


def test_best_iterate_is_returned_when_not_converged():
    # A rotation-like map with no convergence within max_iter: the best residual iterate comes back.
    torch.manual_seed(1)
    calls = []

    def f(z):
        calls.append(z.clone())
        return torch.sin(3.0 * z) * 1.3 + 0.1

    z0 = torch.zeros(4, 3, dtype=torch.float64)
    z, info = fixed_point(f, z0, max_iter=25, tol=1e-12)
    assert not info.converged.any()
    residuals = torch.stack([(f(c) - c).norm(dim=1) / ((f(c)).norm(dim=1) + 1e-8) for c in calls[:25]])
    best = residuals.min(dim=0).values
    assert torch.allclose(info.rel_residual, best)
    assert torch.allclose(info.trace.nan_to_num(float("inf")).min(dim=1).values, best)


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: s.__name__)
def test_divergence_and_nan_stop_with_a_warning_never_nan(solver):
    f = lambda z: torch.exp(z) + 1.0  # noqa: E731  (no real fixed point: iterates blow up)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        z, info = solver(f, torch.zeros(2, 4), max_iter=200, tol=1e-6)
    assert not info.converged.any()
    assert torch.isfinite(z).all()
    if solver is fixed_point:
        assert info.diverged.all()
    if info.diverged.any():
        msgs = [str(w.message) for w in record if issubclass(w.category, SolverDivergenceWarning)]
        assert len(msgs) == 1 and "diverged" in msgs[0]

    def g(z):
        out = 0.5 * z + 1.0
        out[1] = float("nan")  # sample 1 breaks, sample 0 is fine
        return out

    with pytest.warns(SolverDivergenceWarning) as record:
        z, info = solver(g, torch.zeros(2, 4, dtype=torch.float64), max_iter=100, tol=1e-8)
    assert len([w for w in record if issubclass(w.category, SolverDivergenceWarning)]) == 1  # warned once
    assert torch.isfinite(z).all()
    assert info.converged[0] and not info.converged[1] and info.diverged[1]
    assert torch.allclose(z[0], torch.full((4,), 2.0, dtype=torch.float64), atol=1e-6)


def test_anderson_singular_system_falls_back():
    # Identical history columns make the small least-squares system singular without regularisation.
    f = lambda z: 0.5 * z + 1.0  # noqa: E731
    z, info = anderson(f, torch.zeros(3, 5, dtype=torch.float64), max_iter=100, tol=1e-12, lam=0.0, m=4)
    assert info.converged.all()
    assert torch.allclose(z, torch.full_like(z, 2.0), atol=1e-10)


def test_broyden_memory_is_bounded():
    f, z_star = linear_problem(d=24, n=2, radius=0.95)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z, info = broyden(f, torch.zeros_like(z_star), max_iter=400, tol=1e-9, memory=3)
    assert info.converged.all()
    assert torch.allclose(z, z_star, atol=1e-6)


def test_accelerated_solvers_need_fewer_evaluations_on_a_deq_cell():
    torch.manual_seed(0)
    cell = MLPCell(64, activation="tanh", norm=False, weight_scale=1.0)
    u = torch.randn(32, 64)
    nfev = {}
    with torch.no_grad():
        for solver in SOLVERS:
            z, info = solver(lambda z: cell(z, u), torch.zeros_like(u), max_iter=300, tol=1e-5)
            assert info.converged.all(), solver.__name__
            nfev[solver.__name__] = info.nfev
    assert nfev["anderson"] < nfev["fixed_point"]
    assert nfev["broyden"] < nfev["fixed_point"]


def test_registry_custom_solver_and_errors():
    assert {"fixed_point", "anderson", "broyden"} <= set(available_solvers())

    @register_solver("test_two_fixed_point", overwrite=True)
    def two(f, z0, *, max_iter=50, tol=1e-4, stop_mode="rel", record=False):
        return fixed_point(f, z0, max_iter=max_iter, tol=tol, stop_mode=stop_mode, record=record)

    assert get_solver("test_two_fixed_point") is two
    with pytest.raises(ValueError, match="unknown solver 'nope'"):
        get_solver("nope")
    with pytest.raises(TypeError, match="lacks"):
        register_solver("bad", lambda f, z0: None)
    with pytest.raises(ValueError, match="already registered"):
        register_solver("anderson", two)


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: s.__name__)
def test_without_traces_changes_nothing_but_the_trace(solver):
    from deqlib.solvers import without_traces

    gains = torch.tensor([0.9, -0.5, 0.3, 0.7], dtype=torch.float64)

    def f(z):  # sample 0 converges at once, sample 1 breaks (NaN), sample 2 runs out of its 3 steps
        return torch.stack([torch.ones_like(z[0]), z[1] + float("nan"), gains * z[2] + 1.0])

    z0 = torch.zeros(3, 4, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as traced_warnings:
        warnings.simplefilter("always")
        z_t, traced = solver(f, z0, max_iter=3, tol=1e-8, stop_mode="abs")
    with without_traces():
        with warnings.catch_warnings(record=True) as bare_warnings:
            warnings.simplefilter("always")
            z_b, bare = solver(f, z0, max_iter=3, tol=1e-8, stop_mode="abs")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, recorded = solver(f, z0, max_iter=3, tol=1e-8, stop_mode="abs", record=True)
    assert bare.trace.shape == (3, 0), "no per-iteration trace inside without_traces()"
    torch.testing.assert_close(recorded.trace, traced.trace, rtol=0, atol=0, equal_nan=True)  # record keeps it
    torch.testing.assert_close(z_b, z_t, rtol=0, atol=0)
    for name in ("steps", "converged", "diverged", "abs_residual", "rel_residual"):
        torch.testing.assert_close(getattr(bare, name), getattr(traced, name), rtol=0, atol=0, equal_nan=True)
    assert traced.converged.tolist() == [True, False, False]
    assert traced.diverged.tolist() == [False, True, False], "out of budget is not diverged"
    assert [str(w.message) for w in bare_warnings] == [str(w.message) for w in traced_warnings]
