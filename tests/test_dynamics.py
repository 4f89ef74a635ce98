"""Tests for deqlib.dynamics: the predictions of the solver's intermediate states."""

from __future__ import annotations

import math

import pytest
import torch
from _digits_deq import digits_fixture, trained_fixture  # noqa: F401 (fixtures)

from deqlib.dynamics import solver_iterate, solver_trajectory, state_predictions
from deqlib.losses import entropy

TOL = 1e-6


# ---------------------------------------------------------------------------------------------- predictions


def test_state_predictions_shapes_and_consistency(digits, trained):
    _, _, (x, y) = digits
    out = state_predictions(trained, x, 6, y=y)
    n = len(x)
    assert out["states"].shape == (7, n, 32)
    assert out["logits"].shape == out["probs"].shape == (7, n, 10)
    assert out["entropy"].shape == out["predictions"].shape == out["correct"].shape == (7, n)
    assert out["accuracy"].shape == (7,)
    assert torch.equal(out["states"][0], torch.zeros(n, 32))
    assert torch.allclose(out["logits"][4], trained.head(out["states"][4]))
    assert torch.allclose(out["probs"].sum(-1), torch.ones(7, n))
    assert torch.equal(out["predictions"], out["logits"].argmax(-1))
    assert ((out["entropy"] >= -TOL) & (out["entropy"] <= math.log(10) + TOL)).all()
    # z_0 = 0 gives the same prediction for every input (the head's bias)
    assert (out["predictions"][0] == out["predictions"][0, 0]).all()
    assert out["accuracy"][-1] > 0.8 and not out["logits"].requires_grad
    # the iterates are those of the model's solver
    _, info = trained.solve(x, record=True, max_iter=6)
    assert torch.equal(out["states"][: info.trajectory.shape[0]], info.trajectory)


def test_state_predictions_pads_when_every_sample_converged_early(digits, trained):
    _, _, (x, _) = digits
    out = state_predictions(trained, x, 40, tol=1e-2)
    assert out["states"].shape[0] == 41 and out["info"].all_converged
    assert torch.equal(out["states"][-1], out["states"][-2])


def test_entropy_of_uniform_logits_is_log_c():
    assert torch.allclose(entropy(torch.zeros(3, 10)), torch.full((3,), math.log(10)))


def test_solver_iterate_and_trajectory_are_the_solver_s_iterates(digits, trained):
    _, _, (x, _) = digits
    u = trained.inject(x)
    _, info = trained.solve(x, record=True, max_iter=5)
    traj, _ = solver_trajectory(trained, u, 5)
    assert traj.shape == (6, len(x), 32) and not traj.requires_grad
    assert torch.equal(traj[: info.trajectory.shape[0]], info.trajectory)
    assert torch.equal(solver_iterate(trained.deq, u, 5), info.trajectory[-1])
    with pytest.raises(ValueError, match="steps"):
        solver_iterate(trained.deq, u, 0)


# ---------------------------------------------------------------------------------------------- chapter 4: stability


def _dense_dzdx(model, x1):
    """dz*/dx of one image by dense Jacobians (the reference): (I - J)^{-1} df/dx, (d, pixels)."""
    z, _ = model.solve(x1, record=False, max_iter=500, tol=1e-12)
    u = lambda v: model.inject(v.view_as(x1))  # noqa: E731
    jac = torch.autograd.functional.jacobian
    J = jac(lambda s: model.deq.cell(s[None], model.inject(x1))[0], z[0])
    Fx = jac(lambda v: model.deq.cell(z, u(v))[0], x1.flatten())
    return torch.linalg.solve(torch.eye(len(J), dtype=J.dtype) - J, Fx), z


