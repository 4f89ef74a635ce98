"""Training: :func:`fit` with a progress bar, a history, atomic checkpoints and exact resume.

:func:`fit` trains any ``nn.Module`` with a pluggable loss ``loss_fn(model, x, y)`` (clean cross-entropy by
default; adversarial-training losses that call the model several times per batch plug in the same way).
It records, per epoch, the loss, the accuracy, the mean number of solver steps of every DEQ inside the model
(forward and, with implicit gradients, backward), the learning rate and the time.

Determinism: all randomness of epoch ``e`` (shuffling, dropout, random attack starts, ...) is seeded from
``(seed, e)`` alone, so a run resumed from the checkpoint written at the end of any epoch ends with exactly
the same weights as an uninterrupted run (on the same machine and device).

:func:`train_classifier` is the book's standard recipe: a DEQ classifier trained on MNIST, small in fast mode
(the embedded 5,000 digits, a few epochs on a CPU), paper-sized in full mode. ``python -m deqlib.train`` runs it.

Example:
    >>> from deqlib import data, cells, train
    >>> ds = data.load("digits", "train")
    >>> model = cells.classifier_for(ds, "mlp", width=32)
    >>> history = train.fit(model, ds, epochs=2, lr=3e-3, progress=False)
    >>> history["epoch"], sorted(history)
    ([1, 2], ['backward_steps', 'epoch', 'lr', 'seconds', 'solver_steps', 'train_acc', 'train_loss'])
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from . import cells, config, data
from .checkpoint import FIT_FORMAT, load_checkpoint, save_checkpoint

__all__ = [
    "History",
    "fit",
    "evaluate_accuracy",
    "cross_entropy_loss",
    "recipe",
    "train_classifier",
    "OPTIMIZERS",
    "SCHEDULERS",
]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("cosine", "onecycle", None)

#: Settings that must be equal for a checkpoint to be resumed exactly (``epochs`` too when a scheduler is used).
_RESUME_KEYS = (
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


# ----------------------------------------------------------------------------------------------------
# History
# ----------------------------------------------------------------------------------------------------


class History(dict):
    """Per-epoch training records: a ``dict`` mapping each metric to a list with one entry per epoch.

    Keys: ``epoch`` (1-based), ``train_loss``, ``train_acc`` (``None`` where the loss returned no logits),
    ``val_acc`` (only with validation data), ``solver_steps`` (mean forward solver steps per sample over the
    DEQ modules of the model; ``None`` if it has none), ``backward_steps`` (the same for the adjoint solver of
    implicit gradients; ``None`` without one), ``lr`` (learning rate of the epoch's last step) and ``seconds``.
    Metrics are also readable as attributes (``history.train_loss``).

    It is a plain dict of lists of numbers, so ``json.dumps(history)`` works and ``history.to_dict()`` goes into a
    checkpoint that loads with ``weights_only=True``.

    Example:
        >>> h = History()
        >>> h.append({"epoch": 1, "train_loss": 0.5})
        >>> h.train_loss, h.last()
        ([0.5], {'epoch': 1, 'train_loss': 0.5})
    """

    def __getattr__(self, name: str) -> List[Any]:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"History has no metric {name!r}; it has {sorted(self)}") from None

    @property
    def num_epochs(self) -> int:
        """Number of epochs recorded."""
        return len(self.get("epoch", []))

    def append(self, record: Mapping[str, Any]) -> None:
        """Add one epoch's record (a dict metric -> value)."""
        n = self.num_epochs
        for key, value in record.items():
            self.setdefault(key, [None] * n).append(value)
        for key, values in self.items():
            if len(values) < n + 1:
                values.append(None)

    def last(self) -> Dict[str, Any]:
        """The last epoch's record as a dict (empty if nothing was recorded)."""
        return {key: values[-1] for key, values in self.items() if values}

    def records(self) -> List[Dict[str, Any]]:
        """One dict per epoch."""
        return [{key: values[i] for key, values in self.items()} for i in range(self.num_epochs)]

    def to_dict(self) -> Dict[str, List[Any]]:
        """A plain ``dict`` of lists (for checkpoints and JSON)."""
        return {key: list(values) for key, values in self.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Iterable[Any]]) -> "History":
        """Rebuild from :meth:`to_dict`'s output."""
        return cls({str(key): list(values) for key, values in data.items()})

    def __repr__(self) -> str:
        return f"History({dict.__repr__(self)})"


