"""Tests for chapter 6's readings of LyaDEQ: the finite-horizon classifier (R1, R4), the one-shot correction (R3), the
attractor and Lyapunov-decrease losses (R4, R5), and their zoo recipes."""

from __future__ import annotations

import doctest
import re
from dataclasses import replace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import deqlib.defenses.horizon as horizon_module
import deqlib.defenses.one_shot as one_shot_module
from deqlib import viz, zoo
from deqlib.cells import DEQClassifier, MLPCell, mlp_classifier
from deqlib.defenses import (
    AttractorRegulariser,
    EulerCell,
    HorizonClassifier,
    LyapunovDecreaseLoss,
    LyapunovRegularisedDEQ,
    LyapunovStableCell,
    OneShotLyapunovClassifier,
    initial_state_stability,
    input_jacobian_norm,
    input_state_sensitivity,
    orthogonal_head,
    without_lyapunov,
)
from deqlib.evaluate import claim_verdict, reading_rows, seed_summary, verdict_rows
from deqlib.lyapunov import LyapunovFunction
from deqlib.sensitivity import input_sensitivity
from deqlib.zoo.recipes import ZooRecipe, recipe_hash

DT = torch.float64
SHAPE = (1, 3, 3)


def _images(n=3, seed=0, dtype=DT):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *SHAPE, generator=g, dtype=dtype)


def _horizon(step=None, steps=4, width=5, dtype=DT, **kw):
    torch.manual_seed(0)
    injection = nn.Sequential(nn.Flatten(), nn.Linear(9, width))
    step = EulerCell(MLPCell(width, weight_scale=0.9), h=0.5) if step is None else step
    model = HorizonClassifier(
        injection, step, nn.Linear(width, 3), image_shape=SHAPE, mean=(0.5,), std=(0.3,), steps=steps, **kw
    )
    return model.to(dtype)


@pytest.mark.parametrize("module", [horizon_module, one_shot_module])
def test_docstring_examples_run(module):
    assert doctest.testmod(module, raise_on_error=True).attempted > 0


def test_euler_cell_is_the_damped_nominal_step():
    cell = MLPCell(4, weight_scale=0.9).to(DT)
    z, u = torch.randn(2, 4, dtype=DT), torch.randn(2, 4, dtype=DT)
    assert torch.allclose(EulerCell(cell, h=0.25)(z, u), z + 0.25 * (cell(z, u) - z))
    assert torch.equal(EulerCell(cell, h=1.0)(z, u), cell(z, u))


def test_horizon_states_follow_the_step_from_the_chosen_start():
    model = _horizon(steps=3)
    x = _images()
    u = model.inject(x)
    states = model.states(x)
    assert len(states) == 4 and torch.equal(states[0], torch.zeros_like(u))
    with torch.no_grad():
        assert torch.allclose(states[2], model.step(model.step(torch.zeros_like(u), u), u))
        assert torch.allclose(model(x), model.head(states[-1]))
    sodef = _horizon(steps=3, start="injection", injection_scale=0.0)
    s = sodef.states(x)
    assert torch.allclose(s[0], sodef.inject(x))
    with torch.no_grad():  # no injection inside the steps: the step sees a zero drive
        assert torch.allclose(s[1], sodef.step(s[0], torch.zeros_like(s[0])))


def test_horizon_unrolled_gradient_is_exact_and_truncation_is_not():
    model = _horizon(steps=4)
    x = _images(2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: model(v), (x,), eps=1e-6, atol=1e-6)
    exact = torch.autograd.grad(model(x).sum(), x)[0]
    model.grad, model.phantom_steps = "truncated", 1
    truncated = torch.autograd.grad(model(x).sum(), x)[0]
    assert not torch.allclose(exact, truncated, atol=1e-4)
    with torch.no_grad():
        assert torch.allclose(model(x), model.head(model.states(x)[-1]))  # the value is the same


def test_truncated_horizon_reads_another_depth_and_restores_the_grad_setting():
    model = _horizon(steps=4, grad="truncated", phantom_steps=1)
    x = _images()
    short = model.truncated(2)
    with torch.no_grad():
        assert torch.allclose(short(x), model.head(model.states(x, steps=2)[-1]))
    assert model.grad == "truncated"
    attacks = model.adaptive_attacks(0.1, preset="reduced")
    assert sorted(attacks) == ["transfer_horizon_1", "transfer_horizon_2", "transfer_horizon_8"]


