"""Adversarial attacks on (DEQ) classifiers of [0, 1] images.

Taught in chapter 5 (``notebooks/05_attacking_deqs.ipynb``).

API map:

* :mod:`~deqlib.attacks.adapters` — validated adapters over torchattacks 3.5.1: :func:`fgsm`, :func:`pgd` /
  :func:`pgd_l2`, :func:`cw`, :func:`apgd_ce`, :func:`apgd_t`, :func:`fab_t`, :func:`square`, and
  :func:`autoattack_standard`, the official AutoAttack "standard" set (:data:`AUTOATTACK_STANDARD`; APGD-CE and
  APGD-T with 100 steps, 9 targets, FAB-T, Square with 5000 queries). ``torchattacks.AutoAttack`` uses 10 APGD
  steps: it is not the standard AutoAttack.
* :mod:`~deqlib.attacks.builder` — the one builder behind the adapters and its parameter table :data:`ADAPTERS`
  (torchattacks class, arguments with defaults and validators, the post-construction patches of torchattacks).
* :mod:`~deqlib.attacks.registry` — attacks by name: :func:`make_attack`, :func:`register_attack`,
  :func:`available_attacks`, :func:`attack_options`; :func:`attack_name` and :func:`attack_params` for reports.
* :mod:`~deqlib.attacks.gradient` — :func:`attack_gradient`: which DEQ gradient ("ift", "phantom", "unroll") the
  attacker follows; every white-box adapter also takes ``gradient=``.
* :mod:`~deqlib.attacks.intermediate` — DEQ-specific: :class:`IntermediateStateAttack` and
  :class:`EnsembleIntermediateAttack` (Yang et al. 2022).
* :mod:`~deqlib.attacks.adaptive` — :class:`AdaptiveEntropyAttack`, through the entropy-reduction defence.
  The four adaptive attacks that defence is evaluated with (their per-sample worst case):
  :func:`entropy_adaptive_attacks` (:data:`ADAPTIVE_PRESETS`, :data:`ENTROPY_LAMBDA`, :func:`entropy_aware_loss`),
  built on :class:`DefenseGradient` and :class:`ObjectiveAPGD` (torchattacks' APGD with another loss).
* :mod:`~deqlib.attacks.transfer` — :class:`TransferAttack`: images crafted on one model, judged on another (how a
  defence is evaluated by an attacker who ignores it).
* :mod:`~deqlib.attacks.robust` — :func:`robust_accuracy`, with the threat model checked on every batch;
  :func:`predict`.
* Re-exported: the threat model of :mod:`deqlib.threat` (:data:`NORMS`, :func:`check_eps`, :func:`check_norm`,
  :func:`perturbation_norm`, :func:`project`) and :func:`deqlib._modules.deq_modules`.

Radii are on the [0, 1] pixel scale: an L-infinity eps of 8/255, not 8 (which raises ValueError).
"""

from .._modules import deq_modules
from ..threat import NORMS, check_eps, check_norm, perturbation_norm, project
from .adapters import (
    apgd_ce,
    apgd_t,
    autoattack_standard,
    cw,
    fab_t,
    fgsm,
    pgd,
    pgd_l2,
    square,
)
from .adaptive import (
    ADAPTIVE_PRESETS,
    ENTROPY_LAMBDA,
    AdaptiveEntropyAttack,
    DefenseGradient,
    ObjectiveAPGD,
    entropy_adaptive_attacks,
    entropy_aware_loss,
)
from .builder import ADAPTERS, AUTOATTACK_STANDARD
from .gradient import attack_gradient, check_gradient
from .intermediate import EnsembleIntermediateAttack, IntermediateStateAttack
from .registry import (
    attack_name,
    attack_options,
    attack_params,
    available_attacks,
    make_attack,
    register_attack,
)
from .robust import predict, robust_accuracy
from .transfer import TransferAttack

__all__ = [
    # adapters
    "ADAPTERS",
    "AUTOATTACK_STANDARD",
    "fgsm",
    "pgd",
    "pgd_l2",
    "cw",
    "apgd_ce",
    "apgd_t",
    "fab_t",
    "square",
    "autoattack_standard",
    # registry
    "make_attack",
    "register_attack",
    "available_attacks",
    "attack_options",
    "attack_name",
    "attack_params",
    # gradient
    "attack_gradient",
    "check_gradient",
    # DEQ-specific attacks
    "IntermediateStateAttack",
    "EnsembleIntermediateAttack",
    "AdaptiveEntropyAttack",
    "TransferAttack",
    "entropy_adaptive_attacks",
    "ADAPTIVE_PRESETS",
    "ENTROPY_LAMBDA",
    "entropy_aware_loss",
    "DefenseGradient",
    "ObjectiveAPGD",
    # robust accuracy
    "predict",
    "robust_accuracy",
    # re-exported
    "NORMS",
    "check_eps",
    "check_norm",
    "perturbation_norm",
    "project",
    "deq_modules",
]
