"""Tests for deqlib.losses: cross-entropy, entropy, PGD-AT and TRADES (the random-depth classifier's tests, which train
with them, are in test_defenses_random_depth.py).

The slow test trains two DEQs on mnist5k (standard and PGD-AT) and checks that adversarial training raises the
PGD robust accuracy clearly (about a minute on a quiet 2-core CPU).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _digits_deq import fit_briefly as _train
from torch import nn

from deqlib import data
from deqlib.cells import classifier_for
from deqlib.losses import PGDAT, TRADES, cross_entropy, entropy, mean_entropy
from deqlib.threat import project
from deqlib.warm_start import warm_starts

TOL = 1e-6  # float32 rounding of x + delta


@pytest.fixture(scope="module")
def digits():
    train, test = data.load("digits"), data.load("digits", "test")
    return train, train.tensors(), test.subset(48, seed=0).tensors()


@pytest.fixture(scope="module")
def trained(digits):
    train, (X, y), _ = digits
    torch.manual_seed(0)
    return _train(classifier_for(train, "mlp", width=32), X, y, cross_entropy, epochs=3)


# ---------------------------------------------------------------------------------------------- basics


def test_cross_entropy_returns_loss_and_logits(digits, trained):
    _, _, (x, y) = digits
    loss, logits = cross_entropy(trained, x, y)
    assert logits.shape == (len(x), 10)
    assert torch.allclose(loss, F.cross_entropy(trained(x), y))


def test_entropy_uniform_is_log_c_and_saturated_is_zero():
    assert torch.allclose(entropy(torch.zeros(5, 10)), torch.full((5,), math.log(10)))
    assert torch.allclose(entropy(torch.full((2, 3, 7), 3.0)), torch.full((2, 3), math.log(7)))
    sharp = torch.tensor([[1e4, 0.0, 0.0]])
    assert entropy(sharp).item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(entropy(torch.tensor([[1e30, -1e30]]))).all()
    logits = torch.randn(6, 4)
    p = logits.softmax(-1)
    assert torch.allclose(entropy(logits), -(p * p.log()).sum(-1), atol=1e-6)
    assert torch.allclose(mean_entropy(logits), entropy(logits).mean())


# ---------------------------------------------------------------------------------------------- PGD-AT, TRADES

ATTACKS = [
    PGDAT(eps=0.1, alpha=0.04, steps=4),
    PGDAT(eps=0.1, alpha=0.04, steps=4, random_start=False),
    PGDAT(eps=0.5, alpha=0.2, steps=4, norm="L2"),
    TRADES(eps=0.1, alpha=0.04, steps=4),
]


@pytest.mark.parametrize("attack", ATTACKS, ids=repr)
def test_adversarial_examples_stay_in_ball_and_box(digits, trained, attack):
    _, _, (x, y) = digits
    x_adv = attack.perturb(trained, x, y)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (x_adv - x).flatten(1)
    if attack.norm == "Linf":
        assert delta.abs().max() <= attack.eps + TOL
        assert delta.abs().max() >= attack.eps - TOL  # the attack does move to the boundary somewhere
    else:
        assert delta.norm(dim=1).max() <= attack.eps + TOL


@pytest.mark.parametrize("attack", ATTACKS, ids=repr)
def test_attack_leaves_parameter_grads_and_mode_untouched(digits, trained, attack):
    _, _, (x, y) = digits
    model = trained
    marker = [torch.full_like(p, 7.0) for p in model.parameters()]
    for p, m in zip(model.parameters(), marker):
        p.grad = m.clone()
    for training in (True, False):
        model.train(training)
        attack.perturb(model, x, y)
        assert model.training is training
    for p, m in zip(model.parameters(), marker):
        assert torch.equal(p.grad, m)
        p.grad = None
    attack.perturb(model, x, y)
    assert all(p.grad is None for p in model.parameters())
    model.eval()


def test_attack_mode_switches_and_restores():
    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(64, 10)

        def forward(self, x):
            seen.append(self.training)
            return self.lin(x.flatten(1))

    model = Spy().train()
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    PGDAT(0.1, 0.05, 2, attack_mode="eval").perturb(model, x, y)
    assert seen == [False, False] and model.training
    seen.clear()
    model.eval()
    TRADES(0.1, 0.05, 2, attack_mode="train").perturb(model, x, y)
    assert seen == [True] * 3 and not model.training  # clean p(x) once, then 2 steps
    seen.clear()
    PGDAT(0.1, 0.05, 2).perturb(model, x, y)
    assert seen == [False, False]


def test_pgd_at_loss_is_adversarial_and_trains(digits, trained):
    _, _, (x, y) = digits
    clean, _ = cross_entropy(trained, x, y)
    loss, logits = PGDAT(eps=0.1, alpha=0.04, steps=4)(trained, x, y)
    assert loss.item() > clean.item() + 0.1  # the inner attack found worse points than x
    assert logits.shape == (len(x), 10)
    loss.backward()
    assert all(p.grad is not None for p in trained.parameters())
    trained.zero_grad(set_to_none=True)


def test_trades_loss_is_ce_plus_beta_kl(digits, trained):
    _, _, (x, y) = digits
    torch.manual_seed(3)
    trades = TRADES(eps=0.1, alpha=0.04, steps=4, beta=6.0)
    with warm_starts(trained, enabled=False):  # cold solves: the same logits as trained(x) to round-off
        loss, logits = trades(trained, x, y)
    torch.manual_seed(3)
    x_adv = trades.perturb(trained, x, y)
    p = trained(x).softmax(1)
    kl = (p * (p.log() - trained(x_adv).log_softmax(1))).sum(1).mean()
    assert torch.allclose(logits, trained(x))  # TRADES returns the clean logits
    assert torch.allclose(loss, F.cross_entropy(logits, y) + 6.0 * kl, atol=1e-5)
    assert kl.item() > 0
    with warm_starts(trained, enabled=False):
        beta0 = TRADES(0.1, 0.04, 4, beta=0.0)(trained, x, y)[0].item()
    assert beta0 == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)


def _flat(grads):
    return torch.cat([g.reshape(-1) for g in grads])


def test_trades_gradient_goes_through_both_branches_of_the_kl(digits, trained):
    """Parameter gradients equal a hand-written TRADES loss in which p(x) carries its graph (the reference code)."""
    _, _, (x, y) = digits
    x, y = x[:24], y[:24]
    params = [p for p in trained.parameters() if p.requires_grad]
    trades = TRADES(eps=0.3, alpha=0.1, steps=3, beta=6.0)
    torch.manual_seed(3)
    with warm_starts(trained, enabled=False):  # cold solves, as in the hand-written reference
        parts = trades.terms(trained, x, y)
    assert set(parts) == {"loss", "ce", "kl", "logits", "logits_adv", "x_adv"}
    grads = _flat(torch.autograd.grad(parts["loss"], params))
    x_adv = parts["x_adv"]

    def by_hand(detach_clean: bool):
        logits = trained(x)
        log_p = logits.log_softmax(1)
        if detach_clean:
            log_p = log_p.detach()
        kl = (log_p.exp() * (log_p - trained(x_adv).log_softmax(1))).sum(1).mean()
        return F.cross_entropy(logits, y) + 6.0 * kl

    reference = _flat(torch.autograd.grad(by_hand(False), params))
    detached = _flat(torch.autograd.grad(by_hand(True), params))
    torch.testing.assert_close(grads, reference, rtol=1e-4, atol=1e-6)
    # not vacuous: the clean branch of the KL is a sizeable part of the gradient, so detaching p(x) changes it
    assert (detached - reference).norm() > 0.05 * reference.norm()


def test_trades_shared_depth_is_validated_and_needs_a_model_that_pins_its_depth():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 1])
    with pytest.raises(TypeError, match="pinned_depth"):
        TRADES(0.1, 0.05, 2, shared_depth=True)(model, x, y)
    with pytest.raises(TypeError, match="shared_depth"):
        TRADES(0.1, 0.05, 2, shared_depth=1)
    assert "shared_depth=True" in repr(TRADES(0.1, 0.05, 2, shared_depth=True))
    assert "shared_depth" not in repr(TRADES(0.1, 0.05, 2))


def test_losses_work_for_any_classifier():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    x, y = torch.rand(6, 3, 4, 4), torch.randint(0, 5, (6,))
    for loss_fn in (cross_entropy, PGDAT(0.05, 0.02, 3), PGDAT(0.3, 0.1, 3, norm="L2"), TRADES(0.05, 0.02, 3)):
        loss, logits = loss_fn(model, x, y)
        assert loss.dim() == 0 and logits.shape == (6, 5)
    assert torch.equal(PGDAT(0.0, 0.1, 3).perturb(model, x, y), x)
    assert torch.equal(TRADES(0.0, 0.1, 3).perturb(model, x, y), x)


@pytest.mark.parametrize(
    "kwargs, match, error",
    [
        (dict(eps=-0.1, alpha=0.1, steps=3), "eps", ValueError),
        (dict(eps=8, alpha=2, steps=3), "wrong scale", ValueError),
        (dict(eps=float("nan"), alpha=0.1, steps=3), "eps", ValueError),
        (dict(eps=0.1, alpha=0.0, steps=3), "alpha", ValueError),
        (dict(eps=0.1, alpha=-1.0, steps=3), "alpha", ValueError),
        (dict(eps=0.1, alpha=0.1, steps=0), "steps", ValueError),
        (dict(eps=0.1, alpha=0.1, steps=2.5), "steps", TypeError),  # a float where an int belongs: a wrong type
        (dict(eps=0.1, alpha=0.1, steps=True), "steps", TypeError),  # bools are refused as numbers
        (dict(eps=0.1, alpha=0.1, steps=3, norm="L1"), "norm", ValueError),
    ],
)
def test_attack_parameters_are_validated(kwargs, match, error):
    for cls in (PGDAT, TRADES):
        with pytest.raises(error, match=match):
            cls(**kwargs)
    PGDAT(eps=2.0, alpha=0.5, steps=3, norm="L2")  # L2 radii above 1 are fine
    with pytest.raises(ValueError, match="beta"):
        TRADES(0.1, 0.1, 3, beta=-1.0)
    with pytest.raises(ValueError, match="attack_mode"):
        PGDAT(0.1, 0.1, 3, attack_mode="test")


def test_bad_batches_are_rejected():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    at = PGDAT(0.1, 0.1, 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        at.perturb(model, torch.full((2, 1, 2, 2), 3.0), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="y must"):  # float labels: a wrong type
        at.perturb(model, torch.rand(2, 1, 2, 2), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="y must"):
        at.perturb(model, torch.rand(2, 1, 2, 2), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match=r"PGDAT: the model must return logits of shape \(N, num_classes\)"):
        at.perturb(nn.Identity(), torch.rand(2, 1, 2, 2), torch.tensor([0, 1]))  # a shape is a value
    PGDAT(0.0, 1.0, 1)  # eps = 0, alpha = 1, one step: the smallest valid settings


# ---------------------------------------------------------------------------------------------- issue 16: bad input

_LINEAR = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))  # 10 classes of 8x8 images
_X = torch.rand(4, 1, 8, 8)


@pytest.mark.parametrize(
    "loss_fn",
    [cross_entropy, PGDAT(0.1, 0.05, 1), TRADES(0.1, 0.05, 1), PGDAT(0.0, 0.05, 1)],
    ids=["cross_entropy", "PGDAT", "TRADES", "PGDAT eps 0"],
)
@pytest.mark.parametrize(
    "y, match",
    [
        (
            torch.tensor([0, 1, 2, 10]),
            r"y must be class indices in \[0, 10\) \(num_classes = 10\), got values in \[0, 10\]",
        ),
        (torch.tensor([0, -1, 2, 3]), r"class indices in \[0, 10\).*\[-1, 3\]"),
        (torch.tensor([0, -100, 2, 3]), r"-100, torch's ignore index, is not supported"),
    ],
    ids=["label 10 of 10 classes", "label -1", "label -100 (ignore index)"],
)
def test_losses_refuse_labels_outside_the_classes(loss_fn, y, match):
    """Before issue 16: a raw IndexError (Target 10 is out of bounds) or, for -100, a loss that silently dropped the
    samples (which every accuracy then counted wrong)."""
    with pytest.raises(ValueError, match=match):
        loss_fn(_LINEAR, _X, y)


def test_losses_refuse_float_labels_and_a_wrong_count():
    for loss_fn in (cross_entropy, PGDAT(0.1, 0.05, 1), TRADES(0.1, 0.05, 1)):
        with pytest.raises(TypeError, match="y must be int64 class labels, got torch.float32"):
            loss_fn(_LINEAR, _X, torch.tensor([0.0, 1.5, 2.0, 3.0]))
        with pytest.raises(ValueError, match=r"y must have shape \(4,\), got \(3,\)"):
            loss_fn(_LINEAR, _X, torch.tensor([0, 1, 2]))


def test_l2_radius_beyond_the_image_cube_is_refused_when_the_images_are_known():
    """sqrt(64) = 8 is the largest L2 distance between two 8x8 images in [0, 1]: eps 100 is on the wrong scale, as
    the attacks already said; the losses accepted it silently before issue 16."""
    y = torch.tensor([0, 1, 2, 3])
    for loss_fn in (PGDAT(100.0, 1.0, 1, norm="L2"), TRADES(100.0, 1.0, 1, norm="L2")):
        with pytest.raises(ValueError, match=r"L2 eps = 100 exceeds sqrt\(d\) = 8"):
            loss_fn(_LINEAR, _X, y)
    loss, _ = PGDAT(8.0, 1.0, 1, norm="L2")(_LINEAR, _X, y)  # the diameter itself is allowed
    assert torch.isfinite(loss)


class _Logits(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.fc, self.shape = nn.Linear(64, 10), shape

    def forward(self, x):
        out = self.fc(x.flatten(1))
        return {"flat": out.flatten(), "3d": out[:, :, None], "batch": out[:1], "one": out[:, :1]}[self.shape]


@pytest.mark.parametrize(
    "shape, got", [("flat", r"\(40,\)"), ("3d", r"\(4, 10, 1\)"), ("batch", r"\(1, 10\)"), ("one", r"\(4, 1\)")]
)
def test_losses_refuse_malformed_logits(shape, got):
    y = torch.tensor([0, 1, 2, 3])
    for loss_fn in (cross_entropy, PGDAT(0.1, 0.05, 1), TRADES(0.1, 0.05, 1)):
        with pytest.raises(
            ValueError, match=r"must return logits of shape \(N, num_classes\) = \(4, C\) with C >= 2, got " + got
        ):
            loss_fn(_Logits(shape), _X, y)


def test_random_start_must_be_a_bool():
    with pytest.raises(TypeError, match="PGDAT: random_start must be True or False, got str 'no'"):
        PGDAT(0.1, 0.05, 1, random_start="no")  # bool("no") is True: it used to mean a random start


def test_project_l2_and_linf():
    x = torch.full((3, 1, 2, 2), 0.5)
    far = x + torch.randn(3, 1, 2, 2) * 10
    assert ((project(far, x, 0.1) - x).abs() <= 0.1 + TOL).all()
    d = (project(far, x, 0.2, "L2") - x).flatten(1).norm(dim=1)
    assert (d <= 0.2 + TOL).all()


# ---------------------------------------------------------------------------------------------- the key test


@pytest.mark.slow
def test_pgd_at_raises_robust_accuracy_on_mnist5k():
    """Standard training vs PGD-AT (same MLP DEQ, same seed, 2 epochs each), PGD-20 at eps = 0.1 on 300 test digits.

    Measured (seeds 0, 1, 2 of the training): robust accuracy 0.187 / 0.190 / 0.190 (standard) vs
    0.613 / 0.633 / 0.623 (PGD-AT, 3 steps), a gap of 0.43 to 0.44; we ask for at least 0.25.
    """
    torchattacks = pytest.importorskip("torchattacks")
    train = data.load("mnist5k")
    X, y = train.tensors()
    Xt, yt = data.load("mnist5k", "test").subset(300, seed=0).tensors()
    results = {}
    for name, loss_fn in (("standard", cross_entropy), ("pgd-at", PGDAT(eps=0.1, alpha=0.025, steps=3))):
        torch.manual_seed(0)
        model = _train(classifier_for(train, "mlp", width=64), X, y, loss_fn, epochs=2, lr=3e-3)
        torch.manual_seed(1)
        x_adv = torchattacks.PGD(model, eps=0.1, alpha=0.01, steps=20, random_start=True)(Xt, yt)
        assert (x_adv - Xt).abs().max() <= 0.1 + TOL
        with torch.no_grad():
            results[name] = (
                (model(Xt).argmax(1) == yt).float().mean().item(),
                (model(x_adv).argmax(1) == yt).float().mean().item(),
            )
    (clean_std, rob_std), (clean_at, rob_at) = results["standard"], results["pgd-at"]
    print(f"standard: clean {clean_std:.3f} robust {rob_std:.3f}; PGD-AT: clean {clean_at:.3f} robust {rob_at:.3f}")
    assert clean_std > 0.8 and clean_at > 0.75
    assert rob_at >= rob_std + 0.25