def test_horizon_rejects_bad_settings_and_bad_images():
    with pytest.raises(ValueError, match="start"):
        _horizon(start="middle")
    with pytest.raises(ValueError, match="grad"):
        _horizon(grad="ift")
    with pytest.raises(ValueError, match="steps"):
        _horizon(steps=0)
    model = _horizon()
    with pytest.raises(ValueError, match="shape"):
        model(torch.rand(2, 1, 4, 4, dtype=DT))
    bad = _images()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError):
        model(bad)


def test_origin_projection_holds_the_horizon_state_in_a_ball_that_shrinks_with_h():
    """R1's collapse, as it happens in discrete time: the projected Euler map chatters in a ball around V's minimum
    whose radius scales with the step h, while the nominal map goes to its (larger) input-dependent fixed point."""
    torch.manual_seed(0)
    cell = MLPCell(5, weight_scale=0.9).to(DT)
    V = LyapunovFunction(5, hidden=(8,)).to(DT)
    x = _images(6)

    def norm(step):
        return float(_horizon(step=step, steps=40).states(x)[-1].norm(dim=1).mean())

    def stable(h):
        return norm(LyapunovStableCell(cell, V, alpha=1.0, h=h, center="origin"))

    assert stable(0.1) < 0.3 * stable(0.5)
    assert stable(0.1) < 0.3 * norm(EulerCell(cell, h=0.1))


def _base(dtype=DT):
    torch.manual_seed(0)
    return mlp_classifier(SHAPE, 3, mean=(0.5,), std=(0.3,), width=5, solver="anderson", max_iter=60, tol=1e-10).to(
        dtype
    )


def test_one_shot_correction_lowers_V_and_freezes_the_base():
    model = OneShotLyapunovClassifier(_base(), lyapunov_hidden=(8,)).to(DT)
    assert not any(p.requires_grad for p in model.base.parameters())
    model.train()
    assert not model.base.training and model.classifier.training
    with torch.no_grad():
        z = model.equilibrium(_images(5))
    zc = model.correction(z)
    V = model.lyapunov
    assert bool((V(zc) < V(z)).all())
    control = OneShotLyapunovClassifier(_base(), correct=False, lyapunov_hidden=(8,)).to(DT)
    assert torch.equal(control.correction(z), z)


def test_one_shot_exact_gradient_is_exact_and_the_detached_one_is_not():
    torch.manual_seed(1)
    exact = OneShotLyapunovClassifier(_base(), lyapunov_hidden=(8,)).to(DT)
    detached = OneShotLyapunovClassifier(_base(), exact=False, lyapunov_hidden=(8,)).to(DT)
    detached.load_state_dict(exact.state_dict())
    for m in (exact, detached):
        m.base.deq.grad = "unroll"  # an exact gradient through the base, so that only ∇V's treatment differs
    x = _images(2).requires_grad_(True)
    with torch.no_grad():
        assert torch.allclose(exact(x), detached(x))  # the same function
    assert torch.autograd.gradcheck(lambda v: exact(v), (x,), eps=1e-6, atol=1e-5)
    g_exact = torch.autograd.grad(exact(x)[:, 0].sum(), x)[0]
    g_detached = torch.autograd.grad(detached(x)[:, 0].sum(), x)[0]
    g_twin = torch.autograd.grad(detached.exact_twin()(x)[:, 0].sum(), x)[0]
    assert torch.allclose(g_twin, g_exact)
    assert (g_exact - g_detached).norm() > 1e-3 * g_exact.norm()
    assert sorted(detached.adaptive_attacks(0.1)) == ["exact_grad_apgd_ce", "exact_grad_apgd_t"]
    assert exact.adaptive_attacks(0.1) == {}


def test_one_shot_rejects_a_base_that_is_not_a_deq_classifier():
    with pytest.raises(TypeError, match="DEQClassifier"):
        OneShotLyapunovClassifier(nn.Linear(3, 3))


def _ce(model, x, y):
    logits = model(x)
    return nn.functional.cross_entropy(logits, y), logits


