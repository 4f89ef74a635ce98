"""The built web book that the browser check and the pinned-output check read (``_build/``), built once if stale;
and the loader of the ``tools/`` scripts that the tests exercise."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
EXECUTED = ROOT / "_build" / "jupyter_execute"
STAMP = HTML / ".build-stamp"
SOURCES = ["_config.yml", "_toc.yml", "book", "notebooks", "deqlib", "tools"]
SOURCE_SUFFIXES = {".yml", ".md", ".bib", ".css", ".ipynb", ".py", ".sh", ".js", ".toml"}


def newest_source_mtime() -> float:
    newest = 0.0
    for name in SOURCES:
        path = ROOT / name
        files = [path] if path.is_file() else path.rglob("*") if path.is_dir() else []
        for f in files:
            if f.is_file() and f.suffix in SOURCE_SUFFIXES and "_static/vendor" not in f.as_posix():
                newest = max(newest, f.stat().st_mtime)
    return newest


def ensure_built() -> None:
    """Build the book (``bash tools/build_book.sh``) unless ``_build/html`` is newer than every source, or
    ``BOOK_BUILT`` is set (then use ``_build`` as it is)."""
    if os.environ.get("BOOK_BUILT"):
        assert (HTML / "index.html").is_file(), "BOOK_BUILT is set but _build/html/index.html is missing"
        return
    if STAMP.is_file() and STAMP.stat().st_mtime >= newest_source_mtime():
        return
    subprocess.run(["bash", str(ROOT / "tools" / "build_book.sh")], cwd=ROOT, check=True)


def load_tool(name: str) -> ModuleType:
    """A script of ``tools/`` (not a package) imported as a module, e.g. ``load_tool("nbclean")``."""
    spec = importlib.util.spec_from_file_location(f"book_tools_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
