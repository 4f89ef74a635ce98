"""Statistics of the readouts along a DEQ's solver trajectory: is a state's entropy or accuracy different?

Taught in chapter 4. Yang et al. (ICML 2023) report that adversarial training under-regulates the intermediate
states z_k of the solver: predictions read from them (the same head on z_k, :func:`deqlib.dynamics.state_predictions`)
keep a high entropy and a low robust accuracy, and a lower entropy goes with robustness. This module turns that
into paired tests with intervals, on the same samples:

* :func:`readout_curves` — accuracy and mean entropy at every state, with 95 % intervals;
* :func:`mean_interval` — a bootstrap interval for the mean of per-sample values (or paired differences);
* :func:`entropy_auc` — how well low entropy picks out the correctly classified samples (an AUC, with interval);
* :func:`intermediate_state_tests` — the four comparisons that decide the finding for one model.
"""

from __future__ import annotations

from typing import Any, Dict

import numpy as np
from torch import Tensor

from ._validate import check_int, check_number, check_seed
from .evaluate.statistics import mcnemar, paired_bootstrap, wilson_interval

__all__ = ["readout_curves", "mean_interval", "entropy_auc", "intermediate_state_tests"]


def _values(values: Any, name: str, where: str) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().double().numpy()
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.isfinite(arr).all():
        raise ValueError(f"{where}: {name} must be a non-empty 1-D array of finite numbers, got shape {arr.shape}")
    return arr


def mean_interval(values: Any, *, n_resamples: int = 10000, confidence: float = 0.95, seed: int = 0) -> Dict[str, Any]:
    """The mean of per-sample values with a percentile-bootstrap interval (resampling the samples).

    For a paired comparison pass the per-sample differences a_i − b_i (same samples, two conditions).

    Args:
        values: (n,) numbers (tensor, array or sequence).
        n_resamples: bootstrap resamples (>= 100).
        confidence: of the interval, in (0, 1).
        seed: of the resampling.

    Returns:
        ``n``, ``mean``, ``interval`` [lo, hi], ``p_value`` (two-sided, for "the mean is 0": twice the smaller
        bootstrap tail, each counted as (count + 1) / (n_resamples + 1)), ``confidence``.

    Example:
        >>> r = mean_interval([0.9, 1.1, 1.0, 1.2, 0.8])
        >>> round(r["mean"], 2), r["interval"][0] > 0.8, r["p_value"] < 0.01
        (1.0, True, True)
    """
    where = "mean_interval"
    arr = _values(values, "values", where)
    n_resamples = check_int(n_resamples, "n_resamples", where, minimum=100)
    confidence = check_number(confidence, "confidence", where, minimum=0.0, maximum=1.0, low_open=True, high_open=True)
    rng = np.random.default_rng(check_seed(seed, where))
    boot = arr[rng.integers(0, arr.size, size=(n_resamples, arr.size))].mean(axis=1)
    lo, hi = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    tail = min(int((boot <= 0).sum()), int((boot >= 0).sum()))
    p = min(1.0, 2 * (tail + 1) / (n_resamples + 1))
    return {
        "n": int(arr.size),
        "mean": float(arr.mean()),
        "interval": [float(lo), float(hi)],
        "p_value": p,
        "confidence": confidence,
    }