# ----------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------


def cross_entropy_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tuple[Tensor, Tensor]:
    """The default loss of :func:`fit`: ``(cross_entropy(model(x), y), logits)``."""
    logits = model(x)
    return F.cross_entropy(logits, y), logits


def _epoch_seed(seed: int, epoch: int) -> int:
    """A seed for (seed, 0-based epoch) alone, well mixed, in [0, 2**31)."""
    return int(np.random.SeedSequence([int(seed), int(epoch), 0x0DE0]).generate_state(1)[0]) & 0x7FFFFFFF


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _check_settings(
    epochs: Any, lr: Any, weight_decay: Any, batch_size: Any, optimizer: Any, scheduler: Any, grad_clip: Any, seed: Any
) -> None:
    if not _is_int(epochs) or epochs < 1:
        raise ValueError(f"fit: epochs must be an int >= 1, got {epochs!r}")
    if not _is_number(lr) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"fit: lr must be a finite number > 0, got {lr!r}")
    if not _is_number(weight_decay) or not math.isfinite(weight_decay) or weight_decay < 0:
        raise ValueError(f"fit: weight_decay must be a finite number >= 0, got {weight_decay!r}")
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"fit: batch_size must be an int >= 1, got {batch_size!r}")
    if not isinstance(optimizer, str) or optimizer.lower() not in OPTIMIZERS:
        raise ValueError(f"fit: unknown optimizer {optimizer!r}; expected one of {OPTIMIZERS}")
    if scheduler is not None and (not isinstance(scheduler, str) or scheduler.lower() not in SCHEDULERS):
        raise ValueError(f"fit: unknown scheduler {scheduler!r}; expected one of {SCHEDULERS}")
    if grad_clip is not None and (not _is_number(grad_clip) or not math.isfinite(grad_clip) or grad_clip <= 0):
        raise ValueError(f"fit: grad_clip must be None or a finite number > 0, got {grad_clip!r}")
    if not _is_int(seed) or not 0 <= seed < 2**32:
        raise ValueError(f"fit: seed must be an int in [0, 2**32), got {seed!r}")


def _as_dataset(data: Any, what: str) -> Any:
    """Accept a Dataset, a DataLoader, or a pair of tensors (X, y)."""
    if isinstance(data, (Dataset, DataLoader)):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        return TensorDataset(*data)
    raise TypeError(
        f"{what} must be a torch Dataset, a DataLoader or a pair of tensors (X, y), got {type(data).__name__}"
    )


def _loader(data: Any, batch_size: int, *, shuffle: bool, generator: Optional[torch.Generator] = None) -> Any:
    if isinstance(data, DataLoader):
        return data
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0, drop_last=False)