def test_input_sensitivity_matches_dense_jacobian_and_finite_differences(digits, trained):
    from deqlib.sensitivity import input_sensitivity

    _, _, (x, _) = digits
    model = trained.double()
    try:
        xs = 0.1 + 0.8 * x[:3].double()  # room for the finite differences inside [0, 1]
        z_tight, _ = model.solve(xs, record=False, max_iter=500, tol=1e-12)
        out = input_sensitivity(model, xs, z_star=z_tight, n_iter=60, tol=1e-12, max_iter=500)
        assert out["converged"].all()
        for i in range(3):
            A, z = _dense_dzdx(model, xs[i : i + 1])
            sigma = torch.linalg.matrix_norm(A, 2)
            assert torch.allclose(out["sigma"][i], sigma, rtol=1e-6), (out["sigma"][i], sigma)
            # finite differences along the returned direction: ||z*(x + h v) - z*(x - h v)|| / 2h = sigma
            v, h = out["direction"][i : i + 1], 1e-5
            zp, _ = model.solve(xs[i : i + 1] + h * v, record=False, max_iter=500, tol=1e-13)
            zm, _ = model.solve(xs[i : i + 1] - h * v, record=False, max_iter=500, tol=1e-13)
            fd = ((zp - zm).norm() / (2 * h)).item()
            assert abs(fd - sigma.item()) < 1e-4 * sigma.item(), (fd, sigma)
    finally:
        trained.float()


def test_input_sensitivity_rejects_bad_input(trained):
    from deqlib.sensitivity import input_sensitivity

    with pytest.raises(ValueError, match="pixels must be in"):
        input_sensitivity(trained, torch.full((1, 1, 8, 8), 2.0))
    with pytest.raises(ValueError, match="n_iter"):
        input_sensitivity(trained, torch.rand(1, 1, 8, 8), n_iter=1)
    with pytest.raises(ValueError, match="z_star has 2 samples"):
        input_sensitivity(trained, torch.rand(1, 1, 8, 8), z_star=torch.zeros(2, 32))


def test_residual_decay_rate_of_the_plain_iteration_is_rho_j():
    from deqlib.diagnostics import spectral_radius
    from deqlib.sensitivity import residual_decay_rate
    from deqlib.solvers import fixed_point

    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    W = q @ torch.diag(torch.linspace(-0.5, 0.9, 16, dtype=torch.float64)) @ q.T  # symmetric: real eigenvalues
    u = 0.1 * torch.randn(4, 16, generator=g, dtype=torch.float64)
    f = lambda z: torch.tanh(z @ W.T + u)  # noqa: E731
    z, info = fixed_point(f, torch.zeros(4, 16, dtype=torch.float64), max_iter=400, tol=1e-10, stop_mode="abs")
    rho = spectral_radius(f, z, n_iter=200)
    rate = residual_decay_rate(info, skip=20)
    assert torch.allclose(rate.double(), rho, atol=0.01), (rate, rho)
    # a linear map with factor 0.5: the residual halves exactly at every step
    z0 = torch.zeros(2, 3, dtype=torch.float64)
    _, lin = fixed_point(lambda z: 0.5 * z + 1.0, z0, tol=1e-9, max_iter=100, stop_mode="abs")
    assert torch.allclose(residual_decay_rate(lin, skip=0), torch.full((2,), 0.5), atol=1e-5)
    # a sample that stopped after one entry has no rate
    info.trace[0, 1:] = float("nan")
    assert torch.isnan(residual_decay_rate(info, skip=0)[0])
    with pytest.raises(TypeError, match="SolverInfo"):
        residual_decay_rate("not an info")


def test_segment_scan_sees_the_jump_of_a_fold():
    """A scalar DEQ z = tanh(3 z + u) has a fold: along u from -1 to 1 the equilibrium from z_0 = 0 jumps."""
    from deqlib.cells import mlp_classifier
    from deqlib.sensitivity import segment_scan

    model = mlp_classifier(
        (1, 1, 1), 2, mean=(0.5,), std=(0.5,), width=1, solver="fixed_point", max_iter=2000, tol=1e-10
    ).double()
    with torch.no_grad():
        model.deq.cell.linear.weight.fill_(3.0)
        model.injection[1].weight.fill_(1.0)
        model.injection[1].bias.fill_(0.0)
    a, b = torch.zeros(1, 1, 1, 1, dtype=torch.float64), torch.ones(1, 1, 1, 1, dtype=torch.float64)
    s = segment_scan(model, a, b, 201)
    i = int(s["jump"].argmax())
    assert s["jump"][i] > 20 * s["jump"][1:].median()  # one jump, much larger than the others
    assert s["rho"].max() > 0.9  # the eigenvalue approaches 1 near the fold
    assert s["z_star"].shape == (201, 1) and s["t"][0] == 0 and s["t"][-1] == 1
    with pytest.raises(ValueError, match="one image"):
        segment_scan(model, torch.zeros(2, 1, 1, 1, dtype=torch.float64), b)