class _Scale(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(float(a), dtype=DT))

    def forward(self, z, u):
        return self.a * z + u


def test_attractor_penalty_vanishes_on_a_contracting_equilibrium_and_not_on_an_expanding_one():
    x, y = _images(4), torch.tensor([0, 1, 2, 0])
    contracting = _horizon(step=EulerCell(_Scale(0.0), h=1.0), steps=3, start="injection", injection_scale=0.0)
    assert float(AttractorRegulariser(_ce, rho=0.5).penalty(contracting, x).detach()) == pytest.approx(0.0, abs=1e-12)
    expanding = _horizon(step=EulerCell(_Scale(2.0), h=1.0), steps=3, start="injection", injection_scale=0.0)
    reg = AttractorRegulariser(_ce, weight=0.5, rho=0.5)
    penalty = reg.penalty(expanding, x)
    assert penalty.item() > 1.0  # the read state is no equilibrium, and the step's gain is 2 > 0.5
    loss, _ = reg(expanding, x, y)
    assert torch.allclose(loss, _ce(expanding, x, y)[0] + 0.5 * penalty)
    (g,) = torch.autograd.grad(penalty, expanding.step.cell.a)
    assert float(g) > 0  # the penalty pushes the gain down
    assert AttractorRegulariser(_ce, weight=0.0)(expanding, x, y)[0] == _ce(expanding, x, y)[0]


def _regularised(a, max_iter=400):
    torch.manual_seed(0)
    injection = nn.Sequential(nn.Flatten(), nn.Linear(9, 5))
    base = DEQClassifier(
        injection,
        _Scale(a),
        nn.Linear(5, 3),
        image_shape=SHAPE,
        mean=(0.5,),
        std=(0.3,),
        solver="fixed_point",
        max_iter=max_iter,
        tol=1e-12,
    )
    return LyapunovRegularisedDEQ(base, lyapunov_hidden=(8,)).to(DT)


def test_decrease_penalty_follows_the_contraction_of_the_iterated_map():
    """V convex with V(0) = 0 gives V(a e) <= a V(e): a map that shrinks the displacement 10-fold meets a halving
    of V at every step; one that shrinks it by 10 % (V by 10-19 %) does not."""
    x = _images(4)
    loss = LyapunovDecreaseLoss(_ce, rate=0.5, starts=1, radius=0.5)
    assert float(loss.penalty(_regularised(0.1), x)) == 0.0
    slow = _regularised(0.9)
    penalty = loss.penalty(slow, x)
    assert 0.2 < float(penalty) < 0.45
    (g,) = torch.autograd.grad(penalty, slow.deq.cell.a)
    assert float(g) > 0
    with pytest.raises(TypeError, match="LyapunovRegularisedDEQ"):
        loss.penalty(_base(), x)


def test_reading_recipes_validate_and_hash_their_new_fields():
    r = zoo.get("mnist5k-mlp-r4-lyadeq-standard")
    assert r.regulariser["name"] == "attractor" and r.architecture["name"] == "horizon"
    assert recipe_hash(replace(r, regulariser={**r.regulariser, "rho": 0.4})) != recipe_hash(r)
    with pytest.raises(ValueError, match="architecture"):
        ZooRecipe("x", "mnist5k", "fast", "mlp", {}, {"name": "ce"}, {"epochs": 1}, architecture={"name": "nope"})
    with pytest.raises(ValueError, match="missing"):
        replace(r, regulariser={"name": "attractor", "weight": 1.0})
    one_shot = zoo.get("mnist5k-mlp-r3-exact-pgdat")
    fields = one_shot.hashed_fields()
    assert fields["base_hash"] == recipe_hash(zoo.get("mnist5k-mlp-pgdat"))
    assert one_shot.with_seed(1).hashed_fields()["base_hash"] == recipe_hash(zoo.get("mnist5k-mlp-pgdat").with_seed(1))


def test_every_reading_has_a_control_trained_the_same_way():
    # chapter 6's readings (chapter 8's combination with random intermediate states, "-ris-", aside)
    names = [n for n in zoo.names("fast") if re.search(r"-r\d-", n) and "-ris-" not in n]
    assert len(names) == 22
    for n in names:
        parts = n.split("-")
        control = "-".join(parts[:3] + ["nominal", parts[-1]])
        assert control in zoo.RECIPES, n
        a, b = zoo.get(n), zoo.get(control)
        assert (a.dataset, a.loss, a.fit) == (b.dataset, b.loss, b.fit), n


