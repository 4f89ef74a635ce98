"""Tests for deqlib.attacks: adapters over torchattacks, validation, AutoAttack standard parameters, the attacker's
gradient switch, the intermediate-state attacks and robust_accuracy. Small: an 8x8-digits MLP DEQ trained for
two epochs (a few seconds on one thread)."""

from __future__ import annotations

import inspect
import json

import pytest
import torch
import torch.nn.functional as F
import torchattacks
from _broken_logits import LinearClassifier
from torch import nn

import deqlib.attacks as A
from deqlib.attacks import (
    EnsembleIntermediateAttack,
    IntermediateStateAttack,
    attack_gradient,
    autoattack_standard,
    make_attack,
    robust_accuracy,
)
from deqlib.attacks.builder import ADAPTERS, REQUIRED
from deqlib.cells import classifier_for
from deqlib.data import load
from deqlib.deq import DEQ
from deqlib.threat import perturbation_norm

TOL = 1e-6


def _train(model: nn.Module, data, epochs: int = 2, seed: int = 0) -> nn.Module:
    """A few seconds of Adam with the (cheap) phantom gradient; the model is returned with grad="ift"."""
    torch.manual_seed(seed)
    model.deq.grad = "phantom"
    x, y = data.tensors()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.deq.grad = "ift"
    return model.eval()


@pytest.fixture(scope="module")
def digits():
    return load("digits", "train"), load("digits", "test")


@pytest.fixture(scope="module")
def model(digits):
    """A trained digits DEQ solved tightly (tol 1e-6), so that gradients can be compared."""
    train, _ = digits
    torch.manual_seed(0)
    return _train(classifier_for(train, "mlp", width=32, tol=1e-6, max_iter=60), train)


@pytest.fixture(scope="module")
def batch(digits):
    return digits[1].subset(24, seed=1).tensors()


# ---------------------------------------------------------------------------------------------------- threat model
CASES = [
    ("fgsm", 0.1, {}),
    ("pgd", 0.1, {"steps": 5}),
    ("pgd", 0.1, {"steps": 3, "gradient": "phantom"}),
    ("pgd_l2", 1.0, {"steps": 5}),
    ("cw", 0.5, {"steps": 20, "c": 10.0, "lr": 0.05}),
    ("apgd_ce", 0.1, {"steps": 5}),
    ("apgd_ce", 1.0, {"steps": 5, "norm": "L2"}),
    ("apgd_t", 0.1, {"steps": 3, "n_target_classes": 2}),
    ("fab_t", 0.1, {"steps": 3, "n_target_classes": 2}),
    ("fab_t", 1.0, {"steps": 3, "n_target_classes": 2, "norm": "L2"}),
    ("square", 0.1, {"n_queries": 30}),
    ("square", 1.0, {"n_queries": 30, "norm": "L2"}),
    ("intermediate", 0.1, {"steps": 3, "state_index": 2}),
    ("intermediate", 1.0, {"steps": 3, "state_index": 2, "norm": "L2"}),
    ("ensemble_intermediate", 0.1, {"steps": 3, "state_indices": (1, 4)}),
]


