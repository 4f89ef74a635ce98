"""Build the classifier of a zoo recipe: the plain DEQ classifier, or one of chapter 6's LyaDEQ readings.

:func:`build_model` reads a recipe's ``kind``, ``model`` and ``architecture`` (:data:`~deqlib.zoo.recipes.ARCHITECTURES`)
and returns the untrained model; :func:`build_loss` its training loss with the recipe's regulariser
(:data:`~deqlib.zoo.recipes.REGULARISERS`). A ``one_shot`` model loads its base recipe from the zoo (training it first
when no weights exist) and freezes it.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

from torch import nn

from .. import cells
from ..losses import PGDAT, TRADES, cross_entropy
from .recipes import ZooRecipe, base_recipe

__all__ = ["build_model", "build_loss"]


def _nominal(train_set: Any, recipe: ZooRecipe) -> cells.DEQClassifier:
    return cells.classifier_for(train_set, recipe.kind, **dict(recipe.model))


def _lyadeq(train_set: Any, recipe: ZooRecipe, arch: Dict[str, Any]) -> nn.Module:
    from ..defenses import lyadeq_classifier

    hidden = tuple(arch.pop("lyapunov_hidden"))
    return lyadeq_classifier(train_set, recipe.kind, lyapunov_hidden=hidden, **arch, **dict(recipe.model))


def _horizon(train_set: Any, recipe: ZooRecipe, arch: Dict[str, Any]) -> nn.Module:
    from ..defenses import EulerCell, HorizonClassifier, LyapunovStableCell, orthogonal_head
    from ..lyapunov import LyapunovFunction

    base = _nominal(train_set, recipe)
    width = int(base.head.in_features)
    if arch["projection"] == "origin":
        V = LyapunovFunction(width, hidden=tuple(arch["lyapunov_hidden"]))
        step: nn.Module = LyapunovStableCell(base.deq.cell, V, alpha=arch["alpha"], h=arch["h"], center="origin")
    elif arch["projection"] == "none":
        step = EulerCell(base.deq.cell, h=arch["h"])
    else:
        raise ValueError(
            f"zoo: recipe {recipe.name}: projection must be 'origin' or 'none', got {arch['projection']!r}"
        )
    head = orthogonal_head(width, int(train_set.num_classes))
    return HorizonClassifier(
        base.injection,
        step,
        head,
        image_shape=base.image_shape,
        mean=train_set.mean,
        std=train_set.std,
        steps=arch["steps"],
        start=arch["start"],
        injection_scale=arch["injection_scale"],
    )


def _one_shot(train_set: Any, recipe: ZooRecipe, arch: Dict[str, Any]) -> nn.Module:
    from ..defenses import OneShotLyapunovClassifier, RandomDepthClassifier
    from . import load

    base = load(recipe.architecture["base"], seed=base_recipe(recipe).seed)
    if isinstance(base, RandomDepthClassifier):  # trained with random intermediate states: its DEQ classifier
        base = base.model
    return OneShotLyapunovClassifier(
        base, alpha=arch["alpha"], exact=arch["exact"], correct=arch["correct"], lyapunov_hidden=arch["lyapunov_hidden"]
    )


def _regularised(train_set: Any, recipe: ZooRecipe, arch: Dict[str, Any]) -> nn.Module:
    from ..defenses import LyapunovRegularisedDEQ

    return LyapunovRegularisedDEQ(_nominal(train_set, recipe), lyapunov_hidden=tuple(arch["lyapunov_hidden"]))


def _explicit(train_set: Any, recipe: ZooRecipe, arch: Dict[str, Any]) -> nn.Module:
    from ..baselines import explicit_classifier_for

    return explicit_classifier_for(train_set, recipe.kind, depth=arch["depth"], **dict(recipe.model))


_BUILDERS: Dict[str, Callable[[Any, ZooRecipe, Dict[str, Any]], nn.Module]] = {
    "lyadeq": _lyadeq,
    "horizon": _horizon,
    "one_shot": _one_shot,
    "lyapunov_regularised": _regularised,
    "explicit": _explicit,
}


def build_model(train_set: Any, recipe: ZooRecipe) -> nn.Module:
    """The recipe's untrained classifier (the caller seeds the generator)."""
    if not recipe.architecture:
        return _nominal(train_set, recipe)
    arch = {k: v for k, v in recipe.architecture.items() if k != "name"}
    return _BUILDERS[recipe.architecture["name"]](train_set, recipe, arch)


def build_loss(recipe: ZooRecipe) -> Callable:
    """The recipe's training loss: cross-entropy, PGD-AT or TRADES, with its regulariser when it names one."""
    spec = dict(recipe.loss)
    name = spec.pop("name")
    loss = {"ce": lambda: cross_entropy, "pgd_at": lambda: PGDAT(**spec), "trades": lambda: TRADES(**spec)}[name]()
    if not recipe.regulariser:
        return loss
    from ..defenses import AttractorRegulariser, LyapunovDecreaseLoss

    reg = {k: v for k, v in recipe.regulariser.items() if k != "name"}
    return {"attractor": AttractorRegulariser, "lyapunov_decrease": LyapunovDecreaseLoss}[recipe.regulariser["name"]](
        loss, **reg
    )
