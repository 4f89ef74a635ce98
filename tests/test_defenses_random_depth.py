"""Tests for deqlib.defenses.random_depth: the DEQ classifier read out at a random solver depth (Yang et al. 2023),
alone and under the adversarial-training losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deqlib import data
from deqlib.cells import classifier_for
from deqlib.defenses import RandomDepthClassifier
from deqlib.dynamics import solver_iterate
from deqlib.losses import PGDAT, TRADES
from deqlib.solvers import damped_steps


@pytest.fixture(scope="module")
def digits():
    train, test = data.load("digits"), data.load("digits", "test")
    return train, train.tensors(), test.subset(48, seed=0).tensors()


def _untrained(train, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return classifier_for(train, "mlp", width=32, **kw)


# ---------------------------------------------------------------------------------------------- random depth


def test_random_depth_varies_in_train_and_not_in_eval(digits):
    train, _, (x, _) = digits
    model = RandomDepthClassifier(_untrained(train), max_depth=8, generator=torch.Generator().manual_seed(0))
    model.train()
    depths = []
    for _ in range(120):
        assert model(x[:4]).shape == (4, 10)
        depths.append(model.last_depth)
    assert set(depths) == set(range(1, 9))
    model.eval()
    for _ in range(10):
        model(x[:4])
        assert model.last_depth == 8
    model3 = RandomDepthClassifier(_untrained(train), eval_depth=3).eval()
    outs = [model3(x[:4]) for _ in range(3)]
    assert model3.last_depth == 3 and all(torch.equal(o, outs[0]) for o in outs)


def test_random_depth_draws_are_reproducible_with_a_generator(digits):
    train, _, (x, _) = digits
    draws = []
    for _ in range(2):
        m = RandomDepthClassifier(_untrained(train), generator=torch.Generator().manual_seed(5)).train()
        draws.append([m.draw_depth() for _ in range(20)])
    assert draws[0] == draws[1]


def test_random_depth_forward_is_phantom_steps_from_the_solver_iterate(digits):
    train, _, (x, _) = digits
    base = _untrained(train)
    model = RandomDepthClassifier(base, eval_depth=3, phantom_steps=4, phantom_tau=0.5).eval()
    u = base.inject(x)
    _, info = base.solve(x, record=True, max_iter=3)
    z3 = info.trajectory[3]
    assert torch.equal(solver_iterate(base.deq, u, 3), z3)
    z = z3
    for _ in range(4):
        z = 0.5 * z + 0.5 * base.deq.cell(z, u)
    assert torch.allclose(model(x), base.head(z), atol=1e-6)
    assert torch.allclose(damped_steps(lambda s: base.deq.cell(s, u), z3, 4, 0.5), z, atol=1e-6)


def test_random_depth_gradients_reach_parameters_and_input(digits):
    train, _, (x, y) = digits
    model = RandomDepthClassifier(_untrained(train)).train()
    xr = x[:8].clone().requires_grad_()
    F.cross_entropy(model(xr), y[:8]).backward()
    assert xr.grad is not None and xr.grad.abs().sum() > 0
    inner = model.model
    for name in ("injection.1.weight", "deq.cell.linear.weight", "head.weight"):
        g = dict(inner.named_parameters())[name].grad
        assert g is not None and g.abs().sum() > 0, name


def test_random_depth_validates_its_arguments(digits):
    train, _, _ = digits
    m = _untrained(train)
    for kwargs in (
        dict(max_depth=0),
        dict(eval_depth=0),
        dict(phantom_steps=0),
        dict(phantom_tau=0.0),
        dict(phantom_tau=1.5),
    ):
        with pytest.raises(ValueError):
            RandomDepthClassifier(m, **kwargs)
    with pytest.raises(TypeError, match="DEQClassifier"):
        RandomDepthClassifier(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="Generator"):
        RandomDepthClassifier(m, generator=0)


@pytest.mark.parametrize("loss_cls", [PGDAT, TRADES])
def test_inner_attack_runs_on_the_random_depth_model(digits, loss_cls):
    """Given the wrapper (in train mode, as during fit), every forward of the attack draws its own depth."""
    train, _, (x, y) = digits
    model = RandomDepthClassifier(_untrained(train), generator=torch.Generator().manual_seed(1)).train()
    depths = []
    model.register_forward_hook(lambda mod, inp, out: depths.append(mod.last_depth))
    loss, _ = loss_cls(eps=0.1, alpha=0.04, steps=6)(model, x[:8], y[:8])
    calls = 7 if loss_cls is PGDAT else 9  # PGD: 6 steps + loss; TRADES: p(x) + 6 steps + 2 in the loss
    assert len(depths) == calls
    assert len(set(depths)) >= 3
    loss.backward()
    assert model.training


def test_pinned_depth_holds_one_depth_for_every_call_inside(digits):
    train, _, (x, _) = digits
    model = RandomDepthClassifier(_untrained(train), generator=torch.Generator().manual_seed(2)).train()
    with model.pinned_depth() as depth:
        outs = [model(x[:4]) for _ in range(5)]
        assert model.last_depth == depth and all(torch.equal(o, outs[0]) for o in outs)
        with model.pinned_depth(3) as inner:
            model(x[:4])
            assert inner == 3 and model.last_depth == 3
        model(x[:4])
        assert model.last_depth == depth  # the outer pin is back
    seen = set()
    for _ in range(40):  # outside the block: fresh draws again
        model(x[:2])
        seen.add(model.last_depth)
    assert len(seen) > 1
    model.eval()
    with model.pinned_depth() as depth:
        assert depth == model.eval_depth
    with pytest.raises(ValueError):
        with model.pinned_depth(0):
            pass


def test_trades_kl_at_eps_zero_is_zero_only_with_a_shared_depth(digits):
    """Independent depths for the clean and adversarial logits (the default) give KL > 0 at eps = 0; shared: 0."""
    train, _, (x, y) = digits
    x, y = x[:16], y[:16]
    model = RandomDepthClassifier(_untrained(train), generator=torch.Generator().manual_seed(0)).train()
    depths = []
    model.register_forward_hook(lambda mod, inp, out: depths.append(mod.last_depth))
    results = {}
    for shared in (False, True):
        trades = TRADES(eps=0.0, alpha=0.1, steps=2, shared_depth=shared)
        results[shared] = []
        for _ in range(6):
            depths.clear()
            parts = trades.terms(model, x, y)
            assert torch.equal(parts["x_adv"], x) and len(depths) == 2  # eps = 0: no attack, two calls
            results[shared].append((depths[0] != depths[1], parts["kl"].item(), parts))
    independent, pinned = results[False], results[True]
    # the seeded draws differ, and then the KL measures the depth noise (near-converged depths can round to ~0)
    assert any(differ and kl > 1e-6 for differ, kl, _ in independent), [r[:2] for r in independent]
    for differ, kl, parts in independent:
        assert differ or kl == 0.0
        assert differ == (not torch.equal(parts["logits"], parts["logits_adv"]))
    for differ, kl, parts in pinned:
        assert not differ and kl == 0.0
        assert parts["loss"].item() == parts["ce"].item()
        assert torch.equal(parts["logits"], parts["logits_adv"])


def _by_hand(base, x, depth, steps, tau):
    """head(z) with z = ``steps`` damped steps of damping tau from the depth-th solver iterate."""
    u = base.inject(x)
    _, info = base.solve(x, record=True, max_iter=depth)
    z = info.trajectory[depth]
    for _ in range(steps):
        z = (1 - tau) * z + tau * base.deq.cell(z, u)
    return base.head(z)


def test_random_depth_uses_the_phantom_steps_and_tau_it_was_built_with(digits):
    """Non-default phantom_steps / phantom_tau, distinct from the DEQ's own: the readout must use the ones given."""
    train, _, (x, y) = digits
    base = _untrained(train)
    assert (base.deq.phantom_steps, base.deq.phantom_tau) == (5, 0.5)
    model = RandomDepthClassifier(base, eval_depth=2, phantom_steps=3, phantom_tau=0.3).eval()
    assert (model.phantom_steps, model.phantom_tau) == (3, 0.3)
    assert "phantom_steps=3, phantom_tau=0.3" in repr(model)
    out = model(x)
    assert torch.allclose(out, _by_hand(base, x, 2, 3, 0.3), atol=1e-5)
    assert not torch.allclose(out, _by_hand(base, x, 2, 5, 0.5), atol=1e-3)  # not vacuous
    # the gradient goes through those same damped steps
    xr, xh = x[:8].clone().requires_grad_(), x[:8].clone().requires_grad_()
    (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y[:8]), xr)
    (g_ref,) = torch.autograd.grad(F.cross_entropy(_by_hand(base, xh, 2, 3, 0.3), y[:8]), xh)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-7)