@pytest.mark.parametrize(
    "name,eps,params",
    CASES,
    ids=[f"{c[0]}-{c[2].get('norm', 'L2' if c[0] in ('pgd_l2', 'cw') else 'Linf')}" for c in CASES],
)
def test_attacks_stay_in_the_ball_and_in_range(model, batch, name, eps, params):
    x, y = batch
    x, y = x[:12], y[:12]
    atk = make_attack(name, model, eps, **params)
    assert isinstance(atk, torchattacks.attack.Attack)
    torch.manual_seed(0)
    adv = atk(x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert torch.isfinite(adv).all()
    assert adv.min() >= 0 and adv.max() <= 1
    norm = atk.norm
    assert norm == ("L2" if name in ("pgd_l2", "cw") else params.get("norm", "Linf"))
    assert perturbation_norm(adv, x, norm).max() <= eps + TOL
    assert not torch.equal(adv, x), "the attack did not move any image"
    assert model.deq.grad == "ift"  # any gradient switch was undone


def test_the_attack_lowers_accuracy_and_eps_zero_is_the_identity(model, batch):
    x, y = batch
    assert torch.equal(make_attack("pgd", model, 0.0)(x, y), x)
    assert torch.equal(make_attack("square", model, 0.0, n_queries=5)(x, y), x)
    assert torch.equal(IntermediateStateAttack(model, 0.0, state_index=1)(x, y), x)


def test_multiattack_combines_deq_and_torchattacks_attacks(model, batch):
    x, y = batch
    multi = torchattacks.MultiAttack([A.fgsm(model, 0.1), IntermediateStateAttack(model, 0.1, steps=3, state_index=2)])
    adv = multi(x, y)
    assert perturbation_norm(adv, x, "Linf").max() <= 0.1 + TOL


# ---------------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("name", ["fgsm", "pgd", "apgd_ce", "apgd_t", "fab_t", "square", "autoattack"])
def test_negative_and_wrong_scale_eps(model, name):
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        make_attack(name, model, -0.1)
    with pytest.raises(ValueError, match=r"wrong scale.*\[0, 1\]"):
        make_attack(name, model, 8)


def test_bad_parameters_give_clear_errors(model, batch):
    with pytest.raises(ValueError, match="unknown norm 'L1'.*Linf"):
        make_attack("pgd", model, 0.1, norm="L1")
    with pytest.raises(ValueError, match="unknown norm"):
        A.apgd_ce(model, 0.1, norm="l3")
    with pytest.raises(ValueError, match=r"unknown attack 'pgdd'.*apgd_ce.*pgd"):
        make_attack("pgdd", model, 0.1)
    with pytest.raises(TypeError, match=r"unknown parameter\(s\) \['iters'\].*'steps'"):
        make_attack("pgd", model, 0.1, iters=10)
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        make_attack("pgd", model, 0.1, steps=0)
    with pytest.raises(TypeError, match="steps must be an int"):
        make_attack("pgd", model, 0.1, steps=2.5)
    with pytest.raises(ValueError, match=r"alpha \(step size\) must be a finite number > 0"):
        make_attack("pgd", model, 0.1, alpha=0.0)
    with pytest.raises(ValueError, match="wrong scale"):
        make_attack("pgd", model, 8 / 255, alpha=2)  # 2 instead of 2/255
    with pytest.raises(ValueError, match="unknown gradient 'implicit'"):
        make_attack("pgd", model, 0.1, gradient="implicit")
    with pytest.raises(ValueError, match="n_target_classes must be <= n_classes - 1"):
        A.apgd_t(model, 0.1, n_classes=10, n_target_classes=10)
    with pytest.raises(ValueError, match="eps must be a finite number"):
        A.pgd(model, float("nan"))
    with pytest.raises(ValueError, match=r"phantom_tau must be a finite number > 0 and <= 1"):
        IntermediateStateAttack(model, 0.1, state_index=1, phantom_tau=0.0)
    with pytest.raises(ValueError, match="at least one state index"):
        EnsembleIntermediateAttack(model, 0.1, state_indices=())
    with pytest.raises(TypeError, match="needs a DEQ classifier"):
        IntermediateStateAttack(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), 0.1, state_index=1)
    # an L2 radius beyond the diameter sqrt(64) = 8 of [0, 1]^64 is on the wrong scale (checked at call time)
    x, y = batch
    with pytest.raises(ValueError, match=r"exceeds sqrt\(d\)"):
        A.pgd_l2(model, 20.0)(x, y)


def test_registry_names_and_registration(model):
    names = A.available_attacks()
    for n in (
        "fgsm",
        "pgd",
        "pgd_l2",
        "cw",
        "apgd_ce",
        "apgd_t",
        "fab_t",
        "square",
        "autoattack",
        "intermediate",
        "ensemble_intermediate",
    ):
        assert n in names
    assert make_attack("APGD-CE", model, 0.1, steps=3).steps == 3
    assert A.attack_name(make_attack("AutoAttack_Standard", model, 0.1)) == "autoattack"
    assert "state_index" in A.attack_options("intermediate")

    def mine(model, eps, *, steps=1):
        return A.pgd(model, eps, steps=steps)

    A.register_attack("test_only_pgd", mine)
    assert make_attack("test-only-pgd", model, 0.1, steps=2).steps == 2
    with pytest.raises(ValueError, match="already registered"):
        A.register_attack("test_only_pgd", lambda model, eps: None)


ADAPTER_FUNCTIONS = {
    "fgsm": A.fgsm,
    "pgd": A.pgd,
    "pgd_l2": A.pgd_l2,
    "cw": A.cw,
    "apgd_ce": A.apgd_ce,
    "apgd_t": A.apgd_t,
    "fab_t": A.fab_t,
    "square": A.square,
    "autoattack": A.autoattack_standard,
}


