"""Recorded experiment results (``experiments/results/*.json``) wherever a chapter runs.

The chapters show the results of the long runs in ``experiments/`` beside a small live re-run. In a checkout of the
repository (the book build, a local Jupyter) the files are read from ``experiments/results/``; on Colab, where only
the package is installed, they are downloaded from the book's repository: the Colab install cell (written by
``tools/colab.py`` from ``_config.yml``) sets :data:`RESULTS_URL_ENV` to the raw address of that folder. A file
that is in neither place raises :class:`RecordedResultsError` saying where it looked and which command makes it.

Example:
    >>> from deqlib import recorded
    >>> recorded.load_results("no_such_experiment.json")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    RecordedResultsError: ...
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

__all__ = ["RESULTS_URL_ENV", "RecordedResultsError", "results_dirs", "load_results"]

#: Environment variable with the base address of the repository's ``experiments/results`` folder (set on Colab).
RESULTS_URL_ENV = "DEQLIB_RESULTS_URL"
_NAME = re.compile(r"[A-Za-z0-9_.-]+\.json")


class RecordedResultsError(FileNotFoundError):
    """A recorded results file is neither in a checkout nor downloadable."""


def results_dirs(start: Optional[Path] = None) -> List[Path]:
    """The folders searched, in order: ``experiments/results`` in ``start`` (default the working directory) and
    its two parents (a chapter runs in ``notebooks/``), then beside the installed package (an editable install)."""
    start = Path.cwd() if start is None else Path(start)
    roots = [start, *list(start.resolve().parents)[:2], Path(__file__).resolve().parents[1]]
    seen: List[Path] = []
    for root in roots:
        folder = root / "experiments" / "results"
        if folder not in seen:
            seen.append(folder)
    return seen


def _download(url: str, name: str, timeout: float) -> Dict[str, Any]:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/{name}", timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise RecordedResultsError(
            f"recorded results {name}: could not download {url.rstrip('/')}/{name}: {err}"
        ) from err


def load_results(name: str, *, timeout: float = 30.0) -> Dict[str, Any]:
    """The recorded results ``experiments/results/<name>``, parsed from JSON.

    Args:
        name: the file name, e.g. ``"attacks_mnist5k.json"`` (no folders).
        timeout: seconds for the download, when there is no local copy.

    Returns:
        The parsed JSON (a dict).

    Raises:
        ValueError: a name that is not a plain ``*.json`` file name.
        RecordedResultsError: no local copy, and no download address or a download that failed.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"load_results: name must be a plain file name ending in .json, got {name!r}")
    folders = results_dirs()
    for folder in folders:
        path = folder / name
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    url = os.environ.get(RESULTS_URL_ENV)
    if url:
        return _download(url, name, timeout)
    script = name.rsplit(".", 1)[0]
    raise RecordedResultsError(
        f"recorded results {name}: not found in {', '.join(str(f) for f in folders)}, and {RESULTS_URL_ENV} is not "
        f"set (the Colab install cell sets it to the repository's experiments/results); make the file with "
        f"`python experiments/{script}.py` in a checkout of the repository"
    )
