"""Tests for deqlib.evaluate.strongest_attack, the strongest-attack battery (tiny budgets, 8x8 digits)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from _broken_logits import LinearClassifier
from _digits_deq import trained_mlp
from torch import nn

from deqlib.attacks import AUTOATTACK_STANDARD, pgd
from deqlib.data import load
from deqlib.evaluate import PRESETS, strongest_attack, wilson_interval

TINY = {"apgd_steps": 5, "fab_steps": 5, "square_queries": 30, "pgd_steps": 5, "n_target_classes": 2}


@pytest.fixture(scope="module")
def model():
    return trained_mlp()


@pytest.fixture(scope="module")
def batch():
    return load("digits", "test").subset(16, seed=2).tensors()


class _Saturated(nn.Module):
    """Logits times 1e4: the cross-entropy is exactly 0 at every confidently classified sample, and so is its
    gradient; APGD-CE cannot move, APGD-T (DLR loss, scale-free) can."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return 1e4 * self.inner(x)


class _StraightThrough(nn.Module):
    """The rounded model's values with the inner model's gradient at the rounded point (BPDA)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x + (torch.round(x * 3) / 3 - x).detach())


class _Declares(nn.Module):
    """Rounded inputs (zero input gradient) that declare their adaptive attack, BPDA, as the contract says."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = []

    def forward(self, x):
        return self.inner(torch.round(x * 3) / 3)

    def adaptive_attacks(self, eps, *, norm="Linf", preset="reduced", seed=0):
        self.calls.append((eps, norm, preset, seed))
        return {"bpda": pgd(_StraightThrough(self.inner), eps, steps=10, norm=norm)}


def _check_radius(res, key):
    """Invariants of one radius of a battery report; returns it."""
    n, clean = res["n"], res["clean_correct"]
    r = res["eps"][key]
    assert len(r["robust"]) == len(r["broken_by"]) == n
    assert r["robust_accuracy"] == sum(r["robust"]) / n == r["n_robust"] / n
    assert r["ci95"] == list(wilson_interval(r["n_robust"], n))
    for i in range(n):
        # robust <=> broken by nobody; "clean" <=> misclassified without attack; else an attack of the battery
        assert (r["broken_by"][i] is None) == r["robust"][i]
        assert (r["broken_by"][i] == "clean") == (not clean[i])
        assert r["broken_by"][i] in (None, "clean", *r["attacks"])
    assert list(r["per_attack"]) == r["attacks"]
    counts = Counter(r["broken_by"])
    before = sum(clean)
    for name in r["attacks"]:
        a = r["per_attack"][name]
        assert a["n_broken"] == counts[name]  # the first attack (in battery order) that broke the sample
        assert a["robust_accuracy"] == (before - a["n_broken"]) / n  # cumulative worst case
        if not res["independent"]:
            assert a["n_attacked"] == before  # each attack runs only on the samples still robust
        before -= a["n_broken"]
    assert before == r["n_robust"]
    return r


def test_battery_report(model, batch):
    x, y = batch
    res = strongest_attack(model, x, y, [0.0, 0.1], budgets=TINY, seed=0, batch_size=8)
    json.dumps(res)
    assert res["preset"] == "reduced" and res["reduced"] is True and res["n"] == 16
    assert res["budgets"]["apgd_steps"] == 5 and res["budgets"]["restarts"] == PRESETS["reduced"]["restarts"]
    assert res["clean_accuracy"] == sum(res["clean_correct"]) / 16 >= 0.8
    assert res["clean_ci95"] == list(wilson_interval(sum(res["clean_correct"]), 16))
    zero = _check_radius(res, "0.0")
    assert zero["robust"] == res["clean_correct"] and zero["attacks"] == []
    r = _check_radius(res, "0.1")
    assert r["attacks"][:7] == ["apgd_ce", "apgd_t", "fab_t", "square", "pgd_ift", "pgd_phantom", "pgd_unroll"]
    assert any(a.startswith("intermediate_") for a in r["attacks"]) and r["attacks"][-1].startswith("ensemble_")
    assert 0 < r["robust_accuracy"] < res["clean_accuracy"]
    assert r["per_attack"]["pgd_ift"]["params"]["gradient"] == "ift" and r["per_attack"]["pgd_ift"]["restarts"] == 1
    conv = r["convergence"]
    assert conv["forward_solves"] > 0 and conv["backward_solves"] > 0
    assert 0.0 <= conv["forward_nonconverged_fraction"] <= 1.0
    assert res["model"]["deq"][0]["grad"] == "ift" and model.deq.grad == "ift"


def test_battery_later_attacks_break_what_apgd_ce_cannot(model, batch):
    """A saturated cross-entropy stops APGD-CE; the sample is then broken by a later attack and named so. With
    ``independent`` every attack runs on every clean-correct sample, and the worst case is at most each one's own."""
    x, y = batch
    sat = _Saturated(model).eval()
    res = strongest_attack(sat, x, y, [0.15], budgets=TINY, independent=True)
    r = _check_radius(res, "0.15")
    assert r["per_attack"]["apgd_ce"]["own_robust_accuracy"] >= res["clean_accuracy"] - 2 / 16
    assert r["per_attack"]["apgd_t"]["n_broken"] >= 5
    assert all(a["n_attacked"] == sum(res["clean_correct"]) for a in r["per_attack"].values())
    assert r["robust_accuracy"] <= min(a["own_robust_accuracy"] for a in r["per_attack"].values())


