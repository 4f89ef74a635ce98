"""Atomic file writes and conversion to plain JSON, shared by checkpoints and result files (private).

A write goes to a temporary file ``.<name>.<random>.tmp`` in the target's folder, is flushed and fsync'ed, then
renamed over the target with ``os.replace`` (atomic on POSIX and Windows); the folder is fsync'ed so that the rename
itself is durable. An exception during a write leaves the previous file untouched and removes the temporary one; a
kill (SIGKILL, power loss) can leave the temporary file behind, and the next write of the same target removes it
(:func:`remove_stale_temps`). Paths are checked first (:func:`check_path`, :func:`check_writable`), so that a bad
path is a clear error naming it, before any work is done.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, List, Optional, Union

from torch import Tensor

PathLike = Union[str, "os.PathLike[str]"]


def check_path(path: object, where: str, name: str = "path") -> str:
    """A file path (``str`` or ``os.PathLike``, not empty), as a ``str``.

    Raises:
        TypeError: anything else (bytes, a number, None). ValueError: an empty path.
    """
    if isinstance(path, (bytes, bytearray)) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{where}: {name} must be a file path (str or os.PathLike), got {type(path).__name__}")
    out = os.fspath(path)
    if not isinstance(out, str):
        raise TypeError(f"{where}: {name} must be a str path, got a path of {type(out).__name__}")
    if not out.strip():
        raise ValueError(f"{where}: {name} must be a file path, got an empty string")
    return out


def check_writable(path: object, where: str, name: str = "path", *, create: bool = True) -> Path:
    """A path where a file can be written: not a folder, every existing ancestor a folder, the folder writable.

    With ``create``, the missing folders are created (so that a later write cannot fail on them).

    Raises:
        TypeError: see :func:`check_path`. ValueError: the path is a folder, an ancestor is a file, or the folder
            cannot be created or written.
    """
    target = Path(check_path(path, where, name)).absolute()
    if target.is_dir():
        raise ValueError(f"{where}: {name} {str(target)!r} is a folder; give a file path inside it")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(
                    f"{where}: cannot write {name} {str(target)!r}: {str(parent)!r} is a file, not a folder"
                )
            break
    folder = target.parent
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"{where}: cannot create the folder {str(folder)!r} of {name}: {e.strerror or e}") from e
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"{where}: cannot write {name} {str(target)!r}: the folder {str(folder)!r} is read-only")
    return target


def temp_prefix(name: str) -> str:
    """The prefix of this process's temporary files for ``name``: ``.<name>.<pid>.`` (mkstemp adds 8 characters)."""
    return f".{name}.{os.getpid()}."


def _temp_pattern(name: str) -> "re.Pattern[str]":
    # .<name>.<pid>.<8 random characters of [a-z0-9_]>.tmp; the <pid>. part is absent in files of older versions
    return re.compile(rf"^\.{re.escape(name)}\.(?:(\d+)\.)?[a-z0-9_]{{8}}\.tmp$")


def _writer_alive(pid: Optional[str]) -> bool:
    """Whether the process that made a temporary file may still be writing it (then it must not be removed)."""
    if pid is None:  # a file of an older version, which did not record its writer
        return False
    if int(pid) == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows: keep the file
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (OSError, ValueError, OverflowError):  # exists but not ours, or not a valid pid: keep the file
        return True
    return True


def remove_stale_temps(path: PathLike) -> List[str]:
    """Remove the temporary files that an interrupted write of ``path`` left in its folder; return their names.

    Only names of the exact form ``.<name>.<pid>.<8 random characters>.tmp`` are considered (a write of another file
    never matches), and only those whose writing process no longer runs are removed: a reader or a second writer
    never deletes a write in progress (on Windows, where that cannot be checked, only files of older versions,
    without a pid, are removed).

    Example:
        >>> import tempfile, os
        >>> folder = tempfile.mkdtemp()
        >>> open(os.path.join(folder, ".run.pt.abcd1234.tmp"), "wb").close()
        >>> remove_stale_temps(os.path.join(folder, "run.pt")), os.listdir(folder)
        (['.run.pt.abcd1234.tmp'], [])
    """
    target = Path(os.fspath(path)).absolute()
    pattern = _temp_pattern(target.name)
    removed = []
    try:
        entries = os.listdir(target.parent)
    except OSError:
        return removed
    for entry in sorted(entries):
        match = pattern.match(entry)
        if match and not _writer_alive(match.group(1)):
            try:
                os.unlink(target.parent / entry)
                removed.append(entry)
            except OSError:
                pass
    return removed


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


def atomic_write(
    path: PathLike,
    write: Callable[[IO[bytes]], None],
    *,
    where: str = "atomic_write",
    before_replace: Optional[Callable[[Path], None]] = None,
) -> Path:
    """Call ``write(binary_file)`` on a temporary file, then rename it over ``path``; returns the path.

    The path is checked first (:func:`check_writable`, ``where`` names the caller in its errors) and the parent
    folders are created; stale temporary files of ``path`` are removed. ``before_replace(path)`` runs once the new
    data are safely on disk, just before the rename (e.g. to keep the previous file as a backup). Whatever ``write``
    or ``before_replace`` raise propagates, with ``path`` untouched and the temporary file removed.
    """
    path = check_writable(path, where)
    folder = path.parent
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=str(folder))
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if before_replace is not None:
            before_replace(path)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(str(folder))
    return path


def atomic_write_text(path: PathLike, text: str, *, where: str = "atomic_write_text") -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")), where=where)


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
    check_writable(path, "save_json", create=False)
    text = json.dumps(to_jsonable(result), indent=2, allow_nan=False)
    return atomic_write_text(path, text + "\n", where="save_json")
