"""The data that :func:`~deqlib.train.fit` and :func:`~deqlib.train.evaluate_accuracy` take, and their batches.

Data is a torch ``Dataset`` of ``(x, y)`` pairs, a ``DataLoader`` (used as is), or a pair of tensors ``(X, y)``;
``y`` holds integer class labels in ``[0, num_classes)``. The labels are checked before any training where they are
at hand (an :class:`~deqlib.data.ImageDataset`, a ``TensorDataset``, a pair of tensors) and in every batch.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional, Tuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .._validate import check_class_labels, check_labels_in_range

__all__ = ["as_dataset", "make_loader", "split_batch", "num_classes_of", "check_data_labels"]


def as_dataset(data: Any, what: str) -> Any:
    """``data`` as a Dataset or a DataLoader; a pair of tensors (X, y) becomes a ``TensorDataset``.

    Raises:
        TypeError: anything else (``what`` names the argument in the message, e.g. ``"fit: train_data"``).
        ValueError: a pair (X, y) with another number of labels than of images.
    """
    if isinstance(data, (Dataset, DataLoader)):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        X, y = data
        if X.dim() == 0 or y.dim() == 0:
            raise ValueError(
                f"{what} = (X, y) needs a batch dimension first, got shapes {tuple(X.shape)}, {tuple(y.shape)}"
            )
        if X.shape[0] != y.shape[0]:
            raise ValueError(
                f"{what} = (X, y) has {X.shape[0]} images but {y.shape[0]} labels; give one label per image"
            )
        return TensorDataset(X, y)
    raise TypeError(
        f"{what} must be a torch Dataset, a DataLoader or a pair of tensors (X, y), got {type(data).__name__}"
    )


def make_loader(data: Any, batch_size: int, *, shuffle: bool, generator: Optional[torch.Generator] = None) -> Any:
    """A DataLoader over a Dataset (single process, last batch kept); a DataLoader is returned unchanged."""
    if isinstance(data, DataLoader):
        return data
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0, drop_last=False)


def _dataset(data: Any) -> Any:
    return data.dataset if isinstance(data, DataLoader) else data


def num_classes_of(data: Any) -> Optional[int]:
    """The data set's ``num_classes`` (an :class:`~deqlib.data.ImageDataset`'s, under a DataLoader too), or None."""
    n = getattr(_dataset(data), "num_classes", None)
    return int(n) if isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1 else None


def _labels_of(data: Any) -> Optional[Tuple[Tensor, int]]:
    """(all labels, number of samples) where they are at hand without a pass over the data, else None."""
    ds = _dataset(data)
    if isinstance(ds, TensorDataset) and len(ds.tensors) >= 2:
        return ds.tensors[1], int(ds.tensors[0].shape[0])
    labels = getattr(ds, "labels", None)
    if isinstance(labels, Tensor):
        try:
            return labels, len(ds)
        except TypeError:
            return None
    return None


def check_nonnegative_labels(y: Tensor, where: str, name: str) -> None:
    """Class labels are >= 0 (-100, torch's ignore index, included: fit and the accuracies count every sample)."""
    if y.numel() and int(y.min()) < 0:
        lo = int(y.min())
        hint = (
            " (-100 is torch's ignore index, which deqlib does not support: drop those samples)" if lo == -100 else ""
        )
        raise ValueError(f"{where}: {name} must be class indices >= 0, got values down to {lo}{hint}")


def check_data_labels(data: Any, where: str, name: str, num_classes: Optional[int]) -> None:
    """Check all the labels of ``data`` at once where they are at hand (dtype, one per sample, range)."""
    found = _labels_of(data)
    if found is None:
        return
    y, n = found
    y = check_class_labels(y, n, where, f"the labels of {name}")
    check_nonnegative_labels(y, where, f"the labels of {name}")
    if num_classes is not None:
        check_labels_in_range(y, num_classes, where, f"the labels of {name}")


def split_batch(
    batch: Any, device: torch.device, where: str = "fit", num_classes: Optional[int] = None
) -> Tuple[Tensor, Tensor]:
    """``(x, y)`` of a batch, its labels checked (int, one per sample, >= 0, < ``num_classes``), moved to ``device``.

    Extra items of the batch are ignored.
    """
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(f"{where}: each batch must be a pair (x, y), got {type(batch).__name__}")
    x, y = batch[0], batch[1]
    if not isinstance(x, Tensor):
        raise TypeError(f"{where}: the inputs x of each batch must be a tensor (N, ...), got {type(x).__name__}")
    if x.dim() == 0:
        raise ValueError(f"{where}: the inputs x of each batch must have a batch dimension (N, ...), got a scalar")
    y = check_class_labels(y, int(x.shape[0]), where, "the labels y of a batch")
    check_nonnegative_labels(y, where, "the labels y of a batch")
    if num_classes is not None:
        check_labels_in_range(y, num_classes, where, "the labels y of a batch")
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)