def _split_batch(batch: Any, device: torch.device) -> Tuple[Tensor, Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(f"fit: each batch must be a pair (x, y), got {type(batch).__name__}")
    x, y = batch[0], batch[1]
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def _unpack_loss(out: Any) -> Tuple[Tensor, Optional[Tensor]]:
    if isinstance(out, (tuple, list)):
        if len(out) != 2:
            raise TypeError(f"fit: loss_fn must return loss or (loss, logits), got a sequence of {len(out)}")
        loss, logits = out
    else:
        loss, logits = out, None
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise TypeError(
            f"fit: loss_fn must return a scalar tensor loss (or (loss, logits)), got {type(loss).__name__}"
            + (f" of shape {tuple(loss.shape)}" if isinstance(loss, Tensor) else "")
        )
    if logits is not None and not isinstance(logits, Tensor):
        raise TypeError(f"fit: the logits returned by loss_fn must be a tensor or None, got {type(logits).__name__}")
    return loss.reshape(()), logits


def _infos(model: nn.Module, attr: str) -> Dict[int, Any]:
    """``{id(module): info}`` for every module of ``model`` with a non-None ``attr`` (duck typing)."""
    out = {}
    for module in model.modules():
        info = getattr(module, attr, None)
        if info is not None and isinstance(getattr(info, "steps", None), Tensor):
            out[id(module)] = info
    return out


def _fresh_steps(model: nn.Module, attr: str, before: Dict[int, Any]) -> Optional[float]:
    """Mean steps per sample over the modules whose ``attr`` changed since ``before`` (None if none did)."""
    means = [
        float(info.steps.float().mean())
        for key, info in _infos(model, attr).items()
        if info is not before.get(key) and info.steps.numel()
    ]
    return sum(means) / len(means) if means else None


def _make_optimizer(name: str, params: Iterable[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)


def _make_scheduler(name: Optional[str], optimizer: torch.optim.Optimizer, lr: float, total_steps: int):
    if name is None:
        return None
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps)


def _model_device(model: nn.Module) -> Optional[torch.device]:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return None


def _mean(values: List[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


# ----------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------


def evaluate_accuracy(
    model: nn.Module, data: Any, *, batch_size: int = 256, device: Optional[str | torch.device] = None
) -> float:
    """Clean accuracy of ``model`` on ``data``, without gradients, in eval mode (the mode is restored after).

    Args:
        model: maps a batch of inputs to logits (N, C).
        data: a Dataset of (x, y), a DataLoader, or a pair of tensors (X, y).
        batch_size: batch size (ignored for a DataLoader).
        device: where to compute; default: the model's device. The model is moved there.

    Returns:
        The fraction of correctly classified samples, in [0, 1].

    Example:
        >>> from deqlib import data, cells
        >>> ds = data.load("digits", "test")
        >>> acc = evaluate_accuracy(cells.classifier_for(ds, "mlp", width=16), ds)
        >>> 0.0 <= acc <= 1.0
        True
    """
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"evaluate_accuracy: batch_size must be an int >= 1, got {batch_size!r}")
    data = _as_dataset(data, "evaluate_accuracy: data")
    dev = config.select_device(device) if device is not None else (_model_device(model) or config.select_device())
    model.to(dev)
    was_training = model.training
    model.eval()
    correct, total = 0, 0
    try:
        with torch.no_grad():
            for batch in _loader(data, batch_size, shuffle=False):
                x, y = _split_batch(batch, dev)
                correct += int((model(x).argmax(dim=1) == y).sum())
                total += int(y.numel())
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("evaluate_accuracy: the data set is empty")
    return correct / total


# ----------------------------------------------------------------------------------------------------
# fit
# ----------------------------------------------------------------------------------------------------


def _check_resume(saved: Mapping[str, Any], current: Mapping[str, Any], path: str) -> None:
    keys = list(_RESUME_KEYS) + (["epochs"] if current["scheduler"] is not None else [])
    diffs = [f"{k}: checkpoint {saved.get(k)!r}, now {current[k]!r}" for k in keys if saved.get(k) != current[k]]
    if diffs:
        raise ValueError(
            f"fit: cannot resume {path!r}: its settings differ from this call's in a way that breaks an exact "
            f"resume ({'; '.join(diffs)}). Use the same settings, another checkpoint path, or resume=False to start over."
        )


def fit(
    model: nn.Module,
    train_data: Any,
    *,
    epochs: int,
    loss_fn: Optional[LossFn] = None,
    optimizer: str = "adam",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 128,
    scheduler: Optional[str] = "cosine",
    grad_clip: Optional[float] = None,
    val_data: Any = None,
    checkpoint: Optional[str | os.PathLike] = None,
    resume: bool = True,
    seed: int = 0,
    device: Optional[str | torch.device] = None,
    progress: bool = True,
    log: Optional[Callable[[Dict[str, Any]], Any]] = None,
) -> History:
    """Train ``model`` for ``epochs`` epochs; return the per-epoch :class:`History`.

    Each epoch re-seeds Python, NumPy and PyTorch and the shuffling generator from ``(seed, epoch)`` only, so the
    epoch does the same thing whether the run was resumed or not. The learning-rate schedule is stepped after each
    batch. With ``checkpoint``, a checkpoint is written atomically at the end of every epoch (model, optimizer and
    scheduler states, epochs done, history, seed and settings); with ``resume=True`` an existing one is restored
    and training continues with the next epoch, ending with exactly the weights of an uninterrupted run.

    Args:
        model: the model; moved to ``device`` and left in train mode.
        train_data: a Dataset of (x, y) pairs (or a pair of tensors (X, y)), batched and shuffled here; or a
            DataLoader, used as is. Exact resume needs fit's own loader (or a DataLoader without its own
            ``generator`` and with ``num_workers=0``, which then draws from the re-seeded global RNG).
        epochs: total number of epochs (including those already done in a resumed checkpoint), >= 1.
        loss_fn: ``loss_fn(model, x, y) -> loss`` or ``-> (loss, logits)``; it may call the model several times
            (e.g. to craft adversarial examples). Default: :func:`cross_entropy_loss`. Accuracy is tracked when
            logits are returned (the accuracy of those logits, e.g. robust accuracy for an adversarial loss).
        optimizer: one of :data:`OPTIMIZERS` ("adam", "adamw", "sgd" with momentum 0.9).
        lr: (peak) learning rate, > 0.
        weight_decay: weight decay, >= 0.
        batch_size: batch size of fit's own loaders, >= 1.
        scheduler: "cosine" (cosine decay to 0 over all steps), "onecycle" (warm-up then cosine decay) or None.
        grad_clip: clip the global gradient norm to this value (None: no clipping).
        val_data: optional validation data (Dataset, DataLoader or (X, y)); its accuracy is recorded every epoch.
        checkpoint: path of the checkpoint to write at the end of every epoch (None: no checkpoint).
        resume: restore ``checkpoint`` if it exists and continue from the next epoch.
        seed: the run's seed, an int in [0, 2**32).
        device: where to train (see :func:`deqlib.config.select_device`); default: CUDA, then MPS, then CPU.
        progress: show a tqdm progress bar per epoch (loss, accuracy, solver steps); False prints nothing.
        log: optional callable receiving each epoch's record (a dict) at the end of the epoch, e.g. ``print``.

    Returns:
        The :class:`History` of all epochs (those restored from the checkpoint included).

    Raises:
        ValueError: bad settings (epochs, lr, batch_size, weight_decay, grad_clip, seed, unknown optimizer or
            scheduler), or a checkpoint whose settings differ from this call's in a way that breaks resume.
        TypeError: unknown keyword arguments, bad data, or a loss_fn returning something else than a scalar loss.
        FloatingPointError: the loss became NaN or Inf; nothing is saved for that epoch, so the last checkpoint
            is the last good one.
        CheckpointError: the checkpoint exists but is corrupt.

    Example:
        >>> from deqlib import data, cells
        >>> ds = data.load("digits", "train")
        >>> model = cells.classifier_for(ds, "mlp", width=32)
        >>> h = fit(model, ds, epochs=2, lr=3e-3, progress=False)
        >>> h["epoch"], h["train_loss"][1] < h["train_loss"][0]
        ([1, 2], True)
    """
    _check_settings(epochs, lr, weight_decay, batch_size, optimizer, scheduler, grad_clip, seed)
    if not isinstance(model, nn.Module):
        raise TypeError(f"fit: model must be an nn.Module, got {type(model).__name__}")
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"fit: loss_fn must be callable as loss_fn(model, x, y), got {type(loss_fn).__name__}")
    if log is not None and not callable(log):
        raise TypeError(f"fit: log must be a callable receiving a dict, got {type(log).__name__}")
    loss_fn = loss_fn or cross_entropy_loss
    optimizer = optimizer.lower()
    scheduler = scheduler.lower() if scheduler is not None else None
    train_data = _as_dataset(train_data, "fit: train_data")
    if val_data is not None:
        val_data = _as_dataset(val_data, "fit: val_data")
    own_loader = not isinstance(train_data, DataLoader)
    try:
        n_batches = len(train_data) if not own_loader else math.ceil(len(train_data) / batch_size)
        n_train = len(train_data.dataset) if not own_loader else len(train_data)  # type: ignore[union-attr]
    except TypeError as e:
        raise TypeError("fit: train_data must have a length (iterable-style data sets are not supported)") from e
    if n_batches == 0:
        raise ValueError("fit: train_data is empty")

    dev = config.select_device(device)
    config.seed_everything(int(seed))
    model.to(dev)
    settings: Dict[str, Any] = {
        "epochs": int(epochs),
        "optimizer": optimizer,
        "lr": float(lr),
        "weight_decay": float(weight_decay),
        "batch_size": int(batch_size),
        "scheduler": scheduler,
        "grad_clip": None if grad_clip is None else float(grad_clip),
        "seed": int(seed),
        "n_train": int(n_train),
        "own_loader": own_loader,
        "loss_fn": getattr(loss_fn, "__qualname__", type(loss_fn).__name__),
    }
    opt = _make_optimizer(optimizer, model.parameters(), float(lr), float(weight_decay))
    sched = _make_scheduler(scheduler, opt, float(lr), int(epochs) * n_batches)
    history = History()
    start = 0

    ckpt_path = os.fspath(checkpoint) if checkpoint is not None else None
    if ckpt_path is not None and resume and os.path.exists(ckpt_path):
        state = load_checkpoint(ckpt_path, map_location="cpu")
        if state.get("format") != FIT_FORMAT:
            raise ValueError(f"fit: {ckpt_path!r} is not a checkpoint written by fit (format {state.get('format')!r})")
        _check_resume(state.get("settings", {}), settings, ckpt_path)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise ValueError(f"fit: the model in {ckpt_path!r} does not fit this model: {e}") from e
        history = History.from_dict(state["history"])
        start = int(state["epoch"])
        if start >= epochs:
            return history
        opt.load_state_dict(state["optimizer"])
        if sched is not None:
            sched.load_state_dict(state["scheduler"])

    from tqdm.auto import tqdm

    for epoch in range(start, int(epochs)):
        t0 = time.perf_counter()
        eseed = _epoch_seed(int(seed), epoch)
        config.seed_everything(eseed)
        generator = torch.Generator().manual_seed(eseed)
        loader = _loader(train_data, int(batch_size), shuffle=True, generator=generator)
        model.train()
        loss_sum, seen, correct, counted = 0.0, 0, 0, 0
        lr_used = float(opt.param_groups[0]["lr"])
        fwd_steps: List[float] = []
        bwd_steps: List[float] = []
        bar = tqdm(loader, total=n_batches, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=True)
        try:
            for b, batch in enumerate(bar):
                x, y = _split_batch(batch, dev)
                before_f, before_b = _infos(model, "last_info"), _infos(model, "last_backward_info")
                loss, logits = _unpack_loss(loss_fn(model, x, y))
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"fit: the loss is {value} at epoch {epoch + 1}, batch {b + 1} of {n_batches}; "
                        f"nothing was saved for this epoch"
                        + (f" (the last checkpoint holds {epoch} epoch(s))" if ckpt_path is not None else "")
                        + ". Try a smaller lr, grad_clip or a more stable model."
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), float(grad_clip))
                lr_used = float(opt.param_groups[0]["lr"])
                opt.step()
                if sched is not None:
                    sched.step()
                n = int(y.shape[0])
                loss_sum += value * n
                seen += n
                if logits is not None and logits.dim() >= 2 and logits.shape[0] == n:
                    correct += int((logits.detach().argmax(dim=1) == y).sum())
                    counted += n
                s_f = _fresh_steps(model, "last_info", before_f)
                s_b = _fresh_steps(model, "last_backward_info", before_b)
                if s_f is not None:
                    fwd_steps.append(s_f)
                if s_b is not None:
                    bwd_steps.append(s_b)
                if progress:
                    post = {"loss": f"{loss_sum / seen:.4f}"}
                    if counted:
                        post["acc"] = f"{correct / counted:.3f}"
                    if fwd_steps:
                        post["steps"] = f"{_mean(fwd_steps):.1f}"
                    if bwd_steps:
                        post["bsteps"] = f"{_mean(bwd_steps):.1f}"
                    bar.set_postfix(post, refresh=False)
        finally:
            bar.close()

        record: Dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": correct / counted if counted else None,
        }
        if val_data is not None:
            record["val_acc"] = evaluate_accuracy(model, val_data, batch_size=max(int(batch_size), 256), device=dev)
            model.train()
        record["solver_steps"] = _mean(fwd_steps)
        record["backward_steps"] = _mean(bwd_steps)
        record["lr"] = lr_used
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        if ckpt_path is not None:
            save_checkpoint(
                ckpt_path,
                {
                    "format": FIT_FORMAT,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "epoch": epoch + 1,
                    "history": history.to_dict(),
                    "seed": int(seed),
                    "settings": settings,
                },
            )
        if log is not None:
            log(dict(record))
    return history


