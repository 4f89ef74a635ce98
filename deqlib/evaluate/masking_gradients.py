"""The gradient-masking checks on the gradients themselves (checks 5 and 6 of :mod:`deqlib.evaluate.masking`).

- :func:`check_gradient_choices` — PGD on the IFT, phantom and unrolled gradients and the intermediate-state
  attacks: a strongest attack far below PGD on any of the three gradients means that gradient is masked, and PGD
  on a gradient that does not raise the loss above its random start follows no gradient at all;
- :func:`check_determinism_gradients` — two forward passes agree, and the input gradient is finite and points
  uphill: one grey level along its sign raises the margin loss of (almost) every sample.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .._modules import deq_modules, model_device
from .._validate import (
    check_int,
    check_labels_in_range,
    check_logits,
    check_nonnegative,
    check_positive,
    check_probability,
)
from ..attacks import attack_gradient
from ..attacks.robust import tracked
from ..deq import GRADS
from ..threat import check_eps, check_norm
from ._runs import (
    RandomStart,
    check_run,
    check_samples,
    check_state_indices,
    clean_correct,
    gradient_attacks,
    loss_rises,
    run_attack,
    tolerance,
)

__all__ = ["check_gradient_choices", "check_determinism_gradients"]


def _results(
    model: nn.Module, attacks: Dict[str, Any], x: Tensor, y: Tensor, seed: int, batch_size: int, where: str
) -> Tuple[Dict[str, float], Dict[str, float], float]:
    """The accuracy and mean loss under each attack, and the worst case: the fraction that survives every attack."""
    worst = clean_correct(model, x, y, batch_size, where)
    acc, loss = {}, {}
    for k, a in attacks.items():
        r = run_attack(model, a, x, y, seed, batch_size, where)
        acc[k], loss[k] = r["accuracy"], r["loss"]
        worst &= r["mask"]
    return acc, loss, int(worst.sum()) / x.shape[0]


# size: two verdicts, each with the numbers behind it, in one report
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

    Reports every accuracy, mean loss and the per-sample worst case. Passes if

    - ``gaps_passed``: PGD on *each* of the three DEQ gradients leaves at most ``max_gap`` (plus ``tol_samples``
      samples) more accuracy than the strongest attack: a larger gap means that gradient is masked, and an
      evaluation that uses it (the model's default, or a library's) overstates robustness;
    - ``informative_passed``: PGD on each gradient raises the mean cross-entropy above that of its own random start
      (same seed): PGD on a zero gradient never leaves its start, whatever the other gradients do.

    Args:
        state_indices: solver iterates for the intermediate-state attacks; default {1, S/2, S} with S the mean
            number of solver steps on x. One attack per index, plus their ensemble when there are several.
        phantom_steps, phantom_tau: the k damped steps (and their damping tau) of the intermediate-state attacks.

    Not applicable (``passed`` None) to a model without a DEQ layer.
    """
    where = "check_gradient_choices"
    x, y = check_samples(x, y, where, model)
    norm = check_norm(norm, where)
    eps = check_eps(eps, norm, where)
    seed, batch_size = check_run(seed, batch_size, where)
    max_gap = check_probability(max_gap, "max_gap", where)
    tol = tolerance(tol_samples, x.shape[0], where)
    state_indices = check_state_indices(state_indices, where)
    if not deq_modules(model):
        return {"name": "gradient_choices", "passed": None, "skipped": "the model has no DEQ layer"}
    start = time.perf_counter()
    attacks, idx = gradient_attacks(model, x, eps, norm, steps, state_indices, phantom_steps, phantom_tau, batch_size)
    acc, loss, worst_acc = _results(model, attacks, x, y, seed, batch_size, where)
    noise_loss = run_attack(model, RandomStart(eps, norm), x, y, seed, batch_size, where)["loss"]
    strongest = min(acc, key=acc.get)
    gaps = {g: acc[f"pgd_{g}"] - acc[strongest] for g in GRADS}
    informative = {g: loss_rises(loss[f"pgd_{g}"], noise_loss) for g in GRADS}
    gaps_ok = max(gaps.values()) <= max_gap + tol
    return {
        "name": "gradient_choices",
        "passed": bool(gaps_ok and all(informative.values())),
        "accuracy": acc,
        "loss": loss,
        "loss_random_start": noise_loss,
        "worst_case_accuracy": worst_acc,
        "strongest": strongest,
        "gaps": gaps,
        "weakest_gradient": max(gaps, key=gaps.get),
        "gap_to_ift": gaps["ift"],
        "gaps_passed": bool(gaps_ok),
        "informative": informative,
        "informative_passed": bool(all(informative.values())),
        "max_gap": max_gap,
        "state_indices": list(idx),
        "phantom_steps": phantom_steps,
        "phantom_tau": phantom_tau,
        "steps": steps,
        "eps": eps,
        "norm": norm,
        "seconds": time.perf_counter() - start,
    }


