"""The strongest-attack battery: the one robust-accuracy evaluation every chapter and experiment uses.

:func:`strongest_attack` gives, for a model, samples and radii, the **per-sample worst case** over

1. AutoAttack standard, member by member: ``apgd_ce``, ``apgd_t``, ``fab_t``, ``square`` (Croce & Hein 2020; in the
   "full" preset with the official parameters, :data:`~deqlib.attacks.AUTOATTACK_STANDARD`);
2. PGD under each DEQ gradient: ``pgd_ift``, ``pgd_phantom``, ``pgd_unroll`` (``pgd`` for a model without a DEQ
   layer), with random restarts;
3. the intermediate-state attacks ``intermediate_<i>`` and their ensemble ``ensemble_<i>_<j>_...`` (Yang et al.
   2022), when the model exposes its solver states;
4. every attack the model declares with ``model.adaptive_attacks(eps, norm=, preset=, seed=)`` (a defence names
   its own adaptive attacks), as ``adaptive:<name>``, evaluated on the model's own forward value.

A sample is robust only if it is classified correctly without attack and no attack breaks it; ``broken_by`` names
the first attack, in the order above, that did (``"clean"``: misclassified without attack). As in AutoAttack,
each attack (and each restart) runs only on the samples still robust, so the later attacks cost little once the
early ones have done their work; ``independent=True`` runs every attack on every clean-correct sample instead
(slower), and then ``per_attack`` also gives each attack's own robust accuracy.

Presets (:data:`PRESETS`): ``"full"`` — APGD-CE / APGD-T (9 targets) / FAB-T (9 targets) 100 steps, Square 5000
queries, PGD and the intermediate-state attacks 100 steps with 5 restarts; ``"reduced"`` — small budgets for CPU
notebooks, and the result says ``"reduced": True`` (so must every table or figure made from it). ``budgets=``
overrides single entries; the result is labelled reduced whenever its budgets differ from the full preset's.

Each radius also records ``convergence``: the fractions of the DEQ forward and backward solves during its attacks
that did not converge (:func:`deqlib.diagnostics.convergence_report`; the solver warnings are silenced inside the
attacks and counted instead).
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torchattacks
from torch import Tensor, nn

from .._io import to_jsonable
from .._modules import model_device
from .._validate import check_bool, check_choice, check_int, check_number
from ..attacks import AUTOATTACK_STANDARD, apgd_ce, apgd_t, attack_params, fab_t, square
from ..attacks.robust import attack_batches, correct, seeded, tracked
from ..threat import check_eps_list, check_norm
from ._runs import check_run, check_samples, check_state_indices, gradient_attacks
from .report import describe_model
from .statistics import wilson_interval

__all__ = ["strongest_attack", "PRESETS"]

#: The budgets of the two presets. ``state_indices`` None: {1, S/2, S} with S the mean number of solver steps.
PRESETS: Dict[str, Dict[str, Any]] = {
    "full": {
        "apgd_steps": AUTOATTACK_STANDARD["apgd_ce"]["steps"],
        "n_target_classes": AUTOATTACK_STANDARD["apgd_t"]["n_target_classes"],
        "fab_steps": AUTOATTACK_STANDARD["fab_t"]["steps"],
        "square_queries": AUTOATTACK_STANDARD["square"]["n_queries"],
        "square_rescale": AUTOATTACK_STANDARD["square"]["resc_schedule"],
        "pgd_steps": 100,
        "restarts": 5,
        "phantom_steps": 5,
        "phantom_tau": 0.5,
        "state_indices": None,
    },
    "reduced": {
        "apgd_steps": 20,
        "n_target_classes": 3,
        "fab_steps": 20,
        "square_queries": 300,
        "square_rescale": True,
        "pgd_steps": 20,
        "restarts": 1,
        "phantom_steps": 5,
        "phantom_tau": 0.5,
        "state_indices": None,
    },
}

#: (name, runs): the runs of one attack are (seed, attack) pairs, one per restart.
Plan = List[Tuple[str, List[Tuple[int, Any]]]]


def _check_budgets(preset: Any, budgets: Optional[Mapping[str, Any]], where: str) -> Tuple[str, Dict[str, Any]]:
    preset = check_choice(preset, "preset", where, tuple(PRESETS))
    out = dict(PRESETS[preset])
    if budgets is None:
        return preset, out
    if not isinstance(budgets, Mapping):
        raise TypeError(f"{where}: budgets must be a dict of preset entries, got {type(budgets).__name__}")
    unknown = sorted(set(budgets) - set(out))
    if unknown:
        raise TypeError(f"{where}: unknown budget(s) {unknown}; the presets have {sorted(out)}")
    for key, value in budgets.items():
        if key == "state_indices":
            idx = check_state_indices(value, where)
            out[key] = None if idx is None else list(idx)
        elif key == "square_rescale":
            out[key] = check_bool(value, key, where)
        elif key == "phantom_tau":
            out[key] = check_number(value, key, where, minimum=0.0, maximum=1.0, low_open=True)
        else:
            out[key] = check_int(value, key, where, minimum=1)
    return preset, out


def _autoattack(model: nn.Module, eps: float, norm: str, b: Dict[str, Any], n_classes: int, seed: int) -> Plan:
    """The AutoAttack standard members, in AutoAttack's order, with the preset's budgets."""
    targets = min(b["n_target_classes"], n_classes - 1)
    common = {"norm": norm, "seed": seed}
    std = AUTOATTACK_STANDARD
    return [
        ("apgd_ce", [(seed, apgd_ce(model, eps, steps=b["apgd_steps"], rho=std["apgd_ce"]["rho"], **common))]),
        (
            "apgd_t",
            [
                (
                    seed,
                    apgd_t(model, eps, steps=b["apgd_steps"], n_classes=n_classes, n_target_classes=targets, **common),
                )
            ],
        ),
        (
            "fab_t",
            [(seed, fab_t(model, eps, steps=b["fab_steps"], n_classes=n_classes, n_target_classes=targets, **common))],
        ),
        (
            "square",
            [
                (
                    seed,
                    square(
                        model,
                        eps,
                        n_queries=b["square_queries"],
                        p_init=std["square"]["p_init"],
                        resc_schedule=b["square_rescale"],
                        **common,
                    ),
                )
            ],
        ),
    ]


def _adaptive(model: nn.Module, eps: float, norm: str, preset: str, seed: int, where: str) -> Plan:
    """The attacks the model declares (``model.adaptive_attacks``), as ``adaptive:<name>``."""
    declare = getattr(model, "adaptive_attacks", None)
    if not callable(declare):
        return []
    attacks = declare(eps, norm=norm, preset=preset, seed=seed)
    if not isinstance(attacks, Mapping) or not all(isinstance(k, str) and callable(a) for k, a in attacks.items()):
        raise TypeError(
            f"{where}: {type(model).__name__}.adaptive_attacks must return a dict of name -> attack(images, labels)"
        )
    return [(f"adaptive:{k}", [(seed, a)]) for k, a in attacks.items()]


def _plan(
    model: nn.Module,
    x: Tensor,
    eps: float,
    norm: str,
    preset: str,
    b: Dict[str, Any],
    n_classes: int,
    seed: int,
    bs: int,
) -> Plan:
    """Every attack of the battery at radius ``eps``, in battery order, built before any runs."""
    plan = _autoattack(model, eps, norm, b, n_classes, seed)
    grads, _ = gradient_attacks(
        model, x, eps, norm, b["pgd_steps"], b["state_indices"], b["phantom_steps"], b["phantom_tau"], bs
    )
    plan += [(name, [(seed + r, atk) for r in range(b["restarts"])]) for name, atk in grads.items()]
    return plan + _adaptive(model, eps, norm, preset, seed, "strongest_attack")


def _run(
    model: nn.Module,
    runs: List[Tuple[int, Any]],
    x: Tensor,
    y: Tensor,
    pool: Tensor,
    eps: float,
    norm: str,
    batch_size: int,
) -> Tuple[Tensor, int]:
    """Run one attack's restarts on the samples of ``pool`` (each restart on those the previous left); the mask of
    the samples it fooled, and the largest number of samples it was run on."""
    fooled = torch.zeros_like(pool)
    attacked = 0
    for run_seed, atk in runs:
        idx = (pool & ~fooled).nonzero().flatten()
        if idx.numel() == 0:
            break
        attacked = max(attacked, int(idx.numel()))
        with seeded(run_seed, model_device(model)):
            out = attack_batches(
                model, atk, x[idx], y[idx], eps=eps, norm=norm, batch_size=batch_size, where="strongest_attack"
            )
        fooled[idx[~out["adv_correct"]]] = True
    return fooled, attacked


def _one_radius(
    model: nn.Module, plan: Plan, x: Tensor, y: Tensor, clean: Tensor, eps: float, norm: str, opts: Dict[str, Any]
) -> Dict[str, Any]:
    """The battery at one radius: per-sample worst case, which attack broke each sample, per-attack numbers."""
    n = int(x.shape[0])
    start = time.perf_counter()
    robust = clean.clone()
    broken_by: List[Optional[str]] = [None if c else "clean" for c in clean.tolist()]
    per_attack: Dict[str, Dict[str, Any]] = {}
    with tracked(model) as report:
        for name, runs in plan:
            t0 = time.perf_counter()
            pool = clean if opts["independent"] else robust
            fooled, attacked = _run(model, runs, x, y, pool, eps, norm, opts["batch_size"])
            new = fooled & robust
            for i in new.nonzero().flatten().tolist():
                broken_by[i] = name
            robust &= ~fooled
            entry = {
                "robust_accuracy": int(robust.sum()) / n,
                "n_attacked": attacked,
                "n_broken": int(new.sum()),
                "restarts": len(runs),
                "params": attack_params(runs[0][1]) if isinstance(runs[0][1], torchattacks.attack.Attack) else {},
                "seconds": time.perf_counter() - t0,
            }
            if opts["independent"]:
                entry["own_robust_accuracy"] = int((clean & ~fooled).sum()) / n
            per_attack[name] = entry
            if opts["progress"]:
                print(f"strongest_attack eps={eps:g} {name}: robust {entry['robust_accuracy']:.3f}", flush=True)
    return {
        "eps": eps,
        "robust_accuracy": int(robust.sum()) / n,
        "n_robust": int(robust.sum()),
        "ci95": list(wilson_interval(int(robust.sum()), n)),
        "robust": robust,
        "broken_by": broken_by,
        "attacks": [name for name, _ in plan],
        "per_attack": per_attack,
        "convergence": report.as_dict(),
        "seconds": time.perf_counter() - start,
    }


def _clean_pass(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> Tuple[Tensor, int, Dict[str, Any]]:
    """Per-sample clean correctness, the number of classes, and the convergence of the clean solves; the logits
    and the labels' range are checked here, before any attack is built."""
    with tracked(model) as report:
        clean, n_classes = correct(model, x, y, batch_size, "strongest_attack")
    return clean, n_classes, report.as_dict()


