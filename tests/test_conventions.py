"""The book conventions of CONVENTIONS.md that a program can check in the notebook files themselves.

The rendered page is checked in a browser by ``tests/test_book.py`` (no install cell, no cut-off line, numbered and
captioned figures); these checks need no build and fail fast, with the cell to fix.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CLOSING_SECTIONS = ["## What this means for an attacker", "## Summary", "## Further reading", "## Exercises"]
DIFFICULTY = re.compile(r"\((★{1,3})\)")
SOLUTION_PROMPT = "Show the solution"


def _cells(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _src(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _markdown(path: Path) -> str:
    return "\n".join(_src(c) for c in _cells(path) if c["cell_type"] == "markdown")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_chapter_opens_with_learning_goals_and_time(path):
    opening = "\n".join(_src(c) for c in _cells(path)[:4] if c["cell_type"] == "markdown")
    assert re.search(r":::\{admonition\} Learning goals", opening), f"{path.name}: no Learning goals block at the top"
    goals = opening[opening.index("Learning goals") :]
    assert re.search(r"\bminutes?\b", goals) and re.search(r"\b\d+ s\b|\bseconds?\b", goals), (
        f"{path.name}: the Learning goals block must say the reading time and the fast-mode run time"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_chapter_closes_with_attacker_summary_reading_exercises(path):
    text = _markdown(path)
    positions = []
    for heading in CLOSING_SECTIONS:
        assert re.search(rf"^{re.escape(heading)}\s*$", text, re.M), f"{path.name}: no '{heading}' section"
        positions.append(re.search(rf"^{re.escape(heading)}\s*$", text, re.M).start())
    assert positions == sorted(positions), f"{path.name}: closing sections out of order, want {CLOSING_SECTIONS}"
    exercises = text[positions[-1] :]
    marked = re.findall(r"^\*\*\d+\.[^*]*\*\*\s*\((★{1,3})\)", exercises, re.M)
    numbered = re.findall(r"^\*\*\d+\.", exercises, re.M)
    assert numbered and len(marked) == len(numbered), (
        f"{path.name}: {len(numbered)} exercises, {len(marked)} with a difficulty mark '(★)' after the title"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_solutions_are_folded_and_say_so(path):
    for i, cell in enumerate(_cells(path)):
        meta = cell.get("metadata", {})
        if "hide-cell" in meta.get("tags", []):
            assert meta.get("mystnb", {}).get("code_prompt_show") == SOLUTION_PROMPT, (
                f"{path.name} cell {i}: a folded cell must say '{SOLUTION_PROMPT}' (metadata mystnb.code_prompt_show)"
            )
        if cell["cell_type"] == "markdown":
            for summary in re.findall(r"<summary>(.*?)</summary>", _src(cell)):
                assert summary.strip() == SOLUTION_PROMPT, f"{path.name} cell {i}: <summary>{summary}</summary>"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_glued_names_are_defined_and_figures_referenced_exist(path):
    cells = _cells(path)
    code = "\n".join(_src(c) for c in cells if c["cell_type"] == "code")
    text = _markdown(path)
    defined = set(re.findall(r"""glue\(\s*["']([\w-]+)["']""", code))
    # keys made by f-strings, glue(f"ch1_rho_{s}", ...): their fixed parts, as patterns
    patterns = [
        re.compile("".join(".+" if part.startswith("{") else re.escape(part) for part in re.split(r"(\{[^}]*\})", k)))
        for k in re.findall(r"""glue\(\s*f["']([^"']+)["']""", code)
    ]
    used = {m.split(":")[0] for m in re.findall(r"\{glue(?::\w+)?\}`([^`]+)`", text)}
    assert used, f"{path.name}: no glued number in the prose"
    undefined = sorted(k for k in used - defined if not any(p.fullmatch(k) for p in patterns))
    assert not undefined, f"{path.name}: glued in the prose but never glued in code: {undefined}"
    names = set()
    for cell in cells:
        fig = cell.get("metadata", {}).get("mystnb", {}).get("figure")
        if fig:
            assert fig.get("name", "").startswith("fig-") and fig.get("caption"), f"{path.name}: figure metadata {fig}"
            names.add(fig["name"])
    referenced = set(re.findall(r"\{numref\}`(fig-[\w-]+)`", text))
    assert referenced, f"{path.name}: the prose refers to no figure"
    assert not referenced - names, f"{path.name}: references to figures that do not exist: {referenced - names}"
    assert not names - referenced, f"{path.name}: figures the prose never refers to: {sorted(names - referenced)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_no_printed_booleans_in_pinned_outputs(path):
    for i, cell in enumerate(_cells(path)):
        for out in cell.get("outputs", []):
            text = "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
            assert not re.search(r":\s*(True|False)\s*$", text, re.M), (
                f"{path.name} cell {i}: a printed boolean; assert it and say it in prose with glued numbers"
            )