def _auc(score: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + 1/2 P(tie), by ranks."""
    from scipy.stats import rankdata  # scipy is a dependency of deqlib

    ranks = rankdata(score)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def entropy_auc(
    entropies: Any, correct: Any, *, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Dict[str, Any]:
    """How well *low* entropy picks out the correctly classified samples: the AUC of −entropy, with an interval.

    0.5: entropy says nothing about being correct; 1: every correct sample has lower entropy than every wrong one.
    The interval resamples the samples (percentile bootstrap). None where one of the two groups is empty.

    Args:
        entropies: (n,) per-sample entropies.
        correct: (n,) bools (e.g. robust under an attack).

    Returns:
        ``auc``, ``interval``, ``n_correct``, ``n_wrong``, ``mean_entropy_correct``, ``mean_entropy_wrong``.

    Example:
        >>> entropy_auc([0.1, 0.2, 0.9, 1.0], [True, True, False, False])["auc"]
        1.0
    """
    where = "entropy_auc"
    h = _values(entropies, "entropies", where)
    c = np.asarray(correct.detach().cpu().numpy() if isinstance(correct, Tensor) else correct)
    if c.dtype != np.bool_ or c.shape != h.shape:
        raise ValueError(f"{where}: correct must be {h.size} booleans, got dtype {c.dtype}, shape {c.shape}")
    out: Dict[str, Any] = {"n_correct": int(c.sum()), "n_wrong": int((~c).sum()), "auc": None, "interval": None}
    out["mean_entropy_correct"] = float(h[c].mean()) if c.any() else None
    out["mean_entropy_wrong"] = float(h[~c].mean()) if (~c).any() else None
    if c.all() or not c.any():
        return out
    out["auc"] = _auc(-h, c)
    rng = np.random.default_rng(check_seed(seed, where))
    boot = []
    for _ in range(check_int(n_resamples, "n_resamples", where, minimum=100)):
        i = rng.integers(0, h.size, size=h.size)
        if c[i].any() and not c[i].all():
            boot.append(_auc(-h[i], c[i]))
    lo, hi = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    out["interval"] = [float(lo), float(hi)]
    return out


def intermediate_state_tests(clean: Dict[str, Any], adversarial: Dict[str, Any], k: int, *, seed: int = 0) -> Dict:
    """The four paired tests of Yang et al. (2023)'s finding on one model, at intermediate state k vs the final one.

    Both arguments are :func:`~deqlib.dynamics.state_predictions` results (with ``y``) of the same samples, clean and attacked.
    Writing H_k for the entropy of head(z_k) and K for the final state:

    * ``entropy_above_final``: mean of H_k(x') − H_K(x') over the attacked inputs x' (> 0 supports the finding);
    * ``entropy_above_clean``: mean of H_k(x') − H_k(x) (> 0 supports it);
    * ``accuracy_below_final``: robust accuracy at K minus at k on x' (paired bootstrap of the per-sample masks,
      and McNemar; > 0 supports it);
    * ``low_entropy_robust``: :func:`entropy_auc` of H_k(x') for being correct at K on x' (> 0.5 supports it).

    Each entry has ``holds``: its 95 % interval lies entirely on the supporting side.

    Args:
        clean, adversarial: :func:`~deqlib.dynamics.state_predictions` results with ``correct``, same samples.
        k: the intermediate state (1 <= k < K).
        seed: of the bootstrap resampling.
    """
    where = "intermediate_state_tests"
    for name, r in (("clean", clean), ("adversarial", adversarial)):
        if not isinstance(r, dict) or "entropy" not in r or "correct" not in r:
            raise TypeError(f"{where}: {name} must be a state_predictions result with y (entropy, correct)")
    if clean["entropy"].shape != adversarial["entropy"].shape:
        raise ValueError(f"{where}: clean and adversarial must cover the same samples and states")
    last = clean["entropy"].shape[0] - 1
    k = check_int(k, "k", where, minimum=1, maximum=last - 1)
    h_adv, h_cln, ok = adversarial["entropy"], clean["entropy"], adversarial["correct"]
    above_final = mean_interval(h_adv[k] - h_adv[last], seed=seed)
    above_clean = mean_interval(h_adv[k] - h_cln[k], seed=seed)
    acc = paired_bootstrap(ok[last], ok[k], seed=seed)
    acc["mcnemar_p"] = mcnemar(ok[last], ok[k])["p_value"]
    auc = entropy_auc(h_adv[k], ok[last], seed=seed)
    above_final["holds"] = above_final["interval"][0] > 0
    above_clean["holds"] = above_clean["interval"][0] > 0
    acc["holds"] = acc["interval"][0] > 0
    auc["holds"] = auc["interval"] is not None and auc["interval"][0] > 0.5
    return {
        "k": k,
        "final": last,
        "entropy_above_final": above_final,
        "entropy_above_clean": above_clean,
        "accuracy_below_final": acc,
        "low_entropy_robust": auc,
    }


def readout_curves(predictions: Dict[str, Any], *, n_resamples: int = 1000, seed: int = 0) -> Dict[str, Any]:
    """Accuracy and mean entropy of the head at every state z_0..z_K, each with a 95 % interval.

    Args:
        predictions: a :func:`deqlib.dynamics.state_predictions` result with ``y`` (``correct``, ``entropy``).
        n_resamples, seed: of the bootstrap intervals of the mean entropies.

    Returns:
        JSON-able lists over k: ``accuracy``, ``accuracy_ci95`` (Wilson), ``entropy_mean``, ``entropy_ci95``
        (bootstrap), and ``n``.
    """
    if not isinstance(predictions, dict) or "correct" not in predictions or "entropy" not in predictions:
        raise TypeError("readout_curves: predictions must be a state_predictions result with y (correct, entropy)")
    correct, ent = predictions["correct"], predictions["entropy"]
    n = int(correct.shape[1])
    hits = [int(c.sum()) for c in correct]
    return {
        "n": n,
        "accuracy": [h / n for h in hits],
        "accuracy_ci95": [list(wilson_interval(h, n)) for h in hits],
        "entropy_mean": ent.mean(dim=1).tolist(),
        "entropy_ci95": [mean_interval(h, n_resamples=n_resamples, seed=seed)["interval"] for h in ent],
    }
