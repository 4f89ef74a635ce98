"""The training loop: :func:`fit`, in named steps (prepare, restore, one epoch, one batch, save).

Determinism: all randomness of epoch ``e`` (shuffling, dropout, random attack starts, ...) is seeded from
``(seed, e)`` alone, so a run resumed from the checkpoint written at the end of any epoch ends with exactly the
same weights as an uninterrupted run (on the same machine and device).

Checkpoints: the path is checked (and its folder created) before the first epoch; each save keeps the previous
checkpoint as ``<checkpoint>.bak`` (:func:`~deqlib.checkpoint.backup_path`); on resume, a checkpoint damaged from
outside is replaced by its backup with a :class:`~deqlib.checkpoint.CheckpointWarning` (the epoch it lacks is trained
again, to the same weights); the temporary files that a kill during a save left behind are removed.

Several processes: inside a torchrun process group, fit trains data-parallel on the same global batches
(:mod:`deqlib.train.distributed`).
"""

from __future__ import annotations

import copy
import math
import os
import re
import time
from dataclasses import dataclass, replace
from typing import Any, Dict, Iterable, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .. import config
from .._io import check_writable, remove_stale_temps
from .._validate import check_labels_in_range, check_logits
from ..checkpoint import FIT_FORMAT, backup_path, load_checkpoint, save_checkpoint
from ..diagnostics import convergence_report
from ..solvers import ConvergenceCounts, quiet_convergence, warn_counts
from . import distributed
from .accuracy import evaluate_accuracy
from .batches import as_dataset, check_data_labels, make_loader, num_classes_of, split_batch
from .history import History
from .settings import FitSettings
from .solve_stats import SolveStats

__all__ = ["fit"]


def fit(
    model: nn.Module, train_data: Any, *, settings: Optional[FitSettings] = None, val_data: Any = None, **options: Any
) -> History:
    """Train ``model`` for ``epochs`` epochs; return the per-epoch :class:`~deqlib.train.History`.

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
        settings: a :class:`~deqlib.train.FitSettings`; optional, the same settings can be given as keywords.
        val_data: optional validation data (Dataset, DataLoader or (X, y)); its accuracy is recorded every epoch.
        **options: the fields of :class:`~deqlib.train.FitSettings` (``epochs`` is required, here or in
            ``settings``): ``epochs, loss_fn, optimizer, lr, weight_decay, batch_size, scheduler, grad_clip,
            checkpoint, resume, seed, device, progress, log``; with ``settings``, they override its fields.
            Inside a process group of several processes (torchrun), ``batch_size`` is the global batch and
            ``loss_fn`` must return the mean over its batch (all of deqlib's losses do); see
            :mod:`deqlib.train.distributed`.

    Returns:
        The :class:`~deqlib.train.History` of all epochs (those restored from the checkpoint included); its
        ``solver_steps`` / ``backward_steps`` count every solve of every DEQ of the model, its
        ``solver_nonconverged`` / ``backward_nonconverged`` the share of their samples that did not converge (see
        its docstring).

    Warns:
        SolverConvergenceWarning: once per epoch whose training solves left samples unconverged (instead of once
            per solve; a :func:`~deqlib.solvers.quiet_convergence` block around ``fit`` silences it too).

    Raises:
        TypeError: unknown keyword arguments, a setting of the wrong type, bad data, or a loss_fn returning
            something else than a scalar loss.
        ValueError: a setting out of range (epochs, lr, batch_size, weight_decay, grad_clip, seed, unknown
            optimizer or scheduler); labels that are not class indices in [0, num_classes) (-100 included), or
            another number of labels than of images; a checkpoint path that cannot be written (checked before the
            first epoch); a checkpoint whose settings (the loss included) differ from this call's in a way that
            breaks resume, or that holds more epochs than ``epochs``.
        FloatingPointError: the loss became NaN or Inf; nothing is saved for that epoch, so the last checkpoint
            is the last good one.
        CheckpointError: the checkpoint exists but is corrupt, and so is its backup (see the module's docstring).

    Example:
        >>> from deqlib import data, cells
        >>> ds = data.load("digits", "train")
        >>> model = cells.classifier_for(ds, "mlp", width=32)
        >>> h = fit(model, ds, epochs=2, lr=3e-3, progress=False)
        >>> h["epoch"], h["train_loss"][1] < h["train_loss"][0]
        ([1, 2], True)
    """
    s = FitSettings.build(settings, options)
    run = _prepare(model, train_data, val_data, s)
    history, start = _restore(model, run, s)
    _train_epochs(model, run, s, history, start)
    return history


