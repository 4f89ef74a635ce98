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
import functools
import os
import re
import types
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from .._io import check_path
from .._validate import (
    check_bool,
    check_callable,
    check_choice,
    check_device,
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
            put("checkpoint", check_path(self.checkpoint, _WHERE, "checkpoint"))
        put("resume", check_bool(self.resume, "resume", _WHERE))
        put("seed", check_seed(self.seed, _WHERE))
        check_device(self.device, _WHERE)
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
            "loss": describe_loss(self.loss),
        }

    def resume_conflicts(self, saved: Mapping[str, Any], current: Mapping[str, Any]) -> List[str]:
        """``"key: checkpoint a, now b"`` for each resume key where ``saved`` and ``current`` records differ.

        The loss is compared by ``describe_loss`` (its name and parameters); a checkpoint written before that
        description was stored is compared by the loss's name only.
        """
        out = [
            f"{k}: checkpoint {saved.get(k)!r}, now {current[k]!r}"
            for k in self.resume_keys()
            if saved.get(k) != current[k]
        ]
        key = "loss" if saved.get("loss") is not None else "loss_fn"
        if saved.get(key) is not None and saved[key] != current[key]:
            out.append(f"loss_fn: checkpoint {saved[key]!r}, now {current[key]!r}")
        return out


_ADDRESS = re.compile(r" (object )?at 0x[0-9a-fA-F]+")


def describe_loss(fn: Any) -> str:
    """A stable description of a loss: its name and its parameters (from its repr or its attributes).

    It is what a checkpoint stores and compares on resume, so that a run is not resumed with another loss. The
    module is left out: the same function is ``__main__.my_loss`` in a script and ``train.my_loss`` when imported.

    Example:
        >>> from deqlib.losses import PGDAT, cross_entropy
        >>> describe_loss(cross_entropy)
        'cross_entropy'
        >>> describe_loss(PGDAT(eps=0.1, alpha=0.025, steps=3))
        "PGDAT(eps=0.1, alpha=0.025, steps=3, norm='Linf', random_start=True)"
    """
    if isinstance(fn, functools.partial):
        args = [repr(a) for a in fn.args] + [f"{k}={v!r}" for k, v in sorted(fn.keywords.items())]
        return _ADDRESS.sub("", f"functools.partial({describe_loss(fn.func)}, {', '.join(args)})")
    if isinstance(fn, types.MethodType):
        return f"{describe_loss(fn.__self__)}.{fn.__func__.__name__}"
    if isinstance(fn, (types.FunctionType, types.BuiltinFunctionType)):
        return fn.__qualname__
    cls = type(fn)
    name = cls.__qualname__
    if cls.__repr__ is not object.__repr__:
        text = " ".join(_ADDRESS.sub("", repr(fn)).split())
        return text if text.startswith(cls.__name__) else f"{name} {text}"
    simple = (int, float, str, bool, type(None), tuple)
    params = {
        k: v for k, v in sorted(getattr(fn, "__dict__", {}).items()) if not k.startswith("_") and isinstance(v, simple)
    }
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in params.items())})"