# ---------------------------------------------------------------------------------------------- chapter 4: statistics


def test_mean_interval_and_entropy_auc():
    from deqlib.state_statistics import entropy_auc, mean_interval

    r = mean_interval(torch.linspace(-1, 1, 101) + 0.5)
    assert r["interval"][0] < 0.5 < r["interval"][1] and r["interval"][0] > 0.3 and r["p_value"] < 0.01
    assert mean_interval(torch.linspace(-1, 1, 101))["p_value"] > 0.5
    with pytest.raises(ValueError, match="finite"):
        mean_interval([1.0, float("nan")])
    # low entropy goes with correct: AUC 1; reversed: 0; ties: 0.5
    h = torch.tensor([0.1, 0.2, 0.3, 0.9, 1.0, 1.1])
    c = torch.tensor([True, True, True, False, False, False])
    assert entropy_auc(h, c)["auc"] == 1.0 and entropy_auc(h, ~c)["auc"] == 0.0
    assert entropy_auc(torch.ones(6), c)["auc"] == 0.5
    assert entropy_auc(h, torch.ones(6, dtype=torch.bool))["auc"] is None
    with pytest.raises(ValueError, match="booleans"):
        entropy_auc(h, c.float())


def _fake_predictions(entropy, correct):
    return {"entropy": torch.as_tensor(entropy), "correct": torch.as_tensor(correct)}


def test_intermediate_state_tests_decide_each_comparison():
    from deqlib.state_statistics import intermediate_state_tests

    n, K = 200, 5
    g = torch.Generator().manual_seed(0)
    h_clean = (0.3 + 0.05 * torch.rand(n, generator=g)).expand(K + 1, n).clone()  # the same at every state
    h_clean[-1] -= 0.1  # the final state is surer than the others
    h_adv = h_clean.clone()
    h_adv[2] += 0.5  # state 2 of the attacked inputs: higher entropy than the final state and than clean inputs
    ok = torch.ones(K + 1, n, dtype=torch.bool)
    ok[2, :80] = False  # 80 digits right at the final state are wrong at state 2
    ok[-1, 150:] = False  # the final state is wrong on 50 digits: give those a higher entropy at state 2
    h_adv[2, 150:] += 0.3
    r = intermediate_state_tests(_fake_predictions(h_clean, ok), _fake_predictions(h_adv, ok), 2)
    assert r["entropy_above_final"]["holds"] and r["entropy_above_clean"]["holds"]
    assert r["accuracy_below_final"]["holds"] and r["low_entropy_robust"]["holds"]
    assert abs(r["accuracy_below_final"]["difference"] - (150 - 120) / n) < 1e-12
    assert r["entropy_above_clean"]["mean"] == pytest.approx((h_adv[2] - h_clean[2]).mean().item())
    assert r["entropy_above_final"]["mean"] == pytest.approx((h_adv[2] - h_adv[-1]).mean().item())
    # the other way round: none holds
    ok2 = torch.ones(K + 1, n, dtype=torch.bool)
    ok2[-1, :80] = False  # the intermediate state is right more often than the final one
    h_rev = h_clean.clone()
    h_rev[-1] += 0.2  # the final state less sure than state 2
    r = intermediate_state_tests(_fake_predictions(h_adv, ok2), _fake_predictions(h_rev, ok2), 2)
    assert not any(r[t]["holds"] for t in ("entropy_above_final", "entropy_above_clean", "accuracy_below_final"))
    assert r["accuracy_below_final"]["difference"] == -80 / n
    with pytest.raises(ValueError, match="k"):
        intermediate_state_tests(_fake_predictions(h_clean, ok), _fake_predictions(h_adv, ok), K)
    with pytest.raises(TypeError, match="state_predictions"):
        intermediate_state_tests({"entropy": h_clean}, _fake_predictions(h_adv, ok), 2)


