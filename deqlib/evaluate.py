"""Robustness evaluation: accuracy under several attacks and radii, JSON reports, gradient-masking checks.

:func:`evaluate_robustness` runs a list of attacks (by name, see :func:`deqlib.attacks.make_attack`) at a list
of radii and returns a JSON-able report, including the per-sample worst case over all attacks at each radius
(a sample is robust only if it survives every attack).

The gradient-masking checks follow Carlini et al. 2019 ("On Evaluating Adversarial Robustness") and the
sanity checks of AutoAttack. Each returns a dict with ``passed`` (True / False, or None when it does not apply)
and the numbers behind the verdict; :func:`masking_checks` runs them all with budgets scaled by ``budget``:

1. :func:`check_monotone_eps`: accuracy does not increase with eps;
2. :func:`check_large_eps`: accuracy reaches ~0 at a large eps (L-infinity 0.5);
3. :func:`check_steps_restarts`: more steps and more restarts never help the model;
4. :func:`check_black_box`: Square (black-box) does not beat the white-box attacks;
5. :func:`check_gradient_choices`: PGD on the IFT, phantom and unrolled gradients and the intermediate-state
   attacks; a strongest attack far below the IFT one means the default gradient is masked;
6. :func:`check_determinism_gradients`: two forward passes agree and input gradients are finite and nonzero.

Passing them is necessary, not sufficient, for a trustworthy robustness number.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attacks import (
    EnsembleIntermediateAttack,
    IntermediateStateAttack,
    apgd_ce,
    attack_gradient,
    attack_params,
    check_eps,
    check_norm,
    deq_modules,
    make_attack,
    pgd,
    predict,
    square,
)
from .attacks._checks import check_int, check_seed
from .attacks.adapters import _jsonable
from .attacks.robust import attack_batches, seeded, threat_model
from .deq import GRADS

AttackSpec = Union[str, Tuple[str, Dict[str, Any]], Tuple[str, Dict[str, Any], Sequence[float]]]

__all__ = [
    "evaluate_robustness",
    "save_json",
    "to_jsonable",
    "describe_model",
    "check_monotone_eps",
    "check_large_eps",
    "check_steps_restarts",
    "check_black_box",
    "check_gradient_choices",
    "check_determinism_gradients",
    "masking_checks",
    "MASKING_CHECKS",
]


# ---------------------------------------------------------------------------------------------------- helpers
def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: tensors and numpy scalars to numbers / lists, tuples to lists, NaN / inf to strings."""
    if isinstance(obj, Tensor):
        obj = obj.detach().cpu()
        return to_jsonable(obj.item() if obj.numel() == 1 and obj.dim() == 0 else obj.tolist())
    if hasattr(obj, "item") and hasattr(obj, "dtype") and getattr(obj, "ndim", None) == 0:  # numpy scalar
        return to_jsonable(obj.item())
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy array
        return to_jsonable(obj.tolist())
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        v = float(obj)
        return v if math.isfinite(v) else str(v)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def save_json(result: Any, path: Union[str, os.PathLike]) -> Path:
    """Write ``result`` as indented JSON, atomically (temporary file in the same folder, then rename).

    Returns the path. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_jsonable(result), indent=2, allow_nan=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def describe_model(model: nn.Module) -> Dict[str, Any]:
    """Class, parameter count and, for DEQs, the solver / gradient settings (JSON-able)."""
    out: Dict[str, Any] = {
        "class": type(model).__name__,
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
    }
    deqs = deq_modules(model)
    if deqs:
        out["deq"] = [
            {
                "solver": d.solver if isinstance(d.solver, str) else getattr(d.solver, "__name__", "solver"),
                "grad": d.grad,
                "max_iter": d.max_iter,
                "tol": d.tol,
                "stop_mode": d.stop_mode,
                "phantom_steps": d.phantom_steps,
                "phantom_tau": d.phantom_tau,
            }
            for d in deqs
        ]
    return out


def _check_xy(x: Any, y: Any, where: str) -> Tuple[Tensor, Tensor]:
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"{where}: x and y must be tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.dim() < 2 or x.shape[0] == 0 or y.shape != (x.shape[0],):
        raise ValueError(
            f"{where}: expected x (N, ...) with N > 0 and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    return x.detach(), y.detach().long()


def _parse_spec(spec: Any, eps_list: Sequence[float]) -> Tuple[str, Dict[str, Any], List[float]]:
    if isinstance(spec, str):
        return spec, {}, list(eps_list)
    if isinstance(spec, (tuple, list)) and len(spec) in (2, 3) and isinstance(spec[0], str):
        params = spec[1] if spec[1] is not None else {}
        if not isinstance(params, dict):
            raise TypeError(f"attack spec {spec!r}: the parameters must be a dict")
        eps = list(spec[2]) if len(spec) == 3 else list(eps_list)
        return spec[0], dict(params), eps
    raise TypeError(f"attack spec must be a name, (name, params) or (name, params, eps_list); got {spec!r}")


def _run(model: nn.Module, attack: Any, x: Tensor, y: Tensor, seed: int, batch_size: int) -> Dict[str, Any]:
    """Per-sample results of one attack, seeded, with accuracy and timing."""
    eps, norm = threat_model(attack)
    start = time.perf_counter()
    with seeded(seed, next(model.parameters()).device):
        out = attack_batches(model, attack, x, y, eps=eps, norm=norm, batch_size=batch_size)
    n = int(x.shape[0])
    ok = out["adv_correct"]
    return {
        "mask": ok,
        "accuracy": int(ok.sum()) / n,
        "n_correct": int(ok.sum()),
        "eps": eps,
        "norm": norm,
        "seconds": time.perf_counter() - start,
        "max_perturbation": float(out["perturbation"].max()),
    }


def _clean(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> Tensor:
    return predict(model, x, batch_size) == y.cpu()


# ---------------------------------------------------------------------------------------------------- evaluation
def evaluate_robustness(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attacks: Sequence[AttackSpec],
    eps_list: Sequence[float],
    *,
    seed: int = 0,
    batch_size: int = 256,
) -> Dict[str, Any]:
    """Clean accuracy and robust accuracy of ``model`` for every attack and radius (a JSON-able dict).

    Args:
        model: maps [0, 1] images to logits.
        x, y: the evaluation samples (N, C, H, W) and labels (N,).
        attacks: attack names (``"pgd"``, ``"apgd_ce"``, ...), ``(name, params)`` pairs such as
            ``("pgd", {"steps": 50, "gradient": "phantom"})``, or ``(name, params, eps_list)`` to give that
            attack its own radii (e.g. an L2 attack among L-infinity ones).
        eps_list: the radii, on the [0, 1] pixel scale.
        seed: torch's generator is seeded with it before each (attack, eps) run (and restored afterwards).
        batch_size: samples per attack call.

    Returns:
        ``clean_accuracy``, ``n_samples``, ``seed``, ``eps_list``, ``attacks`` (label, name, params as given),
        ``results`` (one entry per attack and eps: accuracy, n_correct, the attack's full parameters, seconds,
        max_perturbation), ``table`` (label -> eps and accuracy lists), ``worst_case`` (per norm and eps, the
        accuracy when a sample must survive every attack), ``model`` and ``versions``.

    All attacks are built (and their parameters validated) before any is run.
    """
    where = "evaluate_robustness"
    x, y = _check_xy(x, y, where)
    seed = check_seed(seed, where)
    batch_size = check_int(batch_size, "batch_size", where)
    if isinstance(attacks, str) or (
        isinstance(attacks, tuple)
        and len(attacks) in (2, 3)
        and isinstance(attacks[0], str)
        and isinstance(attacks[1], dict)
    ):
        attacks = [attacks]  # a single spec
    if not attacks:
        raise ValueError(f"{where}: give at least one attack")
    if isinstance(eps_list, numbers.Real):
        eps_list = [eps_list]
    eps_list = [float(e) for e in eps_list]
    if not eps_list:
        raise ValueError(f"{where}: give at least one eps")

    # Build everything first, so that a bad name or parameter fails before any compute.
    plan = []
    labels: Dict[str, int] = {}
    for spec in attacks:
        name, params, eps_values = _parse_spec(spec, eps_list)
        label = name if name not in labels else f"{name}#{labels[name] + 1}"
        labels[name] = labels.get(name, 0) + 1
        built = [(e, make_attack(name, model, e, **params)) for e in eps_values]
        plan.append((label, name, params, built))

    start = time.perf_counter()
    n = int(x.shape[0])
    clean = _clean(model, x, y, batch_size)
    results: List[Dict[str, Any]] = []
    table: Dict[str, Dict[str, List[float]]] = {}
    worst: Dict[Tuple[str, float], Dict[str, Any]] = {}
    for label, name, params, built in plan:
        table[label] = {"eps": [], "accuracy": []}
        for eps, atk in built:
            r = _run(model, atk, x, y, seed, batch_size)
            results.append(
                {
                    "attack": label,
                    "name": name,
                    "eps": eps,
                    "norm": r["norm"],
                    "accuracy": r["accuracy"],
                    "n_correct": r["n_correct"],
                    "params": attack_params(atk),
                    "seconds": r["seconds"],
                    "max_perturbation": r["max_perturbation"],
                }
            )
            table[label]["eps"].append(eps)
            table[label]["accuracy"].append(r["accuracy"])
            key = (r["norm"], eps)
            w = worst.setdefault(key, {"mask": clean.clone(), "attacks": []})
            w["mask"] &= r["mask"]
            w["attacks"].append(label)
    worst_case = [
        {
            "norm": k[0],
            "eps": k[1],
            "accuracy": int(v["mask"].sum()) / n,
            "n_correct": int(v["mask"].sum()),
            "attacks": v["attacks"],
        }
        for k, v in sorted(worst.items())
    ]
    import torchattacks

    return to_jsonable(
        {
            "clean_accuracy": int(clean.sum()) / n,
            "n_clean_correct": int(clean.sum()),
            "n_samples": n,
            "seed": seed,
            "batch_size": batch_size,
            "eps_list": eps_list,
            "attacks": [{"label": p[0], "name": p[1], "params": _jsonable(p[2])} for p in plan],
            "results": results,
            "table": table,
            "worst_case": worst_case,
            "model": describe_model(model),
            "versions": {"torch": torch.__version__, "torchattacks": getattr(torchattacks, "__version__", "?")},
            "seconds": time.perf_counter() - start,
        }
    )


# ---------------------------------------------------------------------------------------------------- masking checks
def _tol(tol_samples: int, n: int) -> float:
    return tol_samples / n + 1e-12


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
    x, y = _check_xy(x, y, where)
    norm = check_norm(norm, where)
    eps_sorted = sorted(check_eps(e, norm, where) for e in eps_list)
    if not eps_sorted:
        raise ValueError(f"{where}: give at least one eps")
    start = time.perf_counter()
    accs = [_run(model, pgd(model, e, steps=steps, norm=norm), x, y, seed, batch_size)["accuracy"] for e in eps_sorted]
    rises = [b - a for a, b in zip(accs, accs[1:])]
    max_rise = max(rises, default=0.0)
    tol = _tol(tol_samples, x.shape[0])
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
    x, y = _check_xy(x, y, where)
    norm = check_norm(norm, where)
    eps = _default_large_eps(norm, x) if eps is None else check_eps(eps, norm, where)
    start = time.perf_counter()
    r = _run(model, pgd(model, eps, steps=steps, norm=norm), x, y, seed, batch_size)
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
    x, y = _check_xy(x, y, where)
    norm = check_norm(norm, where)
    eps = check_eps(eps, norm, where)
    few, many = (check_int(s, "steps", where) for s in steps)
    restarts = check_int(restarts, "restarts", where)
    start = time.perf_counter()
    r_few = _run(model, pgd(model, eps, steps=few, norm=norm), x, y, seed, batch_size)
    r_many = _run(model, pgd(model, eps, steps=many, norm=norm), x, y, seed, batch_size)
    mask = r_few["mask"].clone()
    per_restart = [r_few["accuracy"]]
    for k in range(1, restarts):
        r = _run(model, pgd(model, eps, steps=few, norm=norm), x, y, seed + k, batch_size)
        per_restart.append(r["accuracy"])
        mask &= r["mask"]
    n = x.shape[0]
    acc_restarts = int(mask.sum()) / n
    tol = _tol(tol_samples, n)
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
    x, y = _check_xy(x, y, where)
    norm = check_norm(norm, where)
    eps = check_eps(eps, norm, where)
    start = time.perf_counter()
    r_sq = _run(model, square(model, eps, norm=norm, n_queries=n_queries, seed=seed), x, y, seed, batch_size)
    r_apgd = _run(model, apgd_ce(model, eps, norm=norm, steps=apgd_steps, seed=seed), x, y, seed, batch_size)
    r_pgd = _run(model, pgd(model, eps, norm=norm, steps=pgd_steps), x, y, seed, batch_size)
    white = min(r_apgd["accuracy"], r_pgd["accuracy"])
    square_only = int((~r_sq["mask"] & r_apgd["mask"] & r_pgd["mask"]).sum())
    tol = _tol(tol_samples, x.shape[0])
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


def _default_state_indices(model: nn.Module, x: Tensor, batch_size: int) -> Tuple[int, ...]:
    _, info = model.solve(x[:batch_size].to(next(model.parameters()).device), record=False)
    s = max(1, int(round(float(info.steps.float().mean()))))
    return tuple(sorted({1, max(1, s // 2), s}))


def check_gradient_choices(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    norm: str = "Linf",
    steps: int = 20,
    state_indices: Optional[Sequence[int]] = None,
    unroll_steps: int = 5,
    tau: float = 0.5,
    seed: int = 0,
    batch_size: int = 256,
    max_gap: float = 0.05,
    tol_samples: int = 1,
) -> Dict[str, Any]:
    """Check 5: PGD on the implicit (IFT), phantom and unrolled gradients, and the intermediate-state attacks.

    Reports every accuracy and the per-sample worst case. Passes if the strongest attack's accuracy is not
    more than ``max_gap`` (plus ``tol_samples`` samples) below PGD on the IFT gradient: a larger gap means the
    implicit gradient is masked and robust accuracy must be reported with the strongest attack.

    Args:
        state_indices: solver iterates for the intermediate-state attacks; default {1, S/2, S} with S the mean
            number of solver steps on x. One attack per index, plus their ensemble when there are several.
        unroll_steps, tau: K and tau of the intermediate-state attacks.

    Not applicable (``passed`` None) to a model without a DEQ layer.
    """
    where = "check_gradient_choices"
    x, y = _check_xy(x, y, where)
    norm = check_norm(norm, where)
    eps = check_eps(eps, norm, where)
    if not deq_modules(model):
        return {"name": "gradient_choices", "passed": None, "skipped": "the model has no DEQ layer"}
    start = time.perf_counter()
    attacks: Dict[str, Any] = {f"pgd_{g}": pgd(model, eps, steps=steps, norm=norm, gradient=g) for g in GRADS}
    has_states = all(callable(getattr(model, a, None)) for a in ("inject", "solve", "logits_from_state"))
    if has_states:
        idx = _default_state_indices(model, x, batch_size) if state_indices is None else tuple(state_indices)
        for i in idx:
            attacks[f"intermediate_{i}"] = IntermediateStateAttack(
                model, eps, steps=steps, state_index=i, unroll_steps=unroll_steps, tau=tau, norm=norm
            )
        if len(idx) > 1:
            attacks["ensemble_" + "_".join(map(str, idx))] = EnsembleIntermediateAttack(
                model, eps, steps=steps, state_indices=idx, unroll_steps=unroll_steps, tau=tau, norm=norm
            )
    else:
        idx = ()
    runs = {k: _run(model, a, x, y, seed, batch_size) for k, a in attacks.items()}
    acc = {k: r["accuracy"] for k, r in runs.items()}
    worst = _clean(model, x, y, batch_size)
    for r in runs.values():
        worst &= r["mask"]
    strongest = min(acc, key=acc.get)
    gap = acc["pgd_ift"] - acc[strongest]
    n = x.shape[0]
    return {
        "name": "gradient_choices",
        "passed": bool(gap <= max_gap + _tol(tol_samples, n)),
        "accuracy": acc,
        "worst_case_accuracy": int(worst.sum()) / n,
        "strongest": strongest,
        "gap_to_ift": gap,
        "max_gap": max_gap,
        "state_indices": list(idx),
        "unroll_steps": unroll_steps,
        "tau": tau,
        "steps": steps,
        "eps": eps,
        "norm": norm,
        "seconds": time.perf_counter() - start,
    }


def check_determinism_gradients(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int = 256,
    atol: float = 1e-6,
) -> Dict[str, Any]:
    """Check 6: two forward passes give the same logits, and the input gradient of the loss is finite and
    nonzero for every sample, under the model's own gradient and (for DEQs) every gradient choice."""
    where = "check_determinism_gradients"
    x, y = _check_xy(x, y, where)
    start = time.perf_counter()
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        xb, yb = x[:batch_size].to(dev), y[:batch_size].to(dev)
        with torch.no_grad():
            a, b = model(xb), model(xb)
        logit_diff = float((a - b).abs().max())
        modes: List[Optional[str]] = [None] + (list(GRADS) if deq_modules(model) else [])
        grads: Dict[str, Dict[str, Any]] = {}
        for mode in modes:
            with attack_gradient(model, mode):
                xr = xb.clone().requires_grad_(True)
                loss = F.cross_entropy(model(xr), yb, reduction="sum")
                (g,) = torch.autograd.grad(loss, xr)
            norms = g.flatten(1).norm(dim=1)
            finite = bool(torch.isfinite(g).all())
            grads["model" if mode is None else mode] = {
                "finite": finite,
                "n_zero": int((norms == 0).sum()),
                "min_norm": float(norms.min()),
                "mean_norm": float(norms.mean()),
                "passed": bool(finite and (norms > 0).all()),
            }
    finally:
        model.train(was)
    deterministic = logit_diff <= atol
    return {
        "name": "determinism_and_gradients",
        "passed": bool(deterministic and all(v["passed"] for v in grads.values())),
        "deterministic": bool(deterministic),
        "max_logit_difference": logit_diff,
        "gradients": grads,
        "n_samples": int(xb.shape[0]),
        "seconds": time.perf_counter() - start,
    }


