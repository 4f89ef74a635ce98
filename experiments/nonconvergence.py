"""Silent non-convergence (issue 9, finding 1): a DEQ at its default solver settings on a cell near the edge.

A tanh MLP cell of width 32 (no norm), its weight W orthogonal times a gain of 1.02 or 1.15, 8 injections 0.3 * N(0, I),
``DEQ(cell, solver="anderson", grad="ift")`` with the defaults (max_iter 30, tol 1e-4, relative; the adjoint's
budget is the DEQ's default, ``2 * max_iter``; also with the old default ``max_iter`` and with ``max_iter=300``).
For each gain it records the share of samples whose forward and adjoint solves
converged, the warnings emitted, what ``deq.convergence`` counted, and the per-sample error of the input gradient
of a fixed linear loss against a tight solve (Anderson m 20, tol 1e-12, 2000 iterations, forward and adjoint), with the
spectral radius of df/dz at the tight fixed point. Everything in float64, so that the errors are the solver's.
A second part measures how large the adjoint's budget must be to converge where the forward did (the rule behind
the default ``backward_max_iter``).

Command: ``python experiments/nonconvergence.py`` (about a minute); writes ``experiments/results/nonconvergence.json``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

import deqlib
from deqlib.evaluate import save_json

OUT = Path(__file__).resolve().parent / "results" / "nonconvergence.json"
GAINS = (1.02, 1.15)
WIDTH, N = 32, 8
INPUT_SCALE = 0.3  # injections 0.3 * N(0, I): rho(J) 0.83-0.95 at gain 1.02, the regime the issue measured
TIGHT = dict(m=20, max_iter=2000, tol=1e-12, backward_max_iter=2000, backward_tol=1e-12)


def input_gradient(deq: deqlib.DEQ, x: torch.Tensor, w: torch.Tensor):
    """Per-sample input gradients of sum_i w_i . z*(x_i) (the samples do not interact), and the warnings emitted."""
    x = x.clone().requires_grad_()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        z = deq(x)
        (g,) = torch.autograd.grad((z * w).sum(), x)
    names = [w.category.__name__ for w in caught]
    return g, {name: names.count(name) for name in sorted(set(names))}, [str(w.message) for w in caught]


def measure(gain: float, seed: int = 0, **deq_options) -> dict:
    torch.manual_seed(seed)
    cell = deqlib.MLPCell(WIDTH, activation="tanh", norm=False, weight_scale=gain).double()
    x = INPUT_SCALE * torch.randn(N, WIDTH, dtype=torch.float64)
    w = torch.randn(N, WIDTH, dtype=torch.float64)
    ref = deqlib.DEQ(cell, solver="anderson", grad="ift", **TIGHT)
    g_ref, _, _ = input_gradient(ref, x, w)
    assert ref.last_info.all_converged and ref.last_backward_info.all_converged, "the reference did not converge"
    z_ref, _ = ref.solve(x, record=False)
    rho = ref.spectral_radius(x, z_ref, n_iter=200)
    deq = deqlib.DEQ(cell, solver="anderson", grad="ift", **deq_options)  # the defaults, unless overridden
    g, warned, messages = input_gradient(deq, x, w)
    fwd, bwd = deq.last_info, deq.last_backward_info
    err = (g - g_ref).norm(dim=1) / g_ref.norm(dim=1)
    counts = getattr(deq, "convergence", None)
    return {
        "gain": gain,
        "deq_options": deq_options,
        "rho_J": [float(rho.min()), float(rho.max())],
        "backward_max_iter": deq.backward_options["max_iter"],
        "forward_converged": f"{int(fwd.converged.sum())}/{N}",
        "forward_steps": fwd.steps.tolist(),
        "forward_rel_residual_max": float(fwd.rel_residual.max()),
        "backward_converged": f"{int(bwd.converged.sum())}/{N}",
        "backward_steps": bwd.steps.tolist(),
        "backward_rel_residual_max": float(bwd.rel_residual.max()),
        "input_gradient_rel_error": err.tolist(),
        "input_gradient_rel_error_max": float(err.max()),
        "warnings": warned,
        "warning_messages": messages,
        "deq_convergence_fractions": counts.fractions() if counts is not None else None,
    }


#: The DEQ settings compared for each gain: the defaults, the adjoint budget of the old default, a budget that converges.
VARIANTS = {
    "defaults": {},
    "old_adjoint_budget": {"backward_max_iter": 30},  # before issue 9 the adjoint's default budget was max_iter
    "max_iter_300": {"max_iter": 300},
}

#: Before issue 9 (commit f73a7ff, this script's "defaults" there): no warning at all, and the same gradients as
#: the "old_adjoint_budget" rows here (the forward value changed from f(z*) to z*, the gradient did not).
BEFORE = {
    "commit": "f73a7ff",
    "1.02": {"forward_converged": "0/8", "backward_converged": "0/8", "input_gradient_rel_error_max": 0.0445},
    "1.15": {"forward_converged": "0/8", "backward_converged": "0/8", "input_gradient_rel_error_max": 0.7421},
    "warnings": {},
}


def adjoint_budget_scan(factors=(1, 1.5, 2, 3)) -> dict:
    """Of the samples whose forward solve converged, how many have an unconverged adjoint with k * max_iter steps?

    tanh MLP cells of width 32, gains 0.5-1.3, injection scales 0.2-1, budgets 10-50, tol 1e-3-1e-6, 32 samples;
    each adjoint runs with 4 * max_iter and is counted as converged within k * max_iter if it stopped by then.
    This is the measurement behind the default ``backward_max_iter = 2 * max_iter``.
    """
    out = {}
    for solver in ("anderson", "broyden", "fixed_point"):
        total, missed = 0, {str(k): 0 for k in factors}
        for budget in (10, 20, 30, 50):
            for scale in (1.0, 0.5, 0.3, 0.2):
                for gain in (0.5, 0.9, 1.02, 1.15, 1.3):
                    for tol in (1e-3, 1e-4, 1e-6):
                        torch.manual_seed(0)
                        cell = deqlib.MLPCell(WIDTH, activation="tanh", norm=False, weight_scale=gain).double()
                        x = scale * torch.randn(32, WIDTH, dtype=torch.float64, requires_grad=True)
                        deq = deqlib.DEQ(cell, solver=solver, max_iter=budget, tol=tol, backward_max_iter=4 * budget)
                        with deqlib.solvers.quiet_convergence():
                            z = deq(x)
                            (z * torch.randn_like(z)).sum().backward()
                        fwd, bwd = deq.last_info.converged, deq.last_backward_info
                        total += int(fwd.sum())
                        for k in factors:
                            missed[str(k)] += int((fwd & ~(bwd.converged & (bwd.steps <= k * budget))).sum())
        out[solver] = {"forward_converged_samples": total, "adjoint_not_converged_within_k_max_iter": missed}
    return out


def main() -> None:
    torch.set_num_threads(1)
    rows = [{"variant": name, **measure(gain, **opts)} for name, opts in VARIANTS.items() for gain in GAINS]
    for r in rows:
        print(
            f"{r['variant']:18s} gain {r['gain']}: rho(J) {r['rho_J'][0]:.2f}-{r['rho_J'][1]:.2f}; converged forward "
            f"{r['forward_converged']}, adjoint {r['backward_converged']} (budget {r['backward_max_iter']}); "
            f"input-gradient error max {r['input_gradient_rel_error_max']:.1%}; warnings {r['warnings']}"
        )
    scan = adjoint_budget_scan()
    for solver, r in scan.items():
        print(f"adjoint budget, {solver}: {r}")
    save_json(
        {
            "command": "python experiments/nonconvergence.py",
            "settings": {
                "width": WIDTH,
                "samples": N,
                "input_scale": INPUT_SCALE,
                "solver": "anderson",
                "defaults": "max_iter 30, tol 1e-4 rel",
            },
            "reference": TIGHT,
            "before": BEFORE,
            "rows": rows,
            "adjoint_budget_scan": scan,
        },
        OUT,
    )


if __name__ == "__main__":
    main()