# ----------------------------------------------------------------------------------------------------
# The book's standard recipe
# ----------------------------------------------------------------------------------------------------

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
        ``{"dataset": name, "mode": mode, "kind": "mlp" | "conv", "model": classifier options,
        "fit": fit options}`` (a fresh copy; change it freely).

    Example:
        >>> recipe("mnist5k", mode="fast")["fit"]["epochs"]
        5
    """
    mode = config.get_mode(mode)
    name = dataset_name if dataset_name is not None else config.choose(fast="mnist5k", full="mnist", mode=mode)
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

    The model is built under ``seed`` and trained by :func:`fit` with the same seed, so the same call gives the
    same model on the same machine; with ``checkpoint`` an interrupted run resumes where it stopped.

    Args:
        dataset_name: see :func:`recipe` (default: mnist5k in fast mode, torchvision MNIST in full mode).
        mode: ``"fast"`` or ``"full"``; default: :func:`deqlib.config.get_mode`.
        seed: seed of the initialisation and of the training run.
        checkpoint: optional checkpoint path for :func:`fit` (resumed if it exists).
        progress: show progress bars.
        device: see :func:`deqlib.config.select_device`.
        log: passed to :func:`fit` (called with each epoch's record).

    Returns:
        ``(model, history, test_acc)``: the trained :class:`~deqlib.cells.DEQClassifier` (in eval mode), its
        :class:`History` (no ``val_acc``: the test set is evaluated once, at the end) and the test accuracy in [0, 1].

    Example:
        >>> model, history, acc = train_classifier("mnist5k", mode="fast", progress=False)  # doctest: +SKIP
        >>> acc >= 0.95  # doctest: +SKIP
        True
    """
    r = recipe(dataset_name, mode=mode)
    train_set, test_set = data.load(r["dataset"], "train"), data.load(r["dataset"], "test")
    config.seed_everything(int(seed))
    model = cells.classifier_for(train_set, r["kind"], **r["model"])
    history = fit(
        model, train_set, seed=seed, checkpoint=checkpoint, progress=progress, device=device, log=log, **r["fit"]
    )
    test_acc = evaluate_accuracy(model, test_set, device=device)
    model.eval()
    return model, history, test_acc