def _train_epochs(model: nn.Module, run: "_Run", s: FitSettings, history: History, start: int) -> None:
    """Epochs ``start`` .. ``s.epochs - 1``: train, record, checkpoint, log; one convergence warning per epoch."""
    stats = SolveStats()
    main = run.group is None or run.group.is_main
    with stats.listening(model), convergence_report(model) as conv:
        for epoch in range(start, s.epochs):
            with quiet_convergence():  # one warning per epoch (below), not one per solve
                record, counts = _run_epoch(model, run, s, epoch, stats, conv.counts)
            if run.group is not None:
                distributed.check_in_sync(model, f"epoch {epoch + 1}")
            history.append(record)
            _save(model, run, s, history, epoch + 1)
            if s.log is not None and main:
                s.log(dict(record))
            if main:  # the counts are summed over the processes
                warn_counts(f"fit: epoch {epoch + 1}/{s.epochs}", counts, note=_NOT_CONVERGED_NOTE, stacklevel=3)


_NOT_CONVERGED_NOTE = (
    " (History: solver_nonconverged / backward_nonconverged); the loss and its gradient are approximate for them:"
    " raise max_iter / backward_max_iter"
)


@dataclass
class _Run:
    """What :func:`fit` sets up once: the data, their sizes, the device, the optimizer and the scheduler."""

    train_data: Any
    val_data: Any
    n_batches: int
    device: torch.device
    optimizer: torch.optim.Optimizer
    scheduler: Optional[Any]
    record: Dict[str, Any]  # the settings stored in (and compared with) the checkpoint
    num_classes: Optional[int] = None  # the training data's, when known (labels are checked against it)
    resumed: bool = False  # restored from a checkpoint (its saves then keep a backup from the first one)
    group: Optional[distributed.Group] = None  # the process group of a data-parallel run
    train_model: Optional[nn.Module] = None  # what the loss calls: the model, or its DistributedDataParallel


