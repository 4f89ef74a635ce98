"""Tests for deqlib.evaluate: the robustness report, atomic JSON, and the gradient-masking checks (tiny budgets)."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from _broken_logits import LinearClassifier
from torch import nn

from deqlib.attacks import TransferAttack, pgd, robust_accuracy
from deqlib.cells import classifier_for
from deqlib.data import load
from deqlib.evaluate import (
    MASKING_CHECKS,
    QuantisedInput,
    broken_by_counts,
    check_black_box,
    check_determinism_gradients,
    check_gradient_choices,
    check_large_eps,
    check_monotone_eps,
    check_steps_restarts,
    evaluate_robustness,
    masking_checks,
    masking_rows,
    paired_rows,
    save_json,
    to_jsonable,
    wilson_interval,
)


@pytest.fixture(scope="module")
def model():
    train = load("digits", "train")
    torch.manual_seed(0)
    m = classifier_for(train, "mlp", width=32, grad="phantom")
    x, y = train.tensors()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(2):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            loss = F.cross_entropy(m(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    m.deq.grad = "ift"
    return m.eval()


@pytest.fixture(scope="module")
def batch():
    return load("digits", "test").subset(16, seed=2).tensors()


class _Quantised(nn.Module):
    """Gradient masking by construction: inputs rounded to 4 levels, so the input gradient is zero."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(torch.round(x * 3) / 3)


class _Reverse(torch.autograd.Function):
    """The identity, whose backward turns the gradient around."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return -g


class _WrongPhantom(nn.Module):
    """A DEQ whose phantom gradient points downhill (its IFT and unrolled gradients are fine)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(_Reverse.apply(x) if self.inner.deq.grad == "phantom" else x)


class _TinyGradient(nn.Module):
    """Rounded inputs plus 1e-15 x W: an input gradient of norm ~1e-14, nonzero but too small to move a logit."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.register_buffer("w", torch.randn(64, 10, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        return self.inner(torch.round(x * 3) / 3) + 1e-15 * (x.flatten(1) @ self.w)


class _Noisy(nn.Module):
    """A randomised model: its logits differ between two calls."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) + 0.1 * torch.randn(x.shape[0], 10)


# ---------------------------------------------------------------------------------------------------- report
def test_evaluate_robustness_report(model, batch, tmp_path):
    x, y = batch
    attacks = [
        "pgd",
        ("apgd_ce", {"steps": 5}),
        ("pgd", {"steps": 3, "gradient": "phantom"}),
        ("pgd_l2", {"steps": 3}, [0.5]),
    ]
    res = evaluate_robustness(model, x, y, attacks, [0.05, 0.15], seed=0, batch_size=8)
    assert res["n_samples"] == 16 and res["seed"] == 0 and res["eps_list"] == [0.05, 0.15]
    assert 0.8 <= res["clean_accuracy"] <= 1.0
    assert [a["label"] for a in res["attacks"]] == ["pgd", "apgd_ce", "pgd#2", "pgd_l2"]
    assert len(res["results"]) == 2 + 2 + 2 + 1
    for r in res["results"]:
        assert {"attack", "name", "eps", "norm", "accuracy", "n_correct", "params", "seconds"} <= set(r)
        assert 0.0 <= r["accuracy"] <= res["clean_accuracy"]
    assert res["results"][4]["params"]["gradient"] == "phantom"
    assert res["table"]["apgd_ce"]["eps"] == [0.05, 0.15]
    assert res["table"]["pgd"]["accuracy"][1] < res["clean_accuracy"]
    worst = {(w["norm"], w["eps"]): w for w in res["worst_case"]}
    assert set(worst) == {("Linf", 0.05), ("Linf", 0.15), ("L2", 0.5)}
    for r in res["results"]:
        assert worst[(r["norm"], r["eps"])]["accuracy"] <= r["accuracy"]
    assert res["model"]["deq"][0]["grad"] == "ift"
    # per-sample results: each run's mask, and per radius the worst case and the first attack that broke each sample
    clean = res["clean_correct"]
    assert len(clean) == 16 and sum(clean) == res["n_clean_correct"]
    for r in res["results"]:
        assert len(r["robust"]) == 16 and sum(r["robust"]) == r["n_correct"]
        assert not any(rb and not c for rb, c in zip(r["robust"], clean))  # robust implies clean-correct
        assert r["ci95"][0] <= r["accuracy"] <= r["ci95"][1]
    for (norm, eps), w in worst.items():
        runs = [r for r in res["results"] if (r["norm"], r["eps"]) == (norm, eps)]
        assert w["robust"] == [all(r["robust"][i] for r in runs) for i in range(16)]  # survives every attack
        for i, who in enumerate(w["broken_by"]):
            if who is None:
                assert w["robust"][i]
            elif who == "clean":
                assert not clean[i]
            else:  # the FIRST attack, in the given order, under which sample i did not survive
                first = next(r["attack"] for r in runs if not r["robust"][i])
                assert clean[i] and who == first
        assert w["ci95"][0] <= w["accuracy"] <= w["ci95"][1] and w["ci95"][1] - w["ci95"][0] > 0.1
    assert set(res["convergence"]) >= {"forward_nonconverged_fraction", "backward_nonconverged_fraction"}
    assert res["convergence"]["forward_solves"] > 0 and res["convergence"]["backward_solves"] > 0
    path = save_json(res, tmp_path / "sub" / "report.json")
    assert json.loads(path.read_text()) == json.loads(json.dumps(res))