def test_attacked_readouts_reads_the_states_of_the_attacked_input(digits, trained):
    from deqlib.dynamics import attacked_readouts

    _, _, (x, y) = digits
    r = attacked_readouts(trained, x[:16], y[:16], 0.3, attack="pgd", k_max=8, steps=10)
    assert r["clean"]["states"].shape[0] == r["adversarial"]["states"].shape[0] == 9
    assert (r["x_adv"] - x[:16]).abs().max() <= 0.3 + 1e-6
    assert r["adversarial"]["accuracy"][-1] < r["clean"]["accuracy"][-1]  # the attack works on the final state
    assert torch.equal(r["adversarial"]["predictions"], state_predictions(trained, r["x_adv"], 8)["predictions"])
    same = attacked_readouts(trained, x[:4], y[:4], 0.0, k_max=3)
    assert torch.equal(same["x_adv"], x[:4])
    with pytest.raises(ValueError, match="eps"):
        attacked_readouts(trained, x[:4], y[:4], 8.0)


def _scalar_deq(w: float):
    """z = tanh(w z + u) with u = 2 (2 x - 1) for a one-pixel image x: for w = 3, two stable branches coexist
    for |u| < 1.30 (folds at u = -1.30 and +1.30), one equilibrium at |u| = 2."""
    from deqlib.cells import mlp_classifier

    model = mlp_classifier(
        (1, 1, 1), 2, mean=(0.5,), std=(0.5,), width=1, solver="fixed_point", max_iter=5000, tol=1e-12
    ).double()
    with torch.no_grad():
        model.deq.cell.linear.weight.fill_(w)
        model.injection[1].weight.fill_(2.0)
        model.injection[1].bias.fill_(0.0)
    return model


def test_hysteresis_gap_tells_a_fold_from_a_single_branch():
    from deqlib.sensitivity import hysteresis_gap

    a, b = torch.zeros(1, 1, 1, 1, dtype=torch.float64), torch.ones(1, 1, 1, 1, dtype=torch.float64)
    fold = hysteresis_gap(_scalar_deq(3.0), a, b, 41)
    assert fold["gap"].shape == (1, 41) and fold["z_forward"].shape == (1, 41, 1)
    assert fold["converged"].all() and fold["gap"].max() > 1.0  # two branches: about -0.99 and +0.99
    assert fold["gap"][0, 0] < 1e-8 and fold["gap"][0, -1] < 1e-8  # one equilibrium at the ends (|u| = 2)
    single = hysteresis_gap(_scalar_deq(0.5), a, b, 41)
    assert single["gap"].max() < 1e-9
    # a batch of segments is followed at once, each as on its own
    both = hysteresis_gap(_scalar_deq(3.0), torch.cat([a, a]), torch.cat([b, 0.125 * b]), 41)
    assert torch.allclose(both["gap"][0], fold["gap"][0], atol=1e-9)
    assert both["gap"][1].max() < 1e-8  # from u = -2 to u = -1.5: one equilibrium all along


def test_weight_scale_scan_rho_is_the_derivative_and_leaves_the_model_alone():
    from deqlib.sensitivity import weight_scale_scan

    model = _scalar_deq(0.4)
    x = torch.full((1, 1, 1, 1), 0.6, dtype=torch.float64)
    s = weight_scale_scan(model, x, [1.0, 1.5, 2.0])
    z, _ = model.solve(x, record=False)
    assert model.deq.cell.linear.weight.item() == 0.4  # the model's weights are untouched
    for scale, rho in zip([1.0, 1.5, 2.0], s["rho"]):
        m2 = _scalar_deq(0.4 * scale)
        z2, _ = m2.solve(x, record=False)
        assert abs(rho.item() - 0.4 * scale * (1 - z2.item() ** 2)) < 1e-6  # f'(z*) of the scaled cell
    assert s["jump"][0] == 0 and (s["jump"][1:] > 0).all()
    with pytest.raises(ValueError, match="at least 2"):
        weight_scale_scan(model, x, [1.0])


def test_segment_jumps_screens_like_segment_scan():
    from deqlib.sensitivity import segment_jumps, segment_scan

    model = _scalar_deq(3.0)
    a = torch.tensor([0.0, 0.2], dtype=torch.float64).view(2, 1, 1, 1)
    b = torch.tensor([1.0, 0.3], dtype=torch.float64).view(2, 1, 1, 1)
    screen = segment_jumps(model, a, b, 11)
    for i in range(2):
        s = segment_scan(model, a[i], b[i], 11)
        assert torch.allclose(screen["jump"][i], s["jump"][1:], atol=1e-9)
    assert screen["ratio"][0] > 10 * screen["ratio"][1]  # the segment across the fold has the steep jump
    with pytest.raises(ValueError, match="same shape"):
        segment_jumps(model, a, b[:1])