@pytest.mark.parametrize("name", sorted(ADAPTER_FUNCTIONS))
def test_the_parameter_table_matches_the_adapters(model, name):
    """The table cannot drift from the functions: same arguments, same defaults, every argument recorded."""
    spec = ADAPTERS[name]
    fn = ADAPTER_FUNCTIONS[name]
    signature = inspect.signature(fn).parameters
    assert list(signature)[0] == "model"
    assert set(spec.params) == set(signature) - {"model"}
    assert {k: p.default for k, p in spec.params.items()} == {
        k: p.default for k, p in signature.items() if k != "model"
    }
    assert spec.params["eps"].default is REQUIRED
    assert set(A.attack_options(name)) | {"eps"} == set(spec.params)
    atk = fn(model, 0.1)
    fixed = set(spec.record) | {"norm"} | ({"attacks"} if spec.members else set())
    assert set(atk._deqlib_params) == set(spec.params) | fixed
    assert A.attack_name(atk) == name
    assert isinstance(atk, spec.cls)
    json.dumps(A.attack_params(atk))


def test_pgd_in_l2_is_the_pgd_l2_entry(model):
    atk = A.pgd(model, 0.5, norm="l2", steps=3)
    assert isinstance(atk, torchattacks.PGDL2) and atk.norm == "L2" and A.attack_name(atk) == "pgd_l2"
    assert set(atk._deqlib_params) == set(ADAPTERS["pgd_l2"].params) | {"norm"}
    assert A.attack_params(atk) == A.attack_params(A.pgd_l2(model, 0.5, steps=3))


# ---------------------------------------------------------------------------------------------------- AutoAttack
def test_autoattack_standard_has_the_official_parameters(model, batch):
    aa = autoattack_standard(model, 8 / 255, norm="Linf", n_classes=10, seed=0)
    assert isinstance(aa, torchattacks.MultiAttack)
    apgd, apgdt, fab, sq = aa.attacks
    assert isinstance(apgd, torchattacks.APGD) and apgd.steps == 100 and apgd.loss == "ce" and apgd.n_restarts == 1
    assert (
        isinstance(apgdt, torchattacks.APGDT)
        and apgdt.steps == 100
        and apgdt.n_target_classes == 9
        and apgdt.n_restarts == 1
    )
    assert isinstance(fab, torchattacks.FAB) and fab.multi_targeted and fab.n_target_classes == 9 and fab.steps == 100
    assert isinstance(sq, torchattacks.Square) and sq.n_queries == 5000 and sq.p_init == 0.8 and not sq.rescale_schedule
    assert all(a.eps == 8 / 255 and a.norm == "Linf" and a.seed == 0 for a in aa.attacks)
    params = A.attack_params(aa)
    assert [p["name"] for p in params["attacks"]] == ["apgd_ce", "apgd_t", "fab_t", "square"]
    json.dumps(params)
    # torchattacks' own AutoAttack is not the standard one: 10 APGD steps.
    assert torchattacks.AutoAttack(model, eps=8 / 255)._autoattack.attacks[0].steps == 10
    # it runs: at a large radius APGD-CE alone breaks these few samples, and the result stays in the ball
    x, y = batch
    res = robust_accuracy(model, autoattack_standard(model, 0.4, gradient="phantom"), (x[:3], y[:3]))
    assert res["accuracy"] == 0.0 and res["max_perturbation"] <= 0.4 + TOL


@pytest.fixture(scope="module")
def mlp(digits):
    """A plain (non-DEQ) MLP trained for a few seconds: the standard AutoAttack budgets run fast on it."""
    train, _ = digits
    x, y = train.tensors()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(5):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


class _Saturated(nn.Module):
    """Logits times 1e4: the cross-entropy of a confident sample is exactly 0 in float32, and so is its gradient
    (APGD-CE cannot move); the targeted DLR loss (APGD-T), FAB's logit differences and Square's margin are scale-free."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return 1e4 * self.inner(x)


class _Rounded(nn.Module):
    """Inputs rounded to 4 levels: zero input gradient, so only Square (black-box) can attack it."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(torch.round(x * 3) / 3)