MASKING_CHECKS = (
    "monotone_in_eps",
    "large_eps",
    "steps_and_restarts",
    "black_box",
    "gradient_choices",
    "determinism_and_gradients",
)


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
    x, y = _check_xy(x, y, where)
    norm = check_norm(norm, where)
    eps = check_eps(eps, norm, where)
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real) or not 0 < float(budget) < math.inf:
        raise ValueError(f"{where}: budget must be a positive number, got {budget!r}")
    selected = MASKING_CHECKS if checks is None else tuple(checks)
    unknown = sorted(set(selected) - set(MASKING_CHECKS))
    if unknown:
        raise ValueError(f"{where}: unknown check(s) {unknown}; available: {MASKING_CHECKS}")

    def s(v: float) -> int:
        return max(1, int(round(v * float(budget))))

    cap = 1.0 if norm == "Linf" else math.sqrt(x[0].numel())
    sweep = sorted({0.0, eps / 4, eps / 2, eps, min(2 * eps, cap)})
    few = s(10)
    many = max(2 * few, s(50))
    common = {"seed": seed, "batch_size": batch_size}
    runners = {
        "monotone_in_eps": lambda: check_monotone_eps(
            model, x, y, sweep, norm=norm, steps=s(20), tol_samples=tol_samples, **common
        ),
        "large_eps": lambda: check_large_eps(model, x, y, norm=norm, steps=s(50), tol_samples=tol_samples, **common),
        "steps_and_restarts": lambda: check_steps_restarts(
            model, x, y, eps, norm=norm, steps=(few, many), restarts=max(2, s(5)), tol_samples=tol_samples, **common
        ),
        "black_box": lambda: check_black_box(
            model,
            x,
            y,
            eps,
            norm=norm,
            n_queries=s(5000),
            apgd_steps=s(100),
            pgd_steps=s(20),
            tol_samples=tol_samples,
            **common,
        ),
        "gradient_choices": lambda: check_gradient_choices(
            model, x, y, eps, norm=norm, steps=s(20), max_gap=max_gap, tol_samples=tol_samples, **common
        ),
        "determinism_and_gradients": lambda: check_determinism_gradients(model, x, y, batch_size=batch_size),
    }
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
            "budget": float(budget),
            "n_samples": int(x.shape[0]),
            "clean_accuracy": float(_clean(model, x, y, batch_size).float().mean()),
            "seed": seed,
            "seconds": time.perf_counter() - start,
        }
    )
