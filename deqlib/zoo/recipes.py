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

__all__ = ["ZOO_FORMAT", "ZooRecipe", "RECIPES", "get", "names", "recipe_hash", "LOSSES", "WRAPPERS"]

#: Bumped when deqlib's training code changes what a recipe trains (all hashes change with it).
ZOO_FORMAT = 1
#: The training losses a recipe can name, and their parameters.
LOSSES = {"ce": (), "pgd_at": ("eps", "alpha", "steps"), "trades": ("eps", "alpha", "steps", "beta")}
#: The defences a recipe can wrap its classifier in (trained and served wrapped), and their parameters.
WRAPPERS = {"random_depth": ("max_depth", "phantom_steps", "phantom_tau")}


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
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        check_choice(self.mode, "mode", f"ZooRecipe {self.name}", ("fast", "full"))
        check_choice(self.kind, "kind", f"ZooRecipe {self.name}", ("mlp", "conv"))
        _check_params(dict(self.loss), LOSSES, "loss", self.name)
        if self.wrapper:
            _check_params(dict(self.wrapper), WRAPPERS, "wrapper", self.name)
        if "epochs" not in self.fit:
            raise ValueError(f"ZooRecipe {self.name}: fit options must give the number of epochs")

    def hashed_fields(self) -> Dict[str, Any]:
        """The fields that decide the weights (everything but the name and description; no wrapper, no key, so the
        plain recipes keep the hashes they were committed with)."""
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
        if self.wrapper:
            fields["wrapper"] = dict(self.wrapper)
        return fields

    def with_seed(self, seed: int) -> "ZooRecipe":
        """The same recipe with another training seed (a multi-seed experiment's member)."""
        return replace(self, name=f"{self.name}-seed{seed}", seed=seed)


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


def _build_registry() -> Dict[str, ZooRecipe]:
    recipes = _standard_set("mnist5k", "fast", "mlp", _MLP_FAST, _FIT_FAST, _AT_FAST)
    recipes += _random_depth_set("mnist5k", "fast", "mlp", _MLP_FAST, _FIT_FAST, _AT_FAST)
    for dataset in ("mnist", "svhn", "cifar10"):
        at = _AT_FAST if dataset == "mnist" else _AT_FULL
        recipes += _standard_set(dataset, "full", "conv", _CONV_FULL, _FIT_FULL, at)
        recipes += _random_depth_set(dataset, "full", "conv", _CONV_FULL, _FIT_FULL, at)
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
