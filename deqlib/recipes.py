"""The book's standard DEQ classifier recipes: :func:`recipe` (the settings) and :func:`train_classifier` (a run).

A recipe is a DEQ classifier trained on MNIST-like digits, small in fast mode (the embedded 5,000 digits, a few
epochs on a CPU), paper-sized in full mode. ``python -m deqlib.train`` runs :func:`train_classifier`.

Example:
    >>> r = recipe("digits", mode="fast")
    >>> r["kind"], r["fit"]["scheduler"]
    ('mlp', 'onecycle')
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import nn

from . import cells, config, data
from ._io import check_path
from ._validate import check_bool, check_callable, check_device, check_seed
from .train import History, evaluate_accuracy, fit

__all__ = ["recipe", "train_classifier"]

_RECIPES: Dict[str, Dict[str, Dict[str, Any]]] = {
    # Embedded 8x8 digits: an MLP DEQ, seconds on a CPU.
    "digits": {
        "fast": {
            "kind": "mlp",
            "model": {"width": 64, "solver": "anderson", "max_iter": 20, "tol": 1e-3, "backward_max_iter": 8},
            "fit": {"epochs": 10, "lr": 3e-3, "batch_size": 64, "scheduler": "onecycle", "grad_clip": 1.0},
        },
        "full": {
            "kind": "mlp",
            "model": {"width": 128, "solver": "anderson", "max_iter": 30, "tol": 1e-4, "backward_max_iter": 20},
            "fit": {"epochs": 30, "lr": 2e-3, "batch_size": 64, "scheduler": "onecycle", "grad_clip": 1.0},
        },
    },
    # Embedded 5,000 MNIST digits (4,000 train / 1,000 test): the conv DEQ of the book's fast mode. The adjoint
    # (IFT backward) solve is capped at 8 steps: a cheap approximate implicit gradient that trains just as well;
    # gradient clipping keeps the peak of the one-cycle schedule stable.
    "mnist5k": {
        "fast": {
            "kind": "conv",
            "model": {"channels": 32, "solver": "anderson", "max_iter": 20, "tol": 1e-3, "backward_max_iter": 8},
            "fit": {"epochs": 5, "lr": 3e-3, "batch_size": 64, "scheduler": "onecycle", "grad_clip": 1.0},
        },
        "full": {
            "kind": "conv",
            "model": {"channels": 64, "solver": "anderson", "max_iter": 30, "tol": 1e-4, "backward_max_iter": 20},
            "fit": {"epochs": 20, "lr": 2e-3, "batch_size": 64, "scheduler": "onecycle", "grad_clip": 1.0},
        },
    },
    # torchvision MNIST / Fashion-MNIST (60,000 train / 10,000 test): the paper-scale setups, meant for a GPU.
    "mnist": {
        "fast": {
            "kind": "conv",
            "model": {"channels": 32, "solver": "anderson", "max_iter": 20, "tol": 1e-3, "backward_max_iter": 8},
            "fit": {"epochs": 2, "lr": 3e-3, "batch_size": 128, "scheduler": "onecycle", "grad_clip": 1.0},
        },
        "full": {
            "kind": "conv",
            "model": {"channels": 64, "solver": "anderson", "max_iter": 30, "tol": 1e-4, "backward_max_iter": 20},
            "fit": {"epochs": 15, "lr": 2e-3, "batch_size": 128, "scheduler": "onecycle", "grad_clip": 1.0},
        },
    },
    "fashion-mnist": {
        "fast": {
            "kind": "conv",
            "model": {"channels": 32, "solver": "anderson", "max_iter": 20, "tol": 1e-3, "backward_max_iter": 8},
            "fit": {"epochs": 3, "lr": 3e-3, "batch_size": 128, "scheduler": "onecycle", "grad_clip": 1.0},
        },
        "full": {
            "kind": "conv",
            "model": {"channels": 64, "solver": "anderson", "max_iter": 30, "tol": 1e-4, "backward_max_iter": 20},
            "fit": {"epochs": 30, "lr": 2e-3, "batch_size": 128, "scheduler": "onecycle", "grad_clip": 1.0},
        },
    },
}


def recipe(dataset_name: Optional[str] = None, *, mode: Optional[str] = None) -> Dict[str, Any]:
    """The book's standard DEQ classifier recipe for a data set and mode.

    Args:
        dataset_name: one of ``"digits"``, ``"mnist5k"``, ``"mnist"``, ``"fashion-mnist"``; default: ``"mnist5k"``
            in fast mode, ``"mnist"`` (torchvision, 60,000 digits) in full mode.
        mode: ``"fast"`` or ``"full"``; default: :func:`deqlib.config.get_mode`.

    Returns:
        A dict with the keys ``dataset`` (the name), ``mode``, ``kind`` (``"mlp"`` or ``"conv"``), ``model`` (the
        classifier options) and ``fit`` (the fit options): a fresh copy, change it freely.

    Example:
        >>> recipe("mnist5k", mode="fast")["fit"]["epochs"]
        5
    """
    mode = config.get_mode(mode)
    name = dataset_name if dataset_name is not None else config.choose(fast="mnist5k", full="mnist", mode=mode)
    if not isinstance(name, str):
        raise TypeError(f"recipe: dataset_name must be a string or None, got {type(name).__name__}")
    key = str(name).strip().lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist"}.get(key, key)
    if key not in _RECIPES:
        raise ValueError(f"recipe: no recipe for data set {name!r}; available: {tuple(_RECIPES)}")
    r = _RECIPES[key][mode]
    return {"dataset": key, "mode": mode, "kind": r["kind"], "model": dict(r["model"]), "fit": dict(r["fit"])}


def train_classifier(
    dataset_name: Optional[str] = None,
    *,
    mode: Optional[str] = None,
    seed: int = 0,
    checkpoint: Optional[str | os.PathLike] = None,
    progress: bool = True,
    device: Optional[str | torch.device] = None,
    log: Optional[Callable[[Dict[str, Any]], Any]] = None,
) -> Tuple[nn.Module, History, float]:
    """Train the book's standard DEQ classifier (see :func:`recipe`) and measure its clean test accuracy.

    The model is built under ``seed`` and trained by :func:`~deqlib.train.fit` with the same seed, so the same call gives the
    same model on the same machine; with ``checkpoint`` an interrupted run resumes where it stopped.

    Args:
        dataset_name: see :func:`recipe` (default: mnist5k in fast mode, torchvision MNIST in full mode).
        mode: ``"fast"`` or ``"full"``; default: :func:`deqlib.config.get_mode`.
        seed: seed of the initialisation and of the training run.
        checkpoint: optional checkpoint path for :func:`~deqlib.train.fit` (resumed if it exists).
        progress: show progress bars.
        device: see :func:`deqlib.config.select_device`.
        log: passed to :func:`~deqlib.train.fit` (called with each epoch's record).

    Raises:
        TypeError, ValueError: a bad argument (before any data are loaded), or see :func:`~deqlib.train.fit`.

    Returns:
        ``(model, history, test_acc)``: the trained :class:`~deqlib.cells.DEQClassifier` (in eval mode), its
        :class:`~deqlib.train.History` (no ``val_acc``: the test set is evaluated once, at the end) and the test accuracy in [0, 1].

    Example:
        >>> model, history, acc = train_classifier("mnist5k", mode="fast", progress=False)  # doctest: +SKIP
        >>> acc >= 0.95  # doctest: +SKIP
        True
    """
    where = "train_classifier"
    seed = check_seed(seed, where)  # the arguments are checked before any data are loaded
    if checkpoint is not None:
        check_path(checkpoint, where, "checkpoint")
    check_bool(progress, "progress", where)
    check_device(device, where)
    if log is not None:
        check_callable(log, "log", where, "receiving a dict")
    r = recipe(dataset_name, mode=mode)
    train_set, test_set = data.load(r["dataset"], "train"), data.load(r["dataset"], "test")
    config.seed_everything(seed)
    model = cells.classifier_for(train_set, r["kind"], **r["model"])
    history = fit(
        model, train_set, seed=seed, checkpoint=checkpoint, progress=progress, device=device, log=log, **r["fit"]
    )
    test_acc = evaluate_accuracy(model, test_set, device=device)
    model.eval()
    return model, history, test_acc