def test_evaluate_robustness_validates_before_running(model, batch):
    x, y = batch
    with pytest.raises(ValueError, match="unknown attack 'pgdx'"):
        evaluate_robustness(model, x, y, ["pgd", "pgdx"], [0.1])
    with pytest.raises(ValueError, match="wrong scale"):
        evaluate_robustness(model, x, y, ["pgd"], [8])
    with pytest.raises(TypeError, match="unknown parameter"):
        evaluate_robustness(model, x, y, [("pgd", {"iterations": 3})], [0.1])


def test_save_json_is_atomic_and_strict(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("old")
    save_json({"a": torch.tensor(0.5), "b": (1, 2), "c": math.nan, "d": torch.arange(3)}, path)
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [1, 2], "c": "nan", "d": [0, 1, 2]}
    assert os.listdir(tmp_path) == ["r.json"]  # no temporary file left behind

    class Bad:
        def __repr__(self):
            raise RuntimeError("cannot serialise")

    with pytest.raises(RuntimeError):
        save_json({"x": Bad()}, path)
    assert json.loads(path.read_text())["a"] == 0.5  # the old file survives a failed write
    assert os.listdir(tmp_path) == ["r.json"]


def test_json_helpers_are_the_one_copy_in_io():
    from deqlib import _io

    assert save_json is _io.save_json and to_jsonable is _io.to_jsonable


def test_arguments_follow_the_validation_policy(model, batch):
    """Wrong type: TypeError; wrong value: ValueError; the message starts with the function's name (no compute)."""
    x, y = batch
    with pytest.raises(TypeError, match="^evaluate_robustness: x must be a torch.Tensor"):
        evaluate_robustness(model, x.numpy(), y, ["pgd"], [0.1])
    with pytest.raises(ValueError, match="^evaluate_robustness: batch_size"):
        evaluate_robustness(model, x, y, ["pgd"], [0.1], batch_size=0)
    with pytest.raises(TypeError, match="^check_monotone_eps: seed"):
        check_monotone_eps(model, x, y, [0.1], seed="0")
    with pytest.raises(ValueError, match="^check_large_eps: tol_samples"):
        check_large_eps(model, x, y, tol_samples=-1)
    with pytest.raises(ValueError, match="^masking_checks: y must have shape"):
        masking_checks(model, x, y[:3], 0.1)
    with pytest.raises(TypeError, match="^masking_checks: budget"):
        masking_checks(model, x, y, 0.1, budget="1")
    with pytest.raises(ValueError, match="^check_gradient_choices: max_gap"):
        check_gradient_choices(model, x, y, 0.1, max_gap=2.0)


