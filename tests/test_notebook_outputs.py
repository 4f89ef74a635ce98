"""The pinned outputs of every chapter (cells tagged ``nbval-check-output``), compared with the notebooks that the book
build executed: nbval's ``--nbval-lax`` check without executing every notebook a second time.

The build (``tools/build_book.sh``, run here if ``_build`` is stale) executes every cell of every chapter in fast
mode and fails on any error; this test then compares each pinned cell's stdout and text results with the committed
ones. ``python -m pytest notebooks --nbval-lax`` remains the same check as a stand-alone run for a chapter's author.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests._book_build import EXECUTED, ROOT, ensure_built, load_tool

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
nbclean = load_tool("nbclean")


def _cell(cid, source, outputs, pinned=True):
    tags = [nbclean.TAG] if pinned else []
    return {"cell_type": "code", "id": cid, "metadata": {"tags": tags}, "outputs": outputs, "source": source}


def _stdout(*chunks):
    return [{"output_type": "stream", "name": "stdout", "text": c} for c in chunks]


def test_pinned_differences_finds_a_changed_number_and_a_missing_cell():
    ref = {"cells": [_cell("a", "print(1)", _stdout("x = 1.25\n")), _cell("b", "1", [])]}
    same = {"cells": [_cell("a", "print(1)", _stdout("x = 1", ".25\n")), _cell("b", "1", [])]}  # chunks joined
    assert nbclean.pinned_differences(ref, same) == []
    # myst-nb merges in place: the first stdout output holds everything, the later chunks are left-overs
    merged = {"cells": [_cell("a", "print(1)", _stdout("x = 1.25\n", ".25\n")), _cell("b", "1", [])]}
    assert nbclean.pinned_differences(ref, merged, merged_stdout=True) == []
    assert nbclean.pinned_differences(ref, merged) != []
    changed = {"cells": [_cell("a", "print(1)", _stdout("x = 1.26\n")), _cell("b", "1", [])]}
    assert len(nbclean.pinned_differences(ref, changed)) == 1
    assert "not in the executed" in nbclean.pinned_differences(ref, {"cells": []})[0]
    result = [{"output_type": "execute_result", "data": {"text/plain": "3"}, "metadata": {}, "execution_count": 1}]
    other = [{"output_type": "execute_result", "data": {"text/plain": "4"}, "metadata": {}, "execution_count": 1}]
    assert nbclean.pinned_differences({"cells": [_cell("c", "3", result)]}, {"cells": [_cell("c", "3", other)]})
    warning = [{"output_type": "stream", "name": "stderr", "text": "/some/path.py:3: Warning"}]
    assert not nbclean.pinned_differences({"cells": [_cell("d", "w", [])]}, {"cells": [_cell("d", "w", warning)]})


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_pinned_outputs_match_the_build(path):
    ensure_built()
    executed = EXECUTED / "notebooks" / path.name
    assert executed.is_file(), f"the book build wrote no executed copy of {path.name}"
    reference = json.loads(path.read_text(encoding="utf-8"))
    pinned = [c for c in reference["cells"] if nbclean.is_pinned(c)]
    assert pinned, f"{path.name}: no pinned cell"
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["sphinx"]["config"]["nb_merge_streams"] is True  # how the build writes its executed copies
    executed_nb = json.loads(executed.read_text(encoding="utf-8"))
    diffs = nbclean.pinned_differences(reference, executed_nb, merged_stdout=True)
    assert not diffs, f"{path.name}: " + "\n".join(diffs) + "\n(re-pin with python tools/nbclean.py --execute)"