def test_every_autoattack_member_breaks_what_the_others_cannot(mlp, digits):
    """Each member of the standard set, as the composite holds it, must do its own work (a no-op member fails this):
    on a saturated model APGD-CE breaks nothing while APGD-T, FAB-T and Square each break almost every sample
    alone, and the composite's per-sample result is the worst case over its members; on a zero-gradient model
    the gradient attacks only have their random starts, and Square is what breaks it."""
    x, y = digits[1].subset(12, seed=1).tensors()
    eps = 0.25
    sat = _Saturated(mlp).eval()
    aa = autoattack_standard(sat, eps)
    alone = {A.attack_name(m): robust_accuracy(sat, m, (x, y)) for m in aa.attacks}
    n_clean = alone["apgd_ce"]["n_clean_correct"]
    assert n_clean >= 10 and alone["apgd_ce"]["n_correct"] == n_clean  # the CE gradient is exactly zero
    for name in ("apgd_t", "fab_t", "square"):
        assert alone[name]["n_correct"] <= 1, (name, alone[name]["n_correct"])
    composite = robust_accuracy(sat, aa, (x, y))
    survivors = [all(alone[k]["robust"][i] for k in alone) for i in range(12)]
    assert composite["robust"] == survivors and composite["n_correct"] <= 1

    rounded = _Rounded(mlp).eval()
    apgd, _, _, sq = autoattack_standard(rounded, eps).attacks
    ce = robust_accuracy(rounded, apgd, (x, y))
    assert ce["n_correct"] >= ce["n_clean_correct"] - 1  # only its random start can fool it
    assert robust_accuracy(rounded, sq, (x, y))["n_correct"] <= 1


def test_autoattack_with_fewer_classes_targets_all_others(model):
    aa = autoattack_standard(model, 0.1, n_classes=5)
    assert aa.attacks[1].n_target_classes == 4 and aa.attacks[2].n_target_classes == 4


