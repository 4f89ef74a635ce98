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
