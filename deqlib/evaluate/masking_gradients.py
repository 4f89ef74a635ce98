"""The gradient-masking checks on the gradients themselves (checks 5 and 6 of :mod:`deqlib.evaluate.masking`).

- :func:`check_gradient_choices` — PGD on the IFT, phantom and unrolled gradients and the intermediate-state
  attacks: a strongest attack far below PGD on the IFT gradient means the default gradient is masked;
- :func:`check_determinism_gradients` — two forward passes agree, and input gradients are finite and nonzero.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._modules import deq_modules, model_device
from .._validate import check_int, check_nonnegative, check_probability
from ..attacks import EnsembleIntermediateAttack, IntermediateStateAttack, attack_gradient, pgd
from ..deq import GRADS
from ..threat import check_eps, check_norm
from ._runs import check_run, check_samples, clean_correct, run_attack, tolerance

__all__ = ["check_gradient_choices", "check_determinism_gradients"]


def _default_state_indices(model: nn.Module, x: Tensor, batch_size: int) -> Tuple[int, ...]:
    """{1, S/2, S} with S the mean number of solver steps on the first batch of x."""
    _, info = model.solve(x[:batch_size].to(model_device(model, torch.device("cpu"))), record=False)
    s = max(1, int(round(float(info.steps.float().mean()))))
    return tuple(sorted({1, max(1, s // 2), s}))


def _gradient_attacks(
    model: nn.Module,
    x: Tensor,
    eps: float,
    norm: str,
    steps: int,
    state_indices: Optional[Sequence[int]],
    phantom_steps: int,
    phantom_tau: float,
    batch_size: int,
) -> Tuple[Dict[str, Any], Tuple[int, ...]]:
    """PGD on every gradient choice, and the intermediate-state attacks when the model exposes its states."""
    attacks: Dict[str, Any] = {f"pgd_{g}": pgd(model, eps, steps=steps, norm=norm, gradient=g) for g in GRADS}
    if not all(callable(getattr(model, a, None)) for a in ("inject", "solve", "logits_from_state")):
        return attacks, ()
    idx = _default_state_indices(model, x, batch_size) if state_indices is None else tuple(state_indices)
    common = dict(steps=steps, phantom_steps=phantom_steps, phantom_tau=phantom_tau, norm=norm)
    for i in idx:
        attacks[f"intermediate_{i}"] = IntermediateStateAttack(model, eps, state_index=i, **common)
    if len(idx) > 1:
        attacks["ensemble_" + "_".join(map(str, idx))] = EnsembleIntermediateAttack(
            model, eps, state_indices=idx, **common
        )
    return attacks, idx


def _accuracies(
    model: nn.Module, attacks: Dict[str, Any], x: Tensor, y: Tensor, seed: int, batch_size: int
) -> Tuple[Dict[str, float], float]:
    """The accuracy under each attack, and the worst case: the fraction of samples that survive every attack."""
    worst = clean_correct(model, x, y, batch_size)
    acc = {}
    for k, a in attacks.items():
        r = run_attack(model, a, x, y, seed, batch_size)
        acc[k] = r["accuracy"]
        worst &= r["mask"]
    return acc, int(worst.sum()) / x.shape[0]


def check_gradient_choices(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    norm: str = "Linf",
    steps: int = 20,
    state_indices: Optional[Sequence[int]] = None,
    phantom_steps: int = 5,
    phantom_tau: float = 0.5,
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
        phantom_steps, phantom_tau: the k damped steps (and their damping tau) of the intermediate-state attacks.

    Not applicable (``passed`` None) to a model without a DEQ layer.
    """
    where = "check_gradient_choices"
    x, y = check_samples(x, y, where)
    norm = check_norm(norm, where)
    eps = check_eps(eps, norm, where)
    seed, batch_size = check_run(seed, batch_size, where)
    max_gap = check_probability(max_gap, "max_gap", where)
    tol = tolerance(tol_samples, x.shape[0], where)
    if not deq_modules(model):
        return {"name": "gradient_choices", "passed": None, "skipped": "the model has no DEQ layer"}
    start = time.perf_counter()
    attacks, idx = _gradient_attacks(model, x, eps, norm, steps, state_indices, phantom_steps, phantom_tau, batch_size)
    acc, worst_acc = _accuracies(model, attacks, x, y, seed, batch_size)
    strongest = min(acc, key=acc.get)
    gap = acc["pgd_ift"] - acc[strongest]
    return {
        "name": "gradient_choices",
        "passed": bool(gap <= max_gap + tol),
        "accuracy": acc,
        "worst_case_accuracy": worst_acc,
        "strongest": strongest,
        "gap_to_ift": gap,
        "max_gap": max_gap,
        "state_indices": list(idx),
        "phantom_steps": phantom_steps,
        "phantom_tau": phantom_tau,
        "steps": steps,
        "eps": eps,
        "norm": norm,
        "seconds": time.perf_counter() - start,
    }


def _input_gradients(model: nn.Module, xb: Tensor, yb: Tensor) -> Dict[str, Dict[str, Any]]:
    """Per gradient choice (the model's own, then every DEQ gradient): finiteness and norms of d loss / d x."""
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
    return grads


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
    x, y = check_samples(x, y, where)
    batch_size = check_int(batch_size, "batch_size", where, minimum=1)
    atol = check_nonnegative(atol, "atol", where)
    start = time.perf_counter()
    dev = model_device(model, torch.device("cpu"))
    was = model.training
    model.eval()
    try:
        xb, yb = x[:batch_size].to(dev), y[:batch_size].to(dev)
        with torch.no_grad():
            a, b = model(xb), model(xb)
        logit_diff = float((a - b).abs().max())
        grads = _input_gradients(model, xb, yb)
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