# ---------------------------------------------------------------------------------------------------- gradient switch
class _TwoDEQ(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.a = model
        self.b = DEQ(nn.Linear(4, 4), grad="phantom")


def test_attack_gradient_switches_and_restores(model):
    two = _TwoDEQ(model)
    assert model.deq.grad == "ift"
    with attack_gradient(two, "unroll"):
        assert model.deq.grad == "unroll" and two.b.grad == "unroll"
    assert model.deq.grad == "ift" and two.b.grad == "phantom"
    with pytest.raises(RuntimeError, match="boom"):
        with attack_gradient(two, "phantom"):
            assert model.deq.grad == "phantom"
            raise RuntimeError("boom")
    assert model.deq.grad == "ift" and two.b.grad == "phantom"
    with attack_gradient(model, None):
        assert model.deq.grad == "ift"
    with pytest.raises(ValueError, match="unknown gradient"):
        with attack_gradient(model, "exact"):
            pass
    with pytest.raises(ValueError, match="no DEQ layer"):
        with attack_gradient(nn.Linear(2, 2), "ift"):
            pass


def test_adapter_gradient_is_used_during_the_attack_only(model, batch):
    x, y = batch
    seen = []
    handle = model.deq.register_forward_hook(lambda mod, inp, out: seen.append(mod.grad))
    try:
        A.pgd(model, 0.1, steps=2, gradient="unroll")(x[:4], y[:4])
    finally:
        handle.remove()
    assert seen and set(seen) == {"unroll"}
    assert model.deq.grad == "ift"


# ---------------------------------------------------------------------------------------------------- intermediate states
def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _loss_grad(model, x, y, gradient):
    with attack_gradient(model, gradient):
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
    return g


def test_intermediate_at_the_fixed_point_is_the_exact_gradient(model, batch):
    """tau = 1, a state past convergence and k = 60 damped steps: the truncated Neumann series of the implicit
    gradient. It must match PGD's unrolled (and IFT) input gradient, and the attacks must take the same steps."""
    x, y = batch
    g_unroll = _loss_grad(model, x, y, "unroll")
    g_ift = _loss_grad(model, x, y, "ift")
    atk = IntermediateStateAttack(model, 0.1, alpha=0.02, steps=5, state_index=200, phantom_steps=60, phantom_tau=1.0)
    g = atk.input_gradient(x, y)
    assert _rel(g, g_unroll) < 1e-3 and _rel(g, g_ift) < 1e-3
    # a real difference is detected: an early state with one unrolled step gives another gradient
    early = IntermediateStateAttack(model, 0.1, steps=5, state_index=0, phantom_steps=1, phantom_tau=1.0)
    assert _rel(early.input_gradient(x, y), g_unroll) > 0.2
    # same random start (same seed), same signed steps, same projection -> the same adversarial images
    torch.manual_seed(123)
    adv_int = atk(x, y)
    torch.manual_seed(123)
    adv_pgd = A.pgd(model, 0.1, alpha=0.02, steps=5, gradient="unroll")(x, y)
    differ = ((adv_int - adv_pgd).abs() > 1e-5).float().mean().item()
    assert differ < 0.01, f"{differ:.2%} of the pixels differ"
    assert not torch.equal(adv_int, x)


def test_intermediate_state_index_counts_solver_steps(digits, batch):
    """Reference by hand: plain fixed-point iteration from zeros for i steps, then K damped steps with gradient."""
    train, _ = digits
    torch.manual_seed(1)
    m = classifier_for(train, "mlp", width=16, solver="fixed_point", tol=1e-12, max_iter=50).eval()
    x, y = batch
    i, k, tau = 3, 4, 0.5
    xr = x.clone().requires_grad_(True)
    u = m.inject(xr)
    z = torch.zeros_like(u)
    with torch.no_grad():
        for _ in range(i):
            z = m.deq.cell(z, u)
    for _ in range(k):
        z = (1 - tau) * z + tau * m.deq.cell(z, u)
    (ref,) = torch.autograd.grad(F.cross_entropy(m.logits_from_state(z), y, reduction="sum"), xr)
    atk = IntermediateStateAttack(m, 0.1, state_index=i, phantom_steps=k, phantom_tau=tau)
    assert torch.allclose(atk.input_gradient(x, y), ref, atol=1e-6, rtol=1e-5)
    other = IntermediateStateAttack(m, 0.1, state_index=i + 1, phantom_steps=k, phantom_tau=tau)
    assert not torch.allclose(other.input_gradient(x, y), ref, atol=1e-6, rtol=1e-5)


def test_ensemble_sums_the_input_gradients(model, batch):
    x, y = batch
    kw = dict(phantom_steps=3, phantom_tau=0.5)
    ens = EnsembleIntermediateAttack(model, 0.1, state_indices=(1, 4), **kw)
    parts = [IntermediateStateAttack(model, 0.1, state_index=i, **kw).input_gradient(x, y) for i in (1, 4)]
    assert torch.allclose(ens.input_gradient(x, y), parts[0] + parts[1], atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------- robust accuracy
def test_pgd_lowers_accuracy_and_robust_accuracy_reports(model, digits):
    _, test = digits
    res = robust_accuracy(model, A.pgd(model, 0.1, steps=10), test, n=48, seed=0, batch_size=32)
    keys = {"accuracy", "n_samples", "n_correct", "attack", "params", "eps", "norm", "seed", "seconds"}
    assert keys <= set(res)
    assert res["n_samples"] == 48 and res["attack"] == "pgd" and res["eps"] == 0.1 and res["norm"] == "Linf"
    assert res["params"]["steps"] == 10 and res["seed"] == 0
    assert res["clean_accuracy"] >= 0.8
    assert res["accuracy"] <= res["clean_accuracy"] - 0.2
    assert res["n_correct"] == round(res["accuracy"] * 48)
    json.dumps(res)
    again = robust_accuracy(model, A.pgd(model, 0.1, steps=10), test, n=48, seed=0, batch_size=48)
    assert again["n_correct"] == res["n_correct"]  # seeded, and batch size does not matter
    # per-sample results: robust implies clean-correct, broken_by names the attack, and a 95 % (Wilson) interval
    assert len(res["robust"]) == len(res["clean_correct"]) == len(res["broken_by"]) == 48
    assert sum(res["robust"]) == res["n_correct"] and sum(res["clean_correct"]) == res["n_clean_correct"]
    for c, r, b in zip(res["clean_correct"], res["robust"], res["broken_by"]):
        assert b == (None if r else ("pgd" if c else "clean")) and (c or not r)
    assert res["ci95"][0] < res["accuracy"] < res["ci95"][1] and res["ci95"][1] - res["ci95"][0] < 0.35
    assert res["clean_ci95"][0] < res["clean_accuracy"] <= res["clean_ci95"][1]
    assert res["convergence"]["forward_solves"] > 0 and res["convergence"]["backward_solves"] > 0
    assert res["robust"] == again["robust"]
    x, y = test.tensors()
    assert robust_accuracy(model, A.fgsm(model, 0.1), (x, y), n=10)["n_samples"] == 10


def test_robust_accuracy_refuses_an_attack_that_leaves_the_ball(model, batch):
    class Cheat(torchattacks.attack.Attack):
        def __init__(self, model):
            super().__init__("Cheat", model)
            self.eps = 0.05

        def forward(self, images, labels):
            return (images + 0.2).clamp(0, 1)

    with pytest.raises(RuntimeError, match="left the threat model"):
        robust_accuracy(model, Cheat(model), batch)


# ---------------------------------------------------------------------------------------------------- issue 16: bad input
_X, _Y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])