def _prepare(model: nn.Module, train_data: Any, val_data: Any, s: FitSettings) -> _Run:
    """Check everything (the checkpoint path included) before the first epoch; set up the data and the optimizer."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"fit: model must be an nn.Module, got {type(model).__name__}")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"fit: model ({type(model).__name__}) has no trainable parameters (requires_grad=True)")
    train_data = as_dataset(train_data, "fit: train_data")
    if val_data is not None:
        val_data = as_dataset(val_data, "fit: val_data")
    own_loader = not isinstance(train_data, DataLoader)
    group = distributed.current()
    if group is not None and not own_loader:
        raise ValueError(
            f"fit: in a process group of {group.world_size} processes, train_data must be a Dataset (or (X, y)), "
            "not a DataLoader: fit gives each process its share of every global batch"
        )
    try:
        n_batches = math.ceil(len(train_data) / s.batch_size) if own_loader else len(train_data)
        n_train = len(train_data) if own_loader else len(train_data.dataset)
    except TypeError as e:
        raise TypeError("fit: train_data must have a length (iterable-style data sets are not supported)") from e
    if n_batches == 0:
        raise ValueError("fit: train_data is empty")
    num_classes = num_classes_of(train_data)
    check_data_labels(train_data, "fit", "train_data", num_classes)
    if val_data is not None:
        check_data_labels(val_data, "fit", "val_data", num_classes_of(val_data) or num_classes)
    if s.checkpoint is not None:  # before the first epoch, not at its end
        check_writable(s.checkpoint, "fit", "checkpoint")
        if group is None or group.is_main:
            remove_stale_temps(s.checkpoint)
            remove_stale_temps(backup_path(s.checkpoint))
    try:
        device = config.select_device(s.device)
    except ValueError as e:
        raise ValueError(f"fit: {e}") from None
    config.seed_everything(s.seed)
    model.to(device)
    optimizer = _make_optimizer(s, model.parameters())
    scheduler = _make_scheduler(s, optimizer, s.epochs * n_batches)
    record = s.checkpoint_record(n_train=n_train, own_loader=own_loader)
    run = _Run(train_data, val_data, n_batches, device, optimizer, scheduler, record, num_classes, group=group)
    run.train_model = model if group is None else distributed.wrap(model, device)
    return run


def _make_optimizer(s: FitSettings, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    if s.optimizer == "adam":
        return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.SGD(params, lr=s.lr, momentum=0.9, weight_decay=s.weight_decay)


def _make_scheduler(s: FitSettings, optimizer: torch.optim.Optimizer, total_steps: int) -> Optional[Any]:
    if s.scheduler is None:
        return None
    if s.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=s.lr, total_steps=total_steps)


def _restore(model: nn.Module, run: _Run, s: FitSettings) -> Tuple[History, int]:
    """Load ``s.checkpoint`` if it exists and ``s.resume``; return the history so far and the epochs done."""
    path = s.checkpoint
    if path is None or not s.resume or not (os.path.exists(path) or os.path.exists(backup_path(path))):
        return History(), 0
    state = load_checkpoint(path, map_location="cpu", use_backup=True)  # the backup, with a warning, if damaged
    if state.get("format") != FIT_FORMAT:
        raise ValueError(f"fit: {path!r} is not a checkpoint written by fit (format {state.get('format')!r})")
    start = int(state["epoch"])
    if start > s.epochs:
        raise ValueError(
            f"fit: {path!r} holds {start} epochs, more than epochs={s.epochs}, and the weights of epoch {s.epochs} "
            f"are not stored: pass epochs={start} (or more) to use it, another checkpoint path, or resume=False to "
            f"train {s.epochs} epoch(s) from scratch"
        )
    conflicts = s.resume_conflicts(state.get("settings", {}), run.record)
    if conflicts:
        raise ValueError(
            f"fit: cannot resume {path!r}: its settings differ from this call's in a way that breaks an exact "
            f"resume ({'; '.join(conflicts)}). Use the same settings, another checkpoint path, or resume=False to "
            "start over."
        )
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise ValueError(f"fit: the model in {path!r} does not fit this model: {e}") from e
    history, run.resumed = History.from_dict(state["history"]), True
    if start < s.epochs:  # a finished run needs nothing else
        run.optimizer.load_state_dict(state["optimizer"])
        if run.scheduler is not None:
            run.scheduler.load_state_dict(state["scheduler"])
    return history, start


def _save(model: nn.Module, run: _Run, s: FitSettings, history: History, epochs_done: int) -> None:
    """Write the checkpoint of the end of an epoch, atomically (nothing when there is no checkpoint path); in a
    process group, process 0 writes it and the others wait."""
    if s.checkpoint is None:
        return
    if run.group is not None:
        if run.group.is_main:
            _save(model, replace(run, group=None), s, history, epochs_done)
        distributed.barrier()
        return
    keep = run.resumed or epochs_done > 1  # a fresh run's first save keeps no backup of another run's file
    if not keep and os.path.isfile(backup_path(s.checkpoint)):
        os.remove(backup_path(s.checkpoint))
    state = {
        "format": FIT_FORMAT,
        "model": model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "epoch": epochs_done,
        "history": history.to_dict(),
        "seed": s.seed,
        "settings": run.record,
    }
    save_checkpoint(s.checkpoint, state, backup=keep)


def _epoch_seed(seed: int, epoch: int) -> int:
    """A seed for (seed, 0-based epoch) alone, well mixed, in [0, 2**31)."""
    return int(np.random.SeedSequence([int(seed), int(epoch), 0x0DE0]).generate_state(1)[0]) & 0x7FFFFFFF


class _Meter:
    """Running sums of one epoch: loss, accuracy (where the loss returned logits) and the last learning rate."""

    def __init__(self, lr: float) -> None:
        self.loss_sum, self.seen, self.correct, self.counted, self.lr = 0.0, 0, 0, 0, lr

    def add(self, loss: float, y: Tensor, logits: Optional[Tensor]) -> None:
        n = int(y.shape[0])
        self.loss_sum += loss * n
        self.seen += n
        if logits is not None:  # (n, C), checked by _unpack_loss
            self.correct += int((logits.detach().argmax(dim=1) == y).sum())
            self.counted += n

    def postfix(self, stats: SolveStats) -> Dict[str, str]:
        post = {"loss": f"{self.loss_sum / max(self.seen, 1):.4f}"}
        if self.counted:
            post["acc"] = f"{self.correct / self.counted:.3f}"
        for key, tag in (("steps", "forward"), ("bsteps", "backward")):
            if stats.mean(tag) is not None:
                post[key] = f"{stats.mean(tag):.1f}"
        return post


def _run_epoch(
    model: nn.Module, run: _Run, s: FitSettings, epoch: int, stats: SolveStats, conv: ConvergenceCounts
) -> Tuple[Dict[str, Any], ConvergenceCounts]:
    """Train one epoch (0-based ``epoch``); return its record (validation included) and its training solves' counts."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    eseed = _epoch_seed(s.seed, epoch)
    config.seed_everything(eseed)
    loader = _epoch_loader(run, s, eseed)
    model.train()
    stats.reset()
    conv.reset()
    meter = _Meter(float(run.optimizer.param_groups[0]["lr"]))
    show = s.progress and (run.group is None or run.group.is_main)
    bar = tqdm(loader, total=run.n_batches, desc=f"epoch {epoch + 1}/{s.epochs}", disable=not show, leave=True)
    try:
        for b, batch in enumerate(bar):
            _train_step(model, run, s, batch, meter, (epoch, b))
            if show:
                bar.set_postfix(meter.postfix(stats), refresh=False)
    finally:
        bar.close()
    if run.group is not None:
        distributed.sum_epoch(meter, stats, conv)
    record: Dict[str, Any] = {
        "epoch": epoch + 1,
        "train_loss": meter.loss_sum / max(meter.seen, 1),
        "train_acc": meter.correct / meter.counted if meter.counted else None,
    }
    solver_steps, backward_steps = stats.mean("forward"), stats.mean("backward")  # before the validation solves
    train_conv = copy.copy(conv)  # the training solves' counts (a copy: the validation solves add to conv)
    if run.val_data is not None:
        record["val_acc"] = _val_accuracy(model, run, max(s.batch_size, 256))
        model.train()
    record.update(solver_steps=solver_steps, backward_steps=backward_steps, lr=meter.lr)
    nonconverged = train_conv.fractions()
    record.update(solver_nonconverged=nonconverged["forward"], backward_nonconverged=nonconverged["backward"])
    record["seconds"] = time.perf_counter() - t0
    return record, train_conv