# ---------------------------------------------------------------------------------------------------- masking checks
def test_masking_checks_tiny_budget(model, batch):
    x, y = batch
    res = masking_checks(model, x, y, 0.1, budget=0.02, seed=0)
    assert set(res["checks"]) == set(MASKING_CHECKS)
    for name, c in res["checks"].items():
        assert isinstance(c["passed"], bool), name
        assert c["name"] == name
    c = res["checks"]
    assert len(c["monotone_in_eps"]["accuracy"]) == len(c["monotone_in_eps"]["eps"]) == 5
    assert c["monotone_in_eps"]["accuracy"][0] == res["clean_accuracy"]  # eps = 0 is the clean accuracy
    assert c["large_eps"]["eps"] == 0.5 and c["large_eps"]["accuracy"] <= 0.1
    assert c["steps_and_restarts"]["steps"][0] < c["steps_and_restarts"]["steps"][1]
    assert {"accuracy_square", "accuracy_apgd_ce", "accuracy_pgd"} <= set(c["black_box"])
    acc = c["gradient_choices"]["accuracy"]
    assert {"pgd_ift", "pgd_phantom", "pgd_unroll"} <= set(acc)
    assert any(k.startswith("intermediate_") for k in acc) and any(k.startswith("ensemble_") for k in acc)
    assert c["determinism_and_gradients"]["passed"] and c["determinism_and_gradients"]["max_logit_difference"] == 0.0
    # a healthy model passes every check (each of which fails on a model built to fail it, below)
    assert res["passed"] is True and res["failed"] == [] and all(v["passed"] for v in c.values())
    json.dumps(res)


def test_masking_checks_fail_a_zero_gradient_model(model, batch):
    """Inputs rounded to 4 levels: zero input gradients. Before issue 9 it passed 3 of the 6 checks (a flat curve
    counted as monotone; steps, restarts and every gradient choice shared the zero gradient); now it fails all."""
    x, y = batch
    res = masking_checks(_Quantised(model).eval(), x, y, 0.1, budget=0.02, seed=0)
    assert res["passed"] is False and res["failed"] == list(MASKING_CHECKS)


def test_masking_checks_validate(model, batch):
    x, y = batch
    with pytest.raises(ValueError, match="unknown check"):
        masking_checks(model, x, y, 0.1, checks=["nope"])
    with pytest.raises(ValueError, match="budget"):
        masking_checks(model, x, y, 0.1, budget=0)
    only = masking_checks(model, x, y, 0.1, budget=0.02, checks=["determinism_and_gradients"])
    assert list(only["checks"]) == ["determinism_and_gradients"]


def test_checks_flag_a_masked_model(model, batch):
    """Rounded inputs: zero input gradients, PGD stuck, the large-eps accuracy far from 0."""
    x, y = batch
    masked = _Quantised(model).eval()
    det = check_determinism_gradients(masked, x, y)
    assert not det["passed"] and det["gradients"]["model"]["n_zero"] == x.shape[0]
    big = check_large_eps(masked, x, y, steps=5)
    # PGD's signed steps are 0: only its random start can fool the model, even at L-infinity eps 0.5
    assert not big["passed"] and big["accuracy"] >= 0.5
    assert check_large_eps(model, x, y, steps=5)["passed"]
    noisy = check_determinism_gradients(_Noisy(model).eval(), x, y)
    assert not noisy["deterministic"] and not noisy["passed"]


def test_black_box_check_catches_masking(model, batch):
    x, y = batch
    masked = _Quantised(model).eval()
    res = check_black_box(masked, x, y, 0.3, n_queries=60, apgd_steps=3, pgd_steps=3)
    assert res["accuracy_square"] < res["accuracy_white_box"] and not res["passed"]
    assert res["n_broken_only_by_square"] > 0


def test_monotone_and_gradient_checks_report_numbers(model, batch):
    x, y = batch
    mono = check_monotone_eps(model, x, y, [0.2, 0.0, 0.1], steps=2)
    assert mono["eps"] == [0.0, 0.1, 0.2] and mono["passed"]
    assert mono["accuracy"][0] == mono["noise_accuracy"][0] == 1.0 and mono["accuracy"][2] < mono["noise_accuracy"][2]
    grads = check_gradient_choices(model, x, y, 0.1, steps=3, state_indices=(2,), phantom_steps=2)
    assert set(grads["accuracy"]) == {"pgd_ift", "pgd_phantom", "pgd_unroll", "intermediate_2"}
    # a healthy DEQ: the three gradients agree (gap 0 at this budget), and each raises the loss above the random start
    assert grads["passed"] and grads["gaps"] == {"ift": 0.0, "phantom": 0.0, "unroll": 0.0}
    assert all(grads["loss"][f"pgd_{g}"] > 5 * grads["loss_random_start"] for g in ("ift", "phantom", "unroll"))
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    skipped = check_gradient_choices(plain, x, y, 0.1)
    assert skipped["passed"] is None and "no DEQ" in skipped["skipped"]