@pytest.mark.parametrize(
    "build",
    [
        lambda m, k: A.apgd_t(m, 0.1, steps=1, n_classes=k),
        lambda m, k: A.fab_t(m, 0.1, steps=1, n_classes=k),
        lambda m, k: autoattack_standard(m, 0.1, n_classes=k),
    ],
    ids=["apgd_t", "fab_t", "autoattack"],
)
@pytest.mark.parametrize("n_classes", [5, 20])
def test_n_classes_must_match_the_models_logits(build, n_classes):
    """Before issue 16 an APGD-T built for 5 classes ran silently on a 10-class model (targeting 4 of its 9 other
    classes); the first logits of a call now say so, before any gradient."""
    with pytest.raises(ValueError, match=rf"n_classes = {n_classes} but the model returns 10 logits"):
        build(LinearClassifier(), n_classes)(_X, _Y)
    assert build(LinearClassifier(), 10)(_X, _Y).shape == _X.shape


@pytest.mark.parametrize(
    "labels, error, match",
    [
        (torch.tensor([0, 1, 2, 10]), ValueError, r"labels must be class indices in \[0, 10\)"),
        (torch.tensor([0, -100, 2, 3]), ValueError, r"-100, torch's ignore index, is not supported"),
        (
            torch.tensor([0.0, 1.5, 2.0, 3.0]),
            TypeError,
            r"labels must be integer class labels \(int64\), got torch.float32",
        ),
        (torch.tensor([0, 1, 2]), ValueError, r"labels must have shape \(4,\)"),
    ],
    ids=["label 10", "label -100", "float labels", "3 labels"],
)
@pytest.mark.parametrize("name", ["fgsm", "pgd", "apgd_ce", "square"])
def test_attack_calls_check_the_labels(name, labels, error, match):
    atk = make_attack(name, LinearClassifier(), 0.1, **({"n_queries": 2} if name == "square" else {}))
    with pytest.raises(error, match=match):
        atk(_X, labels)


@pytest.mark.parametrize("shape, got", [("flat", r"\(40,\)"), ("3d", r"\(4, 10, 1\)"), ("batch", r"\(1, 10\)")])
def test_attack_calls_and_robust_accuracy_check_the_logits(shape, got):
    model = LinearClassifier(shape)
    pattern = rf"must return logits of shape \(N, num_classes\) = \(4, C\) with C >= 2, got {got}"
    with pytest.raises(ValueError, match="pgd: the model " + pattern):
        A.pgd(model, 0.1, steps=1)(_X, _Y)
    with pytest.raises(ValueError, match="robust_accuracy: the model " + pattern):
        robust_accuracy(model, A.pgd(model, 0.1, steps=1), (_X, _Y))
    with pytest.raises(ValueError, match="predict: the model " + pattern):
        A.predict(model, _X)


@pytest.mark.parametrize(
    "labels, error, match",
    [
        (torch.tensor([0, 1, 2, 10]), ValueError, r"robust_accuracy: y must be class indices in \[0, 10\)"),
        (torch.tensor([0, -1, 2, 3]), ValueError, r"robust_accuracy: y must be class indices in \[0, 10\)"),
        (torch.tensor([0, -100, 2, 3]), ValueError, r"torch's ignore index"),
        (torch.tensor([0.0, 1.5, 2.0, 3.0]), TypeError, r"robust_accuracy: y must be integer class labels"),
    ],
    ids=["label 10", "label -1", "label -100", "float labels"],
)
def test_robust_accuracy_checks_the_labels(labels, error, match):
    """Before issue 16: IndexError from inside torchattacks, or (-100, floats truncated by .long()) a number."""
    model = LinearClassifier()
    with pytest.raises(error, match=match):
        robust_accuracy(model, A.pgd(model, 0.1, steps=1), (_X, labels))


