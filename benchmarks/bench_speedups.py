"""The effect of each solver speed-up: the frozen pre-optimisation solvers against the current ones.

Three versions run interleaved on the same problems as the torchdeq comparison:

* ``baseline``: ``benchmarks/baseline_solvers.py``, deqlib's solvers before the performance work (commit 39981e5).
* ``tracker``: the baseline solvers with the current per-sample ``Tracker`` (change 1 alone).
* ``current``: ``deqlib.solvers`` as they are (changes 1 + 2 + 3).

Change 1 (Tracker): fewer per-step operations (no separate finiteness tests where a comparison already excludes
NaN / Inf, divergence threshold and NaN filler computed once, in-place counters, the residual f(z) - z taken from
the solver instead of recomputed), and no full-size select when every sample is still active (freeze) or, on
large states, every active sample improved (best iterate).
Change 2 (buffers, no-grad path): Anderson keeps its history in preallocated ring buffers written in place,
stores the residuals once, updates its Gram matrix one row per step and fills a preallocated bordered system;
Broyden keeps u, v in preallocated buffers and needs two low-rank products per step instead of three. The
list-based versions remain for autograd (``grad="unroll"``). The last, discarded Anderson mixing is skipped.
Change 3 (layouts of the batched products): on CPU, ``bmm(A, x[..., None])`` (a batched matrix times a column
vector) is many times slower than the same numbers computed as ``bmm(x[:, None], A.transpose(1, 2))``; both solvers
use the second (the micro-benchmark below records the difference). And ``torch.linalg.solve_ex`` returns its
solutions column-major (batch stride 1): a batched product with them falls back to a per-sample loop (recorded
below), so Anderson's weights are made contiguous first (in the autograd path as well).

Also measured here: ``torch.compile`` of the cell f (compile time and time per evaluation), to decide whether it pays.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any, Dict, List, Tuple

import torch

import deqlib.solvers as current
from deqlib.solvers.info import Tracker

from . import baseline_solvers as baseline
from .common import log, median, time_per_call, timed
from .problems import CELLS, problem

MAX_ITER = 50
TOL = 1e-4
SOLVERS = ("fixed_point", "anderson", "broyden")
OPTIONS = {"fixed_point": {}, "anderson": {"m": 5}, "broyden": {"memory": 20}}
MAX_REPEATS = 41
TARGET_S = 1.0


def _tracker_only_module():
    """A second copy of the baseline solvers whose Tracker is the current one (change 1 alone)."""
    spec = importlib.util.spec_from_file_location("benchmarks._baseline_with_tracker", baseline.__file__)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    mod.Tracker = Tracker
    return mod


def versions() -> Dict[str, Any]:
    return {"baseline": baseline, "tracker": _tracker_only_module(), "current": current}


def check_equivalence(mods: Dict[str, Any], f, z0) -> Dict[str, Any]:
    """Same steps per sample and (up to rounding) the same fixed points for every version."""
    out: Dict[str, Any] = {}
    for solver in SOLVERS:
        with torch.no_grad():
            res = {k: getattr(m, solver)(f, z0, max_iter=MAX_ITER, tol=TOL, **OPTIONS[solver]) for k, m in mods.items()}
        z_b, info_b = res["baseline"]
        out[solver] = {
            k: {
                "same_steps": bool(torch.equal(info.steps, info_b.steps)),
                "same_nfev": info.nfev == info_b.nfev,
                "max_abs_diff": float((z - z_b).abs().max()),
            }
            for k, (z, info) in res.items()
            if k != "baseline"
        }
    return out


def bmm_forms(repeats: int) -> List[Dict[str, Any]]:
    """Batched matrix-vector products in the two forms, at the sizes the solvers meet."""
    rows = []
    for n_batch, n, d in [(256, 5, 256), (256, 5, 1568), (256, 20, 1568), (64, 20, 2048)]:
        A = torch.randn(n_batch, n, d)
        x = torch.randn(n_batch, d)
        col = [time_per_call(lambda: torch.bmm(A, x.unsqueeze(2)), min_seconds=0.02) for _ in range(repeats)]
        row = [
            time_per_call(lambda: torch.bmm(x.unsqueeze(1), A.transpose(1, 2)), min_seconds=0.02)
            for _ in range(repeats)
        ]
        rows.append(
            {
                "shape": [n_batch, n, d],
                "column_form_s": median(col),
                "row_form_s": median(row),
                "speedup": median(col) / median(row),
            }
        )
        log(
            f"speedups bmm (N={n_batch}, n={n}, d={d}): column {median(col) * 1e6:.0f} us, row {median(row) * 1e6:.0f} us"
        )
    return rows


def weight_layouts(repeats: int) -> List[Dict[str, Any]]:
    """Anderson's mixing product with the weights as solve_ex returns them (column-major) and made contiguous."""
    rows = []
    for n_batch, n, d in [(256, 5, 256), (256, 5, 1568), (64, 5, 1568)]:
        F = torch.randn(n_batch, n, d)
        A = torch.eye(n + 1).expand(n_batch, n + 1, n + 1) + 0.1 * torch.rand(n_batch, n + 1, n + 1)
        sol, _ = torch.linalg.solve_ex(A, torch.rand(n_batch, n + 1))
        alpha = sol[:, 1:]
        col = [time_per_call(lambda: torch.bmm(alpha.unsqueeze(1), F), min_seconds=0.02) for _ in range(repeats)]
        con = [
            time_per_call(lambda: torch.bmm(alpha.contiguous().unsqueeze(1), F), min_seconds=0.02)
            for _ in range(repeats)
        ]
        rows.append(
            {
                "shape": [n_batch, n, d],
                "alpha_strides": list(alpha.stride()),
                "column_major_s": median(col),
                "contiguous_s": median(con),
                "speedup": median(col) / median(con),
            }
        )
        log(
            f"speedups mixing (N={n_batch}, n={n}, d={d}): column-major weights {median(col) * 1e6:.0f} us, "
            f"contiguous {median(con) * 1e6:.0f} us"
        )
    return rows


