"""Tests for chapter 7's pieces: the continued Broyden solver, the entropy defence as released (carried memory, the
last-but-one readout, the converged readout, the released AutoAttack's "skip" gradient), random depth at test time
and the held-out choice of the evaluation depth, the released evaluation (deqlib.evaluate.released), held-out digits,
the experiments' worker locks, and the chapter's driver end to end on tiny budgets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _digits_deq import digits_fixture, trained_fixture  # noqa: F401 (the fixtures)

from deqlib import data
from deqlib.attacks import pgd, robust_accuracy
from deqlib.defenses import EntropyReductionDefense, RandomAtTest, RandomDepthClassifier, select_eval_depth
from deqlib.evaluate.released import attack_each, released_attacks, robust_under_all
from deqlib.solvers import broyden
from deqlib.solvers.continued import ContinuedBroyden

ROOT = Path(__file__).resolve().parents[1]


def _tanh_map(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W, b = 0.4 * torch.randn(3, 6, 6, generator=g), torch.randn(3, 6, generator=g)
    return lambda z: torch.tanh(torch.einsum("nij,nj->ni", W, z) + b)


# ------------------------------------------------------------------------------------------- continued Broyden


def test_continued_broyden_split_into_calls_is_one_broyden_run():
    """Memory carried across calls: 4 + 3 + 4 steps on one function are Broyden's 11 steps (restarting the memory at
    each call, the bug this catches, gives other iterates)."""
    f = _tanh_map()
    _, info = broyden(f, torch.zeros(3, 6), max_iter=12, tol=1e-12, record=True, memory=20)
    solver = ContinuedBroyden(torch.zeros(3, 6))
    for steps in (4, 3, 4):
        solver.run(f, steps)
    assert solver.steps_taken == 11
    assert torch.allclose(solver.z, info.trajectory[11], atol=1e-6)
    fresh = ContinuedBroyden(torch.zeros(3, 6))
    fresh.run(f, 7)
    restarted = ContinuedBroyden(fresh.z)  # the same state, the memory dropped
    restarted.run(f, 4)
    assert (restarted.z - info.trajectory[11]).abs().max() > 1e-4


def test_continued_broyden_finds_a_known_fixed_point_and_returns_the_best_iterate():
    A = torch.tensor([[0.5, 0.2], [0.0, 0.8]])
    f = lambda z: z @ A.T + 1.0  # noqa: E731
    z_star = torch.linalg.solve(torch.eye(2) - A, torch.ones(2))
    solver = ContinuedBroyden(torch.zeros(1, 2))
    z = solver.run(f, 10)
    assert torch.allclose(z[0], z_star, atol=1e-5)
    # the returned iterate has the call's lowest residual, not the last one's when that is worse
    solver = ContinuedBroyden(z_star.unsqueeze(0) + 1e-3)
    best = solver.run(lambda z: z @ (3 * A).T + 1.0, 1)  # one step on an expanding map: the start is better
    assert torch.allclose(best, z_star.unsqueeze(0) + 1e-3)
    with pytest.raises(FloatingPointError, match="non-finite"):
        ContinuedBroyden(torch.zeros(1, 2)).run(lambda z: z * float("nan"), 1)
    with pytest.raises(ValueError):
        ContinuedBroyden(torch.zeros(1, 2), memory=0)


# ------------------------------------------------------------------------------------- the defence as released


def test_released_readout_reads_the_last_rounds_state(digits, trained):
    _, _, (x, y) = digits
    d = EntropyReductionDefense.as_released(trained, eps=0.1, eta=0.025)
    assert (d.memory, d.readout) == ("carry", "released")
    tr = d.trace(x[:8])
    assert torch.allclose(tr.logits, trained.logits_from_state(tr.states[-1]), atol=1e-6)
    assert torch.equal(tr.read_input, tr.inputs[-2])  # the input of that state, not the final x_T
    assert not torch.equal(tr.inputs[-2], tr.inputs[-1])  # the last round's input steps did move x


def test_carried_memory_with_a_fixed_input_is_one_broyden_solve(digits, trained):
    """With eps 0 the input never moves: round r's state is the lowest-residual of Broyden's iterates 2r..2r+2 of ONE
    solve (a memory dropped between rounds gives other iterates from round 2 on)."""
    _, _, (x, _) = digits
    d = EntropyReductionDefense(trained, T_f=2, R=1, rounds=3, eps=0.0, eta=0.01, memory="carry")
    tr = d.trace(x[:4])
    u = trained.inject(x[:4])
    f = lambda z: trained.deq.cell(z, u)  # noqa: E731
    _, info = broyden(f, torch.zeros_like(tr.states[0]), max_iter=7, tol=1e-12, record=True)
    for r in range(3):
        cands = info.trajectory[2 * r : 2 * r + 3]  # (3, N, d)
        res = torch.stack([(f(c) - c).norm(dim=1) for c in cands])  # (3, N)
        best = cands[res.argmin(0), torch.arange(4)]
        assert torch.allclose(tr.states[r], best, atol=1e-5)
    restart = EntropyReductionDefense(trained, T_f=2, R=1, rounds=3, eps=0.0, eta=0.01).trace(x[:4])
    assert (restart.states[0] - tr.states[0]).abs().max() > 1e-6  # Anderson's iterates, not Broyden's


def test_converged_readout_is_the_model_at_the_purified_input(digits, trained):
    _, _, (x, _) = digits
    d = EntropyReductionDefense(trained, eps=0.1, eta=0.025, readout="converged")
    tr = d.trace(x[:8])
    with torch.no_grad():
        ref = trained(tr.inputs[-1])
    assert torch.allclose(tr.logits, ref, atol=1e-3)
    final = EntropyReductionDefense(trained, eps=0.1, eta=0.025).trace(x[:8])
    assert (final.logits - tr.logits).abs().max() > 1e-3  # head(f(z_8, u_T)) is not the converged readout


def test_bpda_of_the_released_readout_is_taken_at_the_input_it_read(digits, trained):
    _, _, (x, y) = digits
    d = EntropyReductionDefense.as_released(trained, eps=0.1, eta=0.025)
    xr = x[:6].clone().requires_grad_()
    (g,) = torch.autograd.grad(F.cross_entropy(d(xr), y[:6]), xr)
    tr = d.trace(x[:6])
    w = (torch.softmax(tr.logits, 1) - F.one_hot(y[:6], 10)) / 6
    for point, expect_equal in ((tr.read_input, True), (tr.inputs[-1], False)):
        xp = point.clone().requires_grad_()
        (h,) = torch.autograd.grad((trained(xp) * w).sum(), xp)
        assert torch.allclose(g, tr.input_jacobian * h, atol=1e-7) is expect_equal


def test_the_skip_gradient_has_the_defended_values_and_ignores_the_input_loop(digits, trained):
    _, _, (x, y) = digits
    d = EntropyReductionDefense.as_released(trained, eps=0.1, eta=0.025)
    xr = x[:6].clone().requires_grad_()
    out = d.forward_with(xr, "skip")
    assert torch.equal(out.detach(), d.defend(x[:6]))
    (g,) = torch.autograd.grad(F.cross_entropy(out, y[:6]), xr)
    tr = d.trace(x[:6])
    w = (torch.softmax(tr.logits, 1) - F.one_hot(y[:6], 10)) / 6  # the outer gradient, at the defended values
    xs = x[:6].clone().requires_grad_()
    surrogate = trained.logits_from_state(trained.deq.cell(tr.states[-1], trained.inject(xs)))
    (h,) = torch.autograd.grad((surrogate * w).sum(), xs)
    assert torch.allclose(g, h, atol=1e-6)
    (t,) = torch.autograd.grad(F.cross_entropy(d.forward_with(xr, "transfer"), y[:6]), xr)
    assert ((t - g).norm() / t.norm()) > 0.01


def test_readout_and_memory_are_validated(trained):
    with pytest.raises(ValueError, match="readout"):
        EntropyReductionDefense(trained, eps=0.1, eta=0.02, readout="last")
    with pytest.raises(ValueError, match="memory"):
        EntropyReductionDefense(trained, eps=0.1, eta=0.02, memory="keep")


# ------------------------------------------------------------------------------------------------ random depth


def _random_depth(trained):
    return RandomDepthClassifier(trained, max_depth=8).eval()


def test_random_at_test_draws_a_depth_per_call_in_eval_mode(digits, trained):
    _, _, (x, _) = digits
    model = _random_depth(trained)
    wrapped = RandomAtTest(model)
    torch.manual_seed(0)
    depths = set()
    for _ in range(20):
        wrapped(x[:2])
        depths.add(model.last_depth)
    assert len(depths) > 3
    model(x[:2])
    assert model.last_depth == model.eval_depth == 8  # the wrapped model itself stays fixed
    with pytest.raises(TypeError, match="RandomDepthClassifier"):
        RandomAtTest(trained)


def test_select_eval_depth_judges_each_depth_at_that_depth(digits, trained):
    _, _, (x, y) = digits
    model = RandomDepthClassifier(trained, max_depth=3, phantom_steps=1).train()
    out = select_eval_depth(model, x, y, 0.1, steps=3)
    assert model.training and model.eval_depth == 3  # mode and depth left as they were
    for d in (1, 2, 3):
        fixed = RandomDepthClassifier(trained, max_depth=3, eval_depth=d, phantom_steps=1).eval()
        r = robust_accuracy(fixed, pgd(fixed, 0.1, alpha=0.025, steps=3), (x, y), seed=0)
        assert out["per_depth"][d]["robust"] == r["accuracy"]
    best = out["per_depth"][out["depth"]]
    assert all(best["robust"] >= v["robust"] for v in out["per_depth"].values())
    with pytest.raises(TypeError):
        select_eval_depth(trained, x, y, 0.1)


# ----------------------------------------------------------------------------------------- released evaluation


def test_released_pgd_on_the_entropy_defence_is_crafted_on_the_undefended_model(digits, trained):
    _, _, (x, y) = digits
    d = EntropyReductionDefense.as_released(trained, eps=0.1, eta=0.025)
    attacks = released_attacks(d, 0.1, budgets={"pgd_steps": 3})
    assert set(attacks) == {"pgd10", "aa:apgd_ce", "aa:apgd_t", "aa:fab_t", "aa:square"}
    torch.manual_seed(0)
    adv = attacks["pgd10"](x[:8], y[:8])
    torch.manual_seed(0)
    ref = pgd(trained, 0.1, alpha=0.025, steps=3)(x[:8], y[:8])
    assert torch.equal(adv, ref)
    with pytest.raises(TypeError, match="unknown budget"):
        released_attacks(d, 0.1, budgets={"steps": 3})


def test_attack_each_reports_every_attack_and_their_union(digits, trained):
    _, _, (x, y) = digits
    attacks = {0.1: {"weak": pgd(trained, 0.1, alpha=0.01, steps=1), "strong": pgd(trained, 0.1, steps=10)}}
    r = attack_each(trained, attacks, x, y)
    per = r["eps"]["0.1"]["per_attack"]
    weak, strong = torch.tensor(per["weak"]["robust"]), torch.tensor(per["strong"]["robust"])
    worst = torch.tensor(r["eps"]["0.1"]["worst_case"]["robust"])
    assert torch.equal(worst, weak & strong) and torch.equal(worst, robust_under_all(weak, strong))
    assert r["eps"]["0.1"]["best_single"]["name"] == ("strong" if strong.sum() <= weak.sum() else "weak")
    clean = torch.tensor(r["clean_correct"])
    assert not (weak & ~clean).any()  # a clean error is never robust
    assert strong.sum() < weak.sum()  # the union's input differs: the test is not vacuous


# --------------------------------------------------------------------------------------------- held-out digits


def test_subset_and_rest_split_the_digits():
    test = data.load("digits", "test")
    chosen, rest = test.subset_and_rest(100, seed=3)
    assert torch.equal(chosen.images, test.subset(100, seed=3).images)
    both = torch.cat([chosen.images, rest.images]).flatten(1)
    assert (
        len(rest) == len(test) - 100
        and torch.unique(both, dim=0).shape[0] == torch.unique(test.images.flatten(1), dim=0).shape[0]
    )
    with pytest.raises(ValueError):
        test.subset_and_rest(len(test))


# ------------------------------------------------------------------------------------------ workers and driver


def test_worker_locks_are_exclusive_and_stale_ones_are_taken_over(tmp_path):
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        from _workers import claim
    finally:
        sys.path.pop(0)
    assert claim(tmp_path, "a")  # free
    assert not claim(tmp_path, "a")  # held by this live process
    (tmp_path / "b.lock").write_text("999999999")  # a worker that died
    assert claim(tmp_path, "b")
    (tmp_path / "c.json").write_text("{}")  # done
    assert not claim(tmp_path, "c")


def test_the_chapter7_driver_runs_end_to_end_on_tiny_budgets(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "regulated_dynamics.py",
        "--quick",
        "--seeds",
        "0",
        "--only",
        "deq-pgdat",
        "ris-pgdat",
        "--out-dir",
        str(tmp_path),
    ]
    subprocess.run(cmd, cwd=ROOT / "experiments", env=env, check=True, capture_output=True, timeout=600)
    res = json.loads((tmp_path / "regulated_dynamics.json").read_text())
    assert set(res["runs"]) == {"deq-pgdat@0", "ris-pgdat@0"}
    ris = res["runs"]["ris-pgdat@0"]
    assert "depth" in ris["depth_heldout"] and "depth" in ris["depth_test"]
    assert ("E1_heldout" in ris) or ris["depth_heldout"]["depth"] == ris["depth_test"]["depth"]
    for run in res["runs"].values():
        pool = set(run["E2_pool"])
        if run["E2_battery"] is not None:
            assert run["E2_battery"]["n"] == len(pool)  # the battery ran on exactly the pool
        for e in ("0.1", "0.2"):
            robust = {i for i, r in enumerate(run["E2"][e]["robust"]) if r}
            assert robust <= pool  # a digit outside the pool was broken by E1 or E3
    row = res["claims"]["ris-pgdat"]["eps"]["0.1"]["E2"]
    assert set(row["per_seed"]) == {"0"} and row["verdict"].startswith("screen only")
    assert "ris-pgdat" in (tmp_path / "regulated_dynamics.md").read_text()


def _driver():
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import regulated_dynamics
    finally:
        sys.path.pop(0)
    return regulated_dynamics


def _fake_run(name, seed, positions, per_attack, e2):
    def bools(v):
        return [bool(b) for b in v]

    per = {k: {"robust": bools(v)} for k, v in per_attack.items()}
    best = {"name": min(per_attack, key=lambda k: sum(per_attack[k]))}
    eps = {e: {"per_attack": per, "best_single": best} for e in ("0.1", "0.2")}
    e2_eps = {e: {"robust": bools(e2)} for e in ("0.1", "0.2")}
    return {"name": name, "seed": seed, "positions": positions, "E1": {"eps": eps}, "E2": e2_eps}


def test_the_driver_pairs_a_defence_on_a_subset_with_its_control_digit_by_digit():
    """The entropy defence runs on a subset of the control's digits: each comparison must use the control's masks on
    exactly those digits, and the control's strongest attack ON THEM (not on all its digits)."""
    rd = _driver()
    # over all four digits "a" is the control's strongest attack (2 robust), on digits 1 and 3 it is "b" (1 robust)
    control = _fake_run("deq-pgdat", 0, [0, 1, 2, 3], {"a": [0, 1, 0, 1], "b": [1, 0, 1, 1]}, [1, 0, 1, 0])
    assert rd._on(control, [1, 3], [1, 0, 1, 0]) == [False, False]
    assert rd._best_on(control, "0.1", [1, 3]) == [False, True]
    assert rd._best_on(control, "0.1", [0, 2]) == [False, False]
    defence = _fake_run("er-pgdat", 0, [1, 3], {"pgd10": [1, 1]}, [1, 0])
    out = rd.claims({"deq-pgdat@0": control, "er-pgdat@0": defence})["er-pgdat"]["eps"]["0.1"]
    assert out["E2"]["per_seed"][0]["difference"] == 0.5  # 1/2 against 0/2 on digits 1 and 3
    assert out["E1"]["per_seed"][0]["difference"] == 0.5  # 2/2 against "b"'s 1/2 on those digits


def test_the_driver_places_the_battery_back_on_its_digits():
    rd = _driver()
    n = 5
    out = {
        "n": n,
        "E1": {
            "eps": {
                e: {"worst_case": {"robust": [1, 1, 1, 0, 1]}, "per_attack": {"aa:square": {"robust": [1, 1, 1, 1, 0]}}}
                for e in ("0.1", "0.2")
            }
        },
    }
    pool = torch.tensor([0, 1, 2])
    out["E2_battery"] = {"eps": {e: {"robust": [True, False, True]} for e in ("0.1", "0.2")}}
    e2 = rd._worst(out, pool)
    assert e2["0.1"]["robust"] == [True, False, True, False, False]
