#!/usr/bin/env python
"""Keep committed notebooks small and their pinned results fresh.

A chapter notebook is committed WITHOUT outputs, except the cells tagged ``nbval-check-output`` (a cell
tag, not a comment line, so that the web page shows no test machinery): their outputs are the reference that
``pytest --nbval-lax`` compares a fresh run against, so a change in ``deqlib`` that changes a pinned result
fails the tests. The web book executes every notebook anyway.

Usage::

    python tools/nbclean.py --execute notebooks/01_*.ipynb   # run (fast mode), keep only pinned outputs
    python tools/nbclean.py notebooks/01_*.ipynb             # strip outputs, keep pinned ones as they are
    python tools/nbclean.py --check                          # exit 1 if a notebook breaks the convention

``--check`` (all of ``notebooks/`` by default) fails when a notebook has outputs or execution counts in an
unpinned cell, widget state, a pinned cell that was not run, or an nbval comment marker (``# NBVAL_...``)
left in a cell's source (use the tag instead). ``--migrate`` turns comment markers into tags.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parents[1]
TAG = "nbval-check-output"
COMMENT_MARKER = re.compile(r"^\s*#\s*NBVAL_[A-Z_]+\s*$", re.M)


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def is_pinned(cell: dict) -> bool:
    return cell.get("cell_type") == "code" and TAG in cell.get("metadata", {}).get("tags", [])


def migrate(nb: dict) -> dict:
    """Replace ``# NBVAL_CHECK_OUTPUT`` comment lines by the ``nbval-check-output`` cell tag."""
    for cell in nb.get("cells", []):
        src = _source(cell)
        if cell.get("cell_type") != "code" or not COMMENT_MARKER.search(src):
            continue
        markers = [m.strip().lstrip("#").strip() for m in COMMENT_MARKER.findall(src)]
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        for marker in markers:
            tag = marker.lower().replace("_", "-")
            if tag not in tags:
                tags.append(tag)
        cell["source"] = COMMENT_MARKER.sub("", src).lstrip("\n").splitlines(keepends=True)
    return nb


def clean(nb: dict) -> dict:
    """Outputs (and execution counts) only in pinned cells, no widget state.

    nbval skips a reference cell without an execution count ("unrun"), so pinned cells keep theirs.
    """
    for index, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        if not is_pinned(cell):
            cell["execution_count"] = None
            cell["outputs"] = []
        elif cell.get("outputs") and cell.get("execution_count") is None:
            cell["execution_count"] = index  # any number will do: nbval only needs the cell marked as run
        cell.get("metadata", {}).pop("execution", None)
    nb.get("metadata", {}).pop("widgets", None)
    return nb


def problems(nb: dict) -> List[str]:
    found = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        if is_pinned(cell) and (not cell.get("outputs") or cell.get("execution_count") is None):
            found.append(f"cell {i}: pinned (tag {TAG}) but not run: no output to compare against")
        if COMMENT_MARKER.search(_source(cell)):
            found.append(f"cell {i}: an nbval comment marker in the source: use the cell tag (--migrate)")
        if not is_pinned(cell) and cell.get("execution_count") is not None:
            found.append(f"cell {i}: execution count in an unpinned cell")
        if not is_pinned(cell) and cell.get("outputs"):
            found.append(f"cell {i}: outputs in an unpinned cell")
    if "widgets" in nb.get("metadata", {}):
        found.append("widget state in the metadata")
    return found


def _pinned_text(cell: dict, merged_stdout: bool = False) -> str:
    """What of a pinned cell's outputs is compared: stdout (its chunks joined) and the text/plain of results and
    displays. Not stderr (warnings name paths and line numbers), not images (pixels differ across matplotlib versions
    without the result differing).

    ``merged_stdout``: the cell comes from a notebook that myst-nb executed with ``nb_merge_streams`` (the book's
    setting): its FIRST stdout output holds the whole merged stdout, and the chunks after it are left-overs of the
    merge (myst-nb merges in place), so only the first one is read.
    """
    parts, seen_stdout = [], False
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream" and out.get("name") == "stdout":
            if not (merged_stdout and seen_stdout):
                parts.append(_source({"source": out.get("text", "")}))
            seen_stdout = True
        elif out.get("output_type") in ("execute_result", "display_data"):
            text = out.get("data", {}).get("text/plain")
            if text is not None:
                parts.append(_source({"source": text}) + "\n")
    # trailing blanks per line do not count (myst-nb strips them at the end of each merged chunk)
    return "\n".join(line.rstrip() for line in "".join(parts).splitlines()).strip("\n")


def pinned_differences(reference: dict, executed: dict, merged_stdout: bool = False) -> List[str]:
    """The pinned cells whose outputs differ between a committed notebook and an executed copy of it (cells matched
    by id); a pinned cell missing from the copy counts as a difference. Empty when they agree. ``merged_stdout``:
    the copy was executed by the book build (see ``_pinned_text``).

    This is nbval's ``--nbval-lax`` check, run on the notebook that the book build executed, so that CI executes
    every notebook once (``tests/test_notebook_outputs.py``).
    """
    by_id = {c.get("id"): c for c in executed.get("cells", [])}
    found = []
    for i, cell in enumerate(reference.get("cells", [])):
        if not is_pinned(cell):
            continue
        twin = by_id.get(cell.get("id"))
        if twin is None:
            found.append(f"cell {i} (id {cell.get('id')}): pinned, but not in the executed notebook")
            continue
        want, got = _pinned_text(cell), _pinned_text(twin, merged_stdout)
        if want != got:
            found.append(f"cell {i} (id {cell.get('id')}): output changed\n--- committed\n{want}\n--- executed\n{got}")
    return found


def execute(path: Path, timeout: int = 1800) -> dict:
    import nbformat
    from nbclient import NotebookClient

    os.environ.setdefault("DEQLIB_MODE", "fast")
    os.environ["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""
    )
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    print(
        f"{path.relative_to(ROOT)}: executed in {time.perf_counter() - start:.1f} s (DEQLIB_MODE={os.environ['DEQLIB_MODE']})"
    )
    return json.loads(nbformat.writes(nb))


def dumps(nb: dict) -> str:
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--execute", action="store_true", help="run the notebook first (DEQLIB_MODE=fast by default)")
    parser.add_argument("--check", action="store_true", help="only report; exit 1 on any problem")
    parser.add_argument("--migrate", action="store_true", help="turn # NBVAL_... comment lines into cell tags")
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    bad = 0
    for path in paths:
        if args.check:
            nb = json.loads(path.read_text(encoding="utf-8"))
            for p in problems(nb):
                print(f"{path.relative_to(ROOT)}: {p}")
                bad += 1
            continue
        nb = execute(path) if args.execute else json.loads(path.read_text(encoding="utf-8"))
        if args.migrate:
            nb = migrate(nb)
        path.write_text(dumps(clean(nb)), encoding="utf-8")
    if args.check and bad:
        print("nbclean.py: run `python tools/nbclean.py --execute <notebook>` and commit it", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
