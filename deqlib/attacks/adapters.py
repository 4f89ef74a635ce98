"""Validated adapters over torchattacks 3.5.1 and the AutoAttack "standard" set.

API map: :func:`fgsm`, :func:`pgd`, :func:`pgd_l2`, :func:`cw`, :func:`apgd_ce`, :func:`apgd_t`, :func:`fab_t`,
:func:`square` and :func:`autoattack_standard`, registered under their names (see :mod:`deqlib.attacks.registry`).
Each one hands its arguments to :func:`deqlib.attacks.builder.build_attack`, whose table
(:data:`~deqlib.attacks.builder.ADAPTERS`) says how each is validated and passed to torchattacks.

Every adapter returns a ``torchattacks.Attack`` (so attacks combine with ``torchattacks.MultiAttack``) whose
``forward`` additionally returns the clean images unchanged when eps = 0, runs under
:func:`~deqlib.attacks.attack_gradient` when a ``gradient=`` was asked for, and projects the result onto the
eps-ball ∩ [0, 1].

Defaults follow the papers: APGD-CE / APGD-T / FAB-T use 100 steps and 1 restart, APGD-T and FAB-T 9 target classes,
Square 5000 queries, as in the official AutoAttack "standard" version (Croce & Hein 2020, ``fra31/auto-attack``).
``torchattacks.AutoAttack`` builds its APGD attacks with torchattacks' default of **10 steps** (and n_classes - 1
targets): it is NOT the standard AutoAttack, and numbers obtained with it must not be reported as such.
"""

from __future__ import annotations

from typing import Optional

from torch import nn
from torchattacks.attack import Attack

from ..threat import check_norm
from .builder import ADAPTERS, AUTOATTACK_STANDARD, build_attack
from .registry import register_attack

__all__ = [
    "fgsm",
    "pgd",
    "pgd_l2",
    "cw",
    "apgd_ce",
    "apgd_t",
    "fab_t",
    "square",
    "autoattack_standard",
    "ADAPTERS",
    "AUTOATTACK_STANDARD",
]


# Each adapter passes its arguments (``locals()`` as its first statement) to the builder: the table says the rest.
def fgsm(model: nn.Module, eps: float, *, gradient: Optional[str] = None) -> Attack:
    """FGSM (Goodfellow et al. 2015), L-infinity: one signed-gradient step of size eps.

    Args:
        model: maps [0, 1] images (N, C, H, W) to logits.
        eps: L-infinity radius, on the [0, 1] pixel scale (8/255, not 8).
        gradient: None (the model's own setting) or the DEQ gradient the attacker uses: "ift", "phantom", "unroll".
    """
    return build_attack("fgsm", locals())


def pgd(
    model: nn.Module,
    eps: float,
    *,
    alpha: Optional[float] = None,
    steps: int = 10,
    random_start: bool = True,
    norm: str = "Linf",
    gradient: Optional[str] = None,
) -> Attack:
    """PGD (Madry et al. 2018) on the cross-entropy, L-infinity (signed steps) or L2 (normalised steps).

    Returns the last iterate (torchattacks' semantics), started uniformly in the ball when ``random_start``;
    the random start uses the global torch generator (seed it, or use :func:`robust_accuracy`'s ``seed``).

    Args:
        eps: radius on the [0, 1] pixel scale.
        alpha: step size; default 2.5 * eps / steps.
        steps: number of gradient steps (>= 1).
        norm: "Linf" or "L2".
        gradient: None or "ift" / "phantom" / "unroll" (see :func:`attack_gradient`).

    Example:
        >>> from deqlib.cells import mlp_classifier
        >>> model = mlp_classifier((1, 8, 8), 10, mean=(0.3,), std=(0.4,), width=8)
        >>> atk = pgd(model, 8 / 255, steps=5)
        >>> atk.steps, round(atk.alpha * 255, 3), atk.norm
        (5, 4.0, 'Linf')
    """
    args = dict(locals())  # a copy: the arguments only
    if check_norm(norm, "pgd") == "L2":
        return build_attack("pgd_l2", {k: v for k, v in args.items() if k != "norm"})
    return build_attack("pgd", args)


def pgd_l2(
    model: nn.Module,
    eps: float,
    *,
    alpha: Optional[float] = None,
    steps: int = 10,
    random_start: bool = True,
    gradient: Optional[str] = None,
) -> Attack:
    """PGD in the L2 norm: :func:`pgd` with ``norm="L2"``."""
    return build_attack("pgd_l2", locals())


