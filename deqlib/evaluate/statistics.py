"""Statistics of robust accuracies: intervals, paired comparisons of two models, summaries over training seeds.

A robust accuracy measured on n samples is a proportion, with a sampling error of about sqrt(p (1 - p) / n) (2.2
points at p = 0.5, n = 500): a difference between two models smaller than that is not a finding. The rules:

- every accuracy gets a 95 % interval: :func:`wilson_interval` (the Wilson score interval, correct at k = 0 and
  k = n where the normal approximation gives an empty or out-of-range interval);
- two models compared **on the same samples** are compared per sample: :func:`mcnemar` (exact binomial test on the
  discordant pairs) or :func:`paired_bootstrap` (an interval for the difference in accuracy);
- a claim about a *training method* (not one set of weights) rests on at least three training seeds:
  :func:`seed_summary` (mean, standard deviation, Student-t interval).

Masks are per-sample booleans (True: the sample is classified correctly / survives the attack), as the reports of
:func:`deqlib.attacks.robust_accuracy`, :func:`deqlib.evaluate.evaluate_robustness` and
:func:`deqlib.evaluate.strongest_attack` keep them. Every result is JSON-able.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import torch

from .._validate import check_int, check_number, check_probability, check_seed

__all__ = ["wilson_interval", "paired_bootstrap", "mcnemar", "seed_summary", "claim_verdict", "MIN_SEEDS"]

#: The fewest training seeds on which a difference between training methods may rest.
MIN_SEEDS = 3


def _confidence(confidence: Any, where: str) -> float:
    return check_number(confidence, "confidence", where, minimum=0.0, maximum=1.0, low_open=True, high_open=True)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> Tuple[float, float]:
    """The Wilson score interval for a proportion of ``k`` successes in ``n`` trials.

    (p + z²/2n ± z sqrt(p(1 - p)/n + z²/4n²)) / (1 + z²/n), p = k / n, z the normal quantile; the lower end is 0 at
    k = 0 and the upper end 1 at k = n (exactly).

    Example:
        >>> lo, hi = wilson_interval(0, 10)
        >>> lo, round(hi, 4)
        (0.0, 0.2775)
        >>> [round(v, 4) for v in wilson_interval(8, 10)]
        [0.4902, 0.9433]
    """
    where = "wilson_interval"
    n = check_int(n, "n", where, minimum=1)
    k = check_int(k, "k", where, minimum=0, maximum=n)
    z = NormalDist().inv_cdf(0.5 + _confidence(confidence, where) / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def _mask(mask: Any, name: str, where: str) -> np.ndarray:
    """A 1-D numpy bool array from a bool tensor, array or sequence of bools."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    arr = np.asarray(mask)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{where}: {name} must be a non-empty 1-D per-sample mask, got shape {arr.shape}")
    if arr.dtype != np.bool_:
        raise TypeError(f"{where}: {name} must hold booleans (one per sample), got dtype {arr.dtype}")
    return arr


def _pair(mask_a: Any, mask_b: Any, where: str) -> Tuple[np.ndarray, np.ndarray]:
    a, b = _mask(mask_a, "mask_a", where), _mask(mask_b, "mask_b", where)
    if a.shape != b.shape:
        raise ValueError(f"{where}: the masks must cover the same samples, got {a.size} and {b.size} entries")
    return a, b


def mcnemar(mask_a: Any, mask_b: Any) -> Dict[str, Any]:
    """Exact McNemar test: do models A and B, evaluated on the same samples, have the same accuracy?

    Only the discordant samples carry information: ``a_only`` (A right, B wrong) and ``b_only``. Under the null
    hypothesis each discordant sample is A's or B's with probability 1/2, so the two-sided p-value is
    min(1, 2 P(Binomial(a_only + b_only, 1/2) <= min(a_only, b_only))); 1 when there is no discordant sample.

    Returns:
        ``n``, ``a_only``, ``b_only``, ``both`` (both right), ``neither``, ``accuracy_a``, ``accuracy_b``,
        ``difference`` (accuracy A − accuracy B), ``p_value``, ``test``.

    Example:
        >>> r = mcnemar([True] * 6 + [False] * 4, [False] * 6 + [True] * 1 + [False] * 3)
        >>> r["a_only"], r["b_only"], round(r["p_value"], 4)
        (6, 1, 0.125)
    """
    a, b = _pair(mask_a, mask_b, "mcnemar")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    m = a_only + b_only
    tail = sum(math.comb(m, i) for i in range(min(a_only, b_only) + 1))
    p = 1.0 if m == 0 else min(1.0, 2 * tail / 2**m)
    n = int(a.size)
    return {
        "n": n,
        "a_only": a_only,
        "b_only": b_only,
        "both": int((a & b).sum()),
        "neither": int((~a & ~b).sum()),
        "accuracy_a": float(a.mean()),
        "accuracy_b": float(b.mean()),
        "difference": (a_only - b_only) / n,
        "p_value": p,
        "test": "exact McNemar (two-sided binomial test on the discordant pairs)",
    }


