"""Tests for deqlib.evaluate.statistics against values computed by hand and by scipy (an independent implementation)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from deqlib.evaluate import MIN_SEEDS, mcnemar, paired_bootstrap, seed_summary, wilson_interval

Z95 = 1.959963984540054  # the 97.5 % normal quantile


# ---------------------------------------------------------------------------------------------------- Wilson
def test_wilson_at_the_ends_is_the_closed_form():
    """k = 0: [0, z²/(n + z²)]; k = n: [n/(n + z²), 1] (by hand from the Wilson formula)."""
    for n in (1, 10, 500):
        upper = Z95**2 / (n + Z95**2)
        assert wilson_interval(0, n) == (0.0, pytest.approx(upper, abs=1e-12))
        assert wilson_interval(n, n) == (pytest.approx(1 - upper, abs=1e-12), 1.0)
    assert wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)  # the textbook value for 0 / 10


@pytest.mark.parametrize("k,n", [(1, 10), (8, 10), (45, 100), (81, 263), (3, 7), (499, 500)])
@pytest.mark.parametrize("confidence", [0.95, 0.99, 0.8])
def test_wilson_matches_scipy(k, n, confidence):
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    lo, hi = wilson_interval(k, n, confidence)
    assert lo == pytest.approx(ci.low, abs=1e-10) and hi == pytest.approx(ci.high, abs=1e-10)
    assert lo < k / n < hi


def test_wilson_by_hand():
    """8 of 10 by hand: p = 0.8, z² = 3.8415; centre (0.8 + z²/20) / (1 + z²/10) = 0.71674, half-width
    z sqrt(0.016 + z²/400) / (1 + z²/10) = 1.96 * 0.16 / 1.38415 = 0.22656 -> (0.4902, 0.9433); the normal
    (Wald) interval 0.8 ± 0.2479 would end above 1 at 9 of 10 — Wilson never leaves [0, 1]."""
    lo, hi = wilson_interval(8, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)
    assert wilson_interval(9, 10)[1] < 1.0


def test_wilson_validates():
    with pytest.raises(ValueError, match="^wilson_interval: k must be an int >= 0 and <= 10"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="^wilson_interval: n"):
        wilson_interval(0, 0)
    with pytest.raises(TypeError, match="^wilson_interval: k must be an int"):
        wilson_interval(True, 10)
    with pytest.raises(ValueError, match="^wilson_interval: confidence"):
        wilson_interval(1, 10, confidence=1.0)


# ---------------------------------------------------------------------------------------------------- McNemar
def _masks(a_only, b_only, both, neither):
    a = [True] * a_only + [False] * b_only + [True] * both + [False] * neither
    b = [False] * a_only + [True] * b_only + [True] * both + [False] * neither
    return a, b


def test_mcnemar_small_table_by_hand():
    """6 discordant pairs for A, 1 for B: p = 2 (C(7,0) + C(7,1)) / 2^7 = 16 / 128 = 0.125."""
    a, b = _masks(6, 1, 10, 3)
    r = mcnemar(a, b)
    assert (r["a_only"], r["b_only"], r["both"], r["neither"], r["n"]) == (6, 1, 10, 3, 20)
    assert r["p_value"] == pytest.approx(0.125, abs=1e-15)
    assert r["difference"] == pytest.approx(5 / 20) and r["accuracy_a"] == pytest.approx(16 / 20)
    flipped = mcnemar(b, a)
    assert flipped["p_value"] == r["p_value"] and flipped["difference"] == -r["difference"]
    json.dumps(r)


@pytest.mark.parametrize("a_only,b_only", [(0, 5), (3, 3), (10, 2), (17, 30), (0, 0), (1, 0), (60, 40)])
def test_mcnemar_matches_scipy_binomtest(a_only, b_only):
    a, b = _masks(a_only, b_only, 7, 4)
    p = mcnemar(torch.tensor(a), np.array(b))["p_value"]
    expected = 1.0 if a_only + b_only == 0 else stats.binomtest(a_only, a_only + b_only, 0.5).pvalue
    assert p == pytest.approx(expected, rel=1e-10, abs=1e-15)


def test_mcnemar_ignores_the_concordant_samples():
    """Only the discordant pairs matter: adding samples both models get right (or wrong) leaves p unchanged."""
    assert mcnemar(*_masks(9, 2, 0, 0))["p_value"] == mcnemar(*_masks(9, 2, 500, 300))["p_value"]


def test_mcnemar_validates():
    with pytest.raises(ValueError, match="^mcnemar: the masks must cover the same samples"):
        mcnemar([True, False], [True])
    with pytest.raises(TypeError, match="^mcnemar: mask_a must hold booleans"):
        mcnemar([1, 0], [True, False])
    with pytest.raises(ValueError, match="^mcnemar: mask_b must be a non-empty 1-D"):
        mcnemar([True], [[True]])


# ---------------------------------------------------------------------------------------------------- bootstrap
def test_paired_bootstrap_identical_masks():
    a = [True, False, True, True, False] * 8
    r = paired_bootstrap(a, a)
    assert r["difference"] == 0.0 and r["interval"] == [0.0, 0.0] and r["p_value"] == 1.0


def test_paired_bootstrap_agrees_with_the_normal_approximation():
    """n = 400 paired samples: the percentile interval is close to d ± z sd(d_i) / sqrt(n)."""
    rng = np.random.default_rng(1)
    a = rng.random(400) < 0.6
    b = np.where(rng.random(400) < 0.8, a, ~a)  # B agrees with A on ~80 % of the samples
    d = a.astype(float) - b.astype(float)
    se = d.std(ddof=0) / math.sqrt(d.size)
    r = paired_bootstrap(a, b, n_resamples=20000, seed=3)
    assert r["difference"] == pytest.approx(d.mean())
    assert r["interval"][0] == pytest.approx(d.mean() - Z95 * se, abs=0.15 * se + 1 / 400)
    assert r["interval"][1] == pytest.approx(d.mean() + Z95 * se, abs=0.15 * se + 1 / 400)


def test_paired_bootstrap_matches_resampling_indices():
    """The multinomial shortcut has the distribution of resampling sample indices (brute force here)."""
    rng = np.random.default_rng(0)
    a, b = rng.random(60) < 0.7, rng.random(60) < 0.5
    d = a.astype(float) - b.astype(float)
    brute = d[rng.integers(0, 60, size=(20000, 60))].mean(1)
    r = paired_bootstrap(a, b, n_resamples=20000, seed=5)
    lo, hi = np.quantile(brute, [0.025, 0.975])
    assert r["interval"][0] == pytest.approx(lo, abs=1.5 / 60) and r["interval"][1] == pytest.approx(hi, abs=1.5 / 60)


def test_paired_bootstrap_p_value_and_seed():
    a, b = _masks(30, 5, 40, 25)
    r = paired_bootstrap(a, b, seed=0)
    assert r["interval"][0] > 0 and 0 < r["p_value"] < 0.01  # never exactly 0: (count + 1) / (n_resamples + 1)
    assert paired_bootstrap(a, b, seed=0) == r
    even = paired_bootstrap(*_masks(10, 10, 40, 40))
    assert even["difference"] == 0.0 and even["p_value"] > 0.5
    with pytest.raises(ValueError, match="^paired_bootstrap: n_resamples"):
        paired_bootstrap(a, b, n_resamples=10)


# ---------------------------------------------------------------------------------------------------- seeds
def test_seed_summary_matches_scipy():
    values = [0.61, 0.58, 0.66, 0.60]
    r = seed_summary(values)
    assert r["n_seeds"] == 4 and r["mean"] == pytest.approx(np.mean(values))
    assert r["sd"] == pytest.approx(np.std(values, ddof=1)) and r["sem"] == pytest.approx(stats.sem(values))
    lo, hi = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert r["interval"] == [pytest.approx(lo), pytest.approx(hi)]
    assert r["enough_seeds"] is True
    json.dumps(r)


def test_seed_summary_says_when_there_are_too_few_seeds():
    assert MIN_SEEDS == 3
    one = seed_summary([0.7])
    assert one["mean"] == 0.7 and one["sd"] is None and one["interval"] is None and not one["enough_seeds"]
    assert not seed_summary([0.7, 0.71])["enough_seeds"] and seed_summary([0.7, 0.71, 0.69])["enough_seeds"]
    with pytest.raises(ValueError, match="^seed_summary: give at least one value"):
        seed_summary([])
    with pytest.raises(TypeError, match="^seed_summary: values must be a sequence"):
        seed_summary(0.5)
    with pytest.raises(ValueError, match="^seed_summary: each value must be a finite number"):
        seed_summary([0.5, float("nan")])
