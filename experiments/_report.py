"""Shared by the experiments' results files: the machine a run was made on, and the Markdown formatting
(percentages, seed summaries)."""

from __future__ import annotations

import platform
import sys
import time
from typing import Any, Dict, List, Mapping, Sequence

import torch


def machine() -> Dict[str, Any]:
    """When and where a run was made: UTC date, CPU, torch version, torch threads, Python version."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
    }


def pct(v: Any) -> str:
    """A proportion as a percentage with one decimal, or a dash for a missing value."""
    return "—" if v is None else f"{100 * v:.1f}"


def seed_cell(s: Dict[str, Any]) -> str:
    """A :func:`deqlib.evaluate.seed_summary` as ``mean ± sd [t interval]`` in percent (one seed: the mean)."""
    if s["interval"] is None:  # one seed: no spread to show
        return f"{pct(s['mean'])} (1 seed)"
    return f"{pct(s['mean'])} ± {pct(s['sd'])} [{pct(s['interval'][0])}, {pct(s['interval'][1])}]"


def per_seed_cell(per_seed: Dict[Any, Dict[str, Any]]) -> str:
    """Paired tests per training seed as ``s0: +1.2 (p 0.03), ...`` (differences in points)."""
    return ", ".join(f"s{s}: {100 * v['difference']:+.1f} (p {v['p_value']:.2g})" for s, v in per_seed.items())


def mean_cell(over: Any) -> str:
    """A :func:`deqlib.evaluate.seed_summary` of differences as ``+1.2 [-0.3, +2.7]`` in points (``-`` if none)."""
    if not over:
        return "-"
    ci = over.get("interval")
    return f"{100 * over['mean']:+.1f}" + (f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else "")


def on_positions(run: Mapping[str, Any], positions: List[int], mask: Sequence[bool]) -> List[bool]:
    """``mask`` (over ``run``'s digits, ``run["positions"]`` of the evaluated set) on the digits at ``positions``:
    how a defence evaluated on a subset is paired digit by digit with its control."""
    where = {p: i for i, p in enumerate(run["positions"])}
    return [bool(mask[where[p]]) for p in positions]