def cw(
    model: nn.Module,
    eps: float,
    *,
    c: float = 1.0,
    kappa: float = 0.0,
    steps: int = 100,
    lr: float = 0.01,
    gradient: Optional[str] = None,
) -> Attack:
    """Carlini-Wagner L2 (torchattacks.CW), projected onto the L2 eps-ball.

    CW minimises ||delta||_2^2 + c * margin; it has no radius of its own. Its result is projected onto the L2
    eps-ball intersected with [0, 1], so it is a valid eps-bounded attack, but usually weaker than PGD-L2 at the
    same eps: use it as a diverse second opinion, not as the headline number.
    """
    return build_attack("cw", locals())


def apgd_ce(
    model: nn.Module,
    eps: float,
    *,
    norm: str = "Linf",
    steps: int = 100,
    n_restarts: int = 1,
    seed: int = 0,
    rho: float = 0.75,
    eot_iter: int = 1,
    gradient: Optional[str] = None,
) -> Attack:
    """APGD on the cross-entropy (Croce & Hein 2020). Defaults: the AutoAttack standard (100 steps, 1 restart).

    APGD seeds torch's global generator with ``seed`` at each call (torchattacks' behaviour).
    """
    return build_attack("apgd_ce", locals())


def apgd_t(
    model: nn.Module,
    eps: float,
    *,
    norm: str = "Linf",
    steps: int = 100,
    n_restarts: int = 1,
    n_classes: int = 10,
    n_target_classes: Optional[int] = None,
    seed: int = 0,
    rho: float = 0.75,
    eot_iter: int = 1,
    gradient: Optional[str] = None,
) -> Attack:
    """Targeted APGD on the targeted DLR loss, run once per target class (the top-2..top-(k+1) classes).

    Defaults: the AutoAttack standard (100 steps, 1 restart, 9 target classes; ``n_target_classes`` defaults
    to min(9, n_classes - 1)).
    """
    return build_attack("apgd_t", locals())


def fab_t(
    model: nn.Module,
    eps: float,
    *,
    norm: str = "Linf",
    steps: int = 100,
    n_restarts: int = 1,
    n_classes: int = 10,
    n_target_classes: Optional[int] = None,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    seed: int = 0,
    gradient: Optional[str] = None,
) -> Attack:
    """Targeted FAB (Croce & Hein 2020), one run per target class; a point counts only within eps.

    Defaults: the AutoAttack standard (100 steps, 1 restart, 9 target classes).
    """
    return build_attack("fab_t", locals())


def square(
    model: nn.Module,
    eps: float,
    *,
    norm: str = "Linf",
    n_queries: int = 5000,
    n_restarts: int = 1,
    p_init: float = 0.8,
    loss: str = "margin",
    resc_schedule: bool = True,
    seed: int = 0,
) -> Attack:
    """Square attack (Andriushchenko et al. 2020): black-box random search using only the logits.

    ``resc_schedule=True`` (torchattacks' and the standalone attack's default) adapts the square-size schedule
    to ``n_queries``; the AutoAttack standard set uses ``resc_schedule=False`` with 5000 queries.
    """
    return build_attack("square", locals())


def autoattack_standard(
    model: nn.Module,
    eps: float,
    norm: str = "Linf",
    n_classes: int = 10,
    seed: int = 0,
    *,
    gradient: Optional[str] = None,
) -> Attack:
    """The AutoAttack "standard" ensemble with its official parameters, as a ``torchattacks.MultiAttack``.

    APGD-CE (100 steps, 1 restart), APGD-T (100 steps, 9 target classes), FAB-T (100 steps, 9 target classes),
    Square (5000 queries, p_init 0.8, resc_schedule False), each run on the points the previous ones did not
    break (Croce & Hein 2020; ``fra31/auto-attack``, version "standard"). With fewer than 10 classes the
    number of targets is n_classes - 1.

    ``torchattacks.AutoAttack(version="standard")`` is *not* this: it leaves APGD / APGD-T / FAB at
    torchattacks' default of 10 steps. Never report its numbers as "AutoAttack (standard)".

    Args:
        gradient: the DEQ gradient the white-box members use (None: the model's own setting).
    """
    return build_attack("autoattack", locals())


register_attack("fgsm", fgsm)
register_attack("pgd", pgd, aliases=("pgd_linf", "linf_pgd"))
register_attack("pgd_l2", pgd_l2, aliases=("l2_pgd", "pgdl2"))
register_attack("cw", cw, aliases=("cw_l2", "carlini_wagner"))
register_attack("apgd_ce", apgd_ce, aliases=("apgd",))
register_attack("apgd_t", apgd_t, aliases=("apgdt", "apgd_targeted"))
register_attack("fab_t", fab_t, aliases=("fab_targeted",))
register_attack("square", square)
register_attack("autoattack", autoattack_standard, aliases=("autoattack_standard", "aa"))