def test_zoo_builds_each_architecture_as_its_class():
    expected = {
        "mnist5k-mlp-r1-lyadeq-standard": (HorizonClassifier, LyapunovStableCell),
        "mnist5k-mlp-r4-lyadeq-standard": (HorizonClassifier, EulerCell),
        "mnist5k-mlp-r5-lyadeq-standard": (LyapunovRegularisedDEQ, None),
    }
    for name, (cls, step) in expected.items():
        model = zoo.build(zoo.get(name))
        assert isinstance(model, cls), name
        if step is not None:
            assert isinstance(model.step, step), name
            assert isinstance(model.head, nn.Sequential) and len(model.head) == 3  # the orthogonal head
    r2 = zoo.build(zoo.get("mnist5k-mlp-r2-lyadeq-standard"))
    assert r2.stable_cell.center == "residual" and r2.deq.grad == "phantom"
    assert type(orthogonal_head(4, 2)[1]).__name__ == "ParametrizedLinear"


class _Identity(nn.Module):
    def forward(self, z, u):
        return z


class _Drive(nn.Module):
    def forward(self, z, u):
        return u


def test_initial_state_stability_separates_a_memory_from_a_converged_solve():
    carry = _horizon(step=EulerCell(_Identity(), h=1.0), steps=3)  # z_K = z_0: the start survives whole
    assert initial_state_stability(carry, _images(4))["ratio"] == pytest.approx(1.0)
    forget = _horizon(step=EulerCell(_Drive(), h=1.0), steps=3)  # z_1 = u: the start is forgotten at once
    assert initial_state_stability(forget, _images(4))["ratio"] == pytest.approx(0.0, abs=1e-12)
    assert initial_state_stability(_base(), _images(4))["ratio"] < 1e-6  # a converged DEQ forgets its start


def test_input_state_sensitivity_matches_a_linear_injection():
    model = _horizon(step=EulerCell(_Drive(), h=1.0), steps=1, width=9)
    with torch.no_grad():
        model.injection[1].weight.copy_(2.0 * torch.eye(9, dtype=DT))
    x = torch.full((3, *SHAPE), 0.5, dtype=DT)  # no clipping at the [0, 1] border
    r = input_state_sensitivity(model, x, eps=0.01)
    assert r["state_ratio"] == pytest.approx(2.0 / 0.3)  # weight 2 after normalising by std 0.3


def test_without_lyapunov_removes_exactly_the_lyapunov_part():
    torch.manual_seed(0)
    cell = MLPCell(5, weight_scale=0.9).to(DT)
    r1 = _horizon(step=LyapunovStableCell(cell, LyapunovFunction(5, hidden=(8,)).to(DT), h=0.5, center="origin"))
    twin = without_lyapunov(r1)
    assert isinstance(twin.step, EulerCell) and twin.step.h == 0.5
    x = _images()
    with torch.no_grad():
        assert torch.allclose(twin(x), _horizon(step=EulerCell(cell, h=0.5))(x))
    assert isinstance(r1.step, LyapunovStableCell)  # the original is untouched
    r3 = OneShotLyapunovClassifier(_base(), lyapunov_hidden=(8,)).to(DT)
    assert without_lyapunov(r3).correct is False and r3.correct is True
    with pytest.raises(ValueError, match="no projection"):
        without_lyapunov(_base())
    with pytest.raises(ValueError, match="no projection"):
        without_lyapunov(without_lyapunov(r3))


def test_claim_verdict_needs_every_seed_and_three_of_them():
    good, tie, bad = ({"difference": d, "p_value": p} for d, p in ((0.1, 0.01), (0.1, 0.3), (-0.1, 0.01)))
    assert claim_verdict([good] * 3) == "reproduced"
    assert claim_verdict([good, good, tie]) == "mixed"
    assert claim_verdict([tie, bad, tie]) == "not reproduced"
    assert claim_verdict([good]) == "screen only (1 seed(s)): better"
    assert claim_verdict([bad]) == "screen only (1 seed(s)): worse"
    assert claim_verdict([]) == "not run"


