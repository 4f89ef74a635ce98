"""The one builder of deqlib's torchattacks adapters, and the parameter table it reads.

API map:

* :data:`ADAPTERS`: for each adapter of :mod:`deqlib.attacks.adapters` (keyed by its registry name), an
  :class:`AdapterSpec`: the torchattacks class built, and the adapter's arguments as :class:`Param` entries (default,
  validator, where the value goes in torchattacks: ``INIT``, ``ATTR`` or ``DEQLIB``), in validation order;
* :func:`build_attack`: validates the arguments (with :mod:`deqlib._validate` and :mod:`deqlib.threat`), constructs
  the attack, applies the post-construction patches of torchattacks (all in :func:`_patch`, documented there) and
  records ``_deqlib_name`` / ``_deqlib_params``;
* :data:`AUTOATTACK_STANDARD`: the official parameters of the AutoAttack "standard" set;
* the guarded torchattacks subclasses it builds (:class:`FGSMAttack`, :class:`PGDAttack`, ...) live in
  :mod:`deqlib.attacks.guarded`: the checks of every call (images, labels, the model's logits,
  ``n_classes``), eps = 0, the gradient switch and the final projection.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from torch import nn

try:
    from torchattacks.attack import Attack
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "deqlib.attacks needs torchattacks 3.5.1: pip install --no-deps torchattacks==3.5.1 "
        "(--no-deps: it pins an old version of requests that it does not need)"
    ) from e

from .._validate import (
    check_bool,
    check_choice,
    check_fraction,
    check_int,
    check_nonnegative,
    check_positive,
    check_seed,
)
from ..threat import check_eps, check_norm, check_step
from .gradient import check_gradient
from .guarded import (
    APGDAttack,
    APGDTAttack,
    AutoAttackComposite,
    CWAttack,
    FABAttack,
    FGSMAttack,
    PGDAttack,
    PGDL2Attack,
    SquareAttack,
)
from .registry import attack_name, attack_params

__all__ = [
    "ADAPTERS",
    "AUTOATTACK_STANDARD",
    "AdapterSpec",
    "Param",
    "INIT",
    "ATTR",
    "DEQLIB",
    "REQUIRED",
    "build_attack",
]

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


# ---------------------------------------------------------------------------------------------------- the table
#: Where a parameter goes: a keyword of torchattacks' constructor, an attribute set after construction (the
#: constructor does not take it), or nowhere in torchattacks (deqlib's guard or the choice of class uses it).
INIT, ATTR, DEQLIB = "init", "attr", "deqlib"
#: The default of a parameter without one (eps).
REQUIRED = inspect.Parameter.empty

#: ``check(value, name, where, got) -> canonical value``; ``got`` holds the values validated before this one.
Check = Callable[[Any, str, str, Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Param:
    """One argument of an adapter: its default, its validator, and where it goes (``INIT``, ``ATTR``, ``DEQLIB``)."""

    default: Any
    check: Check
    to: str = INIT


@dataclass(frozen=True)
class AdapterSpec:
    """One attack of the table.

    Attributes:
        cls: the (guarded) torchattacks class built, or :class:`AutoAttackComposite` (a ``MultiAttack``) for a composite.
        params: the adapter's arguments besides the model, in validation order (a check may read earlier values).
        norm: the attack's fixed norm, for the attacks without a ``norm`` argument.
        init: fixed keywords of torchattacks' constructor (e.g. ``loss="ce"`` for APGD-CE).
        record: fixed entries of the recorded parameters (e.g. ``loss="dlr-targeted"`` for APGD-T).
        members: for a composite, the table entries it runs in turn.
    """

    cls: type
    params: Dict[str, Param]
    norm: Optional[str] = None
    init: Dict[str, Any] = field(default_factory=dict)
    record: Dict[str, Any] = field(default_factory=dict)
    members: Tuple[str, ...] = ()


def _plain(fn: Callable[..., Any], **options: Any) -> Check:
    """A check that needs no other parameter: ``fn(value, name, where, **options)``."""
    return lambda value, name, where, got: fn(value, name, where, **options)


def _norm(value: Any, name: str, where: str, got: Mapping[str, Any]) -> str:
    return check_norm(value, where)


def _eps(value: Any, name: str, where: str, got: Mapping[str, Any]) -> float:
    return check_eps(value, got["norm"], where)


def _seed(value: Any, name: str, where: str, got: Mapping[str, Any]) -> int:
    return check_seed(value, where)


def _gradient(value: Any, name: str, where: str, got: Mapping[str, Any]) -> Optional[str]:
    return check_gradient(value, where)


def _alpha(value: Any, name: str, where: str, got: Mapping[str, Any]) -> float:
    """The step size; None gives 2.5 * eps / steps (Madry et al.)."""
    if value is None:
        return 2.5 * got["eps"] / got["steps"]
    return check_step(value, "alpha (step size)", where, norm=got["norm"])


def _n_targets(value: Any, name: str, where: str, got: Mapping[str, Any]) -> int:
    """The number of target classes; None gives min(9, n_classes - 1) (the AutoAttack standard)."""
    most = got["n_classes"] - 1
    if value is None:
        return min(AUTOATTACK_STANDARD["apgd_t"]["n_target_classes"], most)
    value = check_int(value, name, where, minimum=1)
    if value > most:
        raise ValueError(f"{where}: n_target_classes must be <= n_classes - 1 = {most}, got {value}")
    return value


_STEPS = _plain(check_int, minimum=1)
_NORM = Param("Linf", _norm)
_EPS = Param(REQUIRED, _eps)
_GRADIENT = Param(None, _gradient, DEQLIB)
_SEED = Param(0, _seed)
_RESTARTS = Param(1, _STEPS)
_CLASSES = Param(10, _plain(check_int, minimum=2))
_TARGETS = Param(None, _n_targets, ATTR)
_RHO = Param(0.75, _plain(check_fraction))
_EOT = Param(1, _STEPS)
_PGD = {
    "eps": _EPS,
    "steps": Param(10, _STEPS),
    "alpha": Param(None, _alpha),
    "random_start": Param(True, _plain(check_bool)),
    "gradient": _GRADIENT,
}
_APGD = {"norm": _NORM, "eps": _EPS, "steps": Param(100, _STEPS), "n_restarts": _RESTARTS}

#: The adapters' parameter table: keys are the adapters' registry names, ``params`` keys their arguments.
ADAPTERS: Dict[str, AdapterSpec] = {
    "fgsm": AdapterSpec(FGSMAttack, {"eps": _EPS, "gradient": _GRADIENT}, norm="Linf"),
    # pgd(norm="L2") is built by the "pgd_l2" entry (torchattacks has one class per norm)
    "pgd": AdapterSpec(PGDAttack, {"norm": Param("Linf", _norm, DEQLIB), **_PGD}),
    "pgd_l2": AdapterSpec(PGDL2Attack, _PGD, norm="L2"),
    "cw": AdapterSpec(
        CWAttack,
        {
            "eps": Param(REQUIRED, _eps, DEQLIB),  # CW minimises the norm: the radius is only the final projection's
            "c": Param(1.0, _plain(check_positive)),
            "kappa": Param(0.0, _plain(check_nonnegative)),
            "steps": Param(100, _STEPS),
            "lr": Param(0.01, _plain(check_positive)),
            "gradient": _GRADIENT,
        },
        norm="L2",
    ),
    "apgd_ce": AdapterSpec(
        APGDAttack,
        {**_APGD, "seed": _SEED, "rho": _RHO, "eot_iter": _EOT, "gradient": _GRADIENT},
        init={"loss": "ce"},
        record={"loss": "ce"},
    ),
    "apgd_t": AdapterSpec(
        APGDTAttack,
        {
            **_APGD,
            "n_classes": _CLASSES,
            "n_target_classes": _TARGETS,
            "seed": _SEED,
            "rho": _RHO,
            "eot_iter": _EOT,
            "gradient": _GRADIENT,
        },
        record={"loss": "dlr-targeted"},
    ),
    "fab_t": AdapterSpec(
        FABAttack,
        {
            **_APGD,
            "n_classes": _CLASSES,
            "n_target_classes": _TARGETS,
            "alpha_max": Param(0.1, _plain(check_fraction)),
            "eta": Param(1.05, _plain(check_positive)),
            "beta": Param(0.9, _plain(check_fraction)),
            "seed": _SEED,
            "gradient": _GRADIENT,
        },
        init={"multi_targeted": True},
        record={"targeted": True},
    ),
    "square": AdapterSpec(
        SquareAttack,
        {
            "norm": _NORM,
            "eps": _EPS,
            "n_queries": Param(5000, _STEPS),
            "n_restarts": _RESTARTS,
            "p_init": Param(0.8, _plain(check_fraction)),
            "loss": Param("margin", _plain(check_choice, choices=("margin", "ce"))),
            "resc_schedule": Param(True, _plain(check_bool)),
            "seed": _SEED,
        },
        record={"gradient": None},  # black-box: no gradient to switch
    ),
    "autoattack": AdapterSpec(
        AutoAttackComposite,
        {"norm": _NORM, "eps": _EPS, "n_classes": _CLASSES, "seed": _SEED, "gradient": _GRADIENT},
        record={"version": "standard"},
        members=("apgd_ce", "apgd_t", "fab_t", "square"),
    ),
}


# ---------------------------------------------------------------------------------------------------- the builder
def _check_model(model: object, where: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{where}: model must be a torch.nn.Module returning (N, classes) logits, got {type(model).__name__}"
        )
    if next(model.parameters(), None) is None:
        raise ValueError(f"{where}: the model has no parameters (torchattacks finds the device from them)")
    return model


def _check_args(name: str, spec: AdapterSpec, args: Mapping[str, Any]) -> Dict[str, Any]:
    """The validated arguments of table entry ``name``, in table order (a missing one takes its default)."""
    unknown = sorted(set(args) - set(spec.params))
    if unknown:
        raise TypeError(f"{name}: unknown parameter(s) {unknown}; it accepts {list(spec.params)}")
    got: Dict[str, Any] = {} if spec.norm is None else {"norm": spec.norm}
    for key, param in spec.params.items():
        got[key] = param.check(args.get(key, param.default), key, name, got)
    return got


def _member_args(member: str, got: Mapping[str, Any]) -> Dict[str, Any]:
    """A composite's member: the standard parameters and the composite's own values (eps, norm, seed, ...)."""
    args = {**AUTOATTACK_STANDARD[member], **got}
    args["n_target_classes"] = None  # min(9, n_classes - 1): 9 targets, or every other class when there are fewer
    return {k: v for k, v in args.items() if k in ADAPTERS[member].params}


def _patch(atk: Attack, name: str, spec: AdapterSpec, got: Mapping[str, Any], extra: Mapping[str, Any]) -> None:
    """Everything deqlib sets on a torchattacks object after its constructor: the ONE place that does.

    1. ``eps``, ``norm`` and ``gradient``, which deqlib's guard and :func:`~deqlib.attacks.robust_accuracy` read:
       torchattacks' CW has no radius, and FGSM / PGD / PGDL2 / CW / MultiAttack have no ``norm`` attribute.
    2. The parameters marked ``ATTR``: ``n_target_classes`` of APGDT and FAB, which torchattacks 3.5.1's
       constructors fix to n_classes - 1 (so 9 targets, the AutoAttack standard, cannot be passed to them).
    3. ``_deqlib_name`` and ``_deqlib_params`` (the validated values, the table's fixed records, ``extra``), which
       :func:`~deqlib.attacks.attack_name` and :func:`~deqlib.attacks.attack_params` report.
    """
    recorded = {"eps": got["eps"], "norm": got["norm"], **got, **spec.record}
    recorded["gradient"] = recorded.pop("gradient", None)  # last, as the reports have always listed it
    atk.eps, atk.norm, atk.gradient = got["eps"], got["norm"], recorded["gradient"]
    for key, param in spec.params.items():
        if param.to == ATTR:
            setattr(atk, key, got[key])
    atk._deqlib_name = name
    atk._deqlib_params = {**recorded, **extra}


def build_attack(name: str, args: Mapping[str, Any]) -> Attack:
    """The attack of table entry ``name``: validate ``args`` (``model`` and its arguments), construct, patch, record.

    A missing argument takes its default; an unknown one raises TypeError.

    Example:
        >>> from deqlib.cells import mlp_classifier
        >>> model = mlp_classifier((1, 8, 8), 10, mean=(0.3,), std=(0.4,), width=8)
        >>> atk = build_attack("apgd_t", {"model": model, "eps": 8 / 255, "n_classes": 5})
        >>> type(atk).__name__, atk.steps, atk.n_target_classes, atk._deqlib_params["loss"]
        ('APGDTAttack', 100, 4, 'dlr-targeted')
    """
    spec = ADAPTERS[name]
    args = dict(args)
    model = _check_model(args.pop("model"), name)
    got = _check_args(name, spec, args)
    extra: Dict[str, Any] = {}
    if spec.members:  # a composite: each member built from its own table entry, run in turn
        members = [build_attack(m, {"model": model, **_member_args(m, got)}) for m in spec.members]
        atk = spec.cls(members)
        extra["attacks"] = [attack_params(m) | {"name": attack_name(m)} for m in members]
    else:
        init = {key: got[key] for key, param in spec.params.items() if param.to == INIT}
        atk = spec.cls(model, **init, **spec.init)
    _patch(atk, name, spec, got, extra)
    return atk
