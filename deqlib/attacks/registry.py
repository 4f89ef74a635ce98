"""Attacks by name: a registry of factories ``(model, eps, **params) -> torchattacks.Attack``, and their reports.

API map: :func:`register_attack` (usable as a decorator), :func:`make_attack`, :func:`available_attacks`,
:func:`attack_options` (the parameters a name accepts), :func:`attack_name` and :func:`attack_params` (what a
report records of an attack). The adapters and the DEQ-specific attacks register themselves when
:mod:`deqlib.attacks` is imported. Names are case-insensitive, and "-" or spaces mean "_" ("APGD-CE" is "apgd_ce").
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Callable, Dict, Optional, Tuple

import torchattacks
from torch import nn
from torchattacks.attack import Attack

from .._io import to_jsonable
from .._validate import check_callable

__all__ = ["register_attack", "make_attack", "available_attacks", "attack_options", "attack_name", "attack_params"]

AttackFactory = Callable[..., Attack]
_REGISTRY: Dict[str, AttackFactory] = {}
_ALIASES: Dict[str, str] = {}


def _key(name: object, where: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{where}: attack name must be a str, got {type(name).__name__}")
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def register_attack(
    name: str, factory: Optional[AttackFactory] = None, *, aliases: Tuple[str, ...] = (), overwrite: bool = False
):
    """Register ``factory(model, eps, **params) -> torchattacks.Attack`` under ``name`` (usable as a decorator).

    Raises:
        ValueError: an empty name, or a name (or alias) already registered to another factory without ``overwrite``.
        TypeError: a factory that is not callable or does not take (model, eps, ...).
    """
    where = "register_attack"
    key = _key(name, where)
    if not key:
        raise ValueError(f"{where}: attack name must be non-empty")

    def add(fn: AttackFactory) -> AttackFactory:
        check_callable(fn, f"the factory of attack {name!r}", where, "as factory(model, eps, **params)")
        if len(inspect.signature(fn).parameters) < 2:
            raise TypeError(f"{where}: attack {name!r}: the factory must take (model, eps, **params)")
        for k in (key, *(_key(a, where) for a in aliases)):
            if (k in _REGISTRY or k in _ALIASES) and not overwrite and _REGISTRY.get(_ALIASES.get(k, k)) is not fn:
                raise ValueError(
                    f"{where}: an attack named {k!r} is already registered (pass overwrite=True to replace it)"
                )
        _REGISTRY[key] = fn
        for a in aliases:
            _ALIASES[_key(a, where)] = key
        return fn

    return add if factory is None else add(factory)


def available_attacks() -> Tuple[str, ...]:
    """The registered attack names (without aliases), sorted."""
    return tuple(sorted(_REGISTRY))


def _resolve(name: str, where: str) -> Tuple[str, AttackFactory]:
    key = _key(name, where)
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise ValueError(f"{where}: unknown attack {name!r}; available: {', '.join(available_attacks())}")
    return key, _REGISTRY[key]


def attack_options(name: str) -> Tuple[str, ...]:
    """The keyword parameters the attack ``name`` accepts besides (model, eps)."""
    _, fn = _resolve(name, "attack_options")
    names = list(inspect.signature(fn).parameters)  # (model, eps, ...) for functions and classes alike
    return tuple(names[2:])


def make_attack(name: str, model: nn.Module, eps: float, **params: Any) -> Attack:
    """Build the registered attack ``name`` for ``model`` at radius ``eps``.

    Raises:
        ValueError: unknown name (the message lists the available ones) or an invalid parameter value.
        TypeError: a parameter the attack does not take (the message lists those it does), or of the wrong type.

    Example:
        >>> from deqlib.cells import mlp_classifier
        >>> model = mlp_classifier((1, 8, 8), 10, mean=(0.3,), std=(0.4,), width=8)
        >>> make_attack("PGD", model, 8 / 255, steps=5).steps
        5
    """
    key, fn = _resolve(name, "make_attack")
    accepted = attack_options(key)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise TypeError(f"make_attack: attack {key!r} got unknown parameter(s) {unknown}; it accepts {list(accepted)}")
    return fn(model, eps, **params)


def attack_name(attack: Attack) -> str:
    """The registry name of an attack built by deqlib, else torchattacks' name (e.g. "PGD")."""
    return getattr(attack, "_deqlib_name", None) or str(getattr(attack, "attack", type(attack).__name__))


#: torchattacks' bookkeeping attributes, not parameters of the attack.
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
        return to_jsonable(dict(params))
    if isinstance(attack, torchattacks.MultiAttack):
        return {"attacks": [attack_params(a) | {"name": attack_name(a)} for a in attack.attacks]}
    return {
        k: to_jsonable(v)
        for k, v in vars(attack).items()
        if not k.startswith("_") and k not in _SKIP and (v is None or isinstance(v, (bool, int, float, str)))
    }
