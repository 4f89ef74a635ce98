"""The :class:`ImageDataset` every loader returns, and the stratified sampling behind splits and subsets."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .._validate import (
    PIXEL_TOL,
    check_device,
    check_int,
    check_labels_in_range,
    check_number,
    check_seed,
    check_tensor,
)
from ..config import select_device

__all__ = ["ImageDataset", "stratified_choice", "stratified_split", "DIGIT_CLASSES"]

DIGIT_CLASSES = [str(d) for d in range(10)]


class ImageDataset(Dataset):
    """Images and integer labels held in memory as two tensors.

    Attributes:
        images: (N, C, H, W) tensor, float32 in [0, 1] (embedded sets) or uint8 (torchvision sets,
            converted to float / 255 on access to save memory).
        labels: (N,) int64 tensor of class indices.
        name: the data set's name, e.g. ``"digits"``.
        split: ``"train"`` or ``"test"``.
        num_classes: number of classes.
        image_shape: ``(C, H, W)``.
        mean, std: per-channel normalisation statistics of the *train* split (same for both splits).
        classes: class names, ``classes[k]`` for label ``k``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        name: str,
        split: str,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        classes: Sequence[str],
    ) -> None:
        """Wrap two tensors.

        Args:
            images: (N, C, H, W) float32 in [0, 1] or uint8.
            labels: (N,) integer class indices in ``[0, num_classes)``.
            name: data set name.
            split: ``"train"`` or ``"test"``.
            num_classes: number of classes.
            mean: per-channel mean (length C).
            std: per-channel standard deviation (length C).
            classes: ``num_classes`` class names.

        Raises:
            TypeError: images that are not a float32 / uint8 tensor, labels that are not integers, a name, split or
                num_classes of the wrong type.
            ValueError: inconsistent shapes or lengths, float pixels outside [0, 1] (or NaN), labels outside
                ``[0, num_classes)``, fewer than 2 classes, a non-positive std.
        """
        labels, num_classes, mean, std = _check_fields(images, labels, name, split, num_classes, mean, std, classes)
        self.images = images
        self.labels = labels.to(torch.int64)
        self.name = name
        self.split = split
        self.num_classes = int(num_classes)
        self.image_shape: tuple[int, int, int] = tuple(int(s) for s in images.shape[1:])  # type: ignore[assignment]
        self.mean: tuple[float, ...] = mean
        self.std: tuple[float, ...] = std
        self.classes: list[str] = list(classes)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """One sample.

        Args:
            index: position in the data set.

        Returns:
            ``(image, label)``: a float32 (C, H, W) tensor in [0, 1] and a Python int.
        """
        return _to_float(self.images[index]), int(self.labels[index])

    def tensors(self, device: Optional[str | torch.device] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole data set as two tensors (a copy: changing them does not change the data set).

        Args:
            device: where to put them; default: the CPU.

        Returns:
            ``(X, y)``: float32 (N, C, H, W) in [0, 1] and int64 (N,).
        """
        X = _to_float(self.images)
        if X.data_ptr() == self.images.data_ptr():
            X = X.clone()
        y = self.labels.clone()
        if device is not None:
            dev = _device(device, "ImageDataset.tensors")
            X, y = X.to(dev), y.to(dev)
        return X, y

    def subset(self, n: int, seed: int = 0) -> "ImageDataset":
        """A seeded, stratified subset of ``n`` samples (e.g. 500 test digits to attack).

        Each class gets ``n * class_size / N`` samples, rounded by largest remainder, so class
        proportions are kept to within one sample. Samples keep their original order.

        Args:
            n: number of samples, ``1 <= n <= len(self)``.
            seed: seed of the choice; the same seed gives the same subset on every machine.

        Returns:
            A new :class:`ImageDataset` with the same name, split and statistics.

        Raises:
            ValueError: if ``n`` is out of range.
        """
        n = check_int(n, "n", f"ImageDataset.subset of {self!r}", minimum=1, maximum=len(self))
        seed = check_seed(seed, "ImageDataset.subset")
        idx = stratified_choice(self.labels.numpy(), n, np.random.RandomState(seed))
        idx_t = torch.from_numpy(np.sort(idx))
        return self._with(self.images[idx_t].clone(), self.labels[idx_t].clone())

    def subset_and_rest(self, n: int, seed: int = 0) -> tuple["ImageDataset", "ImageDataset"]:
        """``(self.subset(n, seed), the samples it left)``: e.g. the test digits to attack and, disjoint from them,
        held-out digits to choose a setting on.

        Raises:
            ValueError: if ``n`` is out of range or leaves no sample.

        Example:
            >>> from deqlib import data
            >>> chosen, rest = data.load("digits", "test").subset_and_rest(100)
            >>> len(chosen) + len(rest) == len(data.load("digits", "test"))
            True
        """
        n = check_int(n, "n", f"ImageDataset.subset_and_rest of {self!r}", minimum=1, maximum=len(self) - 1)
        seed = check_seed(seed, "ImageDataset.subset_and_rest")
        idx = stratified_choice(self.labels.numpy(), n, np.random.RandomState(seed))
        keep = np.zeros(len(self), dtype=bool)
        keep[idx] = True
        chosen, rest = torch.from_numpy(np.flatnonzero(keep)), torch.from_numpy(np.flatnonzero(~keep))
        return (
            self._with(self.images[chosen].clone(), self.labels[chosen].clone()),
            self._with(self.images[rest].clone(), self.labels[rest].clone()),
        )

    def _with(self, images: torch.Tensor, labels: torch.Tensor) -> "ImageDataset":
        return ImageDataset(
            images,
            labels,
            name=self.name,
            split=self.split,
            num_classes=self.num_classes,
            mean=self.mean,
            std=self.std,
            classes=self.classes,
        )

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return f"ImageDataset({self.name!r}, split={self.split!r}, n={len(self)}, shape={c}x{h}x{w})"


def _check_fields(
    images: object,
    labels: object,
    name: object,
    split: object,
    num_classes: object,
    mean: object,
    std: object,
    classes: object,
) -> tuple[torch.Tensor, int, tuple[float, ...], tuple[float, ...]]:
    """Validate what :class:`ImageDataset` wraps; return the labels as a tensor, num_classes, mean and std."""
    where = "ImageDataset"
    _check_images(images, where)
    labels = _check_labels(labels, int(images.shape[0]), where)
    if not isinstance(name, str) or not isinstance(split, str):
        bad, value = ("name", name) if not isinstance(name, str) else ("split", split)
        raise TypeError(f"{where}: {bad} must be a str, got {type(value).__name__} {value!r}")
    num_classes = check_int(num_classes, "num_classes", where, minimum=2)
    check_labels_in_range(labels, num_classes, where, "labels")
    channels = images.shape[1]
    mean, std = _check_stats(mean, "mean", where), _check_stats(std, "std", where)
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"{where}: mean and std need {channels} value(s) (one per channel), got {len(mean)} and {len(std)}"
        )
    if any(s <= 0 for s in std):
        raise ValueError(f"{where}: std must be > 0 in every channel, got {std}")
    if isinstance(classes, str) or not isinstance(classes, (Sequence, np.ndarray)):
        raise TypeError(f"{where}: classes must be a sequence of {num_classes} names, got {classes!r}")
    if len(classes) != num_classes:
        raise ValueError(f"{where}: classes needs {num_classes} names, got {len(classes)}")
    return labels, num_classes, mean, std


def _check_images(images: object, where: str) -> None:
    """(N, C, H, W) float32 pixels in [0, 1] or uint8 0..255."""
    check_tensor(images, "images", where)
    if images.ndim != 4:
        raise ValueError(f"{where}: images must be a 4-d (N, C, H, W) tensor, got {_shape_of(images)}")
    if images.dtype not in (torch.float32, torch.uint8):
        raise TypeError(f"{where}: images must be float32 in [0, 1] or uint8, got {images.dtype}")
    if images.dtype == torch.float32 and images.numel():
        if not bool(torch.isfinite(images).all()):
            raise ValueError(f"{where}: images contains NaN or Inf")
        lo, hi = (float(v) for v in torch.aminmax(images))
        if lo < -PIXEL_TOL or hi > 1 + PIXEL_TOL:
            hint = " (0..255 values? divide by 255, or pass them as uint8)" if hi > 1 + PIXEL_TOL else ""
            raise ValueError(f"{where}: float32 images must have pixels in [0, 1], got [{lo:.3g}, {hi:.3g}]{hint}")


def _check_labels(labels: object, n: int, where: str) -> torch.Tensor:
    """(n,) integer labels (a tensor, an array or a list of ints)."""
    if not isinstance(labels, torch.Tensor):
        try:
            labels = torch.as_tensor(labels)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"{where}: labels must be integer class indices (a tensor, array or list of ints), "
                f"got {type(labels).__name__}"
            ) from None
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{where}: labels must be integers, got {labels.dtype}")
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"{where}: labels must have shape ({n},), got {tuple(labels.shape)}")
    return labels


def _check_stats(values: object, name: str, where: str) -> tuple[float, ...]:
    """A sequence of finite numbers, one per channel."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray, torch.Tensor)):
        raise TypeError(f"{where}: {name} must be a sequence of numbers (one per channel), got {values!r}")
    return tuple(check_number(v, f"{name}[{i}]", where) for i, v in enumerate(values))


def _device(device: object, where: str) -> torch.device:
    """A device given as a name or a torch.device, which this machine has."""
    return select_device(check_device(device, where))


def _shape_of(x: object) -> str:
    return str(tuple(x.shape)) if hasattr(x, "shape") else type(x).__name__


def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x


def _allocate(counts: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` over classes proportionally to ``counts`` (largest remainder, ties to lower class)."""
    exact = counts * n / counts.sum()
    alloc = np.floor(exact).astype(np.int64)
    order = sorted(range(len(counts)), key=lambda k: (-(exact[k] - alloc[k]), k))
    for k in order[: n - int(alloc.sum())]:
        alloc[k] += 1
    return alloc


def stratified_choice(labels: np.ndarray, n: int, rng: np.random.RandomState) -> np.ndarray:
    """Indices of ``n`` samples drawn per class in proportion to the class sizes."""
    classes, counts = np.unique(labels, return_counts=True)
    alloc = _allocate(counts, n)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, alloc)]
    return np.concatenate(chosen)


def stratified_split(labels: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified train / test indices (each shuffled) into ``labels``."""
    rng = np.random.RandomState(seed)
    classes, counts = np.unique(labels, return_counts=True)
    alloc = _allocate(counts, n_test)
    train, test = [], []
    for c, k in zip(classes, alloc):
        perm = rng.permutation(np.flatnonzero(labels == c))
        test.append(perm[:k])
        train.append(perm[k:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
