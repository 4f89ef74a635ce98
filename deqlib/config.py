"""The fast / full mode switch, device choice and seeding.

Fast mode runs every chapter on a 2-core CPU with the embedded data sets; full mode trains the
paper-scale setups on a GPU. The mode comes from, in this order:

1. :func:`set_mode` (or the ``mode=`` argument of :func:`get_mode` / :func:`choose`),
2. the environment variable ``DEQLIB_MODE`` (``fast`` or ``full``),
3. the default: ``full`` when a CUDA GPU is visible, ``fast`` otherwise.

This module holds the only global state of ``deqlib``: the mode override set by :func:`set_mode`.

Example:
    >>> from deqlib import config
    >>> config.set_mode("fast")
    >>> config.choose(fast=3, full=100)
    3
    >>> config.set_mode(None)  # back to $DEQLIB_MODE, else the default
"""

from __future__ import annotations

import os
import random
from typing import Optional, TypeVar

import numpy as np
import torch

from ._validate import check_choice, check_seed

MODES = ("fast", "full")
ENV_VAR = "DEQLIB_MODE"

_mode_override: Optional[str] = None

T = TypeVar("T")


def _check_mode(mode: str, source: str) -> str:
    return check_choice(mode, "mode", source, MODES, ignore_case=True)


def set_mode(mode: Optional[str]) -> None:
    """Set the mode for this process (``"fast"``, ``"full"``), or ``None`` to go back to the default."""
    global _mode_override
    _mode_override = None if mode is None else _check_mode(mode, "set_mode()")


def get_mode(mode: Optional[str] = None) -> str:
    """Return the mode in force: the argument, then :func:`set_mode`, then ``$DEQLIB_MODE``, then the default."""
    if mode is not None:
        return _check_mode(mode, "the mode argument")
    if _mode_override is not None:
        return _mode_override
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return _check_mode(env, f"${ENV_VAR}")
    return "full" if torch.cuda.is_available() else "fast"


def is_fast(mode: Optional[str] = None) -> bool:
    """True in fast mode."""
    return get_mode(mode) == "fast"


def choose(*, fast: T, full: T, mode: Optional[str] = None) -> T:
    """Pick the value for the mode in force, e.g. ``epochs = choose(fast=3, full=100)``."""
    return fast if is_fast(mode) else full


def select_device(device: Optional[str | torch.device] = None) -> torch.device:
    """The device to use: the argument if given, else CUDA, then Apple MPS, then the CPU.

    Raises:
        ValueError: if the requested device is not available on this machine.
    """
    if device is not None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {str(dev)!r} requested but CUDA is not available here")
        if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"device {str(dev)!r} requested but MPS is not available here")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices)."""
    seed = check_seed(seed, "seed_everything")
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
