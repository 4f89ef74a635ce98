"""Atomic checkpoints that load with ``torch.load(..., weights_only=True)``, with a backup of the previous one.

A checkpoint is a plain ``dict`` of tensors and plain Python values (numbers, strings, lists, tuples,
dicts, ``None``): model / optimizer / scheduler ``state_dict`` s, counters, a training history.

- **Checked when saved.** :func:`save_checkpoint` refuses, naming the key, anything that the safe loader would
  refuse at resume (a loss object, a numpy number, a dict subclass such as a ``History``).
- **Atomic.** Files are written atomically (:func:`deqlib._io.atomic_write`): the data go to a temporary file in
  the same folder, which is flushed, ``fsync`` ed and then renamed over the final name with ``os.replace``. A crash
  or an exception during a save leaves either the previous file or the new one under the final name, never a
  half-written one; the temporary file a kill leaves behind is removed by the next save of the same file.
- **A rotating backup.** Before the new file replaces the old one, the old one, if it is intact, is kept as
  ``<path>.bak`` (:func:`backup_path`), so that a file damaged later from outside (a partial copy, a disk error)
  does not lose the only saved state: ``load_checkpoint(path, use_backup=True)`` (what ``fit`` uses to resume)
  falls back to it with a :class:`CheckpointWarning`.
- **Safe and checked when loaded.** Loading always uses ``weights_only=True``, so a checkpoint cannot run code when
  it is opened; the archive's checksums are verified first, so that a damaged file is reported as corrupt instead of
  loading wrong weights. A file that holds arbitrary pickled objects is refused with a :class:`CheckpointError`.

Example:
    >>> import tempfile, os, torch
    >>> path = os.path.join(tempfile.mkdtemp(), "run.pt")
    >>> save_checkpoint(path, {"epoch": 3, "weights": torch.ones(2)})
    >>> load_checkpoint(path)["epoch"]
    3
    >>> save_checkpoint(path, {"epoch": 4, "weights": torch.ones(2)})
    >>> load_checkpoint(backup_path(path))["epoch"]  # the previous checkpoint
    3
"""

from __future__ import annotations

import collections
import os
import pickle
import re
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from ._io import atomic_write, check_path, check_writable, remove_stale_temps, temp_prefix
from ._validate import check_bool, check_device

__all__ = [
    "CheckpointError",
    "CheckpointWarning",
    "save_checkpoint",
    "load_checkpoint",
    "backup_path",
    "save_model",
    "load_model_state",
    "FIT_FORMAT",
]

#: The value of the ``"format"`` key of the checkpoints written by :func:`deqlib.train.fit`.
FIT_FORMAT = "deqlib.fit/1"

#: What :func:`backup_path` appends to a checkpoint's path.
BACKUP_SUFFIX = ".bak"