def test_monotone_check_fails_a_flat_curve(model, batch):
    """Zero input gradients: PGD's accuracy only follows the random noise it starts from — monotone, but flat."""
    x, y = batch
    res = check_monotone_eps(_Quantised(model).eval(), x, y, [0.0, 0.05, 0.1, 0.2], steps=3)
    assert res["monotone"] and not res["beats_noise"] and res["passed"] is False
    assert res["accuracy"] == res["noise_accuracy"] and res["max_gain_over_noise"] == 0.0
    # too small a sweep is flat for a healthy model too: no evidence that the attack works
    assert check_monotone_eps(model, x, y, [0.0, 0.001], steps=3)["passed"] is False


def test_steps_restarts_check_can_fail(model, batch):
    """Zero input gradients at eps 0.3: the gradient steps leave the loss of the random start unchanged, and which
    samples fall depends on the random start only (restarts gain far more than a working attack's)."""
    x, y = batch
    healthy = check_steps_restarts(model, x, y, 0.1, steps=(2, 4), restarts=4)
    assert healthy["passed"] and healthy["progress_passed"] and healthy["restarts_passed"]
    assert healthy["loss_steps"][0] > 5 * healthy["loss_random_start"] and healthy["restart_gain"] <= 1 / 16
    masked = check_steps_restarts(_Quantised(model).eval(), x, y, 0.3, steps=(2, 4), restarts=4)
    assert masked["passed"] is False and masked["steps_passed"]  # more steps do not help the model: not the issue
    assert not masked["progress_passed"] and masked["loss_steps"] == [masked["loss_random_start"]] * 2
    assert not masked["restarts_passed"] and masked["restart_gain"] >= 3 / 16


def test_gradient_choices_check_can_fail(model, batch):
    """A DEQ whose phantom gradient points downhill (IFT and unrolled fine: the old check, comparing with the IFT
    gradient only, passed it), and a model with zero input gradients (all three choices equally useless)."""
    x, y = batch
    kw = dict(steps=3, state_indices=(2,), phantom_steps=2)
    wrong = check_gradient_choices(_WrongPhantom(model).eval(), x, y, 0.1, **kw)
    assert wrong["passed"] is False and not wrong["gaps_passed"] and wrong["weakest_gradient"] == "phantom"
    assert wrong["gaps"]["phantom"] >= 0.25 and wrong["gaps"]["ift"] == wrong["gaps"]["unroll"] == 0.0
    assert wrong["informative"] == {"ift": True, "phantom": False, "unroll": True}
    zero = check_gradient_choices(_Quantised(model).eval(), x, y, 0.1, **kw)
    assert zero["passed"] is False and zero["gaps_passed"]  # all equally bad: no gap to see
    assert zero["informative"] == {"ift": False, "phantom": False, "unroll": False}


def test_gradient_probe_fails_a_tiny_nonzero_gradient(model, batch):
    """A gradient of norm ~1e-14 is nonzero (the old check passed it) but cannot move a logit: the uphill probe,
    one grey level along its sign, raises the margin of about as many samples as a random direction would."""
    x, y = batch
    res = check_determinism_gradients(_TinyGradient(model).eval(), x, y)
    g = res["gradients"]["model"]
    assert res["deterministic"] and g["finite"] and g["n_zero"] == 0 and 0 < g["min_norm"] < 1e-12
    assert g["uphill_fraction"] < 0.5 and res["passed"] is False
    healthy = check_determinism_gradients(model, x, y)
    assert healthy["passed"] and all(v["uphill_fraction"] == 1.0 for v in healthy["gradients"].values())


# ---------------------------------------------------------------------------------------------------- issue 16: bad input
_X, _Y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
_PGD1 = [("pgd", {"steps": 1})]
_BAD_LABELS = [
    (torch.tensor([0, 1, 2, 10]), ValueError, r"y must be class indices in \[0, 10\) \(num_classes = 10\)"),
    (torch.tensor([0, -100, 2, 3]), ValueError, r"-100, torch's ignore index, is not supported"),
    (torch.tensor([0.0, 1.5, 2.0, 3.0]), TypeError, r"y must be integer class labels \(int64\), got torch.float32"),
]
_LABEL_IDS = ["label 10 of 10 classes", "label -100", "float labels"]


