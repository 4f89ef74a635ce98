"""The data that :func:`~deqlib.train.fit` and :func:`~deqlib.train.evaluate_accuracy` take, and their batches.

Data is a torch ``Dataset`` of ``(x, y)`` pairs, a ``DataLoader`` (used as is), or a pair of tensors ``(X, y)``.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

__all__ = ["as_dataset", "make_loader", "split_batch"]


def as_dataset(data: Any, what: str) -> Any:
    """``data`` as a Dataset or a DataLoader; a pair of tensors (X, y) becomes a ``TensorDataset``.

    Raises:
        TypeError: anything else (``what`` names the argument in the message, e.g. ``"fit: train_data"``).
    """
    if isinstance(data, (Dataset, DataLoader)):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        return TensorDataset(*data)
    raise TypeError(
        f"{what} must be a torch Dataset, a DataLoader or a pair of tensors (X, y), got {type(data).__name__}"
    )


def make_loader(data: Any, batch_size: int, *, shuffle: bool, generator: Optional[torch.Generator] = None) -> Any:
    """A DataLoader over a Dataset (single process, last batch kept); a DataLoader is returned unchanged."""
    if isinstance(data, DataLoader):
        return data
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0, drop_last=False)


def split_batch(batch: Any, device: torch.device, where: str = "fit") -> Tuple[Tensor, Tensor]:
    """``(x, y)`` of a batch, moved to ``device``; extra items of the batch are ignored."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(f"{where}: each batch must be a pair (x, y), got {type(batch).__name__}")
    x, y = batch[0], batch[1]
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)
