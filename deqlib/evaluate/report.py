"""The robustness report: accuracy of a model under several attacks and radii, as one JSON-able dict.

- :func:`evaluate_robustness` — clean accuracy, then every attack (by name, see :func:`deqlib.attacks.make_attack`)
  at every radius, and the per-sample worst case over all attacks at each radius (a sample is robust only if it
  survives every attack), with per-sample masks, the attack that broke each sample and 95 % (Wilson) intervals;
- :func:`describe_model` — class, parameter count and the DEQ settings, for the report's ``model`` entry.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Sequence, Tuple, Union

import torch
import torchattacks
from torch import Tensor, nn

from .._io import to_jsonable
from .._modules import deq_modules
from ..attacks import attack_params, make_attack
from ..attacks.robust import tracked
from ..threat import check_eps_list
from ._runs import check_run, check_samples, clean_correct, run_attack
from .statistics import wilson_interval

AttackSpec = Union[str, Tuple[str, Dict[str, Any]], Tuple[str, Dict[str, Any], Sequence[float]]]

__all__ = ["evaluate_robustness", "describe_model"]


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


def _parse_spec(spec: Any, eps_list: Sequence[float], where: str) -> Tuple[str, Dict[str, Any], List[float]]:
    if isinstance(spec, str):
        return spec, {}, list(eps_list)
    if isinstance(spec, (tuple, list)) and len(spec) in (2, 3) and isinstance(spec[0], str):
        params = spec[1] if spec[1] is not None else {}
        if not isinstance(params, dict):
            raise TypeError(
                f"{where}: attack spec {spec!r}: the parameters must be a dict such as {{'steps': 50}}, "
                f"got {type(params).__name__}"
            )
        eps = check_eps_list(spec[2], None, where) if len(spec) == 3 else list(eps_list)
        return spec[0], dict(params), eps
    raise TypeError(f"{where}: attack spec must be a name, (name, params) or (name, params, eps_list); got {spec!r}")


def _check_specs(attacks: Any, eps_list: Any, where: str) -> Tuple[List[Any], List[float]]:
    """The attack specs as a list (a single spec is wrapped) and the radii as a list of floats."""
    single = isinstance(attacks, str) or (
        isinstance(attacks, tuple)
        and len(attacks) in (2, 3)
        and isinstance(attacks[0], str)
        and isinstance(attacks[1], dict)
    )
    if not single and (isinstance(attacks, (dict, bytes)) or not hasattr(attacks, "__iter__")):
        raise TypeError(
            f"{where}: attacks must be a name, a (name, params) pair or a list of them, got {type(attacks).__name__}"
        )
    attacks = [attacks] if single else list(attacks)
    if not attacks:
        raise ValueError(f"{where}: give at least one attack")
    return attacks, check_eps_list(eps_list, None, where)


def _build_plan(
    model: nn.Module, attacks: List[Any], eps_list: List[float], where: str
) -> List[Tuple[str, str, dict, list]]:
    """(label, name, params, [(eps, attack), ...]) per spec: every attack built, and validated, before any runs."""
    plan = []
    labels: Dict[str, int] = {}
    for spec in attacks:
        name, params, eps_values = _parse_spec(spec, eps_list, where)
        label = name if name not in labels else f"{name}#{labels[name] + 1}"
        labels[name] = labels.get(name, 0) + 1
        built = [(e, make_attack(name, model, e, **params)) for e in eps_values]
        plan.append((label, name, params, built))
    return plan


def _run_plan(
    model: nn.Module, plan: list, x: Tensor, y: Tensor, clean: Tensor, seed: int, batch_size: int
) -> Tuple[List[Dict[str, Any]], Dict[str, Dict[str, List[float]]], List[Dict[str, Any]]]:
    """Run every (attack, eps); the per-run results, the label -> curve table and the per-(norm, eps) worst case."""
    n = int(x.shape[0])
    results: List[Dict[str, Any]] = []
    table: Dict[str, Dict[str, List[float]]] = {}
    worst: Dict[Tuple[str, float], Dict[str, Any]] = {}
    for label, name, _, built in plan:
        table[label] = {"eps": [], "accuracy": []}
        for eps, atk in built:
            r = run_attack(model, atk, x, y, seed, batch_size, "evaluate_robustness")
            results.append(
                {
                    "attack": label,
                    "name": name,
                    "eps": eps,
                    "norm": r["norm"],
                    "accuracy": r["accuracy"],
                    "n_correct": r["n_correct"],
                    "ci95": list(wilson_interval(r["n_correct"], n)),
                    "robust": r["mask"],
                    "params": attack_params(atk),
                    "seconds": r["seconds"],
                    "max_perturbation": r["max_perturbation"],
                }
            )
            table[label]["eps"].append(eps)
            table[label]["accuracy"].append(r["accuracy"])
            w = worst.setdefault(
                (r["norm"], eps),
                {"mask": clean.clone(), "attacks": [], "broken_by": [None if c else "clean" for c in clean.tolist()]},
            )
            for i in (w["mask"] & ~r["mask"]).nonzero().flatten().tolist():
                w["broken_by"][i] = label
            w["mask"] &= r["mask"]
            w["attacks"].append(label)
    worst_case = [
        {
            "norm": k[0],
            "eps": k[1],
            "accuracy": int(v["mask"].sum()) / n,
            "n_correct": int(v["mask"].sum()),
            "attacks": v["attacks"],
            "ci95": list(wilson_interval(int(v["mask"].sum()), n)),
            "robust": v["mask"],
            "broken_by": v["broken_by"],
        }
        for k, v in sorted(worst.items())
    ]
    return results, table, worst_case


# size: the docstring documents every entry of the report
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
        ``results`` (one entry per attack and eps: accuracy, n_correct, ``ci95`` (Wilson), ``robust`` (the
        per-sample mask), the attack's full parameters, seconds, max_perturbation), ``table`` (label -> eps and
        accuracy lists), ``worst_case`` (per norm and eps: the accuracy when a sample must survive every attack,
        its ``ci95``, the per-sample ``robust`` mask and ``broken_by``: None for a robust sample, ``"clean"`` for
        one misclassified without attack, else the label of the first attack, in the given order, that broke
        it), ``clean_correct`` and ``clean_ci95``, ``convergence`` (the fractions of the DEQ solves during the
        evaluation that did not converge), ``model`` and ``versions``.

    All attacks are built (and their parameters validated) before any is run.
    """
    where = "evaluate_robustness"
    x, y = check_samples(x, y, where, model)
    seed, batch_size = check_run(seed, batch_size, where)
    attacks, eps_list = _check_specs(attacks, eps_list, where)
    plan = _build_plan(model, attacks, eps_list, where)  # a bad name or parameter fails before any compute

    start = time.perf_counter()
    n = int(x.shape[0])
    with tracked(model) as report:
        clean = clean_correct(model, x, y, batch_size, where)
        results, table, worst_case = _run_plan(model, plan, x, y, clean, seed, batch_size)
    return to_jsonable(
        {
            "clean_accuracy": int(clean.sum()) / n,
            "n_clean_correct": int(clean.sum()),
            "clean_correct": clean,
            "clean_ci95": list(wilson_interval(int(clean.sum()), n)),
            "convergence": report.as_dict(),
            "n_samples": n,
            "seed": seed,
            "batch_size": batch_size,
            "eps_list": eps_list,
            "attacks": [{"label": p[0], "name": p[1], "params": to_jsonable(p[2])} for p in plan],
            "results": results,
            "table": table,
            "worst_case": worst_case,
            "model": describe_model(model),
            "versions": {"torch": torch.__version__, "torchattacks": getattr(torchattacks, "__version__", "?")},
            "seconds": time.perf_counter() - start,
        }
    )