# size: one validated entry point; the steps are the helpers above
def strongest_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps_list: Sequence[float],
    *,
    norm: str = "Linf",
    preset: str = "reduced",
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
    budgets: Optional[Mapping[str, Any]] = None,
    independent: bool = False,
) -> Dict[str, Any]:
    """Robust accuracy of ``model`` under the strongest-attack battery (see the module docstring), as JSON.

    Args:
        model: maps [0, 1] images to logits; may define ``adaptive_attacks`` (contract: ``adaptive_attacks(eps, *,
            norm, preset, seed) -> {name: attack}``, each attack ``attack(images, labels) -> adversarial images``).
        x, y: the samples (N, C, H, W) and labels (N,).
        eps_list: the radii, on the [0, 1] pixel scale.
        norm: "Linf" or "L2".
        preset: "reduced" (CPU notebooks; labelled reduced) or "full" (the strong budgets).
        seed: the attacks' seed (restart r of a PGD-type attack uses seed + r).
        batch_size: samples per attack call.
        progress: print one line per attack.
        budgets: overrides of single preset entries (:data:`PRESETS`), e.g. ``{"square_queries": 50}``.
        independent: run every attack on every clean-correct sample (not only on those still robust).

    Returns:
        ``{"preset", "reduced", "budgets", "n", "norm", "seed", "clean_accuracy", "clean_ci95", "clean_correct",
        "clean_convergence", "eps": {str(eps): {"eps", "robust_accuracy", "n_robust", "ci95", "robust",
        "broken_by", "attacks", "per_attack": {name: {"robust_accuracy", "n_attacked", "n_broken", "restarts",
        "params", "seconds"}}, "convergence", "seconds"}}, "model", "versions", "seconds"}``. ``per_attack``'s
        ``robust_accuracy`` is the worst case after that attack (cumulative, in battery order).
    """
    where = "strongest_attack"
    x, y = check_samples(x, y, where, model)
    norm = check_norm(norm, where)
    eps_values = check_eps_list(eps_list, norm, where, distinct=True)
    seed, batch_size = check_run(seed, batch_size, where)
    opts = {
        "progress": check_bool(progress, "progress", where),
        "independent": check_bool(independent, "independent", where),
        "batch_size": batch_size,
    }
    preset, b = _check_budgets(preset, budgets, where)
    start = time.perf_counter()
    n = int(x.shape[0])
    clean, n_classes, clean_conv = _clean_pass(model, x, y, batch_size)
    plans = {e: _plan(model, x, e, norm, preset, b, n_classes, seed, batch_size) for e in eps_values if e > 0}
    radii = {}
    for e in eps_values:
        radii[str(e)] = _one_radius(model, plans.get(e, []), x, y, clean, e, norm, opts)
    return to_jsonable(
        {
            "preset": preset,
            "reduced": b != PRESETS["full"],
            "budgets": b,
            "n": n,
            "norm": norm,
            "seed": seed,
            "independent": opts["independent"],
            "clean_accuracy": int(clean.sum()) / n,
            "clean_ci95": list(wilson_interval(int(clean.sum()), n)),
            "clean_correct": clean,
            "clean_convergence": clean_conv,
            "eps": radii,
            "model": describe_model(model),
            "versions": {"torch": torch.__version__, "torchattacks": getattr(torchattacks, "__version__", "?")},
            "seconds": time.perf_counter() - start,
        }
    )