PathLike = str | os.PathLike


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be used: truncated, corrupt, not a dict, or unsafe to unpickle."""


class CheckpointWarning(UserWarning):
    """A checkpoint could not be used and its backup (the previous checkpoint) was loaded instead."""


def backup_path(path: PathLike) -> str:
    """Where :func:`save_checkpoint` keeps the previous checkpoint of ``path``: ``path + ".bak"``."""
    return check_path(path, "backup_path") + BACKUP_SUFFIX


# ---------------------------------------------------------------------------------------------- what can be saved

_PLAIN = (str, bytes, int, float, bool, complex, type(None), torch.dtype, torch.device, torch.layout)
_SEQUENCES = (list, tuple, set, torch.Size)
_MAPPINGS = (dict, collections.OrderedDict)


def _refusal(value: Any) -> str:
    """Why the safe loader refuses ``value``, and what to store instead."""
    kind = f"{type(value).__module__}.{type(value).__qualname__}".replace("builtins.", "")
    if type(value).__module__ == "numpy":
        return f"a {kind}; store a Python number or a tensor instead (.item(), .tolist() or torch.from_numpy)"
    if isinstance(value, dict):
        return f"a {kind} (a dict subclass); store a plain dict instead (dict(...), or History.to_dict())"
    if isinstance(value, torch.Tensor):
        return f"a tensor subclass {kind}; store a plain tensor instead (.as_subclass(torch.Tensor))"
    return f"a {kind}; store plain values instead (its state_dict(), numbers, strings or its repr)"


def _unloadable(value: Any, at: str, seen: set) -> Optional[str]:
    """``"<at>[key] is a <type>; ..."`` for the first value ``weights_only=True`` cannot load back, else None."""
    kind = type(value)
    if kind in _PLAIN or kind in (torch.Tensor, nn.Parameter):
        return None
    if kind in _MAPPINGS or kind in _SEQUENCES:
        if id(value) in seen:
            return None
        seen.add(id(value))
        items = value.items() if kind in _MAPPINGS else enumerate(value)
        for key, item in items:
            if kind in _MAPPINGS:
                problem = _unloadable(key, f"a key of {at}", seen)
                if problem:
                    return problem
            problem = _unloadable(item, f"{at}[{key!r}]" if kind is not set else f"an element of {at}", seen)
            if problem:
                return problem
        return None
    return f"{at} is {_refusal(value)}"


def _damage(path: str) -> Optional[str]:
    """Why the file at ``path`` is not an intact torch checkpoint (None when it looks intact); reads it once."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head:
        return "the file is empty"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except Exception as e:  # a damaged member header, a bad compression stream ...
            return f"its zip archive is damaged ({_gist(e)})"
        return None if bad is None else f"its member {bad!r} fails its checksum (damaged data)"
    if head.startswith(b"PK"):
        return "a zip archive without its end (a partial copy or an interrupted write)"
    if head[:1] == b"\x80":
        return None  # the legacy (pre-zip) torch format: a pickle, which torch.load checks
    return "neither a zip archive (torch.save's format) nor a legacy torch file"


def _keep_backup(path: Path) -> None:
    """Keep the current file at ``path``, if it is intact, as its backup (atomically; a hard link when possible)."""
    if not path.is_file() or _damage(str(path)) is not None:
        return  # nothing to keep, or a damaged file that must not replace a good backup
    bak = Path(backup_path(path))
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(bak.name), suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    try:
        os.unlink(tmp)
        try:
            os.link(path, tmp)
        except OSError:  # no hard links here (some file systems): a copy
            shutil.copyfile(path, tmp)
        os.replace(tmp, bak)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _atomic_torch_save(path: PathLike, obj: Any, where: str, backup: bool = False) -> None:
    atomic_write(path, lambda fh: torch.save(obj, fh), where=where, before_replace=_keep_backup if backup else None)


def save_checkpoint(path: PathLike, state: Mapping[str, Any], *, backup: bool = True) -> None:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, fsync, ``os.replace``).

    Args:
        path: the checkpoint file; its folder is created if needed.
        state: a mapping of tensors and plain Python values (what ``weights_only=True`` can load back).
        backup: keep the file ``path`` held before (if intact) as :func:`backup_path` ``(path)``.

    Raises:
        TypeError: ``state`` is not a mapping, or holds a value that ``torch.load(weights_only=True)`` cannot load
            back (the message names its key); nothing is written then.
        ValueError: ``path`` is a folder, or inside a file, or its folder cannot be written.
        OSError: whatever ``torch.save`` or the file system raise; the previous file at ``path`` is then
            untouched and the temporary file is removed.

    Example:
        >>> import tempfile, os, torch
        >>> p = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
        >>> save_checkpoint(p, {"w": torch.zeros(3), "epoch": 1})
        >>> sorted(load_checkpoint(p))
        ['epoch', 'w']
        >>> save_checkpoint(p, {"loss": nn.MSELoss()})
        Traceback (most recent call last):
        ...
        TypeError: save_checkpoint: state['loss'] is a torch.nn.modules.loss.MSELoss; store plain values instead ...
    """
    where = "save_checkpoint"
    check_writable(path, where, create=False)
    if not isinstance(state, Mapping):
        raise TypeError(f"{where}: state must be a dict, got {type(state).__name__}")
    state = dict(state)
    problem = _unloadable(state, "state", set())
    if problem:
        raise TypeError(f"{where}: {problem}; torch.load(weights_only=True) could not load it back")
    _atomic_torch_save(path, state, where, backup=check_bool(backup, "backup", where))


# ---------------------------------------------------------------------------------------------- loading


def _gist(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    out = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return out if len(out) <= limit else out[: limit - 3] + "..."


def _unpickler_reason(exc: BaseException) -> str:
    """The weights-only unpickler's own reason (torch's advice to load unsafely left out)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    text = " ".join(text.split())
    return text[:160] if "weights_only" not in text else "an invalid pickle stream"


