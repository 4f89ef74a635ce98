"""Fast-mode execution time of each notebook, executed with nbclient under ``DEQLIB_MODE=fast``.

Each notebook is read from ``notebooks/``, executed in a fresh ``python3`` kernel whose working directory is
``notebooks/`` (as Jupyter Book and nbval run them), and never written back. The kernel uses PyTorch's default
thread count (the reader's setting); the benchmark's own ``--threads`` does not apply to it.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from .common import ROOT, log


def _parse(ts: Optional[str]) -> Optional[_dt.datetime]:
    if not ts:
        return None
    try:
        return _dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None


def cell_seconds(nb) -> List[Dict[str, Any]]:
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        ex = cell.get("metadata", {}).get("execution", {})
        a, b = _parse(ex.get("iopub.execute_input")), _parse(ex.get("shell.execute_reply"))
        if a and b:
            first = (cell.source.strip().splitlines() or [""])[0][:80]
            out.append({"cell": i, "seconds": (b - a).total_seconds(), "first_line": first})
    return out


def run_one(path: Path, timeout: int) -> Dict[str, Any]:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    t0 = time.perf_counter()
    error = None
    try:
        client.execute()
    except Exception as e:  # noqa: BLE001 - record the failure, go on with the next notebook
        error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300] if str(e).strip() else ''}"
    seconds = time.perf_counter() - t0
    cells = cell_seconds(nb)
    slowest = sorted(cells, key=lambda c: -c["seconds"])[:3]
    n_code = sum(1 for c in nb.cells if c.cell_type == "code")
    log(f"notebooks {path.name}: {seconds:.1f} s{' (ERROR ' + error + ')' if error else ''}")
    return {
        "notebook": str(path.relative_to(ROOT)),
        "seconds": seconds,
        "ok": error is None,
        "error": error,
        "code_cells": n_code,
        "slowest_cells": slowest,
    }


def kernel_threads() -> Optional[int]:
    """torch.get_num_threads() of a fresh Python process (what a kernel gets by default)."""
    import subprocess
    import sys

    try:
        out = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        return int(out.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def run(*, quick: bool = False, timeout: int = 3600, pattern: str = "*.ipynb") -> Dict[str, Any]:
    old = os.environ.get("DEQLIB_MODE")
    os.environ["DEQLIB_MODE"] = "fast"
    try:
        paths = sorted((ROOT / "notebooks").glob(pattern))
        if quick:
            paths = paths[:1]
        rows = [run_one(p, timeout) for p in paths]
    finally:
        if old is None:
            os.environ.pop("DEQLIB_MODE", None)
        else:
            os.environ["DEQLIB_MODE"] = old
    return {
        "settings": {
            "mode": "fast",
            "executor": "nbclient",
            "kernel": "python3",
            "timeout_s": timeout,
            "threads": f"the kernels' default, {kernel_threads()} (the benchmark's --threads does not apply)",
        },
        "notebooks": rows,
    }
