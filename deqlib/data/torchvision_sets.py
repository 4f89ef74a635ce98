"""The torchvision data sets (MNIST, Fashion-MNIST, SVHN, CIFAR-10), read from torchvision's own on-disk layout.

They live under ``$DEQLIB_DATA`` (else ``~/.cache/deqlib/data``) and are downloaded there by torchvision when
missing; without network, :class:`DataUnavailableError` says so in one line and points to the embedded sets.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import embedded
from .dataset import DIGIT_CLASSES, ImageDataset

__all__ = ["TORCHVISION", "ENV_VAR", "DataUnavailableError", "default_root", "load_torchvision"]

TORCHVISION = ("mnist", "fashion-mnist", "svhn", "cifar10")
ENV_VAR = "DEQLIB_DATA"

# Standard per-channel statistics of the torchvision train splits.
_TV_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


class DataUnavailableError(RuntimeError):
    """A torchvision data set is not on disk and could not be downloaded (e.g. no network).

    The message is one line: the data set, the folder, the cause, and the embedded alternatives.
    """


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
        classes = DIGIT_CLASSES if name == "mnist" else list(ds.classes)
    elif name == "cifar10":
        images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2)  # NHWC -> NCHW
        labels = torch.as_tensor(np.asarray(ds.targets, dtype=np.int64))
        classes = list(ds.classes)
    elif name == "svhn":
        # torchvision already turned the (H, W, C, N) .mat array into (N, C, H, W) and label 10 into 0.
        images = torch.from_numpy(np.ascontiguousarray(ds.data))
        labels = torch.as_tensor(np.asarray(ds.labels, dtype=np.int64)).reshape(-1)
        classes = DIGIT_CLASSES
    else:  # pragma: no cover - guarded by load()
        raise ValueError(f"{name!r} is not a torchvision data set")
    return images.to(torch.uint8).contiguous(), labels, classes


def load_torchvision(name: str, split: str, root: Path, download: bool) -> ImageDataset:
    factory = _tv_factory(name, split)
    try:
        ds = factory(str(root), False)
    except RuntimeError as absent:  # torchvision: "Dataset not found [or corrupted] ..."
        if not download:
            raise DataUnavailableError(
                f"{name!r} ({split}) is not under {root} and download=False "
                f"(torchvision: {' '.join(str(absent).split()).split('. ')[0].rstrip('.')}). "
                f"{embedded.hint()}, or put torchvision's files under that folder."
            ) from absent
        try:
            ds = factory(str(root), True)
        except Exception as e:  # URLError, OSError, RuntimeError, bad archive...: all mean "not available"
            raise DataUnavailableError(
                f"could not download {name!r} into {root} ({_describe(e)}); no network? "
                f"{embedded.hint()}, or put torchvision's files under that folder."
            ) from e
    images, labels, classes = _tv_to_tensors(name, ds)
    mean, std = _TV_STATS[name]
    return ImageDataset(images, labels, name=name, split=split, num_classes=10, mean=mean, std=std, classes=classes)