def test_battery_runs_the_attacks_the_model_declares(model, batch):
    x, y = batch
    declares = _Declares(model).eval()
    res = strongest_attack(declares, x, y, [0.2], budgets=TINY, seed=3)
    assert declares.calls == [(0.2, "Linf", "reduced", 3)]
    r = _check_radius(res, "0.2")
    assert r["attacks"][-1] == "adaptive:bpda" and "intermediate_1" not in r["attacks"]  # no solver states exposed
    for name in ("apgd_ce", "apgd_t", "fab_t", "pgd_ift", "pgd_phantom", "pgd_unroll"):
        assert r["per_attack"][name]["n_broken"] <= 1, name  # zero gradient: only their random starts can help
    assert r["per_attack"]["adaptive:bpda"]["n_broken"] >= 5
    assert r["per_attack"]["adaptive:bpda"]["params"]["steps"] == 10

    class Bad(_Declares):
        def adaptive_attacks(self, eps, **kw):
            return [pgd(self.inner, eps)]

    with pytest.raises(TypeError, match="^strongest_attack: Bad.adaptive_attacks must return a dict"):
        strongest_attack(Bad(model).eval(), x, y, [0.1], budgets=TINY)


def test_full_preset_is_the_strong_one(model, batch):
    """The full preset: AutoAttack standard (official parameters), PGD 100 steps and 5 restarts. At eps 0.5
    APGD-CE breaks every sample, so the later attacks are built (and recorded) but run on nothing."""
    assert PRESETS["full"]["pgd_steps"] >= 100 and PRESETS["full"]["restarts"] >= 5
    x, y = batch
    res = strongest_attack(model, x[:6], y[:6], [0.5], preset="full")
    assert res["reduced"] is False and res["preset"] == "full"
    r = res["eps"]["0.5"]
    pa = r["per_attack"]
    std = AUTOATTACK_STANDARD
    assert pa["apgd_ce"]["params"]["steps"] == std["apgd_ce"]["steps"] == 100
    assert pa["apgd_t"]["params"]["n_target_classes"] == 9 and pa["fab_t"]["params"]["n_target_classes"] == 9
    assert pa["square"]["params"]["n_queries"] == 5000 and pa["square"]["params"]["resc_schedule"] is False
    assert pa["pgd_ift"]["params"]["steps"] == 100 and pa["pgd_ift"]["restarts"] == 5
    assert r["robust_accuracy"] == 0.0 and pa["apgd_t"]["n_attacked"] == 0
    # any override makes it reduced; the model's own attacks are asked for with the preset's name
    declares = _Declares(model).eval()
    res = strongest_attack(declares, x[:4], y[:4], [0.2], preset="full", budgets=TINY)
    assert res["reduced"] is True and declares.calls == [(0.2, "Linf", "full", 0)]


def test_battery_validates(model, batch):
    x, y = batch
    with pytest.raises(ValueError, match="^strongest_attack: unknown preset .big."):
        strongest_attack(model, x, y, [0.1], preset="big")
    with pytest.raises(TypeError, match=r"^strongest_attack: unknown budget\(s\) \['steps'\]"):
        strongest_attack(model, x, y, [0.1], budgets={"steps": 3})
    with pytest.raises(ValueError, match="^strongest_attack: eps_list lists a radius twice"):
        strongest_attack(model, x, y, [0.1, 0.1])
    with pytest.raises(ValueError, match="wrong scale"):
        strongest_attack(model, x, y, [8])
    with pytest.raises(TypeError, match="^strongest_attack: model must be a torch.nn.Module"):
        strongest_attack(lambda t: t, x, y, [0.1])
    with pytest.raises(ValueError, match="^strongest_attack: y must have shape"):
        strongest_attack(model, x, y[:3], [0.1])


# ---------------------------------------------------------------------------------------------------- issue 16: bad input
_X, _Y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
_TINY = {"apgd_steps": 1, "fab_steps": 1, "square_queries": 2, "pgd_steps": 1, "n_target_classes": 1}


@pytest.mark.parametrize(
    "labels, error, match",
    [
        (torch.tensor([0, 1, 2, 10]), ValueError, r"y must be class indices in \[0, 10\) \(num_classes = 10\)"),
        (torch.tensor([0, -100, 2, 3]), ValueError, r"-100, torch's ignore index, is not supported"),
        (torch.tensor([0.0, 1.5, 2.0, 3.0]), TypeError, r"y must be integer class labels \(int64\)"),
    ],
    ids=["label 10 of 10 classes", "label -100", "float labels"],
)
def test_battery_checks_the_labels(labels, error, match):
    """Before issue 16 all three ran the battery and reported a number (label 10 counted as misclassified)."""
    with pytest.raises(error, match="^strongest_attack: .*" + match):
        strongest_attack(LinearClassifier(), _X, labels, [0.1], budgets=_TINY)


@pytest.mark.parametrize("shape, got", [("flat", r"\(40,\)"), ("3d", r"\(4, 10, 1\)"), ("batch", r"\(1, 10\)")])
def test_battery_checks_the_logits(shape, got):
    """Before issue 16: IndexError (flat), a shape error inside torchattacks (3-D), or a silent report (one row of
    logits broadcast against every label)."""
    pattern = rf"^strongest_attack: the model must return logits of shape \(N, num_classes\) = \(4, C\) .* got {got}"
    with pytest.raises(ValueError, match=pattern):
        strongest_attack(LinearClassifier(shape), _X, _Y, [0.1], budgets=_TINY)


def test_battery_eps_list_and_state_indices_are_checked():
    with pytest.raises(TypeError, match=r"^strongest_attack: eps_list must be a sequence of radii .* got str '0.1'"):
        strongest_attack(LinearClassifier(), _X, _Y, "0.1")
    with pytest.raises(
        TypeError, match="^strongest_attack: state_indices must be None or a sequence of ints, got int 3"
    ):
        strongest_attack(LinearClassifier(), _X, _Y, [0.1], budgets={"state_indices": 3})
