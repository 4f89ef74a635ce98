"""Validated adapters over torchattacks 3.5.1, the AutoAttack "standard" set, and a registry by name.

Every adapter returns a ``torchattacks.Attack`` (so attacks combine with ``torchattacks.MultiAttack``) whose
``forward`` additionally

* returns the clean images unchanged when eps = 0,
* runs under :func:`~deqlib.attacks.attack_gradient` when a ``gradient=`` was asked for (the DEQ's
  ``.grad`` is switched for the attack and restored afterwards),
* projects the result onto the eps-ball intersected with [0, 1]. For the projected-gradient attacks this only
  removes floating-point drift; for CW (a minimum-norm attack) it makes the attack respect the threat model.

Defaults follow the papers: APGD-CE / APGD-T / FAB-T use 100 steps and 1 restart, APGD-T and FAB-T 9 target
classes, Square 5000 queries, as in the official AutoAttack "standard" version (Croce & Hein 2020,
``fra31/auto-attack``). ``torchattacks.AutoAttack`` builds its APGD attacks with torchattacks' default of
**10 steps** (and n_classes - 1 targets): it is NOT the standard AutoAttack, and numbers obtained with it must
not be reported as such. Use :func:`autoattack_standard`.
"""

from __future__ import annotations

import inspect
import math
import re
from typing import Any, Callable, Dict, Optional, Tuple

from torch import Tensor, nn

try:
    import torchattacks
    from torchattacks.attack import Attack
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "deqlib.attacks needs torchattacks 3.5.1: pip install --no-deps torchattacks==3.5.1 "
        "(--no-deps: it pins an old version of requests that it does not need)"
    ) from e

from ._checks import (
    check_eps,
    check_fraction,
    check_int,
    check_l2_scale,
    check_norm,
    check_positive,
    check_seed,
    project,
)
from .gradient import attack_gradient, check_gradient

#: The official AutoAttack "standard" parameters (Croce & Hein 2020; fra31/auto-attack, set_version("standard")).
AUTOATTACK_STANDARD: Dict[str, Dict[str, Any]] = {
    "apgd_ce": {"steps": 100, "n_restarts": 1, "rho": 0.75, "eot_iter": 1, "loss": "ce"},
    "apgd_t": {
        "steps": 100,
        "n_restarts": 1,
        "rho": 0.75,
        "eot_iter": 1,
        "n_target_classes": 9,
        "loss": "dlr-targeted",
    },
    "fab_t": {"steps": 100, "n_restarts": 1, "n_target_classes": 9, "alpha_max": 0.1, "eta": 1.05, "beta": 0.9},
    "square": {"n_queries": 5000, "n_restarts": 1, "p_init": 0.8, "loss": "margin", "resc_schedule": False},
}


def _check_model(model: object, where: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{where}: model must be a torch.nn.Module returning (N, classes) logits, got {type(model).__name__}"
        )
    if next(model.parameters(), None) is None:
        raise ValueError(f"{where}: the model has no parameters (torchattacks finds the device from them)")
    return model


