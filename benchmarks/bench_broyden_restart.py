"""Broyden's restart (issue 9, finding 8): f evaluations before and after the fix, on the standard problems.

When its memory is full, deqlib's Broyden restarts its inverse-Jacobian estimate from -I. Before the fix it kept
the rank-one pair of the restart step computed with the OLD estimate, so the restarted estimate -I + u v^T did not
satisfy the newest secant condition B^{-1} dg = dz; now that pair is computed from -I. The "before" column runs
``benchmarks/broyden_stale_restart.py``, deqlib's Broyden of commit f73a7ff frozen as it was (same Tracker), the
"after" column ``deqlib.solvers.broyden``.

Problems: the standard cells (``benchmarks/problems.py``: mlp28, conv28, conv32, untrained, seeded; batch 64,
``max_iter`` 100, relative tol 1e-4 and 1e-5), on which Broyden does little better than plain iteration; mlp28 with
its weight norm raised from 0.9 to 1.3 (``max_iter`` 200), where plain iteration fails and Broyden's estimate
matters; chapter 2's linear problem (d = 100, absolute tol 1e-10, ``max_iter`` 2000). For each, ``memory`` 5, 10
and the default 20: the f evaluations of the batch (``nfev``), the mean steps per sample, the samples converged
and the largest residual. Iteration counts, not times: they do not depend on the machine.

Command: ``python -m benchmarks.bench_broyden_restart`` (a few minutes on a 2-core CPU; ``--quick``: batch 16,
memory 5 only); writes ``benchmarks/results/broyden_restart.json``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Tuple

import torch
from torch import Tensor

import deqlib
from deqlib.solvers import broyden

from . import broyden_stale_restart
from .common import RESULTS, ROOT, log, machine_info, write_json
from .problems import CELLS, images, problem

MAX_ITER = 100
TOLS = (1e-4, 1e-5)
MEMORIES = (5, 10, 20)
BATCHES = (64,)
VERSIONS = {"before": broyden_stale_restart.broyden, "after": broyden}
HARD_SCALE = 1.3  # mlp28 with W of norm 1.3 instead of 0.9: Broyden's estimate matters (plain iteration fails)


@dataclass
class Case:
    name: str
    f: Callable[[Tensor], Tensor]
    z0: Tensor
    max_iter: int
    tol: float
    stop_mode: str


def _hard_mlp(batch: int) -> Tuple[Callable[[Tensor], Tensor], Tensor]:
    """mlp28 as in ``problems.build_model`` (seed 0, the same digits) with ``weight_scale`` HARD_SCALE."""
    torch.manual_seed(0)
    model = deqlib.mlp_classifier(
        (1, 28, 28), 10, mean=(0.1311,), std=(0.3084,), width=256, weight_scale=HARD_SCALE
    ).eval()
    with torch.no_grad():
        u = model.inject(images("28", batch))
    return (lambda z: model.deq.cell(z, u)), torch.zeros_like(u)


def _linear100() -> Tuple[Callable[[Tensor], Tensor], Tensor]:
    """Chapter 2's linear problem: f(z) = A z + b, A symmetric with eigenvalues evenly in [0, 0.95], d = 100."""
    d = 100
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=gen))
    a = q @ torch.diag(torch.linspace(0.0, 0.95, d, dtype=torch.float64)) @ q.T
    b = torch.randn(d, dtype=torch.float64, generator=gen)
    return (lambda z: z @ a.T + b), torch.zeros(1, d, dtype=torch.float64)


def cases(batches: Tuple[int, ...], tols: Tuple[float, ...]) -> Iterator[Case]:
    for cell in CELLS:
        for batch in batches:
            p = problem(cell, batch)
            for tol in tols:
                yield Case(f"{cell}/{batch}", p.f, p.z0, MAX_ITER, tol, "rel")
    for batch in batches:
        f, z0 = _hard_mlp(batch)
        for tol in tols:
            yield Case(f"mlp28_w{HARD_SCALE:g}/{batch}", f, z0, 200, tol, "rel")
    f, z0 = _linear100()
    yield Case("linear100 (chapter 2)/1", f, z0, 2000, 1e-10, "abs")


def _solve(fn, case: Case, memory: int) -> Dict[str, Any]:
    with torch.no_grad():
        _, info = fn(case.f, case.z0, max_iter=case.max_iter, tol=case.tol, stop_mode=case.stop_mode, memory=memory)
    return {
        "nfev": info.nfev,
        "mean_steps": round(float(info.steps.float().mean()), 2),
        "converged": int(info.converged.sum()),
        "residual_max": float(info.residual.max()),
    }


def run(
    *,
    quick: bool = False,
    batches: Tuple[int, ...] = BATCHES,
    memories: Tuple[int, ...] = MEMORIES,
    tols: Tuple[float, ...] = TOLS,
) -> Dict[str, Any]:
    if quick:
        batches, memories, tols = (16,), (5,), (1e-4,)
    rows: List[Dict[str, Any]] = []
    for case in cases(batches, tols):
        for memory in memories:
            res = {name: _solve(fn, case, memory) for name, fn in VERSIONS.items()}
            n = int(case.z0.shape[0])
            rows.append(
                {
                    "problem": case.name,
                    "batch": n,
                    "max_iter": case.max_iter,
                    "tol": case.tol,
                    "stop_mode": case.stop_mode,
                    "memory": memory,
                    **res,
                }
            )
            log(
                f"broyden restart {case.name:24s} tol {case.tol:g} memory {memory:2d}: nfev "
                f"{res['before']['nfev']:4d} -> {res['after']['nfev']:4d}, mean steps {res['before']['mean_steps']:6.1f}"
                f" -> {res['after']['mean_steps']:6.1f}, converged {res['before']['converged']} -> "
                f"{res['after']['converged']} of {n}"
            )
    return {"settings": {"memories": list(memories), "tols": list(tols), "batches": list(batches)}, "cases": rows}


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_broyden_restart", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="batch 16, memory 5, tol 1e-4; into results_quick/")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    command = "python -m benchmarks.bench_broyden_restart" + (" --quick" if args.quick else "")
    meta = machine_info(command)
    result = run(quick=args.quick)
    out = (ROOT / "benchmarks" / "results_quick" if args.quick else RESULTS) / "broyden_restart.json"
    write_json(out, {"meta": meta, **result})
    log(f"-> {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