def _fake_run(name, robust, n=4):
    acc = sum(robust) / n
    eps = {"robust_accuracy": acc, "ci95": [max(0.0, acc - 0.4), min(1.0, acc + 0.4)], "robust": robust}
    return {
        "name": name,
        "seed": 0,
        "n": n,
        "report": {"clean_accuracy": 1.0, "eps": {"0.1": eps}},
        "measures": {"input": {"state_ratio": 0.5}, "initial_state": {"ratio": 0.0}},
        "masking": {"passed": name.endswith("standard"), "failed": [] if name.endswith("standard") else ["black_box"]},
    }


def test_reading_rows_verdict_rows_and_the_readings_figure():
    runs = {
        "a": _fake_run("mnist5k-mlp-r3-exact-standard", [True, True, False, False]),
        "b": _fake_run("mnist5k-mlp-r3-nominal-standard", [True, False, False, False]),
        "c": _fake_run("mnist5k-mlp-r3-exact-pgdat", [True] * 4),
    }
    rows = reading_rows(runs)
    assert [r["model"] for r in rows] == ["r3-exact-standard", "r3-nominal-standard", "r3-exact-pgdat"]
    assert rows[0]["eps 0.1 (%)"] == "50.0 [10.0, 90.0]" and rows[2]["masking"] == "failed: black_box"
    summary = {
        "mnist5k-mlp-r3-exact-standard": {
            "claim": "C1: x",
            "n": 4,
            "eps": {"0.1": {"per_seed": {0: {"difference": 0.25, "p_value": 1.0}}, "verdict": "screen"}},
        }
    }
    (v,) = verdict_rows(summary)
    assert v["claim"] == "C1" and v["reading - control (points)"] == "+25.0 (p 1)"
    assert v["mean over seeds [95 % t]"] == "-"  # one seed: no interval
    three = {s: {"difference": d, "p_value": 0.5} for s, d in enumerate([0.02, -0.04, 0.05])}
    over = seed_summary([0.02, -0.04, 0.05])
    summary["mnist5k-mlp-r3-exact-standard"]["eps"]["0.1"].update(per_seed=three, over_seeds=over)
    (v,) = verdict_rows(summary)
    lo, hi = over["interval"]
    assert v["seeds"] == 3 and v["mean over seeds [95 % t]"] == f"+1.0 [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    assert lo < 0 < hi  # the interval straddles zero for these differences
    fig = viz.plot_readings_vs_controls(runs, eps="0.1")
    assert len(fig.axes) == 2  # standard and PGD-AT panels
    left = fig.axes[0]
    assert [t.get_text() for t in left.get_yticklabels()] == ["R3 exact"]
    assert len(left.lines) >= 2  # the reading's dot and its control's
    plt.close(fig)
    with pytest.raises(ValueError, match="no reading"):
        viz.plot_readings_vs_controls({"b": runs["b"]})
    fig = viz.plot_collapse({"a": {"norm": torch.ones(5), "spread": torch.ones(5)}}, trained_horizon=3)
    assert len(fig.axes) == 2
    plt.close(fig)


def test_input_jacobian_norm_matches_the_exact_jacobian():
    x = _images(2)
    for model in (_horizon(steps=3), _base(), OneShotLyapunovClassifier(_base(), lyapunov_hidden=(8,)).to(DT)):
        est = input_jacobian_norm(model, x, n_iter=60)["sigma"]
        for i in range(2):
            jac = torch.autograd.functional.jacobian(
                lambda v: _differentiable_state(model, v.unsqueeze(0))[0], x[i]
            ).reshape(-1, x[i].numel())
            assert est[i] == pytest.approx(float(torch.linalg.matrix_norm(jac, ord=2)), rel=1e-4), type(model)
    implicit = input_sensitivity(_base(), x, n_iter=60, tol=1e-12)["sigma"]  # the IFT's linear solves instead
    assert input_jacobian_norm(_base(), x, n_iter=60)["sigma"] == pytest.approx(implicit.tolist(), rel=1e-4)


def _differentiable_state(model, x):
    from deqlib.defenses.lyadeq_measures import _differentiable_read

    return _differentiable_read(model, x)