def paired_bootstrap(
    mask_a: Any, mask_b: Any, *, n_resamples: int = 10000, confidence: float = 0.95, seed: int = 0
) -> Dict[str, Any]:
    """A paired bootstrap interval for accuracy(A) − accuracy(B) on the same samples.

    The samples are resampled with replacement (the same resample for both models, which keeps the pairing). Each
    sample's difference a_i − b_i is −1, 0 or +1, so a resample of n samples is drawn exactly as a multinomial
    count of the three kinds (the same distribution as resampling indices, in O(n_resamples) time).

    Returns:
        ``n``, ``difference`` (observed), ``interval`` ([lo, hi], percentile bootstrap), ``confidence``,
        ``p_value`` (two-sided: 2 min(P*(d <= 0), P*(d >= 0)), each P* counted as (count + 1) / (n_resamples + 1)
        so that it is never 0; capped at 1), ``n_resamples``, ``seed``.

    Example:
        >>> r = paired_bootstrap([True] * 30 + [False] * 10, [True] * 20 + [False] * 20)
        >>> r["difference"], r["interval"][0] > 0, r["p_value"] < 0.01
        (0.25, True, True)
    """
    where = "paired_bootstrap"
    a, b = _pair(mask_a, mask_b, where)
    n_resamples = check_int(n_resamples, "n_resamples", where, minimum=100)
    confidence = _confidence(confidence, where)
    seed = check_seed(seed, where)
    n = int(a.size)
    d = a.astype(np.int64) - b.astype(np.int64)
    probs = np.array([(d == 1).sum(), (d == 0).sum(), (d == -1).sum()], dtype=np.float64) / n
    counts = np.random.default_rng(seed).multinomial(n, probs, size=n_resamples)
    boot = (counts[:, 0] - counts[:, 2]) / n
    alpha = 1 - confidence
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    tail = min(int((boot <= 0).sum()), int((boot >= 0).sum()))
    p = min(1.0, 2 * (tail + 1) / (n_resamples + 1))
    return {
        "n": n,
        "difference": float(d.mean()),
        "interval": [float(lo), float(hi)],
        "confidence": confidence,
        "p_value": p,
        "n_resamples": n_resamples,
        "seed": seed,
    }


def seed_summary(values: Sequence[float], confidence: float = 0.95) -> Dict[str, Any]:
    """Mean, standard deviation and a Student-t interval of a quantity over training seeds.

    ``enough_seeds`` says whether there are at least :data:`MIN_SEEDS` (3) values: a difference between training
    methods needs that many. With one value, ``sd``, ``sem`` and ``interval`` are None.

    Example:
        >>> r = seed_summary([0.50, 0.52, 0.54])
        >>> round(r["mean"], 4), round(r["sd"], 4), [round(v, 4) for v in r["interval"]], r["enough_seeds"]
        (0.52, 0.02, [0.4703, 0.5697], True)
    """
    where = "seed_summary"
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{where}: values must be a sequence of numbers, got {type(values).__name__}")
    vals: List[float] = [check_number(v, "each value", where) for v in values]
    if not vals:
        raise ValueError(f"{where}: give at least one value")
    confidence = _confidence(confidence, where)
    k = len(vals)
    mean = sum(vals) / k
    out: Dict[str, Any] = {"n_seeds": k, "values": vals, "mean": mean, "sd": None, "sem": None, "interval": None}
    if k > 1:
        from scipy.stats import t  # scipy is a dependency of deqlib (requirements.txt); imported where it is needed

        sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (k - 1))
        sem = sd / math.sqrt(k)
        half = float(t.ppf(0.5 + confidence / 2, k - 1)) * sem
        out.update(sd=sd, sem=sem, interval=[mean - half, mean + half])
    out.update(confidence=confidence, enough_seeds=k >= MIN_SEEDS)
    return out


def claim_verdict(tests: Sequence[Mapping[str, Any]], alpha: float = 0.05) -> str:
    """The verdict on "A beats B" from one paired test per training seed (:func:`mcnemar` results, A first).

    ``"reproduced"``: A is better with ``p < alpha`` for every one of at least :data:`MIN_SEEDS` seeds;
    ``"not reproduced"``: for none of them; ``"mixed"`` otherwise. With fewer seeds there is no verdict, only a
    screen: ``"screen only (n seed(s)): better"`` / ``"worse"`` (significant, every seed) or
    ``"no significant difference"``; ``"not run"`` without any test.

    Example:
        >>> t = {"difference": 0.1, "p_value": 0.01}
        >>> claim_verdict([t, t, t]), claim_verdict([t])
        ('reproduced', 'screen only (1 seed(s)): better')
    """
    alpha = check_probability(alpha, "alpha", "claim_verdict")
    better = [t["difference"] > 0 and t["p_value"] < alpha for t in tests]
    worse = [t["difference"] < 0 and t["p_value"] < alpha for t in tests]
    if not better:
        return "not run"
    if len(better) < MIN_SEEDS:
        kind = "better" if all(better) else "worse" if all(worse) else "no significant difference"
        return f"screen only ({len(better)} seed(s)): {kind}"
    return "reproduced" if all(better) else "not reproduced" if not any(better) else "mixed"
