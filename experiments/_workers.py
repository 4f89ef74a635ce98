"""Shared by the resumable experiments: several workers split one set of runs, each (model, seed, n) result its own
JSON file, taken by one worker at a time with a lock file."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict


def load_runs(folder: Path) -> Dict[str, Any]:
    """Every finished (model, seed, n) result in ``folder`` (one JSON file each)."""
    return {f.stem: json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(folder: Path, key: str) -> bool:
    """Take ``key`` for this worker (a lock file holding its PID); False if done or held by a live worker. A lock
    left by a worker that died (an interrupted session) is taken over."""
    if (folder / f"{key}.json").exists():
        return False
    lock = folder / f"{key}.lock"
    try:
        with lock.open("x") as f:
            f.write(str(os.getpid()))
        return True
    except FileExistsError:
        try:
            holder = int(lock.read_text() or "0")
        except (OSError, ValueError):
            holder = 0
        fresh = time.time() - lock.stat().st_mtime < 60  # a lock being written has no PID yet
        if (holder and _alive(holder)) or (not holder and fresh):
            return False
        lock.unlink(missing_ok=True)  # a stale lock: its worker is gone
        return claim(folder, key)


def run_claimed(folder: Path, key: str, run: Callable[[], Dict[str, Any]]) -> bool:
    """If this worker can :func:`claim` ``key``: run it, save its result as ``folder/key.json`` (atomically) and
    release the lock, even when the run fails. Returns whether it ran."""
    from deqlib.evaluate import save_json

    if not claim(folder, key):
        return False
    print(f"{time.strftime('%H:%M:%S')} {key}", flush=True)
    try:
        result = run()
        save_json(result, folder / f"{key}.json")
    finally:
        (folder / f"{key}.lock").unlink(missing_ok=True)
    print(f"  done in {result['seconds']} s", flush=True)
    return True
