"""The zoo's named recipes: everything that decides a model's trained weights, and its hash.

A :class:`ZooRecipe` names the data set, the architecture and its options, the training loss with its budget, the fit
options (epochs, learning rate, batch size, schedule) and the seed. :func:`recipe_hash` is the SHA-256 of exactly
these fields (and of :data:`ZOO_FORMAT`, bumped when deqlib's training changes what a recipe produces): the
description does not count, any other change does, so a changed recipe can never load weights trained for another.

Example:
    >>> r = get("mnist5k-mlp-standard")
    >>> r.dataset, r.loss["name"], len(recipe_hash(r))
    ('mnist5k', 'ce', 64)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Mapping, Optional

from .._validate import check_choice

__all__ = [
    "ZOO_FORMAT",
    "ZooRecipe",
    "RECIPES",
    "get",
    "names",
    "recipe_hash",
    "LOSSES",
    "WRAPPERS",
    "ARCHITECTURES",
    "REGULARISERS",
]

#: Bumped when deqlib's training code changes what a recipe trains (all hashes change with it).
ZOO_FORMAT = 1
#: The training losses a recipe can name, and their parameters.
LOSSES = {"ce": (), "pgd_at": ("eps", "alpha", "steps"), "trades": ("eps", "alpha", "steps", "beta")}
#: The defences a recipe can wrap its classifier in (trained and served wrapped), and their parameters.
WRAPPERS = {"random_depth": ("max_depth", "phantom_steps", "phantom_tau")}
#: The architectures a recipe can name instead of the plain DEQ classifier (the LyaDEQ readings of chapter 6), and
#: their parameters (:mod:`deqlib.zoo.architectures` builds them).
ARCHITECTURES = {
    "lyadeq": ("center", "alpha", "h", "lyapunov_hidden"),
    "horizon": ("projection", "alpha", "h", "steps", "start", "injection_scale", "lyapunov_hidden"),
    "one_shot": ("base", "alpha", "exact", "correct", "lyapunov_hidden"),
    "lyapunov_regularised": ("lyapunov_hidden",),
    "explicit": ("depth",),
}
#: The penalties a recipe can add to its loss (:mod:`deqlib.defenses.lyadeq_losses`), and their parameters.
REGULARISERS = {"attractor": ("weight", "rho"), "lyapunov_decrease": ("weight", "rate", "starts", "radius")}


@dataclass(frozen=True)
class ZooRecipe:
    """One trained model of the zoo.

    Args:
        name: the zoo name, ``<data set>-<architecture>-<training>``.
        dataset: a :func:`deqlib.data.load` name (``"mnist5k"``, ``"mnist"``, ``"svhn"``, ``"cifar10"``, ...).
        mode: ``"fast"`` (trains on a CPU; its weights are committed) or ``"full"`` (a GPU run).
        kind: ``"mlp"`` or ``"conv"`` (:func:`deqlib.cells.classifier_for`).
        model: options of the classifier (width or channels, solver, max_iter, tol, backward_max_iter, ...).
        loss: ``{"name": "ce" | "pgd_at" | "trades", ...its parameters}``.
        fit: options of :func:`deqlib.train.fit` (epochs, lr, batch_size, scheduler, grad_clip).
        seed: the training seed.
        wrapper: ``{}`` (the plain classifier) or ``{"name": "random_depth", ...its parameters}``: the model is
            trained, stored and loaded inside that defence (:data:`WRAPPERS`).
        architecture: ``{}`` (the plain DEQ classifier of ``kind``) or one of :data:`ARCHITECTURES` with its
            parameters; ``model`` then gives the nominal parts' options. A ``one_shot`` model names its ``base``
            recipe, trained first (with this recipe's seed) and frozen: its hash is part of this one's.
        regulariser: ``{}`` or one of :data:`REGULARISERS` with its parameters, added to the loss.
        description: what the model is for (not part of the hash).
    """

    name: str
    dataset: str
    mode: str
    kind: str
    model: Mapping[str, Any]
    loss: Mapping[str, Any]
    fit: Mapping[str, Any]
    seed: int = 0
    wrapper: Mapping[str, Any] = field(default_factory=dict)
    architecture: Mapping[str, Any] = field(default_factory=dict)
    regulariser: Mapping[str, Any] = field(default_factory=dict)
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        check_choice(self.mode, "mode", f"ZooRecipe {self.name}", ("fast", "full"))
        check_choice(self.kind, "kind", f"ZooRecipe {self.name}", ("mlp", "conv"))
        _check_params(dict(self.loss), LOSSES, "loss", self.name)
        for what, table in (("wrapper", WRAPPERS), ("architecture", ARCHITECTURES), ("regulariser", REGULARISERS)):
            if getattr(self, what):
                _check_params(dict(getattr(self, what)), table, what, self.name)
        if "epochs" not in self.fit:
            raise ValueError(f"ZooRecipe {self.name}: fit options must give the number of epochs")

    def hashed_fields(self) -> Dict[str, Any]:
        """The fields that decide the weights (everything but the name and description). The wrapper, architecture
        and regulariser count only when set (so the plain recipes keep the hashes they were committed with); a
        ``one_shot`` architecture adds the hash of its base recipe at this seed."""
        fields = {
            "zoo_format": ZOO_FORMAT,
            "dataset": self.dataset,
            "mode": self.mode,
            "kind": self.kind,
            "model": dict(self.model),
            "loss": dict(self.loss),
            "fit": dict(self.fit),
            "seed": self.seed,
        }
        for what in ("wrapper", "architecture", "regulariser"):
            if getattr(self, what):
                fields[what] = dict(getattr(self, what))
        base = self.architecture.get("base") if self.architecture else None
        if base is not None:
            fields["base_hash"] = recipe_hash(base_recipe(self))
        return fields

    def with_seed(self, seed: int) -> "ZooRecipe":
        """The same recipe with another training seed (a multi-seed experiment's member)."""
        return replace(self, name=f"{self.name}-seed{seed}", seed=seed)


def base_recipe(recipe: ZooRecipe) -> ZooRecipe:
    """The base recipe a ``one_shot`` recipe builds on, at the recipe's seed."""
    base = get(recipe.architecture["base"])
    return base if base.seed == recipe.seed else base.with_seed(recipe.seed)


def _check_params(spec: Dict[str, Any], table: Mapping[str, tuple], what: str, recipe: str) -> None:
    name = check_choice(spec.get("name"), f"{what} name", f"ZooRecipe {recipe}", tuple(table))
    missing = [p for p in table[name] if p not in spec]
    extra = sorted(set(spec) - set(table[name]) - {"name"})
    if missing or extra:
        raise ValueError(f"ZooRecipe {recipe}: {what} {name!r} needs {table[name]}; missing {missing}, extra {extra}")


def recipe_hash(recipe: ZooRecipe) -> str:
    """SHA-256 (hex) of the recipe's hashed fields in canonical JSON."""
    text = json.dumps(recipe.hashed_fields(), sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


# The fast models: the MLP DEQ of experiments/robustness_mnist5k.py (width 128, Anderson, IFT; its solves converge,
# unlike the conv recipe of deqlib.recipes at 20 / 8 steps), about 0.5 MB of float32 weights each.
_MLP_FAST = {"width": 128, "solver": "anderson", "max_iter": 30, "tol": 1e-4, "backward_max_iter": 60}
_FIT_FAST = {"epochs": 10, "lr": 2e-3, "batch_size": 64, "scheduler": "cosine"}
# The full models (a GPU trains them): the papers' budget as far as it is known (PAPERS.md): Broyden 8 forward /
# 7 backward steps, Adam 1e-3 with cosine decay, AT at 8/255 in steps of 2/255 (MNIST: 0.2 / 0.05), TRADES beta 6.
_CONV_FULL = {"channels": 64, "solver": "broyden", "max_iter": 8, "tol": 1e-4, "backward_max_iter": 7}
_FIT_FULL = {"epochs": 30, "lr": 1e-3, "batch_size": 128, "scheduler": "cosine", "grad_clip": 1.0}
_AT_FAST = {"eps": 0.2, "alpha": 0.05, "steps": 7}
_AT_FULL = {"eps": 8 / 255, "alpha": 2 / 255, "steps": 10}
# PAPERS.md §3: depth U{1..T}, T = 8, then 5 damped phantom steps, lambda 0.5; evaluation at the fixed depth T.
_RANDOM_DEPTH = {"name": "random_depth", "max_depth": 8, "phantom_steps": 5, "phantom_tau": 0.5}


def _standard_set(dataset: str, mode: str, kind: str, model: Mapping[str, Any], fit: Mapping[str, Any], at) -> List:
    base = f"{dataset}-{kind}"
    return [
        ZooRecipe(f"{base}-standard", dataset, mode, kind, model, {"name": "ce"}, fit, description="standard training"),
        ZooRecipe(
            f"{base}-pgdat", dataset, mode, kind, model, {"name": "pgd_at", **at}, fit, description="PGD-AT (Madry)"
        ),
        ZooRecipe(
            f"{base}-trades",
            dataset,
            mode,
            kind,
            model,
            {"name": "trades", **at, "beta": 6.0},
            fit,
            description="TRADES, beta 6",
        ),
    ]


def _random_depth_set(dataset: str, mode: str, kind: str, model: Mapping[str, Any], fit: Mapping[str, Any], at) -> List:
    """Yang et al. 2023's random intermediate states: PGD-AT and TRADES (beta 6, as released) with the readout at a
    depth drawn from {1, ..., 8} for every forward pass, 5 phantom steps of damping 0.5 (chapter 7)."""
    return [
        replace(r, name=r.name.replace(f"{kind}-", f"{kind}-randdepth-"), wrapper=_RANDOM_DEPTH, description=d)
        for r, d in zip(
            _standard_set(dataset, mode, kind, model, fit, at)[1:],
            ("PGD-AT with random intermediate states", "TRADES (beta 6) with random intermediate states"),
        )
    ]


# Chapter 6's readings of LyaDEQ (PAPERS.md §2), each beside the nominal model trained the same way (its control).
# Our choices where the paper is silent: V an ICNN (64, 64); R1 10 Euler steps of 0.5, alpha 0.5; R2 alpha 3 (the
# projection then acts) with phantom gradients (so V sees the transient); R3 alpha 0.9 as in the later code, stage
# two 5 epochs; R4 no injection inside the steps, contraction 0.5 asked at the state read; R5 a decrease of V by half
# per step asked on the fixed-point iterates and on one start at 0.5 ||z*|| from z*.
_LYA_HIDDEN = [64, 64]
_HORIZON = {"alpha": 0.5, "h": 0.5, "steps": 10, "lyapunov_hidden": _LYA_HIDDEN}
_FIT_STAGE2 = {"epochs": 5, "lr": 2e-3, "batch_size": 64, "scheduler": "cosine"}


def _reading_specs() -> List[tuple]:
    """(name part, model options, architecture, regulariser, fit, description) of every reading and control."""
    width = {"width": _MLP_FAST["width"]}
    r1 = {"name": "horizon", "start": "zero", "injection_scale": 1.0, **_HORIZON}
    r4 = {"name": "horizon", "projection": "none", "start": "injection", "injection_scale": 0.0, **_HORIZON}
    fixed = {**_MLP_FAST, "solver": "fixed_point", "max_iter": 50}
    one_shot = {"name": "one_shot", "alpha": 0.9, "lyapunov_hidden": _LYA_HIDDEN}
    return [
        ("r1-lyadeq", width, {**r1, "projection": "origin"}, {}, _FIT_FAST, "R1: origin-centred projection, 10 steps"),
        ("r1-nominal", width, {**r1, "projection": "none"}, {}, _FIT_FAST, "R1's control: the same 10 plain steps"),
        (
            "r2-lyadeq",
            {**_MLP_FAST, "grad": "phantom"},
            {"name": "lyadeq", "center": "residual", "alpha": 3.0, "h": 1.0, "lyapunov_hidden": _LYA_HIDDEN},
            {},
            _FIT_FAST,
            "R2: residual-centred projection in the solver, alpha 3, phantom gradient",
        ),
        ("r2-nominal", {**_MLP_FAST, "grad": "phantom"}, {}, {}, _FIT_FAST, "R2's control: the DEQ, phantom gradient"),
        ("r3-exact", {}, {**one_shot, "exact": True, "correct": True}, {}, _FIT_STAGE2, "R3: one-shot V, exact"),
        ("r3-detached", {}, {**one_shot, "exact": False, "correct": True}, {}, _FIT_STAGE2, "R3: detached grad V"),
        ("r3-nominal", {}, {**one_shot, "exact": True, "correct": False}, {}, _FIT_STAGE2, "R3's control: no V"),
        (
            "r4-lyadeq",
            width,
            r4,
            {"name": "attractor", "weight": 1.0, "rho": 0.5},
            _FIT_FAST,
            "R4: input as initial state, stable attractors (SODEF-style)",
        ),
        ("r4-nominal", width, r4, {}, _FIT_FAST, "R4's control: the same model without the attractor penalty"),
        (
            "r5-lyadeq",
            fixed,
            {"name": "lyapunov_regularised", "lyapunov_hidden": _LYA_HIDDEN},
            {"name": "lyapunov_decrease", "weight": 1.0, "rate": 0.5, "starts": 1, "radius": 0.5},
            _FIT_FAST,
            "R5: a Lyapunov-decrease loss on the fixed-point iterates",
        ),
        ("r5-nominal", fixed, {}, {}, _FIT_FAST, "R5's control: the same DEQ without the loss"),
    ]


def _lyadeq_set(at: Mapping[str, Any]) -> List[ZooRecipe]:
    """Every reading and control on mnist5k, with standard training and with PGD-AT (a ``one_shot`` model's base
    is the zoo model of the same training, and stage two uses the same loss)."""
    out = []
    for training, loss in (("standard", {"name": "ce"}), ("pgdat", {"name": "pgd_at", **at})):
        for part, model, arch, reg, fit, desc in _reading_specs():
            if arch.get("name") == "one_shot":
                arch = {**arch, "base": f"mnist5k-mlp-{training}"}
            name = f"mnist5k-mlp-{part}-{training}"
            desc = f"{desc}; {'standard training' if training == 'standard' else 'PGD-AT'}"
            out.append(
                ZooRecipe(
                    name,
                    "mnist5k",
                    "fast",
                    "mlp",
                    model,
                    loss,
                    fit,
                    architecture=arch,
                    regulariser=reg,
                    description=desc,
                )
            )
    return out


# Chapter 8's explicit baseline (deqlib.baselines): the DEQ unrolled into 4 weight-untied layers, its size the one of
# nearest parameter count (tests/test_baselines.py checks it): on mnist5k width 99 against the DEQ's 128 (117,919
# against 118,154 parameters); on the full conv recipes (64 channels) 40 channels. Our choice: the papers compare
# with ResNet-18 / WRN-34-10, larger than their DEQs; the issue asks for a matched size.
_EXPLICIT = {"name": "explicit", "depth": 4}
_EXPLICIT_SIZE = {"mlp": {"width": 99}, "conv": {"channels": 40}}


def _explicit_set(dataset: str, mode: str, kind: str, fit: Mapping[str, Any], at: Mapping[str, Any]) -> List:
    """The explicit baseline trained the three ways of :func:`_standard_set` (the options of its size only: it has no
    solver)."""
    model = _EXPLICIT_SIZE[kind]
    return [
        replace(r, name=r.name.replace(f"{kind}-", f"{kind}-explicit-"), architecture=_EXPLICIT, description=d)
        for r, d in zip(
            _standard_set(dataset, mode, kind, model, fit, at),
            (
                "explicit 4-layer baseline, standard training",
                "explicit 4-layer baseline, PGD-AT",
                "explicit 4-layer baseline, TRADES beta 6",
            ),
        )
    ]


def _combination_set(at: Mapping[str, Any]) -> List[ZooRecipe]:
    """Chapter 8's LyaDEQ + Yang'23: R3's one-shot Lyapunov stage (exact) trained with PGD-AT on the frozen DEQ that
    random intermediate states trained (its inner DEQ, read at the solver's final state as R3 reads)."""
    arch = {"name": "one_shot", "alpha": 0.9, "lyapunov_hidden": _LYA_HIDDEN, "exact": True, "correct": True}
    return [
        ZooRecipe(
            "mnist5k-mlp-r3-exact-ris-pgdat",
            "mnist5k",
            "fast",
            "mlp",
            {},
            {"name": "pgd_at", **at},
            _FIT_STAGE2,
            architecture={**arch, "base": "mnist5k-mlp-randdepth-pgdat"},
            description="R3 (one-shot V, exact) on the DEQ trained with random intermediate states; PGD-AT",
        )
    ]


def _build_registry() -> Dict[str, ZooRecipe]:
    recipes = _standard_set("mnist5k", "fast", "mlp", _MLP_FAST, _FIT_FAST, _AT_FAST)
    recipes += _explicit_set("mnist5k", "fast", "mlp", _FIT_FAST, _AT_FAST)
    recipes += _random_depth_set("mnist5k", "fast", "mlp", _MLP_FAST, _FIT_FAST, _AT_FAST)
    recipes += _lyadeq_set(_AT_FAST)
    recipes += _combination_set(_AT_FAST)
    for dataset in ("mnist", "svhn", "cifar10"):
        at = _AT_FAST if dataset == "mnist" else _AT_FULL
        recipes += _standard_set(dataset, "full", "conv", _CONV_FULL, _FIT_FULL, at)
        recipes += _random_depth_set(dataset, "full", "conv", _CONV_FULL, _FIT_FULL, at)
        recipes += _explicit_set(dataset, "full", "conv", _FIT_FULL, at)
    return {r.name: r for r in recipes}


#: Every recipe of the zoo, by name. Later chapters add theirs here (defences: LyaDEQ readings, Yang'23 models).
RECIPES: Dict[str, ZooRecipe] = _build_registry()


def names(mode: Optional[str] = None) -> List[str]:
    """The recipe names, all or those of one mode."""
    return [n for n, r in RECIPES.items() if mode is None or r.mode == mode]


def get(name: str) -> ZooRecipe:
    """The recipe called ``name``; a clear error listing the names otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"zoo: a recipe name must be a string, got {type(name).__name__}")
    if name not in RECIPES:
        raise ValueError(f"zoo: no recipe {name!r}; available: {', '.join(RECIPES)}")
    return RECIPES[name]