def test_evaluate_robustness_eps_list_must_be_a_sequence():
    """Before issue 16 the string "0.1" was iterated: "eps must be a real number, got str '0'"."""
    with pytest.raises(TypeError, match=r"^evaluate_robustness: eps_list must be a sequence of radii .* got str '0.1'"):
        evaluate_robustness(LinearClassifier(), _X, _Y, _PGD1, "0.1")
    with pytest.raises(TypeError, match="^check_monotone_eps: eps_list must be a sequence of radii"):
        check_monotone_eps(LinearClassifier(), _X, _Y, "0.1")
    with pytest.raises(TypeError, match="^evaluate_robustness: attacks must be a name, a .name, params. pair"):
        evaluate_robustness(LinearClassifier(), _X, _Y, 5, [0.1])
    with pytest.raises(TypeError, match="^evaluate_robustness: attack spec .* the parameters must be a dict"):
        evaluate_robustness(LinearClassifier(), _X, _Y, [("pgd", "steps=1")], [0.1])


@pytest.mark.parametrize("labels, error, match", _BAD_LABELS, ids=_LABEL_IDS)
def test_evaluations_check_the_labels(labels, error, match):
    """Before issue 16: a raw IndexError, or (-100; floats truncated by .long()) a silent number."""
    model = LinearClassifier()
    with pytest.raises(error, match="^evaluate_robustness: .*" + match):
        evaluate_robustness(model, _X, labels, _PGD1, [0.1])
    with pytest.raises(error, match=match):
        masking_checks(model, _X, labels, 0.1, budget=0.01)
    with pytest.raises(error, match="^check_determinism_gradients: .*" + match):
        check_determinism_gradients(model, _X, labels)


@pytest.mark.parametrize("shape, got", [("flat", r"\(40,\)"), ("3d", r"\(4, 10, 1\)"), ("batch", r"\(1, 10\)")])
def test_evaluations_check_the_logits(shape, got):
    pattern = rf"the model must return logits of shape \(N, num_classes\) = \(4, C\) with C >= 2, got {got}"
    with pytest.raises(ValueError, match="^evaluate_robustness: " + pattern):
        evaluate_robustness(LinearClassifier(shape), _X, _Y, _PGD1, [0.1])
    with pytest.raises(ValueError, match=pattern):
        masking_checks(LinearClassifier(shape), _X, _Y, 0.1, budget=0.01)


def test_masking_checks_refuse_what_evaluate_robustness_refuses():
    """Negative tol_samples / max_gap / seed: refused, as evaluate_robustness refuses a negative seed."""
    model = LinearClassifier()
    with pytest.raises(ValueError, match="^masking_checks: tol_samples must be an int >= 0, got -1"):
        masking_checks(model, _X, _Y, 0.1, tol_samples=-1)
    with pytest.raises(ValueError, match="^masking_checks: max_gap must be a finite number >= 0"):
        masking_checks(model, _X, _Y, 0.1, max_gap=-0.1)
    for fn in (masking_checks, evaluate_robustness):
        args = (0.1,) if fn is masking_checks else (_PGD1, [0.1])
        with pytest.raises(ValueError, match=f"^{fn.__name__}: seed must be an int >= 0"):
            fn(model, _X, _Y, *args, seed=-1)
    with pytest.raises(
        TypeError, match=r"^masking_checks: checks must be a sequence of check names such as \['large_eps'\]"
    ):
        masking_checks(model, _X, _Y, 0.1, checks="large_eps")  # was: "unknown check(s) ['_', 'a', 'e', ...]"
    with pytest.raises(TypeError, match=r"^check_steps_restarts: steps must be a pair \(fewer, more\)"):
        check_steps_restarts(model, _X, _Y, 0.1, steps=10)
    with pytest.raises(ValueError, match="^check_steps_restarts: steps must be .fewer, more. with fewer < more"):
        check_steps_restarts(model, _X, _Y, 0.1, steps=(50, 10))
    with pytest.raises(ValueError, match=r"^check_large_eps: pixels must be in \[0, 1\]"):
        check_large_eps(model, _X * 255, _Y)
    with pytest.raises(TypeError, match="^masking_checks: model must be a torch.nn.Module"):
        masking_checks(object(), _X, _Y, 0.1)


def test_gradient_choices_state_indices_must_be_a_sequence(model, batch):
    x, y = batch
    with pytest.raises(TypeError, match="^check_gradient_choices: state_indices must be None or a sequence of ints"):
        check_gradient_choices(model, x, y, 0.1, state_indices=3)
    with pytest.raises(ValueError, match="^check_gradient_choices: state_indices must list at least one"):
        check_gradient_choices(model, x, y, 0.1, state_indices=[])


