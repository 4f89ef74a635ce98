"""Backward cost of the three gradients as the forward iterations grow: time and memory.

Setting: the DEQ layer alone (the cell of a benchmark problem, its injection u as a leaf that requires grad),
``solver="fixed_point"`` with a tolerance no float32 solve reaches, so the forward takes exactly K steps
(K = 10, 30, 100); the IFT's adjoint solve also takes K steps; the phantom gradient takes its default 5 damped
steps. Loss: a fixed linear functional of z plus 0.5 ||z||^2; one forward and one backward per measurement.

Memory, measured deterministically on CPU (no GPU allocator statistics here):

* ``saved_bytes``: bytes of the distinct tensor storages autograd saves for backward during the forward,
  counted with ``torch.autograd.graph.saved_tensors_hooks``. This is what grows with unrolling.
* ``peak_bytes``: peak of the live bytes allocated by PyTorch's CPU allocator during forward + backward,
  relative to the start, from ``torch.profiler`` with ``profile_memory=True`` (the running sum of every
  operator's allocations and frees in time order). It includes the solver's own buffers (the adjoint solve of
  the IFT, Anderson / Broyden histories), which saved-tensor hooks do not see.

tracemalloc is not used: it only sees Python's own allocator, not tensor memory. Process RSS is not used either:
the allocator keeps freed pages, so RSS mixes in earlier runs.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
from torch.profiler import ProfilerActivity, profile

from deqlib.deq import DEQ

from .common import log, median, timed
from .problems import problem

GRADS = ("ift", "phantom", "unroll")
ITERS = (10, 30, 100)
UNREACHABLE_TOL = 1e-30


def make_deq(cell, grad: str, k: int) -> DEQ:
    return DEQ(
        cell,
        solver="fixed_point",
        grad=grad,
        max_iter=k,
        tol=UNREACHABLE_TOL,
        stop_mode="abs",
        backward_max_iter=k,
        backward_tol=UNREACHABLE_TOL,
    )


def loss_of(z: torch.Tensor) -> torch.Tensor:
    w = torch.linspace(-1.0, 1.0, z[0].numel(), dtype=z.dtype).view(z[0].shape)
    return (z * w).sum() + 0.5 * (z**2).sum()


def step(deq: DEQ, u: torch.Tensor) -> None:
    u.grad = None
    for prm in deq.parameters():
        prm.grad = None
    loss_of(deq(u)).backward()


def saved_bytes(deq: DEQ, u: torch.Tensor) -> int:
    seen: Dict[Tuple[int, int], int] = {}

    def pack(t: torch.Tensor):
        st = t.untyped_storage()
        seen[(st.data_ptr(), st.nbytes())] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        z = deq(u)
    loss_of(z).backward()
    return int(sum(seen.values()))


def peak_bytes(deq: DEQ, u: torch.Tensor) -> Tuple[int, int]:
    """(peak live bytes during forward + backward, bytes still live at the end), relative to the start."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(deq, u)
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    cur = peak = 0
    for e in events:
        cur += e.self_cpu_memory_usage
        peak = max(peak, cur)
    return int(peak), int(cur)


def run(
    *, quick: bool = False, repeats: int = 5, setups: Tuple[Tuple[str, int], ...] = (("mlp28", 256), ("conv28", 64))
) -> Dict[str, Any]:
    iters = ITERS
    if quick:
        repeats, setups = 2, (("mlp28", 32),)
    rows: List[Dict[str, Any]] = []
    for cell_name, batch in setups:
        p = problem(cell_name, batch)
        cell = p.model.deq.cell
        u = p.u.detach().clone().requires_grad_(True)
        for k in iters:
            deqs = {g: make_deq(cell, g, k) for g in GRADS}
            for g in GRADS:
                step(deqs[g], u)  # warm-up
            times: Dict[str, List[float]] = {g: [] for g in GRADS}
            for rep in range(repeats):
                order = GRADS[rep % 3 :] + GRADS[: rep % 3]
                for g in order:
                    t, _ = timed(lambda: step(deqs[g], u))
                    times[g].append(t)
            for g in GRADS:
                deq = deqs[g]
                sb = saved_bytes(deq, u)
                pk, end = peak_bytes(deq, u)
                # The per-sample residual traces (N x K floats) of the forward and the adjoint SolverInfo: since
                # issue 15 a DEQ keeps them only with record=True (these DEQs do not), so this is 0; before, they
                # were the one part of the IFT's peak that grew with K.
                trace_bytes = deq.last_info.trace.numel() * deq.last_info.trace.element_size()
                if g == "ift" and deq.last_backward_info is not None:
                    bt = deq.last_backward_info.trace
                    trace_bytes += bt.numel() * bt.element_size()
                steps = int(deq.last_info.steps.max())
                bsteps = (
                    int(deq.last_backward_info.steps.max())
                    if (g == "ift" and deq.last_backward_info is not None)
                    else None
                )
                row = {
                    "cell": cell_name,
                    "batch": batch,
                    "state_shape": list(p.state_shape),
                    "grad": g,
                    "forward_iters": k,
                    "forward_steps_taken": steps,
                    "adjoint_steps_taken": bsteps,
                    "time_s": median(times[g]),
                    "times_s": times[g],
                    "saved_bytes": sb,
                    "peak_bytes": pk,
                    "end_bytes": end,
                    "trace_bytes": trace_bytes,
                    "peak_minus_traces_bytes": pk - trace_bytes,
                }
                rows.append(row)
                log(
                    f"backward {cell_name} B={batch} K={k:3d} {g:7s} {row['time_s'] * 1e3:8.1f} ms  saved {sb / 2**20:7.2f} MiB  "
                    f"peak {pk / 2**20:7.2f} MiB"
                )
    summary = {}
    for cell_name, batch in setups:
        for g in GRADS:
            sel = {
                r["forward_iters"]: r for r in rows if r["cell"] == cell_name and r["batch"] == batch and r["grad"] == g
            }
            lo, hi = sel[min(iters)], sel[max(iters)]
            summary[f"{cell_name}/{batch}/{g}"] = {
                "peak_ratio_max_over_min_iters": hi["peak_bytes"] / max(lo["peak_bytes"], 1),
                "peak_minus_traces_ratio_max_over_min_iters": hi["peak_minus_traces_bytes"]
                / max(lo["peak_minus_traces_bytes"], 1),
                "saved_ratio_max_over_min_iters": hi["saved_bytes"] / max(lo["saved_bytes"], 1),
                "time_ratio_max_over_min_iters": hi["time_s"] / lo["time_s"],
            }
    return {
        "settings": {
            "solver": "fixed_point",
            "iters": list(iters),
            "grads": list(GRADS),
            "repeats": repeats,
            "setups": [list(s) for s in setups],
            "phantom_steps": 5,
            "phantom_tau": 0.5,
            "memory": "saved_bytes: saved_tensors_hooks; peak_bytes: torch.profiler profile_memory running sum",
        },
        "rows": rows,
        "summary": summary,
    }
