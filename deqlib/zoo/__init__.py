"""The model zoo: the book's trained models by name, so that no reader has to retrain them.

API map:

- :func:`load` — the trained model of a recipe, from (in order) this machine's cache, the weights committed in the
  repository, or by training it (with a progress bar) and caching it; every file is checked against its record (the
  recipe's hash and the file's SHA-256) and loaded with ``weights_only=True``;
- :func:`train` — train a recipe now (resumable: an interrupted run continues from its last epoch) and store the
  weights with their record (recipe, hash, SHA-256, size, training time, command, history, clean test accuracy);
- :func:`status` — where each recipe's weights are and whether they match; :func:`build` — the untrained model;
- :mod:`~deqlib.zoo.recipes` — the recipes (:data:`RECIPES`) and :func:`recipe_hash`;
  :mod:`~deqlib.zoo.store` — the folders and the file checks, :class:`ZooError`.

On the command line: ``python -m deqlib.zoo list | train NAME | train --all | verify``.

Example:
    >>> from deqlib import zoo
    >>> "mnist5k-mlp-pgdat" in zoo.names("fast")
    True
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from .. import data
from .._validate import check_int
from ..checkpoint import load_model_state, save_model
from .architectures import build_loss, build_model
from .recipes import RECIPES, ZooRecipe, get, names, recipe_hash
from .store import ZooError, cache_dir, committed_dir, record_status, write_record

__all__ = ["load", "train", "build", "status", "names", "get", "recipe_hash", "ZooRecipe", "ZooError", "RECIPES"]


def build(recipe: ZooRecipe) -> nn.Module:
    """The recipe's classifier with its initial weights (drawn from the recipe's seed; the caller's random state is
    left as it was)."""
    train_set = data.load(recipe.dataset, "train")
    with torch.random.fork_rng():
        torch.manual_seed(recipe.seed)
        model = build_model(train_set, recipe)
    if not recipe.wrapper:
        return model
    from ..defenses import RandomDepthClassifier

    options = {k: v for k, v in recipe.wrapper.items() if k != "name"}
    return {"random_depth": RandomDepthClassifier}[recipe.wrapper["name"]](model, **options)


def _file(folder: Path, recipe: ZooRecipe, keyed: bool) -> Path:
    """``<name>.pt`` (committed: one per recipe) or ``<name>-<hash12>.pt`` (cache: keyed by the recipe)."""
    return folder / (f"{recipe.name}-{recipe_hash(recipe)[:12]}.pt" if keyed else f"{recipe.name}.pt")


def _places(recipe: ZooRecipe) -> List[Path]:
    # Another seed's weights are never committed (a multi-seed experiment's members live in the cache only).
    cached = _file(cache_dir(), recipe, keyed=True)
    return [cached, _file(committed_dir(), recipe, keyed=False)] if recipe.name in RECIPES else [cached]


def _recipe(name: str, seed: Optional[int]) -> ZooRecipe:
    """Recipe ``name``, or its copy with training seed ``seed`` (named ``<name>-seed<seed>``)."""
    recipe = get(name)
    if seed is None or seed == recipe.seed:
        return recipe
    return recipe.with_seed(check_int(seed, "seed", "zoo", minimum=0))


def _from_file(recipe: ZooRecipe, path: Path, device: Optional[str]) -> nn.Module:
    model = build(recipe)
    load_model_state(str(path), model)  # weights_only=True, checksums, a clear error on a damaged file
    return model.to(device or "cpu").eval()


def load(
    name: str,
    *,
    seed: Optional[int] = None,
    allow_training: bool = True,
    progress: bool = True,
    device: Optional[str] = None,
) -> nn.Module:
    """The trained model of recipe ``name``, in eval mode.

    Args:
        name: a recipe name (:func:`names`).
        seed: another training seed than the recipe's (a multi-seed experiment): only the cache holds such
            weights, so without them the model is trained.
        allow_training: train (and cache) the model when no matching weights exist; False: raise instead.
        progress: show a progress bar while training.
        device: where to put the model (default the CPU).

    Raises:
        ZooError: a weights file whose bytes do not match its record (damaged); no matching weights and
            ``allow_training=False``.
    """
    recipe = _recipe(name, seed)
    want = recipe_hash(recipe)
    for path in _places(recipe):
        state = record_status(path, want)
        if state == "ok":
            return _from_file(recipe, path, device)
        if state == "damaged":
            raise ZooError(
                f"zoo: {path} does not match its record (SHA-256 or a missing file): refusing to load it; delete "
                f"{path} and {path.with_suffix('.json')} and run `python -m deqlib.zoo train {name}`"
            )
        if state == "stale":
            warnings.warn(f"zoo: {path} was trained for another version of recipe {name}; not loaded", stacklevel=2)
    if not allow_training:
        raise ZooError(
            f"zoo: no weights of {recipe.name} for its current recipe (hash {want[:12]}) in {cache_dir()} or "
            f"{committed_dir()}; train them with `python -m deqlib.zoo train {' '.join([name] + _seed_args(recipe, name))}`"
        )
    return train(name, seed=seed, progress=progress, device=device)


def train(
    name: str,
    *,
    seed: Optional[int] = None,
    committed: bool = False,
    progress: bool = True,
    device: Optional[str] = None,
    command: str = "",
) -> nn.Module:
    """Train recipe ``name`` (with training seed ``seed``, default the recipe's) and store its weights and record
    in the cache, or in the committed folder (the recipe's own seed only).

    A checkpoint is written beside the weights after every epoch; a second call after an interruption resumes
    from it. Returns the trained model in eval mode. Inside a torchrun process group the processes train
    data-parallel (:mod:`deqlib.train.distributed`) and process 0 alone writes the weights and the record.
    """
    recipe = _recipe(name, seed)
    if committed and recipe.name != name:
        raise ZooError(
            f"zoo: only the recipe's own seed ({get(name).seed}) is committed; train seed {seed} with the cache"
        )
    path = _file(committed_dir() if committed else cache_dir(), recipe, keyed=not committed)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = build(recipe)
    checkpoint = path.with_suffix(".ckpt")
    options: Dict[str, Any] = dict(recipe.fit)
    start = time.perf_counter()
    history = _fit(model, recipe, options, checkpoint, progress, device)
    seconds = time.perf_counter() - start
    from ..train import distributed

    group = distributed.current()
    if group is not None and not group.is_main:
        distributed.barrier()  # process 0 writes the weights and the record
        return model.eval()
    save_model(str(path), model)
    write_record(
        path,
        {
            "name": name,
            "recipe": recipe.hashed_fields(),
            "recipe_hash": recipe_hash(recipe),
            "description": recipe.description,
            "deqlib_version": sys.modules["deqlib"].__version__,
            "train_seconds": round(seconds, 1),
            "torch": torch.__version__,
            "command": command or " ".join(["python", "-m", "deqlib.zoo", "train", name] + _seed_args(recipe, name)),
            "test_accuracy": _test_accuracy(model, recipe),
            "history": history.to_dict(),
        },
    )
    for leftover in (checkpoint, Path(str(checkpoint) + ".bak")):
        leftover.unlink(missing_ok=True)
    if group is not None:
        distributed.barrier()
    return model.eval()


def _seed_args(recipe: ZooRecipe, name: str) -> List[str]:
    return [] if recipe.name == name else ["--seed", str(recipe.seed), "--cache"]


def _fit(model: nn.Module, recipe: ZooRecipe, options: Dict[str, Any], checkpoint: Path, progress: bool, device):
    from ..train import fit

    train_set = data.load(recipe.dataset, "train")
    return fit(
        model,
        train_set,
        loss_fn=build_loss(recipe),
        seed=recipe.seed,
        checkpoint=str(checkpoint),
        resume=True,
        progress=progress,
        device=device,
        **options,
    )


def _test_accuracy(model: nn.Module, recipe: ZooRecipe) -> float:
    from ..train import evaluate_accuracy

    return float(evaluate_accuracy(model.eval(), data.load(recipe.dataset, "test")))


def status(name: Optional[str] = None) -> List[Dict[str, Any]]:
    """One row per recipe (or for ``name``): its mode, and the state of its committed and cached weights."""
    rows = []
    for n in [name] if name else list(RECIPES):
        recipe = get(n)
        want = recipe_hash(recipe)
        cached, committed = _places(recipe)
        rows.append(
            {
                "name": n,
                "mode": recipe.mode,
                "committed": record_status(committed, want),
                "cached": record_status(cached, want),
                "bytes": committed.stat().st_size if committed.is_file() else None,
                "description": recipe.description,
            }
        )
    return rows