def _check_map_location(map_location: Any, where: str) -> Any:
    if map_location is None or isinstance(map_location, dict) or callable(map_location):
        return map_location
    device = check_device(map_location, where, "map_location")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{where}: map_location {str(device)!r}, but CUDA is not available here")
    return device


def _load_one(path: str, map_location: Any) -> Dict[str, Any]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"checkpoint path {path!r} is a folder, not a file")
    damage = _damage(path)
    if damage is not None:
        raise CheckpointError(f"checkpoint {path!r} is corrupt or truncated: {damage}")
    try:
        with warnings.catch_warnings():  # torch's note on an odd pickle protocol: the file is judged below
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise CheckpointError(
                f"checkpoint {path!r} holds Python objects other than tensors and plain values (e.g. "
                f"{found.group(1)}), which the safe loader torch.load(weights_only=True) refuses: unpickling them "
                "could run code, so deqlib never loads them. Save plain values instead (state_dict()s, numbers, "
                "strings, lists, dicts), as save_checkpoint does."
            ) from None
        raise CheckpointError(f"checkpoint {path!r} is corrupt or truncated ({_unpickler_reason(e)})") from None
    except Exception as e:  # truncated zip, bad magic number, EOFError...
        raise CheckpointError(f"checkpoint {path!r} is corrupt or truncated ({_gist(e)})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path!r} holds a {type(state).__name__}, expected a dict")
    return state


def load_checkpoint(
    path: PathLike, map_location: Optional[str | torch.device] = "cpu", *, use_backup: bool = False
) -> Dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (or any ``torch.save`` d dict), ``weights_only=True``.

    Args:
        path: the checkpoint file.
        map_location: where to put the tensors (default: the CPU); a device, a device string, a dict or a callable
            (as for ``torch.load``).
        use_backup: when ``path`` is missing, corrupt or truncated, load its backup (:func:`backup_path`, the
            checkpoint saved before it) instead, with a :class:`CheckpointWarning`.

    Returns:
        The stored dict.

    Raises:
        TypeError, ValueError: a bad ``path`` or ``map_location``.
        FileNotFoundError: no file at ``path`` (nor a backup, with ``use_backup``).
        CheckpointError: the file is truncated or corrupt (its checksums are verified), is not a dict, or holds
            objects that ``weights_only=True`` refuses to unpickle; with ``use_backup``, the backup is unusable too.

    Warns:
        CheckpointWarning: with ``use_backup``, when the backup was loaded.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
        >>> save_checkpoint(p, {"epoch": 2})
        >>> load_checkpoint(p)
        {'epoch': 2}
    """
    where = "load_checkpoint"
    path = check_path(path, where)
    map_location = _check_map_location(map_location, where)
    if not check_bool(use_backup, "use_backup", where):
        return _load_one(path, map_location)
    remove_stale_temps(path)
    remove_stale_temps(path + BACKUP_SUFFIX)
    try:
        return _load_one(path, map_location)
    except (CheckpointError, FileNotFoundError) as first:
        bak = path + BACKUP_SUFFIX
        if not os.path.isfile(bak):
            raise
        try:
            state = _load_one(bak, map_location)
        except CheckpointError as second:
            raise CheckpointError(f"{first}; and its backup is unusable too: {second}") from first
        warnings.warn(
            f"{first}; loaded its backup {bak!r} instead (the checkpoint saved before it)",
            CheckpointWarning,
            stacklevel=2,
        )
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
    _atomic_torch_save(path, model.state_dict(), "save_model")


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
    check_bool(strict, "strict", "load_model_state")
    state = load_checkpoint(path)
    if state.get("format") == FIT_FORMAT and isinstance(state.get("model"), dict):
        state = state["model"]
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        raise CheckpointError(f"the weights in {os.fspath(path)!r} do not fit this {type(model).__name__}: {e}") from e
    return model
