"""Gradient-masking checks: is a robust accuracy measured by attacks that work as attacks should?

They follow Carlini et al. 2019 ("On Evaluating Adversarial Robustness") and the sanity checks of AutoAttack.
Each returns a dict with ``passed`` (True / False, or None when it does not apply) and the numbers behind the
verdict; :func:`masking_checks` runs them all with budgets scaled by ``budget``:

1. :func:`check_monotone_eps` — accuracy does not increase with eps;
2. :func:`check_large_eps` — accuracy reaches ~0 at a large eps (L-infinity 0.5);
3. :func:`check_steps_restarts` — more steps and more restarts never help the model;
4. :func:`check_black_box` — Square (black-box) does not beat the white-box attacks;
5. :func:`~deqlib.evaluate.masking_gradients.check_gradient_choices` — PGD on the IFT, phantom and unrolled
   gradients and the intermediate-state attacks;
6. :func:`~deqlib.evaluate.masking_gradients.check_determinism_gradients` — two forward passes agree and input
   gradients are finite and nonzero.

Passing them is necessary, not sufficient, for a trustworthy robustness number.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from torch import Tensor, nn

from .._io import to_jsonable
from .._validate import check_int, check_positive, check_probability
from ..attacks import apgd_ce, pgd, square
from ..threat import check_eps, check_norm
from ._runs import check_run, check_samples, clean_correct, run_attack, tolerance
from .masking_gradients import check_determinism_gradients, check_gradient_choices

__all__ = [
    "check_monotone_eps",
    "check_large_eps",
    "check_steps_restarts",
    "check_black_box",
    "check_gradient_choices",
    "check_determinism_gradients",
    "masking_checks",
    "MASKING_CHECKS",
]

#: The names of the checks, in the order :func:`masking_checks` runs them (each result's ``name``).
MASKING_CHECKS = (
    "monotone_in_eps",
    "large_eps",
    "steps_and_restarts",
    "black_box",
    "gradient_choices",
    "determinism_and_gradients",
)


def _default_large_eps(norm: str, x: Tensor) -> float:
    return 0.5 if norm == "Linf" else 0.5 * math.sqrt(x[0].numel())


def check_monotone_eps(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps_list: Sequence[float],
    *,
    norm: str = "Linf",
    steps: int = 20,
    seed: int = 0,
    batch_size: int = 256,
    tol_samples: int = 1,
) -> Dict[str, Any]:
    """Check 1: PGD accuracy over an increasing eps sweep never rises by more than ``tol_samples`` samples."""
    where = "check_monotone_eps"
    x, y = check_samples(x, y, where)
    norm = check_norm(norm, where)
    seed, batch_size = check_run(seed, batch_size, where)
    tol = tolerance(tol_samples, x.shape[0], where)
    eps_sorted = sorted(check_eps(e, norm, where) for e in eps_list)
    if not eps_sorted:
        raise ValueError(f"{where}: give at least one eps")
    start = time.perf_counter()
    accs = [
        run_attack(model, pgd(model, e, steps=steps, norm=norm), x, y, seed, batch_size)["accuracy"] for e in eps_sorted
    ]
    max_rise = max((b - a for a, b in zip(accs, accs[1:])), default=0.0)
    return {
        "name": "monotone_in_eps",
        "passed": bool(max_rise <= tol),
        "eps": eps_sorted,
        "accuracy": accs,
        "max_increase": max(max_rise, 0.0),
        "tolerance": tol,
        "attack": f"pgd ({norm}, {steps} steps)",
        "seconds": time.perf_counter() - start,
    }


def check_large_eps(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: Optional[float] = None,
    norm: str = "Linf",
    steps: int = 50,
    seed: int = 0,
    batch_size: int = 256,
    max_accuracy: float = 0.05,
    tol_samples: int = 1,
) -> Dict[str, Any]:
    """Check 2: at a large radius (default L-infinity 0.5, or L2 0.5 sqrt(d)) PGD should reach ~0% accuracy.

    Passes if the accuracy is at most ``max_accuracy`` or at most ``tol_samples`` samples survive.
    """
    where = "check_large_eps"
    x, y = check_samples(x, y, where)
    norm = check_norm(norm, where)
    eps = _default_large_eps(norm, x) if eps is None else check_eps(eps, norm, where)
    seed, batch_size = check_run(seed, batch_size, where)
    max_accuracy = check_probability(max_accuracy, "max_accuracy", where)
    tol_samples = check_int(tol_samples, "tol_samples", where, minimum=0)
    start = time.perf_counter()
    r = run_attack(model, pgd(model, eps, steps=steps, norm=norm), x, y, seed, batch_size)
    passed = r["accuracy"] <= max_accuracy or r["n_correct"] <= tol_samples
    return {
        "name": "large_eps",
        "passed": bool(passed),
        "eps": eps,
        "norm": norm,
        "accuracy": r["accuracy"],
        "n_correct": r["n_correct"],
        "max_accuracy": max_accuracy,
        "attack": f"pgd ({norm}, {steps} steps)",
        "seconds": time.perf_counter() - start,
    }


def check_steps_restarts(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    norm: str = "Linf",
    steps: Tuple[int, int] = (10, 50),
    restarts: int = 5,
    seed: int = 0,
    batch_size: int = 256,
    tol_samples: int = 1,
) -> Dict[str, Any]:
    """Check 3: PGD with more steps, and with more random restarts, never leaves the model more accurate.

    Restarts use seeds seed, seed + 1, ...; a sample survives the restarted attack only if it survives every
    restart. The step size is 2.5 eps / steps in both runs.
    """
    where = "check_steps_restarts"
    x, y = check_samples(x, y, where)
    norm = check_norm(norm, where)
    eps = check_eps(eps, norm, where)
    few, many = (check_int(s, "steps", where, minimum=1) for s in steps)
    restarts = check_int(restarts, "restarts", where, minimum=1)
    seed, batch_size = check_run(seed, batch_size, where)
    n = x.shape[0]
    tol = tolerance(tol_samples, n, where)
    start = time.perf_counter()
    r_few = run_attack(model, pgd(model, eps, steps=few, norm=norm), x, y, seed, batch_size)
    r_many = run_attack(model, pgd(model, eps, steps=many, norm=norm), x, y, seed, batch_size)
    mask = r_few["mask"].clone()
    per_restart = [r_few["accuracy"]]
    for k in range(1, restarts):
        r = run_attack(model, pgd(model, eps, steps=few, norm=norm), x, y, seed + k, batch_size)
        per_restart.append(r["accuracy"])
        mask &= r["mask"]
    acc_restarts = int(mask.sum()) / n
    steps_ok = r_many["accuracy"] <= r_few["accuracy"] + tol
    restarts_ok = acc_restarts <= r_few["accuracy"] + tol
    return {
        "name": "steps_and_restarts",
        "passed": bool(steps_ok and restarts_ok),
        "steps": [few, many],
        "accuracy_steps": [r_few["accuracy"], r_many["accuracy"]],
        "steps_passed": bool(steps_ok),
        "restarts": restarts,
        "accuracy_per_restart": per_restart,
        "accuracy_restarts": acc_restarts,
        "restarts_passed": bool(restarts_ok),
        "tolerance": tol,
        "eps": eps,
        "norm": norm,
        "seconds": time.perf_counter() - start,
    }


def check_black_box(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    norm: str = "Linf",
    n_queries: int = 5000,
    apgd_steps: int = 100,
    pgd_steps: int = 20,
    seed: int = 0,
    batch_size: int = 256,
    tol_samples: int = 1,
) -> Dict[str, Any]:
    """Check 4: Square (black-box) must not beat the white-box attacks (APGD-CE and PGD).

    Passes if Square's accuracy is at least the lower of the white-box accuracies (minus ``tol_samples``).
    Also reports how many samples only Square breaks (a hint of masked gradients even when the check passes).
    """
    where = "check_black_box"
    x, y = check_samples(x, y, where)
    norm = check_norm(norm, where)
    eps = check_eps(eps, norm, where)
    seed, batch_size = check_run(seed, batch_size, where)
    tol = tolerance(tol_samples, x.shape[0], where)
    start = time.perf_counter()
    sq = square(model, eps, norm=norm, n_queries=n_queries, seed=seed)
    r_sq = run_attack(model, sq, x, y, seed, batch_size)
    r_apgd = run_attack(model, apgd_ce(model, eps, norm=norm, steps=apgd_steps, seed=seed), x, y, seed, batch_size)
    r_pgd = run_attack(model, pgd(model, eps, norm=norm, steps=pgd_steps), x, y, seed, batch_size)
    white = min(r_apgd["accuracy"], r_pgd["accuracy"])
    square_only = int((~r_sq["mask"] & r_apgd["mask"] & r_pgd["mask"]).sum())
    return {
        "name": "black_box",
        "passed": bool(r_sq["accuracy"] + tol >= white),
        "accuracy_square": r_sq["accuracy"],
        "accuracy_apgd_ce": r_apgd["accuracy"],
        "accuracy_pgd": r_pgd["accuracy"],
        "accuracy_white_box": white,
        "n_broken_only_by_square": square_only,
        "tolerance": tol,
        "n_queries": n_queries,
        "eps": eps,
        "norm": norm,
        "seconds": time.perf_counter() - start,
    }


def _battery(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    norm: str,
    budget: float,
    *,
    seed: int,
    batch_size: int,
    tol_samples: int,
    max_gap: float,
) -> Dict[str, Callable[[], Dict[str, Any]]]:
    """One runner per check, with every attack budget scaled by ``budget`` (each count at least 1)."""

    def s(v: float) -> int:
        return max(1, int(round(v * budget)))

    cap = 1.0 if norm == "Linf" else math.sqrt(x[0].numel())
    sweep = sorted({0.0, eps / 4, eps / 2, eps, min(2 * eps, cap)})
    few = s(10)
    many = max(2 * few, s(50))
    common = {"seed": seed, "batch_size": batch_size, "tol_samples": tol_samples}
    return {
        "monotone_in_eps": lambda: check_monotone_eps(model, x, y, sweep, norm=norm, steps=s(20), **common),
        "large_eps": lambda: check_large_eps(model, x, y, norm=norm, steps=s(50), **common),
        "steps_and_restarts": lambda: check_steps_restarts(
            model, x, y, eps, norm=norm, steps=(few, many), restarts=max(2, s(5)), **common
        ),
        "black_box": lambda: check_black_box(
            model, x, y, eps, norm=norm, n_queries=s(5000), apgd_steps=s(100), pgd_steps=s(20), **common
        ),
        "gradient_choices": lambda: check_gradient_choices(
            model, x, y, eps, norm=norm, steps=s(20), max_gap=max_gap, **common
        ),
        "determinism_and_gradients": lambda: check_determinism_gradients(model, x, y, batch_size=batch_size),
    }


def masking_checks(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    norm: str = "Linf",
    budget: float = 1.0,
    seed: int = 0,
    batch_size: int = 256,
    tol_samples: int = 1,
    max_gap: float = 0.05,
    checks: Optional[Sequence[str]] = None,
) -> Dict[str, Any]:
    """Run the gradient-masking checks at radius ``eps``; a JSON-able dict with every verdict and number.

    ``budget`` scales every attack budget (1.0: PGD 20 steps in the sweep and the gradient comparison,
    50 steps at the large eps, 10 vs 50 steps and 5 restarts, APGD-CE 100 steps and Square 5000 queries in the
    black-box check); tests use e.g. 0.05. Each scaled count is at least 1 (2 restarts, more steps > fewer).

    Returns:
        ``passed`` (no check failed; checks that do not apply count as passed), ``failed`` (names),
        ``checks`` (name -> result), ``eps``, ``norm``, ``budget``, ``n_samples``, ``seed``, ``seconds``.
    """
    where = "masking_checks"
    x, y = check_samples(x, y, where)
    norm = check_norm(norm, where)
    eps = check_eps(eps, norm, where)
    budget = check_positive(budget, "budget", where)
    seed, batch_size = check_run(seed, batch_size, where)
    tolerance(tol_samples, x.shape[0], where)
    max_gap = check_probability(max_gap, "max_gap", where)
    selected = MASKING_CHECKS if checks is None else tuple(checks)
    unknown = sorted(set(selected) - set(MASKING_CHECKS))
    if unknown:
        raise ValueError(f"{where}: unknown check(s) {unknown}; available: {MASKING_CHECKS}")
    runners = _battery(
        model, x, y, eps, norm, budget, seed=seed, batch_size=batch_size, tol_samples=tol_samples, max_gap=max_gap
    )
    start = time.perf_counter()
    results = {name: runners[name]() for name in selected}
    failed = [k for k, v in results.items() if v["passed"] is False]
    return to_jsonable(
        {
            "passed": not failed,
            "failed": failed,
            "checks": results,
            "eps": eps,
            "norm": norm,
            "budget": budget,
            "n_samples": int(x.shape[0]),
            "clean_accuracy": float(clean_correct(model, x, y, batch_size).float().mean()),
            "seed": seed,
            "seconds": time.perf_counter() - start,
        }
    )