def _epoch_loader(run: _Run, s: FitSettings, eseed: int) -> Any:
    """The epoch's batches; in a process group, the global batches of sample indices (each process takes its
    share in :func:`_train_step`)."""
    shuffle = torch.Generator().manual_seed(eseed)
    data = run.train_data if run.group is None else distributed.SampleIndices(len(run.train_data))
    return make_loader(data, s.batch_size, shuffle=True, generator=shuffle)


def _val_accuracy(model: nn.Module, run: _Run, batch_size: int) -> float:
    if run.group is None:
        return evaluate_accuracy(model, run.val_data, batch_size=batch_size, device=run.device)
    return distributed.sharded_accuracy(model, run.val_data, run.group, batch_size=batch_size, device=run.device)


def _train_step(model: nn.Module, run: _Run, s: FitSettings, batch: Any, meter: _Meter, at: Tuple[int, int]) -> None:
    """One optimisation step on one batch; ``at`` = (0-based epoch, 0-based batch), for the error message. In a
    process group, ``batch`` holds the global batch's indices: this process trains on its shard, its loss weighted
    by its share (0 for a stand-in sample)."""
    weight = 1.0
    if run.group is not None:
        shard = distributed.shard_of(batch.tolist(), run.group)
        batch, weight = distributed.fetch(run.train_data, shard), shard.weight
    x, y = split_batch(batch, run.device, "fit", run.num_classes)
    try:
        out = s.loss(run.train_model, x, y)
    except IndexError as e:  # cross-entropy's "Target 12 is out of bounds": more labels than logits
        if not re.search(r"Target -?\d+ is out of bounds", str(e)):
            raise
        lo, hi = (int(v) for v in torch.aminmax(y))
        raise ValueError(
            f"fit: the loss failed on the labels of batch {at[1] + 1} (values in [{lo}, {hi}]): {e} The labels must be "
            "class indices below the number of the model's logits."
        ) from e
    loss, logits = _unpack_loss(out, int(x.shape[0]))
    if logits is not None:
        check_labels_in_range(y, int(logits.shape[1]), "fit", "the labels y of a batch")
    value = float(loss.detach())
    if not math.isfinite(value):
        epoch, b = at
        raise FloatingPointError(
            f"fit: the loss is {value} at epoch {epoch + 1}, batch {b + 1} of {run.n_batches}; "
            "nothing was saved for this epoch"
            + (f" (the last checkpoint holds {epoch} epoch(s))" if s.checkpoint is not None else "")
            + ". Try a smaller lr, grad_clip or a more stable model."
        )
    run.optimizer.zero_grad(set_to_none=True)
    (loss * weight if weight != 1.0 else loss).backward()
    if s.grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
    meter.lr = float(run.optimizer.param_groups[0]["lr"])
    run.optimizer.step()
    if run.scheduler is not None:
        run.scheduler.step()
    if weight > 0:
        meter.add(value, y, logits)


def _unpack_loss(out: Any, n: int) -> Tuple[Tensor, Optional[Tensor]]:
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
    if logits is not None:
        check_logits(logits, n, "fit", "loss_fn (returning (loss, logits))")
    return loss.reshape(()), logits
