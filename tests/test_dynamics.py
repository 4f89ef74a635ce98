"""Tests for deqlib.dynamics: intermediate-state predictions, early / averaged readouts, input entropy
reduction and the adaptive (BPDA) attack through it."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deqlib import data
from deqlib.cells import classifier_for
from deqlib.dynamics import (
    ATTACK_EPS,
    AdaptiveEntropyAttack,
    AveragedStateClassifier,
    EarlyStateClassifier,
    EntropyReductionDefense,
    state_predictions,
)
from deqlib.losses import cross_entropy, entropy

TOL = 1e-6


def _train(model: nn.Module, X, y, *, epochs: int, lr: float = 1e-2, batch: int = 64) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X), batch):
            idx = perm[i : i + batch]
            loss, _ = cross_entropy(model, X[idx], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def digits():
    train = data.load("digits")
    return train, train.tensors(), data.load("digits", "test").subset(40, seed=0).tensors()


@pytest.fixture(scope="module")
def trained(digits):
    train, (X, y), _ = digits
    torch.manual_seed(0)
    return _train(classifier_for(train, "mlp", width=32), X, y, epochs=3)


@pytest.fixture(scope="module")
def trained_fp(digits):
    """Same, with plain fixed-point iteration: the iterates are exactly z_{k+1} = f(z_k, u)."""
    train, (X, y), _ = digits
    torch.manual_seed(0)
    return _train(classifier_for(train, "mlp", width=32, solver="fixed_point", tol=1e-12), X, y, epochs=3)


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


# ---------------------------------------------------------------------------------------------- readouts


@pytest.mark.parametrize("grad", ["phantom", "unroll"])
def test_early_state_readout_value_shape_and_gradient(digits, trained, grad):
    _, _, (x, y) = digits
    early = EarlyStateClassifier(trained, 3, grad=grad)
    xr = x.clone().requires_grad_()
    logits = early(xr)
    assert logits.shape == (len(x), 10)
    assert torch.allclose(logits, state_predictions(trained, x, 3)["logits"][3], atol=1e-6)
    (g,) = torch.autograd.grad(F.cross_entropy(logits, y), xr)
    assert g.abs().sum() > 0


def test_early_state_unroll_gradient_is_exact_for_fixed_point(digits, trained_fp):
    _, _, (x, y) = digits
    model = trained_fp
    xr = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(F.cross_entropy(EarlyStateClassifier(model, 4, grad="unroll")(xr), y), xr)
    xr2 = x.clone().requires_grad_()
    u = model.inject(xr2)
    z = torch.zeros(len(x), 32)
    for _ in range(4):
        z = model.deq.cell(z, u)
    (g_ref,) = torch.autograd.grad(F.cross_entropy(model.head(z), y), xr2)
    assert torch.allclose(g, g_ref, atol=1e-6)


def test_averaged_state_readout(digits, trained):
    _, _, (x, y) = digits
    states = state_predictions(trained, x, 8)["states"]
    for avg, idx in (
        (AveragedStateClassifier(trained, [2, 5, 7]), [2, 5, 7]),
        (AveragedStateClassifier(trained, last_k=3, steps=8), [6, 7, 8]),
        (AveragedStateClassifier(trained, [1, 3], grad="unroll"), [1, 3]),
    ):
        assert avg.indices == tuple(idx)
        xr = x.clone().requires_grad_()
        logits = avg(xr)
        assert logits.shape == (len(x), 10)
        assert torch.allclose(logits, trained.head(states[idx].mean(0)), atol=1e-5)
        (g,) = torch.autograd.grad(F.cross_entropy(logits, y), xr)
        assert g.abs().sum() > 0


def test_readouts_validate_arguments(trained):
    with pytest.raises(ValueError, match=">= 1"):
        EarlyStateClassifier(trained, 0)
    with pytest.raises(ValueError, match="grad"):
        EarlyStateClassifier(trained, 2, grad="ift")
    with pytest.raises(ValueError, match="exactly one"):
        AveragedStateClassifier(trained)
    with pytest.raises(ValueError, match="exactly one"):
        AveragedStateClassifier(trained, [1], last_k=2)
    with pytest.raises(ValueError, match="distinct"):
        AveragedStateClassifier(trained, [2, 2])
    with pytest.raises(ValueError, match="exceeds"):
        AveragedStateClassifier(trained, last_k=5, steps=3)
    with pytest.raises(TypeError, match="DEQClassifier"):
        EarlyStateClassifier(nn.Linear(2, 2), 1)


# ---------------------------------------------------------------------------------------------- entropy reduction


def test_entropy_reduction_lowers_entropy_and_stays_in_the_ball(digits, trained):
    _, _, (x, y) = digits
    defense = EntropyReductionDefense(trained, T_f=2, R=5, rounds=3, eps=0.1, eta=0.025)
    logits = defense(x)
    assert logits.shape == (len(x), 10)
    x_t = defense.last_inputs
    assert x_t.min() >= 0 and x_t.max() <= 1
    assert (x_t - x).abs().max() <= 0.1 + TOL
    assert (x_t - x).abs().max() > 0.05  # the input did move
    # The same loop with eps = 0 never moves the input: the undefended prediction at the same depth.
    plain = EntropyReductionDefense(trained, T_f=2, R=5, rounds=3, eps=0.0, eta=0.025)
    logits0 = plain(x)
    assert torch.equal(plain.last_inputs, x)
    h, h0 = entropy(logits), entropy(logits0)
    assert h.mean() < 0.7 * h0.mean()
    assert (h <= h0 + 1e-4).float().mean() >= 0.9
    # The recorded entropy falls along each round's input steps.
    trace = defense.last_entropy
    assert trace.shape == (3, 6, len(x))
    assert (trace.mean(-1)[:, -1] <= trace.mean(-1)[:, 0] + 1e-6).all()
    assert torch.allclose(trace[-1, -1], h)
    # Clean accuracy does not collapse.
    assert (logits.argmax(1) == y).float().mean() >= (logits0.argmax(1) == y).float().mean() - 0.1


def test_entropy_reduction_is_per_sample(digits, trained):
    """The batch-mean entropy couples samples only by 1/B, which does not change sign(grad): batch == one by one."""
    _, _, (x, _) = digits
    model = trained.double()
    try:
        xd = x[:6].double()
        defense = EntropyReductionDefense(model, T_f=2, R=4, rounds=2, eps=0.1, eta=0.03)
        batch = defense(xd)
        x_batch = defense.last_inputs
        for i in range(len(xd)):
            single = defense(xd[i : i + 1])
            assert torch.allclose(single, batch[i : i + 1], atol=1e-10)
            assert torch.equal(defense.last_inputs, x_batch[i : i + 1])
    finally:
        trained.float()


def test_entropy_reduction_gradients(digits, trained):
    _, _, (x, y) = digits
    defense = EntropyReductionDefense(trained, T_f=2, R=3, rounds=2, eps=0.1, eta=0.03)
    xr = x.clone().requires_grad_()
    # forward: defended values, the undefended model's gradient
    out = defense(xr)
    assert torch.allclose(out, defense.defend(x))
    (g,) = torch.autograd.grad(F.cross_entropy(out, y), xr)
    xb = x.clone().requires_grad_()
    base_logits = trained(xb)
    (g_base,) = torch.autograd.grad(F.cross_entropy(out.detach() + base_logits - base_logits.detach(), y), xb)
    assert torch.allclose(g, g_base, atol=1e-6)
    # forward_differentiable: the same values, a nonzero BPDA gradient
    out_d = defense.forward_differentiable(xr)
    assert torch.equal(out_d, out)
    (g_d,) = torch.autograd.grad(F.cross_entropy(out_d, y), xr)
    assert g_d.abs().sum() > 0
    with torch.no_grad():
        assert not defense.forward_differentiable(x).requires_grad


def test_bpda_gradient_is_exact_without_input_steps_for_fixed_point(digits, trained_fp):
    """With R = 0 there is nothing to approximate for a fixed-point model: the gradient of head(f^(T_f*rounds+1))."""
    _, _, (x, y) = digits
    model = trained_fp
    defense = EntropyReductionDefense(model, T_f=2, R=0, rounds=3, eps=0.1, eta=0.03)
    xr = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(F.cross_entropy(defense.forward_differentiable(xr), y), xr)
    xr2 = x.clone().requires_grad_()
    u = model.inject(xr2)
    z = torch.zeros(len(x), 32)
    for _ in range(7):
        z = model.deq.cell(z, u)
    (g_ref,) = torch.autograd.grad(F.cross_entropy(model.head(z), y), xr2)
    assert torch.allclose(g, g_ref, atol=1e-6)


def test_entropy_reduction_default_radii_and_validation(trained, digits):
    train = digits[0]
    d = EntropyReductionDefense(trained, dataset="mnist5k")
    assert d.eps == pytest.approx(0.3) and d.eta == pytest.approx(0.075)
    d = EntropyReductionDefense(trained, dataset="cifar10")
    assert d.eps == pytest.approx(8 / 255) and d.eta == pytest.approx(2 / 255)
    d = EntropyReductionDefense(trained, dataset=train)
    assert d.eps == pytest.approx(ATTACK_EPS["digits"])
    d = EntropyReductionDefense(trained, attack_eps=0.2, eta=0.01)
    assert d.eps == pytest.approx(0.2) and d.eta == 0.01
    assert (d.T_f, d.R, d.rounds) == (2, 10, 4)
    with pytest.raises(ValueError, match="give eps"):
        EntropyReductionDefense(trained)
    with pytest.raises(ValueError, match="no default"):
        EntropyReductionDefense(trained, dataset="imagenet")
    for kwargs in (
        dict(eps=2.0, eta=0.1),
        dict(eps=-0.1, eta=0.1),
        dict(eps=0.1, eta=0.0),
        dict(eps=0.1, eta=0.1, T_f=0),
        dict(eps=0.1, eta=0.1, R=-1),
        dict(eps=0.1, eta=0.1, rounds=0),
    ):
        with pytest.raises(ValueError):
            EntropyReductionDefense(trained, **kwargs)


def test_adaptive_attack_through_the_defense(digits, trained):
    torchattacks = pytest.importorskip("torchattacks")
    _, _, (x, y) = digits
    defense = EntropyReductionDefense(trained, T_f=2, R=3, rounds=2, eps=0.1, eta=0.03)
    atk = AdaptiveEntropyAttack(defense, eps=0.15, alpha=0.04, steps=5)
    assert isinstance(atk, torchattacks.attack.Attack)
    defense.train()
    torch.manual_seed(0)
    x_adv = atk(x, y)
    assert defense.training  # torchattacks restores the mode
    defense.eval()
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and (x_adv - x).abs().max() <= 0.15 + TOL
    with torch.no_grad():
        clean = (defense(x).argmax(1) == y).float().mean()
        robust = (defense(x_adv).argmax(1) == y).float().mean()
    assert robust < clean - 0.2
    with pytest.raises(ValueError, match="eps"):
        AdaptiveEntropyAttack(defense, eps=8, alpha=2, steps=3)
    with pytest.raises(ValueError, match="eot"):
        AdaptiveEntropyAttack(defense, eps=0.1, alpha=0.01, steps=3, eot=0)
    with pytest.raises(TypeError):
        AdaptiveEntropyAttack(trained, eps=0.1, alpha=0.01, steps=3)