def _margin(logits: Tensor, y: Tensor) -> Tensor:
    """Per sample, the best wrong logit minus the right one (an attacker raises it; > 0 is misclassified)."""
    right = logits.gather(1, y[:, None]).squeeze(1)
    wrong = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return wrong - right


def _input_gradients(model: nn.Module, xb: Tensor, yb: Tensor, step: float, min_uphill: float) -> Dict[str, Any]:
    """Per gradient choice (the model's own, then every DEQ gradient): finiteness, norms and the uphill probe of
    d margin / d x: the fraction of samples whose margin rises after a step of ``step`` along the sign of it."""
    modes: List[Optional[str]] = [None] + (list(GRADS) if deq_modules(model) else [])
    grads: Dict[str, Dict[str, Any]] = {}
    with torch.no_grad():
        before = _margin(model(xb), yb)
    for mode in modes:
        with attack_gradient(model, mode):
            xr = xb.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(_margin(model(xr), yb).sum(), xr)
        with torch.no_grad():
            after = _margin(model((xb + step * g.sign()).clamp(0.0, 1.0)), yb)
        norms = g.double().flatten(1).norm(dim=1)  # in double: a norm of 1e-30 does not underflow to 0
        finite = bool(torch.isfinite(g).all())
        uphill = float((after > before).float().mean())
        grads["model" if mode is None else mode] = {
            "finite": finite,
            "n_zero": int((norms == 0).sum()),
            "min_norm": float(norms.min()),
            "mean_norm": float(norms.mean()),
            "uphill_fraction": uphill,
            "passed": bool(finite and uphill >= min_uphill),
        }
    return grads


def check_determinism_gradients(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int = 256,
    atol: float = 1e-6,
    probe_step: float = 1 / 255,
    min_uphill: float = 0.9,
) -> Dict[str, Any]:
    """Check 6: two forward passes give the same logits, and the input gradient is finite and informative, under
    the model's own gradient and (for DEQs) every gradient choice.

    Informative: a step of ``probe_step`` (one grey level) along the sign of the gradient of the margin loss (best
    wrong logit minus right logit) raises the margin for at least ``min_uphill`` of the samples. A zero gradient
    fails, and so does a gradient that is nonzero but too small to move the logits (1e-30 passes a "nonzero" test)
    or that points anywhere but uphill. The margin, unlike the cross-entropy, does not saturate at confident
    samples (whose cross-entropy is 0 in float32).
    """
    where = "check_determinism_gradients"
    x, y = check_samples(x, y, where, model)
    batch_size = check_int(batch_size, "batch_size", where, minimum=1)
    atol = check_nonnegative(atol, "atol", where)
    probe_step = check_positive(probe_step, "probe_step", where)
    min_uphill = check_probability(min_uphill, "min_uphill", where)
    start = time.perf_counter()
    dev = model_device(model, torch.device("cpu"))
    was = model.training
    model.eval()
    try:
        xb, yb = x[:batch_size].to(dev), y[:batch_size].to(dev)
        with torch.no_grad(), tracked(model):
            a, b = check_logits(model(xb), xb.shape[0], where), check_logits(model(xb), xb.shape[0], where)
        check_labels_in_range(yb, a.shape[1], where)
        logit_diff = float((a - b).abs().max())
        with tracked(model):
            grads = _input_gradients(model, xb, yb, probe_step, min_uphill)
    finally:
        model.train(was)
    deterministic = logit_diff <= atol
    return {
        "name": "determinism_and_gradients",
        "passed": bool(deterministic and all(v["passed"] for v in grads.values())),
        "deterministic": bool(deterministic),
        "max_logit_difference": logit_diff,
        "gradients": grads,
        "probe_step": probe_step,
        "min_uphill": min_uphill,
        "n_samples": int(xb.shape[0]),
        "seconds": time.perf_counter() - start,
    }
