"""Atomic checkpoints that load with ``torch.load(..., weights_only=True)``.

A checkpoint is a plain ``dict`` of tensors and plain Python values (numbers, strings, lists, tuples,
dicts, ``None``): model / optimizer / scheduler ``state_dict`` s, counters, a training history. Files are
written atomically (:func:`deqlib._io.atomic_write`): the data go to a temporary file in the same folder, which is flushed, ``fsync`` ed and
then renamed over the final name with ``os.replace``. A crash or an exception during a save therefore
leaves either the previous file or the new one under the final name, never a half-written one.

Loading always uses ``weights_only=True``, so a checkpoint cannot run code when it is opened; a file that
holds arbitrary pickled objects is refused with a :class:`CheckpointError`.

Example:
    >>> import tempfile, os, torch
    >>> path = os.path.join(tempfile.mkdtemp(), "run.pt")
    >>> save_checkpoint(path, {"epoch": 3, "weights": torch.ones(2)})
    >>> load_checkpoint(path)["epoch"]
    3
"""

from __future__ import annotations

import os
import pickle
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from ._io import atomic_write

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "save_model", "load_model_state", "FIT_FORMAT"]

#: The value of the ``"format"`` key of the checkpoints written by :func:`deqlib.train.fit`.
FIT_FORMAT = "deqlib.fit/1"

PathLike = str | os.PathLike


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be used: truncated, corrupt, not a dict, or unsafe to unpickle."""


def _atomic_torch_save(path: PathLike, obj: Any) -> None:
    atomic_write(path, lambda fh: torch.save(obj, fh))


def save_checkpoint(path: PathLike, state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, fsync, ``os.replace``).

    Args:
        path: the checkpoint file; its folder is created if needed.
        state: a mapping of tensors and plain Python values (what ``weights_only=True`` can load back).

    Raises:
        TypeError: if ``state`` is not a mapping.
        Whatever ``torch.save`` or the file system raise; the previous file at ``path`` is then untouched
        and the temporary file is removed.

    Example:
        >>> import tempfile, os, torch
        >>> p = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
        >>> save_checkpoint(p, {"w": torch.zeros(3), "epoch": 1})
        >>> sorted(load_checkpoint(p))
        ['epoch', 'w']
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"save_checkpoint: state must be a dict, got {type(state).__name__}")
    _atomic_torch_save(path, dict(state))


def _gist(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    out = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return out if len(out) <= limit else out[: limit - 3] + "..."


def load_checkpoint(path: PathLike, map_location: Optional[str | torch.device] = "cpu") -> Dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (or any ``torch.save`` d dict), ``weights_only=True``.

    Args:
        path: the checkpoint file.
        map_location: where to put the tensors (default: the CPU).

    Returns:
        The stored dict.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is truncated or corrupt, is not a dict, or holds objects that
            ``weights_only=True`` refuses to unpickle.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
        >>> save_checkpoint(p, {"epoch": 2})
        >>> load_checkpoint(p)
        {'epoch': 2}
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"checkpoint path {path!r} is a folder, not a file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e).lower():
            raise CheckpointError(
                f"checkpoint {path!r} holds objects that torch.load(weights_only=True) refuses to unpickle "
                f"(only tensors and plain Python types are allowed). If you trust the file, load it yourself "
                f"with torch.load(path, weights_only=False). ({_gist(e)})"
            ) from e
        raise CheckpointError(f"checkpoint {path!r} is corrupt or truncated ({_gist(e)})") from e
    except Exception as e:  # truncated zip, bad magic number, EOFError...
        raise CheckpointError(f"checkpoint {path!r} is corrupt or truncated ({_gist(e)})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path!r} holds a {type(state).__name__}, expected a dict")
    return state


def save_model(path: PathLike, model: nn.Module) -> None:
    """Save a model's ``state_dict`` (trained weights only) atomically.

    Args:
        path: the file to write; its folder is created if needed.
        model: the model whose weights to save.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "model.pt")
        >>> save_model(p, nn.Linear(2, 2))
        >>> _ = load_model_state(p, nn.Linear(2, 2))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"save_model: expected an nn.Module, got {type(model).__name__}")
    _atomic_torch_save(path, model.state_dict())


def load_model_state(path: PathLike, model: nn.Module, *, strict: bool = True) -> nn.Module:
    """Load weights saved by :func:`save_model` (or the model of a :func:`deqlib.train.fit` checkpoint) into ``model``.

    Args:
        path: a file written by :func:`save_model`, or a checkpoint written by ``fit``.
        model: a model of the same architecture; its weights are replaced in place (on its own device).
        strict: require the keys to match exactly (see ``nn.Module.load_state_dict``).

    Returns:
        ``model`` itself.

    Raises:
        FileNotFoundError, CheckpointError: see :func:`load_checkpoint`.
        CheckpointError: the weights do not fit the model (different architecture).

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "model.pt")
        >>> save_model(p, nn.Linear(2, 2))
        >>> load_model_state(p, nn.Linear(2, 2))
        Linear(in_features=2, out_features=2, bias=True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"load_model_state: expected an nn.Module, got {type(model).__name__}")
    state = load_checkpoint(path)
    if state.get("format") == FIT_FORMAT and isinstance(state.get("model"), dict):
        state = state["model"]
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        raise CheckpointError(f"the weights in {os.fspath(path)!r} do not fit this {type(model).__name__}: {e}") from e
    return model
