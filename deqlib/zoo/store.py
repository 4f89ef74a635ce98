"""Where the zoo's weights live, and the checks every file passes before a model is built from it.

Two places, each a folder of ``<name>.pt`` weights (a ``state_dict``, loaded with ``weights_only=True``) with a
``<name>.json`` record beside it: the recipe, its hash, the file's SHA-256 and size, the training time, the command
and the training history.

- the **committed** weights, ``deqlib/zoo/weights/`` (installed with the package, so a Colab reader who installs deqlib
  from the repository of ``_config.yml`` has them); ``DEQLIB_ZOO_WEIGHTS`` points elsewhere;
- the **cache**, ``~/.cache/deqlib/zoo/`` (``DEQLIB_ZOO_CACHE``), for models trained on this machine, each file keyed
  by its recipe hash.

A record whose recipe hash differs from the current recipe's is *stale*: never loaded. A file whose SHA-256 differs
from its record's is *damaged*: an error, never loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional

from .._io import save_json

__all__ = ["ZooError", "committed_dir", "cache_dir", "sha256_of", "read_record", "write_record", "record_status"]

PACKAGE_WEIGHTS = Path(__file__).resolve().parent / "weights"


class ZooError(RuntimeError):
    """A zoo file that cannot be used: damaged, missing with training not allowed, or not matching its record."""


def committed_dir() -> Path:
    """The folder of the committed weights (``DEQLIB_ZOO_WEIGHTS`` or ``deqlib/zoo/weights``)."""
    return Path(os.environ.get("DEQLIB_ZOO_WEIGHTS") or PACKAGE_WEIGHTS)


def cache_dir() -> Path:
    """The folder of the weights trained on this machine (``DEQLIB_ZOO_CACHE`` or ``~/.cache/deqlib/zoo``)."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "deqlib" / "zoo"
    return Path(os.environ.get("DEQLIB_ZOO_CACHE") or default)


def sha256_of(path: Path) -> str:
    """The SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_record(weights: Path) -> Optional[Dict[str, Any]]:
    """The JSON record beside a weights file, or None if there is none; a clear error if it is not valid JSON."""
    path = weights.with_suffix(".json")
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ZooError(f"zoo: the record {path} cannot be read ({exc}); delete it and its .pt to retrain") from exc


def write_record(weights: Path, record: Dict[str, Any]) -> Path:
    """Write the record beside ``weights`` (atomically), with the file's SHA-256 and size filled in."""
    record = dict(record, sha256=sha256_of(weights), bytes=weights.stat().st_size)
    return save_json(record, weights.with_suffix(".json"))


def record_status(weights: Path, want_hash: str) -> str:
    """``"ok"``, ``"missing"``, ``"stale"`` (trained for another recipe) or ``"damaged"`` (bytes differ from the
    record, or a record without its file)."""
    record = read_record(weights)
    if record is None:
        return "missing" if not weights.exists() else "damaged"
    if not weights.is_file():
        return "damaged"
    if record.get("recipe_hash") != want_hash:
        return "stale"
    if record.get("sha256") != sha256_of(weights):
        return "damaged"
    return "ok"
