"""Atomic file writes and conversion to plain JSON, shared by checkpoints and result files (private).

A write goes to a temporary file in the target's folder, is flushed and fsync'ed, then renamed over the target
with ``os.replace`` (atomic on POSIX and Windows); the folder is fsync'ed so that the rename itself is durable.
A crash or an exception during a write leaves the previous file untouched and removes the temporary one.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Union

from torch import Tensor

PathLike = Union[str, "os.PathLike[str]"]


def _fsync_dir(folder: str) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(binary_file)`` on a temporary file, then rename it over ``path``; returns the path.

    The parent folders are created. Whatever ``write`` raises propagates, with ``path`` untouched.
    """
    path = Path(os.fspath(path))
    folder = path.absolute().parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(folder))
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(str(folder))
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: tensors and numpy values to numbers / lists, tuples to lists, NaN / inf to strings.

    Anything else (a module, a function) becomes its ``repr``.

    Example:
        >>> import torch
        >>> to_jsonable({"acc": torch.tensor(0.5), "eps": (0.1, float("nan"))})
        {'acc': 0.5, 'eps': [0.1, 'nan']}
    """
    if isinstance(obj, Tensor):
        obj = obj.detach().cpu()
        return to_jsonable(obj.item() if obj.numel() == 1 and obj.dim() == 0 else obj.tolist())
    if hasattr(obj, "item") and hasattr(obj, "dtype") and getattr(obj, "ndim", None) == 0:  # numpy scalar
        return to_jsonable(obj.item())
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy array
        return to_jsonable(obj.tolist())
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        v = float(obj)
        return v if math.isfinite(v) else str(v)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def save_json(result: Any, path: PathLike) -> Path:
    """Write ``result`` as indented JSON (through :func:`to_jsonable`), atomically; returns the path."""
    text = json.dumps(to_jsonable(result), indent=2, allow_nan=False)
    return atomic_write_text(path, text + "\n")
