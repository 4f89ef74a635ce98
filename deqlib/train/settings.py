"""The settings of :func:`deqlib.train.fit`: one validated, frozen :class:`FitSettings`.

``fit(model, data, epochs=3, lr=3e-3)`` and ``fit(model, data, settings=FitSettings(epochs=3, lr=3e-3))`` are the
same call; keyword arguments given with ``settings`` override its fields. The settings that must be equal for a
checkpoint to be resumed exactly are :meth:`FitSettings.resume_keys`.

Example:
    >>> s = FitSettings(epochs=2, optimizer="AdamW", lr=1e-3)
    >>> s.optimizer, s.scheduler, s.resume_keys()[-1]
    ('adamw', 'cosine', 'epochs')
    >>> FitSettings(epochs=0)
    Traceback (most recent call last):
    ...
    ValueError: fit: epochs must be an int >= 1, got 0
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from .._validate import (
    check_bool,
    check_callable,
    check_choice,
    check_int,
    check_nonnegative,
    check_positive,
    check_seed,
)
from ..losses import cross_entropy

__all__ = ["FitSettings", "OPTIMIZERS", "SCHEDULERS", "RESUME_KEYS", "LossFn"]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("cosine", "onecycle", None)

#: Settings that must be equal for a checkpoint to be resumed exactly (``epochs`` too when a scheduler is used);
#: ``n_train`` and ``own_loader`` describe the training data (see :meth:`FitSettings.checkpoint_record`).
RESUME_KEYS = (
    "seed",
    "batch_size",
    "optimizer",
    "lr",
    "weight_decay",
    "scheduler",
    "grad_clip",
    "n_train",
    "own_loader",
)

LossFn = Callable[[nn.Module, Tensor, Tensor], Any]

_WHERE = "fit"


@dataclass(frozen=True)
class FitSettings:
    """Everything :func:`~deqlib.train.fit` needs besides the model and the data; validated on construction.

    Args:
        epochs: total number of epochs (including those already done in a resumed checkpoint), >= 1.
        loss_fn: ``loss_fn(model, x, y) -> loss`` or ``-> (loss, logits)``; it may call the model several times
            (e.g. to craft adversarial examples). None: :func:`deqlib.losses.cross_entropy`. Accuracy is tracked
            when logits are returned (the accuracy of those logits, e.g. robust accuracy for an adversarial loss).
        optimizer: one of :data:`OPTIMIZERS` ("adam", "adamw", "sgd" with momentum 0.9), any case.
        lr: (peak) learning rate, > 0.
        weight_decay: weight decay, >= 0.
        batch_size: batch size of fit's own loaders, >= 1.
        scheduler: "cosine" (cosine decay to 0 over all steps), "onecycle" (warm-up then cosine decay) or None.
        grad_clip: clip the global gradient norm to this value, > 0 (None: no clipping).
        checkpoint: path of the checkpoint to write at the end of every epoch (None: no checkpoint).
        resume: restore ``checkpoint`` if it exists and continue from the next epoch.
        seed: the run's seed, an int in [0, 2**32).
        device: where to train (see :func:`deqlib.config.select_device`); default: CUDA, then MPS, then CPU.
        progress: show a tqdm progress bar per epoch (loss, accuracy, solver steps); False prints nothing.
        log: optional callable receiving each epoch's record (a dict) at the end of the epoch, e.g. ``print``.

    Raises:
        TypeError: a setting of the wrong type (a float epoch count, a non-callable loss_fn, ...).
        ValueError: a setting of the right type but out of range, or an unknown optimizer / scheduler name.
    """

    epochs: int
    loss_fn: Optional[LossFn] = None
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    scheduler: Optional[str] = "cosine"
    grad_clip: Optional[float] = None
    checkpoint: Optional[str | os.PathLike] = None
    resume: bool = True
    seed: int = 0
    device: Optional[str | torch.device] = None
    progress: bool = True
    log: Optional[Callable[[Dict[str, Any]], Any]] = None

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("epochs", check_int(self.epochs, "epochs", _WHERE, minimum=1))
        if self.loss_fn is not None:
            check_callable(self.loss_fn, "loss_fn", _WHERE, "as loss_fn(model, x, y)")
        put("optimizer", check_choice(self.optimizer, "optimizer", _WHERE, OPTIMIZERS, ignore_case=True))
        put("lr", check_positive(self.lr, "lr", _WHERE))
        put("weight_decay", check_nonnegative(self.weight_decay, "weight_decay", _WHERE))
        put("batch_size", check_int(self.batch_size, "batch_size", _WHERE, minimum=1))
        put("scheduler", check_choice(self.scheduler, "scheduler", _WHERE, SCHEDULERS, ignore_case=True))
        if self.grad_clip is not None:
            put("grad_clip", check_positive(self.grad_clip, "grad_clip", _WHERE))
        if self.checkpoint is not None:
            if not isinstance(self.checkpoint, (str, os.PathLike)):
                raise TypeError(f"fit: checkpoint must be a path or None, got {type(self.checkpoint).__name__}")
            put("checkpoint", os.fspath(self.checkpoint))
        put("resume", check_bool(self.resume, "resume", _WHERE))
        put("seed", check_seed(self.seed, _WHERE))
        if self.device is not None and not isinstance(self.device, (str, torch.device)):
            raise TypeError(f"fit: device must be a string, a torch.device or None, got {type(self.device).__name__}")
        put("progress", check_bool(self.progress, "progress", _WHERE))
        if self.log is not None:
            check_callable(self.log, "log", _WHERE, "receiving a dict")

    @classmethod
    def build(cls, settings: Optional["FitSettings"] = None, options: Optional[Mapping[str, Any]] = None):
        """``settings`` with ``options`` (fit's keyword arguments) overriding its fields; unknown names refused.

        Raises:
            TypeError: an unknown option, ``settings`` not a :class:`FitSettings`, or no ``epochs`` anywhere.
        """
        options = dict(options or {})
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise TypeError(f"fit: unknown keyword argument(s) {unknown}; the settings are {names} (and val_data)")
        if settings is None:
            if "epochs" not in options:
                raise TypeError("fit: missing the required setting epochs (a keyword argument or in settings)")
            return cls(**options)
        if not isinstance(settings, cls):
            raise TypeError(f"fit: settings must be a FitSettings, got {type(settings).__name__}")
        return dataclasses.replace(settings, **options) if options else settings

    @property
    def loss(self) -> LossFn:
        """The loss fit uses: ``loss_fn``, or :func:`deqlib.losses.cross_entropy` when it is None."""
        return self.loss_fn if self.loss_fn is not None else cross_entropy

    def resume_keys(self) -> Tuple[str, ...]:
        """The keys of :meth:`checkpoint_record` that must be equal for an exact resume."""
        return RESUME_KEYS + (("epochs",) if self.scheduler is not None else ())

    def checkpoint_record(self, *, n_train: int, own_loader: bool) -> Dict[str, Any]:
        """The plain dict of settings stored in a checkpoint (the data's size and kind included)."""
        return {
            "epochs": self.epochs,
            "optimizer": self.optimizer,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
            "scheduler": self.scheduler,
            "grad_clip": self.grad_clip,
            "seed": self.seed,
            "n_train": int(n_train),
            "own_loader": bool(own_loader),
            "loss_fn": getattr(self.loss, "__qualname__", type(self.loss).__name__),
        }

    def resume_conflicts(self, saved: Mapping[str, Any], current: Mapping[str, Any]) -> List[str]:
        """``"key: checkpoint a, now b"`` for each resume key where ``saved`` and ``current`` records differ."""
        return [
            f"{k}: checkpoint {saved.get(k)!r}, now {current[k]!r}"
            for k in self.resume_keys()
            if saved.get(k) != current[k]
        ]
