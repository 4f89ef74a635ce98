"""What the report, the masking checks and the battery share (private).

- :func:`check_samples` — ``x`` (N, ...) [0, 1] images and ``y`` (N,) integer labels (int64; floats refused), detached;
- :func:`check_run` — the seed and the batch size; :func:`check_state_indices` — solver iterates to attack;
- :func:`run_attack` — one attack over the samples, seeded: per-sample survival mask and loss, accuracy, timing;
- :class:`RandomStart` — the random-noise baseline: the random start of PGD, without a single gradient step;
- :func:`clean_correct` — the per-sample clean correctness;
- :func:`tolerance` — ``tol_samples`` samples as a fraction of N (the slack of every accuracy comparison);
- :func:`loss_rises` — whether an attack's mean loss is above its random start's (the gradient steps did something);
- :func:`default_state_indices`, :func:`gradient_attacks` — PGD under each DEQ gradient and the intermediate-state
  attacks (the masking check of the gradient choices and the battery run the same set).
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torchattacks.attack import Attack

from .._modules import deq_modules, model_device
from .._validate import check_class_labels, check_images, check_int, check_module, check_seed
from ..attacks import EnsembleIntermediateAttack, IntermediateStateAttack, pgd
from ..attacks.robust import attack_batches, correct, seeded, threat_model, tracked
from ..deq import GRADS
from ..threat import random_start


def check_samples(x: Any, y: Any, where: str, model: Any = None) -> Tuple[Tensor, Tensor]:
    """The evaluation samples: x (N, ...) [0, 1] images with N > 0, y (N,) integer labels, as int64 (float labels
    are refused, never truncated; their range is checked against the model's logits by :func:`clean_correct`).
    With ``model``, it must be a ``torch.nn.Module``."""
    if model is not None:
        check_module(model, where)
    x = check_images(x, where, "x")
    y = check_class_labels(y, x.shape[0], where, "y")
    return x.detach(), y.detach()


def check_state_indices(value: Any, where: str) -> Optional[Tuple[int, ...]]:
    """None (the default {1, S/2, S}) or a non-empty sequence of solver iterates, ints >= 0."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(
            f"{where}: state_indices must be None or a sequence of ints, got {type(value).__name__} {value!r}"
        )
    out = tuple(check_int(i, "state index", where, minimum=0) for i in value)
    if not out:
        raise ValueError(f"{where}: state_indices must list at least one solver iterate (or be None)")
    return out


def check_run(seed: Any, batch_size: Any, where: str) -> Tuple[int, int]:
    """The seed (an int in [0, 2**32)) and the batch size (an int >= 1)."""
    return check_seed(seed, where), check_int(batch_size, "batch_size", where, minimum=1)


def tolerance(tol_samples: Any, n: int, where: str) -> float:
    """``tol_samples`` (an int >= 0) samples as a fraction of ``n``, plus a rounding epsilon."""
    return check_int(tol_samples, "tol_samples", where, minimum=0) / n + 1e-12


class RandomStart:
    """The random-noise baseline of an attack: a uniform point of the eps-ball ∩ [0, 1] (L-infinity: uniform per
    pixel; L2: uniform direction and radius), drawn from torch's global generator exactly as torchattacks' PGD
    draws its random start. Under the same seed, PGD from this point with zero gradient steps returns it."""

    def __init__(self, eps: float, norm: str) -> None:
        self.eps, self.norm = eps, norm
        self._deqlib_name = "random_start"

    def __call__(self, images: Tensor, labels: Tensor) -> Tensor:
        return random_start(images.detach(), self.eps, self.norm) if self.eps > 0 else images.detach().clone()


def run_attack(
    model: nn.Module, attack: Attack, x: Tensor, y: Tensor, seed: int, batch_size: int, where: str = "evaluate"
) -> Dict[str, Any]:
    """Per-sample results of one attack, with torch's generator seeded by ``seed`` (and restored afterwards).

    Returns ``mask`` (the samples that stay correct), ``loss`` (the mean cross-entropy at the adversarial points),
    ``accuracy``, ``n_correct``, ``eps``, ``norm``, ``seconds`` and ``max_perturbation``.
    """
    eps, norm = threat_model(attack)
    start = time.perf_counter()
    with seeded(seed, model_device(model)), tracked(model):
        out = attack_batches(model, attack, x, y, eps=eps, norm=norm, batch_size=batch_size, where=where)
    n = int(x.shape[0])
    ok = out["adv_correct"]
    return {
        "mask": ok,
        "loss": float(out["adv_loss"].mean()),
        "accuracy": int(ok.sum()) / n,
        "n_correct": int(ok.sum()),
        "eps": eps,
        "norm": norm,
        "seconds": time.perf_counter() - start,
        "max_perturbation": float(out["perturbation"].max()),
    }


def loss_rises(loss: float, baseline: float, rel: float = 1e-3) -> bool:
    """Whether a mean loss is above the random-start baseline by more than a relative ``rel`` (strictly)."""
    return loss > baseline + rel * abs(baseline)


def clean_correct(model: nn.Module, x: Tensor, y: Tensor, batch_size: int, where: str = "evaluate") -> Tensor:
    """A bool mask (on the CPU) of the samples the model classifies correctly without attack; the model's logits
    and the labels' range are checked (:func:`deqlib.attacks.robust.correct`)."""
    with tracked(model):
        return correct(model, x, y, batch_size, where)[0]


def default_state_indices(model: nn.Module, x: Tensor, batch_size: int) -> Tuple[int, ...]:
    """{1, S/2, S} with S the mean number of solver steps on the first batch of x."""
    with tracked(model), torch.no_grad():
        _, info = model.solve(x[:batch_size].to(model_device(model, torch.device("cpu"))), record=False)
    s = max(1, int(round(float(info.steps.float().mean()))))
    return tuple(sorted({1, max(1, s // 2), s}))


def has_states(model: nn.Module) -> bool:
    """Whether the model exposes the solver states that the intermediate-state attacks need."""
    return all(callable(getattr(model, a, None)) for a in ("inject", "solve", "logits_from_state"))


def gradient_attacks(
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
    """PGD on every DEQ gradient choice (``pgd_ift``, ...; plain ``pgd`` for a model without a DEQ layer), and the
    intermediate-state attacks (``intermediate_<i>``, ``ensemble_<i>_<j>...``) when the model exposes its states."""
    if deq_modules(model):
        attacks: Dict[str, Any] = {f"pgd_{g}": pgd(model, eps, steps=steps, norm=norm, gradient=g) for g in GRADS}
    else:
        attacks = {"pgd": pgd(model, eps, steps=steps, norm=norm)}
    if not has_states(model):
        return attacks, ()
    idx = check_state_indices(state_indices, "gradient_attacks")
    idx = default_state_indices(model, x, batch_size) if idx is None else idx
    common = dict(steps=steps, phantom_steps=phantom_steps, phantom_tau=phantom_tau, norm=norm)
    for i in idx:
        attacks[f"intermediate_{i}"] = IntermediateStateAttack(model, eps, state_index=i, **common)
    if len(idx) > 1:
        attacks["ensemble_" + "_".join(map(str, idx))] = EnsembleIntermediateAttack(
            model, eps, state_indices=idx, **common
        )
    return attacks, idx