# ---------------------------------------------------------------------------------------------------- chapter 5
def test_masked_demo_fails_every_check_and_the_real_model_passes(model, batch):
    """The library's deliberately masked model (chapter 5's demo): every check flags it; its BPDA twin computes the
    same function, has working gradients, and breaks digits that PGD on the masked model cannot."""
    x, y = batch
    masked = QuantisedInput(model, levels=4).eval()
    res = masking_checks(masked, x, y, 0.1, budget=0.02, seed=0)
    assert res["passed"] is False and res["failed"] == list(MASKING_CHECKS)
    assert masking_checks(model, x, y, 0.1, budget=0.02, seed=0)["passed"] is True
    bpda = QuantisedInput(model, levels=4, straight_through=True).eval()
    assert torch.equal(bpda(x), masked(x))
    assert check_determinism_gradients(bpda, x, y)["gradients"]["model"]["n_zero"] == 0
    pgd_masked = robust_accuracy(masked, pgd(masked, 0.3, steps=5), (x, y))
    pgd_bpda = robust_accuracy(masked, TransferAttack(masked, pgd(bpda, 0.3, steps=5)), (x, y))
    assert pgd_bpda["accuracy"] < pgd_masked["accuracy"] - 0.25


def test_masked_demo_validates():
    with pytest.raises(ValueError, match="QuantisedInput: levels must be an int >= 2"):
        QuantisedInput(LinearClassifier(), levels=1)
    with pytest.raises(TypeError, match="QuantisedInput: model must be a torch.nn.Module"):
        QuantisedInput(object())
    with pytest.raises(TypeError, match="straight_through"):
        QuantisedInput(LinearClassifier(), straight_through="yes")
    q = QuantisedInput(LinearClassifier(), levels=3)
    assert torch.equal(q.quantise(torch.tensor([0.0, 0.2, 0.3, 0.8, 1.0])), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))


def test_masking_rows_give_a_verdict_and_the_numbers_for_each_check(model, batch):
    x, y = batch
    res = masking_checks(QuantisedInput(model).eval(), x, y, 0.1, budget=0.02, seed=0)
    rows = masking_rows(res)
    assert [r["check"] for r in rows] == list(MASKING_CHECKS)
    assert all(r["verdict"] == "FAIL" for r in rows)
    by = {r["check"]: r["evidence"] for r in rows}
    assert f"Square {res['checks']['black_box']['accuracy_square']:.2f}" in by["black_box"]
    assert "16 zero gradients" in by["determinism_and_gradients"]
    assert "at eps 0.5" in by["large_eps"]
    plain = masking_checks(LinearClassifier(), _X, _Y, 0.1, budget=0.01, checks=["gradient_choices"])
    assert masking_rows(plain)[0]["verdict"] == "does not apply"
    with pytest.raises(TypeError, match="masking_checks returned"):
        masking_rows({"passed": True})


def test_broken_by_counts_and_paired_rows():
    counts = broken_by_counts(["square", None, "clean", "apgd_ce", None], ["apgd_ce", "apgd_t"])
    assert list(counts) == ["clean", "apgd_ce", "apgd_t", "square", "robust"]
    assert counts == {"clean": 1, "apgd_ce": 1, "apgd_t": 0, "square": 1, "robust": 2}
    assert "robust" not in broken_by_counts([None], robust=False)
    with pytest.raises(TypeError, match="attack name or None"):
        broken_by_counts([1, None])
    a = torch.tensor([True] * 10 + [False] * 10)
    b = torch.tensor([True] * 2 + [False] * 18)
    rows = paired_rows({"weak": a, "strong": b}, "strong")
    assert rows[1] == {"attack": "strong", "robust_accuracy": 0.1, "ci95": list(wilson_interval(2, 20))}
    assert rows[0]["only_reference_broke"] == 8 and rows[0]["only_this_broke"] == 0
    assert rows[0]["p_value"] == pytest.approx(2 / 2**8)
    with pytest.raises(ValueError, match="the reference 'x' is not among"):
        paired_rows({"weak": a}, "x")
    with pytest.raises(ValueError, match="same samples"):
        paired_rows({"weak": a, "short": b[:5]}, "weak")
    with pytest.raises(ValueError, match="mask of booleans"):
        paired_rows({"w": [1, 0]}, "w")
