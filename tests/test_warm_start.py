"""Warm starts (deqlib.warm_start): the right rows match, the solves agree with cold ones, fewer steps, one switch,
and the same robust / non-robust verdict per sample under attack."""

from __future__ import annotations

import pytest
import torch

from deqlib.attacks import apgd_ce, pgd
from deqlib.cells import mlp_classifier
from deqlib.warm_start import WarmStartPool, warm_starts
from tests._digits_deq import digits, trained_mlp


def _model(tol=1e-6):
    torch.manual_seed(0)
    return mlp_classifier((1, 8, 8), 10, mean=(0.3,), std=(0.3,), width=24, tol=tol, max_iter=200).eval()


def test_pool_matches_each_input_to_its_own_row_in_any_order():
    pool = WarmStartPool(capacity=16)
    u = torch.randn(6, 10)
    states = torch.arange(6.0)[:, None].repeat(1, 3)
    pool.store(u, states, torch.full((6,), -1))
    order = torch.tensor([4, 1, 5])  # a subset, permuted, slightly moved (as Square or AutoAttack query)
    z0, slots = pool.initial_state(u[order] + 0.01 * torch.randn(3, 10), torch.zeros(3, 3))
    assert torch.equal(z0[:, 0], order.float()), "each input must start from ITS OWN stored equilibrium"
    far = pool.match(10 * torch.randn(2, 10))
    assert (far == -1).all(), "an input far from every stored one must start cold"
    assert pool.stats == {"warm": 3, "cold": 0, "adjoint_warm": 0, "adjoint_cold": 0}


def test_pool_mixes_warm_and_cold_rows_and_stores_each_row_where_it_matched():
    pool = WarmStartPool(capacity=16)
    u = torch.randn(4, 10)
    pool.store(u, torch.arange(4.0)[:, None].repeat(1, 3), torch.full((4,), -1))
    query = torch.cat([u[[2, 0]] + 0.01 * torch.randn(2, 10), 10 * torch.randn(1, 10)])  # two near, one far
    default = torch.full((3, 3), -7.0)
    z0, slots = pool.initial_state(query, default)
    assert z0[:, 0].tolist() == [2.0, 0.0, -7.0], "near rows start from their own equilibrium, the far one cold"
    assert slots[:2].tolist() == [2, 0] and slots[2] == -1
    new_slots = pool.store(query, torch.full((3, 3), 5.0), slots)
    assert new_slots[:2].tolist() == [2, 0] and new_slots[2] == 4, "matched rows overwrite, the new one is appended"
    z1, again = pool.initial_state(query, default)
    assert torch.equal(again, new_slots) and (z1 == 5.0).all(), "the stored rows are found again under their keys"


def test_ring_buffer_overwrites_the_oldest_rows():
    pool = WarmStartPool(capacity=4)
    a, b = torch.randn(3, 5), torch.randn(3, 5) + 5
    pool.store(a, torch.zeros(3, 2), torch.full((3,), -1))
    slots = pool.store(b, torch.ones(3, 2), torch.full((3,), -1))
    assert sorted(slots.tolist()) == [0, 1, 3]  # slot 3 was free, then 0 and 1 (the oldest) are reused
    assert (pool.match(b) >= 0).all() and int((pool.match(a) >= 0).sum()) == 1  # only a[2] survives


def test_warm_solve_agrees_with_cold_and_takes_fewer_steps():
    model = _model()
    x = torch.rand(16, 1, 8, 8)
    x2 = (x + 0.02 * torch.randn_like(x)).clamp(0, 1)
    model(x)
    cold_logits, cold_steps = model(x2), model.deq.last_info.steps.float().mean()
    with warm_starts(model) as pools:
        model(x)
        warm_logits, warm_steps = model(x2), model.deq.last_info.steps.float().mean()
    assert pools[0].stats["warm"] == 16
    assert torch.allclose(warm_logits, cold_logits, atol=1e-4)
    assert warm_steps < 0.8 * cold_steps, (warm_steps, cold_steps)
    assert model.deq.warm_start is None, "the pool must not outlive its block"


def test_adjoint_warm_start_gives_the_same_gradient_in_fewer_steps():
    model = _model()
    x = torch.rand(8, 1, 8, 8)
    y = torch.randint(0, 10, (8,))

    def input_grad(xi):
        xi = xi.clone().requires_grad_()
        torch.nn.functional.cross_entropy(model(xi), y).backward()
        return xi.grad, model.deq.last_backward_info.steps.float().mean()

    x2 = (x + 0.01).clamp(0, 1)
    g_cold, steps_cold = input_grad(x2)
    with warm_starts(model) as pools:
        input_grad(x)
        g_warm, steps_warm = input_grad(x2)
    assert pools[0].stats["adjoint_warm"] == 8
    assert torch.allclose(g_warm, g_cold, rtol=1e-3, atol=1e-6)
    assert steps_warm < steps_cold


def test_one_switch_turns_off_the_attacks_own_warm_starts():
    model = _model()
    x, y = torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,))
    seen = []
    model.deq.add_solve_listener(lambda tag, info: seen.append(model.deq.warm_start))
    with warm_starts(model, enabled=False) as pools:
        pgd(model, eps=0.1, alpha=0.05, steps=2)(x, y)
    assert pools == [] and seen and all(p is None for p in seen)
    seen.clear()
    pgd(model, eps=0.1, alpha=0.05, steps=2)(x, y)
    assert seen and all(p is not None for p in seen), "attacks warm-start by default"


def test_unrolled_gradient_is_never_warm_started():
    model = _model()
    model.deq.grad = "unroll"
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    with warm_starts(model) as pools:
        model(x).sum().backward()
        model(x).sum().backward()
    assert pools[0].stats["warm"] == 0


@pytest.mark.parametrize("attack", ["pgd", "apgd"])
def test_same_robust_verdict_per_sample_with_and_without_warm_starts(attack):
    model = trained_mlp()
    # a budget every attacked sample converges within, on any CPU (30 steps leave one of 64 unconverged on some)
    model.deq.max_iter = 200
    _, _, (x, y) = digits()

    def verdicts():
        torch.manual_seed(0)
        atk = pgd(model, eps=0.15, alpha=0.02, steps=10) if attack == "pgd" else apgd_ce(model, eps=0.15, steps=10)
        adv = atk(x, y)
        with torch.no_grad():
            return model(adv).argmax(1) == y

    before = model.deq.convergence.as_dict()
    with_warm = verdicts()
    with warm_starts(model, enabled=False):
        without = verdicts()
    assert torch.equal(with_warm, without), f"verdicts differ on {(with_warm != without).sum()} samples"
    assert 0 < int(with_warm.sum()) < len(y), "a set with both robust and broken samples"
    after = model.deq.convergence.as_dict()
    assert after["forward_nonconverged"] == before["forward_nonconverged"], "every solve converged"