def compile_check(cells: Tuple[str, ...], batch: int, repeats: int) -> List[Dict[str, Any]]:
    """torch.compile of the cell: compile seconds and seconds per evaluation against eager."""
    rows = []
    for cell in cells:
        p = problem(cell, batch)
        module = p.model.deq.cell
        try:
            compiled = torch.compile(module, dynamic=False)
            with torch.no_grad():
                t_compile, _ = timed(lambda: compiled(p.z0, p.u))
                eager, comp = [], []
                for _ in range(repeats):
                    eager.append(time_per_call(lambda: module(p.z0, p.u), min_seconds=0.05))
                    comp.append(time_per_call(lambda: compiled(p.z0, p.u), min_seconds=0.05))
                err = float((compiled(p.z0, p.u) - module(p.z0, p.u)).abs().max())
            rows.append(
                {
                    "cell": cell,
                    "batch": batch,
                    "compile_s": t_compile,
                    "eager_f_s": median(eager),
                    "compiled_f_s": median(comp),
                    "speedup": median(eager) / median(comp),
                    "max_abs_diff": err,
                }
            )
            log(
                f"speedups compile {cell} B={batch}: compile {t_compile:.1f} s, eager {median(eager) * 1e3:.3f} ms, "
                f"compiled {median(comp) * 1e3:.3f} ms"
            )
        except Exception as e:  # noqa: BLE001 - record why compile is unavailable here
            rows.append({"cell": cell, "batch": batch, "error": f"{type(e).__name__}: {str(e)[:300]}"})
            log(f"speedups compile {cell}: failed ({type(e).__name__})")
        finally:
            torch._dynamo.reset()
    return rows


def run(
    *,
    quick: bool = False,
    repeats: int = 5,
    batches: Tuple[int, ...] = (1, 64, 256),
    cells: Tuple[str, ...] = CELLS,
    compile_cells: bool = True,
) -> Dict[str, Any]:
    if quick:
        batches, repeats = (1, 16), 3
    mods = versions()
    cases = []
    equivalence = {}
    for cell in cells:
        for batch in batches:
            p = problem(cell, batch)
            equivalence[f"{cell}/{batch}"] = check_equivalence(mods, p.f, p.z0)
            for solver in SOLVERS:
                times: Dict[str, List[float]] = {k: [] for k in mods}
                names = list(mods)
                with torch.no_grad():
                    t_one, _ = timed(
                        lambda: getattr(baseline, solver)(p.f, p.z0, max_iter=MAX_ITER, tol=TOL, **OPTIONS[solver])
                    )
                n_rep = max(repeats, min(MAX_REPEATS, int(TARGET_S / max(t_one, 1e-4))))
                n_rep += 1 - n_rep % 2
                for rep in range(n_rep):
                    order = names[rep % len(names) :] + names[: rep % len(names)]  # rotate who goes first
                    for k in order:
                        fn = getattr(mods[k], solver)
                        with torch.no_grad():
                            t, (_, info) = timed(lambda: fn(p.f, p.z0, max_iter=MAX_ITER, tol=TOL, **OPTIONS[solver]))
                        times[k].append(t)
                med = {k: median(v) for k, v in times.items()}
                case = {
                    "cell": cell,
                    "batch": batch,
                    "solver": solver,
                    "nfev": info.nfev,
                    "repeats": n_rep,
                    "median_s": med,
                    "times_s": times,
                    "speedup_tracker": med["baseline"] / med["tracker"],
                    "speedup_total": med["baseline"] / med["current"],
                }
                cases.append(case)
                log(
                    f"speedups {cell:6s} B={batch:<3d} {solver:11s} baseline {med['baseline'] * 1e3:8.1f} ms  tracker "
                    f"{med['tracker'] * 1e3:8.1f} ms  current {med['current'] * 1e3:8.1f} ms  x{case['speedup_total']:.2f}"
                )
    out: Dict[str, Any] = {
        "settings": {
            "tol": TOL,
            "stop_mode": "rel",
            "max_iter": MAX_ITER,
            "options": OPTIONS,
            "repeats": f"at least {repeats} (odd), up to {MAX_REPEATS} for cheap cases (about {TARGET_S:g} s per version)",
            "batches": list(batches),
            "cells": list(cells),
            "timing": "median of the repeats; the three versions alternate within each repeat (rotating order)",
        },
        "cases": cases,
        "equivalence": equivalence,
        "bmm_forms": bmm_forms(3 if quick else repeats),
        "weight_layouts": weight_layouts(3 if quick else repeats),
    }
    if compile_cells:
        out["compile"] = compile_check(("mlp28",) if quick else ("mlp28", "conv28"), 16 if quick else 256, 3)
    return out
