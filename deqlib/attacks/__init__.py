"""Adversarial attacks on (DEQ) classifiers of [0, 1] images.

* Validated adapters over torchattacks 3.5.1: :func:`fgsm`, :func:`pgd` / :func:`pgd_l2`, :func:`cw`,
  :func:`apgd_ce`, :func:`apgd_t`, :func:`fab_t`, :func:`square`, and :func:`autoattack_standard`, the official
  AutoAttack "standard" set (APGD-CE and APGD-T with 100 steps, 9 targets, FAB-T, Square with 5000 queries).
  ``torchattacks.AutoAttack`` uses 10 APGD steps: it is not the standard AutoAttack.
* :func:`make_attack` by name (:func:`available_attacks`, :func:`register_attack`).
* :func:`attack_gradient`: which DEQ gradient ("ift", "phantom", "unroll") the attacker follows; every
  white-box adapter also takes ``gradient=``.
* DEQ-specific: :class:`IntermediateStateAttack` and :class:`EnsembleIntermediateAttack` (Yang et al. 2022).
* :func:`robust_accuracy`, with the threat model checked on every batch.

Radii are on the [0, 1] pixel scale: an L-infinity eps of 8/255, not 8 (which raises ValueError).
"""

from ._checks import NORMS, check_eps, check_norm, perturbation_norm, project
from .adapters import (
    AUTOATTACK_STANDARD,
    apgd_ce,
    apgd_t,
    attack_name,
    attack_options,
    attack_params,
    autoattack_standard,
    available_attacks,
    cw,
    fab_t,
    fgsm,
    make_attack,
    pgd,
    pgd_l2,
    register_attack,
    square,
)
from .gradient import attack_gradient, deq_modules
from .intermediate import EnsembleIntermediateAttack, IntermediateStateAttack
from .robust import predict, robust_accuracy

__all__ = [
    "NORMS",
    "AUTOATTACK_STANDARD",
    "check_eps",
    "check_norm",
    "perturbation_norm",
    "project",
    "fgsm",
    "pgd",
    "pgd_l2",
    "cw",
    "apgd_ce",
    "apgd_t",
    "fab_t",
    "square",
    "autoattack_standard",
    "make_attack",
    "register_attack",
    "available_attacks",
    "attack_options",
    "attack_name",
    "attack_params",
    "attack_gradient",
    "deq_modules",
    "IntermediateStateAttack",
    "EnsembleIntermediateAttack",
    "predict",
    "robust_accuracy",
]