def _main(argv: Optional[List[str]] = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m deqlib.train",
        description="Train the book's standard DEQ classifier and print its test accuracy.",
    )
    parser.add_argument("--dataset", default=None, help="digits, mnist5k, mnist or fashion-mnist (default: by mode)")
    parser.add_argument(
        "--mode", choices=config.MODES, default=None, help="fast or full (default: $DEQLIB_MODE, else by device)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default=None, help="checkpoint path (resumed if it exists)")
    parser.add_argument("--save", default=None, help="save the trained weights to this path")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (1 is best on a busy machine)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    r = recipe(args.dataset, mode=args.mode)
    print(
        f"deqlib.train: {r['mode']} mode, {r['dataset']}, {r['kind']} DEQ {r['model']}, fit {r['fit']}, "
        f"device {config.select_device()}"
    )

    def show(rec: Dict[str, Any]) -> None:
        parts = [f"epoch {rec['epoch']}", f"loss {rec['train_loss']:.4f}"]
        if rec.get("train_acc") is not None:
            parts.append(f"train acc {rec['train_acc']:.4f}")
        if rec.get("solver_steps") is not None:
            parts.append(f"steps {rec['solver_steps']:.1f}")
        if rec.get("backward_steps") is not None:
            parts.append(f"backward steps {rec['backward_steps']:.1f}")
        parts += [f"lr {rec['lr']:.2e}", f"{rec['seconds']:.1f} s"]
        print(", ".join(parts), flush=True)

    t0 = time.perf_counter()
    model, _, acc = train_classifier(
        r["dataset"],
        mode=r["mode"],
        seed=args.seed,
        checkpoint=args.checkpoint,
        progress=not args.no_progress,
        log=show,
    )
    if args.save:
        from .checkpoint import save_model

        save_model(args.save, model)
        print(f"weights saved to {args.save}")
    print(f"test accuracy: {acc:.4f} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    _main()
