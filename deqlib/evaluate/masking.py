"""Gradient-masking checks: is a robust accuracy measured by attacks that work as attacks should?

They follow Carlini et al. 2019 ("On Evaluating Adversarial Robustness") and the sanity checks of AutoAttack.
Each returns a dict with ``passed`` (True / False, or None when it does not apply) and the numbers behind the
verdict; :func:`masking_checks` runs them all with budgets scaled by ``budget``:

1. :func:`check_monotone_eps` — accuracy does not increase with eps, and the attack beats random noise somewhere in
   the sweep (a flat curve is not evidence of a working attack);
2. :func:`check_large_eps` — accuracy reaches ~0 at a large eps (L-infinity 0.5);
3. :func:`check_steps_restarts` — more steps never help the model, the gradient steps raise the loss above the
   random start, and random restarts do not change the verdict (a large gain from restarts means the outcome
   depends on the random start, as with shattered or zero gradients);
4. :func:`check_black_box` — Square (black-box) does not beat the white-box attacks;
5. :func:`~deqlib.evaluate.masking_gradients.check_gradient_choices` — PGD on the IFT, phantom and unrolled
   gradients and the intermediate-state attacks: no gradient choice far weaker than the strongest attack, and each
   gradient raises the loss above the random start;
6. :func:`~deqlib.evaluate.masking_gradients.check_determinism_gradients` — two forward passes agree, and a step of
   one grey level along the sign of the input gradient raises the margin loss (a gradient of 1e-30 does not).

The random-noise baseline (:class:`~deqlib.evaluate._runs.RandomStart`) is PGD's own random start, drawn with the
same seed: an attack whose gradient steps do nothing returns exactly it. Every check can fail, and
``tests/test_evaluate.py`` has a model built to fail each. Passing them is necessary, not sufficient, for a
trustworthy robustness number.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from torch import Tensor, nn

from .._io import to_jsonable
from .._validate import check_int, check_positive, check_probability
from ..attacks import apgd_ce, pgd, square
from ..threat import check_eps, check_eps_list, check_norm
from ._runs import RandomStart, check_run, check_samples, clean_correct, loss_rises, run_attack, tolerance
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


def _check_steps_pair(steps: Any, where: str) -> Tuple[int, int]:
    """(fewer, more) PGD steps, two ints >= 1 in increasing order."""
    if isinstance(steps, (str, bytes)) or not hasattr(steps, "__len__") or len(steps) != 2:
        raise TypeError(f"{where}: steps must be a pair (fewer, more) of step counts such as (10, 50), got {steps!r}")
    few, many = (check_int(s, "steps", where, minimum=1) for s in steps)
    if few >= many:
        raise ValueError(f"{where}: steps must be (fewer, more) with fewer < more, got {tuple(steps)!r}")
    return few, many


def _check_selection(checks: Any, where: str) -> Tuple[str, ...]:
    """The checks to run: None (all), or a sequence of names (a single name is not split into characters)."""
    if checks is None:
        return MASKING_CHECKS
    if isinstance(checks, (str, bytes)) or not hasattr(checks, "__iter__"):
        raise TypeError(
            f"{where}: checks must be a sequence of check names such as [{checks!r}], got {type(checks).__name__}; "
            f"available: {MASKING_CHECKS}"
        )
    return tuple(checks)


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
    """Check 1: PGD accuracy over an increasing eps sweep never rises, and the curve is not flat.

    Passes if (i) the accuracy never rises by more than ``tol_samples`` samples from one radius to the next, and
    (ii) at some radius of the sweep PGD leaves more than ``tol_samples`` samples fewer correct than random noise
    of the same radius (PGD's own random start, same seed). A curve that only follows the noise, or stays flat,
    fails (ii): a model with zero input gradients, or a sweep that never reaches radii where the attack works.
    """
    where = "check_monotone_eps"
    x, y = check_samples(x, y, where, model)
    norm = check_norm(norm, where)
    seed, batch_size = check_run(seed, batch_size, where)
    tol = tolerance(tol_samples, x.shape[0], where)
    eps_sorted = sorted(check_eps_list(eps_list, norm, where))
    start = time.perf_counter()
    accs, noise = [], []
    for e in eps_sorted:
        accs.append(run_attack(model, pgd(model, e, steps=steps, norm=norm), x, y, seed, batch_size, where)["accuracy"])
        noise.append(run_attack(model, RandomStart(e, norm), x, y, seed, batch_size, where)["accuracy"])
    max_rise = max((b - a for a, b in zip(accs, accs[1:])), default=0.0)
    gain = max(n - a for a, n in zip(accs, noise))
    monotone, falls = max_rise <= tol, gain > tol
    return {
        "name": "monotone_in_eps",
        "passed": bool(monotone and falls),
        "eps": eps_sorted,
        "accuracy": accs,
        "noise_accuracy": noise,
        "max_increase": max(max_rise, 0.0),
        "monotone": bool(monotone),
        "max_gain_over_noise": gain,
        "beats_noise": bool(falls),
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
    x, y = check_samples(x, y, where, model)
    norm = check_norm(norm, where)
    eps = _default_large_eps(norm, x) if eps is None else check_eps(eps, norm, where)
    seed, batch_size = check_run(seed, batch_size, where)
    max_accuracy = check_probability(max_accuracy, "max_accuracy", where)
    tol_samples = check_int(tol_samples, "tol_samples", where, minimum=0)
    start = time.perf_counter()
    r = run_attack(model, pgd(model, eps, steps=steps, norm=norm), x, y, seed, batch_size, where)
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


# size: three verdicts, each with the numbers behind it, in one report
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
    max_restart_gain: float = 0.05,
) -> Dict[str, Any]:
    """Check 3: the attack's steps and restarts behave as those of a working attack.

    Three verdicts, all needed:

    - ``steps_passed``: PGD with more steps never leaves the model more accurate (beyond ``tol_samples``);
    - ``progress_passed``: PGD's gradient steps raise the mean cross-entropy above that of its own random start
      (same seed): with zero (or useless) gradients they do not;
    - ``restarts_passed``: ``restarts`` independent runs (seeds seed, seed + 1, ...; a sample survives only if it
      survives every run) leave at most ``max_restart_gain`` (plus ``tol_samples`` samples) less accuracy than the
      first run: a larger gain means a single run's outcome depends on its random start.

    The step size is 2.5 eps / steps in every run; the restarts use the fewer steps.
    """
    where = "check_steps_restarts"
    x, y = check_samples(x, y, where, model)
    norm = check_norm(norm, where)
    eps = check_eps(eps, norm, where)
    few, many = _check_steps_pair(steps, where)
    restarts = check_int(restarts, "restarts", where, minimum=2)
    seed, batch_size = check_run(seed, batch_size, where)
    max_restart_gain = check_probability(max_restart_gain, "max_restart_gain", where)
    n = x.shape[0]
    tol = tolerance(tol_samples, n, where)
    start = time.perf_counter()
    r_noise = run_attack(model, RandomStart(eps, norm), x, y, seed, batch_size, where)
    runs = [
        run_attack(model, pgd(model, eps, steps=few, norm=norm), x, y, seed + k, batch_size, where)
        for k in range(restarts)
    ]
    r_few = runs[0]
    r_many = run_attack(model, pgd(model, eps, steps=many, norm=norm), x, y, seed, batch_size, where)
    mask = r_few["mask"].clone()
    for r in runs[1:]:
        mask &= r["mask"]
    acc_restarts = int(mask.sum()) / n
    steps_ok = r_many["accuracy"] <= r_few["accuracy"] + tol
    progress = loss_rises(r_few["loss"], r_noise["loss"])
    restarts_ok = r_few["accuracy"] - acc_restarts <= max_restart_gain + tol
    return {
        "name": "steps_and_restarts",
        "passed": bool(steps_ok and progress and restarts_ok),
        "steps": [few, many],
        "accuracy_steps": [r_few["accuracy"], r_many["accuracy"]],
        "steps_passed": bool(steps_ok),
        "loss_random_start": r_noise["loss"],
        "loss_steps": [r_few["loss"], r_many["loss"]],
        "accuracy_random_start": r_noise["accuracy"],
        "progress_passed": bool(progress),
        "restarts": restarts,
        "accuracy_per_restart": [r["accuracy"] for r in runs],
        "accuracy_restarts": acc_restarts,
        "restart_gain": r_few["accuracy"] - acc_restarts,
        "max_restart_gain": max_restart_gain,
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
    x, y = check_samples(x, y, where, model)
    norm = check_norm(norm, where)
    eps = check_eps(eps, norm, where)
    seed, batch_size = check_run(seed, batch_size, where)
    tol = tolerance(tol_samples, x.shape[0], where)
    start = time.perf_counter()
    sq = square(model, eps, norm=norm, n_queries=n_queries, seed=seed)
    r_sq = run_attack(model, sq, x, y, seed, batch_size, where)
    r_apgd = run_attack(
        model, apgd_ce(model, eps, norm=norm, steps=apgd_steps, seed=seed), x, y, seed, batch_size, where
    )
    r_pgd = run_attack(model, pgd(model, eps, norm=norm, steps=pgd_steps), x, y, seed, batch_size, where)
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


def _runners(
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
    x, y = check_samples(x, y, where, model)
    norm = check_norm(norm, where)
    eps = check_eps(eps, norm, where)
    budget = check_positive(budget, "budget", where)
    seed, batch_size = check_run(seed, batch_size, where)
    tolerance(tol_samples, x.shape[0], where)
    max_gap = check_probability(max_gap, "max_gap", where)
    selected = _check_selection(checks, where)
    unknown = sorted(set(selected) - set(MASKING_CHECKS))
    if unknown:
        raise ValueError(f"{where}: unknown check(s) {unknown}; available: {MASKING_CHECKS}")
    runners = _runners(
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
            "clean_accuracy": float(clean_correct(model, x, y, batch_size, where).float().mean()),
            "seed": seed,
            "seconds": time.perf_counter() - start,
        }
    )
