"""Yang et al. 2023's defences evaluated as the authors released the evaluation (chapter 7's E1), attack by attack.

What the released code does (``../shared/PAPERS.md`` §3), rebuilt so that its numbers can be set beside an honest
evaluation on the same digits:

* input entropy reduction: PGD (10 steps of eps / 4, last iterate, no restarts) crafted on the UNDEFENDED DEQ and
  handed to the defence; AutoAttack on the defended model whose gradient skips the input steps (one cell
  evaluation at the state read, with the original input: the ``"skip"`` gradient of
  :mod:`deqlib.defenses.entropy_gradients`);
* random intermediate states: the same PGD and AutoAttack on the model while it is still random (a new depth per
  call, no EOT: :class:`~deqlib.defenses.RandomAtTest`).

Each sub-attack runs on every clean-correct digit and is reported on its own, as released; ``worst_case`` is
their per-sample union (which the release never formed), ``best_single`` the strongest single one. Success is
always judged on the model the caller names (the defended logits; the fixed-depth model), not on the state
the attack saw. AutoAttack's four standard members use the official budgets unless ``budgets`` overrides them;
the release ran AutoAttack's "plus" version, which adds restarts, APGD-DLR and untargeted FAB (not rebuilt here, so
this E1 is weaker than the release's by those).

API: :func:`released_attacks`, :func:`attack_each`, :func:`robust_under_all`, :data:`RELEASED_BUDGETS`.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from .._io import to_jsonable
from .._validate import check_int
from ..attacks import AUTOATTACK_STANDARD, TransferAttack, apgd_ce, apgd_t, fab_t, pgd, square
from ..defenses import EntropyReductionDefense, RandomAtTest, RandomDepthClassifier
from ..threat import check_eps
from ._runs import check_run, check_samples, clean_correct, run_attack
from .statistics import wilson_interval

__all__ = ["RELEASED_BUDGETS", "released_attacks", "attack_each", "robust_under_all"]

#: The released evaluation's budgets: PGD 10 steps; AutoAttack's members at the official settings.
RELEASED_BUDGETS: Dict[str, int] = {
    "pgd_steps": 10,
    "apgd_steps": AUTOATTACK_STANDARD["apgd_ce"]["steps"],
    "n_target_classes": AUTOATTACK_STANDARD["apgd_t"]["n_target_classes"],
    "fab_steps": AUTOATTACK_STANDARD["fab_t"]["steps"],
    "square_queries": AUTOATTACK_STANDARD["square"]["n_queries"],
}


def _budgets(budgets: Optional[Mapping[str, int]]) -> Dict[str, int]:
    out = dict(RELEASED_BUDGETS)
    unknown = sorted(set(budgets or {}) - set(out))
    if unknown:
        raise TypeError(f"released_attacks: unknown budget(s) {unknown}; known: {sorted(out)}")
    for k, v in (budgets or {}).items():
        out[k] = check_int(v, k, "released_attacks", minimum=1)
    return out


def released_attacks(
    defense: nn.Module, eps: float, *, seed: int = 0, budgets: Optional[Mapping[str, int]] = None, n_classes: int = 10
) -> Dict[str, Any]:
    """The released evaluation's attacks on ``defense`` at radius ``eps`` (L∞), by name.

    Args:
        defense: an :class:`~deqlib.defenses.EntropyReductionDefense`, a
            :class:`~deqlib.defenses.RandomDepthClassifier`, or an undefended model (attacked white-box with the same
            budget, its own gradient: the baseline of the released tables).
        eps: the radius on the [0, 1] pixel scale.
        seed: the attacks' seed.
        budgets: overrides of :data:`RELEASED_BUDGETS` (a reduced run must say so).
        n_classes: classes of the task (AutoAttack's targeted members).

    Returns:
        ``{"pgd10", "aa:apgd_ce", "aa:apgd_t", "aa:fab_t", "aa:square"}`` -> attack; judge them on the defended
        model (:func:`attack_each`).
    """
    eps = check_eps(eps, "Linf", "released_attacks")
    b = _budgets(budgets)
    if isinstance(defense, EntropyReductionDefense):
        from ..attacks.adaptive import DefenseGradient

        source = defense.model  # PGD crafted on the undefended DEQ, then transferred
        first = TransferAttack(defense, pgd(source, eps, alpha=eps / 4, steps=b["pgd_steps"]))
        attacked: nn.Module = DefenseGradient(defense, "skip")
    elif isinstance(defense, RandomDepthClassifier):
        attacked = RandomAtTest(defense)  # still random when attacked, no EOT
        first = pgd(attacked, eps, alpha=eps / 4, steps=b["pgd_steps"])
    elif isinstance(defense, nn.Module):  # an undefended model: the same budget, white-box on its own gradient
        attacked = defense
        first = pgd(attacked, eps, alpha=eps / 4, steps=b["pgd_steps"])
    else:
        raise TypeError(f"released_attacks: defense must be a model or a defence, got {type(defense).__name__}")
    targets = min(b["n_target_classes"], n_classes - 1)
    std = AUTOATTACK_STANDARD
    return {
        "pgd10": first,
        "aa:apgd_ce": apgd_ce(attacked, eps, steps=b["apgd_steps"], rho=std["apgd_ce"]["rho"], seed=seed),
        "aa:apgd_t": apgd_t(
            attacked, eps, steps=b["apgd_steps"], n_classes=n_classes, n_target_classes=targets, seed=seed
        ),
        "aa:fab_t": fab_t(
            attacked, eps, steps=b["fab_steps"], n_classes=n_classes, n_target_classes=targets, seed=seed
        ),
        "aa:square": square(
            attacked, eps, n_queries=b["square_queries"], p_init=std["square"]["p_init"], resc_schedule=False, seed=seed
        ),
    }


def attack_each(
    judge: nn.Module,
    attacks: Mapping[float, Mapping[str, Any]],
    x: Tensor,
    y: Tensor,
    *,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> Dict[str, Any]:
    """Every attack on every clean-correct sample, judged on ``judge``; each attack's own result and their union.

    Args:
        judge: the model whose predictions decide (the defended model).
        attacks: ``{eps: {name: attack}}`` (e.g. :func:`released_attacks` per radius).
        x, y: the samples and labels.
        seed: torch's generator is seeded with it before each attack.
        batch_size: samples per attack call.
        progress: print one line per attack.

    Returns:
        a JSON-able dict with ``n``, ``clean_accuracy``, ``clean_correct``, ``seconds`` and ``eps``: per radius
        (as a string) ``per_attack`` (name to ``robust_accuracy``, ``ci95``, ``robust``, ``seconds``),
        ``worst_case`` (``robust_accuracy``, ``ci95``, ``robust``, ``broken_by``) and ``best_single`` (``name``,
        ``robust_accuracy``); every mask covers all n samples.
    """
    where = "attack_each"
    x, y = check_samples(x, y, where, judge)
    seed, batch_size = check_run(seed, batch_size, where)
    start, n = time.perf_counter(), int(x.shape[0])
    clean = clean_correct(judge, x, y, batch_size, where)
    radii = {
        str(eps): _one_radius(judge, named, x, y, clean, seed, batch_size, progress, eps)
        for eps, named in attacks.items()
    }
    return to_jsonable(
        {
            "n": n,
            "clean_accuracy": int(clean.sum()) / n,
            "clean_correct": clean,
            "eps": radii,
            "seconds": time.perf_counter() - start,
        }
    )


def _one_radius(
    judge: nn.Module,
    named: Mapping[str, Any],
    x: Tensor,
    y: Tensor,
    clean: Tensor,
    seed: int,
    batch_size: int,
    progress: bool,
    eps: float,
) -> Dict[str, Any]:
    """:func:`attack_each` at one radius: each attack on the clean-correct samples, and their union."""
    n, idx = int(x.shape[0]), clean.nonzero().flatten()
    per: Dict[str, Any] = {}
    worst = clean.clone()
    broken_by = [None if c else "clean" for c in clean.tolist()]
    for name, atk in named.items():
        mask = torch.zeros_like(clean)
        r = run_attack(judge, atk, x[idx], y[idx], seed, batch_size, "attack_each") if idx.numel() else None
        if r is not None:
            mask[idx] = r["mask"]
        for i in (worst & ~mask).nonzero().flatten().tolist():
            broken_by[i] = name
        worst &= mask
        k = int(mask.sum())
        per[name] = {
            "robust_accuracy": k / n,
            "ci95": list(wilson_interval(k, n)),
            "robust": mask,
            "seconds": 0.0 if r is None else r["seconds"],
        }
        if progress:
            print(f"attack_each eps={eps:g} {name}: {k / n:.3f}", flush=True)
    best = min(per, key=lambda a: per[a]["robust_accuracy"])
    k = int(worst.sum())
    return {
        "per_attack": per,
        "worst_case": {
            "robust_accuracy": k / n,
            "ci95": list(wilson_interval(k, n)),
            "robust": worst,
            "broken_by": broken_by,
        },
        "best_single": {"name": best, "robust_accuracy": per[best]["robust_accuracy"]},
    }


def robust_under_all(*masks: Sequence[bool]) -> Tensor:
    """The per-sample AND of robust masks (robust under every evaluation): the worst case over them."""
    out = torch.as_tensor(masks[0], dtype=torch.bool).clone()
    for m in masks[1:]:
        out &= torch.as_tensor(m, dtype=torch.bool)
    return out