class _Guarded:
    """Mixin for deqlib's torchattacks subclasses: eps = 0 short cut, gradient switch, final projection."""

    def _deqlib_setup(self, name: str, eps: float, norm: str, gradient: Optional[str], params: Dict[str, Any]) -> None:
        self.eps = eps
        self.norm = norm
        self.gradient = gradient
        self._deqlib_name = name
        self._deqlib_params = {"eps": eps, "norm": norm, **params, "gradient": gradient}

    def forward(self, images: Tensor, labels: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        if self.norm == "L2":
            check_l2_scale(self.eps, images, self._deqlib_name)
        if self.eps == 0:
            return images
        with attack_gradient(self.model, self.gradient):
            adv = super().forward(images, labels, *args, **kwargs)  # type: ignore[misc]
        return project(adv.detach(), images, self.eps, self.norm)


class FGSMAttack(_Guarded, torchattacks.FGSM):
    """torchattacks.FGSM with deqlib's guards (see the module docstring)."""


class PGDAttack(_Guarded, torchattacks.PGD):
    """torchattacks.PGD (L-infinity) with deqlib's guards."""


class PGDL2Attack(_Guarded, torchattacks.PGDL2):
    """torchattacks.PGDL2 with deqlib's guards."""


class CWAttack(_Guarded, torchattacks.CW):
    """torchattacks.CW (L2, minimum norm) whose result is projected onto the L2 eps-ball."""


class APGDAttack(_Guarded, torchattacks.APGD):
    """torchattacks.APGD with deqlib's guards."""


class APGDTAttack(_Guarded, torchattacks.APGDT):
    """torchattacks.APGDT (targeted DLR loss over several target classes) with deqlib's guards."""


class FABAttack(_Guarded, torchattacks.FAB):
    """torchattacks.FAB with deqlib's guards."""


class SquareAttack(_Guarded, torchattacks.Square):
    """torchattacks.Square (black-box, score-based) with deqlib's guards."""


def _default_alpha(eps: float, steps: int) -> float:
    return 2.5 * eps / steps


def _alpha(alpha: Optional[float], eps: float, steps: int, norm: str, where: str) -> float:
    if alpha is None:
        return _default_alpha(eps, steps)
    return check_positive(alpha, "alpha (step size)", where, norm=norm)


def _targets(n_classes: int, n_target_classes: Optional[int], where: str) -> Tuple[int, int]:
    n_classes = check_int(n_classes, "n_classes", where, minimum=2)
    if n_target_classes is None:
        n_target_classes = min(9, n_classes - 1)
    n_target_classes = check_int(n_target_classes, "n_target_classes", where, minimum=1)
    if n_target_classes > n_classes - 1:
        raise ValueError(
            f"{where}: n_target_classes must be <= n_classes - 1 = {n_classes - 1}, got {n_target_classes}"
        )
    return n_classes, n_target_classes


# ---------------------------------------------------------------------------------------------------- adapters
def fgsm(model: nn.Module, eps: float, *, gradient: Optional[str] = None) -> Attack:
    """FGSM (Goodfellow et al. 2015), L-infinity: one signed-gradient step of size eps.

    Args:
        model: maps [0, 1] images (N, C, H, W) to logits.
        eps: L-infinity radius, on the [0, 1] pixel scale (8/255, not 8).
        gradient: None (the model's own setting) or the DEQ gradient the attacker uses: "ift", "phantom", "unroll".
    """
    where = "fgsm"
    _check_model(model, where)
    eps = check_eps(eps, "Linf", where)
    gradient = check_gradient(gradient, where)
    atk = FGSMAttack(model, eps=eps)
    atk._deqlib_setup(where, eps, "Linf", gradient, {})
    return atk


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
    """
    where = "pgd" if check_norm(norm, "pgd") == "Linf" else "pgd_l2"
    _check_model(model, where)
    norm = check_norm(norm, where)
    eps = check_eps(eps, norm, where)
    steps = check_int(steps, "steps", where)
    alpha = _alpha(alpha, eps, steps, norm, where)
    gradient = check_gradient(gradient, where)
    cls = PGDAttack if norm == "Linf" else PGDL2Attack
    atk = cls(model, eps=eps, alpha=alpha, steps=steps, random_start=bool(random_start))
    atk._deqlib_setup(where, eps, norm, gradient, {"alpha": alpha, "steps": steps, "random_start": bool(random_start)})
    return atk


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
    return pgd(model, eps, alpha=alpha, steps=steps, random_start=random_start, norm="L2", gradient=gradient)


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
    where = "cw"
    _check_model(model, where)
    eps = check_eps(eps, "L2", where)
    c = check_positive(c, "c", where)
    kappa = float(kappa)
    if not math.isfinite(kappa) or kappa < 0:
        raise ValueError(f"{where}: kappa must be a finite number >= 0, got {kappa!r}")
    steps = check_int(steps, "steps", where)
    lr = check_positive(lr, "lr", where)
    gradient = check_gradient(gradient, where)
    atk = CWAttack(model, c=c, kappa=kappa, steps=steps, lr=lr)
    atk._deqlib_setup(where, eps, "L2", gradient, {"c": c, "kappa": kappa, "steps": steps, "lr": lr})
    return atk


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
    where = "apgd_ce"
    _check_model(model, where)
    norm = check_norm(norm, where)
    eps = check_eps(eps, norm, where)
    steps = check_int(steps, "steps", where)
    n_restarts = check_int(n_restarts, "n_restarts", where)
    seed = check_seed(seed, where)
    rho = check_fraction(rho, "rho", where)
    eot_iter = check_int(eot_iter, "eot_iter", where)
    gradient = check_gradient(gradient, where)
    atk = APGDAttack(
        model, norm=norm, eps=eps, steps=steps, n_restarts=n_restarts, seed=seed, loss="ce", eot_iter=eot_iter, rho=rho
    )
    atk._deqlib_setup(
        where,
        eps,
        norm,
        gradient,
        {"steps": steps, "n_restarts": n_restarts, "seed": seed, "loss": "ce", "rho": rho, "eot_iter": eot_iter},
    )
    return atk


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
    where = "apgd_t"
    _check_model(model, where)
    norm = check_norm(norm, where)
    eps = check_eps(eps, norm, where)
    steps = check_int(steps, "steps", where)
    n_restarts = check_int(n_restarts, "n_restarts", where)
    n_classes, n_target_classes = _targets(n_classes, n_target_classes, where)
    seed = check_seed(seed, where)
    rho = check_fraction(rho, "rho", where)
    eot_iter = check_int(eot_iter, "eot_iter", where)
    gradient = check_gradient(gradient, where)
    atk = APGDTAttack(
        model,
        norm=norm,
        eps=eps,
        steps=steps,
        n_restarts=n_restarts,
        seed=seed,
        eot_iter=eot_iter,
        rho=rho,
        n_classes=n_classes,
    )
    atk.n_target_classes = n_target_classes
    atk._deqlib_setup(
        where,
        eps,
        norm,
        gradient,
        {
            "steps": steps,
            "n_restarts": n_restarts,
            "n_classes": n_classes,
            "n_target_classes": n_target_classes,
            "seed": seed,
            "loss": "dlr-targeted",
            "rho": rho,
            "eot_iter": eot_iter,
        },
    )
    return atk


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
    where = "fab_t"
    _check_model(model, where)
    norm = check_norm(norm, where)
    eps = check_eps(eps, norm, where)
    steps = check_int(steps, "steps", where)
    n_restarts = check_int(n_restarts, "n_restarts", where)
    n_classes, n_target_classes = _targets(n_classes, n_target_classes, where)
    alpha_max = check_fraction(alpha_max, "alpha_max", where)
    eta = check_positive(eta, "eta", where)
    beta = check_fraction(beta, "beta", where)
    seed = check_seed(seed, where)
    gradient = check_gradient(gradient, where)
    atk = FABAttack(
        model,
        norm=norm,
        eps=eps,
        steps=steps,
        n_restarts=n_restarts,
        alpha_max=alpha_max,
        eta=eta,
        beta=beta,
        seed=seed,
        multi_targeted=True,
        n_classes=n_classes,
    )
    atk.n_target_classes = n_target_classes
    atk._deqlib_setup(
        where,
        eps,
        norm,
        gradient,
        {
            "steps": steps,
            "n_restarts": n_restarts,
            "n_classes": n_classes,
            "n_target_classes": n_target_classes,
            "alpha_max": alpha_max,
            "eta": eta,
            "beta": beta,
            "seed": seed,
            "targeted": True,
        },
    )
    return atk


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
    where = "square"
    _check_model(model, where)
    norm = check_norm(norm, where)
    eps = check_eps(eps, norm, where)
    n_queries = check_int(n_queries, "n_queries", where)
    n_restarts = check_int(n_restarts, "n_restarts", where)
    p_init = check_fraction(p_init, "p_init", where)
    if loss not in ("margin", "ce"):
        raise ValueError(f"{where}: loss must be 'margin' or 'ce', got {loss!r}")
    seed = check_seed(seed, where)
    atk = SquareAttack(
        model,
        norm=norm,
        eps=eps,
        n_queries=n_queries,
        n_restarts=n_restarts,
        p_init=p_init,
        loss=loss,
        resc_schedule=bool(resc_schedule),
        seed=seed,
    )
    atk._deqlib_setup(
        where,
        eps,
        norm,
        None,
        {
            "n_queries": n_queries,
            "n_restarts": n_restarts,
            "p_init": p_init,
            "loss": loss,
            "resc_schedule": bool(resc_schedule),
            "seed": seed,
        },
    )
    return atk


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
    where = "autoattack_standard"
    _check_model(model, where)
    norm = check_norm(norm, where)
    eps = check_eps(eps, norm, where)
    n_classes, n_targets = _targets(n_classes, None, where)
    seed = check_seed(seed, where)
    gradient = check_gradient(gradient, where)
    std = AUTOATTACK_STANDARD
    members = [
        apgd_ce(
            model,
            eps,
            norm=norm,
            steps=std["apgd_ce"]["steps"],
            n_restarts=std["apgd_ce"]["n_restarts"],
            seed=seed,
            rho=std["apgd_ce"]["rho"],
            gradient=gradient,
        ),
        apgd_t(
            model,
            eps,
            norm=norm,
            steps=std["apgd_t"]["steps"],
            n_restarts=std["apgd_t"]["n_restarts"],
            n_classes=n_classes,
            n_target_classes=n_targets,
            seed=seed,
            rho=std["apgd_t"]["rho"],
            gradient=gradient,
        ),
        fab_t(
            model,
            eps,
            norm=norm,
            steps=std["fab_t"]["steps"],
            n_restarts=std["fab_t"]["n_restarts"],
            n_classes=n_classes,
            n_target_classes=n_targets,
            alpha_max=std["fab_t"]["alpha_max"],
            eta=std["fab_t"]["eta"],
            beta=std["fab_t"]["beta"],
            seed=seed,
            gradient=gradient,
        ),
        square(
            model,
            eps,
            norm=norm,
            n_queries=std["square"]["n_queries"],
            n_restarts=std["square"]["n_restarts"],
            p_init=std["square"]["p_init"],
            loss=std["square"]["loss"],
            resc_schedule=std["square"]["resc_schedule"],
            seed=seed,
        ),
    ]
    multi = torchattacks.MultiAttack(members)
    multi.eps = eps
    multi.norm = norm
    multi._deqlib_name = "autoattack"
    multi._deqlib_params = {
        "eps": eps,
        "norm": norm,
        "n_classes": n_classes,
        "seed": seed,
        "gradient": gradient,
        "version": "standard",
        "attacks": [attack_params(m) | {"name": attack_name(m)} for m in members],
    }
    return multi


# ---------------------------------------------------------------------------------------------------- registry
AttackFactory = Callable[..., Attack]
_REGISTRY: Dict[str, AttackFactory] = {}
_ALIASES: Dict[str, str] = {}


def _key(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"attack name must be a str, got {type(name).__name__}")
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def register_attack(
    name: str, factory: Optional[AttackFactory] = None, *, aliases: Tuple[str, ...] = (), overwrite: bool = False
):
    """Register ``factory(model, eps, **params) -> torchattacks.Attack`` under ``name`` (usable as a decorator).

    Names are case-insensitive, and "-" or spaces mean "_" ("APGD-CE" is "apgd_ce").
    """
    key = _key(name)
    if not key:
        raise ValueError("attack name must be non-empty")

    def add(fn: AttackFactory) -> AttackFactory:
        if not callable(fn):
            raise TypeError(f"attack {name!r}: the factory must be callable")
        params = list(inspect.signature(fn).parameters)
        if len(params) < 2:
            raise TypeError(f"attack {name!r}: the factory must take (model, eps, **params)")
        for k in (key, *map(_key, aliases)):
            if (k in _REGISTRY or k in _ALIASES) and not overwrite and _REGISTRY.get(_ALIASES.get(k, k)) is not fn:
                raise ValueError(f"an attack named {k!r} is already registered (pass overwrite=True to replace it)")
        _REGISTRY[key] = fn
        for a in aliases:
            _ALIASES[_key(a)] = key
        return fn

    return add if factory is None else add(factory)


def available_attacks() -> Tuple[str, ...]:
    """The registered attack names (without aliases)."""
    return tuple(sorted(_REGISTRY))


def _resolve(name: str) -> Tuple[str, AttackFactory]:
    key = _key(name)
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise ValueError(f"unknown attack {name!r}; available: {', '.join(available_attacks())}")
    return key, _REGISTRY[key]


def attack_options(name: str) -> Tuple[str, ...]:
    """The keyword parameters the attack ``name`` accepts besides (model, eps)."""
    _, fn = _resolve(name)
    names = list(inspect.signature(fn).parameters)  # (model, eps, ...) for functions and classes alike
    return tuple(names[2:])


def make_attack(name: str, model: nn.Module, eps: float, **params: Any) -> Attack:
    """Build the registered attack ``name`` for ``model`` at radius ``eps``.

    Raises:
        ValueError: unknown name (the message lists the available ones) or an invalid parameter value.
        TypeError: a parameter the attack does not take (the message lists those it does).

    Example:
        >>> from deqlib.cells import mlp_classifier
        >>> model = mlp_classifier((1, 8, 8), 10, mean=(0.3,), std=(0.4,), width=8)
        >>> make_attack("PGD", model, 8 / 255, steps=5).steps
        5
    """
    key, fn = _resolve(name)
    accepted = attack_options(key)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise TypeError(f"attack {key!r} got unknown parameter(s) {unknown}; it accepts {list(accepted)}")
    return fn(model, eps, **params)


def attack_name(attack: Attack) -> str:
    """The registry name of an attack built by deqlib, else torchattacks' name (e.g. "PGD")."""
    return getattr(attack, "_deqlib_name", None) or str(getattr(attack, "attack", type(attack).__name__))


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Tensor) and value.numel() == 1:
        return _jsonable(value.item())
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


