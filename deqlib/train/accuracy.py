"""Clean accuracy of a classifier on a data set: :func:`evaluate_accuracy`."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from .. import config
from .._modules import model_device
from .._validate import check_device, check_int, check_labels_in_range, check_logits, check_module
from ..diagnostics import convergence_report
from ..solvers import quiet_convergence, warn_counts
from .batches import as_dataset, check_data_labels, make_loader, num_classes_of, split_batch

__all__ = ["evaluate_accuracy"]


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

    Raises:
        TypeError: a model that is not a module, bad data, labels that are not integers.
        ValueError: labels outside [0, num_classes) of the model's logits (-100 included), another number of
            labels than of images, outputs that are not logits (N, num_classes), an unknown device.

    Warns:
        SolverConvergenceWarning: once, if some samples' forward solves did not converge (instead of one warning
            per batch).

    Example:
        >>> from deqlib import data, cells
        >>> ds = data.load("digits", "test")
        >>> acc = evaluate_accuracy(cells.classifier_for(ds, "mlp", width=16), ds)
        >>> 0.0 <= acc <= 1.0
        True
    """
    where = "evaluate_accuracy"
    check_module(model, where)
    check_int(batch_size, "batch_size", where, minimum=1)
    check_device(device, where)
    data = as_dataset(data, f"{where}: data")
    check_data_labels(data, where, "data", num_classes_of(data))
    try:
        dev = config.select_device(device) if device is not None else model_device(model, config.select_device())
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    model.to(dev)
    was_training = model.training
    model.eval()
    correct, total = 0, 0
    try:
        with torch.no_grad(), convergence_report(model) as report:
            with quiet_convergence():
                for batch in make_loader(data, batch_size, shuffle=False):
                    x, y = split_batch(batch, dev, where)
                    logits = check_logits(model(x), int(x.shape[0]), where)
                    check_labels_in_range(y, int(logits.shape[1]), where, "the labels y of a batch")
                    correct += int((logits.argmax(dim=1) == y).sum())
                    total += int(y.numel())
    finally:
        model.train(was_training)
    warn_counts(where, report.counts, note=": the accuracy is that of approximate equilibria", stacklevel=2)
    if total == 0:
        raise ValueError(f"{where}: the data set is empty")
    return correct / total