def test_robust_accuracy_and_predict_validate_their_arguments():
    model = LinearClassifier()
    atk = A.pgd(model, 0.1, steps=1)
    with pytest.raises(TypeError, match="robust_accuracy: model must be a torch.nn.Module"):
        robust_accuracy(object(), atk, (_X, _Y))
    with pytest.raises(TypeError, match="robust_accuracy: eps must be a real number, got str '0.1'"):
        robust_accuracy(model, atk, (_X, _Y), eps="0.1")
    with pytest.raises(ValueError, match=r"robust_accuracy: pixels must be in \[0, 1\]"):
        robust_accuracy(model, atk, (_X * 255, _Y))  # was: "pgd left the threat model"
    with pytest.raises(ValueError, match="predict: batch_size must be an int >= 1, got 0"):
        A.predict(model, _X, batch_size=0)
    with pytest.raises(TypeError, match="predict: x must be a torch.Tensor"):
        A.predict(model, [[0.5]])


def test_intermediate_attacks_check_labels_and_images(model):
    atk = IntermediateStateAttack(model, 0.1, steps=1, state_index=1)
    x = torch.rand(4, 1, 8, 8)
    with pytest.raises(ValueError, match=r"intermediate: labels must be class indices in \[0, 10\)"):
        atk(x, torch.tensor([0, 1, 2, 10]))
    with pytest.raises(TypeError, match="intermediate: labels must be integer class labels"):
        atk(x, torch.tensor([0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"intermediate: pixels must be in \[0, 1\]"):
        atk(x * 255, torch.tensor([0, 1, 2, 3]))


def test_threat_functions_validate_their_arguments():
    from deqlib import threat

    small = torch.rand(4, 1, 4, 4)
    with pytest.raises(ValueError, match="project: eps must be a finite number >= 0, got -0.1"):
        threat.project(_X, _X, -0.1)  # was: clamp(0.1, -0.1), a silent nonsense
    with pytest.raises(ValueError, match=r"project: x_adv and x must have the same shape, got \(4, 1, 8, 8\) and"):
        threat.project(_X, small, 0.1)
    with pytest.raises(ValueError, match="random_start: L-infinity eps = 2 is on the wrong scale"):
        threat.random_start(_X, 2.0)
    with pytest.raises(ValueError, match="ascent_step: alpha must be a finite number > 0"):
        threat.ascent_step(_X, _X, -1.0, "Linf")
    with pytest.raises(ValueError, match="perturbation_norm: x_adv and x must have the same shape"):
        threat.perturbation_norm(_X, small, "Linf")
    with pytest.raises(TypeError, match=r"eps_list must be a sequence of radii such as \[0.1, 0.2\], got str '0.1'"):
        threat.check_eps_list("0.1")
    assert threat.check_eps_list(0.1, "Linf") == [0.1]
    with pytest.raises(ValueError, match="lists a radius twice"):
        threat.check_eps_list([0.1, 0.1], "Linf", distinct=True)


# ---------------------------------------------------------------------------------------------------- transfer
def test_transfer_attack_judges_the_sources_images_on_the_target(model, digits):
    """Crafted on the source model, judged on another: the images are the source attack's, bit for bit (same seed),
    and a target that ignores its input is not fooled by them."""
    _, test = digits
    x, y = test.subset(16, seed=3).tensors()
    source = A.pgd(model, 0.2, steps=3)
    torch.manual_seed(0)
    direct = source(x, y)
    const = LinearClassifier()
    atk = A.TransferAttack(const, source)
    torch.manual_seed(0)
    assert torch.equal(atk(x, y), direct)
    assert A.attack_name(atk) == "transfer:pgd" and A.attack_params(atk)["source"]["steps"] == 3
    on_source = robust_accuracy(model, A.TransferAttack(model, source), (x, y))
    assert on_source["accuracy"] == robust_accuracy(model, source, (x, y))["accuracy"]
    with pytest.raises(TypeError, match="source must be a torchattacks.Attack"):
        A.TransferAttack(model, lambda a, b: a)
    with pytest.raises(TypeError, match="TransferAttack: model must be a torch.nn.Module"):
        A.TransferAttack(None, source)
