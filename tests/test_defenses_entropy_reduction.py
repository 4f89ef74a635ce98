"""Tests for deqlib.defenses.entropy_reduction and deqlib.attacks.adaptive: input entropy reduction and the adaptive
(BPDA) attack through it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _digits_deq import (  # noqa: F401 (the fixtures)
    digits_fixture,
    trained_fixture,
    trained_fp_fixture,
    unrolled_input_gradient,
)

from deqlib.defenses import ATTACK_EPS, EntropyReductionDefense
from deqlib.losses import entropy

TOL = 1e-6


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
    g_ref = unrolled_input_gradient(model, x, y, 7)
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
    from deqlib.attacks.adaptive import AdaptiveEntropyAttack

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