_SKIP = {
    "model",
    "model_name",
    "device",
    "attack",
    "supported_mode",
    "attack_mode",
    "targeted",
    "verbose",
    "normalization_used",
}


def attack_params(attack: Attack) -> Dict[str, Any]:
    """The attack's parameters as a JSON-able dict.

    Attacks built by deqlib report the validated parameters they were built with; other torchattacks attacks
    report their public scalar attributes; a MultiAttack reports its members under "attacks".
    """
    params = getattr(attack, "_deqlib_params", None)
    if params is not None:
        return _jsonable(dict(params))
    if isinstance(attack, torchattacks.MultiAttack):
        return {"attacks": [attack_params(a) | {"name": attack_name(a)} for a in attack.attacks]}
    out = {}
    for k, v in vars(attack).items():
        if k.startswith("_") or k in _SKIP:
            continue
        if v is None or isinstance(v, (bool, int, float, str)):
            out[k] = _jsonable(v)
    return out


def _register_builtins() -> None:
    register_attack("fgsm", fgsm)
    register_attack("pgd", pgd, aliases=("pgd_linf", "linf_pgd"))
    register_attack("pgd_l2", pgd_l2, aliases=("l2_pgd", "pgdl2"))
    register_attack("cw", cw, aliases=("cw_l2", "carlini_wagner"))
    register_attack("apgd_ce", apgd_ce, aliases=("apgd",))
    register_attack("apgd_t", apgd_t, aliases=("apgdt", "apgd_targeted"))
    register_attack("fab_t", fab_t, aliases=("fab_targeted",))
    register_attack("square", square)
    register_attack("autoattack", autoattack_standard, aliases=("autoattack_standard", "aa"))


_register_builtins()
